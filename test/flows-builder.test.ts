// The flow builder and pipeline without sockets or root: a proxy's connection event and a capture
// event become Hubble flows with the right verdicts, event types, endpoints and service; the pipeline
// counts each once, packs weft's ConnectionInfo, stores it and writes the flow log; losses are reported.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FlowBuilder, type ConnectionEvent } from '../agent/flows/builder.js';
import { FlowPipeline } from '../agent/flows/pipeline.js';
import { FlowStore } from '../agent/flows/store.js';
import type { AnyMessage, ConnectionInfo, Flow, GetFlowsResponse, LostEventSource } from '../agent/flows/types.js';
import type { CaptureEvent } from '../agent/datapath/layout.js';
import { ClusterState, type Workload } from '../agent/state/cluster-state.js';
import type { Resource } from '../agent/registry/types.js';

const workload = (namespace: string, name: string, ip: string, sa: string, labels: Record<string, string>): Workload => ({
  key: `${namespace}/${name}`,
  name,
  namespace,
  node: 'node-a',
  ip,
  serviceAccount: sa,
  labels,
  enrolled: true,
});
const frontend = workload('shop', 'frontend-7d9c8b5f4x-kq2zt', '10.1.0.5', 'frontend', { app: 'frontend' });
const api = workload('shop', 'api-0', '10.1.0.10', 'api', { app: 'api' });

const state = new ClusterState([
  { apiVersion: 'v1', kind: 'Pod', metadata: { namespace: 'shop', name: 'api-0', labels: { app: 'api' } }, spec: { nodeName: 'node-a', serviceAccountName: 'api', containers: [{ name: 'm', command: ['x'] }] }, status: { podIP: '10.1.0.10' } } as Resource,
]);
const builder = new FlowBuilder('node-a', () => state);

const event = (over: Partial<ConnectionEvent>): ConnectionEvent => ({
  direction: 'inbound',
  verdict: 'FORWARDED',
  src: { ip: frontend.ip!, port: 40000 },
  dst: { ip: api.ip!, port: 8080 },
  srcWorkload: frontend,
  dstWorkload: api,
  info: { bytes_sent: 10, bytes_received: 20 },
  ...over,
});

test('a forwarded inbound connection: POLICY_VERDICT, L3-L4 match when a policy allowed it, endpoints as Hubble writes them', () => {
  const { flow, info } = builder.connection(event({ service: { name: 'api', namespace: 'shop' }, info: { policy: 'shop/allow-frontend', bytes_sent: 10 } }));
  assert.equal(flow.verdict, 'FORWARDED');
  assert.equal(flow.traffic_direction, 'INGRESS');
  assert.deepEqual(flow.event_type, { type: 5, sub_type: 0 });
  assert.equal(flow.policy_match_type, 2);
  assert.deepEqual(flow.IP, { source: '10.1.0.5', destination: '10.1.0.10', ipVersion: 'IPv4' });
  assert.deepEqual(flow.l4, { TCP: { source_port: 40000, destination_port: 8080 } });
  assert.equal(flow.node_name, 'node-a');
  assert.equal(flow.source?.pod_name, 'frontend-7d9c8b5f4x-kq2zt');
  assert.deepEqual(flow.source?.workloads, [{ name: 'frontend', kind: 'Pod' }], 'the Deployment, as Istio names workloads');
  assert.ok(flow.source?.labels?.includes('k8s:app=frontend'));
  assert.ok(flow.destination?.labels?.includes('k8s:io.cilium.k8s.policy.serviceaccount=api'));
  assert.deepEqual(flow.destination_service, { name: 'api', namespace: 'shop' });
  assert.equal(info.policy, 'shop/allow-frontend');
});

test('outbound is a TRACE with EGRESS; no policy, no match type; unknown peers have no endpoint', () => {
  const { flow } = builder.connection(event({ direction: 'outbound', srcWorkload: undefined, info: {} }));
  assert.equal(flow.traffic_direction, 'EGRESS');
  assert.deepEqual(flow.event_type, { type: 4, sub_type: 0 });
  assert.equal(flow.policy_match_type, undefined);
  assert.equal(flow.source, undefined, 'nothing is looked up again: no workload given, no endpoint');
});

