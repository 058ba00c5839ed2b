// SPIFFE IDs: parsing, formatting, Istio principals, and reading them from certificates.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CertificateAuthority } from '../agent/controller/ca.js';
import { createKeyAndCsr } from '../agent/identity/csr.js';
import { formatSpiffeId, nodeSpiffeUri, parseNodeSpiffeUri, parseSpiffeId, principalOf, spiffeIdOfCert } from '../agent/identity/spiffe.js';
import { WeftError } from '../agent/errors.js';

test('workload SPIFFE IDs round-trip and give Istio principals', () => {
  const id = parseSpiffeId('spiffe://cluster.local/ns/shop/sa/api-v2');
  assert.deepEqual(id, { trustDomain: 'cluster.local', namespace: 'shop', serviceAccount: 'api-v2' });
  assert.equal(formatSpiffeId(id), 'spiffe://cluster.local/ns/shop/sa/api-v2');
  assert.equal(principalOf(id), 'cluster.local/ns/shop/sa/api-v2');
});

test('malformed SPIFFE IDs are WEFT_ERR_IDENTITY errors', () => {
  for (const bad of [
    'https://cluster.local/ns/a/sa/b',
    'spiffe://Cluster.Local/ns/a/sa/b',
    'spiffe://cluster.local',
    'spiffe://cluster.local/ns/a',
    'spiffe://cluster.local/ns/a/sa/b/extra',
    'spiffe://cluster.local/sa/b/ns/a',
    'spiffe://cluster.local/ns/../sa/b',
    'spiffe://cluster.local/ns/a/sa/',
    'spiffe://cluster.local:8443/ns/a/sa/b',
    'spiffe://cluster.local/ns/a/sa/b?x=1',
  ]) {
    assert.throws(() => parseSpiffeId(bad), (err: unknown) => err instanceof WeftError && err.code === 'WEFT_ERR_IDENTITY', bad);
  }
});

test('node identities are distinct from workload identities', () => {
  const uri = nodeSpiffeUri('cluster.local', 'node-1');
  assert.equal(uri, 'spiffe://cluster.local/weft/node/node-1');
  assert.equal(parseNodeSpiffeUri(uri, 'cluster.local'), 'node-1');
  assert.equal(parseNodeSpiffeUri(uri, 'other.local'), undefined);
  assert.equal(parseNodeSpiffeUri('spiffe://cluster.local/ns/a/sa/b', 'cluster.local'), undefined);
  assert.throws(() => parseSpiffeId(uri), /not a workload identity/);
});

test('spiffeIdOfCert reads the URI SAN of a PEM or an X509Certificate, and refuses a cert without one', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-spiffe-'));
  try {
    const ca = await CertificateAuthority.loadOrCreate({ dir, trustDomain: 'cluster.local' });
    const id = { trustDomain: 'cluster.local', namespace: 'default', serviceAccount: 'frontend' };
    const { chain } = await ca.signWorkloadCsr((await createKeyAndCsr(id)).csrPem, 600);
    assert.deepEqual(spiffeIdOfCert(chain[0] as string), id);
    const serving = await ca.issueServingCert({ dnsNames: ['controller'], ips: [], ttlSeconds: 60 });
    assert.throws(() => spiffeIdOfCert(serving.certPem), /no URI SAN/);
    const node = await ca.issueNodeCredential('n1', 60);
    assert.throws(() => spiffeIdOfCert(node.certPem), /not a workload identity/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
