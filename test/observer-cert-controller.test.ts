// The Observer serving certificate from the controller, for agents that hold no files from its CA (on
// Kubernetes, `weft agent --ca-token … --observer-tls`): over real gRPC with TLS, the controller signs a
// CSR for spiffe://<td>/weft/node/<node> only for the caller's own node — proven by a node certificate
// or by a service-account token reviewed by a TokenReview stand-in — with extended key usage serverAuth
// only and a bounded lifetime; another node's identity, another node's token and a workload identity
// the node does not run are refused. Then the agent side end to end on loopback: the renewer fetches
// the certificate with its token, the Observer's TLS listener serves it, a relay-like client (the relay
// credential, checking the node's identity) reads flows, and a renewal swaps the certificate that new
// connections see, without a restart.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate, createPrivateKey, randomBytes, randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { CaTokenAuth } from '../agent/config.js';
import { CertificateAuthority, type IssuedCredential } from '../agent/controller/ca.js';
import { ControllerClient } from '../agent/controller/client.js';
import { checkCsrRequest } from '../agent/controller/csr.js';
import { ControllerMetrics } from '../agent/controller/metrics.js';
import { controllerProtos } from '../agent/controller/proto.js';
import type { RegistryChange } from '../agent/controller/registry.js';
import { ControllerServer, type RegistryView } from '../agent/controller/server.js';
import { BoundTokenExtra, type TokenReviewStatus, type TokenReviewer } from '../agent/controller/token-review.js';
import { ErrorCodes, WeftError } from '../agent/errors.js';
import { ObserverCertRenewer, fetchObserverCredential } from '../agent/flows/observer-cert.js';
import { ObserverServer } from '../agent/flows/observer-server.js';
import { nodeObserverIdentity, relaySpiffeUri, type ObserverClientTls, type TlsCredential } from '../agent/flows/observer-tls.js';
import { FlowStore } from '../agent/flows/store.js';
import type { GetFlowsResponse } from '../agent/flows/types.js';
import { buildCsr, createKeyAndCsr, generateEcKeyPem } from '../agent/identity/csr.js';
import { uriSansOf } from '../agent/identity/spiffe.js';
import { createLogger } from '../agent/log.js';
import { observerServing } from '../agent/node/observer-flags.js';
import type { PodResource, Resource } from '../agent/registry/types.js';
import { ObserverClient } from '../agent/relay/client.js';
import { flowsOf, makeFlow } from './helpers/flow-fixtures.js';

const TD = 'cluster.local';
const SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
const AGENT_SA = CaTokenAuth.agentServiceAccount;
const AGENT_NS = AGENT_SA.split(':')[2]!;
const MAX_OBSERVER_TTL = 600;
const log = createLogger('test', { level: 'silent' });
const tmp = mkdtempSync(join(tmpdir(), `weft-observer-cert-${process.pid}-`));
const closers: Array<() => void | Promise<void>> = [];
let ca: CertificateAuthority;
let serving: IssuedCredential;
let relayCred: IssuedCredential;
let server: ControllerServer;
let address: string;
const UID_A = randomUUID();
const UID_B = randomUUID();

/** Answers as kube-apiserver does for a bound service-account token: the tokens are registered below. */
class ReviewerStandin implements TokenReviewer {
  readonly tokens = new Map<string, { pod: string; uid: string; node: string }>();
  async review(token: string, audiences: readonly string[]): Promise<TokenReviewStatus> {
    const t = this.tokens.get(token);
    if (!t || !audiences.includes(CaTokenAuth.audience)) return { authenticated: false, error: 'invalid bearer token' };
    const extra = { [BoundTokenExtra.podName]: [t.pod], [BoundTokenExtra.podUid]: [t.uid], [BoundTokenExtra.nodeName]: [t.node] };
    return { authenticated: true, audiences: [CaTokenAuth.audience], user: { username: AGENT_SA, uid: randomUUID(), groups: ['system:serviceaccounts'], extra } };
  }
}
const reviewer = new ReviewerStandin();

