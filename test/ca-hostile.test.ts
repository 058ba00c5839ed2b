// The CA against hostile CSRs and a loose state directory: keys that would make verification
// expensive are refused before any signature check (and quickly), SANs beyond the one URI are
// refused, and the CA directory and key files are brought back to owner-only modes on every start.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate, createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CA_DIR_MODE, CA_FILE_MODE, CertificateAuthority, ROOT_CERT_FILE, ROOT_KEY_FILE } from '../agent/controller/ca.js';
import { MAX_CSR_PEM_BYTES, checkCsr } from '../agent/controller/csr.js';
import { DEFAULT_NODE_CREDENTIAL_TTL_SECONDS, writeNodeCredentials } from '../agent/controller/index.js';
import { buildCsr, createKeyAndCsr } from '../agent/identity/csr.js';
import { bitString, context, derNull, octetString, oid, seq, set, smallInteger, toPem, unsignedInteger } from '../agent/identity/der.js';
import { WeftError } from '../agent/errors.js';

const TD = 'cluster.local';
const URI = `spiffe://${TD}/ns/shop/sa/api`;
/** "Well under a second": the bound on one refusal; the unguarded verification took seconds. */
const QUICK_MS = 250;

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'weft-ca-hostile-'));
  dirs.push(d);
  return d;
}
test.after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
const caPromise = CertificateAuthority.loadOrCreate({ dir: tempDir(), trustDomain: TD });

const uriName = (u: string): Buffer => context(6, false, Buffer.from(u, 'ascii'));
const dnsName = (d: string): Buffer => context(2, false, Buffer.from(d, 'ascii'));
const sanRequest = (names: Buffer[]): Buffer => seq(oid('1.2.840.113549.1.9.14'), set(seq(seq(oid('2.5.29.17'), octetString(seq(...names))))));

const RSA_SHA256 = seq(oid('1.2.840.113549.1.1.11'), derNull());
const ECDSA_SHA256 = seq(oid('1.2.840.10045.4.3.2'));

/** A CSR assembled by hand: any key, any attributes, signed by `signer` (or carrying junk bytes). */
function rawCsr(o: { spki: Buffer; attributes: Buffer[]; algorithm: Buffer; signer?: { key: KeyObject; hash: string }; junkSignatureBytes?: number }): string {
  const info = seq(smallInteger(0), seq(), o.spki, context(0, true, ...o.attributes));
  const signature = o.signer ? sign(o.signer.hash, info, o.signer.key) : randomBytes(o.junkSignatureBytes ?? 256);
  return toPem('CERTIFICATE REQUEST', seq(info, o.algorithm, bitString(signature)));
}

/** An RSA SubjectPublicKeyInfo with a modulus and an exponent of the given sizes (nobody holds the key). */
function fakeRsaSpki(modulusBits: number, exponent: Buffer): Buffer {
  const n = randomBytes(modulusBits / 8);
  n[0] = (n[0] as number) | 0x80;
  n[n.length - 1] = (n[n.length - 1] as number) | 1;
  return seq(seq(oid('1.2.840.113549.1.1.1'), derNull()), bitString(seq(unsignedInteger(n), unsignedInteger(exponent))));
}

function bigOddNumber(bits: number): Buffer {
  const e = randomBytes(bits / 8);
  e[0] = (e[0] as number) | 0x80;
  e[e.length - 1] = (e[e.length - 1] as number) | 1;
  return e;
}

const spkiOf = (key: KeyObject): Buffer => createPublicKey(key).export({ type: 'spki', format: 'der' });

/** Runs one CA refusal, returns its message and how long the single call took. */
async function timedRefusal(csrPem: string): Promise<{ message: string; ms: number }> {
  const ca = await caPromise;
  const t = performance.now();
  try {
    await ca.signWorkloadCsr(csrPem, 600);
  } catch (err) {
    const ms = performance.now() - t;
    assert.ok(err instanceof WeftError, `expected a WeftError, got ${String(err)}`);
    assert.equal(err.code, 'WEFT_ERR_CA');
    return { message: err.message, ms };
  }
  assert.fail('expected the CA to refuse');
}

