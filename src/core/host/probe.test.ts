/**
 * Probes against fixtures (cpuinfo text, QEMU output, fake /dev/kvm opens,
 * fake firmware trees). The same probes against this real host (its QEMU
 * asked for real) are tests/host-probe.test.ts: unit tests start no QEMU.
 */
import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { buildHostReport, formatHostReport } from './check.js';
import {
  assessKvm,
  findInPath,
  parseAccelHelp,
  parseCpuInfo,
  parseQemuVersion,
  probeFirmware,
  probeKvmDevice,
  probeLaunchFacts,
  probeQemu,
  qemuAccelerators,
  ACCELERATORS_CACHE,
  type CommandRunner,
  type HostFacts,
} from './probe.js';

/* ------------------------------- fixtures -------------------------------- */

const INTEL = `processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush dts acpi mmx fxsr sse sse2 ss ht tm pbe syscall nx pdpe1gb rdtscp lm constant_tsc vmx smx est tm2 ssse3 sdbg fma cx16 xtpr pdcm pcid sse4_1 sse4_2
vmx flags\t: vnmi preemption_timer invvpid ept_x_only ept_ad ept_1gb flexpriority tsc_offset vtpr mtf vapic ept vpid unrestricted_guest ple shadow_vmcs pml
bugs\t\t: cpu_meltdown spectre_v1 spectre_v2

processor\t: 1
vendor_id\t: GenuineIntel
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush dts acpi mmx fxsr sse sse2 ss ht tm pbe syscall nx pdpe1gb rdtscp lm constant_tsc vmx smx est tm2 ssse3 sdbg fma cx16 xtpr pdcm pcid sse4_1 sse4_2
vmx flags\t: vnmi preemption_timer invvpid ept_x_only ept_ad
`;

const AMD = `processor\t: 0
vendor_id\t: AuthenticAMD
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl nonstop_tsc cpuid extd_apicid aperfmperf pni pclmulqdq monitor ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt aes xsave avx f16c rdrand lahf_lm cmp_legacy svm extapic cr8_legacy abm sse4a misalignsse 3dnowprefetch osvw ibs skinit wdt tce topoext
`;

/** Like this build machine: a cloud guest with the hypervisor flag and no vmx/svm. */
const NESTED = `processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ss ht syscall nx pdpe1gb rdtscp lm constant_tsc rep_good nopl xtopology nonstop_tsc cpuid tsc_known_freq pni pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave avx f16c rdrand hypervisor lahf_lm abm
`;

const QEMU_VERSION = 'QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers\n';
const QEMU_IMG_VERSION = 'qemu-img version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers\n';
const ACCEL_HELP = 'Accelerators supported in QEMU binary:\ntcg\nkvm\n';

/* --------------------------------- CPU ----------------------------------- */

test('cpuinfo: vmx is Intel VT-x, and "vmx flags" lines are not mistaken for flags', () => {
  assert.deepEqual(parseCpuInfo(INTEL), { extension: 'vmx', name: 'Intel VT-x', hypervisor: false });
  const onlySubFeatures = 'processor\t: 0\nflags\t\t: fpu sse lm\nvmx flags\t: vmx ept vpid\n';
  assert.equal(parseCpuInfo(onlySubFeatures).extension, undefined);
});

test('cpuinfo: svm is AMD-V', () => {
  assert.deepEqual(parseCpuInfo(AMD), { extension: 'svm', name: 'AMD-V', hypervisor: false });
});

test('cpuinfo: a nested cloud guest has no extension and says hypervisor', () => {
  assert.deepEqual(parseCpuInfo(NESTED), { extension: undefined, name: 'none', hypervisor: true });
});

test('cpuinfo: a flag counts only if every CPU has it; empty input means none', () => {
  const mixed = 'processor\t: 0\nflags\t\t: fpu vmx\n\nprocessor\t: 1\nflags\t\t: fpu\n';
  assert.equal(parseCpuInfo(mixed).extension, undefined);
  assert.equal(parseCpuInfo('').extension, undefined);
  assert.equal(parseCpuInfo('flags : fpu vmxe svmx\n').extension, undefined, 'whole words only');
});