function pod(namespace: string, name: string, node: string, serviceAccountName: string, uid: string = randomUUID()): PodResource {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace, uid },
    spec: { nodeName: node, serviceAccountName, containers: [{ name: 'c', command: ['sleep', '1'] }] },
    status: { podIP: '10.1.1.10', phase: 'Running' } as PodResource['status'],
  };
}

const registry: RegistryView = {
  version: 1,
  resources: (): Resource[] => [
    pod(AGENT_NS, 'weft-agent-a', 'node-a', 'weft-agent', UID_A),
    pod(AGENT_NS, 'weft-agent-b', 'node-b', 'weft-agent', UID_B),
    pod('shop', 'server', 'node-b', 'server'),
  ],
  problems: () => [],
  subscribe: (_fn: (c: RegistryChange) => void) => () => undefined,
};

function token(node: 'node-a' | 'node-b'): string {
  // JWT-shaped (the controller checks the form; only the API server can tell whether it is genuine).
  const part = (o: object): string => Buffer.from(JSON.stringify(o)).toString('base64url');
  const t = [part({ alg: 'RS256', kid: 'standin' }), part({ exp: Math.floor(Date.now() / 1000) + 3600, jti: randomUUID() }), randomBytes(48).toString('base64url')].join('.');
  reviewer.tokens.set(t, node === 'node-a' ? { pod: 'weft-agent-a', uid: UID_A, node } : { pod: 'weft-agent-b', uid: UID_B, node });
  return t;
}

before(async () => {
  ca = await CertificateAuthority.loadOrCreate({ dir: join(tmp, 'ca'), trustDomain: TD });
  serving = await ca.issueServingCert({ ips: ['127.0.0.1'], dnsNames: ['localhost'], ttlSeconds: 3600 });
  relayCred = await ca.issueRelayCredential(3600);
  server = await ControllerServer.start({
    ca,
    registry,
    listen: '127.0.0.1:0',
    serving: { certPem: serving.certPem, keyPem: serving.keyPem },
    maxCertTtlSeconds: 3600,
    maxObserverCertTtlSeconds: MAX_OBSERVER_TTL,
    rootNamespace: 'istio-system',
    metrics: new ControllerMetrics(),
    log,
    csrRateLimit: { burst: 100, perSecond: 100 },
    tokenAuth: { reviewer },
  });
  address = `127.0.0.1:${server.port}`;
});

after(async () => {
  for (const c of closers.reverse()) await c();
  server?.close();
  rmSync(tmp, { recursive: true, force: true });
});

interface Outcome {
  code: grpc.status;
  details: string;
  chain: string[];
}

/** One CreateCertificate over a raw channel, as a node certificate and/or a bearer token. */
function createCertificate(csr: string, o: { cert?: IssuedCredential; token?: string; ttl?: number }): Promise<Outcome> {
  const { createCertificate: method } = controllerProtos();
  const creds = grpc.credentials.createSsl(Buffer.from(ca.rootCertPem), o.cert ? Buffer.from(o.cert.keyPem) : null, o.cert ? Buffer.from(o.cert.certPem) : null);
  const client = new grpc.Client(address, creds);
  const md = new grpc.Metadata();
  if (o.token) md.set('authorization', `Bearer ${o.token}`);
  return new Promise<Outcome>((resolve) => {
    client.makeUnaryRequest(
      method.path,
      method.requestSerialize,
      method.responseDeserialize,
      { csr, validity_duration: o.ttl ?? 3600 },
      md,
      { deadline: Date.now() + 20_000 },
      (err, res) => resolve(err ? { code: err.code, details: err.details, chain: [] } : { code: grpc.status.OK, details: '', chain: res?.cert_chain ?? [] }),
    );
  }).finally(() => client.close());
}

async function nodeCsr(node: string, td = TD): Promise<{ keyPem: string; csrPem: string }> {
  const keyPem = await generateEcKeyPem();
  return { keyPem, csrPem: buildCsr(keyPem, [`spiffe://${td}/weft/node/${node}`]) };
}

