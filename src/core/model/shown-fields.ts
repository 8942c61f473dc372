/**
 * What `vm show --json` prints beside the spec, and how such a file is taken
 * back by `vm edit -f`. Kept apart from the zod schema so the CLI can use it
 * without loading the schema library.
 */
import { invalidArgument } from '../errors.js';
import type { VmDefinition } from './vm.js';

/**
 * Fields that `vm show --json` prints beside the spec: identity Vireo gave
 * the VM, where it came from, and its state. They are accepted back (so a
 * shown VM can be edited as a file and fed to `vm edit -f`, like virsh
 * edit) as long as they are unchanged; a change is refused naming the field.
 * `runtime` is state, not definition, and is always ignored.
 */
const FIXED_FIELDS = ['uuid', 'createdAt', 'clonedFrom', 'template'] as const;

export function withoutShownFields(input: unknown, current: VmDefinition): unknown {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) return input;
  const { runtime: _runtime, ...rest } = input as Record<string, unknown>;
  for (const field of FIXED_FIELDS) {
    if (!(field in rest)) continue;
    const value = rest[field];
    const now = current[field];
    // template: false and clonedFrom/template absent say the same thing.
    const same = value === now || (field === 'template' && value === false && now === undefined);
    if (!same) {
      const hint = field === 'template' ? 'make a template with: vireo vm template NAME' : 'Vireo gave it and keeps it';
      throw invalidArgument(field, `cannot be changed (it is ${now === undefined ? 'unset' : JSON.stringify(now)}; ${hint})`);
    }
    delete rest[field];
  }
  return rest;
}

