/**
 * `vireo host setup` with every system touchpoint faked (commands, uid,
 * files, PATH), so it can be tested without installing or removing anything
 * on the machine running the tests.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isVireoError } from '../errors.js';
import type { CommandResult, CommandRunner, RunOptions } from './probe.js';
import { GUEST_PACKAGES, HOST_PACKAGES, setupHost, type SetupOptions } from './setup.js';

interface Call {
  command: string;
  args: readonly string[];
  options: RunOptions | undefined;
}

/** A Debian host where `installed` are installed; apt-get install installs what it is asked for. */
function fakeDebian(installed: string[], behaviour: { installFails?: boolean; updateFails?: boolean; installDoesNothing?: boolean; kvmGroup?: boolean } = {}) {
  const have = new Set(installed);
  const calls: Call[] = [];
  // Accounts: the vireo-qemu user is made unless it exists already.
  const passwd = new Set<string>();
  const groups = new Set<string>(behaviour.kvmGroup ? ['kvm'] : []);
  const members: string[] = [];
  let sysctl = 0;
  let subuid = '';
  const read = async (path: string) => (path === '/etc/subuid' ? subuid : path === '/etc/passwd' ? 'root:x:0:0::/root:/bin/sh\nfar:x:170000:170000::/:/bin/sh\n' : '');
  const run: CommandRunner = async (command, args, options) => {
    calls.push({ command, args, options });
    const ok = (stdout = ''): CommandResult => ({ code: 0, stdout, stderr: '' });
    if (command === 'getent') return (args[0] === 'passwd' ? passwd : groups).has(args[1]!) ? ok(`${args[1]}:x:995:995::/nonexistent:/usr/sbin/nologin`) : { code: 2, stdout: '', stderr: '' };
    if (command === 'groupadd') return groups.add(args.at(-1)!), ok();
    if (command === 'useradd') return passwd.add(args.at(-1)!), ok();
    if (command === 'usermod' && args[0] === '--add-subuids') {
      const [first, last] = args[1]!.split('-').map(Number);
      return (subuid += `${args[2]}:${first}:${last! - first! + 1}\n`), ok();
    }
    if (command === 'usermod') return members.push(`${args.at(-2)}:${args.at(-1)}`), ok();
    if (command === 'sysctl') return args[0] === '-n' ? ok(`${sysctl}\n`) : ((sysctl = 1), ok());
    if (command === 'dpkg-query') {
      const pkg = args.at(-1) ?? '';
      if (have.has(pkg)) return ok('install ok installed');
      if (pkg === 'ovmf' && have.has('ovmf:removed')) return ok('deinstall ok config-files');
      return { code: 1, stdout: '', stderr: `dpkg-query: no packages found matching ${pkg}\n` };
    }
    if (command === 'apt-get' && args.includes('update')) {
      options?.onLine?.('Hit:1 http://deb.debian.org/debian bookworm InRelease');
      return behaviour.updateFails ? { code: 100, stdout: '', stderr: 'E: Failed to fetch http://mirror/x 503\n' } : ok();
    }
    if (command === 'apt-get' && args.includes('install')) {
      options?.onLine?.('Setting up qemu-utils ...');
      if (behaviour.installFails) return { code: 100, stdout: '', stderr: 'E: Unable to locate package ovmf\n' };
      if (!behaviour.installDoesNothing) for (const pkg of args.slice(args.indexOf('--no-install-recommends') + 1)) have.add(pkg);
      return ok();
    }
    throw new Error(`unexpected command ${command} ${args.join(' ')}`);
  };
  return { run, calls, passwd, groups, members, read, subuid: () => subuid };
}

function options(run: CommandRunner, overrides: Partial<SetupOptions> = {}): SetupOptions & { lines: string[] } {
  const lines: string[] = [];
  return {
    run,
    onOutput: (line) => lines.push(line),
    getuid: () => 0,
    exists: async (path) => path === '/etc/debian_version',
    which: async (name) => `/usr/bin/${name}`,
    readGroups: async () => 'root:x:0:\n',
    readAccountFile: async () => '',
    hasAptLists: async () => true,
    writeSysctlFile: async () => undefined,
    lines,
    ...overrides,
  };
}

