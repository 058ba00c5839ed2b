// Hubble's JSON form: flows as `hubble observe -o json` and Hubble's exporter print them. The
// expected strings are Hubble output published upstream (Cilium docs, Hubble exporter tests, a
// Cilium 1.18 policy-denial flow); the inputs are the same flows in proto-loader object form.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { flowResponseToJson, flowToJson, timestampToRfc3339 } from '../agent/flows/json.js';
import { decodeFlow, encodeFlow, packConnectionInfo } from '../agent/flows/proto.js';
import type { GetFlowsResponse } from '../agent/flows/types.js';

// From Cilium's Hubble exporter documentation.
const DOCS_EXAMPLE =
  '{"flow":{"time":"2023-08-21T12:12:13.517394084Z","verdict":"DROPPED","IP":{"source":"fe80::64d8:8aff:fe72:fc14","destination":"ff02::2","ipVersion":"IPv6"},"l4":{"ICMPv6":{"type":133}},"source":{},"destination":{},"node_name":"kind-kind/kind-worker","drop_reason_desc":"INVALID_SOURCE_IP"},"node_name":"kind-kind/kind-worker","time":"2023-08-21T12:12:13.517394084Z"}';

// From Hubble's exporter test: whole seconds print without a fraction.
const EXPORTER_EXAMPLE = '{"flow":{"time":"1970-01-01T00:00:01Z","node_name":"my-node"},"node_name":"my-node","time":"1970-01-01T00:00:01Z"}';

// A policy-denied flow from Cilium 1.18 with policy correlation.
const POLICY_EXAMPLE =
  '{"flow":{"time":"2026-07-31T10:41:02.202450754Z","uuid":"cd75b2ac-8dd3-486b-beca-3d17d9d56cff","verdict":"DROPPED","drop_reason":181,"ethernet":{"source":"62:6b:d0:a4:c5:63","destination":"6e:d0:ea:78:fc:0a"},"IP":{"source":"10.0.1.235","destination":"10.0.0.21","ipVersion":"IPv4"},"l4":{"TCP":{"source_port":60524,"destination_port":80,"flags":{"SYN":true}}},"source":{"ID":423,"identity":24753,"cluster_name":"topgun","namespace":"net-lab","labels":["k8s:app=traffic-generator"],"pod_name":"traffic-generator-9b649846d-bxqfc","workloads":[{"name":"traffic-generator","kind":"Deployment"}]},"destination":{"identity":24075,"cluster_name":"topgun","namespace":"net-lab","labels":["k8s:app=echo-server"],"pod_name":"echo-server-65887564dc-jjw7k"},"Type":"L3_L4","node_name":"topgun/cilium-w1","event_type":{"type":5},"traffic_direction":"EGRESS","policy_match_type":1,"drop_reason_desc":"POLICY_DENY","Summary":"TCP Flags: SYN","egress_denied_by":[{"name":"deny-tg-to-echo","namespace":"net-lab","labels":["k8s:io.cilium.k8s.policy.name=deny-tg-to-echo"],"revision":"6","kind":"CiliumNetworkPolicy"}],"policy_log":[""]},"node_name":"topgun/cilium-w1","time":"2026-07-31T10:41:02.202450754Z"}';

const seconds = (iso: string): string => String(Date.parse(iso) / 1000);

test('the Cilium docs example: IPv6 ICMP drop, empty endpoints kept, zero values left out', () => {
  const time = { seconds: seconds('2023-08-21T12:12:13Z'), nanos: 517394084 };
  const resp: GetFlowsResponse = {
    flow: {
      time,
      uuid: '',
      verdict: 'DROPPED',
      IP: { source: 'fe80::64d8:8aff:fe72:fc14', destination: 'ff02::2', ipVersion: 'IPv6' },
      l4: { ICMPv6: { type: 133, code: 0 } },
      source: {},
      destination: {},
      Type: 'UNKNOWN_TYPE',
      node_name: 'kind-kind/kind-worker',
      drop_reason_desc: 'INVALID_SOURCE_IP' as never,
      traffic_direction: 'TRAFFIC_DIRECTION_UNKNOWN',
    },
    node_name: 'kind-kind/kind-worker',
    time,
  };
  assert.deepEqual(flowResponseToJson(resp), JSON.parse(DOCS_EXAMPLE));
  // Key order too, for the top level and the flow.
  assert.equal(JSON.stringify(flowResponseToJson(resp)), DOCS_EXAMPLE);
});

test('the Hubble exporter example: whole seconds have no fraction', () => {
  const time = { seconds: '1', nanos: 0 };
  assert.equal(JSON.stringify(flowResponseToJson({ flow: { time, uuid: '', verdict: 'VERDICT_UNKNOWN', Type: 'UNKNOWN_TYPE', node_name: 'my-node', traffic_direction: 'TRAFFIC_DIRECTION_UNKNOWN' }, node_name: 'my-node', time })), EXPORTER_EXAMPLE);
});

