// Hubble's flow model (cilium api/v1 flow.proto, observer.proto), as the objects @grpc/proto-loader
// produces with `keepCase: true` and enums as strings: field names are the proto's own, so the JSON
// of these objects is Hubble's JSON. Hand-written for the fields weft fills; proto/ is the wire truth.

export type Verdict = 'VERDICT_UNKNOWN' | 'FORWARDED' | 'DROPPED' | 'ERROR' | 'AUDIT' | 'REDIRECTED' | 'TRACED' | 'TRANSLATED';
export type TrafficDirection = 'TRAFFIC_DIRECTION_UNKNOWN' | 'INGRESS' | 'EGRESS';
export type FlowType = 'UNKNOWN_TYPE' | 'L3_L4' | 'L7' | 'SOCK';
/** The DropReason values weft emits (subset of Hubble's enum; numbers in proto/flow/flow.proto). */
export type DropReason = 'DROP_REASON_UNKNOWN' | 'POLICY_DENIED' | 'AUTH_REQUIRED' | 'UNSUPPORTED_L3_PROTOCOL' | 'DROP_HOST_NOT_READY' | 'DROP_EP_NOT_READY';
export type AuthType = 'DISABLED' | 'SPIRE' | 'TEST_ALWAYS_FAIL';
export type IPVersion = 'IP_NOT_USED' | 'IPv4' | 'IPv6';
export type LostEventSource = 'UNKNOWN_LOST_EVENT_SOURCE' | 'PERF_EVENT_RING_BUFFER' | 'OBSERVER_EVENTS_QUEUE' | 'HUBBLE_RING_BUFFER';

export interface Timestamp {
  seconds: string | number;
  nanos: number;
}

export interface Workload {
  name: string;
  kind: string;
}

export interface Endpoint {
  ID?: number;
  identity?: number;
  cluster_name?: string;
  namespace?: string;
  /** `key=value` strings, as Hubble sorts them. */
  labels?: string[];
  pod_name?: string;
  workloads?: Workload[];
}

export interface IP {
  source: string;
  destination: string;
  ipVersion: IPVersion;
  encrypted?: boolean;
}

export interface TCPFlags {
  FIN?: boolean;
  SYN?: boolean;
  RST?: boolean;
  PSH?: boolean;
  ACK?: boolean;
  URG?: boolean;
  ECE?: boolean;
  CWR?: boolean;
  NS?: boolean;
}

export interface Layer4 {
  TCP?: { source_port: number; destination_port: number; flags?: TCPFlags };
  UDP?: { source_port: number; destination_port: number };
  ICMPv4?: { type: number; code: number };
  ICMPv6?: { type: number; code: number };
  SCTP?: { source_port: number; destination_port: number };
  /** Which of the above is set (proto-loader's `oneofs: true` virtual field). */
  protocol?: 'TCP' | 'UDP' | 'ICMPv4' | 'ICMPv6' | 'SCTP' | 'VRRP' | 'IGMP';
}

export interface Ethernet {
  source: string;
  destination: string;
}

export interface NetworkInterface {
  index: number;
  name: string;
}

/** A network policy that allowed or denied a flow. */
export interface Policy {
  name: string;
  namespace: string;
  labels?: string[];
  revision?: string | number;
  kind?: string;
}

export interface HTTP {
  code: number;
  method: string;
  url: string;
  protocol: string;
  headers?: Array<{ key: string; value: string }>;
}

export interface Layer7 {
  type: 'UNKNOWN_L7_TYPE' | 'REQUEST' | 'RESPONSE' | 'SAMPLE';
  latency_ns: string | number;
  http?: HTTP;
  /** Which of http / dns / kafka is set (proto-loader's `oneofs: true` virtual field). */
  record?: 'dns' | 'http' | 'kafka';
  dns?: { query: string; ips?: string[]; ttl?: number; cnames?: string[]; rcode?: number; qtypes?: string[]; rrtypes?: string[] };
}

export interface Service {
  name: string;
  namespace: string;
}

export interface CiliumEventType {
  type: number;
  sub_type: number;
}

export interface Flow {
  time: Timestamp;
  uuid: string;
  verdict: Verdict;
  drop_reason_desc?: DropReason;
  auth_type?: AuthType;
  IP?: IP;
  l4?: Layer4;
  source?: Endpoint;
  destination?: Endpoint;
  Type: FlowType;
  node_name: string;
  source_names?: string[];
  destination_names?: string[];
  l7?: Layer7;
  event_type?: CiliumEventType;
  source_service?: Service;
  destination_service?: Service;
  traffic_direction: TrafficDirection;
  is_reply?: { value: boolean };
  /** Deprecated in Hubble in favour of is_reply; still read by old clients and filters. */
  reply?: boolean;
  ethernet?: Ethernet;
  policy_match_type?: number;
  interface?: NetworkInterface;
  proxy_port?: number;
  trace_context?: { parent?: { trace_id: string } };
  node_labels?: string[];
  egress_allowed_by?: Policy[];
  ingress_allowed_by?: Policy[];
  egress_denied_by?: Policy[];
  ingress_denied_by?: Policy[];
  policy_log?: string[];
  socket_cookie?: string | number;
  cgroup_id?: string | number;
  /** Hubble's `extensions` (google.protobuf.Any, field 150000): weft puts a ConnectionInfo here. */
  extensions?: AnyMessage;
  Summary?: string;
}

