/**
 * Remotes: the daemons this user's CLI can talk to, kept in
 * $XDG_CONFIG_HOME/vireo/remotes.json (VIREO_CONFIG_DIR overrides the
 * directory), mode 0600 because it holds bearer tokens, written atomically.
 *
 * A remote is a Unix socket (unix:///path) or a TLS endpoint (https://host:port).
 * The daemon's certificate is usually self-signed, so an https remote is
 * trusted either through a CA file (--ca) or by pinning the SHA-256
 * fingerprint of the server's certificate, as ssh's known_hosts does: given
 * up front (--fingerprint) or fetched on first use and printed for the user
 * to compare with what the daemon printed when it started.
 */
import { X509Certificate } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import { Agent, type AgentOptions, type RequestOptions } from 'node:https';
import { isIP } from 'node:net';
import { homedir } from 'node:os';
import { isAbsolute, join } from 'node:path';
import { connect, type TLSSocket } from 'node:tls';
import type { Duplex } from 'node:stream';
import { z } from 'zod';
import { VireoError, alreadyExists, invalidArgument, notFound } from '../core/errors.js';
import { NAME_PATTERN, checkName } from '../core/model/units.js';
import { MAX_SOCKET_PATH } from '../core/paths.js';
import { writeFileAtomic } from '../core/store/atomic.js';

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

export interface Remote extends RemoteConfig {
  name: string;
}

export interface RemotesConfig {
  default?: string;
  remotes: Record<string, RemoteConfig>;
}

export type RemoteEndpoint =
  | { kind: 'unix'; socketPath: string }
  | { kind: 'https'; host: string; port: number };

const RemoteConfigSchema = z.object({
  url: z.string(),
  token: z.string().optional(),
  fingerprint256: z.string().optional(),
  ca: z.string().optional(),
});
const RemotesConfigSchema = z.object({
  default: z.string().optional(),
  remotes: z.record(z.string(), RemoteConfigSchema),
});

// ---- where the file is ----

export function remotesConfigDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.VIREO_CONFIG_DIR) return env.VIREO_CONFIG_DIR;
  // The XDG spec says a relative XDG_CONFIG_HOME is invalid and is to be ignored.
  const configHome = env.XDG_CONFIG_HOME && isAbsolute(env.XDG_CONFIG_HOME) ? env.XDG_CONFIG_HOME : join(homedir(), '.config');
  return join(configHome, 'vireo');
}

export function remotesFile(configDir: string = remotesConfigDir()): string {
  return join(configDir, 'remotes.json');
}

// ---- the operations ----

export async function listRemotes(configDir: string = remotesConfigDir()): Promise<{ default?: string; remotes: Remote[] }> {
  const config = await loadRemotes(configDir);
  const remotes = Object.entries(config.remotes)
    .map(([name, remote]) => ({ name, ...remote }))
    .sort((a, b) => a.name.localeCompare(b.name));
  return { ...(config.default !== undefined ? { default: config.default } : {}), remotes };
}

export async function getRemote(name: string, configDir: string = remotesConfigDir()): Promise<Remote> {
  const remote = lookup(await loadRemotes(configDir), name);
  if (!remote) throw notFound('remote', name);
  return { name, ...remote };
}

/** The default remote, or undefined when none is set (the CLI then uses the local socket). */
export async function getDefaultRemote(configDir: string = remotesConfigDir()): Promise<Remote | undefined> {
  const config = await loadRemotes(configDir);
  if (config.default === undefined) return undefined;
  const remote = lookup(config, config.default);
  return remote ? { name: config.default, ...remote } : undefined;
}

export interface AddRemoteInput {
  name: string;
  url: string;
  token?: string;
  /** In any common spelling: with or without colons, either case. */
  fingerprint256?: string;
  /** A PEM file of the CA (or of the server's own certificate) to trust instead of pinning. */
  caFile?: string;
  /** How long to wait for the server when fetching its fingerprint. */
  timeoutMs?: number;
}

export interface AddRemoteResult {
  remote: Remote;
  /**
   * Set when the fingerprint was fetched from the server (trust on first use):
   * the caller must show it so the user can compare it with the daemon's.
   */
  fetched?: { fingerprint256: string; subject: string; validTo: string };
}

export async function addRemote(input: AddRemoteInput, configDir: string = remotesConfigDir()): Promise<AddRemoteResult> {
  const name = checkName('name', input.name);
  const { url, endpoint } = parseRemoteUrl('url', input.url);
  const remote: RemoteConfig = { url };

  if (endpoint.kind === 'unix') {
    // A socket is guarded by its file permissions; these apply to TLS only.
    if (input.token !== undefined) throw invalidArgument('token', 'applies only to https:// remotes (a Unix socket is guarded by its file permissions)');
    if (input.fingerprint256 !== undefined) throw invalidArgument('fingerprint', 'applies only to https:// remotes');
    if (input.caFile !== undefined) throw invalidArgument('ca', 'applies only to https:// remotes');
  } else {
    if (input.token !== undefined) remote.token = checkToken('token', input.token);
    if (input.fingerprint256 !== undefined) remote.fingerprint256 = normalizeFingerprint('fingerprint', input.fingerprint256);
    if (input.caFile !== undefined) remote.ca = await readCaFile('ca', input.caFile);
  }

  // Refused before connecting anywhere, and again below in case of a race.
  if (lookup(await loadRemotes(configDir), name)) throw alreadyExists('remote', name);

  let fetched: AddRemoteResult['fetched'];
  if (endpoint.kind === 'https' && remote.fingerprint256 === undefined && remote.ca === undefined) {
    fetched = await fetchServerCertificate(url, { timeoutMs: input.timeoutMs ?? 10_000 });
    remote.fingerprint256 = fetched.fingerprint256;
  }

  const config = await loadRemotes(configDir);
  if (lookup(config, name)) throw alreadyExists('remote', name);
  config.remotes[name] = remote;
  await saveRemotes(configDir, config);
  return { remote: { name, ...remote }, ...(fetched ? { fetched } : {}) };
}

