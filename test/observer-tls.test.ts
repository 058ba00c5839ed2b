// The node's Observer API over mutual TLS: plaintext only on loopback; on the TLS listener a
// plaintext client, a client with a certificate from another CA, and a mesh client whose identity
// is not on the allow-list are all refused, the relay's credential reads flows; the relay dials
// nodes over TLS and checks it reached the node it meant; the agent's flags and the credential files.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { CertificateAuthority, type IssuedCredential } from '../agent/controller/ca.js';
import { observerServing } from '../agent/node/observer-flags.js';
import { observe, parseObserveArgs } from '../agent/cli/observe.js';
import { ErrorCodes, WeftError } from '../agent/errors.js';
import { ObserverServer } from '../agent/flows/observer-server.js';
import {
  OBSERVER_CERT_FILE,
  OBSERVER_KEY_FILE,
  RELAY_CERT_FILE,
  loadTlsCredential,
  relaySpiffeUri,
  trustDomainOfCert,
  type ObserverClientTls,
} from '../agent/flows/observer-tls.js';
import { writeObserverCredentialFiles } from '../agent/controller/credentials.js';
import { FlowStore } from '../agent/flows/store.js';
import type { GetFlowsRequest, GetFlowsResponse } from '../agent/flows/types.js';
import { uriSansOf } from '../agent/identity/spiffe.js';
import { createLogger } from '../agent/log.js';
import { ObserverClient } from '../agent/relay/client.js';
import { PeerPool, staticPeers } from '../agent/relay/peers.js';
import { RelayServer } from '../agent/relay/server.js';
import { flowsOf, makeFlow } from './helpers/flow-fixtures.js';

const TD = 'mesh.test';
const log = createLogger('test', { level: 'silent' });
const dir = mkdtempSync(join(tmpdir(), 'weft-observer-tls-'));
let ca: CertificateAuthority;
let foreign: CertificateAuthority;
let serving: IssuedCredential;
let relayCred: IssuedCredential;
let store: FlowStore;
let server: ObserverServer;
let tlsAddress: string;
let plainAddress: string;

before(async () => {
  ca = await CertificateAuthority.loadOrCreate({ dir: join(dir, 'ca'), trustDomain: TD });
  foreign = await CertificateAuthority.loadOrCreate({ dir: join(dir, 'foreign'), trustDomain: TD });
  serving = await ca.issueObserverServingCredential('node-a', 3600);
  relayCred = await ca.issueRelayCredential(3600);
  store = new FlowStore(100, 'node-a');
  for (let i = 0; i < 5; i++) store.add(makeFlow({ at: i * 1000, uuid: `f${i}` }));
  server = new ObserverServer({ store, nodeName: 'node-a', version: 't', log });
  const tlsPort = await server.listenTls('127.0.0.1', 0, { rootCertPem: ca.rootCertPem, ...serving, allowedIdentities: [relaySpiffeUri(TD)] });
  tlsAddress = `127.0.0.1:${tlsPort}`;
  plainAddress = `127.0.0.1:${await server.listen('127.0.0.1', 0)}`;
});

