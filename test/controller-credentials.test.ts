// SPDX-License-Identifier: Apache-2.0
// The controller's public credential API (agent/controller/index.ts), as the lab and the CLI use it:
// from a controller state directory, a node credential, a node's Observer serving credential and the
// relay's client credential land in a directory, all from the one CA, keys 0600, identities right.
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';

import { writeNodeCredentials, writeObserverCredentials, writeRelayCredentials } from '../agent/controller/index.js';
import { uriSansOf } from '../agent/identity/spiffe.js';

const dir = mkdtempSync(join(tmpdir(), 'weft-controller-creds-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const TD = 'creds.test';

test('node, Observer and relay credentials from one controller state directory', async () => {
  const stateDir = join(dir, 'controller');
  const node = await writeNodeCredentials({ stateDir, node: 'node-a', outDir: join(dir, 'nodes', 'node-a'), trustDomain: TD, ttlSeconds: 3600 });
  const observer = await writeObserverCredentials({ stateDir, node: 'node-a', outDir: join(dir, 'nodes', 'node-a'), trustDomain: TD });
  const relay = await writeRelayCredentials({ stateDir, outDir: join(dir, 'relay'), trustDomain: TD });

  assert.deepEqual(
    [node.certFile, node.keyFile, observer.certFile, observer.keyFile, relay.certFile, relay.keyFile].map((f) => f.slice(dir.length + 1)),
    ['nodes/node-a/node-cert.pem', 'nodes/node-a/node-key.pem', 'nodes/node-a/observer-cert.pem', 'nodes/node-a/observer-key.pem', 'relay/relay-cert.pem', 'relay/relay-key.pem'],
  );
  for (const f of [node.keyFile, observer.keyFile, relay.keyFile]) assert.equal(statSync(f).mode & 0o777, 0o600, f);
  // One CA: every root file is the state directory's root, and every certificate chains to it.
  const root = readFileSync(join(stateDir, 'root-cert.pem'), 'utf8');
  const rootCert = new X509Certificate(root);
  for (const files of [node, observer, relay]) {
    assert.equal(readFileSync(files.rootFile, 'utf8'), root);
    assert.ok(new X509Certificate(readFileSync(files.certFile, 'utf8')).verify(rootCert.publicKey), files.certFile);
  }
  assert.deepEqual(uriSansOf(readFileSync(node.certFile, 'utf8')), [`spiffe://${TD}/weft/node/node-a`]);
  assert.deepEqual(uriSansOf(readFileSync(observer.certFile, 'utf8')), [`spiffe://${TD}/weft/node/node-a`]);
  assert.deepEqual(uriSansOf(readFileSync(relay.certFile, 'utf8')), [`spiffe://${TD}/weft/relay`]);
  // The node credential's lifetime is the one asked for, and its serial is reported.
  const cert = new X509Certificate(readFileSync(node.certFile, 'utf8'));
  const lifetime = (Date.parse(cert.validTo) - Date.parse(cert.validFrom)) / 1000;
  assert.ok(lifetime >= 3600 && lifetime <= 3600 + 600, String(lifetime));
  assert.equal(node.notAfter, new Date(cert.validTo).toISOString());
  assert.equal(node.serial.toLowerCase().replace(/^0+/, ''), cert.serialNumber.toLowerCase().replace(/^0+/, ''));
});
