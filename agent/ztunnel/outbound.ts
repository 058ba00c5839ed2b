// The outbound side of a pod proxy: an app's connection captured to 15001 goes where the app meant it
// to, by one of three roads. `route` decides (pure: the original destination and the cluster state in,
// a plan out — tested without sockets); `OutboundProxy` carries the plan out.
//
//   local        the destination is an enrolled pod of this node: hand the connection to its proxy
//                in this process (no HBONE; both identities are this agent's own knowledge)
//   hbone        the destination is an enrolled pod elsewhere: an HBONE tunnel (mTLS, CONNECT) to it
//   passthrough  the destination is outside the mesh: plaintext, as it came (as ztunnel does)
import net from 'node:net';
import type { Duplex } from 'node:stream';
import type { CaptureDatapath } from '../datapath/capture.js';
import { Marks, ProxyTimeouts } from '../config.js';
import type { SockAddr } from '../datapath/layout.js';
import { errorMessage } from '../errors.js';
import type { IdentityManager } from '../identity/manager.js';
import type { SpiffeId } from '../identity/spiffe.js';
import type { ClusterState, EnrolledWorkload, ServiceEntry, Target, Workload } from '../state/cluster-state.js';
import type { ConnectionManager } from './connection-manager.js';
import { ConnectionRecord, type RecordSink, type Relayed } from './connection-record.js';
import { copyBidirectional } from './copy.js';
import type { FastPaths } from './fast-paths.js';
import { formatAuthority } from '../system/host-port.js';
import { connectHeaders } from './hbone.js';
import { HboneRefused, type HbonePool } from './hbone-pool.js';
import type { NetnsSockets } from './netns-sockets.js';

/** What the outbound side needs of a same-node destination's inbound side (inbound.ts). */
export interface LocalInbound {
  admitLocal(from: { workload: EnrolledWorkload; id: SpiffeId; netnsCookie: bigint }, client: net.Socket, dstPort: number): Promise<Relayed | undefined>;
}

export type OutboundPlan =
  /** A service port with no endpoint. */
  | { kind: 'unroutable' }
  | { kind: 'local'; target: Target; dst: Workload & { ip: string }; identity: SpiffeId; service?: ServiceEntry }
  | { kind: 'hbone'; target: Target; dst: Workload & { ip: string }; identity: SpiffeId; service?: ServiceEntry }
  | { kind: 'passthrough'; target: Target; dst?: Workload; service?: ServiceEntry };

/**
 * Where a connection to `original` goes: the service's endpoint (load balanced by the state) or the
 * address itself; through this node (`localProxy` says whether an enrolled pod's proxy runs here and
 * the splice fast path is on), an HBONE tunnel, or plaintext.
 */
export function route(original: SockAddr, state: ClusterState, localProxy: (ip: string) => boolean): OutboundPlan {
  const target = state.resolve(original);
  if (!target) return { kind: 'unroutable' };
  const service = target.service ? state.serviceByKey(target.service) : undefined;
  const dst = target.workload ? state.workloadByKey(target.workload) : undefined;
  const svc = service ? { service } : {};
  if (dst?.enrolled && dst.ip) {
    const mesh = { ...dst, ip: dst.ip };
    const kind = dst.ip === target.addr.ip && localProxy(dst.ip) ? ('local' as const) : ('hbone' as const);
    return { kind, target, dst: mesh, identity: state.identityOf(dst), ...svc };
  }
  return { kind: 'passthrough', target, ...(dst ? { dst } : {}), ...svc };
}

export interface OutboundDeps {
  self: EnrolledWorkload;
  cookie: bigint;
  datapath: CaptureDatapath;
  state: () => ClusterState;
  identities: IdentityManager;
  pool: HbonePool;
  netnsSockets: NetnsSockets;
  fastPaths: () => FastPaths;
  /** The inbound side of an enrolled pod's proxy on this node, by pod IP (same-node hand-off). */
  localInbound: (ip: string) => LocalInbound | undefined;
  connections: ConnectionManager;
  sink: RecordSink;
}

export class OutboundProxy {
  constructor(private readonly d: OutboundDeps) {}

