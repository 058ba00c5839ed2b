// The pod proxy's decisions, without sockets or root: where an outbound connection goes (route), which
// inbound destinations are reachable at all (admission), and the one record per connection that emits
// its flow, access-log line and counters exactly once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import type { ConnectionEvent } from '../agent/flows/builder.js';
import type { Resource } from '../agent/registry/types.js';
import { ClusterState } from '../agent/state/cluster-state.js';
import { destinationProblem, isLoopback } from '../agent/ztunnel/admission.js';
import { ConnectionRecord, newProxyStats } from '../agent/ztunnel/connection-record.js';
import { route } from '../agent/ztunnel/outbound.js';

const ns = (name: string, labels: Record<string, string> = {}): Resource => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } }) as Resource;
const pod = (namespace: string, name: string, ip: string, labels: Record<string, string>, sa = 'default'): Resource =>
  ({ apiVersion: 'v1', kind: 'Pod', metadata: { namespace, name, labels }, spec: { nodeName: 'node-a', serviceAccountName: sa, containers: [{ name: 'main', command: ['x'] }] }, status: { podIP: ip } }) as Resource;
const svc = (namespace: string, name: string, vip: string, selector: Record<string, string>, port: number, targetPort: number): Resource =>
  ({ apiVersion: 'v1', kind: 'Service', metadata: { namespace, name }, spec: { clusterIP: vip, selector, ports: [{ port, targetPort }] } }) as Resource;

const state = new ClusterState([
  ns('shop', { 'istio.io/dataplane-mode': 'ambient' }),
  ns('legacy'),
  pod('shop', 'api-1', '10.1.0.10', { app: 'api' }, 'api'),
  pod('shop', 'api-2', '10.1.0.11', { app: 'api' }, 'api'),
  pod('shop', 'opted-out', '10.1.0.12', { app: 'old', 'istio.io/dataplane-mode': 'none' }),
  pod('legacy', 'db', '10.1.0.20', { app: 'db' }),
  svc('shop', 'api', '10.96.0.10', { app: 'api' }, 80, 8080),
  svc('shop', 'empty', '10.96.0.11', { app: 'nobody' }, 80, 8080),
]);

test('route: a service VIP becomes its endpoints in turn; an enrolled destination elsewhere goes over HBONE with its identity', () => {
  const first = route({ ip: '10.96.0.10', port: 80 }, state, () => false);
  const second = route({ ip: '10.96.0.10', port: 80 }, state, () => false);
  assert.equal(first.kind, 'hbone');
  assert.equal(second.kind, 'hbone');
  if (first.kind !== 'hbone' || second.kind !== 'hbone') return;
  assert.deepEqual([first.target.addr, second.target.addr], [{ ip: '10.1.0.10', port: 8080 }, { ip: '10.1.0.11', port: 8080 }]);
  assert.equal(first.service?.key, 'shop/api');
  assert.equal(first.dst.key, 'shop/api-1');
  assert.deepEqual(first.identity, { trustDomain: 'cluster.local', namespace: 'shop', serviceAccount: 'api' });
});

test('route: an enrolled pod whose proxy runs on this node is handed off locally (when the fast path is on)', () => {
  const local = route({ ip: '10.1.0.10', port: 8080 }, state, (ip) => ip === '10.1.0.10');
  assert.equal(local.kind, 'local');
  const elsewhere = route({ ip: '10.1.0.11', port: 8080 }, state, (ip) => ip === '10.1.0.10');
  assert.equal(elsewhere.kind, 'hbone');
});

