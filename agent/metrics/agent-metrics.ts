// The node agent's Prometheus metrics, on a registry of their own: Istio's standard TCP metrics as
// ztunnel reports them, Hubble's flow metrics, and weft's own (capture, certificates, config, flows).
//
// How flows become Istio's TCP counters (decided with the flow builder):
// - weft's proxies report one flow per connection, at its end: FORWARDED (event 'close') with the
//   bytes of both directions, or DROPPED (event 'deny'). Such an L3_L4 flow counts the connection
//   as opened AND closed at once, and adds its bytes. Opened carries response_flags="-" (nothing is
//   known when a connection opens), closed carries the outcome ("-", "DENY" for a policy denial,
//   "CONNECT" for an upstream failure), exactly as ztunnel labels them.
//   Consequence: a connection appears in the counters when it ends; opened - closed is not a count
//   of open connections.
// - Flows with event 'open', and the capture programs' socket-level flows (Type SOCK: steered,
//   closed, refused), describe connections that the proxies report too (or that never reached a
//   proxy): they feed Hubble's counters only, so no connection is counted twice in Istio's.
// - Bytes: ConnectionInfo.bytes_sent is client → server (the request direction), which Istio counts
//   in istio_tcp_received_bytes_total ("received during request"); bytes_received (server → client)
//   goes to istio_tcp_sent_bytes_total ("sent during response").
//
// Cardinality: every labelled family keeps at most `maxSeriesPerMetric` (default 5,000) distinct
// label sets. A new label set beyond the cap is folded into that family's single overflow series
// (every label = "overflow"), and each fold is counted in weft_metrics_label_overflow_total{metric}.
// Series already present keep counting; nothing is ever evicted, so a series never goes backwards.
import { Mesh } from '../config.js';
import { workloadOfPod } from '../state/cluster-state.js';
import { Counter, Gauge, Registry } from 'prom-client';
import type { CertSnapshot } from '../identity/manager.js';
import type { StoreStatus } from '../flows/store.js';
import type { ConnectionInfo, Endpoint, Flow, LostEventSource } from '../flows/types.js';

export type FlowEvent = 'open' | 'close' | 'deny';

export const DEFAULT_MAX_SERIES_PER_METRIC = 5_000;
export const OVERFLOW = 'overflow';
const UNKNOWN = 'unknown';

/** Istio's standard TCP metric labels, in the order ztunnel reports them. */
export const ISTIO_TCP_LABELS = [
  'reporter',
  'source_workload',
  'source_canonical_service',
  'source_canonical_revision',
  'source_workload_namespace',
  'source_principal',
  'source_app',
  'source_version',
  'source_cluster',
  'destination_service',
  'destination_service_namespace',
  'destination_service_name',
  'destination_workload',
  'destination_canonical_service',
  'destination_canonical_revision',
  'destination_workload_namespace',
  'destination_principal',
  'destination_app',
  'destination_version',
  'destination_cluster',
  'request_protocol',
  'response_flags',
  'connection_security_policy',
] as const;
type IstioLabel = (typeof ISTIO_TCP_LABELS)[number];
const RESPONSE_FLAGS_INDEX = ISTIO_TCP_LABELS.indexOf('response_flags');

export interface AgentMetricsOptions {
  /** Distinct label sets kept per metric before folding into the overflow series. */
  maxSeriesPerMetric?: number;
  /** Kubernetes cluster domain, for destination_service (`name.namespace.svc.<domain>`). */
  clusterDomain?: string;
  /** source_cluster / destination_cluster of known endpoints that carry no cluster name. */
  clusterName?: string;
}

/** What the metrics read of the flow store at scrape time. */
export interface StoreStatusSource {
  status(): StoreStatus;
}

type Folded = (metric: string) => void;

interface Series {
  labels: Record<string, string>;
  pending: number;
  exported: boolean;
}

/**
 * A counter family whose hot path is a Map lookup: increments accumulate per label set and reach
 * prom-client's counter when it is collected (at scrape time), so a flow costs no label hashing.
 */
class BoundedCounter {
  readonly counter: Counter<string>;
  private readonly series = new Map<string, Series>();
  private overflowSeries: Series | undefined;

