// The controller's certificate authority: one self-signed RSA root that signs workload SVIDs (from
// CSRs sent by node agents), node agents' client credentials, and the controller's serving cert.
//
// Authorization (which node may ask for which identity) is the gRPC server's job; this class only
// checks that a CSR is well formed and names an identity of its own trust domain.
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import forge from 'node-forge';
import { ErrorCodes, WeftError, errorMessage } from '../errors.js';
import { SanType, forgeKeyPair, generateRsaKeyPem } from '../identity/csr.js';
import { formatSpiffeId, isValidTrustDomain, nodeSpiffeUri, parseSpiffeId, type SpiffeId } from '../identity/spiffe.js';

export const ROOT_CERT_FILE = 'root-cert.pem';
export const ROOT_KEY_FILE = 'root-key.pem';

/** Certificates are valid from a minute before issuance, so peers whose clocks lag still accept them. */
const CLOCK_SKEW_MS = 60_000;
const DEFAULT_ROOT_TTL_DAYS = 3650;
const MIN_RSA_BITS = 2048;

export interface CertificateAuthorityOptions {
  /** Where a root created on first start is kept (`root-cert.pem`, `root-key.pem`). */
  dir: string;
  trustDomain: string;
  /** Lifetime of a root created here; default ten years. */
  rootTtlDays?: number;
  /** An operator-provided root (both files or neither); then `dir` is not used. */
  certFile?: string;
  keyFile?: string;
  /** The clock, in ms since the epoch. Tests move it to issue certificates that are already expired. */
  now?: () => number;
}

export interface IssuedCredential {
  certPem: string;
  keyPem: string;
}

export interface ServingCertOptions {
  dnsNames: string[];
  ips: string[];
  ttlSeconds: number;
}

interface SanEntry {
  type: number;
  value?: string;
  ip?: string;
}

interface Usage {
  serverAuth: boolean;
  clientAuth: boolean;
}

function caError(message: string, cause?: unknown): WeftError {
  return new WeftError(ErrorCodes.CA, message, cause === undefined ? undefined : { cause });
}

/** 128 random bits as a positive DER INTEGER: a 0x00 pad then 16 bytes whose top bit is set, so the
 * encoding is minimal and never negative. */
function randomSerial(): string {
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0] ?? 0) | 0x80;
  return `00${bytes.toString('hex')}`;
}

async function writePrivate(path: string, data: string): Promise<void> {
  // Write then rename, so a crash never leaves a truncated file under the final name.
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, data, { mode: 0o600, flag: 'w' });
  await rename(tmp, path);
}

async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw caError(`cannot read ${path}: ${errorMessage(err)}`, err);
  }
}

function uriSansOfForgeCert(cert: forge.pki.Certificate): string[] {
  const ext = cert.getExtension('subjectAltName') as { altNames?: SanEntry[] } | undefined;
  return (ext?.altNames ?? []).filter((n) => n.type === SanType.URI).map((n) => n.value ?? '');
}

export class CertificateAuthority {
  readonly trustDomain: string;
  readonly rootCertPem: string;
  private readonly rootCert: forge.pki.Certificate;
  private readonly rootKey: forge.pki.rsa.PrivateKey;
  private readonly rootKeyId: string;
  private readonly now: () => number;

  private constructor(trustDomain: string, rootCertPem: string, rootCert: forge.pki.Certificate, rootKey: forge.pki.rsa.PrivateKey, now: () => number) {
    this.trustDomain = trustDomain;
    this.rootCertPem = rootCertPem;
    this.rootCert = rootCert;
    this.rootKey = rootKey;
    this.rootKeyId = rootCert.generateSubjectKeyIdentifier().getBytes();
    this.now = now;
  }