after(async () => {
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

function clientTls(cred: IssuedCredential, o: { root?: string; server?: string } = {}): ObserverClientTls {
  return { rootCertPem: o.root ?? ca.rootCertPem, certPem: cred.certPem, keyPem: cred.keyPem, serverIdentity: o.server ?? `spiffe://${TD}/weft/node/node-a` };
}

/** Every response of a GetFlows call through `client` (closed afterwards), or its error. */
function collectWith(client: ObserverClient, req: GetFlowsRequest, timeoutMs = 5000): Promise<GetFlowsResponse[]> {
  const call = client.getFlows(req);
  const out: GetFlowsResponse[] = [];
  return new Promise<GetFlowsResponse[]>((resolve, reject) => {
    const timer = setTimeout(() => {
      call.cancel();
      reject(new Error(`GetFlows did not end within ${timeoutMs} ms`));
    }, timeoutMs);
    call.on('data', (r: GetFlowsResponse) => out.push(r));
    call.on('error', (err: grpc.ServiceError) => {
      clearTimeout(timer);
      reject(err);
    });
    call.on('end', () => {
      clearTimeout(timer);
      resolve(out);
    });
  }).finally(() => client.close());
}

const code = (c: grpc.status) => (err: grpc.ServiceError) => {
  assert.equal(grpc.status[err.code], grpc.status[c], err.details);
  return true;
};

test('the relay credential reads flows over mutual TLS; GetNodes says TLS', async () => {
  const flows = await collectWith(new ObserverClient(tlsAddress, clientTls(relayCred)), { number: 3 });
  assert.deepEqual(flowsOf(flows), ['f2', 'f3', 'f4']);
  const client = new ObserverClient(tlsAddress, clientTls(relayCred));
  try {
    const n = await client.getNodes(3000);
    assert.equal(n.nodes[0]!.tls?.enabled, true);
    assert.equal(n.nodes[0]!.address, tlsAddress);
  } finally {
    client.close();
  }
});

test('a plaintext client is refused by the TLS listener', async () => {
  await assert.rejects(collectWith(new ObserverClient(tlsAddress), { number: 3 }), code(grpc.status.UNAVAILABLE));
});

test('a client certificate from another CA is refused (same identity, same trust domain)', async () => {
  const forged = await foreign.issueRelayCredential(3600);
  assert.deepEqual(uriSansOf(forged.certPem), [relaySpiffeUri(TD)], 'the forgery claims the relay identity');
  await assert.rejects(collectWith(new ObserverClient(tlsAddress, clientTls(forged)), { number: 3 }), code(grpc.status.UNAVAILABLE));
});

test('a mesh certificate whose identity is not on the allow-list is PERMISSION_DENIED, for every method', async () => {
  const nodeB = await ca.issueNodeCredential('node-b', 3600);
  await assert.rejects(collectWith(new ObserverClient(tlsAddress, clientTls(nodeB)), { number: 3 }), code(grpc.status.PERMISSION_DENIED));
  const client = new ObserverClient(tlsAddress, clientTls(nodeB));
  try {
    await assert.rejects(client.serverStatus(3000), code(grpc.status.PERMISSION_DENIED));
    await assert.rejects(client.getNamespaces(3000), code(grpc.status.PERMISSION_DENIED));
  } finally {
    client.close();
  }
});

test('the client refuses a server that is not the node it expected', async () => {
  await assert.rejects(
    collectWith(new ObserverClient(tlsAddress, clientTls(relayCred, { server: `spiffe://${TD}/weft/node/node-b` })), { number: 3 }),
    code(grpc.status.UNAVAILABLE),
  );
});

test('plaintext is served on loopback only; TLS wants a real address', async () => {
  const other = new ObserverServer({ store, nodeName: 'node-a', version: 't', log });
  try {
    for (const host of ['0.0.0.0', '::', '10.0.0.1']) {
      await assert.rejects(other.listen(host, 0), (err: WeftError) => err.code === ErrorCodes.USAGE && /loopback only/.test(err.message));
    }
    await assert.rejects(other.listenTls('0.0.0.0', 0, { rootCertPem: ca.rootCertPem, ...serving, allowedIdentities: [relaySpiffeUri(TD)] }), /node's own address/);
  } finally {
    await other.close();
  }
  // The loopback listener of the server under test needs no certificate.
  assert.deepEqual(flowsOf(await collectWith(new ObserverClient(plainAddress), { number: 1 })), ['f4']);
});

test('the relay dials nodes over mutual TLS with its credential, checking each node identity', async () => {
  const relayTls = { rootCertPem: ca.rootCertPem, certPem: relayCred.certPem, keyPem: relayCred.keyPem };
  // The same node under two names: as node-a its identity matches, as node-x it does not.
  const pool = new PeerPool(staticPeers([{ name: 'node-a', address: tlsAddress }, { name: 'node-x', address: tlsAddress }]), log, 60_000, relayTls);
  await pool.start();
  const relay = new RelayServer({ pool, version: 'r', log, name: 'relay', connectTimeoutMs: 2000 });
  const port = await relay.listen('127.0.0.1', 0);
  try {
    const rs = await collectWith(new ObserverClient(`127.0.0.1:${port}`), { number: 2 });
    assert.deepEqual(flowsOf(rs), ['f3', 'f4']);
    const statuses = rs.filter((r) => r.node_status).map((r) => `${r.node_status!.state_change} ${(r.node_status!.node_names ?? []).join(',')}`);
    assert.deepEqual(statuses, ['NODE_CONNECTED node-a', 'NODE_UNAVAILABLE node-x']);
    const client = new ObserverClient(`127.0.0.1:${port}`);
    try {
      const nodes = await client.getNodes(5000);
      assert.deepEqual(
        nodes.nodes.map((n) => [n.name, n.state, n.tls?.enabled]),
        [
          ['node-a', 'NODE_CONNECTED', true],
          ['node-x', 'NODE_UNAVAILABLE', true],
        ],
      );
    } finally {
      client.close();
    }
  } finally {
    await relay.close();
    pool.close();
  }
});

test('credential files: written with 0600 keys, read back and checked; trust domain and relay identity', async () => {
  const out = join(dir, 'out');
  const nodeFiles = await writeObserverCredentialFiles(ca, { node: 'node-a' }, out, 3600);
  const relayFiles = await writeObserverCredentialFiles(ca, { relay: true }, out, 3600);
  assert.equal(nodeFiles.certFile, join(out, OBSERVER_CERT_FILE));
  assert.equal(nodeFiles.keyFile, join(out, OBSERVER_KEY_FILE));
  assert.equal(relayFiles.certFile, join(out, RELAY_CERT_FILE));
  assert.equal(statSync(nodeFiles.keyFile).mode & 0o777, 0o600);
  assert.equal(statSync(relayFiles.keyFile).mode & 0o777, 0o600);
  assert.equal(readFileSync(nodeFiles.rootFile, 'utf8'), ca.rootCertPem);
  const cred = loadTlsCredential(nodeFiles);
  assert.deepEqual(uriSansOf(cred.certPem), [`spiffe://${TD}/weft/node/node-a`]);
  assert.equal(trustDomainOfCert(readFileSync(relayFiles.certFile, 'utf8')), TD);
  assert.deepEqual(uriSansOf(readFileSync(relayFiles.certFile, 'utf8')), [relaySpiffeUri(TD)]);
  // A key that is not the certificate's is refused when loading.
  assert.throws(() => loadTlsCredential({ ...nodeFiles, keyFile: relayFiles.keyFile }), (err: WeftError) => err.code === ErrorCodes.TLS);
});

test('agent flags: loopback only by default; --observer-tls needs an address and a credential; allow-list defaults to the relay', async () => {
  const out = join(dir, 'node-creds');
  const files = await writeObserverCredentialFiles(ca, { node: 'node-a' }, out, 3600);
  // The node credential sits beside the observer's: its directory is where the defaults are looked up.
  const nodeCert = join(out, 'node-cert.pem');
  writeFileSync(nodeCert, (await ca.issueNodeCredential('node-a', 3600)).certPem);
  assert.deepEqual(observerServing({}, nodeCert, files.rootFile, {}), { maxStreams: 32 });
  assert.deepEqual(observerServing({ 'observer-max-streams': '4' }, nodeCert, files.rootFile, {}), { maxStreams: 4 });
  const usage = (err: WeftError): boolean => err.code === ErrorCodes.USAGE;
  assert.throws(() => observerServing({ 'observer-address': '10.0.0.2' }, nodeCert, files.rootFile, {}), usage);
  assert.throws(() => observerServing({ 'observer-tls': true }, nodeCert, files.rootFile, {}), usage);
  assert.throws(() => observerServing({ 'observer-tls': true, 'observer-address': '0.0.0.0' }, nodeCert, files.rootFile, {}), usage);
  assert.throws(() => observerServing({ 'observer-tls': true, 'observer-address': '10.0.0.2', 'observer-allow': ['relay'] }, nodeCert, files.rootFile, {}), usage);
  assert.throws(() => observerServing({}, nodeCert, files.rootFile, { WEFT_OBSERVER_TLS: 'yes' }), usage);
  const o = observerServing({}, nodeCert, files.rootFile, { WEFT_OBSERVER_TLS: '1', WEFT_NODE_IP: '10.0.0.2' });
  assert.equal(o.tls?.host, '10.0.0.2');
  assert.deepEqual(o.tls?.allowedIdentities, [relaySpiffeUri(TD)]);
  assert.equal(o.tls && 'certPem' in o.tls ? o.tls.certPem : undefined, readFileSync(files.certFile, 'utf8'));
  const missing = join(dir, 'empty');
  assert.throws(() => observerServing({ 'observer-tls': true, 'observer-address': '10.0.0.2', 'observer-cert': join(missing, 'x.pem') }, nodeCert, files.rootFile, {}), (err: WeftError) => err.code === ErrorCodes.TLS);
});

test('weft observe --tls reads a node with the relay credential; without --tls, or with a wrong node name, it fails with exit code 1', async () => {
  const files = await writeObserverCredentialFiles(ca, { relay: true }, join(dir, 'observe'), 3600);
  const tlsArgs = ['--tls', '--tls-ca-cert-files', files.rootFile, '--tls-client-cert-file', files.certFile, '--tls-client-key-file', files.keyFile];
  const run = async (argv: string[]): Promise<{ code: number; out: string; err: string }> => {
    let out = '';
    let err = '';
    const code = await observe(parseObserveArgs(argv), { out: (x) => void (out += x), err: (x) => void (err += x), isTTY: false, env: {} });
    return { code, out, err };
  };
  const ok = await run(['--server', tlsAddress, ...tlsArgs, '--tls-server-name', 'node-a', '--last', '2', '-o', 'json']);
  assert.equal(ok.code, 0, ok.err);
  assert.deepEqual(
    ok.out.trim().split('\n').map((l) => (JSON.parse(l) as { flow: { uuid: string } }).flow.uuid),
    ['f3', 'f4'],
  );
  const plain = await run(['--server', tlsAddress, '--last', '2']);
  assert.equal(plain.code, 1);
  assert.match(plain.err, /cannot reach the Observer API/);
  const wrong = await run(['--server', tlsAddress, ...tlsArgs, '--tls-server-name', 'node-b', '--last', '2']);
  assert.equal(wrong.code, 1);
  assert.match(wrong.err, /not spiffe:\/\/mesh\.test\/weft\/node\/node-b/);
  assert.throws(() => parseObserveArgs(['--tls', '--tls-server-name', 'node-a']), /--tls needs --tls-ca-cert-files, --tls-client-cert-file, --tls-client-key-file/);
  assert.throws(() => parseObserveArgs(['--tls-server-name', 'node-a']), /needs --tls/);
});
