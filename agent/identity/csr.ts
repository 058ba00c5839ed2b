// Keys and certificate signing requests for workload identities.
//
// Workload keys are ECDSA P-256, as ztunnel's: made by Node's native generateKeyPair (an RSA key
// takes tens of milliseconds, a P-256 key a fraction of one) and signed natively. The CSR itself is
// a few DER elements written by der.ts: Node has no CSR API, and node-forge builds only RSA ones.
// RSA 2048 keys stay available (roots, tests, `keyType: 'rsa'`).
import { createPrivateKey, createPublicKey, generateKeyPair, sign } from 'node:crypto';
import { promisify } from 'node:util';
import forge from 'node-forge';
import { bitString, context, oid, octetString, seq, set, smallInteger, toPem } from './der.js';
import { formatSpiffeId, validateSpiffeId, type SpiffeId } from './spiffe.js';

const generateKeyPairAsync = promisify(generateKeyPair);

/** Subject-alternative-name type numbers of RFC 5280 GeneralName, as node-forge spells them. */
export const SanType = { DNS: 2, URI: 6, IP: 7 } as const;

export type WorkloadKeyType = 'ec' | 'rsa';

/** A fresh RSA 2048 private key, PKCS#8 PEM (what both Node's tls and node-forge read). */
export async function generateRsaKeyPem(): Promise<string> {
  const { privateKey } = await generateKeyPairAsync('rsa', {
    modulusLength: 2048,
    publicExponent: 0x10001,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  return privateKey;
}

/** A fresh ECDSA P-256 private key, PKCS#8 PEM. */
export async function generateEcKeyPem(): Promise<string> {
  const { privateKey } = await generateKeyPairAsync('ec', {
    namedCurve: 'prime256v1',
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  return privateKey;
}

/** The forge key pair of a PEM RSA private key (forge derives the public half from n and e). */
export function forgeKeyPair(keyPem: string): { privateKey: forge.pki.rsa.PrivateKey; publicKey: forge.pki.rsa.PublicKey } {
  const privateKey = forge.pki.privateKeyFromPem(keyPem) as forge.pki.rsa.PrivateKey;
  return { privateKey, publicKey: forge.pki.setRsaPublicKey(privateKey.n, privateKey.e) };
}

const EXTENSION_REQUEST = '1.2.840.113549.1.9.14';
const SUBJECT_ALT_NAME = '2.5.29.17';

/**
 * A PKCS#10 CSR for `keyPem` asking for exactly `uris` (URI SANs): an empty subject and one
 * subjectAltName in an extensionRequest, as an X.509-SVID request has; signed with SHA-256.
 */
export function buildCsr(keyPem: string, uris: string[]): string {
  const key = createPrivateKey(keyPem);
  const spki = createPublicKey(key).export({ type: 'spki', format: 'der' });
  const sans = seq(...uris.map((u) => context(6, false, Buffer.from(u, 'ascii'))));
  const attributes = uris.length === 0 ? context(0, true) : context(0, true, seq(oid(EXTENSION_REQUEST), set(seq(seq(oid(SUBJECT_ALT_NAME), octetString(sans))))));
  const info = seq(smallInteger(0), seq(), spki, attributes);
  const algorithm = key.asymmetricKeyType === 'ec' ? seq(oid('1.2.840.10045.4.3.2')) : seq(oid('1.2.840.113549.1.1.11'), Buffer.from([0x05, 0]));
  // ECDSA signatures come out DER-encoded (Node's default), as X.509 wants them.
  const signature = sign('sha256', info, key);
  return toPem('CERTIFICATE REQUEST', seq(info, algorithm, bitString(signature)));
}

/** A new key (ECDSA P-256 unless asked otherwise) and a CSR asking for `id`. */
export async function createKeyAndCsr(id: SpiffeId, options: { keyType?: WorkloadKeyType } = {}): Promise<{ keyPem: string; csrPem: string }> {
  const uri = formatSpiffeId(validateSpiffeId(id));
  const keyPem = options.keyType === 'rsa' ? await generateRsaKeyPem() : await generateEcKeyPem();
  return { keyPem, csrPem: buildCsr(keyPem, [uri]) };
}
