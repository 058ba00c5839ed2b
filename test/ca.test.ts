// The controller's CA: a persistent root, CSR checks, and what the issued certificates contain.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import forge from 'node-forge';
import { CertificateAuthority, ROOT_CERT_FILE, ROOT_KEY_FILE } from '../agent/controller/ca.js';
import { SanType, createKeyAndCsr, forgeKeyPair, generateRsaKeyPem } from '../agent/identity/csr.js';
import { spiffeIdOfCert, uriSansOf } from '../agent/identity/spiffe.js';
import { WeftError } from '../agent/errors.js';
import { Tag, children, decodeOid, readOne, type Tlv } from '../agent/identity/der.js';

const TD = 'cluster.local';
const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'weft-ca-'));
  dirs.push(d);
  return d;
}
test.after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** A CSR built by hand, for the shapes createKeyAndCsr never produces. */
async function customCsr(uris: string[], options: { signWithOtherKey?: boolean } = {}): Promise<string> {
  const { privateKey, publicKey } = forgeKeyPair(await generateRsaKeyPem());
  const csr = forge.pki.createCertificationRequest();
  csr.publicKey = publicKey;
  if (uris.length > 0) {
    csr.setAttributes([{ name: 'extensionRequest', extensions: [{ name: 'subjectAltName', altNames: uris.map((value) => ({ type: SanType.URI, value })) }] }]);
  }
  // Signing with a key other than the one in the CSR yields a signature that does not verify.
  const signer = options.signWithOtherKey ? forgeKeyPair(await generateRsaKeyPem()).privateKey : privateKey;
  csr.sign(signer, forge.md.sha256.create());
  return forge.pki.certificationRequestToPem(csr);
}

/** The keyUsage extension of a certificate, read from its DER (node-forge cannot parse EC leaves). */
function keyUsageOf(pem: string): { bits: Set<number>; critical: boolean } {
  const tbs = children(children(readOne(new X509Certificate(pem).raw))[0] as Tlv);
  const exts = children(children(tbs.find((t) => t.tag === 0xa3) as Tlv)[0] as Tlv);
  for (const ext of exts) {
    const parts = children(ext);
    if (decodeOid((parts[0] as Tlv).value) !== '2.5.29.15') continue;
    const critical = parts.length === 3 && (parts[1] as Tlv).tag === Tag.BOOLEAN && (parts[1] as Tlv).value[0] === 0xff;
    const bitString = readOne((parts[parts.length - 1] as Tlv).value).value;
    const bits = new Set<number>();
    for (let i = 0; i < (bitString.length - 1) * 8; i++) if (((bitString[1 + (i >> 3)] as number) >> (7 - (i & 7))) & 1) bits.add(i);
    return { bits, critical };
  }
  assert.fail('no keyUsage extension');
}

async function refusal(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof WeftError, `expected a WeftError, got ${String(err)}`);
    assert.equal(err.code, 'WEFT_ERR_CA');
    return err.message;
  }
  assert.fail('expected the CA to refuse');
}

const dir = tempDir();
const caPromise = CertificateAuthority.loadOrCreate({ dir, trustDomain: TD });

test('the root is created once, persisted with a private key file, and reloaded unchanged', async () => {
  const ca = await caPromise;
  assert.equal(ca.trustDomain, TD);
  assert.equal(statSync(join(dir, ROOT_KEY_FILE)).mode & 0o777, 0o600);
  assert.equal(statSync(join(dir, ROOT_CERT_FILE)).mode & 0o777, 0o600);
  const root = new X509Certificate(ca.rootCertPem);
  assert.equal(root.ca, true);
  assert.match(root.subject, /O=weft/);
  assert.match(root.subject, /CN=weft root CA/);
  assert.equal(root.subject, root.issuer);
  assert.ok(root.verify(root.publicKey), 'self-signed');
  assert.deepEqual(uriSansOf(root), [`spiffe://${TD}`]);
  const ku = forge.pki.certificateFromPem(ca.rootCertPem).getExtension('keyUsage') as { keyCertSign?: boolean; critical?: boolean };
  assert.deepEqual([ku.keyCertSign, ku.critical], [true, true]);

  const again = await CertificateAuthority.loadOrCreate({ dir, trustDomain: TD });
  assert.equal(again.rootCertPem, ca.rootCertPem);
  // And the reloaded CA signs with the same key: its leaves verify against the first root.
  const { csrPem } = await createKeyAndCsr({ trustDomain: TD, namespace: 'ns', serviceAccount: 'sa' });
  const { chain } = await again.signWorkloadCsr(csrPem, 600);
  assert.ok(new X509Certificate(chain[0] as string).verify(root.publicKey));
});

