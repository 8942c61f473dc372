/**
 * The OpenAPI 3.1 document, generated from the route table and the very
 * zod schemas that validate requests (JSON Schema 2020-12 is OpenAPI 3.1's
 * schema dialect), so the description cannot drift from what is enforced.
 */
import { z } from 'zod';
import type { Route } from './routes.js';

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

function jsonSchema(schema: z.ZodType): Record<string, unknown> {
  const { $schema: _dialect, ...rest } = z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
  return rest;
}

/** /vms/:name → /vms/{name} */
function openApiPath(path: string): string {
  return path.replace(/:([A-Za-z]+)/g, '{$1}');
}

function parameters(route: Route): unknown[] {
  const result: unknown[] = [];
  for (const [location, schema] of [['path', route.params], ['query', route.query]] as const) {
    if (!schema) continue;
    const object = jsonSchema(schema) as { properties?: Record<string, unknown>; required?: string[] };
    for (const [name, property] of Object.entries(object.properties ?? {})) {
      result.push({ name, in: location, required: location === 'path' || (object.required ?? []).includes(name), schema: property });
    }
  }
  return result;
}

export function buildOpenApi(routes: Route[], version: string): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const route of routes) {
    const path = openApiPath(route.path);
    const operation: Record<string, unknown> = {
      summary: route.summary,
      tags: [route.tag],
      operationId: `${route.method.toLowerCase()}${path.replace(/[{}]/g, '').replace(/\/(\w)/g, (_, letter: string) => letter.toUpperCase()).replace(/\W/g, '')}`,
      parameters: parameters(route),
      responses: {
        [String(route.status)]: {
          description: route.returns,
          content: route.returns === 'text' ? { 'text/plain': { schema: { type: 'string' } } } : { 'application/json': { schema: {} } },
        },
        '4XX': { description: 'The request is wrong; the body names the field', content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } },
      },
    };
    if (route.body) operation['requestBody'] = { required: true, content: { 'application/json': { schema: jsonSchema(route.body) } } };
    (paths[path] ??= {})[route.method.toLowerCase()] = operation;
  }
  paths['/events'] = { get: { summary: 'Server-sent events: VM states, QMP events, operation progress (resume with Last-Event-ID or ?after=)', tags: ['events'], parameters: [
    { name: 'vm', in: 'query', required: false, schema: { type: 'string' } },
    { name: 'after', in: 'query', required: false, schema: { type: 'integer', minimum: 0 } },
  ], responses: { '200': { description: 'An event stream', content: { 'text/event-stream': { schema: { type: 'string' } } } } } } };
  paths['/metrics'] = { get: { summary: 'Prometheus metrics', tags: ['metrics'], responses: { '200': { description: 'Prometheus text format 0.0.4', content: { 'text/plain': { schema: { type: 'string' } } } } } } };
  paths['/vms/{name}/console'] = { get: { summary: 'The serial console as a WebSocket (binary frames both ways)', tags: ['vms'], parameters: [{ name: 'name', in: 'path', required: true, schema: { type: 'string' } }], responses: { '101': { description: 'Switching to the WebSocket protocol' } } } };
  paths['/vms/{name}/vnc'] = { get: { summary: 'The graphical console as a WebSocket: the VNC server\'s RFB stream in binary frames both ways (authenticate with a password from POST /vms/{name}/vnc/password)', tags: ['vms'], parameters: [{ name: 'name', in: 'path', required: true, schema: { type: 'string' } }], responses: { '101': { description: 'Switching to the WebSocket protocol' } } } };
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