  constructor(
    registry: Registry,
    readonly name: string,
    help: string,
    private readonly labelNames: readonly string[],
    private readonly limit: number,
    private readonly folded: Folded,
  ) {
    this.counter = new Counter({ name, help, labelNames, registers: [registry], collect: () => this.flush() });
  }

  /** `values` in the order of the family's label names; `n` = 0 creates the series at 0. */
  inc(values: readonly string[], n = 1): void {
    this.incKey(values.join('\u0000'), values, n);
  }

  /** The same with the series key already made (`seriesKey(values)`), for families sharing labels. */
  incKey(key: string, values: readonly string[], n = 1): void {
    if (!(n >= 0)) return;
    let s = this.series.get(key);
    if (!s) {
      if (this.series.size >= this.limit) {
        this.folded(this.name);
        s = this.overflow();
      } else {
        s = { labels: this.labelsOf(values), pending: 0, exported: false };
        this.series.set(key, s);
      }
    }
    s.pending += n;
  }

  get size(): number {
    return this.series.size;
  }

  private overflow(): Series {
    this.overflowSeries ??= { labels: this.labelsOf(this.labelNames.map(() => OVERFLOW)), pending: 0, exported: false };
    return this.overflowSeries;
  }

  private labelsOf(values: readonly string[]): Record<string, string> {
    const labels: Record<string, string> = {};
    this.labelNames.forEach((name, i) => (labels[name] = values[i] ?? ''));
    return labels;
  }

  private flush(): void {
    const all = this.overflowSeries ? [...this.series.values(), this.overflowSeries] : this.series.values();
    for (const s of all) {
      if (s.pending === 0 && s.exported) continue;
      this.counter.inc(s.labels, s.pending);
      s.pending = 0;
      s.exported = true;
    }
  }
}

/** Cilium monitor message types (flow.event_type.type) and trace observation points (sub_type). */
const MESSAGE_TYPE: Record<number, string> = { 1: 'Drop', 3: 'Capture', 4: 'Trace', 5: 'PolicyVerdict', 7: 'TraceSock', 129: 'L7' };
const TRACE_POINT: Record<number, string> = {
  0: 'to-endpoint',
  1: 'to-proxy',
  2: 'to-host',
  3: 'to-stack',
  4: 'to-overlay',
  5: 'from-endpoint',
  6: 'from-proxy',
  7: 'from-host',
  8: 'from-stack',
  9: 'from-overlay',
  10: 'from-network',
  11: 'to-network',
};

/** Hubble's `v1.FlowProtocol`: the L7 protocol if any, else the L4 one, else "". */
export function flowProtocol(flow: Flow): string {
  if (flow.l7?.http) return 'HTTP';
  if (flow.l4?.TCP) return 'TCP';
  if (flow.l4?.UDP) return 'UDP';
  return '';
}

/** hubble_flows_processed_total's type and subtype, as Hubble's flow handler names them. */
export function flowTypeLabels(flow: Flow): { type: string; subtype: string } {
  const et = flow.event_type;
  if (!et) {
    // A flow without a monitor event type: name it by what it is.
    if (flow.Type === 'L7') return { type: 'L7', subtype: flow.l7?.http ? 'HTTP' : '' };
    return { type: flow.verdict === 'DROPPED' ? 'Drop' : 'Trace', subtype: '' };
  }
  const type = MESSAGE_TYPE[et.type];
  if (type === undefined) return { type: 'Unknown', subtype: String(et.type) };
  if (type === 'Trace') return { type, subtype: TRACE_POINT[et.sub_type] ?? '' };
  if (type === 'L7') return { type, subtype: flow.l7?.http ? 'HTTP' : '' };
  return { type, subtype: '' };
}

/** The TCP flags Hubble counts: SYN, SYN-ACK, FIN, RST. */
export function tcpFlagNames(flow: Flow): string[] {
  const f = flow.l4?.TCP?.flags;
  if (!f) return [];
  const out: string[] = [];
  if (f.SYN) out.push(f.ACK ? 'SYN-ACK' : 'SYN');
  if (f.FIN) out.push('FIN');
  if (f.RST) out.push('RST');
  return out;
}


