// The node agent: one per node. Learns the cluster from its source, loads (or adopts) the capture
// datapath, obtains a certificate for every local service account, and keeps one in-pod proxy per
// enrolled local pod in step with what the source says.
import v8 from 'node:v8';
import { mallocTrim, netnsCookie } from '../../native/index.js';
import { CaptureDatapath } from '../datapath/capture.js';
import { CaptureEventStream } from '../datapath/events.js';
import { ErrorCodes, WeftError, errorMessage } from '../errors.js';
import { IdentityManager } from '../identity/manager.js';
import { cgroup2Root, cgroupId, ownCgroupPath } from '../system/mounts.js';
import { releaseMemory } from '../system/memory.js';
import type { Logger } from '../log.js';
import { AdminServer, ReadinessServer } from '../metrics/admin-server.js';
import { ClusterState, DEFAULT_MESH_SETTINGS, type Workload } from '../state/cluster-state.js';
import { HbonePool } from '../ztunnel/hbone-pool.js';
import { FlowBuilder } from '../flows/builder.js';
import type { FlowLog } from '../flows/flow-log.js';
import { FlowPipeline } from '../flows/pipeline.js';
import { packConnectionInfo } from '../flows/proto.js';
import { FlowStore } from '../flows/store.js';
import { ObserverServer, type ObserverServeOptions } from '../flows/observer-server.js';
import { AgentMetrics } from '../metrics/agent-metrics.js';
import { MetricsServer } from '../metrics/metrics-server.js';
import { PodProxy, type EnrolledWorkload, type ListenerFds } from '../ztunnel/pod-proxy.js';
import { awaitHandover, sendHandover } from './handover.js';
import { closeSync, existsSync } from 'node:fs';
import { TransparentRouting } from '../ztunnel/inpod-routing.js';
import { formatFastPaths, parseFastPaths, type FastPaths } from '../ztunnel/fast-paths.js';
import type { ResourceSource, SourceUpdate } from './sources.js';
import { LocalPodStore, PodChannel, podChannelRequest, podKeyOf, type CaptureState, type CheckState, type LocalPod, type PodRef } from './pod-channel.js';
import { scanPods, type PodCgroupIdentity } from './pod-scan.js';
import { NodePaths } from '../config.js';
import { enrolledByLabels, type Resource } from '../registry/types.js';
import { isIPv4 } from 'node:net';
import { join } from 'node:path';
import { EnrollState } from '../datapath/layout.js';

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
  /** The Observer API beyond plaintext on 127.0.0.1:observerPort: mutual TLS on the node address, stream cap. */
  observer?: ObserverServeOptions;
  metricsPort: number;
  flowRingSize: number;
  flowLog?: FlowLog;
  /** Fast paths on at start; the admin API can change them (new connections only). */
  fastPaths: FastPaths;
  /** The agent's own state on the node: the pods the runtime told it about (kept across restarts). */
  stateDir: string;
  /** The pod channel's unix socket (the CNI plugin's and the lab's way to add and delete pods). */
  podSocket: string;
  /** An upgrade: take the listening sockets over from the agent running now (it then drains). */
  takeover?: boolean;
  /** Where the start-up scan for running pods looks (pod-scan.ts); NodePaths' by default. */
  procDir?: string;
  netnsDir?: string;
  version: string;
  log: Logger;
}

const LOST_EVENTS_POLL_MS = 1000;
/** How long either side of an upgrade waits for the other. */
const HANDOVER_TIMEOUT_MS = 15_000;
/** A pod whose proxy could not start is tried again after this long (it stays PENDING meanwhile). */
const RETRY_ENROLL_MS = 2000;

/** What the agent does with one of its pods. */
type PodDecision =
  | { kind: 'enroll'; workload: EnrolledWorkload }
  /** Enrolled (or maybe enrolled) but not startable yet: captured, connections refused. */
  | { kind: 'hold'; why: string }
  | { kind: 'release' };
/** Every this many housekeeping rounds, the C heap's free pages go back to the kernel: TLS, HTTP/2
 * and socket buffers of a burst are freed by then, but glibc would keep them (~30 MB after bulk). */
const TRIM_EVERY_ROUNDS = 10;

