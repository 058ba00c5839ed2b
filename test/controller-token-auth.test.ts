// Node agents authenticating to the controller with Kubernetes service-account tokens, over real gRPC
// with TLS: a controller server with token authentication on 127.0.0.1, an in-memory registry holding
// the pods (with uids, as the Kubernetes source fills it), and a TokenReviewer stand-in that answers
// as the API server does (audience, expiry, bound pod in `extra`). Every refusal — wrong node, wrong
// service account, wrong audience, expired, not bound to a pod, unknown or replaced pod, no
// credential at all, malformed header — ends with the gRPC status and message an operator needs; the
// happy path issues certificates and streams discovery; reviews are cached under a hash of the token
// (bounded, capped by the token's exp, refusals briefly too, failures never) and the token never
// reaches a log line. The agent side re-reads a rotated token file and never sends its token to a
// controller whose certificate does not chain to the mesh root.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import http2 from 'node:http2';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import * as grpc from '@grpc/grpc-js';
import { pino, type Logger } from 'pino';
import { CaTokenAuth } from '../agent/config.js';
import { CertificateAuthority, type IssuedCredential } from '../agent/controller/ca.js';
import { ControllerCallError, ControllerClient } from '../agent/controller/client.js';
import { controllerCommand } from '../agent/controller/command.js';
import { Controller } from '../agent/controller/controller.js';
import { ControllerMetrics } from '../agent/controller/metrics.js';
import { controllerProtos } from '../agent/controller/proto.js';
import type { RegistryChange } from '../agent/controller/registry.js';
import { REVOKED_NODES_FILE, RevocationList, appendRevocation } from '../agent/controller/revocation.js';
import { ControllerServer, type ControllerServerOptions, type RegistryView } from '../agent/controller/server.js';
import { TokenAuthenticator, parseServiceAccountUser, type TokenAuthOptions } from '../agent/controller/token-auth.js';
import { BoundTokenExtra, KubernetesTokenReviewer, loadKubeConfig, type TokenReviewStatus, type TokenReviewer } from '../agent/controller/token-review.js';
import { createKeyAndCsr } from '../agent/identity/csr.js';
import { agentCommand } from '../agent/node/command.js';
import type { PodResource, Resource } from '../agent/registry/types.js';
import { KubeStandin, STANDIN_API_AUDIENCE, type AuthorizationAttributes, type KubeObject } from './helpers/kube-standin.js';

const TD = 'cluster.local';
const AGENT_SA = CaTokenAuth.agentServiceAccount;
const AGENT_NS = AGENT_SA.split(':')[2]!;
const tmp = mkdtempSync(join(tmpdir(), 'weft-token-auth-'));
const logLines: string[] = [];
const log: Logger = pino(
  { level: 'debug' },
  new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line) logLines.push(line);
      done();
    },
  }),
);
/** Every token minted here: none may ever appear in a log line. */
const minted: string[] = [];
let ca: CertificateAuthority;
let serving: IssuedCredential;
const servers: ControllerServer[] = [];
const closers: Array<() => void> = [];

// ---- the API server's TokenReview, as a stand-in ---------------------------------------------

interface Registered {
  username: string;
  audiences: string[];
  /** Seconds since the epoch. */
  exp: number;
  pod?: { name: string; uid: string };
  node?: string;
}

/** Answers as kube-apiserver does for bound service-account tokens; tokens are registered by the test. */
class ReviewerStandin implements TokenReviewer {
  readonly tokens = new Map<string, Registered | 'fail' | 'hang' | 'audience-unaware'>();
  readonly calls: Array<{ token: string; audiences: string[] }> = [];
  now = (): number => Date.now();

  async review(token: string, audiences: readonly string[]): Promise<TokenReviewStatus> {
    this.calls.push({ token, audiences: [...audiences] });
    const t = this.tokens.get(token);
    if (t === undefined) return { authenticated: false, error: 'invalid bearer token' };
    if (t === 'fail') throw new Error(`connect ECONNREFUSED (while reviewing ${token})`);
    if (t === 'hang') return new Promise<TokenReviewStatus>(() => undefined);
    if (t === 'audience-unaware') return { authenticated: true, user: { username: AGENT_SA, extra: {} } };
    if (t.exp * 1000 <= this.now()) return { authenticated: false, error: 'invalid bearer token, token has expired' };
    const ok = t.audiences.filter((a) => audiences.includes(a));
    if (ok.length === 0) {
      return {
        authenticated: false,
        error: `invalid bearer token, token audiences ${JSON.stringify(t.audiences)} is invalid for the target audiences ${JSON.stringify(audiences)}`,
      };
    }
    const extra: Record<string, string[]> = {};
    if (t.pod) {
      extra[BoundTokenExtra.podName] = [t.pod.name];
      extra[BoundTokenExtra.podUid] = [t.pod.uid];
    }
    if (t.node) extra[BoundTokenExtra.nodeName] = [t.node];
    return { authenticated: true, audiences: ok, user: { username: t.username, uid: randomUUID(), groups: ['system:serviceaccounts'], extra } };
  }
}

/** A JWT-shaped token (only the API server can tell whether it is genuine); `exp` in seconds. */
function jwt(exp: number): string {
  const part = (o: object): string => Buffer.from(JSON.stringify(o)).toString('base64url');
  const t = [part({ alg: 'RS256', kid: 'standin' }), part({ exp, jti: randomUUID() }), randomBytes(48).toString('base64url')].join('.');
  minted.push(t);
  return t;
}

const inAnHour = (): number => Math.floor(Date.now() / 1000) + 3600;

// ---- the registry, as the Kubernetes source fills it -----------------------------------------

class MemRegistry implements RegistryView {
  version = 1;
  private objects: Resource[];
  private readonly listeners = new Set<(c: RegistryChange) => void>();
  constructor(objects: Resource[]) {
    this.objects = objects;
  }
  resources(): Resource[] {
    return [...this.objects];
  }
  problems(): [] {
    return [];
  }
  subscribe(fn: (c: RegistryChange) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }
  set(objects: Resource[]): void {
    this.objects = objects;
    this.version++;
    for (const fn of [...this.listeners]) fn({ version: this.version, upserts: [], removals: [], problems: [] });
  }
}