  /**
   * Loads the root from `certFile`/`keyFile`, else from `dir`, else creates one in `dir` and keeps it
   * there: a controller restart must not change the root, or every certificate in the mesh breaks.
   */
  static async loadOrCreate(options: CertificateAuthorityOptions): Promise<CertificateAuthority> {
    const { dir, trustDomain } = options;
    const now = options.now ?? Date.now;
    if (!isValidTrustDomain(trustDomain)) throw caError(`invalid trust domain ${JSON.stringify(trustDomain)}`);
    if ((options.certFile === undefined) !== (options.keyFile === undefined)) {
      throw caError('certFile and keyFile must be given together');
    }
    if (options.certFile !== undefined && options.keyFile !== undefined) {
      const certPem = await readIfExists(options.certFile);
      const keyPem = await readIfExists(options.keyFile);
      if (certPem === undefined || keyPem === undefined) {
        throw caError(`root CA file missing: ${certPem === undefined ? options.certFile : options.keyFile}`);
      }
      // An operator's root need not carry a SPIFFE SAN, nor one of this trust domain.
      return CertificateAuthority.fromPem(trustDomain, certPem, keyPem, now, false);
    }
    const certPath = join(dir, ROOT_CERT_FILE);
    const keyPath = join(dir, ROOT_KEY_FILE);
    const certPem = await readIfExists(certPath);
    const keyPem = await readIfExists(keyPath);
    if (certPem !== undefined && keyPem !== undefined) return CertificateAuthority.fromPem(trustDomain, certPem, keyPem, now, true);
    if (certPem !== undefined || keyPem !== undefined) {
      // Half a root: never paper over it with a new one, which would orphan every issued certificate.
      throw caError(`${dir} holds ${certPem !== undefined ? ROOT_CERT_FILE : ROOT_KEY_FILE} without ${certPem !== undefined ? ROOT_KEY_FILE : ROOT_CERT_FILE}`);
    }
    const created = await CertificateAuthority.createRoot(trustDomain, options.rootTtlDays ?? DEFAULT_ROOT_TTL_DAYS, now);
    try {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      await writePrivate(keyPath, created.keyPem);
      await writePrivate(certPath, created.certPem);
    } catch (err) {
      throw caError(`cannot persist the root CA in ${dir}: ${errorMessage(err)}`, err);
    }
    return CertificateAuthority.fromPem(trustDomain, created.certPem, created.keyPem, now, true);
  }

