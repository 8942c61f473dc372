/**
 * A Peer that calls the destination's state machine in the same process:
 * what a cluster scheduler moving VMs between hosts it drives itself would
 * use, and what the unit tests of the hand-over use. Answers and errors are
 * the destination's own, so the source classifies them as it does over HTTP.
 */
import type { MigrationDestination } from './destination.js';
import type { Peer } from './peer.js';

export function memoryPeer(destination: () => MigrationDestination, where: { name: string; host: string }): Peer {
  return {
    name: where.name,
    host: where.host,
    prepare: (offer) => destination().receive(structuredClone(offer)),
    status: (id) => destination().status(id),
    heartbeat: (id) => destination().status(id),
    commit: async (id) => {
      await destination().commit(id);
    },
    abort: async (id) => {
      await destination().abort(id);
    },
    finish: async (id) => {
      await destination().finish(id);
    },
  };
}
