/**
 * The UI's one client (the shared typed client over fetch) and the live
 * state every page reads: the VM list, recent operations and events, all
 * kept current by a single event stream (no polling), reconnecting after a
 * drop and saying so. In a cluster the stream is the cluster's (every
 * member's events, each naming its host) and the lists are every member's.
 */
import { useEffect, useState } from 'preact/hooks';
import { BrowserClient } from '../client/browser.js';
import type { RequestOf, ResponseOf } from '../api/contract.js';
import type { VireoEvent } from '../api/events.js';
import type { ClusterStatus } from '../api/cluster.js';
import type { Api, ApiKey } from '../api/index.js';
import type { Operation } from '../api/operations.js';
import type { UiSession } from '../api/ui.js';
import type { VmInfo } from '../api/vms.js';

export const api = new BrowserClient();

export type Vm = VmInfo;
export type Session = UiSession;
export type LiveOperation = Operation;

type Listener = () => void;

/** A minimal observable store: pages re-render when it changes. */
class Live {
  vms = new Map<string, Vm>();
  operations = new Map<string, LiveOperation>();
  events: VireoEvent[] = [];
  connected = false;
  loaded = false;
  /** The cluster as this daemon sees it (enabled: false outside one); re-read on cluster events and by the Hosts page. */
  cluster: ClusterStatus = { enabled: false };
  private readonly listeners = new Set<Listener>();
  private controller: AbortController | undefined;
  private scheduled = false;

  subscribe(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Batches bursts of events (200 VMs starting) into one render per frame. */
  changed(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    requestAnimationFrame(() => {
      this.scheduled = false;
      for (const listener of this.listeners) listener();
    });
  }

  async start(onLoggedOut: () => void): Promise<void> {
    this.stop();
    const controller = (this.controller = new AbortController());
    const [vms, operations, cluster] = await Promise.all([api.call('GET /vms'), api.call('GET /operations'), api.call('GET /cluster').catch(() => ({ enabled: false }))]);
    this.cluster = cluster;
    this.vms = new Map(vms.map((vm) => [vm.definition.name, vm]));
    this.operations = new Map(operations.map((operation) => [operation.id, operation]));
    this.loaded = true;
    this.changed();
    void (async () => {
      try {
        const stream = api.events({
          cluster: true,
          signal: controller.signal,
          onConnection: (connected) => {
            this.connected = connected;
            this.changed();
          },
        });
        for await (const event of stream) this.apply(event);
      } catch {
        // Refused with 401: the session is gone (logged out elsewhere, token revoked).
        if (!controller.signal.aborted) onLoggedOut();
      }
    })();
  }

  stop(): void {
    this.controller?.abort();
    this.controller = undefined;
    this.connected = false;
  }

  private apply(event: VireoEvent): void {
    this.events.unshift(event);
    if (this.events.length > 500) this.events.pop();
    const name = event.vm;
    const vm = name ? this.vms.get(name) : undefined;
    // In a cluster a VM that migrated has events from two hosts: only its current host's say what it is now.
    const elsewhere = vm !== undefined && event.host !== undefined && vm.host !== undefined && vm.host !== event.host;
    if (event.kind === 'vm.state' && name) {
      if (vm && !elsewhere) this.vms.set(name, { ...vm, runtime: { ...vm.runtime, state: String(event.data['state']) } });
      else if (!vm || event.data['state'] !== 'stopped') void this.refresh(name, event.host);
    } else if (event.kind === 'vm.defined' && name) {
      void this.refresh(name, event.host);
    } else if (event.kind === 'vm.deleted' && name) {
      if (!elsewhere) this.vms.delete(name);
    } else if (event.kind === 'operation') {
      const operation = { ...(event.data as unknown as LiveOperation), ...(event.host !== undefined ? { host: event.host } : {}) };
      this.operations.set(operation.id, operation);
      // Clones, templates and edits change definitions without a vm.defined event.
      if (operation.state !== 'running' && operation.target?.newVm) void this.refresh(operation.target.newVm);
      // A migration that ended moved the VM to another host (in a cluster, its owner record with it).
      if (operation.state === 'succeeded' && operation.kind === 'vm.migrate' && operation.target?.vm && this.cluster.enabled) void this.refresh(operation.target.vm);
    } else if (event.kind.startsWith('cluster.')) {
      void this.refreshCluster();
    }
    this.changed();
  }

  async refreshCluster(): Promise<void> {
    try {
      this.cluster = await api.call('GET /cluster');
    } catch {
      // Kept as it was: the Hosts page says when the daemon cannot be asked.
    }
    this.changed();
  }

  /** Reads one VM again (in a cluster, from the member that has it: the request is forwarded there); `host`: where an event said it is. */
  async refresh(name: string, host?: string, retried = false): Promise<void> {
    try {
      const vm = await api.call('GET /vms/:name', { params: { name } });
      const known = vm.host ?? host;
      this.vms.set(name, known !== undefined ? { ...vm, host: known } : vm);
    } catch {
      // Just migrated: for a moment its old host has let it go and the cluster has not yet recorded the new one.
      if (this.cluster.enabled && !retried) {
        setTimeout(() => void this.refresh(name, host, true), 1500);
        return;
      }
      this.vms.delete(name);
    }
    this.changed();
  }
}

export const live = new Live();

/** Re-renders the calling component whenever the live state changes. */
export function useLive(): Live {
  const [, setTick] = useState(0);
  useEffect(() => live.subscribe(() => setTick((tick) => tick + 1)), []);
  return live;
}

/** Calls a GET endpoint once (and again when its input or `deps` change); reload() calls it again. */
export function useCall<K extends ApiKey>(key: K, input?: RequestOf<Api[K]>, deps: unknown[] = []): { data?: ResponseOf<Api[K]>; error?: Error; reload(): void } {
  const [state, setState] = useState<{ data?: ResponseOf<Api[K]>; error?: Error }>({});
  const [nonce, setNonce] = useState(0);
  const inputKey = JSON.stringify(input ?? {});
  useEffect(() => {
    let current = true;
    api.invoke(key, input ?? {}).then(
      (data) => current && setState({ data }),
      (error: Error) => current && setState({ error }),
    );
    return () => {
      current = false;
    };
  }, [key, inputKey, nonce, ...deps]);
  return { ...state, reload: () => setNonce((value) => value + 1) };
}

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value >= 100 || unit === 0 ? value.toFixed(0) : value.toFixed(1)} ${units[unit]}`;
}

export function timeAgo(iso: string | undefined): string {
  if (!iso) return '';
  const seconds = Math.round((Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 60) return `${seconds}s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)}m ago`;
  return new Date(iso).toLocaleString();
}
