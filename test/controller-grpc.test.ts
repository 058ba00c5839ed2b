// A real controller on 127.0.0.1 with a temporary CA: discovery snapshot then deltas, node-authorized
// certificates, and the mutual-TLS gate (no certificate, a foreign CA, a workload certificate, a node
// asking for another node's stream).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { get } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { CertificateAuthority } from '../agent/controller/ca.js';
import { ControllerClient, ControllerCallError, type DiscoveryState } from '../agent/controller/client.js';
import { Controller } from '../agent/controller/controller.js';
import { controllerProtos } from '../agent/controller/proto.js';
import type { ControllerStatus } from '../agent/controller/monitoring.js';
import { createKeyAndCsr } from '../agent/identity/csr.js';
import { createLogger } from '../agent/log.js';
import type { PodResource } from '../agent/registry/types.js';

const TD = 'cluster.local';
const tmp = mkdtempSync(join(tmpdir(), 'weft-controller-'));
const resources = join(tmp, 'resources');
const log = createLogger('test', { level: 'silent' });
let controller: Controller;
let address: string;
let nodeA: { certPem: string; keyPem: string };
const clients: ControllerClient[] = [];

const pod = (ns: string, name: string, node: string, sa: string): string =>
  `apiVersion: v1\nkind: Pod\nmetadata: {name: ${name}, namespace: ${ns}}\nspec:\n  nodeName: ${node}\n  serviceAccountName: ${sa}\n  containers: [{name: c, command: [sleep, "1"]}]\n`;
const authz = (ns: string, name: string, action = 'DENY'): string =>
  `apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: ${name}, namespace: ${ns}}\nspec: {action: ${action}}\n`;

before(async () => {
  mkdirSync(resources);
  writeFileSync(
    join(resources, 'cluster.yaml'),
    [
      'apiVersion: weft.io/v1alpha1\nkind: Node\nmetadata: {name: node-a}\nspec: {podCIDR: 10.1.1.0/24}\n',
      'apiVersion: weft.io/v1alpha1\nkind: Node\nmetadata: {name: node-b}\nspec: {podCIDR: 10.1.2.0/24}\n',
      'apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n',
      pod('shop', 'client', 'node-a', 'client'),
      pod('shop', 'server', 'node-b', 'server'),
      pod('elsewhere', 'x', 'node-b', 'default'),
      'apiVersion: v1\nkind: Service\nmetadata: {name: server, namespace: shop}\nspec:\n  selector: {app: server}\n  ports: [{port: 80}]\n',
    ].join('---\n'),
  );
  writeFileSync(join(resources, 'policies.yaml'), [authz('shop', 'local'), authz('istio-system', 'mesh-wide'), authz('elsewhere', 'not-for-a')].join('---\n'));
  controller = await Controller.start({ source: `dir:${resources}`, stateDir: join(tmp, 'state'), listen: '127.0.0.1:0', monitoring: '127.0.0.1:0', maxCertTtlSeconds: 3600, log });
  address = `127.0.0.1:${controller.server.port}`;
  nodeA = await controller.ca.issueNodeCredential('node-a', 3600);
});

after(() => {
  for (const c of clients) c.close();
  controller?.close();
  rmSync(tmp, { recursive: true, force: true });
});

function clientFor(node: string, cred: { certPem: string; keyPem: string }): ControllerClient {
  const c = new ControllerClient({ address, node, rootCertPem: controller.ca.rootCertPem, ...cred, log, backoff: { initialMs: 100, maxMs: 200 } });
  clients.push(c);
  return c;
}

/** Opens a raw discovery stream; resolves with the final status code and how many updates arrived. */
function rawStream(credentials: grpc.ChannelCredentials, node: string): Promise<{ code: grpc.status; details: string; updates: number }> {
  const { stream } = controllerProtos();
  const client = new grpc.Client(address, credentials);
  const call = client.makeServerStreamRequest(stream.path, stream.requestSerialize, stream.responseDeserialize, { node }, { deadline: Date.now() + 5000 });
  let updates = 0;
  return new Promise((resolve) => {
    call.on('data', () => {
      updates++;
      call.cancel();
    });
    call.on('error', () => undefined);
    call.on('status', (s: grpc.StatusObject) => {
      client.close();
      resolve({ code: s.code, details: s.details, updates });
    });
  });
}

function httpGet(path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    get(`http://127.0.0.1:${controller.monitoring.port}${path}`, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    }).on('error', reject);
  });
}