test('oversized RSA keys are refused before any signature check, quickly', async () => {
  // 8192 bits: under the size cap, refused by the modulus bound.
  const r8192 = rawCsr({ spki: fakeRsaSpki(8192, Buffer.from([1, 0, 1])), attributes: [sanRequest([uriName(URI)])], algorithm: RSA_SHA256, junkSignatureBytes: 1024 });
  assert.ok(r8192.length <= MAX_CSR_PEM_BYTES, `the 8192-bit CSR (${r8192.length} bytes) reaches the key check`);
  const a = await timedRefusal(r8192);
  assert.match(a.message, /CSR refused: the RSA modulus has 8192 bits; 2048 to 4096 are accepted/);
  assert.ok(a.ms < QUICK_MS, `refused in ${a.ms.toFixed(1)} ms`);

  // 16384 bits: the PEM alone is over the cap; nothing in it is parsed.
  const r16384 = rawCsr({ spki: fakeRsaSpki(16384, Buffer.from([1, 0, 1])), attributes: [sanRequest([uriName(URI)])], algorithm: RSA_SHA256, junkSignatureBytes: 2048 });
  const b = await timedRefusal(r16384);
  assert.match(b.message, new RegExp(`CSR refused: it is ${r16384.length} bytes, more than the ${MAX_CSR_PEM_BYTES} accepted`));
  assert.ok(b.ms < QUICK_MS, `refused in ${b.ms.toFixed(1)} ms`);
});

test('a huge public exponent is refused before the signature check, quickly', async () => {
  // A 12288-bit exponent on a 4096-bit modulus: verifying this in JavaScript took over a second.
  const csr = rawCsr({ spki: fakeRsaSpki(4096, bigOddNumber(12288)), attributes: [sanRequest([uriName(URI)])], algorithm: RSA_SHA256, junkSignatureBytes: 512 });
  assert.ok(csr.length <= MAX_CSR_PEM_BYTES);
  const r = await timedRefusal(csr);
  assert.match(r.message, /CSR refused: the RSA public exponent must be 65537/);
  assert.ok(r.ms < QUICK_MS, `refused in ${r.ms.toFixed(1)} ms`);
});

test('e=3, a short modulus, another curve, Ed25519 and SHA-1 are refused even with valid signatures', async () => {
  const e3 = generateKeyPairSync('rsa', { modulusLength: 2048, publicExponent: 3 }).privateKey;
  const r = await timedRefusal(buildCsr(e3.export({ type: 'pkcs8', format: 'pem' }) as string, [URI]));
  assert.match(r.message, /public exponent must be 65537/);
  assert.ok(r.ms < QUICK_MS, `refused in ${r.ms.toFixed(1)} ms`);

  const short = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey;
  assert.match((await timedRefusal(buildCsr(short.export({ type: 'pkcs8', format: 'pem' }) as string, [URI]))).message, /modulus has 1024 bits/);

  const p384 = generateKeyPairSync('ec', { namedCurve: 'secp384r1' }).privateKey;
  const p384Csr = rawCsr({ spki: spkiOf(p384), attributes: [sanRequest([uriName(URI)])], algorithm: ECDSA_SHA256, signer: { key: p384, hash: 'sha256' } });
  assert.match((await timedRefusal(p384Csr)).message, /curve secp384r1; only P-256/);

  const ed = generateKeyPairSync('ed25519').privateKey;
  const edCsr = rawCsr({ spki: spkiOf(ed), attributes: [sanRequest([uriName(URI)])], algorithm: seq(oid('1.3.101.112')), junkSignatureBytes: 64 });
  assert.match((await timedRefusal(edCsr)).message, /key type ed25519 is not accepted/);

  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
  const sha1 = rawCsr({ spki: spkiOf(rsa), attributes: [sanRequest([uriName(URI)])], algorithm: seq(oid('1.2.840.113549.1.1.5'), derNull()), signer: { key: rsa, hash: 'sha1' } });
  assert.match((await timedRefusal(sha1)).message, /signature algorithm 1\.2\.840\.113549\.1\.1\.5 is not accepted/);

  // An ECDSA signature algorithm over an RSA key: the pair must agree.
  const mismatch = rawCsr({ spki: spkiOf(rsa), attributes: [sanRequest([uriName(URI)])], algorithm: ECDSA_SHA256, signer: { key: rsa, hash: 'sha256' } });
  assert.match((await timedRefusal(mismatch)).message, /does not fit its RSA key/);
});

