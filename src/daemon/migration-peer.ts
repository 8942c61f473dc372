/**
 * The core's Peer (src/core/migration/peer.ts) over the destination
 * daemon's HTTP API: each call of the protocol is one request, with a
 * timeout; the destination's errors come back as VireoErrors with their
 * details (phase 'aborted' or 'committed'), which the core classifies.
 */
import { ApiClient } from '../client/api-client.js';
import { pinnedAgentOptions } from '../client/endpoint.js';
import type { DestinationStatus, IncomingOffer, Peer, PreparedIncoming } from '../core/migration/peer.js';
import type { PeerAddress } from '../core/migration/records.js';

export function httpPeer(address: PeerAddress): Peer {
  const client = new ApiClient({
    url: address.url,
    ...(address.token ? { token: address.token } : {}),
    tls: pinnedAgentOptions({ url: address.url, ...(address.fingerprint256 ? { fingerprint256: address.fingerprint256 } : {}) }),
  });
  const post = async (path: string, timeoutMs: number) => {
    await client.request('POST', path, {}, { timeoutMs });
  };
  return {
    name: address.url,
    // The destination's QEMU listens on the address its daemon was reached at.
    host: new URL(address.url).hostname.replace(/^\[|\]$/g, ''),
    prepare: (offer: IncomingOffer) => client.request<PreparedIncoming>('POST', '/migrations/incoming', offer, { timeoutMs: 120_000 }),
    status: (id) => client.request<DestinationStatus>('GET', `/migrations/${id}`, undefined, { timeoutMs: 10_000 }),
    heartbeat: (id) => client.request<DestinationStatus>('GET', `/migrations/${id}`, undefined, { timeoutMs: 5000 }),
    commit: (id) => post(`/migrations/${id}/commit`, 60_000),
    abort: (id) => post(`/migrations/${id}/abort`, 10_000),
    finish: (id) => post(`/migrations/${id}/finish`, 10_000),
  };
}
