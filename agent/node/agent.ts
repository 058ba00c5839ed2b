// The node agent: one per node. Learns the cluster from its source, loads (or adopts) the capture
// datapath, obtains a certificate for every local service account, and keeps one in-pod proxy per
// enrolled local pod in step with what the source says.
import v8 from 'node:v8';
import { mallocTrim, netnsCookie } from '../../native/index.js';
import { CaptureDatapath } from '../datapath/capture.js';
import { CaptureEventStream } from '../datapath/events.js';
import { errorMessage } from '../errors.js';
import { IdentityManager } from '../identity/manager.js';
import type { Logger } from '../log.js';
import { AdminServer, ReadinessServer } from '../metrics/admin-server.js';
import { ClusterState, DEFAULT_MESH_SETTINGS, type Workload } from '../state/cluster-state.js';
import { HbonePool } from '../ztunnel/hbone-pool.js';
import { FlowBuilder } from '../flows/builder.js';
import type { FlowLog } from '../flows/flow-log.js';
import { FlowPipeline } from '../flows/pipeline.js';
import { packConnectionInfo } from '../flows/proto.js';
import { FlowStore } from '../flows/store.js';
import { ObserverServer } from '../flows/observer-server.js';
import { AgentMetrics } from '../metrics/agent-metrics.js';
import { MetricsServer } from '../metrics/metrics-server.js';
import { PodProxy, type EnrolledWorkload } from '../ztunnel/inpod.js';
import { TransparentRouting } from '../ztunnel/inpod-routing.js';
import { formatFastPaths, parseFastPaths, type FastPaths } from '../ztunnel/fast-paths.js';
import type { ResourceSource, SourceUpdate } from './sources.js';

export interface AgentOptions {
  node: string;
  source: ResourceSource;
  /** The CA (the controller's IstioCertificateService). */
  ca: { createCertificate(csrPem: string, ttlSeconds: number): Promise<string[]> };
  certTtlSeconds: number;
  trustDomain: string;
  rootNamespace: string;
  cgroup: string;
  bpffs: string;
  readinessPort: number;
  adminPort: number;
  excludeOutboundPorts: number[];
  excludeInboundPorts: number[];
  /** Observer gRPC (Hubble's per-node API), Prometheus metrics, flow ring size. */
  observerPort: number;
  metricsPort: number;
  flowRingSize: number;
  flowLog?: FlowLog;
  /** Fast paths on at start; the admin API can change them (new connections only). */
  fastPaths: FastPaths;
  version: string;
  log: Logger;
}

const LOST_EVENTS_POLL_MS = 1000;
/** Every this many housekeeping rounds, the C heap's free pages go back to the kernel: TLS, HTTP/2
 * and socket buffers of a burst are freed by then, but glibc would keep them (~30 MB after bulk). */
const TRIM_EVERY_ROUNDS = 10;

export class NodeAgent {
  private state = new ClusterState([]);
  private trustDomain: string;
  private readonly proxies = new Map<string, PodProxy>();
  /** Pods that could not be enrolled: why, and their netns cookie (kept PENDING: fail closed). */
  private readonly failed = new Map<string, { error: string; cookie: bigint | undefined }>();
  private configProblems: string[] = [];
  /** `ns/sa` of the local service accounts whose certificates we keep. */
  private accounts = new Set<string>();
  private synced = false;
  private firstUpdate!: Promise<void>;
  private reconciling: Promise<void> = Promise.resolve();
  private readonly readiness: ReadinessServer;
  private readonly admin: AdminServer;
  private readonly identities: IdentityManager;
  private readonly pool: HbonePool;
  private events!: CaptureEventStream;
  private datapath!: CaptureDatapath;
  private readonly store: FlowStore;
  private readonly metrics = new AgentMetrics();
  private readonly metricsServer: MetricsServer;
  private readonly observer: ObserverServer;
  private readonly flows: FlowPipeline;
  private lostSeen = 0n;
  private rounds = 0;
  private fastPaths: FastPaths;
  private housekeeping: NodeJS.Timeout | undefined;

