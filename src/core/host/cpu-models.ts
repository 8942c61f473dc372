/**
 * The CPU models this host's QEMU knows, asked once per process
 * (`qemu-system-x86_64 -cpu help`) and kept: a spec naming a model QEMU
 * does not have is refused when it is created or edited, with the field
 * named, rather than failing at every start with QEMU's own message.
 */
import { invalidArgument } from '../errors.js';
import { run } from '../process/run.js';
import { getHostFacts } from './check.js';

/** Always accepted: 'host' needs KVM, which the start checks with its own message; 'max' is everything TCG can do. */
const ALWAYS = new Set(['host', 'max']);

let cached: Promise<Set<string>> | undefined;

/** Names QEMU prints for `-cpu help` ("x86 Skylake-Server  (alias ...)"); empty when QEMU is missing or says nothing. */
export function parseCpuHelp(output: string): Set<string> {
  const names = new Set<string>();
  for (const line of output.split('\n')) {
    const words = line.trim().split(/\s+/);
    if (words[0] !== 'x86' || !words[1]) continue;
    names.add(words[1]);
  }
  return names;
}

export function qemuCpuModels(): Promise<Set<string>> {
  cached ??= (async () => {
    const binary = (await getHostFacts()).qemu.binary;
    if (!binary) return new Set<string>();
    const output = await run(binary, ['-cpu', 'help'], { timeoutMs: 20_000 }).then((result) => result.stdout, () => '');
    return parseCpuHelp(output);
  })();
  return cached;
}

/**
 * Refuses a CPU model this host's QEMU does not have (nothing to check
 * against when QEMU is absent). `listModels` is QEMU's listing; tests hand
 * in a recorded one so that unit tests start no QEMU.
 */
export async function checkCpuModel(model: string | undefined, field = 'cpus.model', listModels: () => Promise<Set<string>> = qemuCpuModels): Promise<void> {
  if (model === undefined || ALWAYS.has(model)) return;
  const models = await listModels();
  if (models.size === 0 || models.has(model)) return;
  throw invalidArgument(field, `QEMU has no CPU model '${model}' (see: qemu-system-x86_64 -cpu help; host and max always work)`);
}
