/**
 * Helpers shared by the unit tests under src/ (the integration tests' are in
 * tests/harness/). Not named *.test.ts or test-*.ts: Node's runner would take
 * the compiled file for a test file.
 */
import assert from 'node:assert/strict';
import { VireoError, type ErrorCode } from '../core/errors.js';

/** For assert.rejects/throws: a VireoError with this code and, when given, this field. */
export function rejectsWith(code: ErrorCode, field?: string): (error: unknown) => true {
  return (error: unknown) => {
    assert.ok(error instanceof VireoError, `expected a VireoError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    if (field !== undefined) assert.equal(error.details.field, field, error.message);
    return true;
  };
}
