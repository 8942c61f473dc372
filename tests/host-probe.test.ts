/**
 * The host probes against this real host: the build machine is a nested
 * paravirtual KVM guest, exactly the case where a naive /dev/kvm check
 * would pick KVM and hand users a crawling, crashing guest. (The parsers
 * and decisions against fixtures are src/core/host/probe.test.ts.)
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { test } from 'node:test';
import { chooseAccelerator } from '../src/core/host/accel.js';
import { checkHost, formatHostReport, getHostFacts } from '../src/core/host/check.js';
import { probeHost } from '../src/core/host/probe.js';

/* ------------------------------ this host -------------------------------- */

const rawCpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
/** Read independently of the parser under test, so a parser bug cannot hide itself. */
const rawHasExtension = /^flags\s*:.*\b(vmx|svm)\b/m.test(rawCpuinfo);
const notThisMachine = rawHasExtension ? 'this host has vmx/svm: it is not the nested paravirtual build machine' : false;

test('this host: QEMU and qemu-img are found, with the versions they print', async () => {
  const facts = await probeHost();
  assert.ok(facts.qemu.binary, 'qemu-system-x86_64 found');
  assert.ok(facts.qemu.img, 'qemu-img found');
  assert.ok(facts.qemu.version && facts.qemu.version.major >= 7, `QEMU 7 or newer (found ${facts.qemu.version?.text})`);
  assert.ok(execFileSync(facts.qemu.binary, ['--version'], { encoding: 'utf8', timeout: 60_000 }).includes(`version ${facts.qemu.version.text}`));
  assert.ok(facts.qemu.imgVersion, 'qemu-img version parsed');
  assert.ok(facts.qemu.accelerators?.includes('tcg'), 'QEMU has TCG');
});

test('this host: the auto accelerator agrees with the raw CPU flags and /dev/kvm', async () => {
  const facts = await probeHost();
  assert.equal(Boolean(facts.cpu.extension), rawHasExtension);
  const choice = chooseAccelerator('auto', facts);
  if (!rawHasExtension) {
    assert.equal(choice.accel, 'tcg');
    if (existsSync('/dev/kvm')) assert.match(choice.notice ?? '', /nested paravirtual/);
  } else if (facts.kvmDevice.openable) {
    assert.equal(choice.accel, 'kvm');
  }
});

test('this build machine: QEMU 7.x, no vmx/svm, /dev/kvm present, auto is TCG, Debian 12 firmware found', { skip: notThisMachine }, async () => {
  const facts = await probeHost();
  assert.equal(facts.qemu.version?.major, 7);
  assert.equal(facts.cpu.extension, undefined);
  assert.equal(facts.cpu.hypervisor, true);
  assert.equal(facts.kvmDevice.exists, true, '/dev/kvm is present');
  assert.equal(facts.kvm.usable, false);
  assert.match(facts.kvm.reason, /nested paravirtual/);
  const choice = chooseAccelerator('auto', facts);
  assert.equal(choice.accel, 'tcg');
  assert.match(choice.notice ?? '', /^KVM is not usable here \(no vmx\/svm CPU flags: \/dev\/kvm is a nested paravirtual device.*\); using TCG/);
  assert.deepEqual(facts.firmware.ovmf, { code: '/usr/share/OVMF/OVMF_CODE_4M.fd', vars: '/usr/share/OVMF/OVMF_VARS_4M.fd' });
  assert.equal(facts.firmware.seabios, '/usr/share/seabios/bios-256k.bin');
});

test('this host: firmware files found are real files', async () => {
  const { firmware } = await probeHost();
  assert.ok(firmware.seabios, 'SeaBIOS found');
  assert.ok(firmware.ovmf, 'OVMF found');
  for (const path of [firmware.seabios, firmware.ovmf.code, firmware.ovmf.vars]) assert.ok(existsSync(path), path);
});

test('this host: getHostFacts probes once per process; checkHost reports that VMs can run', async () => {
  const first = getHostFacts();
  assert.equal(getHostFacts(), first, 'the same promise: no second probe');
  const started = performance.now();
  await getHostFacts();
  await getHostFacts();
  await first;
  assert.ok(performance.now() - started < 5_000);
  const cachedAgain = performance.now();
  await getHostFacts();
  assert.ok(performance.now() - cachedAgain < 50, 'a cached call is immediate');
  assert.notEqual(getHostFacts({ refresh: true }), first, 'refresh probes again');

  const report = await checkHost();
  assert.equal(report.canRunVms, true);
  const text = formatHostReport(report);
  assert.match(text.split('\n').at(-1) ?? '', new RegExp(`^Accelerator: ${report.accelerator.accel} — `));
});