test('a CSR must carry exactly one SAN, a URI: URI + DNS, two URIs, two requests are refused', async () => {
  const key = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey;
  const csr = (attributes: Buffer[]): string => rawCsr({ spki: spkiOf(key), attributes, algorithm: ECDSA_SHA256, signer: { key, hash: 'sha256' } });

  assert.match((await timedRefusal(csr([sanRequest([uriName(URI), dnsName('api.shop.svc')])]))).message, /no SAN besides its URI SAN, found DNS name/);
  assert.match((await timedRefusal(csr([sanRequest([dnsName('api.shop.svc'), uriName(URI)])]))).message, /no SAN besides its URI SAN, found DNS name/);
  assert.match((await timedRefusal(csr([sanRequest([uriName(URI), uriName(`spiffe://${TD}/ns/kube-system/sa/admin`)])]))).message, /exactly one URI SAN, found 2/);
  // Each extension request alone looks fine; two of them must not let the second slip past.
  assert.match(
    (await timedRefusal(csr([sanRequest([uriName(URI)]), sanRequest([uriName(`spiffe://${TD}/ns/kube-system/sa/admin`)])]))).message,
    /more than one extensionRequest attribute/,
  );
  assert.match((await timedRefusal(csr([sanRequest([context(7, false, Buffer.from([10, 0, 0, 1])), uriName(URI)])]))).message, /found IP address/);
  // A valid SAN set with a broken signature is still refused.
  const other = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey;
  const forged = rawCsr({ spki: spkiOf(key), attributes: [sanRequest([uriName(URI)])], algorithm: ECDSA_SHA256, signer: { key: other, hash: 'sha256' } });
  assert.match((await timedRefusal(forged)).message, /signature does not verify/);
});

test('extensions a CSR asks for besides its SAN are not copied: asking for CA:true still yields a leaf', async () => {
  const ca = await caPromise;
  const key = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey;
  const wantsCa = seq(
    oid('1.2.840.113549.1.9.14'),
    set(
      seq(
        seq(oid('2.5.29.19'), Buffer.from([0x01, 0x01, 0xff]), octetString(seq(Buffer.from([0x01, 0x01, 0xff])))),
        seq(oid('2.5.29.15'), octetString(Buffer.from([0x03, 0x02, 0x01, 0x06]))),
        seq(oid('2.5.29.17'), octetString(seq(uriName(URI)))),
      ),
    ),
  );
  const csr = rawCsr({ spki: spkiOf(key), attributes: [wantsCa], algorithm: ECDSA_SHA256, signer: { key, hash: 'sha256' } });
  const leaf = new X509Certificate((await ca.signWorkloadCsr(csr, 600)).chain[0] as string);
  assert.equal(leaf.ca, false);
  assert.equal(leaf.subjectAltName, `URI:${URI}`);
  assert.deepEqual([...(leaf.keyUsage ?? [])].sort(), ['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']);
});

test('junk is refused with a reason, never a crash: trailing bytes, truncation, two PEM blocks, not PEM', async () => {
  const { csrPem } = await createKeyAndCsr({ trustDomain: TD, namespace: 'shop', serviceAccount: 'api' });
  assert.deepEqual(checkCsr(csrPem).identity, { trustDomain: TD, namespace: 'shop', serviceAccount: 'api' });
  const der = Buffer.from(csrPem.replace(/-----[^-]+-----/g, '').replace(/\s/g, ''), 'base64');
  const cases: Array<[string, RegExp]> = [
    [toPem('CERTIFICATE REQUEST', Buffer.concat([der, Buffer.from([0])])), /trailing byte/],
    [toPem('CERTIFICATE REQUEST', der.subarray(0, der.length - 10)), /runs past the end|truncated/],
    [csrPem + csrPem, /not one PEM CERTIFICATE REQUEST block/],
    [csrPem.replace('CERTIFICATE REQUEST', 'CERTIFICATE').replace('END CERTIFICATE REQUEST', 'END CERTIFICATE'), /not one PEM/],
    ['hello', /not one PEM/],
    [toPem('CERTIFICATE REQUEST', Buffer.from([0x30, 0x80, 0, 0])), /unsupported length encoding/],
  ];
  for (const [pem, why] of cases) {
    const { message, ms } = await timedRefusal(pem);
    assert.match(message, why);
    assert.ok(ms < QUICK_MS);
  }
});

