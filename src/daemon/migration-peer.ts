/**
 * The core's Peer (src/core/migration/peer.ts) over the destination
 * daemon's HTTP API (src/api/migration.ts): each call of the protocol is
 * one request, with a timeout; the destination's errors come back as
 * VireoErrors with their details (phase 'aborted' or 'committed'), which
 * the core classifies.
 */
import { ApiClient } from '../client/api-client.js';
import { pinnedAgentOptions } from '../client/endpoint.js';
import type { Peer } from '../core/migration/peer.js';
import type { PeerAddress } from '../core/migration/records.js';

export function httpPeer(address: PeerAddress): Peer {
  const client = new ApiClient({
    url: address.url,
    ...(address.token ? { token: address.token } : {}),
    tls: pinnedAgentOptions({ url: address.url, ...(address.fingerprint256 ? { fingerprint256: address.fingerprint256 } : {}) }),
  });
  return {
    name: address.url,
    // The destination's QEMU listens on the address its daemon was reached at.
    host: new URL(address.url).hostname.replace(/^\[|\]$/g, ''),
    prepare: (offer) => client.call('POST /migrations/incoming', { body: offer }, { timeoutMs: 120_000 }),
    status: (id) => client.call('GET /migrations/:id', { params: { id } }, { timeoutMs: 10_000 }),
    // Every second during the transfer: quick to give up, the source counts the silence.
    heartbeat: (id) => client.call('GET /migrations/:id', { params: { id } }, { timeoutMs: 5000 }),
    commit: async (id) => {
      await client.call('POST /migrations/:id/commit', { params: { id }, body: {} }, { timeoutMs: 60_000 });
    },
    abort: async (id) => {
      await client.call('POST /migrations/:id/abort', { params: { id }, body: {} }, { timeoutMs: 10_000 });
    },
    finish: async (id) => {
      await client.call('POST /migrations/:id/finish', { params: { id }, body: {} }, { timeoutMs: 10_000 });
    },
  };
}
