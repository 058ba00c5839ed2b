// The controller's certificate authority: one self-signed root that signs workload SVIDs (from CSRs
// sent by node agents), node agents' client credentials, and the controller's serving cert.
//
// Certificates are written as DER here and signed with Node's crypto: node-forge can neither carry an
// ECDSA key (what workloads use, as in ztunnel) nor sign without running RSA in JavaScript on the
// controller's only thread.
//
// Authorization (which node may ask for which identity) is the gRPC server's job; this class only
// checks that a CSR is well formed (see csr.ts) and names an identity of its own trust domain.
import { X509Certificate, createHash, createPrivateKey, createPublicKey, randomBytes, sign, type KeyObject } from 'node:crypto';
import { chmod, lstat, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { ErrorCodes, WeftError, errorMessage } from '../errors.js';
import { generateEcKeyPem, generateRsaKeyPem } from '../identity/csr.js';
import {
  Tag,
  bitString,
  bitStringBytes,
  children,
  context,
  decodeOid,
  derBoolean,
  derNull,
  expectTag,
  namedBits,
  octetString,
  oid,
  readOne,
  seq,
  set,
  smallInteger,
  toPem,
  unsignedInteger,
  utf8,
  x509Time,
  type Tlv,
} from '../identity/der.js';
import { formatSpiffeId, isValidTrustDomain, nodeSpiffeUri, uriSansOf, type SpiffeId } from '../identity/spiffe.js';
import { Oids, checkCsr, publicKeyProblem, type CheckedCsr, type CheckedCsrRequest } from './csr.js';

export const ROOT_CERT_FILE = 'root-cert.pem';
export const ROOT_KEY_FILE = 'root-key.pem';
/** Modes the CA directory and its files are brought to on every start, whatever they were. */
export const CA_DIR_MODE = 0o700;
export const CA_FILE_MODE = 0o600;

/** Certificates are valid from a minute before issuance, so peers whose clocks lag still accept them. */
const CLOCK_SKEW_MS = 60_000;
const DEFAULT_ROOT_TTL_DAYS = 3650;

const ExtOids = {
  basicConstraints: '2.5.29.19',
  keyUsage: '2.5.29.15',
  extKeyUsage: '2.5.29.37',
  subjectKeyIdentifier: '2.5.29.14',
  authorityKeyIdentifier: '2.5.29.35',
  subjectAltName: Oids.subjectAltName,
  serverAuth: '1.3.6.1.5.5.7.3.1',
  clientAuth: '1.3.6.1.5.5.7.3.2',
  organization: '2.5.4.10',
  commonName: '2.5.4.3',
} as const;

/** keyUsage bit numbers (RFC 5280 §4.2.1.3). */
const KeyUsageBit = { digitalSignature: 0, keyEncipherment: 2, keyCertSign: 5, cRLSign: 6 } as const;

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
  /** The certificate's serial number, hex, as Node's X509Certificate prints it. */
  serial: string;
}

export interface ServingCertOptions {
  dnsNames: string[];
  ips: string[];
  ttlSeconds: number;
}

interface Usage {
  serverAuth: boolean;
  clientAuth: boolean;
}

function caError(message: string, cause?: unknown): WeftError {
  return new WeftError(ErrorCodes.CA, message, cause === undefined ? undefined : { cause });
}

/** 128 random bits with the top bit set: a positive serial that is always 16 bytes long. */
function randomSerial(): Buffer {
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0] ?? 0) | 0x80;
  return bytes;
}

