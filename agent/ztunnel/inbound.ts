// The inbound side of a pod proxy. Three ways in, one way through:
//
//   hbone      a peer's proxy, over mutual TLS (the HBONE server verified it): its SPIFFE identity
//   plaintext  a client outside the mesh, steered to 15006 by sk_lookup: PeerAuthentication first
//   local      a same-node client, handed over by its own pod's proxy in this agent: known identity
//
// each goes through `admit`: which destinations are reachable at all (admission.ts), L4
// AuthorizationPolicy, then the app from the client's own address (IP_TRANSPARENT) and bytes both ways
// (copied, or spliced in the kernel for a same-node client), with one connection record for the flow,
// the log line and the counters.
import type http2 from 'node:http2';
import net from 'node:net';
import { randomInt } from 'node:crypto';
import type { Duplex } from 'node:stream';
import type { CaptureDatapath } from '../datapath/capture.js';
import { Marks, ProxyTimeouts } from '../config.js';
import { errorMessage } from '../errors.js';
import { principalOf, type SpiffeId } from '../identity/spiffe.js';
import { authorize, effectiveMtlsMode, type ConnectionAttrs } from '../policy/index.js';
import type { ClusterState, EnrolledWorkload, Workload } from '../state/cluster-state.js';
import { destinationProblem } from './admission.js';
import type { ConnectionManager } from './connection-manager.js';
import { ConnectionRecord, type RecordSink, type Relayed, type Transport } from './connection-record.js';
import { copyBidirectional } from './copy.js';
import type { FastPaths } from './fast-paths.js';
import { forwardedFor } from './hbone.js';
import type { HbonePeer } from './hbone-server.js';
import type { NetnsSockets } from './netns-sockets.js';
import type { LocalInbound } from './outbound.js';
import { spliceBidirectional } from './splice.js';

export interface InboundDeps {
  self: EnrolledWorkload;
  cookie: bigint;
  datapath: CaptureDatapath;
  state: () => ClusterState;
  netnsSockets: NetnsSockets;
  fastPaths: () => FastPaths;
  connections: ConnectionManager;
  sink: RecordSink;
}

/** One inbound connection on its way to `admit`. */
interface Arrival {
  transport: Exclude<Transport, 'passthrough'>;
  downstream: Duplex;
  attrs: ConnectionAttrs;
  srcPort: number;
  peer?: SpiffeId;
  srcWorkload?: Workload;
  refuse: (status: number) => void;
  accept: () => void;
  /** local: the client pod's netns cookie (where the client-facing socket lives), for the splice. */
  clientNetns?: bigint;
}

export class InboundProxy implements LocalInbound {
  constructor(private readonly d: InboundDeps) {}

  /** A CONNECT from a verified peer, to exactly `target` (the HBONE server refused anything else). */
  async hbone(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, peer: HbonePeer, target: { ip: string; port: number }): Promise<void> {
    const refuse = (status: number): void => {
      if (!stream.destroyed && !stream.headersSent) stream.respond({ ':status': status }, { endStream: true });
      else stream.close();
    };
    const attrs: ConnectionAttrs = {
      sourcePrincipal: principalOf(peer.id),
      sourceNamespace: peer.id.namespace,
      sourceIp: peer.remoteAddress,
      destinationIp: target.ip,
      destinationPort: target.port,
    };
    // The client's own port travels in `forwarded` (the tunnel's port is the pooled connection's);
    // its address is the tunnel's source, which the client's netns chose, so that is what counts.
    const from = forwardedFor(headers.forwarded);
    const srcPort = from?.ip === attrs.sourceIp ? from.port : peer.remotePort;
    const arrival: Arrival = { transport: 'hbone', downstream: stream, attrs, srcPort, peer: peer.id, refuse, accept: () => stream.respond({ ':status': 200 }) };
    // The trust domain was checked at the handshake; it may have changed since (agents follow the controller).
    if (peer.id.trustDomain !== this.d.state().trustDomain) {
      this.record(arrival).denied(`peer trust domain ${peer.id.trustDomain} is not the mesh's`);
      return refuse(401);
    }
    await this.admit(arrival);
  }

  /** A plaintext client steered to 15006: our local address is the original destination (no NAT). */
  async plaintext(conn: net.Socket): Promise<void> {
    this.d.connections.track(conn);
    const attrs: ConnectionAttrs = { sourceIp: conn.remoteAddress ?? '', destinationIp: conn.localAddress ?? '', destinationPort: conn.localPort ?? 0 };
    const arrival: Arrival = { transport: 'plaintext', downstream: conn, attrs, srcPort: conn.remotePort ?? 0, refuse: () => conn.resetAndDestroy(), accept: () => undefined };
    const state = this.d.state();
    if (effectiveMtlsMode(state.peerAuthentications, this.d.self, attrs.destinationPort, { rootNamespace: state.rootNamespace }) === 'STRICT') {
      this.record(arrival).denied('PeerAuthentication STRICT: plaintext refused', 'AUTH_REQUIRED');
      conn.resetAndDestroy();
      return;
    }
    await this.admit(arrival);
  }

  /**
   * A same-node client handed over by its own pod's proxy. The source is known without a handshake:
   * this agent enrolled that pod and holds its identity. Resolves with what was relayed, or
   * undefined when the connection was refused.
   */
  admitLocal(from: { workload: EnrolledWorkload; id: SpiffeId; netnsCookie: bigint }, client: net.Socket, dstPort: number): Promise<Relayed | undefined> {
    const attrs: ConnectionAttrs = {
      sourcePrincipal: principalOf(from.id),
      sourceNamespace: from.id.namespace,
      sourceIp: from.workload.ip,
      destinationIp: this.d.self.ip,
      destinationPort: dstPort,
    };
    return this.admit({
      transport: 'local',
      downstream: client,
      attrs,
      srcPort: client.remotePort ?? 0,
      peer: from.id,
      srcWorkload: from.workload,
      refuse: () => client.resetAndDestroy(),
      accept: () => undefined,
      clientNetns: from.netnsCookie,
    });
  }