function assertObserverLeaf(chain: string[], node: string, keyPem: string): X509Certificate {
  assert.equal(chain.length, 2);
  assert.equal(chain[1], ca.rootCertPem);
  const leaf = new X509Certificate(chain[0]!);
  assert.deepEqual(uriSansOf(leaf), [nodeObserverIdentity(TD, node)]);
  assert.deepEqual(leaf.keyUsage, [SERVER_AUTH], 'extended key usage is serverAuth only');
  assert.equal(leaf.ca, false);
  assert.ok(leaf.checkPrivateKey(createPrivateKey(keyPem)), 'certified for the key the CSR was made with');
  assert.ok(leaf.verify(new X509Certificate(ca.rootCertPem).publicKey));
  const lifetime = (Date.parse(leaf.validTo) - Date.now()) / 1000;
  assert.ok(lifetime <= MAX_OBSERVER_TTL + 1 && lifetime > MAX_OBSERVER_TTL - 60, `lifetime ${lifetime}s is bounded by ${MAX_OBSERVER_TTL}s`);
  return leaf;
}

test('a node certificate gets its own Observer certificate: serverAuth only, bounded lifetime; never another node\'s', async () => {
  const nodeA = await ca.issueNodeCredential('node-a', 3600);
  const own = await nodeCsr('node-a');
  const ok = await createCertificate(own.csrPem, { cert: nodeA, ttl: 86_400 });
  assert.equal(grpc.status[ok.code], 'OK', ok.details);
  assertObserverLeaf(ok.chain, 'node-a', own.keyPem);

  // serverAuth only: the Observer certificate is no client credential toward the controller.
  const asClient: IssuedCredential = { certPem: ok.chain[0]!, keyPem: own.keyPem, serial: '' };
  const workloadCsr = (await createKeyAndCsr({ trustDomain: TD, namespace: AGENT_NS, serviceAccount: 'weft-agent' })).csrPem;
  const misuse = await createCertificate(workloadCsr, { cert: asClient });
  assert.equal(grpc.status[misuse.code], 'UNAUTHENTICATED', misuse.details);

  const other = await createCertificate((await nodeCsr('node-b')).csrPem, { cert: nodeA });
  assert.equal(grpc.status[other.code], 'PERMISSION_DENIED');
  assert.match(other.details, /node "node-a" may not obtain a certificate for spiffe:\/\/cluster\.local\/weft\/node\/node-b/);

  // A node identity of another trust domain is no node identity here: not a workload one either.
  const foreignTd = await createCertificate((await nodeCsr('node-a', 'other.td')).csrPem, { cert: nodeA });
  assert.equal(grpc.status[foreignTd.code], 'INVALID_ARGUMENT');
});

test('a service-account token gets the Observer certificate of its pod\'s node only', async () => {
  const own = await nodeCsr('node-a');
  const ok = await createCertificate(own.csrPem, { token: token('node-a') });
  assert.equal(grpc.status[ok.code], 'OK', ok.details);
  assertObserverLeaf(ok.chain, 'node-a', own.keyPem);

  // node-b's agent asking for node-a's identity.
  const stolen = await createCertificate((await nodeCsr('node-a')).csrPem, { token: token('node-b') });
  assert.equal(grpc.status[stolen.code], 'PERMISSION_DENIED');
  assert.match(stolen.details, /service-account token belongs to node "node-b", not "node-a"/);

  // A certificate and a token that disagree are refused before the CSR matters.
  const mixed = await createCertificate((await nodeCsr('node-a')).csrPem, { cert: await ca.issueNodeCredential('node-a', 3600), token: token('node-b') });
  assert.equal(grpc.status[mixed.code], 'PERMISSION_DENIED');

  // A token without a valid review is unauthenticated.
  const unknown = await createCertificate((await nodeCsr('node-a')).csrPem, { token: 'e30.e30.bm9ib2R5' });
  assert.equal(grpc.status[unknown.code], 'UNAUTHENTICATED');
});

