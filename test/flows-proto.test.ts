// The Hubble protos in proto/: field and enum numbers checked against Hubble's Observer API v1
// (cilium api/v1 flow, observer, relay), loading with proto-loader, and a Flow round trip with
// weft's ConnectionInfo in its extensions.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { protoDir } from '../agent/system/assets.js';
import { CONNECTION_INFO_TYPE_URL, decodeFlow, encodeFlow, flowProtos, packConnectionInfo, unpackConnectionInfo } from '../agent/flows/proto.js';
import type { Flow, GetFlowsResponse } from '../agent/flows/types.js';

/** `Message.field` and `Enum.VALUE` → number, from the text of a .proto file (nested names joined with dots). */
function protoNumbers(file: string): Map<string, number> {
  const text = readFileSync(join(protoDir(), file), 'utf8').replace(/\/\/.*$/gm, '');
  const out = new Map<string, number>();
  const scopes: Array<{ kind: string; name: string }> = [];
  const tokens = text.match(/[{}]|[^{}]+/g) ?? [];
  let opener: { kind: string; name: string } = { kind: 'other', name: '' };
  for (const token of tokens) {
    if (token === '}') {
      scopes.pop();
      continue;
    }
    if (token === '{') {
      scopes.push(opener);
      continue;
    }
    const statements = token.split(';');
    const scope = scopes[scopes.length - 1];
    const prefix = scopes.filter((x) => x.kind === 'message' || x.kind === 'enum').map((x) => x.name).join('.');
    for (const st of statements.slice(0, -1)) {
      const s = st.trim();
      const field = /^(?:repeated\s+|optional\s+)?[\w.]+\s+(\w+)\s*=\s*(\d+)/.exec(s);
      const value = /^(\w+)\s*=\s*(-?\d+)/.exec(s);
      if ((scope?.kind === 'message' || scope?.kind === 'oneof') && field) out.set(`${prefix}.${field[1]}`, Number(field[2]));
      else if (scope?.kind === 'enum' && value) out.set(`${prefix}.${value[1]}`, Number(value[2]));
    }
    const head = /(message|enum|oneof|service)\s+(\w+)\s*$/.exec(statements[statements.length - 1]!.trim());
    opener = head ? { kind: head[1]!, name: head[2]! } : { kind: 'other', name: '' };
  }
  return out;
}

