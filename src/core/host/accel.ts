/**
 * Which accelerator a VM runs with. The rule lives here only, so the CLI,
 * `vireo host check` and VM start always agree: KVM when the CPU has vmx/svm
 * and /dev/kvm opens (and QEMU was built with KVM), else TCG, said out loud
 * because TCG is an order of magnitude slower. An explicit request for KVM
 * on a host that cannot do it is an error, never a silent fallback.
 */
import { VireoError } from '../errors.js';
import type { KvmFacts, QemuFacts } from './probe.js';

export type AcceleratorRequest = 'auto' | 'kvm' | 'tcg';
export type Accelerator = 'kvm' | 'tcg';

export interface AcceleratorChoice {
  accel: Accelerator;
  /** Why this one, in one line. */
  reason: string;
  /** A one-line notice for the user when the choice costs them something (TCG instead of KVM). */
  notice?: string;
}

/** The facts the choice depends on; a HostFacts fits, and tests can pass just these. */
export interface AcceleratorFacts {
  kvm: KvmFacts;
  qemu: Pick<QemuFacts, 'binary' | 'accelerators'>;
}

/** When `-accel help` could not be read the build is assumed to have it; QEMU itself will then say otherwise. */
function qemuHas(facts: AcceleratorFacts, accel: Accelerator): boolean {
  return facts.qemu.accelerators === undefined || facts.qemu.accelerators.includes(accel);
}

/** Why KVM cannot be used, or undefined when it can. */
export function kvmProblem(facts: AcceleratorFacts): string | undefined {
  if (!facts.kvm.usable) return facts.kvm.reason;
  if (!qemuHas(facts, 'kvm')) return 'this QEMU build has no KVM support';
  return undefined;
}

export function chooseAccelerator(requested: AcceleratorRequest, facts: AcceleratorFacts): AcceleratorChoice {
  if (!facts.qemu.binary) {
    throw new VireoError('host_unsupported', 'QEMU (qemu-system-x86_64) is not installed (run: vireo host setup)');
  }
  const problem = kvmProblem(facts);
  const tcg = qemuHas(facts, 'tcg');

  if (requested === 'kvm') {
    if (problem) {
      throw new VireoError('host_unsupported', `accelerator: KVM was requested but is not usable here: ${problem}`, { field: 'accelerator', reason: problem });
    }
    return { accel: 'kvm', reason: `KVM was requested; ${facts.kvm.reason}` };
  }

  if (requested === 'tcg') {
    // Builds such as RHEL's qemu-kvm ship without TCG.
    if (!tcg) throw new VireoError('host_unsupported', 'accelerator: TCG was requested but this QEMU build has no TCG', { field: 'accelerator' });
    return { accel: 'tcg', reason: 'TCG was requested' };
  }

  if (!problem) return { accel: 'kvm', reason: facts.kvm.reason };
  if (!tcg) {
    throw new VireoError('host_unsupported', `no accelerator is available: KVM is not usable (${problem}) and this QEMU build has no TCG`, {
      field: 'accelerator',
      reason: problem,
    });
  }
  return {
    accel: 'tcg',
    reason: `KVM is not usable: ${problem}`,
    notice: `KVM is not usable here (${problem}); using TCG software emulation, which is much slower`,
  };
}

/**
 * TCG threading for a VM with `cpus` vCPUs. Multi-threaded TCG gives each
 * vCPU its own host thread, which is what makes an SMP guest use more than
 * one host core; for an x86_64 guest on an x86_64 host QEMU supports it fully
 * (both are TSO, so no extra memory barriers are emitted). With one vCPU the
 * two modes run the same single vCPU thread and QEMU already skips the
 * parallel (atomic) code paths, so there is nothing to gain from 'multi';
 * 'single' is used there so the command line says what actually happens and
 * matches the golden argv files.
 */
export function tcgThreadMode(cpus: number): 'multi' | 'single' {
  return cpus > 1 ? 'multi' : 'single';
}
