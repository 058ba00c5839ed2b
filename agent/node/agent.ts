// The node agent: one per node. Reads the cluster's resources, loads (or adopts) the capture
// datapath, and keeps one in-pod proxy per enrolled local pod in step with what the resources say.
import { watch, type FSWatcher } from 'node:fs';
import { netnsCookie } from '../../native/index.js';
import { CaptureDatapath } from '../datapath/capture.js';
import { CaptureEventStream } from '../datapath/events.js';
import { ErrorCodes, WeftError, errorMessage, formatProblem } from '../errors.js';
import type { Logger } from '../log.js';
import { AdminServer, ReadinessServer } from '../metrics/admin-server.js';
import { loadDirLenient } from '../registry/load.js';
import { stripSource } from '../registry/parse.js';
import type { Resource } from '../registry/types.js';
import { ClusterState, type Workload } from '../state/cluster-state.js';
import { PodProxy } from '../ztunnel/inpod.js';

export interface AgentOptions {
  node: string;
  /** `dir:PATH` — a directory of Kubernetes-style YAML, watched for changes. */
  source: string;
  cgroup: string;
  bpffs: string;
  readinessPort: number;
  adminPort: number;
  excludeOutboundPorts: number[];
  excludeInboundPorts: number[];
  log: Logger;
}

const RELOAD_DEBOUNCE_MS = 50;

export class NodeAgent {
  private state = new ClusterState([]);
  private readonly proxies = new Map<string, PodProxy>();
  /** Pods that could not be enrolled: why, and their netns cookie (kept PENDING: fail closed). */
  private readonly failed = new Map<string, { error: string; cookie: bigint | undefined }>();
  private configProblems: string[] = [];
  /** The resources last read from each file without a problem. */
  private lastGood = new Map<string, Resource[]>();
  private synced = false;
  private reconciling: Promise<void> = Promise.resolve();
  private watcher: FSWatcher | undefined;
  private reloadTimer: NodeJS.Timeout | undefined;
  private readonly readiness: ReadinessServer;
  private readonly admin: AdminServer;
  private readonly sourceDir: string;
  private events!: CaptureEventStream;
  private datapath!: CaptureDatapath;

  private constructor(private readonly options: AgentOptions) {
    if (!options.source.startsWith('dir:')) {
      throw new WeftError(ErrorCodes.USAGE, `unsupported --source "${options.source}" (this agent reads dir:PATH)`);
    }
    this.sourceDir = options.source.slice('dir:'.length);
    this.readiness = new ReadinessServer(() => this.readyState());
    this.admin = new AdminServer({
      '/config_dump': () => this.configDump(),
      '/stats/capture': () => this.captureStats(),
      '/healthz/ready': () => this.readyState(),
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
    log.info({ ...this.datapath.report, cgroup: this.options.cgroup, bpffs: this.options.bpffs }, 'capture datapath loaded');
    this.events = new CaptureEventStream(this.datapath, log);
    this.events.subscribe((e) => {
      if (e.kind === 'REFUSED') log.info({ event: e }, 'capture refused a connection');
      else log.debug({ event: e }, 'capture event');
    });
    await this.admin.listen(this.options.adminPort);
    await this.readiness.listen('0.0.0.0', this.options.readinessPort);
    this.reload();
    await this.reconciling;
    this.removeStaleCapture();
    this.synced = true;
    this.watcher = watch(this.sourceDir, () => this.scheduleReload());
    log.info({ node: this.options.node, pods: [...this.proxies.keys()] }, 'agent ready');
  }

  private scheduleReload(): void {
    clearTimeout(this.reloadTimer);
    this.reloadTimer = setTimeout(() => this.reload(), RELOAD_DEBOUNCE_MS);
  }

  /**
   * Re-read the source. A file with an invalid document keeps its last good contents in force (a
   * typo must not un-enroll a pod); the problems are logged and shown by the admin API.
   */
  private reload(): void {
    let result;
    try {
      result = loadDirLenient(this.sourceDir);
    } catch (err) {
      this.options.log.error({ err: errorMessage(err), source: this.sourceDir }, 'cannot read the source; keeping the last configuration');
      return;
    }
    const badFiles = new Set(result.problems.map((p) => p.file));
    const byFile = new Map<string, Resource[]>();
    for (const r of result.resources) {
      if (badFiles.has(r.source.file)) continue;
      byFile.set(r.source.file, [...(byFile.get(r.source.file) ?? []), stripSource<Resource>(r)]);
    }
    for (const file of badFiles) {
      const lastGood = this.lastGood.get(file);
      if (lastGood) byFile.set(file, lastGood);
    }
    this.lastGood = byFile;
    this.configProblems = result.problems.map(formatProblem);
    for (const p of result.problems) this.options.log.error({ problem: formatProblem(p) }, 'invalid configuration document rejected; last good version stays');
    this.state = new ClusterState([...byFile.values()].flat());
    this.reconciling = this.reconciling.then(() => this.reconcile());
  }

  /** Bring the set of in-pod proxies in line with the enrolled pods of this node. */
  private async reconcile(): Promise<void> {
    const want = new Map<string, Workload & { netns: string; ip: string }>();
    for (const w of this.state.enrolledOn(this.options.node)) {
      if (w.netns && w.ip) want.set(w.key, { ...w, netns: w.netns, ip: w.ip });
    }
    for (const [key, proxy] of this.proxies) {
      const w = want.get(key);
      if (w && w.ip === proxy.workload.ip && w.netns === proxy.workload.netns) continue;
      proxy.stop();
      this.proxies.delete(key);
    }
    for (const [key, w] of want) {
      if (this.proxies.has(key)) continue;
      let cookie: bigint | undefined;
      try {
        cookie = netnsCookie(w.netns);
        this.proxies.set(key, await PodProxy.start(w, cookie, { datapath: this.datapath, state: () => this.state, log: this.options.log }));
        this.failed.delete(key);
      } catch (err) {
        this.failed.set(key, { error: errorMessage(err), cookie });
        this.options.log.error({ pod: key, err: errorMessage(err) }, 'cannot enroll pod; its traffic is refused until it can be');
      }
    }
    for (const key of this.failed.keys()) if (!want.has(key)) this.failed.delete(key);
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
  }

  private readyState(): { ready: boolean; reason?: string } {
    if (!this.synced) return { ready: false, reason: 'initial sync not done' };
    if (this.failed.size) return { ready: false, reason: `pods not enrolled: ${[...this.failed.keys()].join(', ')}` };
    return { ready: true };
  }

  private configDump(): unknown {
    return {
      node: this.options.node,
      source: this.options.source,
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
    this.watcher?.close();
    clearTimeout(this.reloadTimer);
    await this.reconciling;
    for (const p of this.proxies.values()) p.shutdown();
    this.proxies.clear();
    this.readiness.close();
    this.admin.close();
    this.events.close();
    this.datapath.close();
  }
}