test('workload identities keep node authorization: node-a may not obtain one that runs only on node-b', async () => {
  const { csrPem } = await createKeyAndCsr({ trustDomain: TD, namespace: 'shop', serviceAccount: 'server' });
  const a = await createCertificate(csrPem, { token: token('node-a') });
  assert.equal(grpc.status[a.code], 'PERMISSION_DENIED');
  assert.match(a.details, /may not obtain a certificate for spiffe:\/\/cluster\.local\/ns\/shop\/sa\/server/);
  const b = await createCertificate(csrPem, { token: token('node-b') });
  assert.equal(grpc.status[b.code], 'OK', b.details);
  // A workload certificate stays serverAuth + clientAuth (only the Observer's is serverAuth only).
  assert.deepEqual(new X509Certificate(b.chain[0]!).keyUsage?.sort(), [SERVER_AUTH, '1.3.6.1.5.5.7.3.2'].sort());
});

test('the CA signs an Observer CSR only for the node it names', async () => {
  const { csrPem } = await nodeCsr('node-b');
  const request = checkCsrRequest(csrPem);
  assert.throws(() => ca.signObserverServingCsr(request, 'node-a', 60), (err: WeftError) => err.code === ErrorCodes.CA && /not the Observer identity/.test(err.message));
  const wl = checkCsrRequest((await createKeyAndCsr({ trustDomain: TD, namespace: 'shop', serviceAccount: 'server' })).csrPem);
  assert.throws(() => ca.signObserverServingCsr(wl, 'node-a', 60), (err: WeftError) => err.code === ErrorCodes.CA);
  assert.equal(ca.signObserverServingCsr(request, 'node-b', 60).length, 2);
});

test('a signer returning the wrong certificate is refused by the agent before it is served', async () => {
  const wrong = { createCertificate: async (): Promise<string[]> => [(await ca.issueObserverServingCredential('node-b', 60)).certPem, ca.rootCertPem] };
  await assert.rejects(fetchObserverCredential({ signer: wrong, trustDomain: TD, node: 'node-a', rootCertPem: ca.rootCertPem }), (err: WeftError) => err.code === ErrorCodes.TLS && /node-b/.test(err.message));
  const foreignKey = { createCertificate: async (): Promise<string[]> => [(await ca.issueObserverServingCredential('node-a', 60)).certPem, ca.rootCertPem] };
  await assert.rejects(fetchObserverCredential({ signer: foreignKey, trustDomain: TD, node: 'node-a', rootCertPem: ca.rootCertPem }), /not for the key/);
});

