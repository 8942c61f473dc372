/**
 * The main job, as a user would type it: check the host, build the tiny
 * image, create a VM, start it, run `uname -a` inside it over the serial
 * console, stop it cleanly and clean up. Each command is printed first.
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const vm = process.env.VIREO_DEMO_VM ?? 'demo';

function vireo(args: string[], options: { allowFailure?: boolean; quiet?: boolean } = {}): number {
  if (!options.quiet) process.stdout.write(`\n$ vireo ${args.map((arg) => (/\s/.test(arg) ? `'${arg}'` : arg)).join(' ')}\n`);
  const result = spawnSync(process.execPath, [cli, ...args], { stdio: options.quiet ? 'ignore' : 'inherit' });
  const status = result.status ?? 1;
  if (status !== 0 && !options.allowFailure) {
    process.stderr.write(`quickstart: 'vireo ${args.join(' ')}' failed with exit code ${status}\n`);
    process.exit(status);
  }
  return status;
}

// A demo VM left over from an earlier run is removed first.
vireo(['vm', 'kill', vm], { allowFailure: true, quiet: true });
vireo(['vm', 'delete', vm, '--with-disks'], { allowFailure: true, quiet: true });

vireo(['host', 'check']);
vireo(['image', 'build', 'tiny']);
vireo(['vm', 'create', vm, '--image', 'tiny', '--cpus', '1', '--memory', '256M', '--disk', '1G']);
vireo(['vm', 'start', vm, '--wait', '120']);
vireo(['vm', 'list']);
vireo(['vm', 'console', vm, '--run', 'uname -a']);
vireo(['vm', 'console', vm, '--run', 'echo hello from the guest > /mnt/disk/hello && cat /mnt/disk/hello && df -h /mnt/disk']);
vireo(['vm', 'stop', vm]);
vireo(['vm', 'delete', vm, '--with-disks']);
process.stdout.write('\nquickstart: done. A VM booted, answered over its console and powered off cleanly.\n');
