// The agent's metrics: Istio TCP counters from a known set of connection flows (labels and values
// read back from the text exposition), Hubble's counters, losses, gauges, the cardinality cap, and
// the /metrics endpoint.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AgentMetrics, ISTIO_TCP_LABELS } from '../agent/metrics/agent-metrics.js';
import { workloadOfPod } from '../agent/state/cluster-state.js';
import { MetricsServer } from '../agent/metrics/metrics-server.js';
import type { ConnectionInfo, Endpoint, Flow } from '../agent/flows/types.js';

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses Prometheus' text exposition format (what prom-client writes) into samples. */
function parseExposition(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `unparseable exposition line: ${line}`);
    const labels: Record<string, string> = {};
    const body = m[2] ?? '';
    const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?/g;
    let lm: RegExpExecArray | null;
    while ((lm = re.exec(body)) !== null) labels[lm[1]!] = lm[2]!.replace(/\\(.)/g, (_s, c: string) => (c === 'n' ? '\n' : c));
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

function samples(text: string, name: string, where: Record<string, string> = {}): Sample[] {
  return parseExposition(text).filter((s) => s.name === name && Object.entries(where).every(([k, v]) => s.labels[k] === v));
}

function value(text: string, name: string, where: Record<string, string> = {}): number {
  const found = samples(text, name, where);
  assert.equal(found.length, 1, `expected one ${name} ${JSON.stringify(where)}, found ${found.length}`);
  return found[0]!.value;
}

function pod(namespace: string, name: string, labels: Record<string, string>): Endpoint {
  return {
    namespace,
    pod_name: name,
    labels: Object.entries(labels).map(([k, v]) => `k8s:${k}=${v}`),
    workloads: [{ name: workloadOfPod(name), kind: 'Pod' }],
  };
}

const client = pod('shop', 'frontend-7d9c6b5f4d-x2kqz', { app: 'frontend', version: 'v1' });
const server = pod('shop', 'cart-0', { app: 'cart', version: 'v2' });

let n = 0;
function flow(over: Partial<Flow>): Flow {
  return {
    time: { seconds: '1700000000', nanos: 0 },
    uuid: `uuid-${n++}`,
    verdict: 'FORWARDED',
    IP: { source: '10.1.0.5', destination: '10.1.0.9', ipVersion: 'IPv4' },
    l4: { TCP: { source_port: 40000 + n, destination_port: 8080 } },
    source: client,
    destination: server,
    destination_service: { name: 'cart', namespace: 'shop' },
    Type: 'L3_L4',
    node_name: 'node-a',
    traffic_direction: 'EGRESS',
    event_type: { type: 4, sub_type: 0 },
    ...over,
  };
}

const mtls: ConnectionInfo = {
  source_principal: 'spiffe://cluster.local/ns/shop/sa/frontend',
  destination_principal: 'spiffe://cluster.local/ns/shop/sa/cart',
  security: 'mutual_tls',
};

test('workload names: Deployment pods lose their generated parts, other pods keep their name', () => {
  assert.equal(workloadOfPod('frontend-7d9c6b5f4d-x2kqz'), 'frontend');
  assert.equal(workloadOfPod('cart-0'), 'cart-0');
  assert.equal(workloadOfPod('web-proxy'), 'web-proxy');
  assert.equal(workloadOfPod('api-server-abcde'), 'api-server-abcde');
});

