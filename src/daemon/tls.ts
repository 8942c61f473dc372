/**
 * The daemon's TLS certificate and key. Either the user gives both files
 * (--tls-cert, --tls-key), or Vireo makes a self-signed certificate once, in
 * <home>/tls/, and keeps using it: clients pin its SHA-256 fingerprint on
 * first use (`vireo remote add`), so it must not change from one start to the
 * next. The `openssl` command makes it; Node has no API to issue certificates.
 */
import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { VireoError, invalidArgument } from '../core/errors.js';
import type { VireoPaths } from '../core/paths.js';
import { run, stderrTail } from '../core/process/run.js';

export interface TlsMaterial {
  /** PEM. */
  cert: string;
  /** PEM. */
  key: string;
  /** As Node's X509Certificate and getPeerCertificate() give it: "AB:CD:...", what clients pin. */
  fingerprint256: string;
  certFile: string;
  keyFile: string;
}

export interface TlsFileOptions {
  certFile?: string;
  keyFile?: string;
}

/** The option names used in errors, as the daemon's command line spells them. */
const CERT_OPTION = 'tls-cert';
const KEY_OPTION = 'tls-key';
/** Ten years: rotating a pinned certificate means every client re-pins, so it should be rare. */
const VALIDITY_DAYS = 3650;

export function tlsDirectory(paths: VireoPaths): string {
  return join(paths.home, 'tls');
}

export async function ensureTlsMaterial(paths: VireoPaths, options: TlsFileOptions = {}): Promise<TlsMaterial> {
  if (options.certFile !== undefined || options.keyFile !== undefined) {
    if (options.certFile === undefined) throw invalidArgument(CERT_OPTION, `is required with --${KEY_OPTION}`);
    if (options.keyFile === undefined) throw invalidArgument(KEY_OPTION, `is required with --${CERT_OPTION}`);
    return loadMaterial(options.certFile, options.keyFile, { certField: CERT_OPTION, keyField: KEY_OPTION });
  }
  const directory = tlsDirectory(paths);
  const certFile = join(directory, 'server.crt');
  const keyFile = join(directory, 'server.key');
  if (!(await exists(certFile))) await generateSelfSigned(paths, directory);
  // Files Vireo made itself: a problem with them is a damaged state directory, not a bad option.
  return loadMaterial(certFile, keyFile, { certField: certFile, keyField: keyFile, generated: directory });
}

/** Host names that can go into a certificate's CN and SAN as they are. */
const DNS_NAME = /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/**
 * Makes the key and certificate in a fresh temporary directory, then renames
 * that directory to <home>/tls in one step. A crash leaves no half-made pair,
 * and if two processes race, the rename of the loser fails (the target is
 * no longer empty) and it uses the winner's pair.
 */
async function generateSelfSigned(paths: VireoPaths, directory: string): Promise<void> {
  await mkdir(paths.home, { recursive: true });
  const scratch = await mkdtemp(join(paths.home, '.tls-'));
  try {
    await chmod(scratch, 0o700);
    const host = hostname();
    const name = DNS_NAME.test(host) && host.length <= 253 ? host : 'localhost';
    const altNames = [...new Set([name, 'localhost'])].map((dns) => `DNS:${dns}`);
    // A configuration file of our own, rather than the distribution's openssl.cnf, so the
    // certificate is the same everywhere, and no host name is ever parsed as an argument.
    const config = [
      '[req]',
      'distinguished_name = subject',
      'x509_extensions = server',
      'prompt = no',
      '[subject]',
      `CN = ${name}`,
      '[server]',
      // CA:TRUE lets a client trust this very certificate with --ca as well as by fingerprint.
      'basicConstraints = critical, CA:TRUE',
      'keyUsage = critical, digitalSignature, keyCertSign',
      'extendedKeyUsage = serverAuth',
      `subjectAltName = ${[...altNames, 'IP:127.0.0.1'].join(', ')}`,
      'subjectKeyIdentifier = hash',
      '',
    ].join('\n');
    const configFile = join(scratch, 'openssl.cnf');
    await writeFile(configFile, config, { mode: 0o600 });
    await runOpenssl([
      'req', '-x509', '-new',
      '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256',
      '-nodes',
      '-days', String(VALIDITY_DAYS),
      '-config', configFile,
      '-keyout', join(scratch, 'server.key'),
      '-out', join(scratch, 'server.crt'),
    ]);
    await rm(configFile);
    await chmod(join(scratch, 'server.key'), 0o600);
    await chmod(join(scratch, 'server.crt'), 0o644);
    try {
      // An empty <home>/tls (made by hand, say) is replaced; one with files in it is kept.
      await rename(scratch, directory);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw error;
      if (!(await exists(join(directory, 'server.crt')))) {
        throw new VireoError('invalid_state', `${directory} exists without server.crt; remove it so that Vireo can make a new certificate, or pass --${CERT_OPTION} and --${KEY_OPTION}`, { file: directory });
      }
    }
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

async function runOpenssl(args: string[]): Promise<void> {
  // An argv array and no shell: nothing in it is ever interpreted.
  await run('openssl', args, {
    timeoutMs: 60_000,
    describe: (failure) =>
      failure.notInstalled
        ? `the 'openssl' command is needed to make the daemon's TLS certificate: install the package openssl (apt-get install openssl), or pass --${CERT_OPTION} and --${KEY_OPTION}`
        : `openssl could not make a TLS certificate: ${stderrTail(failure.stderr, 3).replaceAll('\n', '; ') || (failure.timedOut ? 'timed out' : `exit ${failure.exitCode}`)}`,
  });
}

interface Fields {
  /** What errors name: the option for given files, the path for Vireo's own. */
  certField: string;
  keyField: string;
  /** Set for Vireo's own pair: the directory to remove to start over. */
  generated?: string;
}

async function loadMaterial(certFile: string, keyFile: string, fields: Fields): Promise<TlsMaterial> {
  const fail = (field: string, message: string, cause?: unknown) => {
    if (fields.generated === undefined) return new VireoError('invalid_argument', `${field}: ${message}`, { field }, { cause });
    return new VireoError('invalid_state', `${message}; remove ${fields.generated} to make a new certificate (clients will have to trust it again)`, { file: field }, { cause });
  };
  const cert = await readPem(certFile, fields.certField, fail);
  const key = await readPem(keyFile, fields.keyField, fail);

  if (!cert.includes('-----BEGIN CERTIFICATE-----')) throw fail(fields.certField, `${certFile} is not a PEM certificate (no "BEGIN CERTIFICATE" block)`);
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(cert);
  } catch (error) {
    throw fail(fields.certField, `${certFile} is not a valid PEM certificate: ${(error as Error).message}`, error);
  }
  if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(key)) throw fail(fields.keyField, `${keyFile} is not a PEM private key (no "BEGIN PRIVATE KEY" block)`);
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(key);
  } catch (error) {
    throw fail(fields.keyField, `${keyFile} is not a usable private key: ${(error as Error).message}`, error);
  }
  // Caught here with a clear message rather than as an obscure failure at listen time.
  if (!x509.checkPrivateKey(privateKey)) throw fail(fields.keyField, `${keyFile} is not the private key of the certificate in ${certFile}`);
  return { cert, key, fingerprint256: x509.fingerprint256, certFile, keyFile };
}

async function readPem(file: string, field: string, fail: (field: string, message: string, cause?: unknown) => VireoError): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const reason = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'is a directory' : (error as Error).message;
    throw fail(field, `cannot read ${file}: ${reason}`, error);
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw error;
  }
}