/** What networks, TPMs and a cluster's local etcd need (installed in most cases below, so they show what else is missing). */
const NETWORK_PACKAGES = ['iproute2', 'dnsmasq-base', 'nftables', 'swtpm', 'swtpm-tools', 'etcd-server'];

test('computes the missing packages with dpkg-query and installs exactly those, after one apt-get update', async () => {
  const debian = fakeDebian(['qemu-system-x86', 'seabios', 'gzip', 'openssl', ...NETWORK_PACKAGES, ...GUEST_PACKAGES]);
  const opts = options(debian.run);
  const result = await setupHost(opts);
  assert.deepEqual(result.installed, ['qemu-utils', 'ovmf', 'cpio']);
  assert.deepEqual(result.alreadyPresent, ['qemu-system-x86', 'seabios', 'gzip', 'openssl', ...NETWORK_PACKAGES, ...GUEST_PACKAGES]);
  assert.equal(result.updatedPackageLists, true);

  const queries = debian.calls.filter((call) => call.command === 'dpkg-query').slice(0, HOST_PACKAGES.length);
  assert.deepEqual(queries.map((call) => call.args), HOST_PACKAGES.map((pkg) => ['-W', '-f=${Status}', pkg]));

  const apt = debian.calls.filter((call) => call.command === 'apt-get');
  assert.deepEqual(apt.map((call) => call.args), [
    ['-o', 'DPkg::Lock::Timeout=300', 'update'],
    ['-o', 'DPkg::Lock::Timeout=300', 'install', '-y', '--no-install-recommends', 'qemu-utils', 'ovmf', 'cpio'],
  ]);
  for (const call of apt) assert.equal(call.options?.env?.DEBIAN_FRONTEND, 'noninteractive');
  // apt's own output is streamed through.
  assert.ok(opts.lines.includes('Setting up qemu-utils ...'));
  assert.ok(opts.lines.includes('Hit:1 http://deb.debian.org/debian bookworm InRelease'));
  // The install is verified afterwards.
  assert.equal(debian.calls.filter((call) => call.command === 'dpkg-query').length, HOST_PACKAGES.length + 3);
});

test('a package left as config-files counts as missing', async () => {
  const debian = fakeDebian(['qemu-system-x86', 'qemu-utils', 'seabios', 'cpio', 'gzip', 'openssl', ...NETWORK_PACKAGES, ...GUEST_PACKAGES, 'ovmf:removed']);
  const result = await setupHost(options(debian.run));
  assert.deepEqual(result.installed, ['ovmf']);
});

test('nothing missing: no apt-get at all, and no root needed', async () => {
  const debian = fakeDebian([...HOST_PACKAGES]);
  const result = await setupHost(options(debian.run, { getuid: () => 1000 }));
  assert.deepEqual(result, { installed: [], alreadyPresent: [...HOST_PACKAGES], updatedPackageLists: false, notes: [] });
  assert.equal(debian.calls.some((call) => call.command === 'apt-get'), false);
});

test('nothing missing but apt has no package lists: root runs apt-get update (the image build needs them)', async () => {
  const debian = fakeDebian([...HOST_PACKAGES]);
  const result = await setupHost(options(debian.run, { hasAptLists: async () => false }));
  assert.equal(result.updatedPackageLists, true);
  assert.deepEqual(debian.calls.filter((call) => call.command === 'apt-get').map((call) => call.args.at(-1)), ['update']);
});

test('not root with packages missing: refused, with the sudo hint, before any apt-get', async () => {
  const debian = fakeDebian(['gzip']);
  await assert.rejects(setupHost(options(debian.run, { getuid: () => 1000 })), (error: unknown) => {
    assert.ok(isVireoError(error, 'host_unsupported'));
    assert.equal(error.message, 'vireo host setup must run as root (try: sudo vireo host setup)');
    return true;
  });
  assert.equal(debian.calls.some((call) => call.command === 'apt-get'), false);
});

