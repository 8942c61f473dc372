/**
 * What etcd holds for high availability: one record per `ha: true` VM,
 * `/vireo/ha/<vm>`, written by the member that runs it (and by the leader
 * when it restarts the VM elsewhere):
 *
 *   host        the member it runs on (the owner record, /vireo/vms/<vm>, says the same)
 *   running     whether it should run: true while it runs, and after its host fenced it;
 *               false once a user stopped it (a stopped VM is not restarted)
 *   definition  its full definition, so another member can restart it without asking the dead one
 *
 * Every write is a transaction on the key's revision: a member that comes
 * back after the leader restarted its VM elsewhere cannot write the record
 * back to itself unseen. (The `balance` lane's per-VM records may absorb
 * this one later; it is kept apart so HA does not wait on them.)
 */
import { z } from 'zod';
import type { VmDefinition } from '../model/vm.js';
import { PREFIX, parseRecord } from './records.js';
import type { ClusterStore } from './store.js';

export const HA_PREFIX = `${PREFIX}ha/`;
export const haKey = (vm: string) => `${HA_PREFIX}${vm}`;

export const HaRecordSchema = z.object({
  host: z.string(),
  running: z.boolean(),
  updatedAt: z.string(),
  /** The VM's definition as its host keeps it (vm.json). */
  definition: z.looseObject({ name: z.string(), uuid: z.string() }),
});
export interface HaRecord {
  host: string;
  running: boolean;
  updatedAt: string;
  definition: VmDefinition;
}

export interface HaEntry {
  record: HaRecord;
  /** etcd's mod revision of the key: the next write is conditional on it. */
  revision: string;
}

function parse(key: string, text: string): HaRecord {
  return parseRecord(HaRecordSchema, key, text) as unknown as HaRecord;
}

export async function readHaRecords(store: ClusterStore): Promise<Map<string, HaEntry>> {
  const response = await store.call('list HA VMs', () => store.client.getAll().prefix(HA_PREFIX).exec());
  const out = new Map<string, HaEntry>();
  for (const kv of response.kvs) {
    const key = kv.key.toString();
    out.set(key.slice(HA_PREFIX.length), { record: parse(key, kv.value.toString()), revision: kv.mod_revision });
  }
  return out;
}

export async function readHaRecord(store: ClusterStore, vm: string): Promise<HaEntry | undefined> {
  const key = haKey(vm);
  const response = await store.call('read the HA record', () => store.client.get(key).exec());
  const kv = response.kvs[0];
  return kv ? { record: parse(key, kv.value.toString()), revision: kv.mod_revision } : undefined;
}

/**
 * Writes the record only if the key is as it was read (`previous`
 * undefined: only if absent). False: someone else wrote it meanwhile.
 */
export async function writeHaRecord(store: ClusterStore, vm: string, record: HaRecord, previous: HaEntry | undefined): Promise<boolean> {
  const key = haKey(vm);
  const value = JSON.stringify(record);
  const result = await store.call('write the HA record', () =>
    (previous ? store.client.if(key, 'Mod', '==', previous.revision) : store.client.if(key, 'Create', '==', 0)).then(store.client.put(key).value(value)).commit(),
  );
  return result.succeeded;
}

/** Removes the record if `host` still has the VM (the VM was deleted there, or is no longer ha). */
export async function removeHaRecord(store: ClusterStore, vm: string, host: string): Promise<void> {
  const entry = await readHaRecord(store, vm);
  if (!entry || entry.record.host !== host) return;
  const key = haKey(vm);
  await store.call('remove the HA record', () => store.client.if(key, 'Mod', '==', entry.revision).then(store.client.delete().key(key)).commit());
}