test('discovery: snapshot of what node-a needs, then a delta when a file changes', async () => {
  const updates: DiscoveryState[] = [];
  let notify: (() => void) | undefined;
  const client = clientFor('node-a', nodeA);
  client.watch((u) => {
    updates.push(u);
    notify?.();
  });
  const next = (n: number): Promise<void> =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`update #${n} did not arrive`)), 5000);
      notify = () => {
        if (updates.length >= n) {
          clearTimeout(timer);
          resolve();
        }
      };
      notify();
    });
  await next(1);
  const first = updates[0]!;
  assert.equal(first.trustDomain, TD);
  assert.deepEqual(first.problems, []);
  const keys = first.resources.map((r) => `${r.kind}/${r.metadata.namespace ?? ''}/${r.metadata.name}`).sort();
  assert.deepEqual(keys, [
    'AuthorizationPolicy/istio-system/mesh-wide',
    'AuthorizationPolicy/shop/local',
    'Namespace//shop',
    'Node//node-a',
    'Node//node-b',
    'Pod/elsewhere/x',
    'Pod/shop/client',
    'Pod/shop/server',
    'Service/shop/server',
  ]);

  // Move the pod of namespace "elsewhere" onto node-a: its namespace's policy now reaches node-a.
  writeFileSync(
    join(resources, 'cluster.yaml'),
    (await import('node:fs')).readFileSync(join(resources, 'cluster.yaml'), 'utf8').replace('name: x, namespace: elsewhere}\nspec:\n  nodeName: node-b', 'name: x, namespace: elsewhere}\nspec:\n  nodeName: node-a'),
  );
  await next(2);
  const second = updates[1]!;
  assert.ok(second.version > first.version);
  assert.equal((second.resources.find((r) => r.metadata.name === 'x') as PodResource).spec.nodeName, 'node-a');
  assert.ok(second.resources.some((r) => r.kind === 'AuthorizationPolicy' && r.metadata.name === 'not-for-a'));

  // A broken policy: rejected, reported with file and line, the last good version stays.
  writeFileSync(join(resources, 'policies.yaml'), [authz('shop', 'local', 'PERMIT'), authz('istio-system', 'mesh-wide'), authz('elsewhere', 'not-for-a')].join('---\n'));
  await next(3);
  const third = updates[2]!;
  assert.equal(third.problems.length, 1);
  assert.deepEqual({ ...third.problems[0]!, reason: '' }, { file: join(resources, 'policies.yaml'), line: 4, field: 'spec.action', reason: '' });
  assert.ok(third.resources.some((r) => r.kind === 'AuthorizationPolicy' && r.metadata.name === 'local'));

  const status = JSON.parse((await httpGet('/debug/status')).body) as ControllerStatus;
  assert.deepEqual(status.connectedAgents.map((a) => a.node), ['node-a']);
  assert.equal(status.configProblems.length, 1);
  assert.equal(status.trustDomain, TD);
  const metrics = (await httpGet('/metrics')).body;
  assert.match(metrics, /weft_config_rejections_total\{kind="AuthorizationPolicy"\} 1/);
  assert.match(metrics, /weft_controller_connected_agents 1/);
  assert.equal((await httpGet('/healthz/ready')).status, 200);
});

test('CreateCertificate: issued for a service account on the caller node, PERMISSION_DENIED otherwise', async () => {
  const client = clientFor('node-a', nodeA);
  const own = await createKeyAndCsr({ trustDomain: TD, namespace: 'shop', serviceAccount: 'client' });
  const chain = await client.createCertificate(own.csrPem, 7 * 24 * 3600);
  assert.equal(chain.length, 2);
  assert.equal(chain[1], controller.ca.rootCertPem);
  const { X509Certificate } = await import('node:crypto');
  const leaf = new X509Certificate(chain[0]!);
  assert.match(leaf.subjectAltName ?? '', /URI:spiffe:\/\/cluster\.local\/ns\/shop\/sa\/client/);
  const lifetime = (Date.parse(leaf.validTo) - Date.now()) / 1000;
  assert.ok(lifetime <= 3600 + 5, `TTL capped by --max-cert-ttl (got ${lifetime} s)`);

  const foreign = await createKeyAndCsr({ trustDomain: TD, namespace: 'shop', serviceAccount: 'server' });
  const err = await client.createCertificate(foreign.csrPem, 600).then(
    () => assert.fail('must be refused'),
    (e: unknown) => e,
  );
  assert.ok(err instanceof ControllerCallError);
  assert.equal(err.grpcCode, grpc.status.PERMISSION_DENIED);
  assert.match(err.details, /node "node-a".*spiffe:\/\/cluster\.local\/ns\/shop\/sa\/server.*node-b/);

  const malformed = await client.createCertificate('-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n', 600).catch((e: unknown) => e);
  assert.ok(malformed instanceof ControllerCallError);
  assert.equal(malformed.grpcCode, grpc.status.INVALID_ARGUMENT);
});

test('the stream is refused when the requested node is not the certificate node', async () => {
  const creds = grpc.credentials.createSsl(Buffer.from(controller.ca.rootCertPem), Buffer.from(nodeA.keyPem), Buffer.from(nodeA.certPem));
  const r = await rawStream(creds, 'node-b');
  assert.equal(r.code, grpc.status.PERMISSION_DENIED);
  assert.equal(r.updates, 0);
  assert.match(r.details, /node "node-b".*node "node-a"/);
  const ok = await rawStream(grpc.credentials.createSsl(Buffer.from(controller.ca.rootCertPem), Buffer.from(nodeA.keyPem), Buffer.from(nodeA.certPem)), 'node-a');
  assert.equal(ok.updates, 1);
});

test('no client certificate, a foreign CA, or a workload certificate: no discovery', async () => {
  const root = Buffer.from(controller.ca.rootCertPem);
  const none = await rawStream(grpc.credentials.createSsl(root), 'node-a');
  assert.notEqual(none.code, grpc.status.OK);
  assert.equal(none.updates, 0);

  const foreignCa = await CertificateAuthority.loadOrCreate({ dir: join(tmp, 'foreign'), trustDomain: TD });
  const forged = await foreignCa.issueNodeCredential('node-a', 3600);
  const foreign = await rawStream(grpc.credentials.createSsl(root, Buffer.from(forged.keyPem), Buffer.from(forged.certPem)), 'node-a');
  assert.notEqual(foreign.code, grpc.status.OK);
  assert.equal(foreign.updates, 0);

  // Signed by the right root, but a workload's identity, not a node's.
  const w = await createKeyAndCsr({ trustDomain: TD, namespace: 'shop', serviceAccount: 'client' });
  const { chain } = await controller.ca.signWorkloadCsr(w.csrPem, 600);
  const workload = await rawStream(grpc.credentials.createSsl(root, Buffer.from(w.keyPem), Buffer.from(chain[0]!)), 'node-a');
  assert.equal(workload.code, grpc.status.UNAUTHENTICATED);
  assert.equal(workload.updates, 0);
});