// Facts of Hubble's API (cilium api/v1/*.proto).
const FLOW_NUMBERS: Array<[string, number]> = [
  ['Flow.time', 1], ['Flow.uuid', 34], ['Flow.verdict', 2], ['Flow.drop_reason', 3], ['Flow.auth_type', 35],
  ['Flow.ethernet', 4], ['Flow.IP', 5], ['Flow.l4', 6], ['Flow.source', 8], ['Flow.destination', 9],
  ['Flow.Type', 10], ['Flow.node_name', 11], ['Flow.source_names', 13], ['Flow.destination_names', 14],
  ['Flow.l7', 15], ['Flow.reply', 16], ['Flow.event_type', 19], ['Flow.source_service', 20],
  ['Flow.destination_service', 21], ['Flow.traffic_direction', 22], ['Flow.policy_match_type', 23],
  ['Flow.trace_observation_point', 24], ['Flow.drop_reason_desc', 25], ['Flow.is_reply', 26],
  ['Flow.debug_capture_point', 27], ['Flow.interface', 28], ['Flow.proxy_port', 29], ['Flow.trace_context', 30],
  ['Flow.sock_xlate_point', 31], ['Flow.socket_cookie', 32], ['Flow.cgroup_id', 33], ['Flow.trace_reason', 36],
  ['Flow.node_labels', 37], ['Flow.file', 38], ['Flow.tunnel', 39], ['Flow.ip_trace_id', 40], ['Flow.emitter', 41],
  ['Flow.egress_allowed_by', 21001], ['Flow.ingress_allowed_by', 21002], ['Flow.egress_denied_by', 21004],
  ['Flow.ingress_denied_by', 21005], ['Flow.policy_log', 21006], ['Flow.aggregate', 21007],
  ['Flow.Summary', 100000], ['Flow.extensions', 150000],
  ['Endpoint.ID', 1], ['Endpoint.identity', 2], ['Endpoint.namespace', 3], ['Endpoint.labels', 4],
  ['Endpoint.pod_name', 5], ['Endpoint.workloads', 6], ['Endpoint.cluster_name', 7],
  ['Workload.name', 1], ['Workload.kind', 2],
  ['IP.source', 1], ['IP.destination', 2], ['IP.ipVersion', 3], ['IP.encrypted', 4], ['IP.source_xlated', 5],
  ['Layer4.TCP', 1], ['Layer4.UDP', 2], ['Layer4.ICMPv4', 3], ['Layer4.ICMPv6', 4], ['Layer4.SCTP', 5],
  ['Layer4.VRRP', 6], ['Layer4.IGMP', 7],
  ['TCP.source_port', 1], ['TCP.destination_port', 2], ['TCP.flags', 3],
  ['TCPFlags.FIN', 1], ['TCPFlags.SYN', 2], ['TCPFlags.RST', 3], ['TCPFlags.ACK', 5], ['TCPFlags.NS', 9],
  ['Layer7.type', 1], ['Layer7.latency_ns', 2], ['Layer7.dns', 100], ['Layer7.http', 101], ['Layer7.kafka', 102],
  ['HTTP.code', 1], ['HTTP.method', 2], ['HTTP.url', 3], ['HTTP.protocol', 4], ['HTTP.headers', 5],
  ['Service.name', 1], ['Service.namespace', 2], ['CiliumEventType.type', 1], ['CiliumEventType.sub_type', 2],
  ['Policy.name', 1], ['Policy.namespace', 2], ['Policy.labels', 3], ['Policy.revision', 4], ['Policy.kind', 5],
  ['LostEvent.source', 1], ['LostEvent.num_events_lost', 2], ['LostEvent.cpu', 3], ['LostEvent.first', 4], ['LostEvent.last', 5],
  ['FlowFilter.source_ip', 1], ['FlowFilter.source_pod', 2], ['FlowFilter.destination_ip', 3], ['FlowFilter.destination_pod', 4],
  ['FlowFilter.verdict', 5], ['FlowFilter.event_type', 6], ['FlowFilter.source_fqdn', 7], ['FlowFilter.destination_fqdn', 8],
  ['FlowFilter.http_status_code', 9], ['FlowFilter.source_label', 10], ['FlowFilter.destination_label', 11],
  ['FlowFilter.protocol', 12], ['FlowFilter.source_port', 13], ['FlowFilter.destination_port', 14], ['FlowFilter.reply', 15],
  ['FlowFilter.source_service', 16], ['FlowFilter.destination_service', 17], ['FlowFilter.dns_query', 18],
  ['FlowFilter.source_identity', 19], ['FlowFilter.destination_identity', 20], ['FlowFilter.http_method', 21],
  ['FlowFilter.http_path', 22], ['FlowFilter.tcp_flags', 23], ['FlowFilter.node_name', 24], ['FlowFilter.ip_version', 25],
  ['FlowFilter.source_workload', 26], ['FlowFilter.destination_workload', 27], ['FlowFilter.trace_id', 28],
  ['FlowFilter.uuid', 29], ['FlowFilter.traffic_direction', 30], ['FlowFilter.http_url', 31], ['FlowFilter.http_header', 32],
  ['FlowFilter.drop_reason_desc', 33], ['FlowFilter.source_ip_xlated', 34], ['FlowFilter.interface', 35],
  ['FlowFilter.node_labels', 36], ['FlowFilter.source_cluster_name', 37], ['FlowFilter.destination_cluster_name', 38],
  ['FlowFilter.ip_trace_id', 39], ['FlowFilter.encrypted', 40], ['FlowFilter.experimental', 999],
  ['EventTypeFilter.type', 1], ['EventTypeFilter.match_sub_type', 2], ['EventTypeFilter.sub_type', 3],
  // enums
  ['Verdict.VERDICT_UNKNOWN', 0], ['Verdict.FORWARDED', 1], ['Verdict.DROPPED', 2], ['Verdict.ERROR', 3],
  ['Verdict.AUDIT', 4], ['Verdict.REDIRECTED', 5], ['Verdict.TRACED', 6], ['Verdict.TRANSLATED', 7],
  ['DropReason.DROP_REASON_UNKNOWN', 0], ['DropReason.POLICY_DENIED', 133], ['DropReason.UNSUPPORTED_L3_PROTOCOL', 139],
  ['DropReason.SOCKET_LOOKUP_FAILED', 178], ['DropReason.POLICY_DENY', 181], ['DropReason.AUTH_REQUIRED', 189],
  ['DropReason.TTL_EXCEEDED', 196], ['DropReason.DROP_HOST_NOT_READY', 202], ['DropReason.DROP_EP_NOT_READY', 203],
  ['DropReason.DROP_PUNT_PROXY', 205],
  ['TrafficDirection.TRAFFIC_DIRECTION_UNKNOWN', 0], ['TrafficDirection.INGRESS', 1], ['TrafficDirection.EGRESS', 2],
  ['FlowType.UNKNOWN_TYPE', 0], ['FlowType.L3_L4', 1], ['FlowType.L7', 2], ['FlowType.SOCK', 3],
  ['AuthType.DISABLED', 0], ['AuthType.SPIRE', 1], ['AuthType.TEST_ALWAYS_FAIL', 2],
  ['IPVersion.IP_NOT_USED', 0], ['IPVersion.IPv4', 1], ['IPVersion.IPv6', 2],
  ['L7FlowType.REQUEST', 1], ['L7FlowType.RESPONSE', 2], ['L7FlowType.SAMPLE', 3],
  ['TraceObservationPoint.TO_ENDPOINT', 101], ['TraceObservationPoint.FROM_NETWORK', 10], ['TraceObservationPoint.TO_CRYPTO', 13],
  ['LostEventSource.PERF_EVENT_RING_BUFFER', 1], ['LostEventSource.OBSERVER_EVENTS_QUEUE', 2], ['LostEventSource.HUBBLE_RING_BUFFER', 3],
  ['AgentEventType.AGENT_STARTED', 2], ['AgentEventType.IPCACHE_DELETED', 10], ['DebugEventType.DBG_SK_ASSIGN', 64],
  ['Tunnel.Protocol.VXLAN', 1], ['Tunnel.Protocol.GENEVE', 2],
];

