/**
 * The API client as tests use it: besides call() (typed by the contract),
 * request() sends anything, including what no schema allows, and types the
 * answer as the test expects. Only tests and benches pick an answer's type;
 * the product's client (src/client) takes it from the contract.
 */
import { ApiClient } from '../client/api-client.js';
import type { RequestOptions } from '../client/api-core.js';

export class TestApiClient extends ApiClient {
  override async request<T = unknown>(method: string, path: string, body?: unknown, options?: RequestOptions): Promise<T> {
    return (await super.request(method, path, body, options)) as T;
  }
}
