/**
 * Helpers shared by the unit tests under src/ (the integration tests' are in
 * tests/harness/). Not named *.test.ts or test-*.ts: Node's runner would take
 * the compiled file for a test file.
 */
import assert from 'node:assert/strict';
import { VireoError, isVireoError, type ErrorCode } from '../core/errors.js';

/** For assert.rejects/throws: a VireoError with this code and, when given, this field. */
export function rejectsWith(code: ErrorCode, field?: string): (error: unknown) => true {
  return (error: unknown) => {
    assert.ok(error instanceof VireoError, `expected a VireoError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    if (field !== undefined) assert.equal(error.details.field, field, error.message);
    return true;
  };
}

/** Awaits a promise that must reject with a VireoError of this code; returns the error for further checks. */
export async function rejectionOf(promise: Promise<unknown>, code: ErrorCode): Promise<VireoError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(isVireoError(error), `expected a VireoError, got ${String(error)}`);
    assert.equal(error.code, code, `expected code ${code}, got ${error.code}: ${error.message}`);
    return error;
  }
  assert.fail(`expected a rejection with code ${code}, but the promise resolved`);
}