const OBSERVER_NUMBERS: Array<[string, number]> = [
  ['GetFlowsRequest.number', 1], ['GetFlowsRequest.follow', 3], ['GetFlowsRequest.blacklist', 5],
  ['GetFlowsRequest.whitelist', 6], ['GetFlowsRequest.since', 7], ['GetFlowsRequest.until', 8], ['GetFlowsRequest.first', 9],
  ['GetFlowsRequest.field_mask', 10], ['GetFlowsRequest.experimental', 999], ['GetFlowsRequest.extensions', 150000],
  ['GetFlowsResponse.flow', 1], ['GetFlowsResponse.node_status', 2], ['GetFlowsResponse.lost_events', 3],
  ['GetFlowsResponse.node_name', 1000], ['GetFlowsResponse.time', 1001],
  ['GetAgentEventsRequest.number', 1], ['GetAgentEventsRequest.follow', 2], ['GetAgentEventsRequest.first', 9],
  ['GetDebugEventsRequest.follow', 2], ['GetDebugEventsResponse.debug_event', 1],
  ['ServerStatusResponse.num_flows', 1], ['ServerStatusResponse.max_flows', 2], ['ServerStatusResponse.seen_flows', 3],
  ['ServerStatusResponse.uptime_ns', 4], ['ServerStatusResponse.num_connected_nodes', 5],
  ['ServerStatusResponse.num_unavailable_nodes', 6], ['ServerStatusResponse.unavailable_nodes', 7],
  ['ServerStatusResponse.version', 8], ['ServerStatusResponse.flows_rate', 9],
  ['Node.name', 1], ['Node.version', 2], ['Node.address', 3], ['Node.state', 4], ['Node.tls', 5], ['Node.uptime_ns', 6],
  ['Node.num_flows', 7], ['Node.max_flows', 8], ['Node.seen_flows', 9], ['TLS.enabled', 1], ['TLS.server_name', 2],
  ['Namespace.cluster', 1], ['Namespace.namespace', 2], ['GetNodesResponse.nodes', 1], ['GetNamespacesResponse.namespaces', 1],
];

