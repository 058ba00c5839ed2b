// The proxy of one enrolled pod, in the manner of Istio's in-pod mode: the agent opens the pod's
// listeners *inside* the pod's network namespace — 15001 (outbound capture), 15006 (inbound plaintext
// capture), 15008 (HBONE) — and its upstream sockets too, so the pod's own IP is the source of what
// it sends and nothing in the pod needs iptables.
//
//   outbound:  app → 15001 → original destination → mesh workload? HBONE to its 15008 : plaintext
//   inbound:   peer proxy → 15008 (mTLS, CONNECT) → L4 policy → app, from the client's own IP
//              plaintext client → 15006 (via sk_lookup) → PeerAuthentication + L4 policy → app
import http2 from 'node:http2';
import net from 'node:net';
import { randomInt } from 'node:crypto';
import type { Duplex } from 'node:stream';
import { listenInNetns } from '../../native/index.js';
import type { CaptureDatapath } from '../datapath/capture.js';
import { APP_MARK, EnrollState, INBOUND_PORT, OUTBOUND_PORT, PROXY_MARK, type SockAddr } from '../datapath/layout.js';
import { ErrorCodes, WeftError, errorMessage } from '../errors.js';
import { identityKey, type IdentityManager, type WorkloadCertificate } from '../identity/manager.js';
import { formatSpiffeId, principalOf, type SpiffeId } from '../identity/spiffe.js';
import type { Logger } from '../log.js';
import { authorize, effectiveMtlsMode, type ConnectionAttrs } from '../policy/index.js';
import type { ClusterState, Target, Workload } from '../state/cluster-state.js';
import type { ConnectionEvent } from '../flows/builder.js';
import { copyBidirectional } from './copy.js';
import type { FastPaths } from './fast-paths.js';
import { spliceBidirectional } from './splice.js';
import { NetnsSockets } from './netns-sockets.js';
import { HBONE_PORT, connectHeaders, formatAuthority, forwardedFor } from './hbone.js';
import { HboneServer, type HbonePeer } from './hbone-server.js';
import type { HbonePool } from './hbone-pool.js';
import { HboneRefused } from './hbone-pool.js';
import { TransparentRouting } from './inpod-routing.js';
import { destinationProblem } from './admission.js';

const CONNECT_TIMEOUT_MS = 10_000;
/** How long enrollment waits for the pod's certificate before giving up (the pod stays PENDING and
 * the agent tries again on its next reconcile). */
export const CERTIFICATE_DEADLINE_MS = 15_000;

export interface PodProxyDeps {
  datapath: CaptureDatapath;
  state: () => ClusterState;
  identities: IdentityManager;
  pool: HbonePool;
  log: Logger;
  /** Every connection's outcome, for flows and metrics. */
  flows: (e: ConnectionEvent) => void;
  fastPaths: () => FastPaths;
  /** The proxy of an enrolled pod on this node, by pod IP (same-node fast path). */
  localProxy: (ip: string) => PodProxy | undefined;
}

type InboundKind = 'hbone' | 'plaintext' | 'local';

/** What an admitted connection carried: client → app and app → client, and of that, how much the
 * kernel carried around the proxy (same-node splice). */
interface Relayed {
  error?: Error;
  received: number;
  sent: number;
  spliced?: { received: number; sent: number };
}

export type EnrolledWorkload = Workload & { netns: string; ip: string };

export interface PodProxyStats {
  outbound: { accepted: number; forwarded: number; hbone: number; local: number; passthrough: number; noOriginalDst: number; noEndpoint: number; upstreamFailed: number; denied: number };
  inbound: { accepted: number; forwarded: number; hbone: number; local: number; plaintext: number; denied: number; badRequest: number; upstreamFailed: number; closedByPolicy: number };
  /** Same-node connections whose bytes (some or all) went around the proxy, and how many bytes. */
  spliced: { connections: number; bytes: number };
  active: number;
}

/** A connection the destination side admitted: kept so a policy change can re-judge it. */
interface AdmittedConnection {
  attrs: ConnectionAttrs;
  close(): void;
}