async function writePrivate(path: string, data: string): Promise<void> {
  // Write then rename, so a crash never leaves a truncated file under the final name; a stale temp
  // file is removed first so the mode below is the one it gets.
  const tmp = `${path}.tmp-${process.pid}`;
  await rm(tmp, { force: true });
  await writeFile(tmp, data, { mode: CA_FILE_MODE, flag: 'wx' });
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

/**
 * The CA directory is 0700 and its files 0600 on every start, also when they already existed with
 * looser modes (an old version, a restore from backup, an operator's cp): the root key is the mesh.
 */
export async function tightenCaDir(dir: string): Promise<void> {
  try {
    await mkdir(dir, { recursive: true, mode: CA_DIR_MODE });
    const st = await lstat(dir);
    if (!st.isDirectory()) throw caError(`${dir} is not a directory`);
    if ((st.mode & 0o777) !== CA_DIR_MODE) await chmod(dir, CA_DIR_MODE);
    for (const name of [ROOT_KEY_FILE, ROOT_CERT_FILE]) {
      const path = join(dir, name);
      let mode: number;
      try {
        mode = (await lstat(path)).mode & 0o777;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw err;
      }
      if (mode !== CA_FILE_MODE) await chmod(path, CA_FILE_MODE);
    }
  } catch (err) {
    if (err instanceof WeftError) throw err;
    throw caError(`cannot restrict the CA directory ${dir} to its owner: ${errorMessage(err)}`, err);
  }
}

// ---- certificate building ----

function extension(id: string, critical: boolean, value: Buffer): Buffer {
  return seq(oid(id), ...(critical ? [derBoolean(true)] : []), octetString(value));
}

function name(attributes: Array<[string, string]>): Buffer {
  return seq(...attributes.map(([type, value]) => set(seq(oid(type), utf8(value)))));
}

function ipBytes(ip: string): Buffer {
  const v = isIP(ip);
  if (v === 4) return Buffer.from(ip.split('.').map(Number));
  if (v !== 6) throw caError(`"${ip}" is not an IP address`);
  let text = ip;
  const tail: number[] = [];
  const v4 = /:(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4) {
    tail.push(...(v4[1] as string).split('.').map(Number));
    text = `${text.slice(0, v4.index)}:0:0`;
  }
  const [head = '', rest] = text.split('::') as [string, string | undefined];
  const groups = (s: string): string[] => (s === '' ? [] : s.split(':'));
  const left = groups(head);
  const right = rest === undefined ? [] : groups(rest);
  const all = rest === undefined ? left : [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right];
  const out = Buffer.alloc(16);
  all.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  if (tail.length === 4) out.set(tail, 12);
  return out;
}

/** GeneralNames: URI [6], dNSName [2], iPAddress [7]. */
function generalNames(names: { uris?: string[]; dns?: string[]; ips?: string[] }): Buffer {
  const out: Buffer[] = [];
  for (const u of names.uris ?? []) out.push(context(6, false, Buffer.from(u, 'ascii')));
  for (const d of names.dns ?? []) {
    if (!/^[A-Za-z0-9*]([A-Za-z0-9.*-]*[A-Za-z0-9])?$/.test(d)) throw caError(`"${d}" is not a DNS name`);
    out.push(context(2, false, Buffer.from(d, 'ascii')));
  }
  for (const ip of names.ips ?? []) out.push(context(7, false, ipBytes(ip)));
  return seq(...out);
}

/** SHA-1 of the subjectPublicKey bits (RFC 5280 §4.2.1.2, method 1). */
function keyIdentifier(spkiDer: Buffer): Buffer {
  const parts = children(expectTag(readOne(spkiDer), Tag.SEQUENCE, 'SubjectPublicKeyInfo'));
  return createHash('sha1').update(bitStringBytes(parts[1] as Tlv, 'subjectPublicKey')).digest();
}

function spkiOf(key: KeyObject): Buffer {
  return createPublicKey(key).export({ type: 'spki', format: 'der' });
}

/** What the issuer signs with: its key and the matching AlgorithmIdentifier. */
interface Signer {
  key: KeyObject;
  hash: string;
  algorithm: Buffer;
}

function signerOf(key: KeyObject): Signer {
  if (key.asymmetricKeyType === 'rsa') return { key, hash: 'sha256', algorithm: seq(oid(Oids.sha256WithRSA), derNull()) };
  if (key.asymmetricKeyType === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    if (curve === 'prime256v1') return { key, hash: 'sha256', algorithm: seq(oid(Oids.ecdsaWithSHA256)) };
    if (curve === 'secp384r1') return { key, hash: 'sha384', algorithm: seq(oid(Oids.ecdsaWithSHA384)) };
  }
  throw caError(`the root CA key must be RSA or ECDSA P-256/P-384, got ${key.asymmetricKeyType ?? 'unknown'}${key.asymmetricKeyDetails?.namedCurve ? ` ${key.asymmetricKeyDetails.namedCurve}` : ''}`);
}

interface CertificateSpec {
  serial: Buffer;
  issuer: Buffer;
  subject: Buffer;
  notBefore: Date;
  notAfter: Date;
  spkiDer: Buffer;
  extensions: Buffer[];
}

function buildCertificate(spec: CertificateSpec, signer: Signer): string {
  const tbs = seq(
    context(0, true, smallInteger(2)), // v3
    unsignedInteger(spec.serial),
    signer.algorithm,
    spec.issuer,
    seq(x509Time(spec.notBefore), x509Time(spec.notAfter)),
    spec.subject,
    spec.spkiDer,
    context(3, true, seq(...spec.extensions)),
  );
  const signature = sign(signer.hash, tbs, signer.key);
  return toPem('CERTIFICATE', seq(tbs, signer.algorithm, bitString(signature)));
}

/** The subject Name (exact bytes) and the subjectKeyIdentifier of a CA certificate, read from its DER. */
function issuerFields(cert: X509Certificate): { subject: Buffer; keyId: Buffer } {
  const top = children(expectTag(readOne(cert.raw), Tag.SEQUENCE, 'Certificate'));
  const tbs = children(expectTag(top[0], Tag.SEQUENCE, 'tbsCertificate'));
  const fields = tbs[0]?.tag === 0xa0 ? tbs.slice(1) : tbs; // version is optional (v1)
  const subject = expectTag(fields[4], Tag.SEQUENCE, 'subject');
  const spki = expectTag(fields[5], Tag.SEQUENCE, 'subjectPublicKeyInfo');
  let keyId: Buffer | undefined;
  const exts = fields.find((f) => f.tag === 0xa3);
  if (exts) {
    for (const ext of children(children(exts)[0] as Tlv)) {
      const parts = children(ext);
      if (decodeOid((parts[0] as Tlv).value) !== ExtOids.subjectKeyIdentifier) continue;
      keyId = Buffer.from(expectTag(readOne((parts[parts.length - 1] as Tlv).value), Tag.OCTET_STRING, 'subjectKeyIdentifier').value);
    }
  }
  return { subject: Buffer.from(subject.raw), keyId: keyId ?? keyIdentifier(spki.raw) };
}

export class CertificateAuthority {
  readonly trustDomain: string;
  readonly rootCertPem: string;
  private readonly rootNotAfter: number;
  private readonly issuer: Buffer;
  private readonly rootKeyId: Buffer;
  private readonly signer: Signer;
  private readonly now: () => number;

  private constructor(trustDomain: string, root: X509Certificate, key: KeyObject, now: () => number) {
    this.trustDomain = trustDomain;
    this.rootCertPem = root.toString();
    this.rootNotAfter = Date.parse(root.validTo);
    const { subject, keyId } = issuerFields(root);
    this.issuer = subject;
    this.rootKeyId = keyId;
    this.signer = signerOf(key);
    this.now = now;
  }

  /**
   * Loads the root from `certFile`/`keyFile`, else from `dir`, else creates one in `dir` and keeps it
   * there: a controller restart must not change the root, or every certificate in the mesh breaks.
   * `dir` is brought to mode 0700 and its files to 0600 first.
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
    await tightenCaDir(dir);
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
      await writePrivate(keyPath, created.keyPem);
      await writePrivate(certPath, created.certPem);
    } catch (err) {
      throw caError(`cannot persist the root CA in ${dir}: ${errorMessage(err)}`, err);
    }
    return CertificateAuthority.fromPem(trustDomain, created.certPem, created.keyPem, now, true);
  }

  /** A self-signed RSA 2048 root naming the trust domain in a URI SAN. */
  private static async createRoot(trustDomain: string, ttlDays: number, now: () => number): Promise<{ certPem: string; keyPem: string }> {
    if (!(ttlDays > 0)) throw caError(`rootTtlDays must be positive, got ${ttlDays}`);
    const keyPem = await generateRsaKeyPem();
    const key = createPrivateKey(keyPem);
    const spkiDer = spkiOf(key);
    const subject = name([
      [ExtOids.organization, 'weft'],
      [ExtOids.commonName, 'weft root CA'],
    ]);
    const t = now();
    const certPem = buildCertificate(
      {
        serial: randomSerial(),
        issuer: subject,
        subject,
        notBefore: new Date(t - CLOCK_SKEW_MS),
        notAfter: new Date(t + ttlDays * 86_400_000),
        spkiDer,
        extensions: [
          extension(ExtOids.basicConstraints, true, seq(derBoolean(true))),
          extension(ExtOids.keyUsage, true, namedBits([KeyUsageBit.keyCertSign, KeyUsageBit.cRLSign])),
          extension(ExtOids.subjectKeyIdentifier, false, octetString(keyIdentifier(spkiDer))),
          extension(ExtOids.subjectAltName, false, generalNames({ uris: [`spiffe://${trustDomain}`] })),
        ],
      },
      signerOf(key),
    );
    return { certPem, keyPem };
  }

  private static fromPem(trustDomain: string, certPem: string, keyPem: string, now: () => number, ownRoot: boolean): CertificateAuthority {
    let cert: X509Certificate;
    let key: KeyObject;
    try {
      cert = new X509Certificate(certPem);
      key = createPrivateKey(keyPem);
    } catch (err) {
      throw caError(`cannot parse the root CA (PEM certificate and private key): ${errorMessage(err)}`, err);
    }
    if (!cert.checkPrivateKey(key)) throw caError('the root CA key does not match its certificate');
    if (!cert.ca) throw caError('the root CA certificate is not a CA (basicConstraints CA:true missing)');
    if (Date.parse(cert.validTo) <= now()) throw caError(`the root CA expired at ${new Date(cert.validTo).toISOString()}`);
    if (ownRoot) {
      // A root weft created names its trust domain; reusing it for another is a misconfiguration.
      const td = uriSansOf(cert).find((u) => u.startsWith('spiffe://'));
      if (td !== undefined && td !== `spiffe://${trustDomain}`) {
        throw caError(`the root CA in the CA directory belongs to ${td}, not spiffe://${trustDomain}`);
      }
    }
    try {
      return new CertificateAuthority(trustDomain, cert, key, now);
    } catch (err) {
      if (err instanceof WeftError) throw err;
      throw caError(`cannot use the root CA: ${errorMessage(err)}`, err);
    }
  }

  /**
   * Signs a workload CSR after every check of `checkCsr` (size, key, signature, exactly one SAN that
   * is a workload SPIFFE ID) and that the identity is of this trust domain. Returns the identity and
   * the chain, leaf first, root last.
   */
  async signWorkloadCsr(csrPem: string, ttlSeconds: number): Promise<{ identity: SpiffeId; chain: string[] }> {
    return this.signCheckedCsr(checkCsr(csrPem), ttlSeconds);
  }

  /** signWorkloadCsr for a CSR the caller already ran through `checkCsr` (the gRPC server does, to authorize it). */
  signCheckedCsr(csr: CheckedCsr, ttlSeconds: number): { identity: SpiffeId; chain: string[] } {
    const { identity } = csr;
    if (identity.trustDomain !== this.trustDomain) {
      throw caError(`CSR refused: ${formatSpiffeId(identity)} is not in trust domain ${this.trustDomain}`);
    }
    const leaf = this.issue(csr.spkiDer, csr.keyType, { uris: [formatSpiffeId(identity)] }, { serverAuth: true, clientAuth: true }, ttlSeconds);
    return { identity, chain: [leaf, this.rootCertPem] };
  }

  /** The node agent's client credential toward the controller: URI SAN spiffe://<td>/weft/node/<node>, an ECDSA P-256 key. */
  async issueNodeCredential(node: string, ttlSeconds: number): Promise<IssuedCredential> {
    return this.issueWithNewKey({ uris: [this.nodeUri(node)] }, { serverAuth: false, clientAuth: true }, ttlSeconds);
  }

  /** A node agent's serving certificate for its Observer API (mutual TLS on 4244): the node's URI SAN, serverAuth only. */
  async issueObserverServingCredential(node: string, ttlSeconds: number): Promise<IssuedCredential> {
    return this.issueWithNewKey({ uris: [this.nodeUri(node)] }, { serverAuth: true, clientAuth: false }, ttlSeconds);
  }

  /**
   * Signs a node agent's own key for its Observer API (the CSR way of issueObserverServingCredential,
   * for agents that hold no files from this CA: on Kubernetes they ask over gRPC). The CSR must ask for
   * exactly spiffe://<td>/weft/node/<node>; the certificate is serverAuth only, so it can never act as
   * the node's client credential toward the controller. Whether the caller is that node is the gRPC
   * server's check. Returns the chain, leaf first, root last.
   */
  signObserverServingCsr(csr: CheckedCsrRequest, node: string, ttlSeconds: number): string[] {
    const uri = this.nodeUri(node);
    if (csr.uri !== uri) throw caError(`CSR refused: it asks for ${csr.uri}, not the Observer identity ${uri} of node "${node}"`);
    const leaf = this.issue(csr.spkiDer, csr.keyType, { uris: [uri] }, { serverAuth: true, clientAuth: false }, ttlSeconds);
    return [leaf, this.rootCertPem];
  }

  /** The relay's client credential toward the nodes' Observer APIs: URI SAN spiffe://<td>/weft/relay, clientAuth only. */
  async issueRelayCredential(ttlSeconds: number): Promise<IssuedCredential> {
    return this.issueWithNewKey({ uris: [`spiffe://${this.trustDomain}/weft/relay`] }, { serverAuth: false, clientAuth: true }, ttlSeconds);
  }

  /** The controller's own serving certificate (its gRPC endpoint), for the given names and addresses. */
  async issueServingCert(options: ServingCertOptions): Promise<IssuedCredential> {
    if (options.dnsNames.length === 0 && options.ips.length === 0) throw caError('a serving certificate needs at least one DNS name or IP');
    return this.issueWithNewKey({ dns: options.dnsNames, ips: options.ips }, { serverAuth: true, clientAuth: false }, options.ttlSeconds);
  }

  /** spiffe://<td>/weft/node/<node>; a node name that cannot make one is the CA's error. */
  private nodeUri(node: string): string {
    try {
      return nodeSpiffeUri(this.trustDomain, node);
    } catch (err) {
      throw caError(errorMessage(err), err);
    }
  }

  private async issueWithNewKey(names: { uris?: string[]; dns?: string[]; ips?: string[] }, usage: Usage, ttlSeconds: number): Promise<IssuedCredential> {
    const keyPem = await generateEcKeyPem();
    const certPem = this.issue(spkiOf(createPrivateKey(keyPem)), 'ec', names, usage, ttlSeconds);
    return { certPem, keyPem, serial: new X509Certificate(certPem).serialNumber };
  }

  private issue(spkiDer: Buffer, keyType: 'rsa' | 'ec', names: { uris?: string[]; dns?: string[]; ips?: string[] }, usage: Usage, ttlSeconds: number): string {
    if (!Number.isFinite(ttlSeconds) || ttlSeconds <= 0) throw caError(`certificate lifetime must be a positive number of seconds, got ${ttlSeconds}`);
    // Every key that gets a certificate passes the same test as a CSR's, including the CA's own.
    const problem = publicKeyProblem(createPublicKey({ key: spkiDer, format: 'der', type: 'spki' }));
    if (problem !== undefined) throw caError(`refusing to certify a key: ${problem}`);
    const t = this.now();
    // A leaf never outlives the root that vouches for it.
    const notAfter = Math.min(t + ttlSeconds * 1000, this.rootNotAfter);
    const eku = [...(usage.serverAuth ? [ExtOids.serverAuth] : []), ...(usage.clientAuth ? [ExtOids.clientAuth] : [])];
    // keyEncipherment only means something for RSA key transport; an EC key only signs.
    const ku = keyType === 'rsa' ? [KeyUsageBit.digitalSignature, KeyUsageBit.keyEncipherment] : [KeyUsageBit.digitalSignature];
    return buildCertificate(
      {
        serial: randomSerial(),
        issuer: this.issuer,
        // Empty subject, as an X.509-SVID has; RFC 5280 then wants the SAN extension marked critical.
        subject: seq(),
        notBefore: new Date(t - CLOCK_SKEW_MS),
        notAfter: new Date(notAfter),
        spkiDer,
        extensions: [
          extension(ExtOids.basicConstraints, true, seq()),
          extension(ExtOids.keyUsage, true, namedBits(ku)),
          extension(ExtOids.extKeyUsage, false, seq(...eku.map(oid))),
          extension(ExtOids.subjectKeyIdentifier, false, octetString(keyIdentifier(spkiDer))),
          extension(ExtOids.authorityKeyIdentifier, false, seq(context(0, false, this.rootKeyId))),
          extension(ExtOids.subjectAltName, true, generalNames(names)),
        ],
      },
      this.signer,
    );
  }
}