const RELAY_NUMBERS: Array<[string, number]> = [
  ['NodeStatusEvent.state_change', 1], ['NodeStatusEvent.node_names', 2], ['NodeStatusEvent.message', 3],
  ['NodeState.UNKNOWN_NODE_STATE', 0], ['NodeState.NODE_CONNECTED', 1], ['NodeState.NODE_UNAVAILABLE', 2],
  ['NodeState.NODE_GONE', 3], ['NodeState.NODE_ERROR', 4],
];

for (const [file, expected] of [
  ['flow/flow.proto', FLOW_NUMBERS],
  ['observer/observer.proto', OBSERVER_NUMBERS],
  ['relay/relay.proto', RELAY_NUMBERS],
] as const) {
  test(`${file}: field and enum numbers are Hubble's`, () => {
    const numbers = protoNumbers(file);
    const wrong = expected.filter(([name, n]) => numbers.get(name) !== n).map(([name, n]) => `${name}: want ${n}, have ${numbers.get(name)}`);
    assert.deepEqual(wrong, []);
  });
}

test('at least 60 known numbers are checked', () => {
  assert.ok(FLOW_NUMBERS.length + OBSERVER_NUMBERS.length + RELAY_NUMBERS.length >= 60);
});

test('the package names and the Observer service are Hubble’s', () => {
  assert.match(readFileSync(join(protoDir(), 'flow/flow.proto'), 'utf8'), /^package flow;$/m);
  assert.match(readFileSync(join(protoDir(), 'observer/observer.proto'), 'utf8'), /^package observer;$/m);
  assert.match(readFileSync(join(protoDir(), 'relay/relay.proto'), 'utf8'), /^package relay;$/m);
  const { observer, root } = flowProtos();
  assert.deepEqual(Object.keys(observer).sort(), ['GetAgentEvents', 'GetDebugEvents', 'GetFlows', 'GetNamespaces', 'GetNodes', 'ServerStatus']);
  assert.equal(observer.GetFlows.path, '/observer.Observer/GetFlows');
  assert.equal(observer.GetFlows.responseStream, true);
  assert.equal(observer.ServerStatus.responseStream, false);
  const info = root.lookupType('weft.flow.v1.ConnectionInfo');
  assert.deepEqual(
    info.fieldsArray.map((f) => `${f.name}:${f.type}:${f.id}`),
    ['source_principal:string:1', 'destination_principal:string:2', 'bytes_sent:uint64:3', 'bytes_received:uint64:4', 'duration_ms:uint64:5', 'policy:string:6', 'reason:string:7', 'security:string:8'],
  );
});

