// The proxy of one enrolled pod, in the manner of Istio's in-pod mode: the agent opens its listeners
// *inside* the pod's network namespace (15001 outbound, 15006 inbound), and its upstream sockets too,
// so the pod's own IP is the source of everything it sends and nothing in the pod needs iptables.
//
// Until the mesh layer (HBONE, mTLS, policy) lands, a captured connection is forwarded in plaintext to
// its original destination: that keeps capture testable end to end.
import net from 'node:net';
import { connectInNetns, listenInNetns } from '../../native/index.js';
import type { CaptureDatapath } from '../datapath/capture.js';
import { EnrollState, INBOUND_PORT, OUTBOUND_PORT, PROXY_MARK, type SockAddr } from '../datapath/layout.js';
import { errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import type { ClusterState, Target, Workload } from '../state/cluster-state.js';
import { copyBidirectional } from './copy.js';

const CONNECT_TIMEOUT_MS = 10_000;

export interface PodProxyDeps {
  datapath: CaptureDatapath;
  state: () => ClusterState;
  log: Logger;
}

export interface PodProxyStats {
  outbound: { accepted: number; forwarded: number; noOriginalDst: number; noEndpoint: number; upstreamFailed: number };
  inbound: { accepted: number; forwarded: number; upstreamFailed: number };
  active: number;
}

export class PodProxy {
  private readonly servers: net.Server[] = [];
  private readonly connections = new Set<net.Socket>();
  readonly stats: PodProxyStats = {
    outbound: { accepted: 0, forwarded: 0, noOriginalDst: 0, noEndpoint: 0, upstreamFailed: 0 },
    inbound: { accepted: 0, forwarded: 0, upstreamFailed: 0 },
    active: 0,
  };
  private readonly log: Logger;

  private constructor(
    readonly workload: Workload & { netns: string; ip: string },
    readonly cookie: bigint,
    private readonly deps: PodProxyDeps,
  ) {
    this.log = deps.log.child({ pod: workload.key, netnsCookie: this.cookie.toString() });
  }

  /**
   * Enroll the pod: capture is refused (PENDING) until both listeners are up and inbound capture is
   * attached, then READY. A failure leaves the pod PENDING: fail closed, never plaintext around.
   */
  static async start(workload: Workload & { netns: string; ip: string }, cookie: bigint, deps: PodProxyDeps): Promise<PodProxy> {
    const proxy = new PodProxy(workload, cookie, deps);
    const { datapath } = deps;
    datapath.setEnrollment(proxy.cookie, EnrollState.PENDING);
    try {
      await proxy.listen({ host: '127.0.0.1', port: OUTBOUND_PORT }, (s) => proxy.onOutbound(s));
      const inbound = await proxy.listen({ host: '0.0.0.0', port: INBOUND_PORT }, (s) => proxy.onInbound(s));
      datapath.registerInboundListener(workload.ip, inbound);
      const how = datapath.attachNetns(proxy.cookie, workload.netns);
      datapath.setEnrollment(proxy.cookie, EnrollState.READY);
      proxy.log.info({ ip: workload.ip, skLookup: how }, 'pod enrolled');
    } catch (err) {
      proxy.closeListeners();
      throw err;
    }
    return proxy;
  }

  private async listen(addr: { host: string; port: number }, onConnection: (s: net.Socket) => void): Promise<number> {
    const fd = listenInNetns(this.workload.netns, { ...addr, mark: PROXY_MARK, reuseAddr: true, backlog: 4096 });
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, onConnection);
    this.servers.push(server);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ fd }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (err) => this.log.error({ err: errorMessage(err), listener: addr }, 'listener error'));
    return fd;
  }

  private track(socket: net.Socket): void {
    this.connections.add(socket);
    this.stats.active = this.connections.size;
    socket.once('close', () => {
      this.connections.delete(socket);
      this.stats.active = this.connections.size;
    });
  }

  private onOutbound(client: net.Socket): void {
    this.stats.outbound.accepted++;
    this.track(client);
    const peer: SockAddr = { ip: client.remoteAddress ?? '', port: client.remotePort ?? 0 };
    const record = this.deps.datapath.originalDst(this.cookie, peer);
    if (!record) {
      // No record means we cannot know where this was going: refuse rather than guess.
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
    void this.forward('outbound', client, record.dst, target);
  }

  private onInbound(conn: net.Socket): void {
    this.stats.inbound.accepted++;
    this.track(conn);
    // sk_lookup handed us the connection without rewriting it: our local address is the original one.
    const dst: SockAddr = { ip: conn.localAddress ?? '', port: conn.localPort ?? 0 };
    void this.forward('inbound', conn, dst, { addr: dst, workload: this.workload.key });
  }

  private async forward(direction: 'outbound' | 'inbound', downstream: net.Socket, dst: SockAddr, target: Target): Promise<void> {
    const started = Date.now();
    const src = `${downstream.remoteAddress}:${downstream.remotePort}`;
    let fd: number;
    try {
      fd = await connectInNetns(this.workload.netns, {
        host: target.addr.ip,
        port: target.addr.port,
        mark: PROXY_MARK,
        timeoutMs: CONNECT_TIMEOUT_MS,
      });
    } catch (err) {
      this.stats[direction].upstreamFailed++;
      this.log.info({ direction, src, dst: `${dst.ip}:${dst.port}`, err: errorMessage(err) }, 'upstream connect failed');
      downstream.resetAndDestroy();
      return;
    }
    if (downstream.destroyed) {
      new net.Socket({ fd }).destroy();
      return;
    }
    const upstream = new net.Socket({ fd, allowHalfOpen: true, readable: true, writable: true });
    this.track(upstream);
    this.stats[direction].forwarded++;
    const result = await copyBidirectional(downstream, upstream);
    this.log.info(
      {
        direction,
        src,
        dst: `${dst.ip}:${dst.port}`,
        endpoint: `${target.addr.ip}:${target.addr.port}`,
        ...(target.service ? { service: target.service } : {}),
        ...(target.workload ? { dstWorkload: target.workload } : {}),
        bytesSent: result.sent,
        bytesReceived: result.received,
        durationMs: Date.now() - started,
        ...(result.error ? { err: result.error.message } : {}),
      },
      'connection complete',
    );
  }

  private closeListeners(): void {
    for (const s of this.servers.splice(0)) s.close();
  }

  /**
   * Un-enroll: new connections are no longer captured; established ones run to their end.
   * `drain` closes those too (agent shutdown).
   */
  stop(options: { drain?: boolean } = {}): void {
    const { datapath } = this.deps;
    try {
      datapath.removeEnrollment(this.cookie);
      datapath.detachNetns(this.cookie);
      datapath.unregisterInboundListener(this.workload.ip);
    } catch (err) {
      this.log.warn({ err: errorMessage(err) }, 'error while un-enrolling');
    }
    this.closeListeners();
    if (options.drain) for (const c of this.connections) c.destroy();
    this.log.info('pod un-enrolled');
  }

  /** Agent shutdown without un-enrolling: pins stay, capture refuses until the next agent is ready. */
  shutdown(): void {
    try {
      this.deps.datapath.setEnrollment(this.cookie, EnrollState.PENDING);
    } catch (err) {
      this.log.warn({ err: errorMessage(err) }, 'could not mark the pod pending');
    }
    this.closeListeners();
    for (const c of this.connections) c.destroy();
  }
}