  private constructor(private readonly options: AgentOptions) {
    this.trustDomain = options.trustDomain;
    this.fastPaths = { ...options.fastPaths };
    this.identities = new IdentityManager({ ca: options.ca, trustDomain: options.trustDomain, ttlSeconds: options.certTtlSeconds, log: options.log });
    this.pool = new HbonePool(() => this.trustDomain, options.log);
    this.store = new FlowStore(options.flowRingSize, options.node);
    this.flows = new FlowPipeline(new FlowBuilder(options.node, () => this.state), {
      store: this.store,
      pack: packConnectionInfo,
      metrics: this.metrics,
      ...(options.flowLog ? { log: options.flowLog } : {}),
    });
    this.metrics.observeStore(this.store);
    if (options.flowLog) options.flowLog.onDrop = (n) => this.metrics.recordFlowLogDropped(n);
    this.observer = new ObserverServer({
      store: this.store,
      nodeName: options.node,
      version: options.version,
      log: options.log,
      onQueueLoss: (n) => this.metrics.recordLost('OBSERVER_EVENTS_QUEUE', n),
    });
    this.metricsServer = new MetricsServer(this.metrics);
    this.readiness = new ReadinessServer(() => this.readyState());
    this.admin = new AdminServer({
      '/config_dump': () => this.configDump(),
      '/certs': () => this.identities.snapshot(),
      '/stats/capture': () => this.captureStats(),
      '/healthz/ready': () => this.readyState(),
      '/fast_paths': () => ({ fastPaths: formatFastPaths(this.fastPaths) }),
      '/stats/memory': () => ({ process: process.memoryUsage(), heap: v8.getHeapStatistics() }),
    }, {
      '/memory/trim': () => ({ released: mallocTrim(), process: process.memoryUsage() }),
      // POST /fast_paths?set=splice,hbone (or all, none): for new connections from now on.
      '/fast_paths': (q) => ({ fastPaths: formatFastPaths(this.setFastPaths(parseFastPaths(q.get('set') ?? '', 'set'))) }),
    });
  }

  static async start(options: AgentOptions): Promise<NodeAgent> {
    const agent = new NodeAgent(options);
    await agent.init();
    return agent;
  }

  private async init(): Promise<void> {
    const { log } = this.options;
    this.datapath = CaptureDatapath.open({
      bpffs: this.options.bpffs,
      cgroup: this.options.cgroup,
      excludeOutboundPorts: this.options.excludeOutboundPorts,
      excludeInboundPorts: this.options.excludeInboundPorts,
      log,
    });
    this.setFastPaths(this.fastPaths);
    log.info({ ...this.datapath.report, cgroup: this.options.cgroup, bpffs: this.options.bpffs, fastPaths: formatFastPaths(this.fastPaths) }, 'capture datapath loaded');
    this.events = new CaptureEventStream(this.datapath, log);
    this.events.subscribe((e) => {
      if (e.kind === 'REFUSED') log.info({ event: e }, 'capture refused a connection');
      else log.debug({ event: e }, 'capture event');
      this.flows.capture(e, (cookie) => this.podOfCookie(cookie));
    });
    await this.admin.listen(this.options.adminPort);
    await this.readiness.listen('0.0.0.0', this.options.readinessPort);
    await this.observer.listen('0.0.0.0', this.options.observerPort);
    await this.metricsServer.listen('0.0.0.0', this.options.metricsPort);
    this.housekeeping = setInterval(() => this.refreshGauges(), LOST_EVENTS_POLL_MS);
    this.housekeeping.unref();
    this.firstUpdate = new Promise<void>((resolve) => {
      this.options.source.start((u) => {
        this.apply(u);
        resolve();
      });
    });
    await this.firstUpdate;
    await this.reconciling;
    this.removeStaleCapture();
    this.lostSeen = this.datapath.lostEvents();
    this.synced = true;
    log.info({ node: this.options.node, pods: [...this.proxies.keys()] }, 'agent ready');
  }