test('route: destinations outside the mesh pass through in plaintext; a service port without endpoints is unroutable', () => {
  const legacy = route({ ip: '10.1.0.20', port: 5432 }, state, () => true);
  assert.equal(legacy.kind, 'passthrough');
  if (legacy.kind === 'passthrough') assert.equal(legacy.dst?.key, 'legacy/db');
  assert.equal(route({ ip: '10.1.0.12', port: 80 }, state, () => true).kind, 'passthrough', 'an opted-out pod is not mesh');
  const outside = route({ ip: '93.184.216.34', port: 443 }, state, () => true);
  assert.equal(outside.kind, 'passthrough');
  if (outside.kind === 'passthrough') assert.equal(outside.dst, undefined);
  assert.equal(route({ ip: '10.96.0.11', port: 80 }, state, () => true).kind, 'unroutable');
  assert.equal(route({ ip: '10.96.0.10', port: 81 }, state, () => true).kind, 'unroutable', 'a port the service does not have');
});

test('admission: only the pod itself, never loopback, never a proxy port', () => {
  const podIp = '10.1.0.10';
  assert.equal(destinationProblem({ ip: podIp, port: 8080 }, podIp), undefined);
  for (const port of [15000, 15001, 15006, 15008, 15020, 15021]) assert.match(destinationProblem({ ip: podIp, port }, podIp) ?? '', /proxy's own/, String(port));
  assert.match(destinationProblem({ ip: '127.0.0.1', port: 8080 }, podIp) ?? '', /loopback/);
  assert.match(destinationProblem({ ip: '::ffff:127.0.0.5', port: 8080 }, podIp) ?? '', /loopback/);
  assert.match(destinationProblem({ ip: '10.1.0.11', port: 8080 }, podIp) ?? '', /not this pod/);
  assert.match(destinationProblem({ ip: podIp, port: 0 }, podIp) ?? '', /not a port/);
  assert.equal(isLoopback('::1'), true);
  assert.equal(isLoopback('10.0.0.1'), false);
  assert.equal(isLoopback('not an ip'), false);
});

function sink() {
  const flows: ConnectionEvent[] = [];
  const lines: Array<Record<string, unknown>> = [];
  const out = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
      done();
    },
  });
  const stats = newProxyStats();
  return { flows, lines, stats, sink: { flows: (e: ConnectionEvent) => flows.push(e), log: pino({ level: 'info' }, out), stats } };
}

const api = state.workloadByKey('shop/api-1')!;
const db = state.workloadByKey('legacy/db')!;

test('connection record, forwarded outbound over HBONE: one flow from resolved workloads, one log line, the counters, once', async () => {
  const s = sink();
  const r = new ConnectionRecord(s.sink, 'outbound', { src: { ip: api.ip!, port: 40000 }, srcWorkload: api, srcIdentity: state.identityOf(api) });
  r.update({ originalDst: { ip: '10.96.0.10', port: 80 }, dst: { ip: '10.1.0.11', port: 8080 }, dstWorkload: state.workloadByKey('shop/api-2')!, service: state.serviceByKey('shop/api')!, transport: 'hbone', dstIdentity: state.identityOf(api) });
  r.forwarded({ srcToDst: 100, dstToSrc: 2000 });
  r.forwarded({ srcToDst: 1, dstToSrc: 1 });
  r.failed('late');
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(s.flows.length, 1, 'exactly one flow');
  const f = s.flows[0]!;
  assert.equal(f.verdict, 'FORWARDED');
  assert.equal(f.srcWorkload?.key, 'shop/api-1', 'a workload, not a key to look up');
  assert.equal(f.dstWorkload?.key, 'shop/api-2');
  assert.deepEqual([f.service?.name, f.service?.namespace], ['api', 'shop']);
  assert.deepEqual(f.dst, { ip: '10.1.0.11', port: 8080 }, 'the endpoint, as Hubble shows socket load balancing');
  assert.equal(f.info.bytes_sent, 100);
  assert.equal(f.info.bytes_received, 2000);
  assert.equal(f.info.security, 'mutual_tls');
  assert.equal(f.info.source_principal, 'cluster.local/ns/shop/sa/api');
  assert.equal(s.lines.length, 1, 'exactly one log line');
  const l = s.lines[0]!;
  assert.equal(l.msg, 'connection complete');
  assert.deepEqual([l.direction, l.transport, l.dst, l.endpoint, l.service, l.bytesSent, l.bytesReceived], ['outbound', 'hbone', '10.96.0.10:80', '10.1.0.11:8080', 'shop/api', 100, 2000]);
  assert.equal(s.stats.outbound.accepted, 1);
  assert.equal(s.stats.outbound.forwarded, 1);
  assert.equal(s.stats.outbound.hbone, 1);
  assert.equal(s.stats.outbound.upstreamFailed, 0, 'an outcome after the first is ignored');
});