test('Istio TCP counters after a known set of connection flows', async () => {
  const m = new AgentMetrics();
  // Outbound (reporter=source): two finished connections with bytes, one denied.
  m.recordFlow(flow({}), { ...mtls, bytes_sent: 100, bytes_received: 1000 }, 'close');
  m.recordFlow(flow({}), { ...mtls, bytes_sent: 50, bytes_received: 500 }, 'close');
  m.recordFlow(flow({ verdict: 'DROPPED', drop_reason_desc: 'POLICY_DENIED', event_type: { type: 1, sub_type: 133 } }), mtls, 'deny');
  // Inbound (reporter=destination), plaintext, no service, unknown source.
  m.recordFlow(flow({ traffic_direction: 'INGRESS', source: undefined, destination_service: undefined }), { security: 'none', bytes_sent: 7, bytes_received: 9 }, 'close');
  // An upstream failure is an ERROR flow: closed with response_flags CONNECT.
  m.recordFlow(flow({ verdict: 'ERROR' }), mtls, 'close');
  // Start-of-connection flows and socket-level flows are not Istio connections.
  m.recordFlow(flow({}), mtls, 'open');
  m.recordFlow(flow({ Type: 'SOCK', verdict: 'TRACED', event_type: { type: 7, sub_type: 0 } }), { bytes_sent: 1, bytes_received: 1 }, 'close');
  const text = await m.metrics();

  const outbound = {
    reporter: 'source',
    source_workload: 'frontend',
    source_canonical_service: 'frontend',
    source_canonical_revision: 'v1',
    source_workload_namespace: 'shop',
    source_principal: 'spiffe://cluster.local/ns/shop/sa/frontend',
    source_app: 'frontend',
    source_version: 'v1',
    source_cluster: 'unknown',
    destination_service: 'cart.shop.svc.cluster.local',
    destination_service_namespace: 'shop',
    destination_service_name: 'cart',
    destination_workload: 'cart-0',
    destination_canonical_service: 'cart',
    destination_canonical_revision: 'v2',
    destination_workload_namespace: 'shop',
    destination_principal: 'spiffe://cluster.local/ns/shop/sa/cart',
    destination_app: 'cart',
    destination_version: 'v2',
    destination_cluster: 'unknown',
    request_protocol: 'tcp',
    response_flags: '-',
    connection_security_policy: 'mutual_tls',
  };
  // Every Istio series carries exactly Istio's label names.
  for (const s of samples(text, 'istio_tcp_connections_opened_total')) assert.deepEqual(Object.keys(s.labels).sort(), [...ISTIO_TCP_LABELS].sort());

  // Opened: 2 forwarded + 1 denied + 1 error, all with response_flags "-" (the outcome is unknown at open).
  assert.equal(value(text, 'istio_tcp_connections_opened_total', outbound), 4);
  assert.equal(value(text, 'istio_tcp_connections_closed_total', outbound), 2);
  assert.equal(value(text, 'istio_tcp_connections_closed_total', { ...outbound, response_flags: 'DENY' }), 1);
  assert.equal(value(text, 'istio_tcp_connections_closed_total', { ...outbound, response_flags: 'CONNECT' }), 1);
  // Request bytes (client → server) are "received", response bytes "sent".
  assert.equal(value(text, 'istio_tcp_received_bytes_total', outbound), 150);
  assert.equal(value(text, 'istio_tcp_sent_bytes_total', outbound), 1500);
  assert.equal(samples(text, 'istio_tcp_sent_bytes_total', { response_flags: 'DENY' }).length, 0, 'a denied connection has no byte series');

  const inbound = { reporter: 'destination', source_workload: 'unknown', source_workload_namespace: 'unknown', source_principal: 'unknown', source_app: 'unknown', destination_service: 'unknown', destination_service_name: 'unknown', connection_security_policy: 'none' };
  assert.equal(value(text, 'istio_tcp_connections_opened_total', inbound), 1);
  assert.equal(value(text, 'istio_tcp_connections_closed_total', inbound), 1);
  assert.equal(value(text, 'istio_tcp_received_bytes_total', inbound), 7);
  assert.equal(value(text, 'istio_tcp_sent_bytes_total', inbound), 9);

  const total = (name: string): number => samples(text, name).reduce((a, s) => a + s.value, 0);
  assert.equal(total('istio_tcp_connections_opened_total'), 5);
  assert.equal(total('istio_tcp_connections_closed_total'), 5);
});