  private podOfCookie(cookie: bigint): Workload | undefined {
    for (const p of this.proxies.values()) if (p.cookie === cookie) return p.workload;
    return undefined;
  }

  /** Once a second: kernel ring losses into the stream, and the gauges that have no event. */
  private refreshGauges(): void {
    const lost = this.datapath.lostEvents();
    // The agent's own view of losses starts where the pinned counter stood when it started.
    if (lost > this.lostSeen) this.flows.lost('PERF_EVENT_RING_BUFFER', Number(lost - this.lostSeen));
    this.lostSeen = lost;
    this.metrics.setCertificates(this.identities.snapshot());
    this.metrics.setConfigRejections(this.configProblems.length);
    this.metrics.setCaptureMapEntries('enrolled', this.datapath.enrolledCookies().size);
    if (++this.rounds % TRIM_EVERY_ROUNDS === 0) mallocTrim();
  }

  private apply(u: SourceUpdate): void {
    if (u.trustDomain) this.trustDomain = u.trustDomain;
    this.configProblems = u.problems;
    this.state = new ClusterState(u.resources, {
      ...DEFAULT_MESH_SETTINGS,
      trustDomain: this.trustDomain,
      rootNamespace: this.options.rootNamespace,
    });
    this.reconciling = this.reconciling.then(() => this.reconcile());
  }

  private setFastPaths(f: FastPaths): FastPaths {
    this.fastPaths = { ...f };
    this.datapath.setSplice(f.splice);
    this.options.log.info({ fastPaths: formatFastPaths(f) }, 'fast paths set');
    return this.fastPaths;
  }

  /** This node's enrolled pods, and the VIPs of services with one of them as an endpoint. */
  private localDestinations(): Set<string> {
    const local = new Set([...this.proxies.values()].map((p) => p.workload.ip));
    const out = new Set(local);
    for (const svc of this.state.services) {
      if (svc.vip && this.state.endpoints(svc).some((w) => w.ip && local.has(w.ip))) out.add(svc.vip);
    }
    return out;
  }

  private proxyByIp(ip: string): PodProxy | undefined {
    for (const p of this.proxies.values()) if (p.workload.ip === ip) return p;
    return undefined;
  }

  /** Bring certificates and in-pod proxies in line with the enrolled pods of this node. */
  private async reconcile(): Promise<void> {
    const want = new Map<string, EnrolledWorkload>();
    for (const w of this.state.enrolledOn(this.options.node)) {
      if (w.netns && w.ip) want.set(w.key, { ...w, netns: w.netns, ip: w.ip });
    }
    // Certificates are fetched ahead of need for every local service account.
    const accounts = new Set([...want.values()].map((w) => `${w.namespace}/${w.serviceAccount}`));
    for (const key of accounts) {
      const [ns = '', sa = ''] = key.split('/');
      this.identities.ensure(ns, sa);
    }
    for (const key of this.accounts) {
      const [ns = '', sa = ''] = key.split('/');
      if (!accounts.has(key)) this.identities.forget(ns, sa);
    }
    this.accounts = accounts;

    for (const [key, proxy] of this.proxies) {
      const w = want.get(key);
      if (w && w.ip === proxy.workload.ip && w.netns === proxy.workload.netns && w.serviceAccount === proxy.workload.serviceAccount) continue;
      proxy.stop();
      this.proxies.delete(key);
    }
    await Promise.all(
      [...want].filter(([key]) => !this.proxies.has(key)).map(async ([key, w]) => {
        let cookie: bigint | undefined;
        try {
          cookie = netnsCookie(w.netns);
          const proxy = await PodProxy.start(w, cookie, {
            datapath: this.datapath,
            state: () => this.state,
            identities: this.identities,
            pool: this.pool,
            log: this.options.log,
            flows: (e) => this.flows.connection(e),
            fastPaths: () => this.fastPaths,
            localProxy: (ip) => this.proxyByIp(ip),
          });
          this.proxies.set(key, proxy);
          this.failed.delete(key);
        } catch (err) {
          this.failed.set(key, { error: errorMessage(err), cookie });
          this.options.log.error({ pod: key, err: errorMessage(err) }, 'cannot enroll pod; its traffic is refused until it can be');
        }
      }),
    );
    for (const key of this.failed.keys()) if (!want.has(key)) this.failed.delete(key);
    this.datapath.setSpliceDestinations(this.localDestinations());
    // Policy may have changed: existing connections it now denies are closed.
    for (const proxy of this.proxies.values()) proxy.reauthorize();
  }