/** A label value from Hubble's `k8s:key=value` (or plain `key=value`) list. */
function labelValue(labels: readonly string[] | undefined, ...keys: string[]): string | undefined {
  if (!labels) return undefined;
  for (const key of keys) {
    for (const l of labels) {
      const kv = l.startsWith('k8s:') ? l.slice(4) : l;
      if (kv.length > key.length && kv.startsWith(key) && kv.charCodeAt(key.length) === 61 /* = */) return kv.slice(key.length + 1);
    }
  }
  return undefined;
}

interface Side {
  workload: string;
  canonicalService: string;
  canonicalRevision: string;
  namespace: string;
  app: string;
  version: string;
  cluster: string;
}

const CANONICAL_NAME = ['service.istio.io/canonical-name', 'app.kubernetes.io/name', 'app'];
const CANONICAL_REVISION = ['service.istio.io/canonical-revision', 'app.kubernetes.io/version', 'version'];

export class AgentMetrics {
  readonly registry = new Registry();
  private readonly limit: number;
  private readonly clusterDomain: string;
  private readonly clusterName: string | undefined;
  private store: StoreStatusSource | undefined;
  private lastSeen = 0;

  /** Folds per metric since the last scrape (kept out of prom-client's hot path, like the families). */
  private readonly pendingFolds = new Map<string, number>();
  readonly labelOverflow = new Counter({
    name: 'weft_metrics_label_overflow_total',
    help: 'Increments whose new label set was folded into the overflow series because the metric reached its series cap.',
    labelNames: ['metric'] as const,
    registers: [this.registry],
    collect: () => {
      for (const [metric, n] of this.pendingFolds) this.labelOverflow.inc({ metric }, n);
      this.pendingFolds.clear();
    },
  });

  private readonly fold: Folded = (metric) => this.pendingFolds.set(metric, (this.pendingFolds.get(metric) ?? 0) + 1);

  readonly tcpOpened: BoundedCounter;
  readonly tcpClosed: BoundedCounter;
  readonly tcpSentBytes: BoundedCounter;
  readonly tcpReceivedBytes: BoundedCounter;
  readonly flowsProcessed: BoundedCounter;
  readonly drops: BoundedCounter;
  readonly tcpFlags: BoundedCounter;
  readonly lostEvents: BoundedCounter;
  readonly flowLogDropped: Counter;

  readonly captureMapEntries = new Gauge({
    name: 'weft_capture_map_entries',
    help: 'Entries in each capture BPF map.',
    labelNames: ['map'] as const,
    registers: [this.registry],
  });
  private readonly captureMaps = new Set<string>();
  readonly captureEventsLost = new Counter({
    name: 'weft_capture_events_lost_total',
    help: 'Capture events the kernel could not put in the ring buffer because it was full.',
    registers: [this.registry],
  });
  readonly certificateExpiry = new Gauge({
    name: 'weft_certificate_expiry_seconds',
    help: 'Seconds until the workload certificate of each identity expires (negative once expired).',
    labelNames: ['identity'] as const,
    registers: [this.registry],
  });
  readonly certificateFailures = new Gauge({
    name: 'weft_certificate_request_failures',
    help: 'Consecutive failed certificate requests of each identity (0 once one succeeds); the agent retries with backoff and keeps the old certificate until it expires.',
    labelNames: ['identity'] as const,
    registers: [this.registry],
  });
  readonly configRejections = new Gauge({
    name: 'weft_config_rejections',
    help: 'Configuration documents currently rejected by validation.',
    registers: [this.registry],
  });
  readonly flowsStored = new Gauge({
    name: 'weft_flows_stored',
    help: 'Flows held in the flow store ring.',
    registers: [this.registry],
    collect: () => {
      if (this.store) this.flowsStored.set(this.store.status().numFlows);
    },
  });
  readonly flowsSeen = new Counter({
    name: 'weft_flows_seen_total',
    help: 'Flows added to the flow store since the agent started.',
    registers: [this.registry],
    collect: () => {
      if (!this.store) return;
      const seen = this.store.status().seenFlows;
      if (seen > this.lastSeen) this.flowsSeen.inc(seen - this.lastSeen);
      this.lastSeen = seen;
    },
  });