test('Hubble counters: flows processed, drops, TCP flags', async () => {
  const m = new AgentMetrics();
  m.recordFlow(flow({}), mtls, 'close');
  m.recordFlow(flow({ traffic_direction: 'INGRESS', event_type: { type: 5, sub_type: 0 } }), mtls, 'close');
  m.recordFlow(flow({ verdict: 'DROPPED', drop_reason_desc: 'POLICY_DENIED', event_type: { type: 1, sub_type: 133 } }), mtls, 'deny');
  m.recordFlow(flow({ verdict: 'DROPPED', drop_reason_desc: 'POLICY_DENIED', event_type: { type: 1, sub_type: 133 } }), mtls, 'deny');
  m.recordFlow(flow({ Type: 'SOCK', verdict: 'REDIRECTED', event_type: { type: 7, sub_type: 0 } }), undefined, 'open');
  m.recordFlow(flow({ Type: 'SOCK', verdict: 'DROPPED', drop_reason_desc: 'DROP_EP_NOT_READY', event_type: { type: 1, sub_type: 203 } }), undefined, 'deny');
  m.recordFlow(flow({ l4: { TCP: { source_port: 1, destination_port: 2, flags: { SYN: true } } } }), undefined, 'open');
  m.recordFlow(flow({ l4: { TCP: { source_port: 1, destination_port: 2, flags: { SYN: true, ACK: true } } } }), undefined, 'open');
  m.recordFlow(flow({ IP: { source: 'fd00::1', destination: 'fd00::2', ipVersion: 'IPv6' }, l4: { TCP: { source_port: 1, destination_port: 2, flags: { FIN: true, RST: true } } } }), undefined, 'close');
  const text = await m.metrics();

  assert.equal(value(text, 'hubble_flows_processed_total', { protocol: 'TCP', type: 'Trace', subtype: 'to-endpoint', verdict: 'FORWARDED' }), 4);
  assert.equal(value(text, 'hubble_flows_processed_total', { type: 'PolicyVerdict', subtype: '', verdict: 'FORWARDED' }), 1);
  assert.equal(value(text, 'hubble_flows_processed_total', { type: 'Drop', verdict: 'DROPPED' }), 3);
  assert.equal(value(text, 'hubble_flows_processed_total', { type: 'TraceSock', verdict: 'REDIRECTED' }), 1);
  assert.equal(value(text, 'hubble_drop_total', { reason: 'POLICY_DENIED', protocol: 'TCP' }), 2);
  assert.equal(value(text, 'hubble_drop_total', { reason: 'DROP_EP_NOT_READY', protocol: 'TCP' }), 1);
  assert.equal(value(text, 'hubble_tcp_flags_total', { flag: 'SYN', family: 'IPv4' }), 1);
  assert.equal(value(text, 'hubble_tcp_flags_total', { flag: 'SYN-ACK', family: 'IPv4' }), 1);
  assert.equal(value(text, 'hubble_tcp_flags_total', { flag: 'FIN', family: 'IPv6' }), 1);
  assert.equal(value(text, 'hubble_tcp_flags_total', { flag: 'RST', family: 'IPv6' }), 1);
  assert.equal(samples(text, 'hubble_tcp_flags_total').length, 4);
});

test('the event defaults from the verdict: DROPPED is a deny, anything else a close', async () => {
  const m = new AgentMetrics();
  m.recordFlow(flow({ verdict: 'DROPPED', drop_reason_desc: 'POLICY_DENIED' }), mtls);
  m.recordFlow(flow({}), { ...mtls, bytes_sent: 3 });
  const text = await m.metrics();
  assert.equal(value(text, 'istio_tcp_connections_closed_total', { response_flags: 'DENY' }), 1);
  assert.equal(value(text, 'istio_tcp_connections_closed_total', { response_flags: '-' }), 1);
  assert.equal(value(text, 'istio_tcp_received_bytes_total', { response_flags: '-' }), 3);
});

test('lost events, capture losses, flow-log drops, gauges and the flow store', async () => {
  const m = new AgentMetrics();
  m.recordLost('PERF_EVENT_RING_BUFFER', 5);
  m.recordLost('PERF_EVENT_RING_BUFFER', 2);
  m.recordLost('OBSERVER_EVENTS_QUEUE', 3);
  m.recordLost('HUBBLE_RING_BUFFER', 0);
  m.recordFlowLogDropped(4);
  m.setCaptureMapEntries('enrolled', 12);
  m.setCaptureMapEntries('orig_dst', 3);
  m.setCaptureMapEntries('enrolled', 11);
  m.setConfigRejections(2);
  m.setCertificates([
    { identity: 'spiffe://cluster.local/ns/shop/sa/cart', state: 'valid', secondsToExpiry: 3600, failures: 0 },
    { identity: 'spiffe://cluster.local/ns/shop/sa/frontend', state: 'initializing', failures: 1 },
  ]);
  let seen = 10;
  m.observeStore({ status: () => ({ numFlows: Math.min(seen, 8), maxFlows: 8, seenFlows: seen, uptimeNs: 0n }) });
  let text = await m.metrics();
  assert.equal(value(text, 'hubble_lost_events_total', { source: 'perf_event_ring_buffer' }), 7);
  assert.equal(value(text, 'hubble_lost_events_total', { source: 'observer_events_queue' }), 3);
  assert.equal(samples(text, 'hubble_lost_events_total').length, 2);
  assert.equal(value(text, 'weft_capture_events_lost_total'), 7);
  assert.equal(value(text, 'weft_flow_log_dropped_total'), 4);
  assert.equal(value(text, 'weft_capture_map_entries', { map: 'enrolled' }), 11);
  assert.equal(value(text, 'weft_capture_map_entries', { map: 'orig_dst' }), 3);
  assert.equal(value(text, 'weft_config_rejections'), 2);
  assert.equal(value(text, 'weft_certificate_expiry_seconds', { identity: 'spiffe://cluster.local/ns/shop/sa/cart' }), 3600);
  assert.equal(samples(text, 'weft_certificate_expiry_seconds').length, 1, 'no certificate yet, no series');
  assert.equal(value(text, 'weft_flows_stored'), 8);
  assert.equal(value(text, 'weft_flows_seen_total'), 10);

  // A later snapshot replaces the certificates; the seen counter follows the store.
  m.setCertificates([{ identity: 'spiffe://cluster.local/ns/shop/sa/frontend', state: 'valid', secondsToExpiry: 60, failures: 0 }]);
  seen = 25;
  text = await m.metrics();
  assert.deepEqual(samples(text, 'weft_certificate_expiry_seconds').map((s) => [s.labels.identity, s.value]), [['spiffe://cluster.local/ns/shop/sa/frontend', 60]]);
  assert.equal(value(text, 'weft_flows_seen_total'), 25);
});