export interface AnyMessage {
  type_url: string;
  value: Uint8Array;
}

/** What weft knows about a flow beyond Hubble's fields: identities, bytes, policy. Travels packed in
 * `Flow.extensions` as the protobuf message `weft.flow.v1.ConnectionInfo` (proto/weft/flow/v1). */
export interface ConnectionInfo {
  source_principal?: string;
  destination_principal?: string;
  /** Client → server bytes (the request direction), whichever side reports. */
  bytes_sent?: number;
  /** Server → client bytes (the response direction). */
  bytes_received?: number;
  duration_ms?: number;
  policy?: string;
  reason?: string;
  /** mutual_tls | none | node_local (same-node hand-off) — Istio's connection_security_policy. */
  security?: string;
}

export interface LostEvent {
  source: LostEventSource;
  num_events_lost: string | number;
  cpu?: { value: number };
  first?: Timestamp;
  last?: Timestamp;
}

export interface GetFlowsResponse {
  flow?: Flow;
  node_status?: NodeStatusEvent;
  /** Which of flow / node_status / lost_events is set (proto-loader's `oneofs: true` virtual field). */
  response_types?: 'flow' | 'node_status' | 'lost_events';
  lost_events?: LostEvent;
  node_name: string;
  time: Timestamp;
}

export type NodeState = 'UNKNOWN_NODE_STATE' | 'NODE_CONNECTED' | 'NODE_UNAVAILABLE' | 'NODE_GONE' | 'NODE_ERROR';

export interface NodeStatusEvent {
  state_change: NodeState;
  node_names: string[];
  message?: string;
}

export interface EventTypeFilter {
  type: number;
  match_sub_type?: boolean;
  sub_type?: number;
}

/** One filter of GetFlowsRequest: every field set must match, values inside a field are alternatives. */
export interface FlowFilter {
  uuid?: string[];
  source_ip?: string[];
  source_pod?: string[];
  source_fqdn?: string[];
  source_label?: string[];
  source_service?: string[];
  source_workload?: Workload[];
  destination_ip?: string[];
  destination_pod?: string[];
  destination_fqdn?: string[];
  destination_label?: string[];
  destination_service?: string[];
  destination_workload?: Workload[];
  traffic_direction?: TrafficDirection[];
  verdict?: Verdict[];
  event_type?: EventTypeFilter[];
  http_status_code?: string[];
  protocol?: string[];
  source_port?: string[];
  destination_port?: string[];
  reply?: boolean[];
  dns_query?: string[];
  source_identity?: number[];
  destination_identity?: number[];
  http_method?: string[];
  http_path?: string[];
  tcp_flags?: TCPFlags[];
  node_name?: string[];
  ip_version?: IPVersion[];
  trace_id?: string[];
}

export interface GetFlowsRequest {
  /** uint64: decimal string as decoded (longs: String), a number when built in code. */
  number?: string | number;
  first?: boolean;
  follow?: boolean;
  blacklist?: FlowFilter[];
  whitelist?: FlowFilter[];
  since?: Timestamp;
  until?: Timestamp;
}

export interface ServerStatusResponse {
  num_flows: string | number;
  max_flows: string | number;
  seen_flows: string | number;
  uptime_ns: string | number;
  num_connected_nodes?: { value: number };
  num_unavailable_nodes?: { value: number };
  unavailable_nodes?: string[];
  version?: string;
  flows_rate?: number;
}

export interface Node {
  name: string;
  version?: string;
  address?: string;
  state?: NodeState;
  tls?: { enabled?: boolean; server_name?: string };
  uptime_ns?: string | number;
  num_flows?: string | number;
  max_flows?: string | number;
  seen_flows?: string | number;
}

export interface GetNodesResponse {
  nodes: Node[];
}

export interface GetNamespacesResponse {
  namespaces: Array<{ cluster?: string; namespace: string }>;
}

/** GetAgentEvents and GetDebugEvents take the same request shape. */
export interface GetEventsRequest {
  number?: string | number;
  first?: boolean;
  follow?: boolean;
  since?: Timestamp;
  until?: Timestamp;
}

export interface AgentEvent {
  type: string;
  agent_start?: { time: Timestamp };
  unknown?: { type: string; notification: string };
}

export interface GetAgentEventsResponse {
  agent_event?: AgentEvent;
  node_name: string;
  time: Timestamp;
}

export interface DebugEvent {
  type: string;
  source?: Endpoint;
  message?: string;
  cpu?: { value: number };
}

export interface GetDebugEventsResponse {
  debug_event?: DebugEvent;
  node_name: string;
  time: Timestamp;
}

/** Empty request messages (ServerStatusRequest, GetNodesRequest, GetNamespacesRequest). */
export type EmptyRequest = Record<string, never>;