const sample: Flow = {
  time: { seconds: '1700000000', nanos: 123456789 },
  uuid: '6b1f5a1e-3f7c-4a53-9f1e-0b1f7a9c2d11',
  verdict: 'DROPPED',
  drop_reason_desc: 'AUTH_REQUIRED',
  IP: { source: '10.0.1.11', destination: 'fd00::21', ipVersion: 'IPv6' },
  l4: { TCP: { source_port: 43210, destination_port: 8080, flags: { SYN: true } } },
  source: { identity: 4101, namespace: 'default', labels: ['k8s:app=xwing'], pod_name: 'xwing', workloads: [{ name: 'xwing', kind: 'Deployment' }] },
  destination: { identity: 4103, namespace: 'default', labels: ['k8s:app=deathstar'], pod_name: 'deathstar-1' },
  Type: 'L3_L4',
  node_name: 'node-a',
  traffic_direction: 'EGRESS',
  is_reply: { value: false },
  socket_cookie: '18446744073709551615',
  extensions: packConnectionInfo({ source_principal: 'spiffe://cluster.local/ns/default/sa/xwing', bytes_sent: 2 ** 40, bytes_received: 7, duration_ms: 1500, policy: 'default/deny-xwing', reason: 'no matching ALLOW policy', security: 'mutual_tls' }),
};

test('a Flow round-trips through protobuf, ConnectionInfo included', () => {
  const decoded = decodeFlow(encodeFlow(sample));
  assert.equal(decoded.uuid, sample.uuid);
  assert.deepEqual(decoded.time, sample.time);
  assert.equal(decoded.verdict, 'DROPPED');
  assert.equal(decoded.drop_reason_desc, 'AUTH_REQUIRED');
  assert.deepEqual(decoded.l4?.TCP, sample.l4?.TCP);
  assert.deepEqual(decoded.source, sample.source);
  assert.deepEqual(decoded.is_reply, { value: false });
  assert.equal(decoded.socket_cookie, '18446744073709551615');
  assert.equal(decoded.extensions?.type_url, CONNECTION_INFO_TYPE_URL);
  assert.deepEqual(unpackConnectionInfo(decoded), {
    source_principal: 'spiffe://cluster.local/ns/default/sa/xwing',
    bytes_sent: 2 ** 40,
    bytes_received: 7,
    duration_ms: 1500,
    policy: 'default/deny-xwing',
    reason: 'no matching ALLOW policy',
    security: 'mutual_tls',
  });
});

test('the gRPC method (de)serializers of GetFlows carry the same Flow', () => {
  const { observer } = flowProtos();
  const resp: GetFlowsResponse = { flow: sample, node_name: 'node-a', time: sample.time };
  const back = observer.GetFlows.responseDeserialize(observer.GetFlows.responseSerialize(resp));
  assert.equal(back.response_types, 'flow');
  assert.equal(back.node_name, 'node-a');
  assert.equal(back.flow?.uuid, sample.uuid);
  assert.equal(unpackConnectionInfo(back.flow!)?.policy, 'default/deny-xwing');
  const req = observer.GetFlows.requestDeserialize(
    observer.GetFlows.requestSerialize({ number: 20, follow: true, whitelist: [{ source_pod: ['default/'], verdict: ['DROPPED'], reply: [false] }], since: { seconds: 5, nanos: 0 } }),
  );
  assert.equal(req.number, '20');
  assert.deepEqual(req.whitelist, [{ source_pod: ['default/'], verdict: ['DROPPED'], reply: [false] }]);
  assert.deepEqual(req.since, { seconds: '5', nanos: 0 });
});

test('unpackConnectionInfo ignores flows without weft extensions', () => {
  assert.equal(unpackConnectionInfo({}), undefined);
  assert.equal(unpackConnectionInfo({ extensions: { type_url: 'type.googleapis.com/other.Thing', value: new Uint8Array() } }), undefined);
});

test('packConnectionInfo refuses values of the wrong type', () => {
  assert.throws(() => packConnectionInfo({ policy: 5 as unknown as string }), /invalid ConnectionInfo/);
});