test('connection record, inbound: denied is a DROPPED flow with the reason; invalid and failed count apart; outbound denial leaves the flow to the destination', async () => {
  const s = sink();
  const inbound = (transport: 'plaintext' | 'hbone') =>
    new ConnectionRecord(s.sink, 'inbound', { transport, src: { ip: db.ip!, port: 50000 }, dst: { ip: api.ip!, port: 8080 }, srcWorkload: db, dstWorkload: api, dstIdentity: state.identityOf(api) });
  inbound('plaintext').denied('PeerAuthentication STRICT: plaintext refused', 'AUTH_REQUIRED');
  inbound('hbone').update({ policy: 'shop/deny-legacy' }).denied('denied by shop/deny-legacy');
  inbound('plaintext').invalid("destination port 15006 is the proxy's own");
  inbound('hbone').failed('ECONNREFUSED');
  new ConnectionRecord(s.sink, 'outbound', { src: { ip: api.ip!, port: 1 }, srcWorkload: api }).denied('HBONE CONNECT refused with status 401');
  new ConnectionRecord(s.sink, 'outbound', { src: { ip: api.ip!, port: 2 }, srcWorkload: api }).unroutable('noEndpoint', { dst: { ip: '10.96.0.11', port: 80 } });
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(
    s.flows.map((f) => [f.direction, f.verdict, f.dropReason ?? null, f.info.reason ?? null, f.info.policy ?? null]),
    [
      ['inbound', 'DROPPED', 'AUTH_REQUIRED', 'PeerAuthentication STRICT: plaintext refused', null],
      ['inbound', 'DROPPED', 'POLICY_DENIED', 'denied by shop/deny-legacy', 'shop/deny-legacy'],
      ['inbound', 'DROPPED', 'POLICY_DENIED', "destination port 15006 is the proxy's own", null],
      ['inbound', 'ERROR', null, 'app did not accept: ECONNREFUSED', null],
    ],
  );
  assert.deepEqual(s.stats.inbound, { accepted: 4, forwarded: 0, hbone: 0, local: 0, plaintext: 0, denied: 2, badRequest: 1, upstreamFailed: 1, closedByPolicy: 0 });
  assert.equal(s.stats.outbound.denied, 1);
  assert.equal(s.stats.outbound.noEndpoint, 1);
  assert.deepEqual(
    s.lines.map((l) => l.msg),
    ['inbound connection denied', 'inbound connection denied', 'inbound connection refused', 'app did not accept the connection', 'outbound connection refused', 'service has no endpoint for this port'],
  );
});

test('connection record, same-node splice: spliced bytes are counted once, and logged as the destination sees them', async () => {
  const s = sink();
  const r = new ConnectionRecord(s.sink, 'inbound', { transport: 'local', src: { ip: db.ip!, port: 50000 }, dst: { ip: api.ip!, port: 8080 }, srcWorkload: db, dstWorkload: api });
  r.forwarded({ srcToDst: 1000, dstToSrc: 5000, spliced: { srcToDst: 900, dstToSrc: 4000 } });
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(s.stats.spliced, { connections: 1, bytes: 4900 });
  assert.equal(s.stats.inbound.local, 1);
  assert.equal(s.flows[0]!.info.security, 'node_local');
  assert.deepEqual([s.lines[0]!.bytesReceived, s.lines[0]!.bytesSent, s.lines[0]!.spliced], [1000, 5000, { received: 900, sent: 4000 }]);
});
