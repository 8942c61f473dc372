/**
 * This host's cluster membership, kept in <home>/cluster/config.json (0600):
 * the daemon reads it at start and, when present, joins the cluster (the
 * etcd client is loaded only then). Written once by init or join, removed
 * by leave.
 */
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { VireoError } from '../errors.js';
import type { VireoPaths } from '../paths.js';
import { readJsonIfExists, writeFileAtomic } from '../store/atomic.js';

export const LocalEtcdSchema = z.object({
  name: z.string(),
  clientUrl: z.string(),
  peerUrl: z.string(),
});
export type LocalEtcd = z.infer<typeof LocalEtcdSchema>;

export const ClusterConfigSchema = z.object({
  version: z.literal(1),
  clusterId: z.string(),
  /** This member's name. */
  name: z.string(),
  /** Its daemon's API, as other members reach it. */
  url: z.string(),
  /** The daemon's --listen URL when this was written: `url` came from it when the two are equal (see daemon/cluster-advertise.ts). */
  listenUrl: z.string().optional(),
  fingerprint256: z.string().optional(),
  etcd: z.array(z.string()).min(1),
  leaseTtlSeconds: z.number().int(),
  labels: z.record(z.string(), z.string()).default({}),
  /** The id of the API token made for the other members (revoked on leave). */
  tokenId: z.string(),
  /** A local etcd member this daemon runs as its child (vireo cluster init --etcd-local). */
  localEtcd: LocalEtcdSchema.optional(),
});
export type ClusterConfig = z.infer<typeof ClusterConfigSchema>;

export function clusterDir(paths: VireoPaths): string {
  return join(paths.home, 'cluster');
}

export function clusterConfigFile(paths: VireoPaths): string {
  return join(clusterDir(paths), 'config.json');
}

/** The local etcd member's data: under Vireo's directory, with the cluster config. */
export function localEtcdDataDir(paths: VireoPaths): string {
  return join(clusterDir(paths), 'etcd');
}

export async function readClusterConfig(paths: VireoPaths): Promise<ClusterConfig | undefined> {
  const file = clusterConfigFile(paths);
  const json = await readJsonIfExists(file);
  if (json === undefined) return undefined;
  const parsed = ClusterConfigSchema.safeParse(json);
  if (!parsed.success) throw new VireoError('internal', `${file} is not a cluster configuration Vireo can read: ${parsed.error.issues[0]?.message ?? 'invalid'}`, { file });
  return parsed.data;
}

export async function writeClusterConfig(paths: VireoPaths, config: ClusterConfig): Promise<void> {
  await mkdir(clusterDir(paths), { recursive: true, mode: 0o700 });
  await writeFileAtomic(clusterConfigFile(paths), `${JSON.stringify(config, null, 2)}\n`, 0o600);
}

export async function removeClusterConfig(paths: VireoPaths): Promise<void> {
  await rm(clusterConfigFile(paths), { force: true });
}
