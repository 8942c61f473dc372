/**
 * The UI's one client (the shared typed client over fetch) and the live
 * state every page reads: the VM list, recent operations and events, all
 * kept current by a single event stream (no polling), reconnecting after a
 * drop and saying so.
 */
import { useEffect, useState } from 'preact/hooks';
import { BrowserClient } from '../client/browser.js';
import type { RequestOf, ResponseOf } from '../api/contract.js';
import type { VireoEvent } from '../api/events.js';
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
    const [vms, operations] = await Promise.all([api.call('GET /vms'), api.call('GET /operations')]);
    this.vms = new Map(vms.map((vm) => [vm.definition.name, vm]));
    this.operations = new Map(operations.map((operation) => [operation.id, operation]));
    this.loaded = true;
    this.changed();
    void (async () => {
      try {
        const stream = api.events({
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
    if (event.kind === 'vm.state' && name) {
      const vm = this.vms.get(name);
      if (vm) this.vms.set(name, { ...vm, runtime: { ...vm.runtime, state: String(event.data['state']) } });
      else void this.refresh(name);
    } else if (event.kind === 'vm.defined' && name) {
      void this.refresh(name);
    } else if (event.kind === 'vm.deleted' && name) {
      this.vms.delete(name);
    } else if (event.kind === 'operation') {
      const operation = event.data as unknown as LiveOperation;
      this.operations.set(operation.id, operation);
      // Clones, templates and edits change definitions without a vm.defined event.
      if (operation.state !== 'running' && operation.target?.newVm) void this.refresh(operation.target.newVm);
    }
    this.changed();
  }

  async refresh(name: string): Promise<void> {
    try {
      this.vms.set(name, await api.call('GET /vms/:name', { params: { name } }));
    } catch {
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