test('a Cilium 1.18 policy denial: uint64 as strings, enums as names, policies, Summary', () => {
  const time = { seconds: seconds('2026-07-31T10:41:02Z'), nanos: 202450754 };
  const flow = {
    time,
    uuid: 'cd75b2ac-8dd3-486b-beca-3d17d9d56cff',
    verdict: 'DROPPED' as const,
    drop_reason: 181,
    ethernet: { source: '62:6b:d0:a4:c5:63', destination: '6e:d0:ea:78:fc:0a' },
    IP: { source: '10.0.1.235', destination: '10.0.0.21', ipVersion: 'IPv4' as const },
    l4: { TCP: { source_port: 60524, destination_port: 80, flags: { SYN: true } } },
    source: { ID: 423, identity: 24753, cluster_name: 'topgun', namespace: 'net-lab', labels: ['k8s:app=traffic-generator'], pod_name: 'traffic-generator-9b649846d-bxqfc', workloads: [{ name: 'traffic-generator', kind: 'Deployment' }] },
    destination: { identity: 24075, cluster_name: 'topgun', namespace: 'net-lab', labels: ['k8s:app=echo-server'], pod_name: 'echo-server-65887564dc-jjw7k' },
    Type: 'L3_L4' as const,
    node_name: 'topgun/cilium-w1',
    event_type: { type: 5, sub_type: 0 },
    traffic_direction: 'EGRESS' as const,
    policy_match_type: 1,
    drop_reason_desc: 'POLICY_DENY' as never,
    Summary: 'TCP Flags: SYN',
    egress_denied_by: [{ name: 'deny-tg-to-echo', namespace: 'net-lab', labels: ['k8s:io.cilium.k8s.policy.name=deny-tg-to-echo'], revision: '6', kind: 'CiliumNetworkPolicy' }],
    policy_log: [''],
  };
  const expected = JSON.parse(POLICY_EXAMPLE) as Record<string, unknown>;
  assert.deepEqual(flowResponseToJson({ flow, node_name: 'topgun/cilium-w1', time }), expected);
  // The same after a trip through protobuf (decoded form: longs as strings, oneof markers).
  assert.deepEqual(flowToJson(decodeFlow(encodeFlow(flow))), expected.flow);
});

test('weft extras: is_reply is a bare bool, extensions are {"@type", ...ConnectionInfo}', () => {
  const json = flowToJson({
    time: { seconds: '1700000000', nanos: 120000000 },
    uuid: 'u-1',
    verdict: 'FORWARDED',
    Type: 'L7',
    node_name: 'node-a',
    traffic_direction: 'INGRESS',
    is_reply: { value: false },
    socket_cookie: 42,
    l7: { type: 'RESPONSE', latency_ns: '1500000', http: { code: 200, method: 'GET', url: 'http://cart.shop.svc/api', protocol: 'HTTP/1.1' } },
    extensions: packConnectionInfo({ source_principal: 'spiffe://cluster.local/ns/shop/sa/frontend', bytes_sent: 2 ** 40, bytes_received: 0, duration_ms: 12, security: 'mutual_tls' }),
  });
  assert.deepEqual(json, {
    time: '2023-11-14T22:13:20.120Z',
    uuid: 'u-1',
    verdict: 'FORWARDED',
    Type: 'L7',
    node_name: 'node-a',
    l7: { type: 'RESPONSE', latency_ns: '1500000', http: { code: 200, method: 'GET', url: 'http://cart.shop.svc/api', protocol: 'HTTP/1.1' } },
    traffic_direction: 'INGRESS',
    is_reply: false,
    socket_cookie: '42',
    extensions: {
      '@type': 'type.googleapis.com/weft.flow.v1.ConnectionInfo',
      source_principal: 'spiffe://cluster.local/ns/shop/sa/frontend',
      bytes_sent: '1099511627776',
      duration_ms: '12',
      security: 'mutual_tls',
    },
  });
});

test('lost events and node status responses', () => {
  const time = { seconds: '1700000000', nanos: 0 };
  assert.deepEqual(flowResponseToJson({ lost_events: { source: 'HUBBLE_RING_BUFFER', num_events_lost: 17, cpu: { value: 0 } }, node_name: 'node-a', time }), {
    lost_events: { source: 'HUBBLE_RING_BUFFER', num_events_lost: '17', cpu: 0 },
    node_name: 'node-a',
    time: '2023-11-14T22:13:20Z',
  });
  assert.deepEqual(flowResponseToJson({ node_status: { state_change: 'NODE_CONNECTED', node_names: ['node-b'] }, node_name: '', time }), {
    node_status: { state_change: 'NODE_CONNECTED', node_names: ['node-b'] },
    time: '2023-11-14T22:13:20Z',
  });
});

test('timestamps: 0, 3, 6 or 9 fractional digits, as protojson', () => {
  assert.equal(timestampToRfc3339({ seconds: '0', nanos: 0 }), '1970-01-01T00:00:00Z');
  assert.equal(timestampToRfc3339({ seconds: 1, nanos: 500_000_000 }), '1970-01-01T00:00:01.500Z');
  assert.equal(timestampToRfc3339({ seconds: 1, nanos: 1_000 }), '1970-01-01T00:00:01.000001Z');
  assert.equal(timestampToRfc3339({ seconds: 1, nanos: 1 }), '1970-01-01T00:00:01.000000001Z');
});
