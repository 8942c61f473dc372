/**
 * The accelerator rule, fed with fake host facts: parsed cpuinfo fixtures
 * and /dev/kvm results, so each kind of host (Intel, AMD, nested paravirtual
 * cloud, no QEMU) is covered without needing that host.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isVireoError } from '../errors.js';
import { chooseAccelerator, tcgThreadMode, type AcceleratorFacts } from './accel.js';
import { assessKvm, parseCpuInfo, type KvmDeviceFacts } from './probe.js';

const BASE = 'fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht syscall nx lm';
const cpuinfo = (extra: string) => `processor\t: 0\nflags\t\t: ${BASE} ${extra}\n\nprocessor\t: 1\nflags\t\t: ${BASE} ${extra}\n`;

const kvmOpenable: KvmDeviceFacts = { path: '/dev/kvm', exists: true, openable: true };
const kvmAbsent: KvmDeviceFacts = { path: '/dev/kvm', exists: false, openable: false, errorCode: 'ENOENT', reason: '/dev/kvm does not exist' };
const kvmDenied: KvmDeviceFacts = { path: '/dev/kvm', exists: true, openable: false, errorCode: 'EACCES', reason: "add the user to the 'kvm' group" };

function facts(flags: string, device: KvmDeviceFacts, accelerators: string[] | undefined = ['tcg', 'kvm']): AcceleratorFacts {
  return {
    kvm: assessKvm(parseCpuInfo(cpuinfo(flags)), device, 'x64'),
    qemu: { binary: '/usr/bin/qemu-system-x86_64', ...(accelerators ? { accelerators } : {}) },
  };
}

test('vmx and a usable /dev/kvm: auto picks KVM, with no notice', () => {
  const choice = chooseAccelerator('auto', facts('vmx', kvmOpenable));
  assert.equal(choice.accel, 'kvm');
  assert.match(choice.reason, /Intel VT-x/);
  assert.equal(choice.notice, undefined);
});

test('svm and a usable /dev/kvm: auto picks KVM', () => {
  const choice = chooseAccelerator('auto', facts('svm', kvmOpenable));
  assert.equal(choice.accel, 'kvm');
  assert.match(choice.reason, /AMD-V/);
});

test('no vmx/svm but /dev/kvm present (nested paravirtual): auto picks TCG with a notice', () => {
  const choice = chooseAccelerator('auto', facts('hypervisor', kvmOpenable));
  assert.equal(choice.accel, 'tcg');
  assert.ok(choice.notice, 'a notice is given');
  assert.match(choice.notice, /nested/);
  assert.match(choice.notice, /paravirtual/);
  assert.match(choice.notice, /no vmx\/svm/);
  assert.match(choice.notice, /TCG/);
  assert.equal(choice.notice.split('\n').length, 1, 'the notice is one line');
});

test('no vmx/svm and no /dev/kvm: TCG, the notice names the missing CPU flags', () => {
  const choice = chooseAccelerator('auto', facts('', kvmAbsent));
  assert.equal(choice.accel, 'tcg');
  assert.match(choice.notice ?? '', /no vmx\/svm/);
  assert.doesNotMatch(choice.notice ?? '', /paravirtual/);
});

test('vmx but /dev/kvm not accessible: TCG, the notice says how to get access', () => {
  const choice = chooseAccelerator('auto', facts('vmx', kvmDenied));
  assert.equal(choice.accel, 'tcg');
  assert.match(choice.notice ?? '', /'kvm' group/);
});

test('KVM requested where it is not usable: host_unsupported naming the reason, field accelerator', () => {
  assert.throws(
    () => chooseAccelerator('kvm', facts('hypervisor', kvmOpenable)),
    (error: unknown) => {
      assert.ok(isVireoError(error, 'host_unsupported'));
      assert.equal(error.details.field, 'accelerator');
      assert.match(error.message, /nested paravirtual/);
      return true;
    },
  );
});

test('KVM requested where the QEMU build lacks KVM: host_unsupported', () => {
  assert.throws(() => chooseAccelerator('kvm', facts('vmx', kvmOpenable, ['tcg'])), (error: unknown) => isVireoError(error, 'host_unsupported') && error.details.field === 'accelerator');
});

test('KVM requested and usable: KVM', () => {
  assert.equal(chooseAccelerator('kvm', facts('svm', kvmOpenable)).accel, 'kvm');
});

test('TCG requested: TCG, on a KVM host as well as on a host without KVM', () => {
  for (const hostFacts of [facts('vmx', kvmOpenable), facts('', kvmAbsent)]) {
    const choice = chooseAccelerator('tcg', hostFacts);
    assert.equal(choice.accel, 'tcg');
    assert.equal(choice.notice, undefined);
  }
});

test('TCG requested from a QEMU built without TCG: host_unsupported', () => {
  assert.throws(() => chooseAccelerator('tcg', facts('vmx', kvmOpenable, ['kvm'])), (error: unknown) => isVireoError(error, 'host_unsupported'));
});

test('auto with neither KVM nor TCG: host_unsupported', () => {
  assert.throws(() => chooseAccelerator('auto', facts('', kvmAbsent, ['kvm'])), (error: unknown) => isVireoError(error, 'host_unsupported'));
});

test('unknown accelerator list (-accel help failed): assumed present', () => {
  assert.equal(chooseAccelerator('auto', facts('vmx', kvmOpenable, undefined)).accel, 'kvm');
  assert.equal(chooseAccelerator('auto', facts('', kvmAbsent, undefined)).accel, 'tcg');
});

test('no QEMU at all: host_unsupported pointing at vireo host setup', () => {
  const noQemu: AcceleratorFacts = { kvm: { usable: true, reason: 'ok' }, qemu: {} };
  assert.throws(() => chooseAccelerator('auto', noQemu), (error: unknown) => isVireoError(error, 'host_unsupported') && /vireo host setup/.test(error.message));
});

test('KVM on a non-x86_64 host is never usable', () => {
  const kvm = assessKvm(parseCpuInfo(cpuinfo('vmx')), kvmOpenable, 'arm64');
  assert.equal(kvm.usable, false);
  assert.match(kvm.reason, /arm64/);
});

test('TCG thread mode: multi for SMP guests, single for one vCPU', () => {
  assert.equal(tcgThreadMode(1), 'single');
  assert.equal(tcgThreadMode(2), 'multi');
  assert.equal(tcgThreadMode(64), 'multi');
});