/** A free TCP port on 127.0.0.1 (the Observer binds plaintext there and TLS on 127.0.0.2, on the same port). */
async function freePort(): Promise<number> {
  const s = createServer();
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const { port } = s.address() as { port: number };
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** The serial of the certificate a new TLS connection to `host:port` is served (as the relay, with h2). */
async function servedSerial(host: string, port: number): Promise<string> {
  const socket = connect({ host, port, servername: 'observer.weft', ALPNProtocols: ['h2'], ca: ca.rootCertPem, cert: relayCred.certPem, key: relayCred.keyPem, checkServerIdentity: () => undefined });
  try {
    await once(socket, 'secureConnect');
    return socket.getPeerX509Certificate()!.serialNumber;
  } finally {
    socket.destroy();
  }
}

function collect(client: ObserverClient): Promise<GetFlowsResponse[]> {
  const call = client.getFlows({ number: 2 });
  const out: GetFlowsResponse[] = [];
  return new Promise<GetFlowsResponse[]>((resolve, reject) => {
    call.on('data', (r: GetFlowsResponse) => out.push(r));
    call.on('error', reject);
    call.on('end', () => resolve(out));
  }).finally(() => client.close());
}

test('agent side end to end: --observer-tls with --ca-token fetches the certificate, serves mutual TLS to the relay, and a renewal swaps it for new connections', async () => {
  const tokenFile = join(tmp, 'token');
  writeFileSync(tokenFile, token('node-a'));
  const controller = new ControllerClient({ address, node: 'node-a', rootCertPem: ca.rootCertPem, tokenFile, log, serverName: '127.0.0.1', backoff: { initialMs: 60_000, maxMs: 60_000 } });
  closers.push(() => controller.close());
  // The flags as `weft agent --ca-token … --observer-tls` reads them (WEFT_NODE_IP from the DaemonSet).
  const serveOptions = observerServing({ 'observer-tls': true }, join(tmp, 'root-cert.pem'), join(tmp, 'root-cert.pem'), { WEFT_NODE_IP: '127.0.0.2' }, {
    signer: controller,
    node: 'node-a',
    rootCertPem: ca.rootCertPem,
    trustDomain: 'ignored.by.the.root',
    log,
  });
  const tls = serveOptions.tls;
  assert.ok(tls && 'renewer' in tls, 'with a token and no --observer-cert the certificate comes from the controller');
  assert.deepEqual(tls.allowedIdentities, [relaySpiffeUri(TD)], "the root's trust domain names the relay");
  const renewer = tls.renewer;
  const first = once(renewer, 'credential') as Promise<[TlsCredential]>;

  const store = new FlowStore(100, 'node-a');
  for (let i = 0; i < 4; i++) store.add(makeFlow({ at: i * 1000, uuid: `f${i}` }));
  const observer = new ObserverServer({ store, nodeName: 'node-a', version: 't', log });
  closers.push(() => observer.close());
  const port = await freePort();
  await observer.serve(port, serveOptions);
  const [cred1] = await first;
  assertObserverLeaf([cred1.certPem, ca.rootCertPem], 'node-a', cred1.keyPem);

  const relayTls = (server = nodeObserverIdentity(TD, 'node-a')): ObserverClientTls => ({ rootCertPem: ca.rootCertPem, certPem: relayCred.certPem, keyPem: relayCred.keyPem, serverIdentity: server });
  const tlsAddress = `127.0.0.2:${port}`;
  assert.deepEqual(flowsOf(await collect(new ObserverClient(tlsAddress, relayTls()))), ['f2', 'f3']);
  // The relay still refuses a node that is not the one it dialled.
  await assert.rejects(collect(new ObserverClient(tlsAddress, relayTls(nodeObserverIdentity(TD, 'node-b')))), (err: grpc.ServiceError) => err.code === grpc.status.UNAVAILABLE);
  const serial1 = new X509Certificate(cred1.certPem).serialNumber;
  assert.equal(await servedSerial('127.0.0.2', port), serial1);

  // Renewal: a new key and certificate, served to the next connection by the same listener.
  const second = once(renewer, 'credential') as Promise<[TlsCredential]>;
  await renewer.renewNow();
  const [cred2] = await second;
  const serial2 = new X509Certificate(cred2.certPem).serialNumber;
  assert.notEqual(serial2, serial1);
  assert.notEqual(cred2.keyPem, cred1.keyPem);
  assert.equal(await servedSerial('127.0.0.2', port), serial2);
  assert.deepEqual(flowsOf(await collect(new ObserverClient(tlsAddress, relayTls()))), ['f2', 'f3']);
});

test('the renewer renews at half-life by itself (a short certificate), and retries a failed renewal with backoff', async () => {
  let failuresLeft = 0;
  let failures = 0;
  const signer = {
    createCertificate: async (csrPem: string): Promise<string[]> => {
      if (failuresLeft > 0) {
        failuresLeft--;
        failures++;
        throw new Error('controller unreachable');
      }
      return ca.signObserverServingCsr(checkCsrRequest(csrPem), 'node-a', 2);
    },
  };
  const renewer = new ObserverCertRenewer({ signer, trustDomain: TD, node: 'node-a', rootCertPem: ca.rootCertPem, log, backoff: { initialMs: 50, maxMs: 50 } });
  closers.push(() => renewer.stop());
  const seen: string[] = [];
  const times: number[] = [];
  let wanted = 2;
  let reached: () => void = () => undefined;
  renewer.on('credential', (c) => {
    seen.push(new X509Certificate(c.certPem).serialNumber);
    times.push(Date.now());
    if (seen.length === 2) failuresLeft = 2; // the next renewal fails twice, then succeeds
    if (seen.length === wanted) reached();
  });
  const twoSeen = new Promise<void>((resolve) => (reached = resolve));
  renewer.start(() => undefined);
  await twoSeen;
  // Asked for 2 s: renewed about a second after the first, not at once (notBefore is back-dated 60 s).
  assert.ok(times[1]! - times[0]! >= 900, `renewed ${times[1]! - times[0]!} ms after the first`);
  assert.notEqual(seen[0], seen[1]);
  wanted = 3;
  await new Promise<void>((resolve) => (reached = resolve));
  assert.equal(failures, 2, 'two failed attempts, retried');
  assert.equal(new Set(seen).size, 3);
  renewer.stop();
});

test('until the controller has signed, the TLS listener is bound but serves no handshake; then it serves', async () => {
  let release: () => void = () => undefined;
  const released = new Promise<void>((resolve) => (release = resolve));
  const signer = {
    createCertificate: async (csrPem: string): Promise<string[]> => {
      await released;
      return ca.signObserverServingCsr(checkCsrRequest(csrPem), 'node-a', 600);
    },
  };
  const renewer = new ObserverCertRenewer({ signer, trustDomain: TD, node: 'node-a', rootCertPem: ca.rootCertPem, log });
  const store = new FlowStore(10, 'node-a');
  store.add(makeFlow({ at: 0, uuid: 'only' }));
  const observer = new ObserverServer({ store, nodeName: 'node-a', version: 't', log });
  closers.push(() => observer.close());
  const port = await freePort();
  await observer.serve(port, { tls: { host: '127.0.0.2', allowedIdentities: [relaySpiffeUri(TD)], renewer } });
  const relayTls: ObserverClientTls = { rootCertPem: ca.rootCertPem, certPem: relayCred.certPem, keyPem: relayCred.keyPem, serverIdentity: nodeObserverIdentity(TD, 'node-a') };
  // Bound: the port is taken (nothing else can listen there), but a connection gets no handshake.
  const squatter = createServer();
  squatter.listen(port, '127.0.0.2');
  const [err] = (await once(squatter, 'error')) as [NodeJS.ErrnoException];
  assert.equal(err.code, 'EADDRINUSE');
  await assert.rejects(servedSerial('127.0.0.2', port));
  const first = once(renewer, 'credential');
  release();
  await first;
  assert.deepEqual(flowsOf(await collect(new ObserverClient(`127.0.0.2:${port}`, relayTls))), ['only']);
});

test('agent flags: with --ca-token the controller signs unless --observer-cert/--observer-key are given; the allow-list is still checked', async () => {
  const signer = { createCertificate: async (): Promise<string[]> => [] };
  const fromController = { signer, node: 'node-a', rootCertPem: ca.rootCertPem, trustDomain: TD, log };
  const env = { WEFT_NODE_IP: '10.0.0.2' };
  const root = join(tmp, 'flags-root.pem');
  writeFileSync(root, ca.rootCertPem);
  const fromCa = observerServing({ 'observer-tls': true }, root, root, env, fromController);
  assert.ok(fromCa.tls && 'renewer' in fromCa.tls);
  assert.equal(fromCa.tls.host, '10.0.0.2');
  assert.equal(fromCa.tls.renewer.identity, nodeObserverIdentity(TD, 'node-a'));
  // Without --observer-tls nothing is fetched; an allow-list entry that is no SPIFFE ID is a usage error.
  assert.deepEqual(observerServing({}, root, root, {}, fromController), { maxStreams: 32 });
  assert.throws(() => observerServing({ 'observer-tls': true, 'observer-allow': ['relay'] }, root, root, env, fromController), (err: WeftError) => err.code === ErrorCodes.USAGE);
  // Files named explicitly win (the lab's way): read from disk, here missing, so a TLS error naming them.
  assert.throws(
    () => observerServing({ 'observer-tls': true, 'observer-cert': join(tmp, 'nope.pem'), 'observer-key': join(tmp, 'nope-key.pem') }, root, root, env, fromController),
    (err: WeftError) => err.code === ErrorCodes.TLS && /nope\.pem/.test(err.message),
  );
});
