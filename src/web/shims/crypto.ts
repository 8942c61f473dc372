/**
 * node:crypto for the browser bundle: the VM model module imports these for
 * defineVm (identity on create), which the UI never calls; the schemas it
 * does use need nothing from here. Backed by Web Crypto all the same.
 */
export function randomUUID(): string {
  return crypto.randomUUID();
}

export function randomBytes(size: number): { toString(encoding: 'hex'): string; [index: number]: number } {
  const bytes = crypto.getRandomValues(new Uint8Array(size));
  return Object.assign(bytes, { toString: () => [...bytes].map((byte) => byte.toString(16).padStart(2, '0')).join('') });
}