test('cardinality cap: new label sets beyond the cap fold into one overflow series, counted', async () => {
  const m = new AgentMetrics({ maxSeriesPerMetric: 3 });
  const to = (i: number): Flow => flow({ destination: pod('ns', `svc${i}-0`, { app: `svc${i}` }) });
  for (let i = 0; i < 5; i++) m.recordFlow(to(i), { ...mtls, bytes_sent: 10 }, 'close');
  // Known series keep counting after the cap was reached.
  m.recordFlow(to(0), { ...mtls, bytes_sent: 10 }, 'close');
  let text = await m.metrics();

  const opened = samples(text, 'istio_tcp_connections_opened_total');
  assert.equal(opened.length, 4, 'three series and the overflow series');
  assert.equal(value(text, 'istio_tcp_connections_opened_total', { destination_workload: 'svc0-0' }), 2);
  const overflow = value(text, 'istio_tcp_connections_opened_total', { reporter: 'overflow' });
  assert.equal(overflow, 2);
  const overflowSample = samples(text, 'istio_tcp_connections_opened_total', { reporter: 'overflow' })[0]!;
  assert.ok(Object.values(overflowSample.labels).every((v) => v === 'overflow'), 'every label of the overflow series is "overflow"');
  assert.equal(value(text, 'istio_tcp_received_bytes_total', { reporter: 'overflow' }), 20);
  // Two folded connections in each of the four Istio families (hubble's single series did not fold).
  for (const name of ['istio_tcp_connections_opened_total', 'istio_tcp_connections_closed_total', 'istio_tcp_sent_bytes_total', 'istio_tcp_received_bytes_total']) {
    assert.equal(value(text, 'weft_metrics_label_overflow_total', { metric: name }), 2, name);
  }
  assert.equal(samples(text, 'weft_metrics_label_overflow_total', { metric: 'hubble_flows_processed_total' }).length, 0);

  for (let i = 5; i < 1000; i++) m.recordFlow(to(i), mtls, 'close');
  text = await m.metrics();
  assert.equal(samples(text, 'istio_tcp_connections_opened_total').length, 4, 'the series count stays bounded');
  assert.equal(value(text, 'istio_tcp_connections_opened_total', { reporter: 'overflow' }), 997);
  assert.equal(value(text, 'weft_metrics_label_overflow_total', { metric: 'istio_tcp_connections_opened_total' }), 997);

  // Certificates beyond the cap: the overflow series shows the soonest expiry among the folded.
  m.setCertificates([100, 200, 300, 50, 400].map((s, i) => ({ identity: `id${i}`, state: 'valid' as const, secondsToExpiry: s, failures: 0 })));
  text = await m.metrics();
  assert.equal(samples(text, 'weft_certificate_expiry_seconds').length, 4);
  assert.equal(value(text, 'weft_certificate_expiry_seconds', { identity: 'overflow' }), 50);
});

test('MetricsServer: GET /metrics serves the exposition, anything else is 404', async () => {
  const m = new AgentMetrics();
  m.recordFlow(flow({}), { ...mtls, bytes_sent: 1 }, 'close');
  const server = new MetricsServer(m);
  await server.listen('127.0.0.1', 0);
  try {
    const base = `http://127.0.0.1:${server.port}`;
    const res = await fetch(`${base}/metrics`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    assert.equal(value(text, 'istio_tcp_connections_opened_total', { reporter: 'source' }), 1);
    assert.equal((await fetch(`${base}/`)).status, 404);
    assert.equal((await fetch(`${base}/stats/prometheus`)).status, 404);
    assert.equal((await fetch(`${base}/metrics`, { method: 'POST' })).status, 405);
  } finally {
    server.close();
  }
});
