// Turning what the node saw into Hubble flows: every connection a proxy forwarded or denied, and
// every capture event of the eBPF programs (steered, refused, closed with bytes). Each flow carries
// Hubble's fields and weft's ConnectionInfo (identities, bytes, policy) for the extensions field.
import { randomUUID } from 'node:crypto';
import { isIPv6 } from 'node:net';
import type { CaptureEvent, SockAddr } from '../datapath/layout.js';
import { eventTime } from '../datapath/events.js';
import { workloadOfPod, type ClusterState, type Workload } from '../state/cluster-state.js';
import type { ConnectionInfo, DropReason, Endpoint, Flow, Timestamp, Verdict } from './types.js';

/** Cilium's monitor message types, as Hubble puts them in `event_type.type`. */
const EventType = { DROP: 1, TRACE: 4, POLICY_VERDICT: 5, TRACE_SOCK: 7 } as const;
const POLICY_MATCH_L3_L4 = 2;

/** Numeric DropReason values, for `event_type.sub_type` of drops. */
const DropCode: Record<DropReason, number> = {
  DROP_REASON_UNKNOWN: 0,
  POLICY_DENIED: 133,
  UNSUPPORTED_L3_PROTOCOL: 139,
  AUTH_REQUIRED: 189,
  DROP_HOST_NOT_READY: 202,
  DROP_EP_NOT_READY: 203,
};

/** A connection as a proxy saw it end (or refused it). */
export interface ConnectionEvent {
  direction: 'outbound' | 'inbound';
  verdict: 'FORWARDED' | 'DROPPED' | 'ERROR';
  dropReason?: DropReason;
  src: SockAddr;
  dst: SockAddr;
  /** The pod on each side, when known (resolved by the proxy, which knows them). */
  srcWorkload?: Workload;
  dstWorkload?: Workload;
  /** The service the client addressed. */
  service?: { name: string; namespace: string };
  info: ConnectionInfo;
}

export function timestampNow(ms = Date.now()): Timestamp {
  return { seconds: String(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 };
}

function endpointOf(w: Workload | undefined): Endpoint | undefined {
  if (!w) return undefined;
  const labels = Object.entries(w.labels)
    .map(([k, v]) => `k8s:${k}=${v}`)
    .concat(`k8s:io.kubernetes.pod.namespace=${w.namespace}`, `k8s:io.cilium.k8s.policy.serviceaccount=${w.serviceAccount}`)
    .sort();
  return { namespace: w.namespace, pod_name: w.name, labels, workloads: [{ name: workloadOfPod(w.name), kind: 'Pod' }] };
}

export class FlowBuilder {
  constructor(
    private readonly nodeName: string,
    private readonly state: () => ClusterState,
  ) {}

  private base(verdict: Verdict, src: SockAddr, dst: SockAddr, direction: 'outbound' | 'inbound'): Flow {
    return {
      time: timestampNow(),
      uuid: randomUUID(),
      verdict,
      IP: { source: src.ip, destination: dst.ip, ipVersion: isIPv6(src.ip) ? 'IPv6' : 'IPv4' },
      l4: { TCP: { source_port: src.port, destination_port: dst.port } },
      Type: 'L3_L4',
      node_name: this.nodeName,
      traffic_direction: direction === 'inbound' ? 'INGRESS' : 'EGRESS',
      is_reply: { value: false },
    };
  }

  /** A proxied connection: FORWARDED at its end with bytes, or DROPPED with the reason. Built from
   * what the proxy resolved; nothing is looked up again. */
  connection(e: ConnectionEvent): { flow: Flow; info: ConnectionInfo } {
    const flow = this.base(e.verdict, e.src, e.dst, e.direction);
    const source = endpointOf(e.srcWorkload);
    const destination = endpointOf(e.dstWorkload);
    if (source) flow.source = source;
    if (destination) flow.destination = destination;
    if (e.service) flow.destination_service = { name: e.service.name, namespace: e.service.namespace };
    if (e.verdict === 'DROPPED') {
      const reason = e.dropReason ?? 'POLICY_DENIED';
      flow.drop_reason_desc = reason;
      flow.event_type = { type: EventType.DROP, sub_type: DropCode[reason] };
    } else {
      flow.event_type = { type: e.direction === 'inbound' ? EventType.POLICY_VERDICT : EventType.TRACE, sub_type: 0 };
      // An L4 AuthorizationPolicy allowed it (Hubble's PolicyMatchType L3_L4); none applied: NONE.
      if (e.direction === 'inbound' && e.info.policy) flow.policy_match_type = POLICY_MATCH_L3_L4;
    }
    return { flow, info: e.info };
  }

  /**
   * A capture event from the eBPF programs: steering is REDIRECTED (a socket-level flow), a refusal
   * DROPPED (the pod's proxy was not ready), a close TRACED with bytes and duration. Passes are not
   * flows: they are the proxy's own sockets or traffic left alone on purpose.
   */
  capture(e: CaptureEvent, podOfCookie: (cookie: bigint) => Workload | undefined): { flow: Flow; info: ConnectionInfo } | undefined {
    if (e.kind === 'PASSED') return undefined;
    const state = this.state();
    const src = e.src ?? { ip: '0.0.0.0', port: 0 };
    const verdict: Verdict = e.kind === 'STEERED' ? 'REDIRECTED' : e.kind === 'REFUSED' ? 'DROPPED' : 'TRACED';
    const flow = this.base(verdict, src, e.dst, e.direction);
    flow.time = timestampNow(eventTime(e).getTime()); // when the kernel saw it, not when we read it
    flow.Type = 'SOCK';
    flow.event_type = { type: e.kind === 'REFUSED' ? EventType.DROP : EventType.TRACE_SOCK, sub_type: e.kind === 'REFUSED' ? DropCode.DROP_EP_NOT_READY : 0 };
    if (e.kind === 'REFUSED') flow.drop_reason_desc = 'DROP_EP_NOT_READY';
    if (e.socketCookie) flow.socket_cookie = e.socketCookie.toString();
    // Outbound: the netns tells the pod (its socket's address is loopback after steering).
    const srcW = e.direction === 'outbound' ? podOfCookie(e.netnsCookie) : state.workloadByIp(src.ip);
    const dstW = state.workloadByIp(e.dst.ip);
    if (srcW?.ip && e.direction === 'outbound') flow.IP!.source = srcW.ip;
    const source = endpointOf(srcW);
    const destination = endpointOf(dstW);
    if (source) flow.source = source;
    if (destination) flow.destination = destination;
    const info: ConnectionInfo = e.kind === 'CLOSED' ? { bytes_sent: Number(e.bytesSent), bytes_received: Number(e.bytesReceived), duration_ms: Number(e.durationNs / 1_000_000n) } : {};
    if (e.kind === 'REFUSED') info.reason = `capture refused: ${e.reason}`;
    return { flow, info };
  }
}