export class PodProxy {
  private readonly servers: net.Server[] = [];
  private hbone: HboneServer | undefined;
  /** The listening sockets' descriptors (what an upgrade hands to the next agent). */
  private readonly fds: Partial<ListenerFds> = {};
  private readonly sockets = new Set<Duplex>();
  /** Waiting for `sockets` to empty (drain after a hand-over). */
  private readonly idle = new Set<() => void>();
  private readonly admitted = new Set<AdmittedConnection>();
  private readonly routing: TransparentRouting;
  private readonly netnsSockets: NetnsSockets;
  private readonly log: Logger;
  private readonly onRotated: (key: string, cert: WorkloadCertificate) => void;
  readonly stats: PodProxyStats = {
    outbound: { accepted: 0, forwarded: 0, hbone: 0, local: 0, passthrough: 0, noOriginalDst: 0, noEndpoint: 0, upstreamFailed: 0, denied: 0 },
    inbound: { accepted: 0, forwarded: 0, hbone: 0, local: 0, plaintext: 0, denied: 0, badRequest: 0, upstreamFailed: 0, closedByPolicy: 0 },
    spliced: { connections: 0, bytes: 0 },
    active: 0,
  };

  private constructor(
    readonly workload: EnrolledWorkload,
    readonly cookie: bigint,
    private readonly deps: PodProxyDeps,
  ) {
    this.log = deps.log.child({ pod: workload.key, netnsCookie: cookie.toString() });
    this.routing = new TransparentRouting(workload.netns);
    this.netnsSockets = new NetnsSockets(workload.netns);
    this.onRotated = (key, cert) => {
      if (key === this.identityKey) this.hbone?.setSecureContext(cert);
    };
  }

  private get identityKey(): string {
    return identityKey(this.workload.namespace, this.workload.serviceAccount);
  }

  /**
   * Start the proxy of a pod whose capture the agent already holds (PENDING: its connections are
   * refused and inbound capture is attached, so nothing reaches the app or leaves the pod in
   * plaintext meanwhile). Once the certificate is issued and all three listeners are up, READY.
   * Any failure leaves it PENDING: fail closed, never plaintext around the mesh.
   *
   * `inherited`: the listening sockets a previous agent handed over (an upgrade): served as they are,
   * so connections waiting in their queues are accepted here, never refused.
   */
  static async start(workload: EnrolledWorkload, cookie: bigint, deps: PodProxyDeps, inherited?: ListenerFds): Promise<PodProxy> {
    const proxy = new PodProxy(workload, cookie, deps);
    const { datapath, identities } = deps;
    try {
      const cert = await identities.get(workload.namespace, workload.serviceAccount, { timeoutMs: CERTIFICATE_DEADLINE_MS });
      identities.on('rotated', proxy.onRotated);
      await proxy.routing.setup();
      const hbone = inherited?.hbone ?? proxy.listenFd(HBONE_PORT, '0.0.0.0');
      proxy.fds.hbone = hbone;
      await proxy.listenHbone(cert, hbone);
      proxy.fds.outbound = await proxy.listen(inherited?.outbound ?? proxy.listenFd(OUTBOUND_PORT, '127.0.0.1'), (s) => proxy.onOutbound(s));
      proxy.fds.inbound = await proxy.listen(inherited?.inbound ?? proxy.listenFd(INBOUND_PORT, '0.0.0.0'), (s) => proxy.onPlaintextInbound(s));
      datapath.registerInboundListener(workload.ip, proxy.fds.inbound);
      datapath.setEnrollment(cookie, EnrollState.READY);
      proxy.log.info({ ip: workload.ip, identity: formatSpiffeId(cert.id) }, 'pod enrolled');
    } catch (err) {
      proxy.closeListeners('close');
      throw err;
    }
    return proxy;
  }

  private listenFd(port: number, host: string): number {
    return listenInNetns(this.workload.netns, { host, port, mark: PROXY_MARK, reuseAddr: true, backlog: 4096 });
  }

