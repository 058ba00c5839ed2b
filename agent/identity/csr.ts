// Keys and certificate signing requests for workload identities.
//
// node-forge builds the CSR (Node has no API for it) but only does RSA, and generating RSA keys in
// JavaScript is slow, so keys come from Node's native generateKeyPair and are handed to forge as PEM.
import { generateKeyPair } from 'node:crypto';
import { promisify } from 'node:util';
import forge from 'node-forge';
import { formatSpiffeId, validateSpiffeId, type SpiffeId } from './spiffe.js';

const generateKeyPairAsync = promisify(generateKeyPair);

/** Subject-alternative-name type numbers of RFC 5280 GeneralName, as node-forge spells them. */
export const SanType = { DNS: 2, URI: 6, IP: 7 } as const;

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

/** The forge key pair of a PEM private key (forge derives the public half from n and e). */
export function forgeKeyPair(keyPem: string): { privateKey: forge.pki.rsa.PrivateKey; publicKey: forge.pki.rsa.PublicKey } {
  const privateKey = forge.pki.privateKeyFromPem(keyPem) as forge.pki.rsa.PrivateKey;
  return { privateKey, publicKey: forge.pki.setRsaPublicKey(privateKey.n, privateKey.e) };
}

/**
 * A new key and a CSR asking for `id`: an empty subject and one URI SAN in an extensionRequest, as
 * an X.509-SVID has; signed with SHA-256.
 */
export async function createKeyAndCsr(id: SpiffeId): Promise<{ keyPem: string; csrPem: string }> {
  const uri = formatSpiffeId(validateSpiffeId(id));
  const keyPem = await generateRsaKeyPem();
  const { privateKey, publicKey } = forgeKeyPair(keyPem);
  const csr = forge.pki.createCertificationRequest();
  csr.publicKey = publicKey;
  csr.setAttributes([{ name: 'extensionRequest', extensions: [{ name: 'subjectAltName', altNames: [{ type: SanType.URI, value: uri }] }] }]);
  csr.sign(privateKey, forge.md.sha256.create());
  return { keyPem, csrPem: forge.pki.certificationRequestToPem(csr) };
}