test('a root made for one trust domain is not silently reused for another', async () => {
  await caPromise;
  const msg = await refusal(CertificateAuthority.loadOrCreate({ dir, trustDomain: 'other.local' }));
  assert.match(msg, /belongs to spiffe:\/\/cluster\.local/);
});

test('half a root in the directory is an error, never replaced', async () => {
  const d = tempDir();
  const ca = await CertificateAuthority.loadOrCreate({ dir: d, trustDomain: TD });
  rmSync(join(d, ROOT_KEY_FILE));
  assert.match(await refusal(CertificateAuthority.loadOrCreate({ dir: d, trustDomain: TD })), /without root-key\.pem/);
  assert.ok(ca.rootCertPem.length > 0);
});

test('an operator-provided root is loaded from files; a key that does not match is refused', async () => {
  const ca = await caPromise;
  const viaFiles = await CertificateAuthority.loadOrCreate({ dir: tempDir(), trustDomain: TD, certFile: join(dir, ROOT_CERT_FILE), keyFile: join(dir, ROOT_KEY_FILE) });
  assert.equal(viaFiles.rootCertPem, ca.rootCertPem);

  const other = tempDir();
  await CertificateAuthority.loadOrCreate({ dir: other, trustDomain: TD });
  const msg = await refusal(CertificateAuthority.loadOrCreate({ dir: tempDir(), trustDomain: TD, certFile: join(dir, ROOT_CERT_FILE), keyFile: join(other, ROOT_KEY_FILE) }));
  assert.match(msg, /does not match/);

  const notCa = join(tempDir(), 'leaf.pem');
  const { csrPem } = await createKeyAndCsr({ trustDomain: TD, namespace: 'ns', serviceAccount: 'sa' });
  writeFileSync(notCa, (await ca.signWorkloadCsr(csrPem, 60)).chain[0] as string);
  assert.match(await refusal(CertificateAuthority.loadOrCreate({ dir: tempDir(), trustDomain: TD, certFile: notCa, keyFile: join(dir, ROOT_KEY_FILE) })), /does not match|not a CA/);
});

test('a workload leaf carries the URI SAN, serverAuth+clientAuth, a random serial and skewed validity', async () => {
  const ca = await caPromise;
  const id = { trustDomain: TD, namespace: 'shop', serviceAccount: 'api' };
  const { keyPem, csrPem } = await createKeyAndCsr(id);
  const before = Date.now();
  const { identity, chain } = await ca.signWorkloadCsr(csrPem, 3600);
  assert.deepEqual(identity, id);
  assert.equal(chain.length, 2);
  assert.equal(chain[1], ca.rootCertPem);
  const leaf = new X509Certificate(chain[0] as string);
  const root = new X509Certificate(chain[1] as string);

  assert.deepEqual(spiffeIdOfCert(leaf), id);
  assert.equal(leaf.subjectAltName, 'URI:spiffe://cluster.local/ns/shop/sa/api');
  assert.ok(!leaf.subject, 'empty subject: no CN needed');
  assert.equal(leaf.ca, false);
  assert.deepEqual([...(leaf.keyUsage ?? [])].sort(), ['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']);
  assert.ok(leaf.checkPrivateKey(createPrivateKey(keyPem)));

  // Chain: issued by the root and signed by its key.
  assert.ok(leaf.checkIssued(root));
  assert.ok(leaf.verify(root.publicKey));

  const notBefore = Date.parse(leaf.validFrom);
  const notAfter = Date.parse(leaf.validTo);
  assert.ok(notBefore <= before - 59_000 && notBefore >= before - 62_000, `notBefore ${leaf.validFrom} is about a minute back`);
  assert.ok(Math.abs(notAfter - (before + 3_600_000)) < 3_000, `notAfter ${leaf.validTo} is ttl ahead`);

  const serial = BigInt(`0x${leaf.serialNumber}`);
  assert.ok(serial >= 2n ** 127n && serial < 2n ** 128n, '128-bit positive serial');
  const second = new X509Certificate((await ca.signWorkloadCsr(csrPem, 3600)).chain[0] as string);
  assert.notEqual(second.serialNumber, leaf.serialNumber);

  // Key usage, critical: digitalSignature alone for the (default) ECDSA key, which cannot encipher.
  assert.equal(leaf.publicKey.asymmetricKeyType, 'ec');
  assert.deepEqual(keyUsageOf(chain[0] as string), { bits: new Set([0]), critical: true });

  // An RSA leaf also gets keyEncipherment; node-forge (which weft used to sign with) reads it.
  const rsa = await createKeyAndCsr(id, { keyType: 'rsa' });
  const rsaLeaf = (await ca.signWorkloadCsr(rsa.csrPem, 3600)).chain[0] as string;
  assert.deepEqual(keyUsageOf(rsaLeaf), { bits: new Set([0, 2]), critical: true });
  const fleaf = forge.pki.certificateFromPem(rsaLeaf);
  const ku = fleaf.getExtension('keyUsage') as { digitalSignature?: boolean; keyEncipherment?: boolean; keyCertSign?: boolean; critical?: boolean };
  assert.deepEqual([ku.digitalSignature, ku.keyEncipherment, ku.keyCertSign ?? false, ku.critical], [true, true, false, true]);
});