  /** Policy changed: close every admitted connection the new policy denies (as ztunnel does). */
  reauthorize(): number {
    return this.d.connections.reauthorize((attrs) => this.decide(attrs));
  }

  private record(a: Arrival): ConnectionRecord {
    const state = this.d.state();
    const srcWorkload = a.srcWorkload ?? state.workloadByIp(a.attrs.sourceIp);
    return new ConnectionRecord(this.d.sink, 'inbound', {
      transport: a.transport,
      src: { ip: a.attrs.sourceIp, port: a.srcPort },
      dst: { ip: a.attrs.destinationIp, port: a.attrs.destinationPort },
      dstWorkload: this.d.self,
      dstIdentity: state.identityOf(this.d.self),
      ...(srcWorkload ? { srcWorkload } : {}),
      ...(a.peer ? { srcIdentity: a.peer } : {}),
    });
  }

  /**
   * Admission, L4 policy, then the app from the client's own address, then bytes both ways. Resolves
   * with what was relayed, or undefined when refused.
   */
  private async admit(a: Arrival): Promise<Relayed | undefined> {
    const record = this.record(a);
    const { attrs, downstream } = a;
    const problem = destinationProblem({ ip: attrs.destinationIp, port: attrs.destinationPort }, this.d.self.ip);
    if (problem) {
      record.invalid(problem);
      a.refuse(a.transport === 'hbone' ? 400 : 401);
      return undefined;
    }
    const decision = this.decide(attrs);
    if (decision.policy) record.update({ policy: decision.policy });
    if (!decision.allowed) {
      record.denied(decision.reason ?? 'denied by policy');
      a.refuse(401);
      return undefined;
    }
    let app: AppConnection;
    try {
      app = await this.connectToApp(attrs, { splice: a.transport === 'local' });
    } catch (err) {
      record.failed(errorMessage(err));
      a.refuse(503);
      return undefined;
    }
    if (downstream.destroyed) {
      app.release();
      app.socket.destroy();
      return undefined;
    }
    a.accept();
    this.d.connections.track(downstream);
    this.d.connections.track(app.socket);
    const forget = this.d.connections.admit({
      attrs,
      close: () => {
        downstream.destroy();
        app.socket.destroy();
      },
    });
    const relayed =
      a.transport === 'local' && a.clientNetns !== undefined
        ? await this.relaySpliced(downstream as net.Socket, a.clientNetns, app.socket)
        : await relayCopied(downstream, app.socket, a.transport === 'hbone' && this.d.fastPaths().hbone);
    app.release();
    forget();
    record.forwarded(relayed);
    return relayed;
  }

  /** Same-node: copy while the kernel may not splice yet, then let it. */
  private async relaySpliced(down: net.Socket, downNetns: bigint, up: net.Socket): Promise<Relayed> {
    const r = await spliceBidirectional(this.d.datapath, { down, downNetns, up, upNetns: this.d.cookie });
    return {
      ...(r.error ? { error: r.error } : {}),
      srcToDst: r.clientBytes,
      dstToSrc: r.serverBytes,
      spliced: { srcToDst: r.splicedClientBytes, dstToSrc: r.splicedServerBytes },
    };
  }

  private decide(attrs: ConnectionAttrs): ReturnType<typeof authorize> {
    const state = this.d.state();
    return authorize(state.authorizationPolicies, this.d.self, attrs, { rootNamespace: state.rootNamespace, trustDomain: state.trustDomain });
  }

  /**
   * Connect to the app inside the pod from the client's own address, so the app sees its real peer.
   * The source port is ours to choose; exactly this connection is registered so inbound capture lets
   * it through.
   */
  private async connectToApp(attrs: ConnectionAttrs, opts: { splice: boolean }): Promise<AppConnection> {
    const appAddr = { ip: attrs.destinationIp, port: attrs.destinationPort };
    for (let attempt = 0; ; attempt++) {
      const src = { ip: attrs.sourceIp, port: randomInt(20000, 61000) };
      // sockops removes the entry when the app's side of the handshake completes (which may come
      // after our side reports the connect, so a splice candidate's entry is not removed here);
      // `forget` covers a connect that failed.
      const forget = this.d.datapath.allowUpstream({ local: appAddr, remote: src }, { splice: opts.splice });
      let connected = false;
      try {
        const socket = await this.d.netnsSockets.connect(
          { family: net.isIPv6(attrs.destinationIp) ? 'ipv6' : 'ipv4', mark: Marks.app, transparent: true },
          { host: attrs.destinationIp, port: attrs.destinationPort, localAddress: src.ip, localPort: src.port, timeoutMs: ProxyTimeouts.connectMs },
        );
        connected = true;
        return { socket, release: opts.splice ? forget : () => undefined };
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        const busy = code === 'EADDRINUSE' || code === 'EADDRNOTAVAIL';
        if (!busy || attempt >= 8) throw err;
      } finally {
        if (!connected || !opts.splice) forget();
      }
    }
  }
}

/** The proxy's connection to an app, and what undoes its registration with inbound capture. */
interface AppConnection {
  socket: net.Socket;
  release: () => void;
}

async function relayCopied(downstream: Duplex, app: net.Socket, tuned: boolean): Promise<Relayed> {
  const result = await copyBidirectional(downstream, app, { tuned });
  return { ...(result.error ? { error: result.error } : {}), srcToDst: app.bytesWritten, dstToSrc: app.bytesRead };
}