test('not Debian or Ubuntu: a clear error naming what to install by hand', async () => {
  const debian = fakeDebian([]);
  for (const overrides of [{ exists: async () => false }, { which: async (name: string) => (name === 'apt-get' ? undefined : `/usr/bin/${name}`) }]) {
    await assert.rejects(setupHost(options(debian.run, overrides)), (error: unknown) => {
      assert.ok(isVireoError(error, 'host_unsupported'));
      assert.match(error.message, /only on Debian and Ubuntu/);
      for (const thing of ['qemu-system-x86_64', 'qemu-img', 'OVMF', 'SeaBIOS', 'cpio', 'gzip']) assert.ok(error.message.includes(thing), thing);
      return true;
    });
  }
  assert.equal(debian.calls.length, 0);
});

test('apt-get install failing is a command_failed error carrying apt\'s message', async () => {
  const debian = fakeDebian([], { installFails: true });
  await assert.rejects(setupHost(options(debian.run)), (error: unknown) => {
    assert.ok(isVireoError(error, 'command_failed'));
    assert.match(error.message, /Unable to locate package ovmf/);
    return true;
  });
});

test('apt-get update failing is a note, and the install is still tried', async () => {
  const debian = fakeDebian(['qemu-system-x86', 'qemu-utils', 'ovmf', 'seabios', 'gzip', 'openssl', ...NETWORK_PACKAGES, ...GUEST_PACKAGES], { updateFails: true });
  const result = await setupHost(options(debian.run));
  assert.deepEqual(result.installed, ['cpio']);
  assert.match(result.notes[0] ?? '', /apt-get update failed \(exit 100: E: Failed to fetch/);
});

test('a package still missing after a successful install is reported', async () => {
  const debian = fakeDebian(['qemu-system-x86', 'qemu-utils', 'ovmf', 'seabios', 'gzip', 'openssl', ...NETWORK_PACKAGES, ...GUEST_PACKAGES], { installDoesNothing: true });
  await assert.rejects(setupHost(options(debian.run)), (error: unknown) => isVireoError(error, 'command_failed') && /cpio is still not installed/.test(error.message));
});

test('/dev/kvm and a kvm group: explains how to grant a user access, changes no person (only its own QEMU user)', async () => {
  const debian = fakeDebian([...HOST_PACKAGES]);
  const opts = options(debian.run, { exists: async () => true, readGroups: async () => 'root:x:0:\nkvm:x:993:\n', ensureQemuUser: async () => undefined });
  const result = await setupHost(opts);
  const kvm = result.notes.filter((line) => /kvm/.test(line));
  assert.equal(kvm.length, 1);
  assert.match(kvm[0] ?? '', /usermod -aG kvm USER/);
  assert.deepEqual(opts.lines, result.notes);
  assert.ok(debian.calls.every((call) => ['dpkg-query', 'sysctl'].includes(call.command)), 'no account was changed');
});

test('as root it makes the vireo-qemu system user QEMU runs as, in the kvm group, once', async () => {
  const debian = fakeDebian([...HOST_PACKAGES], { kvmGroup: true });
  const first = await setupHost(options(debian.run, { readAccountFile: debian.read }));
  assert.ok(debian.passwd.has('vireo-qemu') && debian.groups.has('vireo-qemu'));
  // One uid per running VM's QEMU: a range of its own, past every uid in use (170000 here) and 65,536-aligned.
  assert.equal(debian.subuid(), 'vireo-qemu:196608:65536\n');
  assert.ok(first.notes.some((line) => /registered uids 196608-262143 for vireo-qemu/.test(line)));
  assert.deepEqual(debian.members, ['kvm:vireo-qemu']);
  const useradd = debian.calls.find((call) => call.command === 'useradd')!;
  assert.ok(useradd.args.includes('--system') && useradd.args.includes('/usr/sbin/nologin') && useradd.args.includes('--no-create-home'));
  assert.ok(first.notes.some((line) => /created the system user vireo-qemu/.test(line)));
  assert.ok(first.notes.some((line) => /vm\.unprivileged_userfaultfd=1/.test(line)));
  const again = await setupHost(options(debian.run, { readAccountFile: debian.read }));
  assert.equal(debian.calls.filter((call) => call.command === 'useradd').length, 1);
  assert.equal(debian.calls.filter((call) => call.command === 'usermod' && call.args[0] === '--add-subuids').length, 1);
  assert.ok(!again.notes.some((line) => /created the system user/.test(line)));
});