  constructor(options: AgentMetricsOptions = {}) {
    this.limit = options.maxSeriesPerMetric ?? DEFAULT_MAX_SERIES_PER_METRIC;
    if (!Number.isInteger(this.limit) || this.limit < 1) throw new RangeError(`maxSeriesPerMetric must be a positive integer, got ${this.limit}`);
    this.clusterDomain = options.clusterDomain ?? Mesh.clusterDomain;
    this.clusterName = options.clusterName;
    const family = (name: string, help: string, labels: readonly string[]): BoundedCounter =>
      new BoundedCounter(this.registry, name, help, labels, this.limit, this.fold);
    this.tcpOpened = family('istio_tcp_connections_opened_total', 'The total number of TCP connections opened', ISTIO_TCP_LABELS);
    this.tcpClosed = family('istio_tcp_connections_closed_total', 'The total number of TCP connections closed', ISTIO_TCP_LABELS);
    this.tcpSentBytes = family('istio_tcp_sent_bytes_total', 'The size of total bytes sent during response in case of a TCP connection', ISTIO_TCP_LABELS);
    this.tcpReceivedBytes = family('istio_tcp_received_bytes_total', 'The size of total bytes received during request in case of a TCP connection', ISTIO_TCP_LABELS);
    this.flowsProcessed = family('hubble_flows_processed_total', 'Total number of flows processed', ['protocol', 'type', 'subtype', 'verdict']);
    this.drops = family('hubble_drop_total', 'Number of drops', ['reason', 'protocol']);
    this.tcpFlags = family('hubble_tcp_flags_total', 'TCP flag occurrences', ['flag', 'family']);
    this.lostEvents = family('hubble_lost_events_total', 'Number of lost events', ['source']);
    this.flowLogDropped = new Counter({
      name: 'weft_flow_log_dropped_total',
      help: 'Flow log lines dropped because the log could not keep up (its write buffer was full).',
      registers: [this.registry],
    });
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  metrics(): Promise<string> {
    return this.registry.metrics();
  }

  /** weft_flows_stored and weft_flows_seen_total read the store when scraped. */
  observeStore(store: StoreStatusSource): void {
    this.store = store;
    this.lastSeen = 0;
  }

  /**
   * One flow of the pipeline. `event` defaults to 'deny' for DROPPED flows and 'close' otherwise
   * (see the file comment for what each event counts).
   */
  recordFlow(flow: Flow, info: ConnectionInfo | undefined, event: FlowEvent = flow.verdict === 'DROPPED' ? 'deny' : 'close'): void {
    const protocol = flowProtocol(flow);
    const { type, subtype } = flowTypeLabels(flow);
    this.flowsProcessed.inc([protocol, type, subtype, flow.verdict]);
    if (flow.verdict === 'DROPPED') this.drops.inc([flow.drop_reason_desc ?? 'DROP_REASON_UNKNOWN', protocol]);
    const flags = tcpFlagNames(flow);
    if (flags.length) {
      const familyName = flow.IP?.ipVersion ?? 'IP_NOT_USED';
      for (const flag of flags) this.tcpFlags.inc([flag, familyName]);
    }

    if (event === 'open' || flow.Type !== 'L3_L4') return;
    // One key serves the four families (they share Istio's labels); closed differs only by the flag.
    const values = this.istioLabels(flow, info);
    let key = values.join('\u0000');
    this.tcpOpened.incKey(key, values);
    const flag = event === 'deny' ? 'DENY' : flow.verdict === 'ERROR' ? 'CONNECT' : '-';
    if (flag !== '-') {
      values[RESPONSE_FLAGS_INDEX] = flag;
      key = values.join('\u0000');
    }
    this.tcpClosed.incKey(key, values);
    if (event === 'close') {
      this.tcpReceivedBytes.incKey(key, values, info?.bytes_sent ?? 0);
      this.tcpSentBytes.incKey(key, values, info?.bytes_received ?? 0);
    }
  }

  /** Events lost before they became flows. Kernel ring-buffer losses also count as capture losses. */
  recordLost(source: LostEventSource, n: number): void {
    if (!(n > 0)) return;
    this.lostEvents.inc([source.toLowerCase()], n);
    if (source === 'PERF_EVENT_RING_BUFFER') this.captureEventsLost.inc(n);
  }

  /** The flow log's hook for lines it dropped. */
  recordFlowLogDropped(n: number): void {
    if (n > 0) this.flowLogDropped.inc(n);
  }

  /**
   * Replaces the certificate gauge with this snapshot. Identities without a certificate yet are
   * absent. Beyond the series cap, the overflow series holds the soonest expiry among the folded.
   */
  setCertificates(snapshot: readonly CertSnapshot[]): void {
    this.certificateExpiry.reset();
    this.certificateFailures.reset();
    let kept = 0;
    let overflow: number | undefined;
    for (const c of snapshot) {
      if (kept < this.limit) this.certificateFailures.set({ identity: c.identity }, c.failures);
      if (c.secondsToExpiry === undefined) continue;
      if (kept < this.limit) {
        this.certificateExpiry.set({ identity: c.identity }, c.secondsToExpiry);
        kept++;
      } else {
        this.fold('weft_certificate_expiry_seconds');
        overflow = Math.min(overflow ?? Infinity, c.secondsToExpiry);
      }
    }
    if (overflow !== undefined) this.certificateExpiry.set({ identity: OVERFLOW }, overflow);
  }

  /** Entries of one capture map. Map names beyond the cap share the overflow series (last value set). */
  setCaptureMapEntries(map: string, n: number): void {
    if (!this.captureMaps.has(map) && this.captureMaps.size >= this.limit) {
      this.fold('weft_capture_map_entries');
      map = OVERFLOW;
    } else {
      this.captureMaps.add(map);
    }
    this.captureMapEntries.set({ map }, n);
  }

  setConfigRejections(n: number): void {
    this.configRejections.set(n);
  }

  private side(e: Endpoint | undefined): Side {
    if (!e || (!e.pod_name && !e.workloads?.length && !e.namespace)) {
      return { workload: UNKNOWN, canonicalService: UNKNOWN, canonicalRevision: UNKNOWN, namespace: UNKNOWN, app: UNKNOWN, version: UNKNOWN, cluster: UNKNOWN };
    }
    const workload = e.workloads?.[0]?.name || (e.pod_name ? workloadOfPod(e.pod_name) : UNKNOWN);
    const canonicalService = labelValue(e.labels, ...CANONICAL_NAME) ?? workload;
    return {
      workload,
      canonicalService,
      canonicalRevision: labelValue(e.labels, ...CANONICAL_REVISION) ?? 'latest',
      namespace: e.namespace || UNKNOWN,
      app: labelValue(e.labels, 'app', 'app.kubernetes.io/name') ?? UNKNOWN,
      version: labelValue(e.labels, 'version', 'app.kubernetes.io/version') ?? UNKNOWN,
      cluster: e.cluster_name || this.clusterName || UNKNOWN,
    };
  }

  /** Istio's TCP label values for a connection flow, in ISTIO_TCP_LABELS order (response_flags "-"). */
  istioLabels(flow: Flow, info: ConnectionInfo | undefined): string[] {
    const src = this.side(flow.source);
    const dst = this.side(flow.destination);
    const svc = flow.destination_service;
    const reporter = flow.traffic_direction === 'INGRESS' ? 'destination' : flow.traffic_direction === 'EGRESS' ? 'source' : UNKNOWN;
    const security = info?.security === 'mutual_tls' || info?.security === 'none' || info?.security === 'node_local' ? info.security : UNKNOWN;
    const byName: Record<IstioLabel, string> = {
      reporter,
      source_workload: src.workload,
      source_canonical_service: src.canonicalService,
      source_canonical_revision: src.canonicalRevision,
      source_workload_namespace: src.namespace,
      source_principal: info?.source_principal || UNKNOWN,
      source_app: src.app,
      source_version: src.version,
      source_cluster: src.cluster,
      destination_service: svc?.name ? `${svc.name}.${svc.namespace}.svc.${this.clusterDomain}` : UNKNOWN,
      destination_service_namespace: svc?.namespace || UNKNOWN,
      destination_service_name: svc?.name || UNKNOWN,
      destination_workload: dst.workload,
      destination_canonical_service: dst.canonicalService,
      destination_canonical_revision: dst.canonicalRevision,
      destination_workload_namespace: dst.namespace,
      destination_principal: info?.destination_principal || UNKNOWN,
      destination_app: dst.app,
      destination_version: dst.version,
      destination_cluster: dst.cluster,
      request_protocol: 'tcp',
      response_flags: '-',
      connection_security_policy: security,
    };
    return ISTIO_TCP_LABELS.map((l) => byName[l]);
  }
}
