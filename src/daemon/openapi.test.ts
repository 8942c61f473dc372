import assert from 'node:assert/strict';
import { test } from 'node:test';
import { api } from '../api/index.js';
import { splitKey, type AnyEndpoint } from '../api/contract.js';
import { buildOpenApi } from './openapi.js';

interface Doc {
  paths: Record<string, Record<string, { responses: Record<string, { headers?: Record<string, unknown>; content?: Record<string, { schema: Record<string, unknown> }> }> }>>;
}

test('every route of the contract has a response schema in /openapi.json, and no JSON answer is left as "anything"', () => {
  const doc = JSON.parse(JSON.stringify(buildOpenApi('test'))) as Doc;
  const endpoints = Object.entries(api) as [string, AnyEndpoint][];
  assert.ok(endpoints.length > 80, `the contract has ${endpoints.length} endpoints`);
  for (const [key, endpoint] of endpoints) {
    const { method, path } = splitKey(key);
    const answer = doc.paths[path.replace(/:([A-Za-z]+)/g, '{$1}')]?.[method.toLowerCase()]?.responses[String(endpoint.status)];
    assert.ok(answer, `${key} is in the document with its ${endpoint.status} answer`);
    if (endpoint.response.redirect) {
      assert.ok(answer.headers?.['Location'], `${key} says where it redirects`);
      continue;
    }
    const content = answer.content ?? {};
    assert.ok(Object.keys(content).length > 0, `${key} describes its body`);
    for (const [type, { schema }] of Object.entries(content)) {
      // {} would say "any JSON": each answer's schema names a type and, for objects, their fields.
      assert.ok(typeof schema['type'] === 'string' || Array.isArray(schema['anyOf']) || Array.isArray(schema['oneOf']), `${key} (${type}) has a typed schema: ${JSON.stringify(schema).slice(0, 200)}`);
      if (schema['type'] === 'object') assert.ok(schema['properties'] || schema['additionalProperties'], `${key} (${type}) names its fields`);
    }
  }
});

test('an operation\'s answer describes the result its work returns', () => {
  const doc = buildOpenApi('test') as unknown as Doc;
  const started = doc.paths['/vms/{name}/start']!['post']!.responses['202']!.content!['application/json']!.schema as { properties: Record<string, { properties?: Record<string, unknown> }> };
  assert.deepEqual(Object.keys(started.properties['result']!.properties ?? {}).sort(), ['accel', 'notice', 'pid', 'ready']);
});
