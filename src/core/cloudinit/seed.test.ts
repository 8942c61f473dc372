/**
 * Golden tests of the NoCloud seed: golden/<case>.json holds a VM spec,
 * golden/<case>.seed the files the seed builder makes from it. Run with
 * UPDATE_GOLDEN=1 to rewrite them after an intended change, then review.
 * Also: the bad inputs the issue names (user-data that is not cloud-config,
 * a file that is not a public key) are refused naming the field.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { VireoError } from '../errors.js';
import { publicKeyProblem, userDataProblem } from '../model/cloud-init.js';
import { defineVm, parseVmSpec, type VmDefinition } from '../model/vm.js';
import { buildSeed, instanceId } from './seed.js';

const goldenDir = fileURLToPath(new URL('../../../../src/core/cloudinit/golden/', import.meta.url));
const identity = { uuid: '00000000-0000-4000-8000-0000000000c1', createdAt: '2026-01-01T00:00:00.000Z', nics: [{ mac: '52:54:00:00:00:01' }] } as unknown as VmDefinition;

function render(name: string): string {
  const def = defineVm(parseVmSpec(JSON.parse(readFileSync(join(goldenDir, `${name}.json`), 'utf8'))), identity);
  const files = buildSeed(def);
  return Object.entries(files).map(([file, text]) => `=== ${file}\n${text}`).join('');
}

const cases = readdirSync(goldenDir).filter((file) => file.endsWith('.json')).map((file) => file.slice(0, -5));

for (const name of cases) {
  test(`seed matches golden file: ${name}`, () => {
    const actual = render(name);
    const file = join(goldenDir, `${name}.seed`);
    if (process.env.UPDATE_GOLDEN === '1') writeFileSync(file, actual);
    assert.equal(actual, readFileSync(file, 'utf8'));
  });
}

test('every generated user-data and meta-data parses, and cloud-config keeps the #cloud-config header', () => {
  for (const name of cases) {
    const def = defineVm(parseVmSpec(JSON.parse(readFileSync(join(goldenDir, `${name}.json`), 'utf8'))), identity);
    const files = buildSeed(def);
    const meta = parse(files['meta-data']) as Record<string, unknown>;
    assert.equal(meta['instance-id'], instanceId(def));
    if (!files['user-data'].startsWith('#!')) {
      assert.match(files['user-data'], /^#cloud-config\n/);
      assert.equal(userDataProblem(files['user-data']), undefined, name);
    }
  }
});

test('the instance-id follows the VM identity: equal for the same VM, new for a clone', () => {
  const spec = parseVmSpec({ name: 'a', cloudInit: {} });
  const first = defineVm(spec);
  const again = defineVm(spec, first);
  const clone = defineVm(parseVmSpec({ name: 'b', cloudInit: {} }));
  assert.equal(buildSeed(again)['meta-data'], buildSeed(first)['meta-data']);
  assert.notEqual(instanceId(clone), instanceId(first));
  assert.match(buildSeed(clone)['meta-data'], /local-hostname: b\n/);
});

function rejectsField(input: unknown, field: string, pattern: RegExp): void {
  assert.throws(() => parseVmSpec(input), (error: unknown) => {
    assert.ok(error instanceof VireoError && error.code === 'invalid_argument');
    assert.equal(error.details.field, field);
    assert.match(error.message, pattern);
    return true;
  });
}

test('user-data that is not valid cloud-config YAML is refused with its line', () => {
  rejectsField({ name: 'x', cloudInit: { userData: '#cloud-config\nusers:\n  - name: a\n   bad: [\n' } }, 'cloudInit.userData', /not valid cloud-config YAML \(line \d+\)/);
  rejectsField({ name: 'x', cloudInit: { userData: '#cloud-config\n- a\n- b\n' } }, 'cloudInit.userData', /must be a mapping/);
  rejectsField({ name: 'x', cloudInit: { userData: 'users: []\n' } }, 'cloudInit.userData', /must start with "#cloud-config"/);
  rejectsField({ name: 'x', cloudInit: { userData: '#!/bin/sh\ntrue\n', user: 'a' } }, 'cloudInit.userData', /only be added to cloud-config/);
  rejectsField({ name: 'x', cloudInit: { metaData: { 'instance-id': 'mine' } } }, 'cloudInit.metaData.instance-id', /set by Vireo/);
  rejectsField({ name: 'x', cloudInit: { hostname: 'bad_host!' } }, 'cloudInit.hostname', /host name/);
  rejectsField({ name: 'x', cloudInit: { networkConfig: 'version: [\n' } }, 'cloudInit.networkConfig', /not valid YAML/);
});

test('an SSH key that is not a public key is refused', () => {
  rejectsField({ name: 'x', cloudInit: { sshKeys: ['-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----'] } }, 'cloudInit.sshKeys.0', /private key/);
  rejectsField({ name: 'x', cloudInit: { sshKeys: ['hello world'] } }, 'cloudInit.sshKeys.0', /not an SSH public key/);
  // A valid type with key data of another type: damaged.
  const ed = 'AAAAC3NzaC1lZDI1NTE5AAAAIGb2Mk9v0yq7C3rH2cY8sQbS8S5yR8m1Yv7mZz5a9bQm';
  assert.equal(publicKeyProblem(`ssh-ed25519 ${ed} a@b`), undefined);
  assert.match(publicKeyProblem(`ssh-rsa ${ed}`) ?? '', /not a ssh-rsa key/);
});