  /** An app's connection arrived on 15001. */
  handle(client: net.Socket): void {
    const { self, state } = this.d;
    this.d.connections.track(client);
    const src = { ip: self.ip, port: client.remotePort ?? 0 };
    const record = new ConnectionRecord(this.d.sink, 'outbound', { src, srcWorkload: self, srcIdentity: state().identityOf(self) });
    const peer: SockAddr = { ip: client.remoteAddress ?? '', port: client.remotePort ?? 0 };
    const original = this.d.datapath.originalDst(this.d.cookie, peer);
    if (!original) {
      // Without the record we cannot know where this was going: refuse rather than guess.
      record.unroutable('noOriginalDst', {});
      client.resetAndDestroy();
      return;
    }
    record.update({ originalDst: original.dst });
    const splice = this.d.fastPaths().splice;
    const plan = route(original.dst, state(), (ip) => splice && this.d.localInbound(ip) !== undefined);
    if (plan.kind === 'unroutable') {
      record.unroutable('noEndpoint', { dst: original.dst });
      client.resetAndDestroy();
      return;
    }
    record.update({ dst: plan.target.addr, ...(plan.dst ? { dstWorkload: plan.dst } : {}), ...(plan.service ? { service: plan.service } : {}) });
    if (plan.kind === 'local') void this.handOff(client, record, plan);
    else void this.forward(client, record, plan);
  }

  /** Same-node: the destination pod's proxy authorizes, connects to the app and splices. */
  private async handOff(client: net.Socket, record: ConnectionRecord, plan: Extract<OutboundPlan, { kind: 'local' }>): Promise<void> {
    record.update({ transport: 'local', dstIdentity: plan.identity });
    const peer = this.d.localInbound(plan.dst.ip);
    try {
      if (!peer) throw new Error(`the proxy of ${plan.dst.key} is gone`);
      const relayed = await peer.admitLocal({ workload: this.d.self, id: record.facts.srcIdentity!, netnsCookie: this.d.cookie }, client, plan.target.addr.port);
      if (relayed) record.forwarded(relayed);
      else record.denied('refused by the destination');
    } catch (err) {
      // Nothing may take the agent down with it: this connection fails, the others go on.
      record.failed(`same-node hand-off failed: ${errorMessage(err)}`);
      client.resetAndDestroy();
    }
  }

  private async forward(client: net.Socket, record: ConnectionRecord, plan: Extract<OutboundPlan, { kind: 'hbone' | 'passthrough' }>): Promise<void> {
    const { self, state } = this.d;
    let upstream: Duplex;
    try {
      if (plan.kind === 'hbone') {
        record.update({ transport: 'hbone', dstIdentity: plan.identity });
        const cert = await this.d.identities.get(self.namespace, self.serviceAccount, { timeoutMs: ProxyTimeouts.connectMs });
        const headers = connectHeaders(
          formatAuthority(plan.target.addr.ip, plan.target.addr.port),
          { namespace: self.namespace, pod: self.name, ip: self.ip, port: client.remotePort ?? 0 },
          plan.service ? `${plan.service.name}.${plan.service.namespace}.svc.${state().clusterDomain}` : undefined,
        );
        upstream = await this.d.pool.connect({ netns: self.netns, cert }, plan.dst.ip, [plan.identity], headers);
      } else {
        // Not a mesh workload: there is nobody to do mTLS with, so it goes out as it came.
        record.update({ transport: 'passthrough' });
        upstream = await this.d.netnsSockets.connect(
          { family: net.isIPv6(plan.target.addr.ip) ? 'ipv6' : 'ipv4', mark: Marks.proxy, transparent: false },
          { host: plan.target.addr.ip, port: plan.target.addr.port, timeoutMs: ProxyTimeouts.connectMs },
        );
      }
    } catch (err) {
      // A denial is the destination's flow (it decided); a failure of our own is an ERROR here.
      if (err instanceof HboneRefused && err.status === 401) record.denied(errorMessage(err));
      else record.failed(errorMessage(err));
      client.resetAndDestroy();
      return;
    }
    if (client.destroyed) {
      upstream.destroy();
      return;
    }
    this.d.connections.track(upstream);
    // HBONE fast path: batched writes into the tunnel and out of it (plain passthrough is not HBONE).
    const result = await copyBidirectional(client, upstream, { tuned: plan.kind === 'hbone' && this.d.fastPaths().hbone });
    record.forwarded({ srcToDst: client.bytesRead, dstToSrc: client.bytesWritten, ...(result.error ? { error: result.error } : {}) });
  }
}