test('a denied connection is DROPPED with its reason and the matching DropReason code', () => {
  const policy = builder.connection(event({ verdict: 'DROPPED', info: { reason: 'denied' } }));
  assert.equal(policy.flow.drop_reason_desc, 'POLICY_DENIED');
  assert.deepEqual(policy.flow.event_type, { type: 1, sub_type: 133 });
  const strict = builder.connection(event({ verdict: 'DROPPED', dropReason: 'AUTH_REQUIRED', info: {} }));
  assert.equal(strict.flow.drop_reason_desc, 'AUTH_REQUIRED');
  assert.deepEqual(strict.flow.event_type, { type: 1, sub_type: 189 });
});

const capture = (over: Partial<CaptureEvent>): CaptureEvent => ({
  monotonicNs: 1_000_000_000n,
  netnsCookie: 7n,
  socketCookie: 99n,
  src: { ip: '127.0.0.1', port: 40000 },
  dst: { ip: '10.1.0.10', port: 8080 },
  kind: 'STEERED',
  direction: 'outbound',
  reason: 'NONE',
  bytesSent: 0n,
  bytesReceived: 0n,
  durationNs: 0n,
  ...over,
});

test('capture events: steered is REDIRECTED (SOCK), refused DROPPED (endpoint not ready), closed TRACED with bytes, passed no flow', () => {
  const pod = (cookie: bigint) => (cookie === 7n ? frontend : undefined);
  const steered = builder.capture(capture({}), pod)!;
  assert.equal(steered.flow.verdict, 'REDIRECTED');
  assert.equal(steered.flow.Type, 'SOCK');
  assert.equal(steered.flow.IP?.source, '10.1.0.5', 'outbound: the pod of the netns, not loopback');
  assert.equal(steered.flow.destination?.pod_name, 'api-0', 'looked up by IP in the state');
  assert.equal(steered.flow.socket_cookie, '99');
  const refused = builder.capture(capture({ kind: 'REFUSED', reason: 'PROXY_NOT_READY' }), pod)!;
  assert.equal(refused.flow.verdict, 'DROPPED');
  assert.equal(refused.flow.drop_reason_desc, 'DROP_EP_NOT_READY');
  assert.match(refused.info.reason ?? '', /PROXY_NOT_READY/);
  const closed = builder.capture(capture({ kind: 'CLOSED', bytesSent: 5n, bytesReceived: 6n, durationNs: 2_000_000n }), pod)!;
  assert.equal(closed.flow.verdict, 'TRACED');
  assert.deepEqual([closed.info.bytes_sent, closed.info.bytes_received, closed.info.duration_ms], [5, 6, 2]);
  assert.equal(builder.capture(capture({ kind: 'PASSED' }), pod), undefined);
});

test('the pipeline: each flow counted once with its event, packed, stored, logged; losses reported to store and metrics', () => {
  const store = new FlowStore(16, 'node-a');
  const recorded: Array<[string, string]> = [];
  const lost: Array<[LostEventSource, number]> = [];
  const logged: GetFlowsResponse[] = [];
  const pipeline = new FlowPipeline(builder, {
    store,
    pack: (info: ConnectionInfo): AnyMessage => ({ type_url: 'weft/ConnectionInfo', value: Buffer.from(JSON.stringify(info)) }) as unknown as AnyMessage,
    metrics: {
      recordFlow: (flow: Flow, _info, e) => void recorded.push([flow.verdict ?? '', e]),
      recordLost: (source, n) => void lost.push([source, n]),
    },
    log: { write: (r) => void logged.push(r) },
  });
  pipeline.connection(event({}));
  pipeline.connection(event({ verdict: 'DROPPED', info: {} }));
  pipeline.capture(capture({}), () => frontend);
  pipeline.capture(capture({ kind: 'PASSED' }), () => frontend);
  pipeline.lost('PERF_EVENT_RING_BUFFER', 3);
  assert.deepEqual(recorded, [['FORWARDED', 'close'], ['DROPPED', 'deny'], ['REDIRECTED', 'open']]);
  const flows = store.flows();
  assert.equal(flows.length, 3);
  assert.ok(flows[0]!.extensions, 'ConnectionInfo packed when there is some');
  assert.equal(flows[1]!.extensions, undefined, 'no empty extensions');
  assert.equal(logged.length, 3);
  assert.equal(logged[0]!.node_name, 'node-a');
  assert.deepEqual(lost, [['PERF_EVENT_RING_BUFFER', 3]]);
  assert.equal(store.lost.get('PERF_EVENT_RING_BUFFER'), 3);
});
