/**
 * What the CLI asks of Vireo, whoever carries it out: the library directly
 * on this host, or a daemon (the local one when it runs, or a remote). The
 * commands are written once against this interface; the two implementations
 * are local.ts and daemon.ts, and select.ts picks one.
 */
import type { ApiClient } from '../../client/api-client.js';
import type { HostReport } from '../../core/host/check.js';
import type { ImageManifest } from '../../core/image/store.js';
import type { ImageKind } from '../../core/image/kinds.js';
import type { ExecResult, GuestInterface } from '../../core/guest/agent-ops.js';

export interface GuestInfo {
  running: boolean;
  agent: boolean;
  interfaces: GuestInterface[];
}
import type { VmDefinition, VmSpec } from '../../core/model/vm.js';
import type { VmPlacement } from '../../core/model/placement.js';
import type { Volume } from '../../core/storage/volumes.js';
import type { Duplex } from 'node:stream';
import type { SerialConsole } from '../../core/vm/console.js';
import type { StartResult } from '../../core/vm/lifecycle.js';
import type { SetResult, VmSettingsInput } from '../../core/resources/live.js';
import type { DeviceChange, DiskAttachInput, NicAttachInput } from '../../core/devices/hotplug.js';
import type { HostAllocation } from '../../core/resources/allocation.js';
import type { NewDisk, VmInfo } from '../../core/vm/manage.js';
import type { RevertResult, SnapshotResult, SnapshotView, DiskCheck } from '../../core/snapshot/snapshots.js';
import type { TransferFormat } from '../../core/storage/qemu-img.js';
import type { CloneResult } from '../../core/vm/template.js';
import type { SnapshotMetadata } from '../../core/snapshot/metadata.js';

export interface SnapshotListing {
  current?: string;
  snapshots: SnapshotView[];
  pending?: SnapshotMetadata['pending'];
}

/** Progress of long work: a step, and how far along (0..1) when known. */
export type ProgressSink = (message: string, fraction?: number) => void;

export interface VolumeWithUsers extends Volume {
  usedBy: string[];
}

export interface CreateDiskInput {
  name: string;
  format: 'qcow2' | 'raw';
  size?: number;
  /** A volume name (or, on the local backend only, an image file path) to link the new qcow2 to. */
  from?: string;
}

export interface Backend {
  /** 'local': this process drives QEMU itself; 'daemon': a daemon does, through its API. */
  readonly kind: 'local' | 'daemon';
  /** For messages: "this host" or "the daemon at ...". */
  readonly description: string;
  /** The daemon's API, for what only a daemon offers (events, operations); absent on the local backend. */
  readonly api?: ApiClient;
  /** Whether files and sockets named by the command are on the machine that carries it out. */
  readonly onThisHost: boolean;