/** Bind, retrying while the port is still held (by the agent handing over to us), up to 5 s. */
async function whenPortFree(bind: () => Promise<void>): Promise<void> {
  const deadline = Date.now() + 5000;
  for (;;) {
    try {
      return await bind();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

/** The container id of a pod found by the start-up scan: no runtime named it, any sandbox's DEL is its. */
const SCANNED_PREFIX = 'proc-';

function sameSandbox(held: LocalPod, containerId: string): boolean {
  return held.containerId === containerId || held.containerId.startsWith(SCANNED_PREFIX);
}

function closeFd(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // already closed
  }
}

export class NodeAgent {
  private state = new ClusterState([]);
  private trustDomain: string;
  private readonly proxies = new Map<string, PodProxy>();
  /** The same proxies by pod IP and by netns cookie (looked up per connection and per event). */
  private readonly proxiesByIp = new Map<string, PodProxy>();
  private readonly proxiesByCookie = new Map<bigint, PodProxy>();
  /** Proxies being started, by pod key (each pod starts on its own: one slow pod stalls no other). */
  private readonly starting = new Map<string, Promise<void>>();
  /** Pods that could not be enrolled, and why (kept PENDING: fail closed; retried). */
  private readonly failed = new Map<string, string>();
  /** This node's pods as the runtime described them (pod channel), by `ns/name`. */
  private readonly localPods = new Map<string, LocalPod>();
  /** Pods whose capture this agent holds (PENDING or READY): netns cookie and path. */
  private readonly captured = new Map<string, { cookie: bigint; netns: string }>();
  private decisions = new Map<string, PodDecision>();
  private retryTimer: NodeJS.Timeout | undefined;
  /** Listening sockets a previous agent handed over, by pod key, until a proxy takes them. */
  private readonly inherited = new Map<string, { netns: string; fds: ListenerFds }>();
  private takingOver = false;
  private handedOver = false;
  private readonly podStore: LocalPodStore;
  private readonly podChannel: PodChannel;
  private configProblems: string[] = [];
  /** The source's last resources: the start-up scan finds pods by uid in them. */
  private resources: readonly Resource[] = [];
  /** `ns/sa` of the local service accounts whose certificates we keep. */
  private accounts = new Set<string>();
  private synced = false;
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
    this.podStore = new LocalPodStore(join(options.stateDir, 'pods'));
    this.podChannel = new PodChannel(
      { add: (pod) => this.addPod(pod), del: (key) => this.deletePod(key), check: (key) => this.checkPod(key), handOver: (path) => this.handOver(path) },
      options.log,
    );
    this.readiness = new ReadinessServer(() => this.readyState());
    this.admin = new AdminServer({
      '/config_dump': () => this.configDump(),
      '/certs': () => this.identities.snapshot(),
      '/stats/capture': () => this.captureStats(),
      '/healthz/ready': () => this.readyState(),
      '/fast_paths': () => ({ fastPaths: formatFastPaths(this.fastPaths) }),
      '/stats/memory': () => ({ process: process.memoryUsage(), heap: v8.getHeapStatistics() }),
    }, {
      // A full collection, then free C heap pages back to the kernel: memory after a burst, now.
      '/memory/trim': () => {
        const r = releaseMemory();
        return { released: r.released, before: r.before, process: r.after };
      },
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
      alongsideRunningAgent: this.options.takeover === true,
      log,
    });
    // This process's sockets in pod netns are the proxy's own: capture must let them through.
    const proxyCgroup = ownCgroupPath();
    this.datapath.registerProxyCgroup(cgroupId(proxyCgroup));
    this.setFastPaths(this.fastPaths);
    log.info({ ...this.datapath.report, uptimeMs: Math.round(process.uptime() * 1000), proxyCgroup, cgroup: this.options.cgroup, bpffs: this.options.bpffs, fastPaths: formatFastPaths(this.fastPaths) }, 'capture datapath loaded');
    // The pods this node already had (kept by the previous agent).
    for (const pod of this.podStore.load(log)) this.localPods.set(podKeyOf(pod), pod);
    const sync = new Promise<void>((resolve) => {
      this.options.source.start((u) => {
        this.apply(u);
        resolve();
      });
    });
    if (this.options.takeover) {
      // An upgrade: the running agent serves until we are ready to, then hands its sockets over.
      this.takingOver = true;
      await sync;
      await this.takeOver();
      this.takingOver = false;
    }
    // Captured again before anything else: PENDING where no proxy serves yet (nothing handed over).
    this.reconcile();
    this.events = new CaptureEventStream(this.datapath, log);
    this.events.subscribe((e) => {
      if (e.kind === 'REFUSED') log.info({ event: e }, 'capture refused a connection');
      else log.debug({ event: e }, 'capture event');
      this.flows.capture(e, (cookie) => this.podOfCookie(cookie));
    });
    await this.podChannel.listen(this.options.podSocket);
    // After a hand-over the old agent frees these ports a moment later: wait for them.
    await whenPortFree(() => this.admin.listen(this.options.adminPort));
    await whenPortFree(() => this.readiness.listen('0.0.0.0', this.options.readinessPort));
    await whenPortFree(() => this.observer.serve(this.options.observerPort, this.options.observer));
    await whenPortFree(() => this.metricsServer.listen('0.0.0.0', this.options.metricsPort));
    this.housekeeping = setInterval(() => this.refreshGauges(), LOST_EVENTS_POLL_MS);
    this.housekeeping.unref();
    await sync;
    // Pods that ran before this agent (or whose ADD no agent took), before stale capture is dropped.
    this.adoptRunningPods();
    this.synced = true;
    this.removeStaleCapture();
    await Promise.allSettled([...this.starting.values()]);
    this.lostSeen = this.datapath.lostEvents();
    log.info({ node: this.options.node, pods: [...this.proxies.keys()], uptimeMs: Math.round(process.uptime() * 1000) }, 'agent ready');
  }

  /** Per capture event and per same-node connection: by index, not by walking every proxy. */
  private podOfCookie(cookie: bigint): Workload | undefined {
    return this.proxiesByCookie.get(cookie)?.workload;
  }

  private addProxy(key: string, proxy: PodProxy): void {
    this.proxies.set(key, proxy);
    this.proxiesByIp.set(proxy.workload.ip, proxy);
    this.proxiesByCookie.set(proxy.cookie, proxy);
  }

  /** Stop a pod's proxy (if it has one) and forget it. */
  private dropProxy(key: string): void {
    const proxy = this.proxies.get(key);
    if (!proxy) return;
    proxy.stop();
    this.proxies.delete(key);
    if (this.proxiesByIp.get(proxy.workload.ip) === proxy) this.proxiesByIp.delete(proxy.workload.ip);
    if (this.proxiesByCookie.get(proxy.cookie) === proxy) this.proxiesByCookie.delete(proxy.cookie);
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
    if (u.trustDomain && u.trustDomain !== this.trustDomain) {
      try {
        // Certificates follow the controller's trust domain (re-issued; the old ones serve meanwhile).
        this.identities.setTrustDomain(u.trustDomain);
        this.trustDomain = u.trustDomain;
      } catch (err) {
        this.options.log.error({ trustDomain: u.trustDomain, err: errorMessage(err) }, 'trust domain from the controller refused; keeping the current one');
      }
    }
    this.configProblems = u.problems;
    this.resources = u.resources;
    // An update means the controller (and its CA) answers: identities backing off try again now.
    this.identities.retryNow();
    this.state = new ClusterState(u.resources, {
      ...DEFAULT_MESH_SETTINGS,
      trustDomain: this.trustDomain,
      rootNamespace: this.options.rootNamespace,
    });
    // While taking over, the running agent still serves: nothing here may touch capture yet.
    if (this.takingOver) return;
    this.reconcile();
    // Policies (or the workloads they select) may have changed: live connections the new state
    // denies are closed. Only here — a pod's ADD or DEL changes no policy.
    for (const proxy of this.proxies.values()) proxy.reauthorize();
  }

  /** Pod channel ADD: capture is attached (or the pod found not enrolled) before this resolves. */
  private async addPod(pod: LocalPod): Promise<CaptureState> {
    const key = podKeyOf(pod);
    this.podStore.save(pod);
    this.localPods.set(key, pod);
    this.reconcile();
    this.options.log.info({ pod: key, netns: pod.netns, ips: pod.ips, decision: this.decisions.get(key)?.kind }, 'pod added by the runtime');
    const d = this.decisions.get(key);
    if (d?.kind === 'release') return 'NOT_ENROLLED';
    if (!this.captured.has(key)) throw new Error(`capture could not be attached to ${pod.netns}: ${this.failed.get(key) ?? 'unknown reason'}`);
    await this.starting.get(key);
    return this.proxies.has(key) ? 'READY' : 'PENDING';
  }

  /** Pod channel DEL: idempotent, as CNI wants it. */
  private async deletePod(p: PodRef): Promise<void> {
    const key = podKeyOf(p);
    const held = this.localPods.get(key);
    // The DEL of a pod's earlier sandbox may come after the ADD of its new one: it is not this pod's.
    if (held && !sameSandbox(held, p.containerId)) {
      this.options.log.info({ pod: key, containerId: p.containerId, held: held.containerId }, 'DEL of another sandbox of the pod ignored');
      return;
    }
    this.localPods.delete(key);
    this.podStore.remove(key);
    this.reconcile();
    this.options.log.info({ pod: key }, 'pod deleted by the runtime');
  }

  /** Pod channel CHECK: does this agent hold that sandbox of the pod, and in which state. */
  private checkPod(p: PodRef): CheckState {
    const key = podKeyOf(p);
    const held = this.localPods.get(key);
    if (!held || !sameSandbox(held, p.containerId)) return 'UNKNOWN';
    if (this.decisions.get(key)?.kind === 'release') return 'NOT_ENROLLED';
    return this.proxies.has(key) ? 'READY' : 'PENDING';
  }

  /**
   * Pods of this node the runtime never told this agent about, from the kernel (pod-scan.ts): each
   * one the cluster state places on this node, with an address, becomes a local pod as if its ADD
   * had come. Its netns is the runtime's pin of the namespace the kernel shows its processes in.
   */
  private adoptRunningPods(): void {
    const { log, node } = this.options;
    let found;
    try {
      found = scanPods({
        procDir: this.options.procDir ?? NodePaths.procDir,
        netnsDir: this.options.netnsDir ?? NodePaths.netnsDir,
        cgroupRoot: cgroup2Root(),
        labPodsCgroup: join(this.options.cgroup, 'pods'),
      });
    } catch (err) {
      log.error({ err: errorMessage(err) }, 'could not scan for running pods');
      return;
    }
    for (const s of found.skipped) log.info({ inode: String(s.inode), pids: s.pids.slice(0, 8), why: s.why }, 'running pod netns left alone');
    const byUid = new Map<string, string>();
    for (const r of this.resources) {
      const uid: unknown = r.kind === 'Pod' ? (r.metadata as { uid?: unknown }).uid : undefined;
      if (typeof uid === 'string') byUid.set(uid, `${r.metadata.namespace}/${r.metadata.name}`);
    }
    const keyOf = (id: PodCgroupIdentity): string | undefined => (id.kind === 'uid' ? byUid.get(id.uid) : `${id.namespace}/${id.name}`);
    let adopted = 0;
    for (const p of found.pods) {
      const key = keyOf(p.identity);
      if (!key || this.localPods.has(key)) continue;
      const w = this.state.workloadByKey(key);
      if (!w || w.node !== node || !w.ip) {
        log.info({ pod: key, netns: p.netns }, 'running pod not placed on this node by the cluster state: left alone');
        continue;
      }
      const pod: LocalPod = { namespace: w.namespace, name: w.name, containerId: `${SCANNED_PREFIX}${p.inode}`, netns: p.netns, ips: [w.ip] };
      this.podStore.save(pod);
      this.localPods.set(key, pod);
      adopted++;
      log.info({ pod: key, netns: p.netns, ip: w.ip, pids: p.pids.slice(0, 8) }, 'running pod found from the kernel');
    }
    if (adopted) this.reconcile();
  }

  /** What to do with a pod of this node, from the latest cluster state and the runtime's labels. */
  private decide(pod: LocalPod): PodDecision {
    const w = this.state.workloadByKey(podKeyOf(pod));
    if (w && w.node === this.options.node) {
      if (!w.enrolled) return { kind: 'release' };
      // The runtime's address is the one the pod really has.
      const ip = pod.ips.find((a) => isIPv4(a)) ?? w.ip;
      if (!ip) return { kind: 'hold', why: 'the pod has no IPv4 address' };
      return { kind: 'enroll', workload: { ...w, ip, netns: pod.netns } };
    }
    // Not (yet) in the cluster state: decide from labels when both are known; otherwise refuse its
    // traffic until the state says (fail closed — when in doubt, the pod waits).
    const namespaceLabels = this.state.namespaceLabels(pod.namespace) ?? pod.namespaceLabels;
    if (pod.labels !== undefined && namespaceLabels !== undefined && !enrolledByLabels(pod.labels, namespaceLabels)) return { kind: 'release' };
    return { kind: 'hold', why: this.synced ? 'not in the cluster state yet' : 'waiting for the cluster state' };
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


  /**
   * Bring capture, certificates and in-pod proxies in line with this node's pods. Synchronous: each
   * proxy starts on its own (with a deadline), so a pod whose certificate is late stalls nothing else,
   * and capture of every enrolled pod is in force before this returns.
   */
  private reconcile(): void {
    const { log } = this.options;
    // A pod whose netns is gone ended while no agent ran (its CNI DEL found none): it leaves.
    for (const [key, pod] of this.localPods) {
      if (existsSync(pod.netns)) continue;
      this.localPods.delete(key);
      this.podStore.remove(key);
      log.info({ pod: key, netns: pod.netns }, 'pod gone (its netns no longer exists): forgotten');
    }
    this.decisions = new Map([...this.localPods].map(([key, pod]) => [key, this.decide(pod)]));
    for (const key of this.failed.keys()) if (!this.localPods.has(key)) this.failed.delete(key);
    const want = new Map<string, EnrolledWorkload>();
    for (const [key, d] of this.decisions) if (d.kind === 'enroll') want.set(key, d.workload);
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

    // A proxy whose pod changed or left stops; capture of a pod that stays enrolled stays (PENDING).
    for (const [key, proxy] of this.proxies) {
      const w = want.get(key);
      if (w && w.ip === proxy.workload.ip && w.netns === proxy.workload.netns && w.serviceAccount === proxy.workload.serviceAccount) continue;
      this.dropProxy(key);
    }
    for (const [key, d] of this.decisions) {
      if (d.kind === 'release') {
        this.release(key);
        continue;
      }
      if (!this.capture(key)) continue;
      if (d.kind === 'enroll' && !this.proxies.has(key) && !this.starting.has(key)) this.startProxy(key, d.workload);
    }
    for (const key of this.captured.keys()) if (!this.localPods.has(key)) this.release(key);
    try {
      this.datapath.setSpliceDestinations(this.localDestinations());
    } catch (err) {
      log.error({ err: errorMessage(err) }, 'could not update the splice destinations');
    }
  }

  /** Capture a pod's traffic, PENDING until its proxy is ready. Idempotent; false when impossible. */
  private capture(key: string): boolean {
    if (this.captured.has(key)) return true;
    const pod = this.localPods.get(key)!;
    try {
      const cookie = netnsCookie(pod.netns);
      // A pod whose listeners were handed over stays READY: they never stopped accepting.
      if (!this.inherited.has(key)) this.datapath.setEnrollment(cookie, EnrollState.PENDING);
      this.datapath.attachNetns(cookie, pod.netns);
      this.captured.set(key, { cookie, netns: pod.netns });
      return true;
    } catch (err) {
      // The netns is gone (the pod died while no agent ran) or capture cannot be attached.
      this.failed.set(key, `capture: ${errorMessage(err)}`);
      this.options.log.error({ pod: key, netns: pod.netns, err: errorMessage(err) }, 'cannot capture pod');
      return false;
    }
  }

  /** The pod left the mesh (or the node): its proxy stops and capture is removed, last. */
  private release(key: string): void {
    this.dropProxy(key);
    const held = this.captured.get(key);
    if (!held) return;
    this.captured.delete(key);
    try {
      this.datapath.removeEnrollment(held.cookie);
      this.datapath.detachNetns(held.cookie);
    } catch (err) {
      this.options.log.warn({ pod: key, err: errorMessage(err) }, 'error while releasing capture');
    }
    new TransparentRouting(held.netns).clear().catch((err: unknown) => this.options.log.debug({ pod: key, err: errorMessage(err) }, 'could not clear routing rules'));
    this.options.log.info({ pod: key }, 'pod released from capture');
  }

  private startProxy(key: string, w: EnrolledWorkload): void {
    const { cookie } = this.captured.get(key)!;
    const handed = this.inherited.get(key);
    this.inherited.delete(key);
    const inherited = handed && handed.netns === w.netns ? handed.fds : undefined;
    if (handed && !inherited) for (const fd of Object.values(handed.fds)) closeFd(fd);
    const started = PodProxy.start(w, cookie, {
      datapath: this.datapath,
      state: () => this.state,
      identities: this.identities,
      pool: this.pool,
      log: this.options.log,
      flows: (e) => this.flows.connection(e),
      fastPaths: () => this.fastPaths,
      localProxy: (ip) => this.proxiesByIp.get(ip),
    }, inherited).then(
      (proxy) => {
        this.starting.delete(key);
        const d = this.decisions.get(key);
        if (d?.kind !== 'enroll' || d.workload.netns !== w.netns || d.workload.serviceAccount !== w.serviceAccount || d.workload.ip !== w.ip) {
          proxy.stop(); // the pod changed while its proxy started
          return;
        }
        this.addProxy(key, proxy);
        this.failed.delete(key);
        this.datapath.setSpliceDestinations(this.localDestinations());
      },
      (err: unknown) => {
        this.starting.delete(key);
        this.failed.set(key, errorMessage(err));
        this.options.log.error({ pod: key, err: errorMessage(err) }, 'cannot enroll pod; its traffic is refused until it can be');
        this.retryLater();
      },
    );
    this.starting.set(key, started);
  }

  /** The new agent's side of an upgrade: certificates and listening sockets from the running agent. */
  private async takeOver(): Promise<void> {
    const { log } = this.options;
    const path = join(this.options.stateDir, 'handover.sock');
    const waiting = awaitHandover(path, HANDOVER_TIMEOUT_MS, closeFd);
    try {
      const r = await podChannelRequest(this.options.podSocket, 'handover', { path }, HANDOVER_TIMEOUT_MS);
      if (r.status !== 200) throw new WeftError(ErrorCodes.AGENT, `the running agent refused: ${String(r.body.error)}`);
    } catch (err) {
      // Nobody to take over from (or it could not): start as usual, capture fails closed meanwhile.
      log.warn({ err: errorMessage(err) }, 'no hand-over; starting afresh');
      await waiting.cancel().catch(() => undefined);
      await waiting.result.catch(() => undefined);
      return;
    }
    const handover = await waiting.result;
    if (!handover) return;
    let adopted = 0;
    for (const c of handover.certificates) if (this.identities.adopt(c)) adopted++;
    for (const [key, l] of handover.listeners) this.inherited.set(key, l);
    log.info({ pods: handover.listeners.size, certificates: adopted }, 'took over from the running agent');
  }

  /**
   * The running agent's side of an upgrade: hand every pod proxy's listening sockets and the
   * certificates to the new agent at `path`, then stop accepting, stop serving the node's ports (so
   * the new agent can bind them) and drain. Capture stays READY all along.
   */
  private async handOver(path: string): Promise<{ pods: number }> {
    if (this.handedOver) throw new WeftError(ErrorCodes.AGENT, 'already handed over');
    this.handedOver = true;
    const listeners = new Map([...this.proxies].map(([key, p]) => [key, { netns: p.workload.netns, fds: p.listenerFds() }]));
    try {
      await sendHandover(path, { certificates: this.identities.exportCertificates(), listeners }, HANDOVER_TIMEOUT_MS);
    } catch (err) {
      this.handedOver = false;
      throw err;
    }
    // The new agent holds every socket now: stop accepting, and free the node's ports for it (it
    // retries binding them meanwhile; the data path does not wait for them).
    this.options.source.close();
    clearInterval(this.housekeeping);
    clearTimeout(this.retryTimer);
    this.events.close();
    for (const p of this.proxies.values()) p.handOver();
    this.podChannel.stopListening();
    setImmediate(() => {
      this.metricsServer.close();
      this.readiness.close();
      this.admin.close();
      void this.observer.close().finally(() => this.onHandedOver());
    });
    this.options.log.info({ pods: listeners.size }, 'handed over to the new agent; draining');
    return { pods: listeners.size };
  }

  // (declared in this order: the promise's executor sets the resolver, which must exist first)
  private onHandedOver: () => void = () => undefined;
  /** Resolves once this agent has handed over to a new one (it should then drain and exit). */
  readonly handedOverPromise = new Promise<void>((resolve) => (this.onHandedOver = resolve));

  /** After a hand-over: wait until every relayed connection ended, or `graceMs`. */
  async drain(graceMs: number): Promise<{ drained: boolean }> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), graceMs)));
    const drained = await Promise.race([Promise.all([...this.proxies.values()].map((p) => p.drained())).then(() => true), timeout]);
    clearTimeout(timer);
    return { drained };
  }

  private retryLater(): void {
    if (this.retryTimer) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.reconcile();
    }, RETRY_ENROLL_MS);
    this.retryTimer.unref();
  }

  /** After a restart: forget enrollments and inbound links of netns that are not this node's pods. */
  private removeStaleCapture(): void {
    const live = new Set([...this.captured.values()].map((c) => c.cookie));
    for (const cookie of this.datapath.enrolledCookies().keys()) {
      if (!live.has(cookie)) this.datapath.removeEnrollment(cookie);
    }
    for (const cookie of this.datapath.pinnedNetnsCookies()) {
      if (!live.has(cookie)) this.datapath.detachNetns(cookie);
    }
  }

  /** Readiness tells counts only: it is reachable from the network, pod names stay on the admin API. */
  private readyState(): { ready: boolean; reason?: string } {
    if (!this.synced) return { ready: false, reason: 'initial sync not done' };
    // Held pods count too: their traffic is refused until they are enrolled.
    const waiting = [...this.decisions].filter(([key, d]) => d.kind !== 'release' && !this.proxies.has(key)).length;
    if (waiting) return { ready: false, reason: `${waiting} pod(s) not enrolled yet` };
    return { ready: true };
  }

  private configDump(): unknown {
    return {
      node: this.options.node,
      pid: process.pid,
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
      failed: Object.fromEntries(this.failed),
      pods: Object.fromEntries([...this.localPods].map(([k, p]) => [k, { netns: p.netns, ips: p.ips, decision: this.decisions.get(k)?.kind, ...(this.decisions.get(k)?.kind === 'hold' ? { why: (this.decisions.get(k) as { why: string }).why } : {}) }])),
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
      /** Entries of the capture maps that must not outlive their connections. */
      maps: this.datapath.connectionMapEntries(),
      proxies: Object.fromEntries([...this.proxies].map(([k, p]) => [k, p.stats])),
      /** Each pod's HBONE server: refused by caps, handshake timeouts, idle and expired closes, resets. */
      hboneServers: Object.fromEntries([...this.proxies].map(([k, p]) => [k, p.hboneStats()])),
    };
  }

  /** Stop serving. Pins stay: capture keeps refusing (fail closed) until the next agent adopts them. */
  async stop(): Promise<void> {
    this.options.source.close();
    clearInterval(this.housekeeping);
    await this.observer.close();
    this.metricsServer.close();
    await this.options.flowLog?.close();
    clearTimeout(this.retryTimer);
    this.podChannel.close();
    await Promise.allSettled([...this.starting.values()]);
    // After a hand-over the pods are the new agent's: leave their capture READY.
    for (const p of this.proxies.values()) p.shutdown({ keepCapture: this.handedOver });
    this.proxies.clear();
    this.proxiesByIp.clear();
    this.proxiesByCookie.clear();
    this.pool.close();
    this.identities.close();
    this.readiness.close();
    this.admin.close();
    this.events.close();
    this.datapath.close();
  }
}
