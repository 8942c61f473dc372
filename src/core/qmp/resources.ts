/**
 * Typed QMP commands for resources and hotplug (QEMU 7.2 qapi/*.json):
 * QOM properties (throttle group limits), the balloon, device and block node
 * plug/unplug, objects, netdevs and hot-pluggable CPUs.
 */
import type { QmpClient } from './client.js';
import { VIRTIO_MEM_DEVICE } from '../qemu/ids.js';

type Empty = Record<string, never>;

export async function qomSet(client: QmpClient, path: string, property: string, value: unknown): Promise<void> {
  await client.execute<Empty>('qom-set', { path, property, value });
}

export async function qomGet<T>(client: QmpClient, path: string, property: string): Promise<T> {
  return client.execute<T>('qom-get', { path, property });
}

/** Sets the balloon target: the memory the guest keeps, in bytes. */
export async function balloon(client: QmpClient, bytes: number): Promise<void> {
  await client.execute<Empty>('balloon', { value: bytes });
}

/** qapi/machine.json BalloonInfo: the guest's current memory size as the balloon sees it. */
export async function queryBalloon(client: QmpClient): Promise<{ actual: number }> {
  return client.execute<{ actual: number }>('query-balloon');
}

export async function deviceAdd(client: QmpClient, device: Record<string, unknown>): Promise<void> {
  await client.execute<Empty>('device_add', device);
}

/** Asks the guest to release a device; it is gone only at the DEVICE_DELETED event. */
export async function deviceDel(client: QmpClient, id: string): Promise<void> {
  await client.execute<Empty>('device_del', { id });
}

export async function blockdevAdd(client: QmpClient, node: Record<string, unknown>): Promise<void> {
  await client.execute<Empty>('blockdev-add', node);
}

export async function blockdevDel(client: QmpClient, nodeName: string): Promise<void> {
  await client.execute<Empty>('blockdev-del', { 'node-name': nodeName });
}

export async function objectAdd(client: QmpClient, object: Record<string, unknown>): Promise<void> {
  await client.execute<Empty>('object-add', object);
}

export async function objectDel(client: QmpClient, id: string): Promise<void> {
  await client.execute<Empty>('object-del', { id });
}

export async function netdevAdd(client: QmpClient, netdev: Record<string, unknown>): Promise<void> {
  await client.execute<Empty>('netdev_add', netdev);
}

export async function netdevDel(client: QmpClient, id: string): Promise<void> {
  await client.execute<Empty>('netdev_del', { id });
}

/** qapi/machine.json HotpluggableCPU. */
export interface HotpluggableCpu {
  type: string;
  'vcpus-count': number;
  props: { 'node-id'?: number; 'socket-id'?: number; 'die-id'?: number; 'core-id'?: number; 'thread-id'?: number };
  /** Set when the CPU is present. */
  'qom-path'?: string;
}

export async function queryHotpluggableCpus(client: QmpClient): Promise<HotpluggableCpu[]> {
  return client.execute<HotpluggableCpu[]>('query-hotpluggable-cpus');
}

/** The virtio-mem device's QOM path (its requested-size is set live, its size is what the guest has plugged). */
export const VIRTIO_MEM_PATH = `/machine/peripheral/${VIRTIO_MEM_DEVICE}`;

/** Hot-pluggable memory as the virtio-mem device sees it, in bytes: plugged by the guest, and asked of it. */
export async function queryVirtioMem(client: QmpClient): Promise<{ plugged: number; requested: number }> {
  const plugged = await qomGet<number>(client, VIRTIO_MEM_PATH, 'size');
  const requested = await qomGet<number>(client, VIRTIO_MEM_PATH, 'requested-size');
  return { plugged, requested };
}
