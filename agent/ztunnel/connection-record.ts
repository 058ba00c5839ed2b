// One record per connection a pod proxy handles, as ztunnel keeps one ConnectionResult: it is told how
// the connection ended — forwarded (with its bytes), denied, failed, or refused before it had a
// destination — and from that one call it emits the flow, the access-log line and the counters,
// exactly once, from workloads already resolved (the flow builder looks nothing up again).
import type { SockAddr } from '../datapath/layout.js';
import type { ConnectionEvent } from '../flows/builder.js';
import type { ConnectionInfo, DropReason } from '../flows/types.js';
import { formatSpiffeId, principalOf, type SpiffeId } from '../identity/spiffe.js';
import type { Logger } from '../log.js';
import type { ServiceEntry, Workload } from '../state/cluster-state.js';
import { formatAuthority } from '../system/host-port.js';

/** How the bytes travel: an HBONE tunnel, a same-node hand-off, plaintext in from outside the mesh,
 * or plaintext out to a destination outside it. */
export type Transport = 'hbone' | 'local' | 'plaintext' | 'passthrough';

export interface ProxyStats {
  outbound: { accepted: number; forwarded: number; hbone: number; local: number; passthrough: number; noOriginalDst: number; noEndpoint: number; upstreamFailed: number; denied: number };
  inbound: { accepted: number; forwarded: number; hbone: number; local: number; plaintext: number; denied: number; badRequest: number; upstreamFailed: number; closedByPolicy: number };
  /** Same-node connections whose bytes (some or all) went around the proxy, and how many bytes. */
  spliced: { connections: number; bytes: number };
  active: number;
}

export function newProxyStats(): ProxyStats {
  return {
    outbound: { accepted: 0, forwarded: 0, hbone: 0, local: 0, passthrough: 0, noOriginalDst: 0, noEndpoint: 0, upstreamFailed: 0, denied: 0 },
    inbound: { accepted: 0, forwarded: 0, hbone: 0, local: 0, plaintext: 0, denied: 0, badRequest: 0, upstreamFailed: 0, closedByPolicy: 0 },
    spliced: { connections: 0, bytes: 0 },
    active: 0,
  };
}

/** Where a record's outcome goes. */
export interface RecordSink {
  flows(e: ConnectionEvent): void;
  /** The pod's logger (bound to the pod). */
  log: Logger;
  stats: ProxyStats;
}

/** What is known of a connection; filled in as the proxy learns it. */
export interface ConnectionFacts {
  transport?: Transport;
  /** The flow's source: the client's address (outbound: the pod's IP and the app's port). */
  src: SockAddr;
  /** The flow's destination: the endpoint (outbound: after load balancing; inbound: the app). */
  dst?: SockAddr;
  /** Outbound: what the app dialled (a service VIP, or the endpoint itself). */
  originalDst?: SockAddr;
  srcWorkload?: Workload;
  dstWorkload?: Workload;
  service?: ServiceEntry;
  srcIdentity?: SpiffeId;
  dstIdentity?: SpiffeId;
  /** The AuthorizationPolicy that allowed or denied it. */
  policy?: string;
}

/** Bytes each way: source → destination and back; of those, what the kernel spliced around the proxy. */
export interface Relayed {
  srcToDst: number;
  dstToSrc: number;
  spliced?: { srcToDst: number; dstToSrc: number };
  error?: Error;
}

const SECURITY: Record<Transport, string> = { hbone: 'mutual_tls', local: 'node_local', plaintext: 'none', passthrough: 'none' };

export class ConnectionRecord {
  readonly started = Date.now();
  private ended = false;

  constructor(
    private readonly sink: RecordSink,
    readonly direction: 'outbound' | 'inbound',
    readonly facts: ConnectionFacts,
  ) {
    sink.stats[direction].accepted++;
  }

  /** Learnt more about the connection (destination, identities, transport, policy). */
  update(more: Partial<ConnectionFacts>): this {
    Object.assign(this.facts, more);
    return this;
  }

  /** Bytes flowed (until a close or an error): FORWARDED. */
  forwarded(r: Relayed): void {
    if (!this.end()) return;
    const { stats } = this.sink;
    const transport = this.facts.transport ?? 'passthrough';
    stats[this.direction].forwarded++;
    const perTransport = stats[this.direction] as Record<string, number>;
    if (transport in perTransport) perTransport[transport] = (perTransport[transport] ?? 0) + 1;
    const spliced = r.spliced ? r.spliced.srcToDst + r.spliced.dstToSrc : 0;
    if (spliced > 0) {
      stats.spliced.connections++;
      stats.spliced.bytes += spliced;
    }
    this.flow('FORWARDED', { bytes_sent: r.srcToDst, bytes_received: r.dstToSrc, duration_ms: Date.now() - this.started });
    // The destination side names bytes as it sees them: received from the client, sent back to it.
    const bytes = this.direction === 'outbound' ? { bytesSent: r.srcToDst, bytesReceived: r.dstToSrc } : { bytesReceived: r.srcToDst, bytesSent: r.dstToSrc };
    this.sink.log.info(
      {
        ...this.logFields(),
        ...bytes,
        ...(r.spliced ? { spliced: this.direction === 'outbound' ? { sent: r.spliced.srcToDst, received: r.spliced.dstToSrc } : { received: r.spliced.srcToDst, sent: r.spliced.dstToSrc } } : {}),
        ...(this.direction === 'inbound' ? { policy: this.facts.policy ?? null } : {}),
        durationMs: Date.now() - this.started,
        ...(r.error ? { err: r.error.message } : {}),
      },
      'connection complete',
    );
  }