  private async listen(fd: number, onConnection: (s: net.Socket) => void): Promise<number> {
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, onConnection);
    this.servers.push(server);
    await listenOn(server, fd);
    server.on('error', (err) => this.log.error({ err: errorMessage(err), fd }, 'listener error'));
    return fd;
  }

  private async listenHbone(cert: WorkloadCertificate, fd: number): Promise<void> {
    const server = new HboneServer({
      cert,
      trustDomain: () => this.deps.state().trustDomain,
      log: this.log,
      onStream: (stream, headers, peer, target) => void this.onHboneStream(stream, headers, peer, target),
    });
    await server.listen(fd);
    this.hbone = server;
  }

  /** The HBONE server's counters (refused, timeouts, idle and expired closes, resets). */
  hboneStats(): ReturnType<HboneServer['stats']> | undefined {
    return this.hbone?.stats();
  }

  private track(s: Duplex): void {
    this.sockets.add(s);
    this.stats.active = this.sockets.size;
    s.once('close', () => {
      this.sockets.delete(s);
      this.stats.active = this.sockets.size;
      if (this.sockets.size === 0) for (const f of [...this.idle]) f();
    });
  }

  // --- outbound -----------------------------------------------------------------------------------

  private onOutbound(client: net.Socket): void {
    this.stats.outbound.accepted++;
    this.track(client);
    const peer: SockAddr = { ip: client.remoteAddress ?? '', port: client.remotePort ?? 0 };
    const record = this.deps.datapath.originalDst(this.cookie, peer);
    if (!record) {
      // Without the record we cannot know where this was going: refuse rather than guess.
      this.stats.outbound.noOriginalDst++;
      this.log.warn({ peer }, 'outbound connection without an original destination');
      client.resetAndDestroy();
      return;
    }
    const target = this.deps.state().resolve(record.dst);
    if (!target) {
      this.stats.outbound.noEndpoint++;
      this.log.warn({ dst: record.dst }, 'service has no endpoint for this port');
      client.resetAndDestroy();
      return;
    }
    const local = target.workload && this.deps.fastPaths().splice ? this.localPeer(target) : undefined;
    if (local) void this.forwardLocal(client, record.dst, target, local);
    else void this.forwardOutbound(client, record.dst, target);
  }

  /** The proxy of the target's pod when it is an enrolled pod on this node. */
  private localPeer(target: Target): PodProxy | undefined {
    const w = this.deps.state().workloadByKey(target.workload!);
    if (!w?.enrolled || !w.ip || w.ip !== target.addr.ip) return undefined;
    return this.deps.localProxy(w.ip);
  }

  /**
   * Same-node fast path: the destination pod's proxy is in this process, so the connection is handed
   * to it directly (no HBONE: the bytes never leave the node, and both identities are this agent's
   * own knowledge). It authorizes, connects to the app and splices the two in the kernel.
   */
  private async forwardLocal(client: net.Socket, dst: SockAddr, target: Target, peer: PodProxy): Promise<void> {
    const started = Date.now();
    this.stats.outbound.local++;
    const srcId = this.deps.state().identityOf(this.workload);
    let relayed: Relayed | undefined;
    try {
      relayed = await peer.admitLocal({ workload: this.workload, id: srcId, netnsCookie: this.cookie }, client, target.addr.port);
    } catch (err) {
      // Nothing may take the agent down with it: this connection fails, the others go on.
      this.stats.outbound.upstreamFailed++;
      this.log.error({ dst: formatAuthority(dst.ip, dst.port), err: errorMessage(err) }, 'same-node hand-off failed');
      client.resetAndDestroy();
      return;
    }
    if (!relayed) {
      this.stats.outbound.denied++;
      return;
    }
    this.stats.outbound.forwarded++;
    this.outboundFlow(client, target, { dst: peer.workload, security: 'node_local', sent: relayed.received, received: relayed.sent, started });
    this.log.info(
      {
        direction: 'outbound',
        transport: 'local',
        dst: formatAuthority(dst.ip, dst.port),
        endpoint: formatAuthority(target.addr.ip, target.addr.port),
        dstWorkload: target.workload,
        bytesSent: relayed.received,
        bytesReceived: relayed.sent,
        spliced: relayed.spliced,
        durationMs: Date.now() - started,
        ...(relayed.error ? { err: relayed.error.message } : {}),
      },
      'connection complete',
    );
  }

  /** The source side's record of a connection it forwarded. */
  private outboundFlow(client: net.Socket, target: Target, r: { dst?: Workload; security: string; sent: number; received: number; started: number }): void {
    const state = this.deps.state();
    this.deps.flows({
      direction: 'outbound',
      verdict: 'FORWARDED',
      src: { ip: this.workload.ip, port: client.remotePort ?? 0 },
      // As Hubble shows socket load balancing: the backend's address, the service beside it.
      dst: target.addr,
      srcWorkload: this.workload.key,
      ...(target.workload ? { dstWorkload: target.workload } : {}),
      ...(target.service ? { service: target.service } : {}),
      info: {
        source_principal: principalOf(state.identityOf(this.workload)),
        ...(r.dst ? { destination_principal: principalOf(state.identityOf(r.dst)) } : {}),
        bytes_sent: r.sent,
        bytes_received: r.received,
        duration_ms: Date.now() - r.started,
        security: r.security,
      },
    });
  }

  private async forwardOutbound(client: net.Socket, dst: SockAddr, target: Target): Promise<void> {
    const started = Date.now();
    const state = this.deps.state();
    const dstWorkload = target.workload ? state.workloadByKey(target.workload) : undefined;
    const mesh = dstWorkload?.enrolled && dstWorkload.ip ? dstWorkload : undefined;
    const fields = {
      direction: 'outbound',
      dst: formatAuthority(dst.ip, dst.port),
      endpoint: formatAuthority(target.addr.ip, target.addr.port),
      ...(target.service ? { service: target.service } : {}),
      ...(target.workload ? { dstWorkload: target.workload } : {}),
    };
    let upstream: Duplex;
    let dstIdentity: string | undefined;
    try {
      if (mesh) {
        const cert = await this.deps.identities.get(this.workload.namespace, this.workload.serviceAccount, { timeoutMs: CONNECT_TIMEOUT_MS });
        const expected = state.identityOf(mesh);
        dstIdentity = formatSpiffeId(expected);
        const svc = target.service ? state.serviceByKey(target.service) : undefined;
        const headers = connectHeaders(
          formatAuthority(target.addr.ip, target.addr.port),
          { namespace: this.workload.namespace, pod: this.workload.name, ip: this.workload.ip, port: client.remotePort ?? 0 },
          svc ? `${svc.name}.${svc.namespace}.svc.${state.clusterDomain}` : undefined,
        );
        upstream = await this.deps.pool.connect({ netns: this.workload.netns, cert }, mesh.ip!, [expected], headers);
        this.stats.outbound.hbone++;
      } else {
        // Not a mesh workload: there is nobody to do mTLS with, so it goes out as it came (as ztunnel).
        upstream = await this.netnsSockets.connect(
          { family: net.isIPv6(target.addr.ip) ? 'ipv6' : 'ipv4', mark: PROXY_MARK, transparent: false },
          { host: target.addr.ip, port: target.addr.port, timeoutMs: CONNECT_TIMEOUT_MS },
        );
        this.stats.outbound.passthrough++;
      }
    } catch (err) {
      const denied = err instanceof HboneRefused && err.status === 401;
      if (denied) this.stats.outbound.denied++;
      else this.stats.outbound.upstreamFailed++;
      this.log.info({ ...fields, err: errorMessage(err) }, 'outbound connection refused');
      // A denial is the destination's flow (it decided); a failure of our own is an ERROR here.
      if (!denied) {
        this.deps.flows({
          direction: 'outbound',
          verdict: 'ERROR',
          src: { ip: this.workload.ip, port: client.remotePort ?? 0 },
          dst: target.addr,
          srcWorkload: this.workload.key,
          ...(target.workload ? { dstWorkload: target.workload } : {}),
          ...(target.service ? { service: target.service } : {}),
          info: { source_principal: principalOf(this.deps.state().identityOf(this.workload)), reason: errorMessage(err) },
        });
      }
      client.resetAndDestroy();
      return;
    }
    if (client.destroyed) {
      upstream.destroy();
      return;
    }
    this.track(upstream);
    this.stats.outbound.forwarded++;
    // HBONE fast path: batched writes into the tunnel and out of it (plain passthrough is not HBONE).
    const result = await copyBidirectional(client, upstream, { tuned: Boolean(mesh) && this.deps.fastPaths().hbone });
    this.outboundFlow(client, target, { ...(mesh ? { dst: mesh } : {}), security: mesh ? 'mutual_tls' : 'none', sent: client.bytesRead, received: client.bytesWritten, started });
    this.log.info(
      {
        ...fields,
        src: `${this.workload.ip}`,
        srcIdentity: `spiffe://${this.deps.state().trustDomain}/ns/${this.workload.namespace}/sa/${this.workload.serviceAccount}`,
        ...(dstIdentity ? { dstIdentity, security: 'mutual_tls' } : { security: 'none' }),
        bytesSent: client.bytesRead,
        bytesReceived: client.bytesWritten,
        durationMs: Date.now() - started,
        ...(result.error ? { err: result.error.message } : {}),
      },
      'connection complete',
    );
  }

  // --- inbound ------------------------------------------------------------------------------------

  /** A CONNECT from a verified peer, to exactly `target` (the HBONE server refused anything else). */
  private async onHboneStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, peer: HbonePeer, target: { ip: string; port: number }): Promise<void> {
    this.stats.inbound.accepted++;
    const refuse = (status: number): void => {
      if (!stream.destroyed && !stream.headersSent) stream.respond({ ':status': status }, { endStream: true });
      else stream.close();
    };
    // The trust domain was checked at the handshake; it may have changed since (agents follow the controller).
    if (peer.id.trustDomain !== this.deps.state().trustDomain) return refuse(401);
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
    // A target that is not this pod, or a proxy port, is refused by admit() like on every path.
    await this.admit({ kind: 'hbone', downstream: stream, attrs, srcPort, peer: peer.id, refuse, accept: () => stream.respond({ ':status': 200 }) });
  }

  private async onPlaintextInbound(conn: net.Socket): Promise<void> {
    this.stats.inbound.accepted++;
    this.track(conn);
    // sk_lookup handed us the connection without rewriting it: our local address is the original one.
    const attrs: ConnectionAttrs = {
      sourceIp: conn.remoteAddress ?? '',
      destinationIp: conn.localAddress ?? '',
      destinationPort: conn.localPort ?? 0,
    };
    const state = this.deps.state();
    const mode = effectiveMtlsMode(state.peerAuthentications, this.workload, attrs.destinationPort, { rootNamespace: state.rootNamespace });
    if (mode === 'STRICT') {
      this.stats.inbound.denied++;
      this.log.info(
        { direction: 'inbound', transport: 'plaintext', src: attrs.sourceIp, dst: formatAuthority(attrs.destinationIp, attrs.destinationPort), reason: 'PeerAuthentication STRICT: plaintext refused' },
        'inbound connection denied',
      );
      this.deps.flows({
        direction: 'inbound',
        verdict: 'DROPPED',
        dropReason: 'AUTH_REQUIRED',
        src: { ip: attrs.sourceIp, port: conn.remotePort ?? 0 },
        dst: { ip: attrs.destinationIp, port: attrs.destinationPort },
        dstWorkload: this.workload.key,
        info: { destination_principal: principalOf(state.identityOf(this.workload)), reason: 'PeerAuthentication STRICT: plaintext refused', security: 'none' },
      });
      conn.resetAndDestroy();
      return;
    }
    await this.admit({ kind: 'plaintext', downstream: conn, attrs, srcPort: conn.remotePort ?? 0, refuse: () => conn.resetAndDestroy(), accept: () => undefined });
  }

  /**
   * A same-node client handed over by its own pod's proxy. The source is known without a handshake:
   * this agent enrolled that pod and holds its identity. Resolves with what was relayed, or
   * undefined when the connection was refused.
   */
  async admitLocal(from: { workload: EnrolledWorkload; id: SpiffeId; netnsCookie: bigint }, client: net.Socket, dstPort: number): Promise<Relayed | undefined> {
    this.stats.inbound.accepted++;
    const attrs: ConnectionAttrs = {
      sourcePrincipal: principalOf(from.id),
      sourceNamespace: from.id.namespace,
      sourceIp: from.workload.ip,
      destinationIp: this.workload.ip,
      destinationPort: dstPort,
    };
    return this.admit({
      kind: 'local',
      downstream: client,
      attrs,
      srcPort: client.remotePort ?? 0,
      peer: from.id,
      refuse: () => client.resetAndDestroy(),
      accept: () => undefined,
      clientNetns: from.netnsCookie,
    });
  }

  /**
   * L4 policy, then the app from the client's own address, then copy both ways (or splice, for a
   * same-node client). Resolves with what was relayed, or undefined when refused.
   */
  private async admit(c: {
    kind: InboundKind;
    downstream: Duplex;
    attrs: ConnectionAttrs;
    srcPort: number;
    peer?: SpiffeId;
    refuse: (status: number) => void;
    accept: () => void;
    /** local: the client pod's netns cookie (where the client-facing socket lives), for the splice. */
    clientNetns?: bigint;
  }): Promise<Relayed | undefined> {
    const { kind, downstream, attrs, srcPort, peer, refuse, accept } = c;
    const started = Date.now();
    const srcIdentity = peer ? formatSpiffeId(peer) : undefined;
    const state = this.deps.state();
    const flowBase = {
      direction: 'inbound' as const,
      src: { ip: attrs.sourceIp, port: srcPort },
      dst: { ip: attrs.destinationIp, port: attrs.destinationPort },
      dstWorkload: this.workload.key,
    };
    const security = kind === 'local' ? 'node_local' : peer ? 'mutual_tls' : 'none';
    const principals = {
      ...(peer ? { source_principal: principalOf(peer) } : {}),
      destination_principal: principalOf(state.identityOf(this.workload)),
      security,
    };
    const fields = {
      direction: 'inbound',
      transport: kind,
      src: attrs.sourceIp,
      dst: formatAuthority(attrs.destinationIp, attrs.destinationPort),
      dstIdentity: `spiffe://${this.deps.state().trustDomain}/ns/${this.workload.namespace}/sa/${this.workload.serviceAccount}`,
      ...(srcIdentity ? { srcIdentity } : {}),
      security,
    };
    const problem = destinationProblem({ ip: attrs.destinationIp, port: attrs.destinationPort }, this.workload.ip);
    if (problem) {
      this.stats.inbound.badRequest++;
      this.log.info({ ...fields, reason: problem }, 'inbound connection refused');
      this.deps.flows({ ...flowBase, verdict: 'DROPPED', dropReason: 'POLICY_DENIED', info: { ...principals, reason: problem } });
      refuse(kind === 'hbone' ? 400 : 401);
      return undefined;
    }
    const decision = this.decide(attrs);
    if (!decision.allowed) {
      this.stats.inbound.denied++;
      this.log.info({ ...fields, reason: decision.reason }, 'inbound connection denied');
      this.deps.flows({ ...flowBase, verdict: 'DROPPED', dropReason: 'POLICY_DENIED', info: { ...principals, reason: decision.reason, ...(decision.policy ? { policy: decision.policy } : {}) } });
      refuse(401);
      return undefined;
    }
    let upstream: AppConnection;
    try {
      upstream = await this.connectToApp(attrs, { splice: kind === 'local' });
    } catch (err) {
      this.stats.inbound.upstreamFailed++;
      this.log.info({ ...fields, err: errorMessage(err) }, 'app did not accept the connection');
      this.deps.flows({ ...flowBase, verdict: 'ERROR', info: { ...principals, reason: `app did not accept: ${errorMessage(err)}` } });
      refuse(503);
      return undefined;
    }
    const { app } = upstream;
    if (downstream.destroyed) {
      upstream.release();
      app.destroy();
      return undefined;
    }
    accept();
    this.track(downstream);
    this.track(app);
    this.stats.inbound.forwarded++;
    this.stats.inbound[kind]++;
    const entry: AdmittedConnection = {
      attrs,
      close: () => {
        downstream.destroy();
        app.destroy();
      },
    };
    this.admitted.add(entry);
    const relayed =
      kind === 'local' && c.clientNetns !== undefined
        ? await this.relaySpliced(downstream as net.Socket, c.clientNetns, app)
        : await relayCopied(downstream, app, kind === 'hbone' && this.deps.fastPaths().hbone);
    upstream.release();
    this.admitted.delete(entry);
    if (relayed.spliced && relayed.spliced.received + relayed.spliced.sent > 0) {
      this.stats.spliced.connections++;
      this.stats.spliced.bytes += relayed.spliced.received + relayed.spliced.sent;
    }
    this.deps.flows({
      ...flowBase,
      verdict: 'FORWARDED',
      info: { ...principals, bytes_sent: relayed.received, bytes_received: relayed.sent, duration_ms: Date.now() - started, ...(decision.policy ? { policy: decision.policy } : {}) },
    });
    this.log.info(
      {
        ...fields,
        policy: decision.policy ?? null,
        bytesReceived: relayed.received,
        bytesSent: relayed.sent,
        ...(relayed.spliced ? { spliced: relayed.spliced } : {}),
        durationMs: Date.now() - started,
        ...(relayed.error ? { err: relayed.error.message } : {}),
      },
      'connection complete',
    );
    return relayed;
  }

  /** Same-node: copy while the kernel may not splice yet, then let it. */
  private async relaySpliced(down: net.Socket, downNetns: bigint, up: net.Socket): Promise<Relayed> {
    const r = await spliceBidirectional(this.deps.datapath, { down, downNetns, up, upNetns: this.cookie });
    return {
      ...(r.error ? { error: r.error } : {}),
      received: r.clientBytes,
      sent: r.serverBytes,
      spliced: { received: r.splicedClientBytes, sent: r.splicedServerBytes },
    };
  }

  private decide(attrs: ConnectionAttrs): ReturnType<typeof authorize> {
    const state = this.deps.state();
    return authorize(state.authorizationPolicies, this.workload, attrs, { rootNamespace: state.rootNamespace, trustDomain: state.trustDomain });
  }

  /**
   * Connect to the app inside the pod from the client's own address, so the app sees its real peer.
   * The source port is ours to choose; it is registered so inbound capture lets this one through.
   */
  private async connectToApp(attrs: ConnectionAttrs, opts: { splice: boolean }): Promise<AppConnection> {
    const appAddr = { ip: attrs.destinationIp, port: attrs.destinationPort };
    for (let attempt = 0; ; attempt++) {
      const src = { ip: attrs.sourceIp, port: randomInt(20000, 61000) };
      // Exactly this connection may pass inbound capture. sockops removes the entry when the app's
      // side of the handshake completes (which may come after our side reports the connect, so a
      // splice candidate's entry is not removed here); `forget` covers a connect that failed.
      const forget = this.deps.datapath.allowUpstream({ local: appAddr, remote: src }, { splice: opts.splice });
      let connected = false;
      try {
        const app = await this.netnsSockets.connect(
          { family: net.isIPv6(attrs.destinationIp) ? 'ipv6' : 'ipv4', mark: APP_MARK, transparent: true },
          { host: attrs.destinationIp, port: attrs.destinationPort, localAddress: src.ip, localPort: src.port, timeoutMs: CONNECT_TIMEOUT_MS },
        );
        connected = true;
        return { app, release: opts.splice ? forget : () => undefined };
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        const busy = code === 'EADDRINUSE' || code === 'EADDRNOTAVAIL';
        if (!busy || attempt >= 8) throw err;
      } finally {
        if (!connected || !opts.splice) forget();
      }
    }
  }

  /** Policy changed: close every admitted connection the new policy denies (as ztunnel does). */
  reauthorize(): number {
    let closed = 0;
    for (const c of this.admitted) {
      const decision = this.decide(c.attrs);
      if (decision.allowed) continue;
      this.admitted.delete(c);
      c.close();
      closed++;
      this.stats.inbound.closedByPolicy++;
      this.log.info({ src: c.attrs.sourceIp, dstPort: c.attrs.destinationPort, reason: decision.reason }, 'connection closed by a policy change');
    }
    return closed;
  }

  /** Close the listeners; HBONE sessions from peers get a GOAWAY ('drain': their open tunnels run to
   * their end) or are cut ('close'). */
  private closeListeners(hbone: 'drain' | 'close'): void {
    this.netnsSockets.close();
    for (const s of this.servers.splice(0)) s.close();
    const server = this.hbone;
    this.hbone = undefined;
    if (server) void (hbone === 'drain' ? server.drain() : server.close());
    this.deps.identities.off('rotated', this.onRotated);
  }


  /**
   * Stop proxying: the pod goes back to PENDING (its new connections refused) until another proxy
   * starts or the agent releases its capture. Established connections run to their end.
   */
  stop(): void {
    const { datapath } = this.deps;
    try {
      datapath.setEnrollment(this.cookie, EnrollState.PENDING);
      datapath.unregisterInboundListener(this.workload.ip);
    } catch (err) {
      this.log.warn({ err: errorMessage(err) }, 'error while stopping the pod proxy');
    }
    this.closeListeners('drain');
    this.log.info('pod proxy stopped');
  }

  /** The listening sockets, for the next agent (upgrade hand-over). */
  listenerFds(): ListenerFds {
    const { outbound, inbound, hbone } = this.fds;
    if (outbound === undefined || inbound === undefined || hbone === undefined) throw new WeftError(ErrorCodes.UPSTREAM, `the proxy of ${this.workload.key} is not listening`);
    return { outbound, inbound, hbone };
  }

  /**
   * The next agent holds the listening sockets now: stop accepting (our descriptors close, the
   * sockets live on in the new agent), send GOAWAY to peers' HBONE sessions so new tunnels go to the
   * new agent, and let what is established run to its end. Capture stays READY throughout.
   */
  handOver(): void {
    this.closeListeners('drain');
    this.log.info({ active: this.sockets.size }, 'listeners handed over; draining');
  }

  /** Resolves once every connection this proxy relays has ended. */
  drained(): Promise<void> {
    if (this.sockets.size === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const check = (): void => {
        if (this.sockets.size > 0) return;
        this.idle.delete(check);
        resolve();
      };
      this.idle.add(check);
    });
  }

  /** Agent shutdown without un-enrolling: pins stay, capture refuses until the next agent is ready
   * (`keepCapture`: a new agent already serves the pod, after a hand-over). */
  shutdown(opts: { keepCapture?: boolean } = {}): void {
    try {
      if (!opts.keepCapture) this.deps.datapath.setEnrollment(this.cookie, EnrollState.PENDING);
    } catch (err) {
      this.log.warn({ err: errorMessage(err) }, 'could not mark the pod pending');
    }
    this.closeListeners('close');
    for (const s of this.sockets) s.destroy();
  }
}

/** A pod proxy's three listening sockets inside the pod's netns. */
export interface ListenerFds {
  outbound: number;
  inbound: number;
  hbone: number;
}

/** The proxy's connection to an app, and what undoes its registration with inbound capture. */
interface AppConnection {
  app: net.Socket;
  release: () => void;
}

async function relayCopied(downstream: Duplex, app: net.Socket, tuned: boolean): Promise<Relayed> {
  const result = await copyBidirectional(downstream, app, { tuned });
  return { ...(result.error ? { error: result.error } : {}), received: app.bytesWritten, sent: app.bytesRead };
}

function listenOn(server: net.Server, fd: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ fd }, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

