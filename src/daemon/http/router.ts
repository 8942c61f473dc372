/**
 * Which route a request is for: find-my-way (the radix-tree router fastify
 * is built on) over our own route table. A URL that does not decode, or a
 * path parameter past the length limit, is refused here in the caller's
 * terms (400/414, field `path`), so that no route sees it.
 */
import Router from 'find-my-way';
import { HttpRefusal } from './errors.js';

/** Long names must reach the routes' validators (a 400 naming the field), not stop at the router. */
export const MAX_PARAM_LENGTH = 2048;

export interface Match<T> {
  route: T;
  /** Path parameters, %-decoded. */
  params: Record<string, string>;
  /** The query string, parsed (a key given twice is an array of its values). */
  query: Record<string, unknown>;
}

type Method = Router.HTTPMethod;

export class RouteTable<T> {
  private readonly router = Router({
    maxParamLength: MAX_PARAM_LENGTH,
    // These two answer find() with a handle of their own (its store null); match() calls it to throw.
    onBadUrl: () => {
      throw new HttpRefusal('BAD_URL');
    },
    onMaxParamLength: () => {
      throw new HttpRefusal('MAX_PARAM_LENGTH');
    },
  });

  /** path in the router's style: /vms/:name, /ui/assets/* */
  add(method: string, path: string, route: T): void {
    this.router.on(method as Method, path, () => undefined, { route });
  }

  /**
   * The route for a request, undefined when there is none (a 404). HEAD is
   * answered by the GET route (Node sends no body for HEAD). Throws
   * HttpRefusal for a URL the router cannot read.
   */
  match(method: string, url: string): Match<T> | undefined {
    const lookup = method === 'HEAD' ? 'GET' : method;
    const found = this.router.find(lookup as Method, url);
    if (!found) return undefined;
    const store = found.store as { route: T } | null;
    if (!store) {
      (found.handler as () => never)();
    }
    return { route: store!.route, params: found.params as Record<string, string>, query: (found.searchParams ?? {}) as Record<string, unknown> };
  }
}
