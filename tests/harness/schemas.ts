/**
 * Test harness: checks an API answer against its endpoint's response schema
 * (the one /openapi.json shows); a failure names the paths in the answer
 * that do not match.
 */
import assert from 'node:assert/strict';
import { api, type ApiKey } from '../../src/api/index.js';
import type { AnyEndpoint } from '../../src/api/contract.js';

export function assertMatchesSchema(key: ApiKey, answer: unknown): void {
  const result = (api[key] as AnyEndpoint).response.schema().safeParse(answer);
  if (!result.success) {
    const issues = result.error.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`).join('; ');
    assert.fail(`${key}: the answer does not match its schema (${issues}): ${JSON.stringify(answer).slice(0, 2000)}`);
  }
}
