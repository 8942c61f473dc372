/**
 * The NoCloud seed of a VM: meta-data, user-data and (when given)
 * network-config, as text. Pure, so golden tests pin it; iso.ts writes it
 * to the "cidata" ISO that is attached to the VM at every start.
 *
 * The instance-id is the VM's UUID: stable across restarts (cloud-init runs
 * its once-per-instance modules once), new for a clone (which therefore gets
 * its own hostname and SSH host keys, and the image's vireo-identity unit a
 * new machine-id). The hostname defaults to the VM's name.
 */
import { parseDocument, stringify } from 'yaml';
import type { VmDefinition } from '../model/vm.js';

export interface SeedFiles {
  'meta-data': string;
  'user-data': string;
  'network-config'?: string;
}

// PyYAML (cloud-init) reads YAML 1.1, where an unquoted 52:54:00:00:00:01 is a base-60 number and yes/no are booleans.
const YAML_OPTIONS = { lineWidth: 0, version: '1.1' } as const;

export function instanceId(def: Pick<VmDefinition, 'uuid'>): string {
  return `iid-${def.uuid}`;
}

export function buildSeed(def: VmDefinition): SeedFiles {
  const spec = def.cloudInit ?? {};
  const meta = {
    ...(spec.metaData ?? {}),
    'instance-id': instanceId(def),
    'local-hostname': spec.hostname ?? def.name,
  };
  const files: SeedFiles = {
    'meta-data': stringify(meta, YAML_OPTIONS),
    'user-data': userData(spec),
  };
  if (spec.networkConfig !== undefined) {
    files['network-config'] = typeof spec.networkConfig === 'string' ? spec.networkConfig : stringify(spec.networkConfig, YAML_OPTIONS);
  }
  return files;
}

function userData(spec: NonNullable<VmDefinition['cloudInit']>): string {
  const additions = userAdditions(spec);
  if (spec.userData !== undefined && Object.keys(additions).length === 0) return spec.userData;
  const base = spec.userData !== undefined ? ((parseDocument(spec.userData).toJS() as Record<string, unknown> | null) ?? {}) : {};
  const merged: Record<string, unknown> = { ...base };
  if (additions.users) {
    // Keep the image's default user (and any the user-data names) next to ours.
    const existing = Array.isArray(base.users) ? base.users : ['default'];
    merged.users = [...existing, ...additions.users];
  }
  if (additions.ssh_authorized_keys) {
    const existing = Array.isArray(base.ssh_authorized_keys) ? base.ssh_authorized_keys : [];
    merged.ssh_authorized_keys = [...existing, ...additions.ssh_authorized_keys];
  }
  if (additions.password) Object.assign(merged, additions.password);
  return `#cloud-config\n${Object.keys(merged).length > 0 ? stringify(merged, YAML_OPTIONS) : '{}\n'}`;
}

/** What user, sshKeys and password add to the cloud-config. */
function userAdditions(spec: NonNullable<VmDefinition['cloudInit']>): { users?: unknown[]; ssh_authorized_keys?: string[]; password?: Record<string, unknown> } {
  if (spec.user !== undefined) {
    const user: Record<string, unknown> = {
      name: spec.user,
      sudo: 'ALL=(ALL) NOPASSWD:ALL',
      shell: '/bin/bash',
      groups: ['adm', 'sudo'],
      lock_passwd: spec.password === undefined,
    };
    if (spec.password !== undefined) user.plain_text_passwd = spec.password;
    if (spec.sshKeys?.length) user.ssh_authorized_keys = spec.sshKeys;
    return { users: [user] };
  }
  const result: { ssh_authorized_keys?: string[]; password?: Record<string, unknown> } = {};
  // No user named: the keys and password go to the image's default user.
  if (spec.sshKeys?.length) result.ssh_authorized_keys = spec.sshKeys;
  if (spec.password !== undefined) result.password = { password: spec.password, chpasswd: { expire: false }, ssh_pwauth: true };
  return result;
}