/* -------------------------------- QEMU ----------------------------------- */

test('QEMU --version parsing (qemu-system, qemu-img, two-part and old formats)', () => {
  assert.deepEqual(parseQemuVersion(QEMU_VERSION), { major: 7, minor: 2, micro: 22, text: '7.2.22' });
  assert.deepEqual(parseQemuVersion(QEMU_IMG_VERSION), { major: 7, minor: 2, micro: 22, text: '7.2.22' });
  assert.deepEqual(parseQemuVersion('QEMU emulator version 8.2.2 (Debian 1:8.2.2+ds-0ubuntu1)\n'), { major: 8, minor: 2, micro: 2, text: '8.2.2' });
  assert.deepEqual(parseQemuVersion('qemu-img version 2.11.1(Debian 1:2.11+dfsg-1ubuntu7)\n'), { major: 2, minor: 11, micro: 1, text: '2.11.1' });
  assert.deepEqual(parseQemuVersion('QEMU emulator version 9.0\n'), { major: 9, minor: 0, micro: 0, text: '9.0.0' });
  assert.equal(parseQemuVersion('qemu-system-x86_64: unknown option\n'), undefined);
});

test('-accel help parsing', () => {
  assert.deepEqual(parseAccelHelp(ACCEL_HELP), ['tcg', 'kvm']);
  assert.deepEqual(parseAccelHelp('Accelerators supported in QEMU binary:\nkvm\n'), ['kvm']);
  assert.deepEqual(parseAccelHelp('Accelerators supported in QEMU binary:\n'), []);
});

