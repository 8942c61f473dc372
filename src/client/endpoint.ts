/**
 * Where a daemon is and how to trust it, for any client of the API (the CLI,
 * and a daemon talking to another during a migration): parsing remote URLs
 * (https://host:port or unix:///path), SHA-256 certificate fingerprints, and
 * an https agent that pins a self-signed certificate's fingerprint.
 */
import type { Duplex } from 'node:stream';
import { Agent, type AgentOptions, type RequestOptions } from 'node:https';
import { isAbsolute } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { VireoError, invalidArgument } from '../core/errors.js';
import { MAX_SOCKET_PATH } from '../core/paths.js';

export interface RemoteConfig {
  /** https://host[:port] or unix:///path/to/socket, normalized. */
  url: string;
  /** Bearer token for an https remote. */
  token?: string;
  /** Pinned SHA-256 fingerprint of the server's certificate, "AB:CD:..." (64 hex digits). */
  fingerprint256?: string;
  /** PEM text of the CA certificate(s) given with --ca, copied so the remote keeps working if the file moves. */
  ca?: string;
}

export type RemoteEndpoint =
  | { kind: 'unix'; socketPath: string }
  | { kind: 'https'; host: string; port: number };

// ---- validation ----

/**
 * Checks a remote URL and returns it normalized with where it leads.
 * TCP is served only over TLS, so http:// is refused.
 */
export function parseRemoteUrl(field: string, text: string): { url: string; endpoint: RemoteEndpoint } {
  const expected = 'must be https://HOST[:PORT] or unix:///path/to/socket';
  let parsed: URL;
  try {
    parsed = new URL(text);
  } catch {
    throw invalidArgument(field, `'${text}' is not a URL: ${expected}`);
  }
  if (parsed.search || parsed.hash) throw invalidArgument(field, `'${text}' must not have a query or fragment`);
  if (parsed.protocol === 'https:') {
    if (parsed.username || parsed.password) throw invalidArgument(field, `'${text}' must not contain credentials (use --token)`);
    if (parsed.pathname !== '/' && parsed.pathname !== '') throw invalidArgument(field, `'${text}' must not have a path: ${expected}`);
    if (!parsed.hostname) throw invalidArgument(field, `'${text}' has no host: ${expected}`);
    const host = parsed.hostname.replace(/^\[(.*)\]$/, '$1');
    return { url: `https://${parsed.host}`, endpoint: { kind: 'https', host, port: parsed.port ? Number(parsed.port) : 443 } };
  }
  if (parsed.protocol === 'unix:') {
    if (parsed.host) throw invalidArgument(field, `'${text}' names a host; a socket URL has three slashes: unix:///path/to/socket`);
    let socketPath: string;
    try {
      socketPath = decodeURIComponent(parsed.pathname);
    } catch {
      throw invalidArgument(field, `'${text}' has a malformed %-escape`);
    }
    if (!isAbsolute(socketPath) || socketPath === '/') throw invalidArgument(field, `'${text}' must give an absolute socket path: unix:///path/to/socket`);
    if (Buffer.byteLength(socketPath) > MAX_SOCKET_PATH) throw invalidArgument(field, `socket path ${socketPath} is longer than the kernel's limit of ${MAX_SOCKET_PATH} bytes`);
    return { url: `unix://${parsed.pathname}`, endpoint: { kind: 'unix', socketPath } };
  }
  throw invalidArgument(field, `'${text}' ${expected}${parsed.protocol === 'http:' ? ' (TCP is served only over TLS)' : ''}`);
}

export function remoteEndpoint(remote: Pick<RemoteConfig, 'url'>): RemoteEndpoint {
  return parseRemoteUrl('url', remote.url).endpoint;
}

/** "ab cd:EF..." in any common spelling to Node's "AB:CD:EF:..." form. */
export function normalizeFingerprint(field: string, text: string): string {
  const hex = text.trim().replace(/^sha256[:=]?/i, '').replace(/[\s:]/g, '').toUpperCase();
  if (!/^[0-9A-F]{64}$/.test(hex)) {
    throw invalidArgument(field, `'${text}' is not a SHA-256 fingerprint (64 hex digits, usually written AB:CD:...; the daemon prints it when it starts)`);
  }
  return hex.match(/../g)!.join(':');
}

// ---- options for the HTTP client ----

/**
 * node:https request options that make a request to this remote trust what
 * the user chose to trust: its CA, or exactly the certificate whose
 * fingerprint was pinned, or (with neither) the system's CAs.
 *
 * Pinning cannot be done with checkServerIdentity alone: Node calls it only
 * after the chain verified, which a self-signed certificate never does, and
 * with rejectUnauthorized false it is not called at all. So a pinned remote
 * gets an agent whose connections are checked against the pin as soon as the
 * handshake ends, before the request (and its bearer token) is written.
 * The agent also suits `ws` (pass it as the `agent` option).
 */
export function pinnedAgentOptions(remote: RemoteConfig & { name?: string }): RequestOptions {
  const endpoint = remoteEndpoint(remote);
  if (endpoint.kind !== 'https') throw invalidArgument('url', `remote${remote.name ? ` '${remote.name}'` : ''} is a Unix socket (${remote.url}); TLS options do not apply`);
  if (remote.fingerprint256 === undefined) return remote.ca !== undefined ? { ca: remote.ca } : {};
  const pinned = normalizeFingerprint('fingerprint256', remote.fingerprint256);
  return { agent: new PinnedAgent(pinned, remote.name ?? remote.url, remote.ca) };
}

/** The error for a certificate that is not the pinned one, or undefined when it is. */
export function checkPinnedFingerprint(remoteName: string, pinned: string, presented: string | undefined): VireoError | undefined {
  if (presented !== undefined && presented.toUpperCase() === pinned.toUpperCase()) return undefined;
  return new VireoError(
    'unauthorized',
    `the certificate of remote '${remoteName}' does not match the pinned fingerprint (pinned ${pinned}, presented ${presented ?? 'none'}): ` +
      'either the daemon got a new certificate, or something is intercepting the connection. If the change is expected, ' +
      `run \`vireo remote remove ${remoteName}\` and add it again`,
    { expected: pinned, presented: presented ?? null },
  );
}

class PinnedAgent extends Agent {
  constructor(
    private readonly pinned: string,
    private readonly remoteName: string,
    ca: string | undefined,
  ) {
    const options: AgentOptions = {
      // With a CA, the chain and host name are checked as usual and the pin on top of that;
      // without one, the pin alone decides (it names one exact certificate).
      ...(ca !== undefined ? { ca } : { rejectUnauthorized: false }),
      // A resumed session skips the handshake whose certificate the pin is checked against.
      maxCachedSessions: 0,
    };
    super(options);
  }

  override createConnection(options: RequestOptions, callback?: (error: Error | null, stream: Duplex) => void): Duplex | null | undefined {
    const socket = super.createConnection(options) as TLSSocket;
    // The socket goes to the request only once the pin has been checked, through the
    // callback (which http.Agent supports), so not a byte of the request precedes the check.
    const onError = (error: Error) => callback?.(error, socket);
    socket.once('error', onError);
    socket.once('secureConnect', () => {
      socket.removeListener('error', onError);
      const mismatch = checkPinnedFingerprint(this.remoteName, this.pinned, socket.getPeerCertificate()?.fingerprint256);
      if (mismatch) {
        socket.destroy();
        callback?.(mismatch, socket);
      } else {
        callback?.(null, socket);
      }
    });
    return undefined;
  }
}
