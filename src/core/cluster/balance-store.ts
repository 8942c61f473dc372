/**
 * The scheduler's settings and the balancer's memory, in etcd, so every
 * member reads the same settings and a new leader carries on where the last
 * one stopped (its hold period and per-VM cooldowns included):
 *
 *   /vireo/settings/schedule   ScheduleSettings (schedule/types.ts); absent: the defaults
 *   /vireo/balance/history     the leader's recent imbalance samples and moves
 *
 * Settings are checked by checkScheduleSettings() both when changed and when
 * read: a value an older or foreign writer left that no longer passes is a
 * clear error naming the field, not a balancer acting on nonsense.
 */
import { z } from 'zod';
import { VireoError, isVireoError } from '../errors.js';
import { PREFIX } from './records.js';
import { checkScheduleSettings, DEFAULT_SETTINGS, type BalanceHistory, type ScheduleSettings } from './schedule/index.js';
import type { ClusterStore } from './store.js';

export const balanceKeys = {
  settings: `${PREFIX}settings/schedule`,
  history: `${PREFIX}balance/history`,
} as const;

export async function readScheduleSettings(store: ClusterStore): Promise<ScheduleSettings> {
  const text = await store.call('read the cluster\'s settings', () => store.client.get(balanceKeys.settings).string());
  if (text === null) return DEFAULT_SETTINGS;
  try {
    return checkScheduleSettings(JSON.parse(text));
  } catch (error) {
    const field = isVireoError(error) ? String(error.details.field ?? '') : '';
    throw new VireoError('internal', `etcd key ${balanceKeys.settings} holds settings Vireo cannot use${field ? ` (${field})` : ''}: ${(error as Error).message}`, { key: balanceKeys.settings });
  }
}

/**
 * Changes some settings (the rest stay as they are), in one transaction
 * against the value read: two changes at once cannot lose one another's
 * fields. Bad values are invalid_argument naming the field (balance.threshold).
 */
export async function changeScheduleSettings(store: ClusterStore, patch: unknown): Promise<ScheduleSettings> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const text = await store.call('read the cluster\'s settings', () => store.client.get(balanceKeys.settings).string());
    // A stored value that no longer passes is replaced by the defaults plus this change, rather than blocking every change.
    let current = DEFAULT_SETTINGS;
    if (text !== null) {
      try {
        current = checkScheduleSettings(JSON.parse(text));
      } catch {
        current = DEFAULT_SETTINGS;
      }
    }
    const next = checkScheduleSettings(patch, current);
    const value = JSON.stringify(next);
    const result = await store.call('change the cluster\'s settings', () =>
      (text === null ? store.client.if(balanceKeys.settings, 'Create', '==', 0) : store.client.if(balanceKeys.settings, 'Value', '==', text)).then(store.client.put(balanceKeys.settings).value(value)).commit(),
    );
    if (result.succeeded) return next;
  }
  throw new VireoError('unavailable', 'the cluster\'s settings kept changing under this change: try again', { field: 'settings' });
}

const HistorySchema = z.object({
  samples: z.array(z.object({ at: z.number(), imbalance: z.number() })),
  moves: z.array(z.object({ vm: z.string(), from: z.string(), to: z.string(), at: z.number() })),
});

export async function readBalanceHistory(store: ClusterStore): Promise<BalanceHistory> {
  const text = await store.call('read the balancer\'s history', () => store.client.get(balanceKeys.history).string());
  if (text === null) return { samples: [], moves: [] };
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return { samples: [], moves: [] };
  }
  const parsed = HistorySchema.safeParse(json);
  // A history Vireo cannot read is only memory: the balancer starts it afresh rather than stop.
  return parsed.success ? parsed.data : { samples: [], moves: [] };
}

export async function writeBalanceHistory(store: ClusterStore, history: BalanceHistory): Promise<void> {
  await store.call('record the balancer\'s history', () => store.client.put(balanceKeys.history).value(JSON.stringify(history)).exec());
}

/** Keeps what the next decisions can need: samples of the hold period (and a little more), moves of the cooldown. */
export function pruneHistory(history: BalanceHistory, settings: ScheduleSettings, now: number): BalanceHistory {
  const keepSamples = Math.max(settings.balance.holdMs, settings.balance.intervalMs) * 2 + 60_000;
  return {
    samples: history.samples.filter((sample) => now - sample.at <= keepSamples).slice(-500),
    moves: history.moves.filter((move) => now - move.at <= Math.max(settings.balance.cooldownMs, settings.balance.holdMs)).slice(-500),
  };
}
