/**
 * The OpenAPI 3.1 document, generated from the wire contract (src/api) and
 * the very zod schemas that validate requests (JSON Schema 2020-12 is
 * OpenAPI 3.1's schema dialect), so the description cannot drift from what
 * is enforced.
 */
import { z } from 'zod';
import { api, streams } from '../api/index.js';
import { splitKey, type AnyEndpoint, type Schema } from '../api/contract.js';
import type { StreamEndpoint } from '../api/events.js';

const ERROR_SCHEMA = {
  type: 'object',
  required: ['error'],
  properties: {
    error: {
      type: 'object',
      required: ['code', 'message'],
      properties: {
        code: { type: 'string', description: 'Stable error code (invalid_argument, not_found, in_use, ...)' },
        message: { type: 'string' },
        field: { type: 'string', description: 'The request field at fault, e.g. body.spec.memory' },
      },
    },
  },
};

function jsonSchema(schema: z.ZodType, io: 'input' | 'output' = 'input'): Record<string, unknown> {
  const { $schema: _dialect, ...rest } = z.toJSONSchema(schema, { io, unrepresentable: 'any' }) as Record<string, unknown>;
  return rest;
}

/** /vms/:name → /vms/{name} */
function openApiPath(path: string): string {
  return path.replace(/:([A-Za-z]+)/g, '{$1}');
}

function parameters(endpoint: { params?: Schema; query?: Schema }): unknown[] {
  const result: unknown[] = [];
  for (const [location, schema] of [['path', endpoint.params], ['query', endpoint.query]] as const) {
    if (!schema) continue;
    const object = jsonSchema(schema) as { properties?: Record<string, unknown>; required?: string[] };
    for (const [name, property] of Object.entries(object.properties ?? {})) {
      result.push({ name, in: location, required: location === 'path' || (object.required ?? []).includes(name), schema: property });
    }
  }
  return result;
}

function operationId(method: string, path: string): string {
  return `${method.toLowerCase()}${path.replace(/[{}]/g, '').replace(/\/(\w)/g, (_, letter: string) => letter.toUpperCase()).replace(/\W/g, '')}`;
}

/** What an endpoint answers on success, from its response schema (built here, on the first request for this document). */
function success(endpoint: AnyEndpoint): Record<string, unknown> {
  const { response } = endpoint;
  if (response.redirect) return { description: response.name, headers: { Location: { description: 'Where to go next', schema: { type: 'string' } } } };
  const schema = response.schema();
  if (!response.text) return { description: response.name, content: { 'application/json': { schema: jsonSchema(schema, 'output') } } };
  // Text, and on some queries JSON: the schema is a union of a string and the JSON answers.
  const json = schema instanceof z.ZodUnion ? (schema.options as z.ZodType[]).filter((option) => !(option instanceof z.ZodString)) : [];
  return {
    description: response.name,
    content: {
      'text/plain': { schema: { type: 'string' } },
      ...(json.length > 0 ? { 'application/json': { schema: jsonSchema(json.length === 1 ? json[0]! : z.union(json), 'output') } } : {}),
    },
  };
}

function streamOperation(method: string, path: string, endpoint: StreamEndpoint): Record<string, unknown> {
  const content = endpoint.kind === 'events' ? { 'text/event-stream': { schema: { type: 'string' } } } : endpoint.kind === 'text' ? { 'text/plain': { schema: { type: 'string' } } } : undefined;
  return {
    summary: endpoint.summary,
    tags: [endpoint.tag],
    operationId: operationId(method, path),
    parameters: parameters(endpoint),
    responses: { [endpoint.kind === 'websocket' ? '101' : '200']: { description: endpoint.description, ...(content ? { content } : {}) } },
  };
}

let built: { version: string; document: Record<string, unknown> } | undefined;

/** The document, made on the first request for it (it builds every answer's schema) and kept. */
export function buildOpenApi(version: string): Record<string, unknown> {
  if (built?.version !== version) built = { version, document: makeOpenApi(version) };
  return built.document;
}

function makeOpenApi(version: string): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const [key, endpoint] of Object.entries(api) as [string, AnyEndpoint][]) {
    const { method, path: template } = splitKey(key);
    const path = openApiPath(template);
    const operation: Record<string, unknown> = {
      summary: endpoint.summary,
      tags: [endpoint.tag],
      operationId: operationId(method, path),
      parameters: parameters(endpoint),
      responses: {
        [String(endpoint.status)]: success(endpoint),
        '4XX': { description: 'The request is wrong; the body names the field', content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } },
      },
    };
    if (endpoint.upload) operation['requestBody'] = { required: true, content: { 'application/octet-stream': { schema: { type: 'string', format: 'binary', maxLength: endpoint.upload.maxBytes } } } };
    if (endpoint.body) operation['requestBody'] = { required: true, content: { 'application/json': { schema: jsonSchema(endpoint.body) } } };
    (paths[path] ??= {})[method.toLowerCase()] = operation;
  }
  for (const [key, endpoint] of Object.entries(streams) as [string, StreamEndpoint][]) {
    const { method, path: template } = splitKey(key);
    const path = openApiPath(template);
    (paths[path] ??= {})[method.toLowerCase()] = streamOperation(method, path, endpoint);
  }
  paths['/openapi.json'] = { get: { summary: 'This document', tags: ['daemon'], responses: { '200': { description: 'OpenAPI 3.1', content: { 'application/json': { schema: {} } } } } } };
  return {
    openapi: '3.1.0',
    info: { title: 'Vireo daemon API', version },
    paths,
    components: {
      schemas: { Error: ERROR_SCHEMA },
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'Required on TCP; the Unix socket is guarded by its file permissions' } },
    },
  };
}