  private static async createRoot(trustDomain: string, ttlDays: number, now: () => number): Promise<IssuedCredential> {
    if (!(ttlDays > 0)) throw caError(`rootTtlDays must be positive, got ${ttlDays}`);
    const keyPem = await generateRsaKeyPem();
    const { privateKey, publicKey } = forgeKeyPair(keyPem);
    const cert = forge.pki.createCertificate();
    const t = now();
    cert.publicKey = publicKey;
    cert.serialNumber = randomSerial();
    cert.validity.notBefore = new Date(t - CLOCK_SKEW_MS);
    cert.validity.notAfter = new Date(t + ttlDays * 86_400_000);
    const name = [
      { shortName: 'O', value: 'weft' },
      { shortName: 'CN', value: 'weft root CA' },
    ];
    cert.setSubject(name);
    cert.setIssuer(name);
    cert.setExtensions([
      { name: 'basicConstraints', cA: true, critical: true },
      { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
      { name: 'subjectKeyIdentifier' },
      { name: 'subjectAltName', altNames: [{ type: SanType.URI, value: `spiffe://${trustDomain}` }] },
    ]);
    cert.sign(privateKey, forge.md.sha256.create());
    return { certPem: forge.pki.certificateToPem(cert), keyPem };
  }

  private static fromPem(trustDomain: string, certPem: string, keyPem: string, now: () => number, ownRoot: boolean): CertificateAuthority {
    let cert: forge.pki.Certificate;
    let key: forge.pki.rsa.PrivateKey;
    try {
      cert = forge.pki.certificateFromPem(certPem);
      key = forge.pki.privateKeyFromPem(keyPem) as forge.pki.rsa.PrivateKey;
    } catch (err) {
      throw caError(`cannot parse the root CA (it must be RSA, PEM): ${errorMessage(err)}`, err);
    }
    const pub = cert.publicKey as forge.pki.rsa.PublicKey;
    if (pub.n.compareTo(key.n) !== 0 || pub.e.compareTo(key.e) !== 0) throw caError('the root CA key does not match its certificate');
    const bc = cert.getExtension('basicConstraints') as { cA?: boolean } | undefined;
    if (bc?.cA !== true) throw caError('the root CA certificate is not a CA (basicConstraints CA:true missing)');
    if (cert.validity.notAfter.getTime() <= now()) throw caError(`the root CA expired at ${cert.validity.notAfter.toISOString()}`);
    if (ownRoot) {
      // A root weft created names its trust domain; reusing it for another is a misconfiguration.
      const td = uriSansOfForgeCert(cert).find((u) => u.startsWith('spiffe://'));
      if (td !== undefined && td !== `spiffe://${trustDomain}`) {
        throw caError(`the root CA in the CA directory belongs to ${td}, not spiffe://${trustDomain}`);
      }
    }
    return new CertificateAuthority(trustDomain, forge.pki.certificateToPem(cert), cert, key, now);
  }

  /**
   * Signs a workload CSR: the CSR must be self-consistent (its signature verifies with its own key),
   * RSA of at least 2048 bits, and name exactly one URI SAN, a workload SPIFFE ID of this trust
   * domain. Returns the identity and the chain, leaf first, root last.
   */
  async signWorkloadCsr(csrPem: string, ttlSeconds: number): Promise<{ identity: SpiffeId; chain: string[] }> {
    let csr: forge.pki.CertificateSigningRequest;
    try {
      csr = forge.pki.certificationRequestFromPem(csrPem);
    } catch (err) {
      throw caError(`CSR refused: cannot parse it (only RSA PEM CSRs are accepted): ${errorMessage(err)}`, err);
    }
    let signed = false;
    try {
      signed = csr.verify();
    } catch {
      signed = false;
    }
    if (!signed) throw caError('CSR refused: its signature does not verify');
    const publicKey = csr.publicKey as forge.pki.rsa.PublicKey | null;
    if (publicKey === null || publicKey.n.bitLength() < MIN_RSA_BITS) throw caError(`CSR refused: the key must be RSA of at least ${MIN_RSA_BITS} bits`);

    const uris = this.csrUriSans(csr);
    if (uris.length !== 1) throw caError(`CSR refused: it must carry exactly one URI SAN, found ${uris.length}`);
    const uri = uris[0] as string;
    let identity: SpiffeId;
    try {
      identity = parseSpiffeId(uri);
    } catch (err) {
      throw caError(`CSR refused: ${errorMessage(err)}`, err);
    }
    if (identity.trustDomain !== this.trustDomain) {
      throw caError(`CSR refused: ${uri} is not in trust domain ${this.trustDomain}`);
    }
    const leaf = this.issue(publicKey, [{ type: SanType.URI, value: formatSpiffeId(identity) }], { serverAuth: true, clientAuth: true }, ttlSeconds);
    return { identity, chain: [leaf, this.rootCertPem] };
  }

  /** The node agent's client credential toward the controller: URI SAN spiffe://<td>/weft/node/<node>. */
  async issueNodeCredential(node: string, ttlSeconds: number): Promise<IssuedCredential> {
    let uri: string;
    try {
      uri = nodeSpiffeUri(this.trustDomain, node);
    } catch (err) {
      throw caError(errorMessage(err), err);
    }
    const keyPem = await generateRsaKeyPem();
    const certPem = this.issue(forgeKeyPair(keyPem).publicKey, [{ type: SanType.URI, value: uri }], { serverAuth: false, clientAuth: true }, ttlSeconds);
    return { certPem, keyPem };
  }

  /** The controller's own serving certificate (its gRPC endpoint), for the given names and addresses. */
  async issueServingCert(options: ServingCertOptions): Promise<IssuedCredential> {
    if (options.dnsNames.length === 0 && options.ips.length === 0) throw caError('a serving certificate needs at least one DNS name or IP');
    const sans: SanEntry[] = [...options.dnsNames.map((value) => ({ type: SanType.DNS, value })), ...options.ips.map((ip) => ({ type: SanType.IP, ip }))];
    const keyPem = await generateRsaKeyPem();
    const certPem = this.issue(forgeKeyPair(keyPem).publicKey, sans, { serverAuth: true, clientAuth: false }, options.ttlSeconds);
    return { certPem, keyPem };
  }

  private csrUriSans(csr: forge.pki.CertificateSigningRequest): string[] {
    const request = csr.getAttribute({ name: 'extensionRequest' });
    const extensions = (request?.extensions ?? []) as Array<{ name?: string; altNames?: SanEntry[] }>;
    return extensions
      .filter((e) => e.name === 'subjectAltName')
      .flatMap((e) => e.altNames ?? [])
      .filter((n) => n.type === SanType.URI)
      .map((n) => n.value ?? '');
  }

  private issue(publicKey: forge.pki.PublicKey, sans: SanEntry[], usage: Usage, ttlSeconds: number): string {
    if (!Number.isFinite(ttlSeconds) || ttlSeconds <= 0) throw caError(`certificate lifetime must be a positive number of seconds, got ${ttlSeconds}`);
    const t = this.now();
    // A leaf never outlives the root that vouches for it.
    const notAfter = Math.min(t + ttlSeconds * 1000, this.rootCert.validity.notAfter.getTime());
    const cert = forge.pki.createCertificate();
    cert.publicKey = publicKey;
    cert.serialNumber = randomSerial();
    cert.validity.notBefore = new Date(t - CLOCK_SKEW_MS);
    cert.validity.notAfter = new Date(notAfter);
    cert.setIssuer(this.rootCert.subject.attributes);
    // Empty subject, as an X.509-SVID has; RFC 5280 then wants the SAN extension marked critical.
    cert.setSubject([]);
    cert.setExtensions([
      { name: 'basicConstraints', cA: false, critical: true },
      { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
      { name: 'extKeyUsage', serverAuth: usage.serverAuth, clientAuth: usage.clientAuth },
      { name: 'subjectKeyIdentifier' },
      { name: 'authorityKeyIdentifier', keyIdentifier: this.rootKeyId },
      { name: 'subjectAltName', altNames: sans, critical: true },
    ]);
    cert.sign(this.rootKey, forge.md.sha256.create());
    return forge.pki.certificateToPem(cert);
  }
}
