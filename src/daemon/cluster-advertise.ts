/**
 * A member's advertised URL after its daemon restarts. The URL the others
 * reach a member at is written at init/join (its --listen address, or the
 * --url given); a daemon restarted with another --listen would otherwise
 * keep sending the others to an address nothing listens on. So at start the
 * daemon compares what it listens on now with what it advertised, and
 * re-advertises (config file and etcd member record) when the URL came from
 * --listen. A URL given explicitly with --url (a NAT, a proxy, a name) is
 * the user's word and is kept; so is the old one when the daemon now
 * listens on no usable address (a wildcard, or only its Unix socket).
 */
import type { ClusterConfig } from '../core/cluster/config.js';
import { MemberRecordSchema, keys, parseRecord, type MemberRecord } from '../core/cluster/records.js';
import type { ClusterStore } from '../core/cluster/store.js';
import { VireoError } from '../core/errors.js';

export interface Advertised {
  url: string;
  fingerprint256?: string;
}

export type AdvertiseDecision =
  | { change: false; note?: string }
  | { change: true; url: string; fingerprint256?: string; note: string };

function isWildcard(url: string): boolean {
  const host = new URL(url).hostname;
  return host === '0.0.0.0' || host === '[::]' || host === '::';
}

/**
 * What to advertise now, from the saved configuration and the address the
 * daemon listens on. `config.listenUrl` is the listen URL when the config
 * was written; a config from before that field existed is taken as derived
 * from --listen (what init and join do unless --url is given).
 */
export function advertiseDecision(config: Pick<ClusterConfig, 'url' | 'fingerprint256' | 'listenUrl'>, self: Partial<Advertised>): AdvertiseDecision {
  const derived = config.listenUrl === undefined || config.listenUrl === config.url;
  if (self.url === undefined) return { change: false, note: `this daemon listens on no TCP address: the other members still reach it at ${config.url}, which may fail` };
  if (isWildcard(self.url)) {
    return self.url === config.listenUrl ? { change: false } : { change: false, note: `this daemon listens on every address (${self.url}): it keeps advertising ${config.url}` };
  }
  const fingerprintChanged = self.fingerprint256 !== undefined && self.fingerprint256 !== config.fingerprint256;
  if (!derived) {
    if (fingerprintChanged) return { change: true, url: config.url, fingerprint256: self.fingerprint256!, note: `its TLS certificate changed: re-advertising ${config.url} with the new fingerprint` };
    return self.url === config.listenUrl ? { change: false } : { change: false, note: `now listening on ${self.url}; the URL given at join (${config.url}) stays advertised` };
  }
  if (self.url === config.url && !fingerprintChanged) return { change: false };
  return {
    change: true,
    url: self.url,
    ...(self.fingerprint256 !== undefined ? { fingerprint256: self.fingerprint256 } : config.fingerprint256 !== undefined ? { fingerprint256: config.fingerprint256 } : {}),
    note: self.url === config.url ? `its TLS certificate changed: re-advertising ${self.url} with the new fingerprint` : `now listening on ${self.url} (was ${config.url}): re-advertising it to the cluster`,
  };
}

/**
 * Writes the new URL (and fingerprint) into the member's etcd record,
 * changing nothing else: a compare-and-swap on the record's revision, so a
 * concurrent change (maintenance set by another member) is read again, not
 * overwritten. False when the record is gone (the member was removed).
 */
export async function readvertiseMember(store: ClusterStore, name: string, advertised: Advertised): Promise<boolean> {
  const key = keys.member(name);
  for (let attempt = 0; attempt < 5; attempt++) {
    const answer = await store.call('read the member', () => store.client.get(key).exec());
    const kv = answer.kvs[0];
    if (!kv) return false;
    const record = parseRecord(MemberRecordSchema, key, kv.value.toString());
    const { fingerprint256: _old, ...rest } = record;
    const next: MemberRecord = { ...rest, url: advertised.url, ...(advertised.fingerprint256 !== undefined ? { fingerprint256: advertised.fingerprint256 } : _old !== undefined ? { fingerprint256: _old } : {}) };
    const result = await store.call('re-advertise the member', () => store.client.if(key, 'Mod', '==', kv.mod_revision).then(store.client.put(key).value(JSON.stringify(next))).commit());
    if (result.succeeded) return true;
  }
  throw new VireoError('unavailable', `the member record of '${name}' kept changing while its URL was re-advertised`, { field: 'url' });
}