  /**
   * Refused by policy (or PeerAuthentication): DROPPED. On the source side a denial is the
   * destination's to record (it decided), so only the counter and a log line.
   */
  denied(reason: string, dropReason: DropReason = 'POLICY_DENIED'): void {
    if (!this.end()) return;
    this.sink.stats[this.direction].denied++;
    if (this.direction === 'inbound') this.flow('DROPPED', { reason }, dropReason);
    this.sink.log.info({ ...this.logFields(), reason }, this.direction === 'inbound' ? 'inbound connection denied' : 'outbound connection refused');
  }

  /** Inbound, refused before any policy: a destination the proxy never forwards to (a proxy port,
   * loopback, another address). */
  invalid(reason: string): void {
    if (!this.end()) return;
    this.sink.stats.inbound.badRequest++;
    this.flow('DROPPED', { reason }, 'POLICY_DENIED');
    this.sink.log.info({ ...this.logFields(), reason }, 'inbound connection refused');
  }

  /** The other end could not be reached (or the hand-off broke): ERROR. */
  failed(err: string): void {
    if (!this.end()) return;
    this.sink.stats[this.direction].upstreamFailed++;
    this.flow('ERROR', { reason: this.direction === 'inbound' ? `app did not accept: ${err}` : err });
    this.sink.log.info({ ...this.logFields(), err }, this.direction === 'inbound' ? 'app did not accept the connection' : 'outbound connection refused');
  }

  /** Outbound, before it had a destination: no original destination recorded, or a service with no
   * endpoint. Counted and logged; there is no flow without a destination. */
  unroutable(outcome: 'noOriginalDst' | 'noEndpoint', detail: Record<string, unknown>): void {
    if (!this.end()) return;
    this.sink.stats.outbound[outcome]++;
    this.sink.log.warn({ peer: this.facts.src, ...detail }, outcome === 'noOriginalDst' ? 'outbound connection without an original destination' : 'service has no endpoint for this port');
  }

  private end(): boolean {
    if (this.ended) return false;
    this.ended = true;
    return true;
  }

  private flow(verdict: ConnectionEvent['verdict'], extra: ConnectionInfo, dropReason?: DropReason): void {
    const f = this.facts;
    const transport = f.transport;
    this.sink.flows({
      direction: this.direction,
      verdict,
      ...(dropReason ? { dropReason } : {}),
      src: f.src,
      dst: f.dst ?? f.originalDst ?? { ip: '0.0.0.0', port: 0 },
      ...(f.srcWorkload ? { srcWorkload: f.srcWorkload } : {}),
      ...(f.dstWorkload ? { dstWorkload: f.dstWorkload } : {}),
      ...(f.service ? { service: f.service } : {}),
      info: {
        ...(f.srcIdentity ? { source_principal: principalOf(f.srcIdentity) } : {}),
        ...(f.dstIdentity ? { destination_principal: principalOf(f.dstIdentity) } : {}),
        ...(transport ? { security: SECURITY[transport] } : {}),
        ...(f.policy ? { policy: f.policy } : {}),
        ...extra,
      },
    });
  }

  /** The access log's fields: the same names for every outcome of a direction. */
  private logFields(): Record<string, unknown> {
    const f = this.facts;
    const security = f.transport ? SECURITY[f.transport] : undefined;
    if (this.direction === 'outbound') {
      const original = f.originalDst ?? f.dst;
      return {
        direction: 'outbound',
        ...(f.transport ? { transport: f.transport } : {}),
        src: f.src.ip,
        ...(original ? { dst: formatAuthority(original.ip, original.port) } : {}),
        ...(f.dst ? { endpoint: formatAuthority(f.dst.ip, f.dst.port) } : {}),
        ...(f.service ? { service: f.service.key } : {}),
        ...(f.dstWorkload ? { dstWorkload: f.dstWorkload.key } : {}),
        ...(f.srcIdentity ? { srcIdentity: formatSpiffeId(f.srcIdentity) } : {}),
        ...(f.dstIdentity ? { dstIdentity: formatSpiffeId(f.dstIdentity) } : {}),
        ...(security ? { security } : {}),
      };
    }
    return {
      direction: 'inbound',
      ...(f.transport ? { transport: f.transport } : {}),
      src: f.src.ip,
      ...(f.dst ? { dst: formatAuthority(f.dst.ip, f.dst.port) } : {}),
      ...(f.dstIdentity ? { dstIdentity: formatSpiffeId(f.dstIdentity) } : {}),
      ...(f.srcIdentity ? { srcIdentity: formatSpiffeId(f.srcIdentity) } : {}),
      ...(security ? { security } : {}),
    };
  }
}