  /** After a restart: forget enrollments and inbound links of pods that are gone from this node. */
  private removeStaleCapture(): void {
    const live = new Set([...this.proxies.values()].map((p) => p.cookie));
    for (const f of this.failed.values()) if (f.cookie !== undefined) live.add(f.cookie);
    for (const cookie of this.datapath.enrolledCookies().keys()) {
      if (!live.has(cookie)) this.datapath.removeEnrollment(cookie);
    }
    for (const cookie of this.datapath.pinnedNetnsCookies()) {
      if (!live.has(cookie)) this.datapath.detachNetns(cookie);
    }
    // Pods un-enrolled while no agent ran may still carry the proxy's routing rules.
    for (const w of this.state.workloads) {
      if (w.node !== this.options.node || w.enrolled || !w.netns || !w.ip) continue;
      new TransparentRouting(w.netns, w.ip).clear().catch((err: unknown) => this.options.log.warn({ pod: w.key, err: errorMessage(err) }, 'could not clear routing rules'));
    }
  }

  private readyState(): { ready: boolean; reason?: string } {
    if (!this.synced) return { ready: false, reason: 'initial sync not done' };
    if (this.failed.size) return { ready: false, reason: `pods not enrolled: ${[...this.failed.keys()].join(', ')}` };
    return { ready: true };
  }

  private configDump(): unknown {
    return {
      node: this.options.node,
      trustDomain: this.trustDomain,
      bpffs: this.options.bpffs,
      cgroup: this.options.cgroup,
      datapath: this.datapath.report,
      configProblems: this.configProblems,
      enrolled: [...this.proxies.values()].map((p) => ({
        pod: p.workload.key,
        ip: p.workload.ip,
        serviceAccount: p.workload.serviceAccount,
        netns: p.workload.netns,
        netnsCookie: p.cookie.toString(),
        stats: p.stats,
      })),
      failed: Object.fromEntries([...this.failed].map(([k, f]) => [k, f.error])),
      services: this.state.services,
      policies: {
        authorization: this.state.authorizationPolicies.map((p) => `${p.metadata.namespace}/${p.metadata.name}`),
        peerAuthentication: this.state.peerAuthentications.map((p) => `${p.metadata.namespace}/${p.metadata.name}`),
      },
      hbonePool: this.pool.stats(),
    };
  }

  private captureStats(): unknown {
    return {
      events: this.events.snapshot(),
      proxies: Object.fromEntries([...this.proxies].map(([k, p]) => [k, p.stats])),
    };
  }

  /** Stop serving. Pins stay: capture keeps refusing (fail closed) until the next agent adopts them. */
  async stop(): Promise<void> {
    this.options.source.close();
    clearInterval(this.housekeeping);
    this.observer.close();
    this.metricsServer.close();
    await this.options.flowLog?.close();
    await this.reconciling;
    for (const p of this.proxies.values()) p.shutdown();
    this.proxies.clear();
    this.pool.close();
    this.identities.close();
    this.readiness.close();
    this.admin.close();
    this.events.close();
    this.datapath.close();
  }
}