test('probeQemu: finds both binaries on PATH and asks each for its version once', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'vireo-probe-'));
  try {
    for (const name of ['qemu-system-x86_64', 'qemu-img']) {
      await writeFile(join(dir, name), '#!/bin/sh\nexit 1\n');
      await chmod(join(dir, name), 0o755);
    }
    const calls: string[] = [];
    const run: CommandRunner = async (command, args) => {
      calls.push([command, ...args].join(' '));
      if (command.endsWith('qemu-img')) return { code: 0, stdout: QEMU_IMG_VERSION, stderr: '' };
      if (args[0] === '--version') return { code: 0, stdout: QEMU_VERSION, stderr: '' };
      return { code: 0, stdout: ACCEL_HELP, stderr: '' };
    };
    const facts = await probeQemu({ pathEnv: `/nonexistent:${dir}`, run });
    assert.equal(facts.binary, join(dir, 'qemu-system-x86_64'));
    assert.equal(facts.img, join(dir, 'qemu-img'));
    assert.equal(facts.version?.text, '7.2.22');
    assert.equal(facts.imgVersion?.text, '7.2.22');
    assert.deepEqual(facts.accelerators, ['tcg', 'kvm']);
    assert.deepEqual(facts.problems, []);
    assert.deepEqual(calls.sort(), [`${dir}/qemu-img --version`, `${dir}/qemu-system-x86_64 --version`, `${dir}/qemu-system-x86_64 -accel help`]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('qemuAccelerators: asked once, then read from the cache until the binary is replaced; a failed query is not cached', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'vireo-probe-'));
  try {
    const binary = join(dir, 'qemu-system-x86_64');
    const cacheDir = join(dir, 'cache');
    await writeFile(binary, '#!/bin/sh\nexit 1\n');
    await chmod(binary, 0o755);
    const calls: string[] = [];
    let answer = { code: 0, stdout: ACCEL_HELP, stderr: '' };
    const run: CommandRunner = async (command, args) => {
      calls.push([command, ...args].join(' '));
      return answer;
    };
    assert.deepEqual(await qemuAccelerators(binary, { cacheDir, run }), ['tcg', 'kvm']);
    assert.deepEqual(await qemuAccelerators(binary, { cacheDir, run }), ['tcg', 'kvm']);
    assert.deepEqual(calls, [`${binary} -accel help`], 'the second answer came from the cache');
    // A package upgrade writes a new file in its place (a new inode, size and change time).
    await rm(binary);
    await writeFile(binary, '#!/bin/sh\n# upgraded\nexit 1\n');
    await chmod(binary, 0o755);
    answer = { code: 0, stdout: 'Accelerators supported in QEMU binary:\ntcg\n', stderr: '' };
    assert.deepEqual(await qemuAccelerators(binary, { cacheDir, run }), ['tcg']);
    assert.equal(calls.length, 2, 'a replaced binary is asked again');
    assert.deepEqual(JSON.parse(await readFile(join(cacheDir, ACCELERATORS_CACHE), 'utf8')).accelerators, ['tcg']);
    // Without a cache directory, each call asks; a failing query gives no list and leaves the cache as it was.
    await rm(cacheDir, { recursive: true });
    answer = { code: 1, stdout: '', stderr: 'broken' };
    assert.equal(await qemuAccelerators(binary, { cacheDir, run }), undefined);
    assert.equal(await readFile(join(cacheDir, ACCELERATORS_CACHE), 'utf8').catch(() => 'absent'), 'absent');
    assert.equal(calls.length, 3);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('probeLaunchFacts: QEMU on PATH, its accelerators and KVM usability, with no version queries', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'vireo-probe-'));
  try {
    await writeFile(join(dir, 'qemu-system-x86_64'), '#!/bin/sh\nexit 1\n');
    await chmod(join(dir, 'qemu-system-x86_64'), 0o755);
    await writeFile(join(dir, 'cpuinfo'), NESTED);
    const calls: string[] = [];
    const run: CommandRunner = async (command, args) => {
      calls.push([command, ...args].join(' '));
      return { code: 0, stdout: ACCEL_HELP, stderr: '' };
    };
    const facts = await probeLaunchFacts({ pathEnv: dir, run, cpuinfoPath: join(dir, 'cpuinfo'), kvmPath: join(dir, 'no-kvm'), arch: 'x64' });
    assert.equal(facts.qemu.binary, join(dir, 'qemu-system-x86_64'));
    assert.deepEqual(facts.qemu.accelerators, ['tcg', 'kvm']);
    assert.equal(facts.kvm.usable, false);
    assert.deepEqual(calls, [`${dir}/qemu-system-x86_64 -accel help`]);
    const none = await probeLaunchFacts({ pathEnv: join(dir, 'empty'), run });
    assert.equal(none.qemu.binary, undefined);
    assert.equal(calls.length, 1, 'no QEMU, nothing run');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('probeQemu: nothing on PATH means no binaries and no commands run; a failing query is reported', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'vireo-probe-'));
  try {
    let ran = 0;
    const none = await probeQemu({ pathEnv: dir, run: async () => ((ran += 1), { code: 0, stdout: '', stderr: '' }) });
    assert.equal(none.binary, undefined);
    assert.equal(none.img, undefined);
    assert.equal(ran, 0);

    await writeFile(join(dir, 'qemu-system-x86_64'), '');
    await chmod(join(dir, 'qemu-system-x86_64'), 0o755);
    const broken = await probeQemu({ pathEnv: dir, run: async () => ({ code: 1, stdout: '', stderr: 'error while loading shared libraries\n' }) });
    assert.equal(broken.binary, join(dir, 'qemu-system-x86_64'));
    assert.equal(broken.version, undefined);
    assert.equal(broken.accelerators, undefined);
    assert.equal(broken.problems.length, 2);
    assert.match(broken.problems[0] ?? '', /shared libraries/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('findInPath skips non-executables, directories and empty PATH entries', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'vireo-path-'));
  try {
    await mkdir(join(dir, 'a', 'tool'), { recursive: true });
    await mkdir(join(dir, 'b'));
    await writeFile(join(dir, 'b', 'tool'), '');
    await chmod(join(dir, 'b', 'tool'), 0o644);
    await mkdir(join(dir, 'c'));
    await writeFile(join(dir, 'c', 'tool'), '');
    await chmod(join(dir, 'c', 'tool'), 0o755);
    assert.equal(await findInPath('tool', `::${join(dir, 'a')}:${join(dir, 'b')}:${join(dir, 'c')}`), join(dir, 'c', 'tool'));
    assert.equal(await findInPath('tool', ''), undefined);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

/* ------------------------------- /dev/kvm -------------------------------- */

const errno = (code: string) => Object.assign(new Error(`${code}: fake`), { code });

test('/dev/kvm: missing, permission denied, and usable', async () => {
  const missing = await probeKvmDevice('/dev/kvm', async () => Promise.reject(errno('ENOENT')));
  assert.equal(missing.exists, false);
  assert.equal(missing.openable, false);
  assert.match(missing.reason ?? '', /does not exist/);

  const denied = await probeKvmDevice('/dev/kvm', async () => Promise.reject(errno('EACCES')), 1000);
  assert.equal(denied.exists, true);
  assert.equal(denied.openable, false);
  assert.equal(denied.errorCode, 'EACCES');
  assert.match(denied.reason ?? '', /'kvm' group/);
  assert.match(denied.reason ?? '', /root/);
  assert.match(denied.reason ?? '', /uid 1000/);

  const opened: string[] = [];
  const ok = await probeKvmDevice('/dev/kvm', async (path) => void opened.push(path));
  assert.deepEqual(ok, { path: '/dev/kvm', exists: true, openable: true });
  assert.deepEqual(opened, ['/dev/kvm']);
});

test('/dev/kvm: the real open on a path that is not there is ENOENT', async () => {
  const facts = await probeKvmDevice(join(tmpdir(), 'vireo-no-such-kvm'));
  assert.equal(facts.errorCode, 'ENOENT');
  assert.equal(facts.exists, false);
});

test('KVM usability needs vmx/svm and an openable /dev/kvm; the device alone is a nested paravirtual one', () => {
  const open = { path: '/dev/kvm', exists: true, openable: true };
  assert.equal(assessKvm(parseCpuInfo(INTEL), open, 'x64').usable, true);
  assert.equal(assessKvm(parseCpuInfo(AMD), open, 'x64').usable, true);
  const nested = assessKvm(parseCpuInfo(NESTED), open, 'x64');
  assert.equal(nested.usable, false);
  assert.match(nested.reason, /no vmx\/svm CPU flags: \/dev\/kvm is a nested paravirtual device/);
  const denied = assessKvm(parseCpuInfo(INTEL), { path: '/dev/kvm', exists: true, openable: false, reason: "add the user to the 'kvm' group" }, 'x64');
  assert.deepEqual(denied, { usable: false, reason: "add the user to the 'kvm' group" });
});

/* ------------------------------- firmware -------------------------------- */

test('firmware: prefers bios-256k.bin and the 4M OVMF pair (Debian 12)', async () => {
  const present = new Set([
    '/usr/share/seabios/bios.bin',
    '/usr/share/seabios/bios-256k.bin',
    '/usr/share/OVMF/OVMF_CODE_4M.fd',
    '/usr/share/OVMF/OVMF_VARS_4M.fd',
    '/usr/share/OVMF/OVMF_CODE.fd',
    '/usr/share/OVMF/OVMF_VARS.fd',
    '/usr/share/qemu/OVMF.fd',
  ]);
  assert.deepEqual(await probeFirmware(async (path) => present.has(path)), {
    seabios: '/usr/share/seabios/bios-256k.bin',
    ovmf: { code: '/usr/share/OVMF/OVMF_CODE_4M.fd', vars: '/usr/share/OVMF/OVMF_VARS_4M.fd' },
  });
});

test('firmware: OVMF code and vars are only taken as a pair; a combined OVMF.fd is reported apart', async () => {
  const present = new Set(['/usr/share/qemu/bios.bin', '/usr/share/OVMF/OVMF_CODE_4M.fd', '/usr/share/OVMF/OVMF_CODE.fd', '/usr/share/OVMF/OVMF_VARS.fd']);
  assert.deepEqual(await probeFirmware(async (path) => present.has(path)), {
    seabios: '/usr/share/qemu/bios.bin',
    ovmf: { code: '/usr/share/OVMF/OVMF_CODE.fd', vars: '/usr/share/OVMF/OVMF_VARS.fd' },
  });
  assert.deepEqual(await probeFirmware(async (path) => path === '/usr/share/qemu/OVMF.fd'), { ovmfCombined: '/usr/share/qemu/OVMF.fd' });
  assert.deepEqual(await probeFirmware(async () => false), {});
});

/* ------------------------------ the report ------------------------------- */

function fakeFacts(overrides: Partial<HostFacts> = {}): HostFacts {
  const cpu = parseCpuInfo(NESTED);
  const kvmDevice = { path: '/dev/kvm', exists: true, openable: true };
  return {
    arch: 'x64',
    cpu,
    kvmDevice,
    kvm: assessKvm(cpu, kvmDevice, 'x64'),
    qemu: {
      binary: '/usr/bin/qemu-system-x86_64',
      version: { major: 7, minor: 2, micro: 22, text: '7.2.22' },
      accelerators: ['tcg', 'kvm'],
      img: '/usr/bin/qemu-img',
      imgVersion: { major: 7, minor: 2, micro: 22, text: '7.2.22' },
      problems: [],
    },
    firmware: { seabios: '/usr/share/seabios/bios-256k.bin', ovmf: { code: '/usr/share/OVMF/OVMF_CODE_4M.fd', vars: '/usr/share/OVMF/OVMF_VARS_4M.fd' } },
    tools: [
      { name: 'cpio', path: '/usr/bin/cpio', debianPackage: 'cpio' },
      { name: 'gzip', path: '/usr/bin/gzip', debianPackage: 'gzip' },
    ],
    ...overrides,
  };
}

test('report: a complete nested host can run VMs with TCG, and says so on the last line', () => {
  const report = buildHostReport(fakeFacts());
  assert.equal(report.canRunVms, true);
  assert.deepEqual(report.missing, []);
  assert.equal(report.accelerator.accel, 'tcg');
  assert.equal(report.checks.find((check) => check.id === 'kvm')?.status, 'warn');
  const text = formatHostReport(report);
  const lines = text.split('\n');
  assert.match(lines.at(-1) ?? '', /^Accelerator: tcg — KVM is not usable here \(no vmx\/svm CPU flags: \/dev\/kvm is a nested paravirtual device/);
  // Details start in one column, whatever the label length.
  const checkLines = lines.slice(0, report.checks.length);
  const columns = new Set(checkLines.map((line, index) => line.indexOf(report.checks[index]!.detail)));
  assert.equal(columns.size, 1, text);
});

test('report: missing QEMU, qemu-img, firmware and tools become failures, warnings and Debian package names', () => {
  const report = buildHostReport(
    fakeFacts({
      qemu: { problems: [] },
      firmware: { ovmfCombined: '/usr/share/qemu/OVMF.fd' },
      tools: [
        { name: 'cpio', debianPackage: 'cpio' },
        { name: 'apt-get', debianPackage: 'apt' },
        { name: 'apt-cache', debianPackage: 'apt' },
      ],
    }),
  );
  assert.equal(report.canRunVms, false);
  assert.equal(report.accelerator.accel, null);
  assert.deepEqual(report.missing, ['qemu-system-x86', 'qemu-utils', 'seabios', 'ovmf', 'cpio', 'apt']);
  assert.equal(report.checks.find((check) => check.id === 'qemu')?.status, 'fail');
  assert.equal(report.checks.find((check) => check.id === 'qemu-img')?.status, 'fail');
  assert.match(report.checks.find((check) => check.id === 'ovmf')?.detail ?? '', /combined/);
  const text = formatHostReport(report);
  assert.match(text, /✗  QEMU /);
  assert.match(text, /Missing packages: qemu-system-x86 qemu-utils seabios ovmf cpio apt/);
  assert.match(text.split('\n').at(-1) ?? '', /^Accelerator: none — QEMU .* not installed/);
});

test('report: an old QEMU is a warning', () => {
  const facts = fakeFacts();
  const report = buildHostReport({ ...facts, qemu: { ...facts.qemu, version: { major: 6, minor: 2, micro: 0, text: '6.2.0' } } });
  assert.equal(report.checks.find((check) => check.id === 'qemu')?.status, 'warn');
  assert.equal(report.canRunVms, true);
});