test('ECDSA P-256 and RSA 2048 CSRs are signed; the leaf carries the requested key', async () => {
  const ca = await caPromise;
  for (const keyType of ['ec', 'rsa'] as const) {
    const { keyPem, csrPem } = await createKeyAndCsr({ trustDomain: TD, namespace: 'shop', serviceAccount: 'api' }, { keyType });
    const { chain } = await ca.signWorkloadCsr(csrPem, 600);
    const leaf = new X509Certificate(chain[0] as string);
    assert.ok(leaf.checkPrivateKey(createPrivateKey(keyPem)));
    assert.equal(leaf.publicKey.asymmetricKeyType, keyType);
    assert.ok(leaf.verify(new X509Certificate(ca.rootCertPem).publicKey));
  }
});

test('the CA directory is 0700 and its files 0600 on every start, also when they were looser', async () => {
  const parent = tempDir();
  const dir = join(parent, 'ca');
  // A directory that already exists with a loose mode: the first start must tighten it too.
  mkdirSync(dir, { mode: 0o755 });
  chmodSync(dir, 0o755);
  const first = await CertificateAuthority.loadOrCreate({ dir, trustDomain: TD });
  const mode = (p: string): number => statSync(p).mode & 0o777;
  assert.equal(mode(dir), CA_DIR_MODE);
  assert.equal(mode(join(dir, ROOT_KEY_FILE)), CA_FILE_MODE);
  assert.equal(mode(join(dir, ROOT_CERT_FILE)), CA_FILE_MODE);

  // Loosened afterwards (a restore, a cp without -p): the next start puts them back.
  chmodSync(dir, 0o777);
  chmodSync(join(dir, ROOT_KEY_FILE), 0o644);
  chmodSync(join(dir, ROOT_CERT_FILE), 0o666);
  const again = await CertificateAuthority.loadOrCreate({ dir, trustDomain: TD });
  assert.equal(again.rootCertPem, first.rootCertPem);
  assert.equal(mode(dir), 0o700);
  assert.equal(mode(join(dir, ROOT_KEY_FILE)), 0o600);
  assert.equal(mode(join(dir, ROOT_CERT_FILE)), 0o600);

  // The node-credentials command loads the same CA directory: it tightens it as well.
  chmodSync(join(dir, ROOT_KEY_FILE), 0o640);
  await writeNodeCredentials({ stateDir: dir, node: 'node-1', outDir: join(parent, 'out') });
  assert.equal(mode(join(dir, ROOT_KEY_FILE)), 0o600);
  assert.equal(mode(join(parent, 'out', 'node-key.pem')), 0o600);
});

test('node credentials live 30 days by default, and the lifetime is configurable', async () => {
  assert.equal(DEFAULT_NODE_CREDENTIAL_TTL_SECONDS, 30 * 86_400);
  const state = tempDir();
  const before = Date.now();
  const files = await writeNodeCredentials({ stateDir: state, node: 'node-1', outDir: join(state, 'n1') });
  const cert = new X509Certificate((await import('node:fs')).readFileSync(files.certFile));
  const lifetime = Date.parse(cert.validTo) - before;
  assert.ok(Math.abs(lifetime - 30 * 86_400_000) < 5_000, `lifetime ${lifetime} ms`);
  assert.equal(files.serial, cert.serialNumber);
  const short = await writeNodeCredentials({ stateDir: state, node: 'node-1', outDir: join(state, 'n1s'), ttlSeconds: 3600 });
  assert.ok(Math.abs(Date.parse(short.notAfter) - (before + 3_600_000)) < 5_000);
});
