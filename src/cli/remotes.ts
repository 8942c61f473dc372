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
import { isIP } from 'node:net';
import { homedir } from 'node:os';
import { isAbsolute, join } from 'node:path';
import { connect } from 'node:tls';
import { z } from 'zod';
import { normalizeFingerprint, parseRemoteUrl, type RemoteConfig } from '../client/endpoint.js';
import { VireoError, alreadyExists, invalidArgument, notFound } from '../core/errors.js';
import { NAME_PATTERN, checkName } from '../core/model/units.js';
import { writeFileAtomic } from '../core/store/atomic.js';

// URL parsing and certificate pinning live with the API client, which daemons use too.
export { checkPinnedFingerprint, normalizeFingerprint, parseRemoteUrl, pinnedAgentOptions, remoteEndpoint, type RemoteConfig, type RemoteEndpoint } from '../client/endpoint.js';

export interface Remote extends RemoteConfig {
  name: string;
}

export interface RemotesConfig {
  default?: string;
  remotes: Record<string, RemoteConfig>;
}

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