function pod(namespace: string, name: string, node: string, serviceAccountName: string, uid: string = randomUUID(), phase?: string): PodResource {
  const metadata = { name, namespace, uid };
  const status = { podIP: '10.1.1.10', ...(phase ? { phase } : {}) } as PodResource['status'];
  return { apiVersion: 'v1', kind: 'Pod', metadata, spec: { nodeName: node, serviceAccountName, containers: [{ name: 'c', command: ['sleep', '1'] }] }, status };
}

const UID_A = randomUUID();
const UID_B = randomUUID();
const cluster = (): Resource[] => [
  pod(AGENT_NS, 'weft-agent-a', 'node-a', 'weft-agent', UID_A),
  pod(AGENT_NS, 'weft-agent-b', 'node-b', 'weft-agent', UID_B),
  pod(AGENT_NS, 'impostor', 'node-a', 'something-else', 'uid-impostor'),
  pod(AGENT_NS, 'weft-agent-old', 'node-a', 'weft-agent', 'uid-old', 'Failed'),
  pod('shop', 'client', 'node-a', 'client'),
  pod('shop', 'server', 'node-b', 'server'),
];

// ---- servers and callers ---------------------------------------------------------------------

interface Started {
  server: ControllerServer;
  address: string;
  registry: MemRegistry;
  reviewer: ReviewerStandin;
  stateDir: string;
}

async function startServer(o: { tokenAuth?: Partial<TokenAuthOptions> | false; csrRateLimit?: ControllerServerOptions['csrRateLimit']; revocations?: boolean } = {}): Promise<Started> {
  const registry = new MemRegistry(cluster());
  const reviewer = new ReviewerStandin();
  const stateDir = mkdtempSync(join(tmp, 'state-'));
  let server: ControllerServer | undefined;
  let revocations: RevocationList | undefined;
  if (o.revocations) {
    revocations = new RevocationList(join(stateDir, REVOKED_NODES_FILE), log, () => server?.enforceRevocations());
    closers.push(() => revocations?.close());
  }
  server = await ControllerServer.start({
    ca,
    registry,
    listen: '127.0.0.1:0',
    serving: { certPem: serving.certPem, keyPem: serving.keyPem },
    maxCertTtlSeconds: 3600,
    rootNamespace: 'istio-system',
    metrics: new ControllerMetrics(),
    log,
    ...(revocations ? { revocations } : {}),
    ...(o.csrRateLimit ? { csrRateLimit: o.csrRateLimit } : {}),
    ...(o.tokenAuth === false ? {} : { tokenAuth: { reviewer, ...o.tokenAuth } }),
  });
  servers.push(server);
  return { server, address: `127.0.0.1:${server.port}`, registry, reviewer, stateDir };
}

/** A token the stand-in API server vouches for: the agent pod on node-a, for audience weft-ca. */
function agentToken(s: Started, over: Partial<Registered> = {}): string {
  const token = jwt(over.exp ?? inAnHour());
  s.reviewer.tokens.set(token, { username: AGENT_SA, audiences: [CaTokenAuth.audience], exp: inAnHour(), pod: { name: 'weft-agent-a', uid: UID_A }, ...over });
  return token;
}

interface Outcome {
  code: grpc.status;
  details: string;
}

function channel(address: string, cert?: IssuedCredential, rootPem = ca.rootCertPem): grpc.Client {
  const creds = grpc.credentials.createSsl(Buffer.from(rootPem), cert ? Buffer.from(cert.keyPem) : null, cert ? Buffer.from(cert.certPem) : null);
  const client = new grpc.Client(address, creds);
  closers.push(() => client.close());
  return client;
}

function metadataWith(authorization?: string | string[]): grpc.Metadata {
  const md = new grpc.Metadata();
  for (const v of authorization === undefined ? [] : Array.isArray(authorization) ? authorization : [authorization]) md.add('authorization', v);
  return md;
}

const csrFor = async (namespace: string, serviceAccount: string): Promise<string> => (await createKeyAndCsr({ trustDomain: TD, namespace, serviceAccount })).csrPem;

/** One CreateCertificate over a raw channel with the given authorization header(s) and client certificate. */
function rawCsr(address: string, csr: string, o: { auth?: string | string[]; cert?: IssuedCredential } = {}): Promise<Outcome> {
  const { createCertificate } = controllerProtos();
  const client = channel(address, o.cert);
  return new Promise((resolve) => {
    client.makeUnaryRequest(
      createCertificate.path,
      createCertificate.requestSerialize,
      createCertificate.responseDeserialize,
      { csr, validity_duration: 600 },
      metadataWith(o.auth),
      { deadline: Date.now() + 20_000 },
      (err) => resolve(err ? { code: err.code, details: err.details } : { code: grpc.status.OK, details: '' }),
    );
  });
}

/** A discovery stream opened by hand; `status` resolves when it ends. */
function rawStream(
  address: string,
  node: string,
  o: { auth?: string; cert?: IssuedCredential; rootPem?: string } = {},
): { firstUpdate: Promise<boolean>; status: Promise<grpc.StatusObject>; cancel(): void } {
  const { stream } = controllerProtos();
  const client = channel(address, o.cert, o.rootPem);
  const call = client.makeServerStreamRequest(stream.path, stream.requestSerialize, stream.responseDeserialize, { node }, metadataWith(o.auth), { deadline: Date.now() + 30_000 });
  let gotUpdate: (v: boolean) => void = () => undefined;
  const firstUpdate = new Promise<boolean>((resolve) => (gotUpdate = resolve));
  call.on('data', () => gotUpdate(true));
  call.on('error', () => undefined);
  const status = new Promise<grpc.StatusObject>((resolve) =>
    call.on('status', (s: grpc.StatusObject) => {
      gotUpdate(false);
      resolve(s);
    }),
  );
  closers.push(() => call.cancel());
  return { firstUpdate, status, cancel: () => call.cancel() };
}

