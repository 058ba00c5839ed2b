// Hubble's flow model (cilium api/v1 flow.proto, observer.proto), as the objects @grpc/proto-loader
// produces with `keepCase: true` and enums as strings: field names are the proto's own, so the JSON
// of these objects is Hubble's JSON. Hand-written for the fields weft fills; proto/ is the wire truth.

export type Verdict = 'VERDICT_UNKNOWN' | 'FORWARDED' | 'DROPPED' | 'ERROR' | 'AUDIT' | 'REDIRECTED' | 'TRACED' | 'TRANSLATED';
export type TrafficDirection = 'TRAFFIC_DIRECTION_UNKNOWN' | 'INGRESS' | 'EGRESS';
export type FlowType = 'UNKNOWN_TYPE' | 'L3_L4' | 'L7' | 'SOCK';
/** The DropReason values weft emits (subset of Hubble's enum; numbers in proto/flow/flow.proto). */
export type DropReason = 'DROP_REASON_UNKNOWN' | 'POLICY_DENIED' | 'AUTH_REQUIRED' | 'UNSUPPORTED_L3_PROTOCOL' | 'NO_SOCKET' | 'DROP_HOST_NOT_READY' | 'DROP_EP_NOT_READY';
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
  /** mutual_tls | none — Istio's connection_security_policy. */
  security?: string;
}

export interface LostEvent {
  source: LostEventSource;
  num_events_lost: string | number;
  cpu?: { value: number };
}

export interface GetFlowsResponse {
  flow?: Flow;
  node_status?: unknown;
  lost_events?: LostEvent;
  node_name: string;
  time: Timestamp;
}
