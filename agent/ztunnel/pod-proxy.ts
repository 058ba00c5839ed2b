// The proxy of one enrolled pod, in the manner of Istio's in-pod mode: listeners inside the pod's
// netns (listeners.ts), the outbound and inbound sides (outbound.ts, inbound.ts), its live connections
// (connection-manager.ts) and one record per connection (connection-record.ts). This class only puts
// them together and runs the pod proxy's life: start, stop, hand over to a new agent, shut down.
//
//   outbound:  app → 15001 → original destination → same node? hand-off : mesh? HBONE : plaintext
//   inbound:   peer proxy → 15008 (mTLS, CONNECT) ┐
//              plaintext client → 15006 (sk_lookup) ├→ admission → L4 policy → app, from the client's IP
//              same-node proxy (in this agent)      ┘
import type { CaptureDatapath } from '../datapath/capture.js';
import { ProxyTimeouts } from '../config.js';
import { EnrollState } from '../datapath/layout.js';
import { errorMessage } from '../errors.js';
import type { ConnectionEvent } from '../flows/builder.js';
import { identityKey, type IdentityManager, type WorkloadCertificate } from '../identity/manager.js';
import { formatSpiffeId } from '../identity/spiffe.js';
import type { Logger } from '../log.js';
import type { ClusterState, EnrolledWorkload } from '../state/cluster-state.js';
import { ConnectionManager } from './connection-manager.js';
import { newProxyStats, type ProxyStats } from './connection-record.js';
import type { FastPaths } from './fast-paths.js';
import type { HbonePool } from './hbone-pool.js';
import { InboundProxy } from './inbound.js';
import { TransparentRouting } from './inpod-routing.js';
import { PodListeners, type ListenerFds } from './listeners.js';
import { NetnsSockets } from './netns-sockets.js';
import { OutboundProxy } from './outbound.js';

export type { EnrolledWorkload } from '../state/cluster-state.js';
export type { ListenerFds } from './listeners.js';
export type { ProxyStats as PodProxyStats } from './connection-record.js';


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

export class PodProxy {
  readonly stats: ProxyStats = newProxyStats();
  readonly inbound: InboundProxy;
  private readonly outbound: OutboundProxy;
  private readonly connections: ConnectionManager;
  private readonly routing: TransparentRouting;
  private readonly netnsSockets: NetnsSockets;
  private readonly log: Logger;
  private listeners: PodListeners | undefined;
  private readonly onRotated: (key: string, cert: WorkloadCertificate) => void;

  private constructor(
    readonly workload: EnrolledWorkload,
    readonly cookie: bigint,
    private readonly deps: PodProxyDeps,
  ) {
    this.log = deps.log.child({ pod: workload.key, netnsCookie: cookie.toString() });
    this.routing = new TransparentRouting(workload.netns);
    this.netnsSockets = new NetnsSockets(workload.netns);
    this.connections = new ConnectionManager(this.stats, this.log);
    const sink = { flows: deps.flows, log: this.log, stats: this.stats };
    const common = { self: workload, cookie, datapath: deps.datapath, state: deps.state, netnsSockets: this.netnsSockets, fastPaths: deps.fastPaths, connections: this.connections, sink };
    this.inbound = new InboundProxy(common);
    this.outbound = new OutboundProxy({ ...common, identities: deps.identities, pool: deps.pool, localInbound: (ip) => deps.localProxy(ip)?.inbound });
    const key = identityKey(workload.namespace, workload.serviceAccount);
    this.onRotated = (k, cert) => {
      if (k === key) this.listeners?.setCertificate(cert);
    };
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
      const cert = await identities.get(workload.namespace, workload.serviceAccount, { timeoutMs: ProxyTimeouts.certificateMs });
      identities.on('rotated', proxy.onRotated);
      await proxy.routing.setup();
      proxy.listeners = await PodListeners.open({
        netns: workload.netns,
        cert,
        trustDomain: () => deps.state().trustDomain,
        log: proxy.log,
        handlers: {
          outbound: (s) => proxy.outbound.handle(s),
          plaintext: (s) => void proxy.inbound.plaintext(s),
          hbone: (stream, headers, peer, target) => void proxy.inbound.hbone(stream, headers, peer, target),
        },
        ...(inherited ? { inherited } : {}),
      });
      datapath.registerInboundListener(workload.ip, proxy.listeners.inboundFd);
      datapath.setEnrollment(cookie, EnrollState.READY);
      proxy.log.info({ ip: workload.ip, identity: formatSpiffeId(cert.id) }, 'pod enrolled');
    } catch (err) {
      proxy.closeListeners('close');
      throw err;
    }
    return proxy;
  }

  /** Policy changed: close every admitted connection the new policy denies. */
  reauthorize(): number {
    return this.inbound.reauthorize();
  }

  /** The HBONE server's counters (refused, timeouts, idle and expired closes, resets). */
  hboneStats(): ReturnType<PodListeners['hboneStats']> {
    return this.listeners?.hboneStats();
  }

  /** The listening sockets, for the next agent (upgrade hand-over). */
  listenerFds(): ListenerFds {
    if (!this.listeners) throw new Error(`the proxy of ${this.workload.key} is not listening`);
    return this.listeners.all();
  }

  /**
   * The next agent holds the listening sockets now: stop accepting (our descriptors close, the
   * sockets live on in the new agent), send GOAWAY to peers' HBONE sessions so new tunnels go to the
   * new agent, and let what is established run to its end. Capture stays READY throughout.
   */
  handOver(): void {
    this.closeListeners('drain');
    this.log.info({ active: this.connections.active }, 'listeners handed over; draining');
  }

  /** Resolves once every connection this proxy relays has ended. */
  drained(): Promise<void> {
    return this.connections.drained();
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

  /** Agent shutdown without un-enrolling: pins stay, capture refuses until the next agent is ready
   * (`keepCapture`: a new agent already serves the pod, after a hand-over). */
  shutdown(opts: { keepCapture?: boolean } = {}): void {
    try {
      if (!opts.keepCapture) this.deps.datapath.setEnrollment(this.cookie, EnrollState.PENDING);
    } catch (err) {
      this.log.warn({ err: errorMessage(err) }, 'could not mark the pod pending');
    }
    this.closeListeners('close');
    this.connections.destroyAll();
  }

  private closeListeners(hbone: 'drain' | 'close'): void {
    this.netnsSockets.close();
    this.listeners?.close(hbone);
    this.listeners = undefined;
    this.deps.identities.off('rotated', this.onRotated);
  }
}