function tokenClient(address: string, tokenFile: string, node = 'node-a', rootCertPem = ca.rootCertPem): ControllerClient {
  const c = new ControllerClient({ address, node, rootCertPem, tokenFile, log, backoff: { initialMs: 60_000, maxMs: 60_000 }, serverName: '127.0.0.1' });
  closers.push(() => c.close());
  return c;
}

async function ask(client: ControllerClient, csr: string): Promise<Outcome> {
  try {
    await client.createCertificate(csr, 600);
    return { code: grpc.status.OK, details: '' };
  } catch (err) {
    assert.ok(err instanceof ControllerCallError, String(err));
    return { code: err.grpcCode, details: err.details };
  }
}

function writeToken(file: string, token: string): void {
  // As the kubelet does: the new file replaces the old one in one rename.
  const next = `${file}.next-${randomUUID()}`;
  writeFileSync(next, `${token}\n`, { mode: 0o600 });
  renameSync(next, file);
}

before(async () => {
  ca = await CertificateAuthority.loadOrCreate({ dir: join(tmp, 'ca'), trustDomain: TD });
  serving = await ca.issueServingCert({ ips: ['127.0.0.1'], dnsNames: ['localhost'], ttlSeconds: 3600 });
});

after(() => {
  for (const c of closers.splice(0)) c();
  for (const s of servers.splice(0)) s.close();
  rmSync(tmp, { recursive: true, force: true });
});

// ---- the happy path --------------------------------------------------------------------------

test('an agent with its pod-bound token gets certificates for its node and streams discovery', async () => {
  const s = await startServer();
  const file = join(tmp, 'happy-token');
  const token = agentToken(s);
  writeToken(file, token);
  const client = tokenClient(s.address, file);
  assert.equal((await ask(client, await csrFor('shop', 'client'))).code, grpc.status.OK);
  // The review asked for weft's audience, and only it.
  assert.deepEqual(s.reviewer.calls.map((c) => c.audiences), [[CaTokenAuth.audience]]);

  const synced = new Promise<number>((resolve) => client.watch((u) => resolve(u.resources.length)));
  assert.equal(await synced, cluster().length);
  assert.equal(s.server.connectedAgents()[0]?.node, 'node-a');
  assert.ok(logLines.some((l) => l.includes('"via":"service-account token"') && l.includes(`"pod":"${AGENT_NS}/weft-agent-a"`)));
});

// ---- refusals --------------------------------------------------------------------------------

test('wrong node: certificates only for service accounts of pods on the token pod\'s node, discovery only for that node', async () => {
  const s = await startServer();
  const token = agentToken(s);
  const other = await rawCsr(s.address, await csrFor('shop', 'server'), { auth: `Bearer ${token}` });
  assert.equal(other.code, grpc.status.PERMISSION_DENIED);
  assert.match(other.details, /node "node-a" may not obtain a certificate for spiffe:\/\/cluster\.local\/ns\/shop\/sa\/server: .*run on node-b/);

  const stream = rawStream(s.address, 'node-b', { auth: `Bearer ${token}` });
  const st = await stream.status;
  assert.equal(st.code, grpc.status.PERMISSION_DENIED);
  assert.match(st.details, /discovery for node "node-b" refused: the service-account token belongs to node "node-a"/);
  assert.equal(await stream.firstUpdate, false);

  // A token naming one node (Kubernetes ≥ 1.30 puts it in `extra`) for a pod the registry has on another.
  const moved = agentToken(s, { node: 'node-b' });
  const r = await rawCsr(s.address, await csrFor('shop', 'client'), { auth: `Bearer ${moved}` });
  assert.equal(r.code, grpc.status.PERMISSION_DENIED);
  assert.match(r.details, /the token names node "node-b" but pod weft-system\/weft-agent-a runs on node "node-a"/);
});