test('CSRs are refused: foreign trust domain, no URI SAN, two URI SANs, bad signature, not a workload ID', async () => {
  const ca = await caPromise;
  const foreign = await createKeyAndCsr({ trustDomain: 'other.local', namespace: 'ns', serviceAccount: 'sa' });
  assert.match(await refusal(ca.signWorkloadCsr(foreign.csrPem, 600)), /not in trust domain cluster\.local/);
  assert.match(await refusal(ca.signWorkloadCsr(await customCsr([]), 600)), /exactly one URI SAN, found 0/);
  assert.match(
    await refusal(ca.signWorkloadCsr(await customCsr([`spiffe://${TD}/ns/a/sa/a`, `spiffe://${TD}/ns/b/sa/b`]), 600)),
    /exactly one URI SAN, found 2/,
  );
  assert.match(await refusal(ca.signWorkloadCsr(await customCsr([`spiffe://${TD}/ns/a/sa/a`], { signWithOtherKey: true }), 600)), /signature does not verify/);
  assert.match(await refusal(ca.signWorkloadCsr(await customCsr([`spiffe://${TD}/weft/node/n1`]), 600)), /not a workload identity/);
  assert.match(await refusal(ca.signWorkloadCsr('-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n', 600)), /cannot parse/);
  const ok = await createKeyAndCsr({ trustDomain: TD, namespace: 'ns', serviceAccount: 'sa' });
  assert.match(await refusal(ca.signWorkloadCsr(ok.csrPem, 0)), /positive/);
});

test('node credentials and the serving certificate carry their SANs and usages', async () => {
  const ca = await caPromise;
  const root = new X509Certificate(ca.rootCertPem);
  const node = await ca.issueNodeCredential('node-1', 3600);
  const nodeCert = new X509Certificate(node.certPem);
  assert.deepEqual(uriSansOf(nodeCert), [`spiffe://${TD}/weft/node/node-1`]);
  assert.deepEqual(nodeCert.keyUsage, ['1.3.6.1.5.5.7.3.2']);
  assert.ok(nodeCert.verify(root.publicKey));
  assert.ok(nodeCert.checkPrivateKey(createPrivateKey(node.keyPem)));

  const serving = await ca.issueServingCert({ dnsNames: ['weft-controller', 'weft-controller.weft-system.svc'], ips: ['127.0.0.1'], ttlSeconds: 3600 });
  const servingCert = new X509Certificate(serving.certPem);
  assert.equal(servingCert.subjectAltName, 'DNS:weft-controller, DNS:weft-controller.weft-system.svc, IP Address:127.0.0.1');
  assert.deepEqual(servingCert.keyUsage, ['1.3.6.1.5.5.7.3.1']);
  assert.equal(servingCert.checkHost('weft-controller.weft-system.svc'), 'weft-controller.weft-system.svc');
  assert.equal(servingCert.checkIP('127.0.0.1'), '127.0.0.1');
  assert.ok(servingCert.verify(root.publicKey));
  await assert.rejects(ca.issueNodeCredential('bad/name', 60), /invalid node name/);
});

test('a leaf never outlives its root', async () => {
  const ca = await CertificateAuthority.loadOrCreate({ dir: tempDir(), trustDomain: TD, rootTtlDays: 1 });
  const { csrPem } = await createKeyAndCsr({ trustDomain: TD, namespace: 'ns', serviceAccount: 'sa' });
  const leaf = new X509Certificate((await ca.signWorkloadCsr(csrPem, 30 * 86_400)).chain[0] as string);
  assert.ok(Date.parse(leaf.validTo) <= Date.parse(new X509Certificate(ca.rootCertPem).validTo));
});