  listVms(): Promise<VmInfo[]>;
  getVm(name: string): Promise<VmInfo>;
  /** host: in a cluster, the member to create it on (daemon only); placement: in a cluster, where it went and why. */
  createVm(spec: unknown, newDisks: NewDisk[], options?: { iso?: string; host?: string; onPlaced?: (placement: { host: string; explanation: string }) => void }): Promise<VmDefinition>;
  editVm(name: string, change: (current: VmSpec, definition: VmDefinition) => unknown): Promise<VmDefinition>;
  /** Resources and disk limits (resources/live.ts): live on a running VM, else for its next start. */
  setVm(name: string, settings: VmSettingsInput): Promise<SetResult>;
  /** Placement rules replaced, running or not (core/vm/placement.ts): pinned, groups, host labels. */
  setPlacement(name: string, placement: VmPlacement): Promise<VmDefinition>;
  /** Devices and vCPUs, live on a running VM (devices/hotplug.ts), else in the definition. */
  attachDisk(name: string, input: DiskAttachInput): Promise<DeviceChange>;
  detachDisk(name: string, disk: string): Promise<DeviceChange>;
  attachNic(name: string, input: NicAttachInput): Promise<DeviceChange>;
  detachNic(name: string, nic: string): Promise<DeviceChange>;
  setVcpus(name: string, count: number): Promise<DeviceChange>;
  /** Memory size: up to memory.max live (virtio-mem), else for the next start. */
  setMemory(name: string, size: string): Promise<DeviceChange>;
  deleteVm(name: string, withDisks: boolean): Promise<{ deletedVolumes: string[] }>;
  startVm(name: string, options: { waitReadySeconds?: number; waitFor?: string }, progress: ProgressSink): Promise<StartResult>;
  stopVm(name: string, options: { timeoutSeconds: number; force: boolean }, progress: ProgressSink): Promise<{ forced: boolean }>;
  rebootVm(name: string, options: { timeoutSeconds: number; force: boolean }, progress: ProgressSink): Promise<{ forced: boolean }>;
  killVm(name: string): Promise<void>;
  pauseVm(name: string): Promise<void>;
  resumeVm(name: string): Promise<void>;
  /** The VM's serial console (serial 0, the default) or an extra serial port N (devices.serials), for a terminal or for running a command in the guest. */
  openConsole(name: string, serial?: number): Promise<SerialConsole>;
  ejectMedia(name: string, drive?: string): Promise<{ drive: string; volume: string; live: boolean }>;
  insertMedia(name: string, input: { drive?: string; volume?: string; file?: string }): Promise<{ drive: string; volume: string; live: boolean }>;
  /** A connection to the VM's VNC server (RFB), through the daemon's WebSocket or the VM's socket. */
  openVnc(name: string): Promise<Duplex>;
  /** A new one-time VNC password, valid for new connections during validSeconds. */
  vncPassword(name: string, validSeconds: number): Promise<{ password: string; expiresAt: string }>;
  /** What the guest printed on its console: everything, or the last `lines` lines. */
  readLogs(name: string, lines?: number): Promise<string>;
  /** Console output from byte offset `from` on (at most a few MiB), and the offset to ask from next time. */
  readLogsFrom(name: string, from: number): Promise<{ text: string; next: number }>;

  createSnapshot(vm: string, input: { name: string; diskOnly: boolean; description?: string; freezeTimeoutSeconds?: number }, progress: ProgressSink): Promise<SnapshotResult>;
  listSnapshots(vm: string): Promise<SnapshotListing>;
  revertSnapshot(vm: string, name: string, progress: ProgressSink): Promise<RevertResult>;
  deleteSnapshot(vm: string, name: string, progress: ProgressSink): Promise<{ deleted: string; checks: DiskCheck[] }>;
  cloneVm(source: string, name: string, options: { linked: boolean; forwards?: 'keep' | Record<string, unknown>[] }, progress: ProgressSink): Promise<CloneResult>;
  makeTemplate(name: string): Promise<void>;

  listVolumes(): Promise<VolumeWithUsers[]>;
  getVolume(name: string): Promise<VolumeWithUsers>;
  createVolume(input: CreateDiskInput): Promise<Volume>;
  /** Live (block_resize) when a running VM uses the volume: `live` names that VM. */
  resizeVolume(name: string, size: number, allowShrink: boolean): Promise<Volume & { live?: string }>;
  /** Both name files on the machine that carries the command out (so only on this host or through the local daemon). */
  importImage(input: { name: string; file: string; format?: 'qcow2' | 'raw' }, progress: ProgressSink): Promise<Volume & { sourceFormat: TransferFormat }>;
  exportVolume(name: string, file: string, format: TransferFormat, progress: ProgressSink): Promise<{ file: string; format: TransferFormat }>;
  deleteVolume(name: string): Promise<void>;

  /** Through the guest agent: whether it answers, and the guest's interfaces (empty when it does not). */
  guestInfo(name: string): Promise<GuestInfo>;
  guestExec(name: string, command: string[], options: { input?: Buffer; timeoutSeconds: number }): Promise<ExecResult>;
  writeGuestFile(name: string, guestPath: string, data: Buffer): Promise<void>;
  readGuestFile(name: string, guestPath: string): Promise<Buffer>;

  listImages(): Promise<ImageManifest[]>;
  buildImage(kind: ImageKind, force: boolean, progress: ProgressSink): Promise<ImageManifest>;
  /** A qcow2/raw cloud image file on the host that carries the command out, as a disk image. */
  importDiskImage(input: { name: string; file: string; firmware?: ('bios' | 'uefi')[]; cloudInit?: boolean; defaultUser?: string }, progress: ProgressSink): Promise<ImageManifest>;
  deleteImage(name: string): Promise<void>;

  checkHost(): Promise<HostReport>;
  /** What the VMs are given versus what the host has, and overcommit. */
  hostAllocation(): Promise<HostAllocation>;

  /** Lets go of connections so the process can exit. */
  close(): void;
}