export async function removeRemote(name: string, configDir: string = remotesConfigDir()): Promise<void> {
  const config = await loadRemotes(configDir);
  if (!lookup(config, name)) throw notFound('remote', name);
  delete config.remotes[name];
  // A default that names nothing would only fail later, further from its cause.
  if (config.default === name) delete config.default;
  await saveRemotes(configDir, config);
}

export async function setDefaultRemote(name: string, configDir: string = remotesConfigDir()): Promise<void> {
  const config = await loadRemotes(configDir);
  if (!lookup(config, name)) throw notFound('remote', name);
  config.default = name;
  await saveRemotes(configDir, config);
}

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

function checkToken(field: string, token: string): string {
  // It goes into an HTTP header: no spaces or control characters, nothing to split a header with.
  if (!/^[\x21-\x7e]{1,512}$/.test(token)) throw invalidArgument(field, 'must be printable ASCII without spaces, as `vireo token create` prints it');
  return token;
}

async function readCaFile(field: string, file: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw invalidArgument(field, `cannot read ${file}: ${code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : (error as Error).message}`);
  }
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) throw invalidArgument(field, `${file} is not a PEM certificate (no "BEGIN CERTIFICATE" block)`);
  for (const block of blocks) {
    try {
      new X509Certificate(block);
    } catch (error) {
      throw invalidArgument(field, `${file} holds a certificate that does not parse: ${(error as Error).message}`);
    }
  }
  return `${blocks.join('\n')}\n`;
}

// ---- trust on first use ----

/**
 * Connects to an https remote without verifying it and reports the
 * certificate it presents. Only for showing the user what to compare and
 * pin: nothing is sent over this connection.
 */
export async function fetchServerCertificate(url: string, options: { timeoutMs?: number } = {}): Promise<{ fingerprint256: string; subject: string; validTo: string }> {
  const endpoint = parseRemoteUrl('url', url).endpoint;
  if (endpoint.kind !== 'https') throw invalidArgument('url', `'${url}' is not an https:// URL; only TLS servers have a certificate`);
  const timeoutMs = options.timeoutMs ?? 10_000;
  return new Promise((resolve, reject) => {
    const socket = connect({
      host: endpoint.host,
      port: endpoint.port,
      // SNI takes a host name, never an IP address.
      ...(isIP(endpoint.host) ? {} : { servername: endpoint.host }),
      rejectUnauthorized: false,
    });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new VireoError('timeout', `no TLS handshake from ${url} within ${timeoutMs / 1000}s; check the address, or give the fingerprint with --fingerprint`, { field: 'url' }));
    }, timeoutMs);
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      const cert = socket.getPeerCertificate();
      socket.end();
      if (!cert?.fingerprint256) return reject(new VireoError('unauthorized', `${url} presented no certificate`, { field: 'url' }));
      const subject = typeof cert.subject?.CN === 'string' ? `CN=${cert.subject.CN}` : '';
      resolve({ fingerprint256: cert.fingerprint256, subject, validTo: cert.valid_to });
    });
    socket.once('error', (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      socket.destroy();
      reject(invalidArgument('url', `cannot reach ${url}: ${error.code ?? error.message}; check the address and that the daemon listens on TCP, or give the fingerprint with --fingerprint`, { cause: error.message }));
    });
  });
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

// ---- the file ----

async function loadRemotes(configDir: string): Promise<RemotesConfig> {
  const file = remotesFile(configDir);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { remotes: {} };
    throw new VireoError('internal', `cannot read ${file}: ${(error as Error).message}`, { file }, { cause: error });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new VireoError('invalid_state', `${file} is not valid JSON; fix or remove it`, { file }, { cause: error });
  }
  const parsed = RemotesConfigSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const field = issue.path.join('.');
    throw new VireoError('invalid_state', `${file}: ${field || '(file)'}: ${issue.message}`, { file, field });
  }
  // Only names a remote may have: a hand-edited "__proto__" key must not reach an object's prototype.
  const entries = Object.entries(parsed.data.remotes).filter(([name]) => NAME_PATTERN.test(name));
  const config: RemotesConfig = {
    remotes: Object.fromEntries(
      entries.map(([name, remote]) => [
        name,
        {
          url: remote.url,
          ...(remote.token !== undefined ? { token: remote.token } : {}),
          ...(remote.fingerprint256 !== undefined ? { fingerprint256: remote.fingerprint256 } : {}),
          ...(remote.ca !== undefined ? { ca: remote.ca } : {}),
        },
      ]),
    ),
  };
  if (parsed.data.default !== undefined) config.default = parsed.data.default;
  return config;
}

async function saveRemotes(configDir: string, config: RemotesConfig): Promise<void> {
  await mkdir(configDir, { recursive: true, mode: 0o700 });
  // Tokens are in it: the file is the user's alone (created 0600 from the start, never wider).
  await writeFileAtomic(remotesFile(configDir), `${JSON.stringify(config, null, 2)}\n`, 0o600);
}

/** Own properties only: a remote named "constructor" must not find Object.prototype's. */
function lookup(config: RemotesConfig, name: string): RemoteConfig | undefined {
  return Object.hasOwn(config.remotes, name) ? config.remotes[name] : undefined;
}