test('wrong service account: another service account\'s token, or a pod running as another one', async () => {
  const s = await startServer();
  const csr = await csrFor('shop', 'client');
  const app = agentToken(s, { username: 'system:serviceaccount:shop:client', pod: { name: 'client', uid: 'u' } });
  const r = await rawCsr(s.address, csr, { auth: `Bearer ${app}` });
  assert.equal(r.code, grpc.status.PERMISSION_DENIED);
  assert.match(r.details, /the token belongs to "system:serviceaccount:shop:client"; only the weft agent's service account "system:serviceaccount:weft-system:weft-agent" may call the CA/);

  const impostor = agentToken(s, { pod: { name: 'impostor', uid: 'uid-impostor' } });
  const i = await rawCsr(s.address, csr, { auth: `Bearer ${impostor}` });
  assert.equal(i.code, grpc.status.PERMISSION_DENIED);
  assert.match(i.details, /pod weft-system\/impostor runs as service account "something-else", not the weft agent's "weft-agent"/);
});

test('wrong audience: refused by the API server, and refused when an audience-unaware review confirms none', async () => {
  const s = await startServer();
  const csr = await csrFor('shop', 'client');
  const forApi = agentToken(s, { audiences: ['https://kubernetes.default.svc.cluster.local'] });
  const r = await rawCsr(s.address, csr, { auth: `Bearer ${forApi}` });
  assert.equal(r.code, grpc.status.UNAUTHENTICATED);
  assert.match(r.details, /the API server did not authenticate the service-account token: .*token audiences \["https:\/\/kubernetes\.default\.svc\.cluster\.local"\] is invalid for the target audiences \["weft-ca"\]/);

  const unaware = jwt(inAnHour());
  s.reviewer.tokens.set(unaware, 'audience-unaware');
  const u = await rawCsr(s.address, csr, { auth: `Bearer ${unaware}` });
  assert.equal(u.code, grpc.status.UNAUTHENTICATED);
  assert.match(u.details, /not valid for audience "weft-ca" \(the review confirmed no audience\)/);
});

test('expired: refused; and an accepted review is never reused past the token\'s own exp', async () => {
  let now = Date.now();
  const s = await startServer({ tokenAuth: { now: () => now } });
  s.reviewer.now = () => now;
  const csr = await csrFor('shop', 'client');
  const gone = agentToken(s, { exp: Math.floor(now / 1000) - 5 });
  const r = await rawCsr(s.address, csr, { auth: `Bearer ${gone}` });
  assert.equal(r.code, grpc.status.UNAUTHENTICATED);
  assert.match(r.details, /token has expired/);

  // Valid for 20 more seconds: accepted, then (inside the 60 s cache window) refused once it expired.
  const exp = Math.floor(now / 1000) + 20;
  const shortLived = agentToken(s, { exp });
  assert.equal((await rawCsr(s.address, csr, { auth: `Bearer ${shortLived}` })).code, grpc.status.OK);
  now += 10_000;
  assert.equal((await rawCsr(s.address, csr, { auth: `Bearer ${shortLived}` })).code, grpc.status.OK);
  assert.equal(s.reviewer.calls.filter((c) => c.token === shortLived).length, 1, 'reused from the cache while valid');
  now = exp * 1000 + 1;
  const late = await rawCsr(s.address, csr, { auth: `Bearer ${shortLived}` });
  assert.equal(late.code, grpc.status.UNAUTHENTICATED);
  assert.match(late.details, /token has expired/);
  assert.equal(s.reviewer.calls.filter((c) => c.token === shortLived).length, 2, 'reviewed again after exp');
});

test('a token not bound to a pod, an unknown pod, a replaced pod, a finished pod: refused', async () => {
  const s = await startServer();
  const csr = await csrFor('shop', 'client');
  const legacy = agentToken(s);
  const reg = s.reviewer.tokens.get(legacy);
  assert.ok(reg && typeof reg === 'object');
  delete reg.pod;
  const l = await rawCsr(s.address, csr, { auth: `Bearer ${legacy}` });
  assert.equal(l.code, grpc.status.UNAUTHENTICATED);
  assert.match(l.details, /not bound to a pod .*authentication\.kubernetes\.io\/pod-name.*projected token/);

  const unknown = agentToken(s, { pod: { name: 'weft-agent-zzz', uid: randomUUID() } });
  const u = await rawCsr(s.address, csr, { auth: `Bearer ${unknown}` });
  assert.equal(u.code, grpc.status.UNAUTHENTICATED);
  assert.match(u.details, /the token's pod weft-system\/weft-agent-zzz is not known to the controller/);

  // Same name, another uid: the pod the token was minted for was deleted and the name reused.
  const stale = agentToken(s, { pod: { name: 'weft-agent-a', uid: randomUUID() } });
  const st = await rawCsr(s.address, csr, { auth: `Bearer ${stale}` });
  assert.equal(st.code, grpc.status.PERMISSION_DENIED);
  assert.match(st.details, new RegExp(`the token is bound to pod weft-system/weft-agent-a with uid [-0-9a-f]+, but the pod of that name has uid ${UID_A}: the token's pod is gone`));

  const finished = agentToken(s, { pod: { name: 'weft-agent-old', uid: 'uid-old' } });
  const f = await rawCsr(s.address, csr, { auth: `Bearer ${finished}` });
  assert.equal(f.code, grpc.status.PERMISSION_DENIED);
  assert.match(f.details, /pod weft-system\/weft-agent-old has finished \(phase Failed\)/);
});

test('no credential, a malformed header, a foreign certificate, garbage: UNAUTHENTICATED with a reason', async () => {
  const s = await startServer();
  const csr = await csrFor('shop', 'client');
  const none = await rawCsr(s.address, csr);
  assert.equal(none.code, grpc.status.UNAUTHENTICATED);
  assert.match(none.details, /a node credential \(client certificate from the controller\) or a service-account token \(authorization: Bearer\) is required/);

  const token = agentToken(s);
  for (const [auth, why] of [
    [`Basic ${token}`, /not "Bearer <token>"/],
    ['Bearer', /not "Bearer <token>"/],
    [`Bearer ${token} extra`, /not "Bearer <token>"/],
    ['Bearer not-a-jwt', /not a Kubernetes service-account token \(a JWT\)/],
    [`Bearer ${'a'.repeat(CaTokenAuth.maxTokenBytes)}.b.c`, /not a Kubernetes service-account token/],
  ] as const) {
    // (Two authorization headers cannot be sent: Node's HTTP/2 refuses to; the server refuses them too.)
    const r = await rawCsr(s.address, csr, { auth });
    assert.equal(r.code, grpc.status.UNAUTHENTICATED, `${String(auth).slice(0, 60)}: ${r.details}`);
    assert.match(r.details, why);
  }
  // Unknown to the API server.
  const forged = jwt(inAnHour());
  const fr = await rawCsr(s.address, csr, { auth: `Bearer ${forged}` });
  assert.equal(fr.code, grpc.status.UNAUTHENTICATED);
  assert.match(fr.details, /did not authenticate the service-account token: invalid bearer token/);

  // A node credential from another CA is not even seen: without a token it is no credential at all.
  const foreignCa = await CertificateAuthority.loadOrCreate({ dir: join(tmp, 'foreign-ca'), trustDomain: TD });
  const forgedCert = await foreignCa.issueNodeCredential('node-a', 3600);
  const fc = await rawCsr(s.address, csr, { cert: forgedCert });
  assert.equal(fc.code, grpc.status.UNAUTHENTICATED);
  const fs = rawStream(s.address, 'node-a', { cert: forgedCert });
  assert.equal((await fs.status).code, grpc.status.UNAUTHENTICATED);
  assert.equal(await fs.firstUpdate, false);
  // A workload certificate from the right CA is not a node credential.
  const w = await createKeyAndCsr({ trustDomain: TD, namespace: 'shop', serviceAccount: 'client' });
  const { chain } = await ca.signWorkloadCsr(w.csrPem, 600);
  const wr = await rawCsr(s.address, csr, { cert: { certPem: chain[0]!, keyPem: w.keyPem, serial: '' } });
  assert.equal(wr.code, grpc.status.UNAUTHENTICATED);
  assert.match(wr.details, /not a node credential/);
});

test('node certificates keep working beside tokens; a certificate and a token must name the same node', async () => {
  const s = await startServer();
  const csr = await csrFor('shop', 'client');
  const nodeA = await ca.issueNodeCredential('node-a', 3600);
  const nodeB = await ca.issueNodeCredential('node-b', 3600);
  assert.equal((await rawCsr(s.address, csr, { cert: nodeA })).code, grpc.status.OK);
  const token = agentToken(s);
  assert.equal((await rawCsr(s.address, csr, { cert: nodeA, auth: `Bearer ${token}` })).code, grpc.status.OK);
  const mixed = await rawCsr(s.address, csr, { cert: nodeB, auth: `Bearer ${token}` });
  assert.equal(mixed.code, grpc.status.PERMISSION_DENIED);
  assert.match(mixed.details, /the client certificate names node "node-b" but the service-account token's pod weft-system\/weft-agent-a runs on node "node-a"/);
  // A bad token next to a good certificate is still a bad token.
  const bad = await rawCsr(s.address, csr, { cert: nodeA, auth: 'Bearer x.y.z' });
  assert.equal(bad.code, grpc.status.UNAUTHENTICATED);
});

test('without token authentication (the lab) the controller demands a client certificate and refuses tokens', async () => {
  const s = await startServer({ tokenAuth: false });
  const csr = await csrFor('shop', 'client');
  const token = jwt(inAnHour());
  // No client certificate: the TLS handshake itself fails, no method runs.
  const r = await rawCsr(s.address, csr, { auth: `Bearer ${token}` });
  assert.equal(r.code, grpc.status.UNAVAILABLE);
  const nodeA = await ca.issueNodeCredential('node-a', 3600);
  const both = await rawCsr(s.address, csr, { cert: nodeA, auth: `Bearer ${token}` });
  assert.equal(both.code, grpc.status.UNAUTHENTICATED);
  assert.match(both.details, /does not accept service-account tokens/);
  assert.equal((await rawCsr(s.address, csr, { cert: nodeA })).code, grpc.status.OK);
  assert.equal(s.reviewer.calls.length, 0);
});

// ---- revocation, rate limit and the pod's lifetime, per node ----------------------------------

test('revocation and the CSR rate limit apply per node to token callers', async () => {
  const s = await startServer({ revocations: true, csrRateLimit: { burst: 3, perSecond: 0.0001 } });
  const csr = await csrFor('shop', 'client');
  const token = agentToken(s);
  const nodeA = await ca.issueNodeCredential('node-a', 3600);
  for (let i = 0; i < 2; i++) assert.equal((await rawCsr(s.address, csr, { auth: `Bearer ${token}` })).code, grpc.status.OK);
  // The certificate caller for node-a shares the node's bucket with the token caller.
  assert.equal((await rawCsr(s.address, csr, { cert: nodeA })).code, grpc.status.OK);
  const limited = await rawCsr(s.address, csr, { auth: `Bearer ${token}` });
  assert.equal(limited.code, grpc.status.RESOURCE_EXHAUSTED);
  assert.match(limited.details, /node "node-a" sent more certificate requests than allowed/);
  const tokenB = agentToken(s, { pod: { name: 'weft-agent-b', uid: UID_B } });
  assert.equal((await rawCsr(s.address, await csrFor('shop', 'server'), { auth: `Bearer ${tokenB}` })).code, grpc.status.OK);

  const stream = rawStream(s.address, 'node-b', { auth: `Bearer ${tokenB}` });
  assert.equal(await stream.firstUpdate, true);
  appendRevocation(s.stateDir, { node: 'node-b' });
  s.server.enforceRevocations();
  const ended = await stream.status;
  assert.equal(ended.code, grpc.status.PERMISSION_DENIED);
  assert.match(ended.details, /node "node-b" is revoked/);
  const after = await rawCsr(s.address, await csrFor('shop', 'server'), { auth: `Bearer ${tokenB}` });
  assert.equal(after.code, grpc.status.PERMISSION_DENIED);
  assert.match(after.details, /node "node-b" is revoked \(revocation entry node-b\)/);
});

test('a stream opened with a pod\'s token ends when that pod is gone or replaced', async () => {
  const s = await startServer();
  const token = agentToken(s);
  const stream = rawStream(s.address, 'node-a', { auth: `Bearer ${token}` });
  assert.equal(await stream.firstUpdate, true);
  const certStream = rawStream(s.address, 'node-a', { cert: await ca.issueNodeCredential('node-a', 3600) });
  assert.equal(await certStream.firstUpdate, true);
  // The agent pod is deleted and a new one of the same name comes up (another uid).
  s.registry.set(cluster().map((r) => (r.metadata.name === 'weft-agent-a' ? pod(AGENT_NS, 'weft-agent-a', 'node-a', 'weft-agent') : r)));
  const ended = await stream.status;
  assert.equal(ended.code, grpc.status.PERMISSION_DENIED);
  assert.match(ended.details, /the token is bound to pod weft-system\/weft-agent-a with uid .*the token's pod is gone/);
  // The certificate caller's stream is untouched by pods.
  assert.equal(s.server.connectedAgents().length, 1);
  certStream.cancel();
});

// ---- the cache -------------------------------------------------------------------------------

test('reviews are cached by token hash: one review for many calls, refusals briefly, failures never; bounded', async () => {
  let now = Date.now();
  const s = await startServer({ tokenAuth: { now: () => now, cacheMaxEntries: 3, refusalCacheTtlMs: 5_000 } });
  const auth = s.server.tokenAuthenticator;
  assert.ok(auth);
  const csr = await csrFor('shop', 'client');
  const token = agentToken(s);
  // Ten calls at once: one review (the others wait for it), then ten more from the cache.
  const first = await Promise.all(Array.from({ length: 10 }, () => rawCsr(s.address, csr, { auth: `Bearer ${token}` })));
  assert.deepEqual(new Set(first.map((r) => r.code)), new Set([grpc.status.OK]));
  for (let i = 0; i < 10; i++) assert.equal((await rawCsr(s.address, csr, { auth: `Bearer ${token}` })).code, grpc.status.OK);
  assert.equal(s.reviewer.calls.filter((c) => c.token === token).length, 1);
  assert.equal(auth.stats.cacheHits, 19);
  // Past the success TTL: reviewed again.
  now += CaTokenAuth.cacheTtlMs + 1;
  assert.equal((await rawCsr(s.address, csr, { auth: `Bearer ${token}` })).code, grpc.status.OK);
  assert.equal(s.reviewer.calls.filter((c) => c.token === token).length, 2);

  // A refused token: refused from the cache for the refusal TTL, then asked again.
  const forged = jwt(inAnHour());
  for (let i = 0; i < 3; i++) assert.equal((await rawCsr(s.address, csr, { auth: `Bearer ${forged}` })).code, grpc.status.UNAUTHENTICATED);
  assert.equal(s.reviewer.calls.filter((c) => c.token === forged).length, 1);
  now += 5_001;
  await rawCsr(s.address, csr, { auth: `Bearer ${forged}` });
  assert.equal(s.reviewer.calls.filter((c) => c.token === forged).length, 2);

  // The API server unreachable: UNAVAILABLE, and the next call asks again (nothing cached).
  const flaky = jwt(inAnHour());
  s.reviewer.tokens.set(flaky, 'fail');
  for (let i = 0; i < 2; i++) {
    const r = await rawCsr(s.address, csr, { auth: `Bearer ${flaky}` });
    assert.equal(r.code, grpc.status.UNAVAILABLE);
    assert.match(r.details, /could not be reviewed: connect ECONNREFUSED \(while reviewing \[token\]\)/);
  }
  assert.equal(s.reviewer.calls.filter((c) => c.token === flaky).length, 2);
  assert.ok(!logLines.some((l) => l.includes(flaky)));

  // Bounded: never more than cacheMaxEntries reviews remembered.
  for (let i = 0; i < 6; i++) await rawCsr(s.address, csr, { auth: `Bearer ${agentToken(s)}` });
  assert.equal(auth.cached, 3);
});

test('a review that never answers fails the call with UNAVAILABLE after the review timeout', async () => {
  const s = await startServer({ tokenAuth: { reviewTimeoutMs: 150 } });
  const hang = jwt(inAnHour());
  s.reviewer.tokens.set(hang, 'hang');
  const t = performance.now();
  const r = await rawCsr(s.address, await csrFor('shop', 'client'), { auth: `Bearer ${hang}` });
  assert.equal(r.code, grpc.status.UNAVAILABLE);
  assert.match(r.details, /no answer within 150 ms/);
  assert.ok(performance.now() - t < 10_000);
});

// ---- end to end: TokenReview over HTTPS against the Kubernetes API stand-in ---------------------

test('TokenReview through @kubernetes/client-node against the Kubernetes API stand-in: accepted, and every refusal', async () => {
  const controllerUser = 'system:serviceaccount:weft-system:weft-controller';
  let rbac = true;
  const api = await KubeStandin.start({
    // The controller's ClusterRole: create tokenreviews (and nothing else is asked of the API here).
    authorize: (a: AuthorizationAttributes) => a.user.username === 'standin-admin' || (rbac && a.user.username === controllerUser && a.verb === 'create' && a.resource === 'tokenreviews'),
  });
  closers.push(() => void api.close());
  const controllerToken = jwt(inAnHour());
  api.registerToken(controllerToken, { username: controllerUser, groups: ['system:serviceaccounts', 'system:authenticated'] });
  const reviewer = new KubernetesTokenReviewer(loadKubeConfig(api.writeKubeconfig({ token: controllerToken })));
  const s = await startServer({ tokenAuth: { reviewer } });
  const auth = s.server.tokenAuthenticator;
  assert.ok(auth);
  const csr = await csrFor('shop', 'client');
  const register = (over: { audiences?: string[]; username?: string; expiresAt?: Date; pod?: string; uid?: string } = {}): string => {
    const token = jwt(inAnHour());
    api.registerToken(token, {
      username: over.username ?? AGENT_SA,
      uid: randomUUID(),
      groups: ['system:serviceaccounts', `system:serviceaccounts:${AGENT_NS}`, 'system:authenticated'],
      audiences: over.audiences ?? [CaTokenAuth.audience],
      extra: { [BoundTokenExtra.podName]: [over.pod ?? 'weft-agent-a'], [BoundTokenExtra.podUid]: [over.uid ?? UID_A] },
      expiresAt: over.expiresAt ?? new Date(Date.now() + 3600_000),
    });
    return token;
  };

  const good = register();
  assert.equal((await rawCsr(s.address, csr, { auth: `Bearer ${good}` })).code, grpc.status.OK);
  const asked = api.tokenReviews.at(-1);
  assert.deepEqual(asked?.spec.audiences, [CaTokenAuth.audience]);
  assert.equal(asked?.status.authenticated, true);

  const refusals: Array<[string, grpc.status, RegExp]> = [
    [register({ audiences: [STANDIN_API_AUDIENCE] }), grpc.status.UNAUTHENTICATED, /did not authenticate .*token audiences is invalid for the target audiences/],
    [register({ expiresAt: new Date(Date.now() - 1000) }), grpc.status.UNAUTHENTICATED, /did not authenticate .*token has expired/],
    [register({ username: 'system:serviceaccount:shop:client', pod: 'client' }), grpc.status.PERMISSION_DENIED, /only the weft agent's service account/],
    [register({ pod: 'weft-agent-b', uid: UID_B }), grpc.status.PERMISSION_DENIED, /node "node-b" may not obtain a certificate for spiffe:\/\/cluster\.local\/ns\/shop\/sa\/client/],
    [register({ uid: randomUUID() }), grpc.status.PERMISSION_DENIED, /the token's pod is gone/],
    [jwt(inAnHour()), grpc.status.UNAUTHENTICATED, /did not authenticate .*token lookup failed/],
  ];
  for (const [token, code, why] of refusals) {
    const r = await rawCsr(s.address, csr, { auth: `Bearer ${token}` });
    assert.equal(r.code, code, r.details);
    assert.match(r.details, why);
  }

  // Revoked at the API server (the pod deleted): refused once the cached review is gone.
  api.revokeToken(good);
  auth.clearCache();
  assert.equal((await rawCsr(s.address, csr, { auth: `Bearer ${good}` })).code, grpc.status.UNAUTHENTICATED);

  // The controller without RBAC for tokenreviews: UNAVAILABLE with the API's reason, the token nowhere.
  rbac = false;
  const fresh = register();
  const forbidden = await rawCsr(s.address, csr, { auth: `Bearer ${fresh}` });
  assert.equal(forbidden.code, grpc.status.UNAVAILABLE);
  assert.match(forbidden.details, /TokenReview failed: HTTP 403: User "system:serviceaccount:weft-system:weft-controller" cannot create resource "tokenreviews\.authentication\.k8s\.io"/);
  assert.ok(!forbidden.details.includes(fresh));
  rbac = true;

  // The API server down: UNAVAILABLE (nothing cached), then accepted once it is back.
  const later = register();
  await api.stop();
  const down = await rawCsr(s.address, csr, { auth: `Bearer ${later}` });
  assert.equal(down.code, grpc.status.UNAVAILABLE);
  assert.match(down.details, /could not be reviewed/);
  await api.resume();
  assert.equal((await rawCsr(s.address, csr, { auth: `Bearer ${later}` })).code, grpc.status.OK);
});

test('the whole chain: weft controller --source kubernetes finds the agent\'s pod in the cluster and reviews its token there', async () => {
  const api = await KubeStandin.start({ bookmarkIntervalMs: 3_600_000 });
  closers.push(() => void api.close());
  const kpod = (namespace: string, name: string, node: string, sa: string, ip: string, hostNetwork = false): KubeObject => ({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace, labels: { app: name } },
    spec: { nodeName: node, serviceAccountName: sa, hostNetwork, containers: [{ name: 'c', image: 'weft' }] },
    status: { phase: 'Running', hostIP: '172.18.0.2', podIP: ip, podIPs: [{ ip }] },
  });
  for (const n of [AGENT_NS, 'shop']) api.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: n }, status: { phase: 'Active' } });
  for (const [n, ip] of [['node-a', '172.18.0.2'], ['node-b', '172.18.0.3']] as const) {
    api.put({ apiVersion: 'v1', kind: 'Node', metadata: { name: n }, spec: { podCIDR: '10.244.1.0/24' }, status: { addresses: [{ type: 'InternalIP', address: ip }] } });
  }
  const agentPod = api.put(kpod(AGENT_NS, 'weft-agent-x1', 'node-a', 'weft-agent', '172.18.0.2', true));
  api.put(kpod('shop', 'client', 'node-a', 'client', '10.244.1.5'));
  api.put(kpod('shop', 'server', 'node-b', 'server', '10.244.2.5'));
  const token = jwt(inAnHour());
  api.registerToken(token, {
    username: AGENT_SA,
    audiences: [CaTokenAuth.audience],
    extra: { [BoundTokenExtra.podName]: ['weft-agent-x1'], [BoundTokenExtra.podUid]: [String(agentPod.metadata.uid)] },
    expiresAt: new Date(Date.now() + 3600_000),
  });
  const controller = await Controller.start({
    source: 'kubernetes',
    kubeconfig: api.writeKubeconfig(),
    stateDir: mkdtempSync(join(tmp, 'kube-state-')),
    listen: '127.0.0.1:0',
    monitoring: '127.0.0.1:0',
    log,
    kubeSource: { retryInitialMs: 50, retryMaxMs: 400, batchMs: 10 },
  });
  closers.push(() => controller.close());
  const address = `127.0.0.1:${controller.server.port}`;
  assert.ok(controller.server.tokenAuthenticator, 'the Kubernetes source turns token authentication on');
  const file = join(tmp, 'kube-agent-token');
  writeToken(file, token);
  const client = tokenClient(address, file, 'node-a', controller.ca.rootCertPem);
  assert.equal((await ask(client, await csrFor('shop', 'client'))).code, grpc.status.OK);
  const other = await ask(client, await csrFor('shop', 'server'));
  assert.equal(other.code, grpc.status.PERMISSION_DENIED);
  assert.match(other.details, /node "node-a" may not obtain a certificate for spiffe:\/\/cluster\.local\/ns\/shop\/sa\/server/);
  assert.ok(api.tokenReviews.some((r) => r.status.authenticated === true));

  // The agent's pod deleted: its stream ends and its token no longer speaks for node-a.
  const stream = rawStream(address, 'node-a', { auth: `Bearer ${token}`, rootPem: controller.ca.rootCertPem });
  assert.equal(await stream.firstUpdate, true);
  api.remove('v1', 'Pod', AGENT_NS, 'weft-agent-x1');
  const ended = await stream.status;
  assert.equal(ended.code, grpc.status.PERMISSION_DENIED);
  assert.match(ended.details, /weft-system\/weft-agent-x1 is not known to the controller/);
  const after = await ask(client, await csrFor('shop', 'client'));
  assert.equal(after.code, grpc.status.UNAUTHENTICATED);
  assert.match(after.details, /the token's pod weft-system\/weft-agent-x1 is not known to the controller/);
  await controller.kube?.close();
});

test('weft controller: the audience and the agent service account are settings of the Kubernetes source, checked', async () => {
  await assert.rejects(
    controllerCommand(['--source', `dir:${tmp}`, '--state', join(tmp, 'unused-state'), '--token-audience', 'mesh-ca']),
    /--token-audience and --agent-service-account go with --source kubernetes/,
  );
  const api = await KubeStandin.start({ bookmarkIntervalMs: 3_600_000 });
  closers.push(() => void api.close());
  const start = (tokenReview: { audience?: string; agentServiceAccount?: string }): Promise<Controller> =>
    Controller.start({
      source: 'kubernetes',
      kubeconfig: api.writeKubeconfig(),
      stateDir: mkdtempSync(join(tmp, 'kube-settings-')),
      listen: '127.0.0.1:0',
      monitoring: '127.0.0.1:0',
      log,
      kubeSource: { retryInitialMs: 50, retryMaxMs: 400, batchMs: 10 },
      tokenReview,
    });
  await assert.rejects(start({ agentServiceAccount: 'node-agent' }), /--agent-service-account: "node-agent" is not system:serviceaccount:<namespace>:<name>/);
  const c = await start({ audience: 'mesh-ca', agentServiceAccount: 'system:serviceaccount:mesh:node-agent' });
  closers.push(() => c.close());
  assert.equal(c.server.tokenAuthenticator?.audience, 'mesh-ca');
  assert.equal(c.server.tokenAuthenticator?.agentServiceAccount, 'system:serviceaccount:mesh:node-agent');
  await c.kube?.close();
});

// ---- the agent's side ------------------------------------------------------------------------

test('the agent re-reads its token file when the kubelet rotates it', async () => {
  const s = await startServer();
  const file = join(tmp, 'rotating-token');
  const first = agentToken(s);
  writeToken(file, first);
  const client = tokenClient(s.address, file);
  const csr = await csrFor('shop', 'client');
  assert.equal((await ask(client, csr)).code, grpc.status.OK);
  const second = agentToken(s);
  writeToken(file, second);
  assert.equal((await ask(client, csr)).code, grpc.status.OK);
  assert.deepEqual(
    s.reviewer.calls.map((c) => minted.indexOf(c.token)),
    [first, second].map((t) => minted.indexOf(t)),
    'the second call carried the rotated token',
  );
  // A token the API server does not know: the very next call carries it, and is refused.
  writeToken(file, jwt(inAnHour()));
  assert.equal((await ask(client, csr)).code, grpc.status.UNAUTHENTICATED);
  // The file gone: the call fails locally, naming the file.
  rmSync(file);
  await assert.rejects(client.createCertificate(csr, 600), (err: Error) => err.message.includes(`--ca-token ${file}: ENOENT`));
});

test('the agent sends its token only to a controller whose certificate chains to the mesh root', async () => {
  const impostorCa = await CertificateAuthority.loadOrCreate({ dir: join(tmp, 'impostor-ca'), trustDomain: TD });
  const impostorCert = await impostorCa.issueServingCert({ ips: ['127.0.0.1'], dnsNames: ['localhost'], ttlSeconds: 3600 });
  const seen: string[] = [];
  const impostor = http2.createSecureServer({ cert: impostorCert.certPem, key: impostorCert.keyPem, allowHTTP1: false });
  impostor.on('stream', (stream, headers) => {
    seen.push(String(headers.authorization ?? ''));
    stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '14' }, { endStream: true });
  });
  impostor.on('sessionError', () => undefined);
  await new Promise<void>((resolve) => impostor.listen(0, '127.0.0.1', resolve));
  closers.push(() => impostor.close());
  const port = (impostor.address() as { port: number }).port;
  const file = join(tmp, 'impostor-token');
  const token = jwt(inAnHour());
  writeToken(file, token);
  const client = tokenClient(`127.0.0.1:${port}`, file);
  const r = await ask(client, await csrFor('shop', 'client'));
  assert.equal(r.code, grpc.status.UNAVAILABLE);
  assert.deepEqual(seen, [], 'no request, hence no token, reached the impostor');
});

test('weft agent: --ca-token or a node credential is required, and an unreadable token file is named', async () => {
  const rootFile = join(tmp, 'root-cert.pem');
  writeFileSync(rootFile, ca.rootCertPem);
  await assert.rejects(agentCommand(['--controller', '127.0.0.1:1', '--root-cert', rootFile]), /authenticates with --node-cert and --node-key, or with --ca-token/);
  await assert.rejects(agentCommand(['--controller', '127.0.0.1:1', '--ca-token', '/x']), /--controller and --root-cert are required/);
  await assert.rejects(agentCommand(['--controller', '127.0.0.1:1', '--root-cert', rootFile, '--node-cert', rootFile]), /--node-cert and --node-key go together/);
  const missing = join(tmp, 'no-such-dir', 'token');
  await assert.rejects(agentCommand(['--controller', '127.0.0.1:1', '--root-cert', rootFile, '--ca-token', missing, '--log-level', 'error']), (err: Error) =>
    err.message.includes(`--ca-token ${missing}: ENOENT`),
  );
  mkdirSync(join(tmp, 'empty'), { recursive: true });
  const empty = join(tmp, 'empty', 'token');
  writeFileSync(empty, '\n');
  await assert.rejects(agentCommand(['--controller', '127.0.0.1:1', '--root-cert', rootFile, '--ca-token', empty, '--log-level', 'error']), /--ca-token .*: the file is empty/);
});

test('token authentication settings are checked: the service account\'s form, the audience', () => {
  const reviewer = new ReviewerStandin();
  assert.deepEqual(parseServiceAccountUser('system:serviceaccount:weft-system:weft-agent'), { namespace: 'weft-system', name: 'weft-agent' });
  for (const bad of ['weft-agent', 'system:serviceaccount:weft-system', 'system:serviceaccount:Weft:agent', 'system:serviceaccount:a:b:c', 'system:node:n']) {
    assert.equal(parseServiceAccountUser(bad), undefined, bad);
    assert.throws(() => new TokenAuthenticator({ reviewer, agentServiceAccount: bad }, log), /--agent-service-account: .* is not system:serviceaccount:<namespace>:<name>/);
  }
  assert.throws(() => new TokenAuthenticator({ reviewer, audience: '' }, log), /--token-audience: "" must be one word/);
  assert.throws(() => new TokenAuthenticator({ reviewer, audience: 'a b' }, log), /--token-audience/);
});

test('no token ever reaches a log line', () => {
  assert.ok(minted.length > 20);
  assert.ok(logLines.length > 20);
  for (const t of minted) assert.ok(!logLines.some((l) => l.includes(t)), 'a token was logged');
  // What is logged instead: a short hash prefix to follow one token.
  assert.ok(logLines.some((l) => /"tokenId":"[0-9a-f]{12}"/.test(l)));
});
