// The flow benchmark (`npm run bench:flows`): how many flows the agent takes in, serves and holds.
//   (a) ingest: flows/s through the agent's in-process pipeline (what FlowPipeline.emit does:
//       metrics.recordFlow → pack ConnectionInfo → store.add with a follower → flow log line), with
//       baselines measured in the same run (generation only, store.add only, + metrics, + packing).
//   (b) served: flows/s a gRPC client (in a worker thread, so it has its own core) receives from an
//       ObserverServer on 127.0.0.1: the history of a full ring, and a follower while flows are
//       ingested at a fixed rate (default 50,000/s for 5 s), with every loss counted.
//   (c) memory: RSS and heap of a full ring (default size, and 65,536), each in a fresh process.
// Every figure is the median of several repetitions. Results: bench/results/flows.{json,md}.
import { AgentDefaults } from '../agent/config.js';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import * as grpc from '@grpc/grpc-js';
import { pino } from 'pino';
import { FlowLog } from '../agent/flows/flow-log.js';
import { ObserverServer } from '../agent/flows/observer-server.js';
import { flowProtos, packConnectionInfo } from '../agent/flows/proto.js';
import { FlowStore } from '../agent/flows/store.js';
import type { GetFlowsRequest, GetFlowsResponse } from '../agent/flows/types.js';
import { AgentMetrics } from '../agent/metrics/agent-metrics.js';
import { repoPath } from '../agent/system/assets.js';
import { FlowGenerator } from './flow-gen.js';

/** bench/results in the source tree (this file runs from dist/bench). */
export const DEFAULT_RESULTS_DIR = repoPath('bench', 'results');
/** The agent's default flow ring (--flow-ring-size), Hubble's default too. */
export const DEFAULT_RING = AgentDefaults.flowRingSize;
export const FOLLOW_TARGET_RATE = 50_000;

export interface FlowBenchOptions {
  /** Flows per ingest repetition. */
  ingestFlows: number;
  repetitions: number;
  /** Ring sizes served as history and measured for memory. */
  rings: number[];
  followRate: number;
  followSeconds: number;
  /** Where flows.json and flows.md go; undefined: not written. */
  resultsDir?: string;
  /** Print the table to stdout. */
  print: boolean;
}

export const FULL_OPTIONS: FlowBenchOptions = {
  ingestFlows: 100_000,
  repetitions: 5,
  rings: [DEFAULT_RING, 65_536],
  followRate: FOLLOW_TARGET_RATE,
  followSeconds: 5,
  resultsDir: DEFAULT_RESULTS_DIR,
  print: true,
};

export interface IngestResult {
  stage: string;
  flowsPerSecond: number;
  usPerFlow: number;
}

export interface HistoryResult {
  ring: number;
  flowsPerSecond: number;
  received: number;
}

export interface FollowResult {
  targetRate: number;
  seconds: number;
  sent: number;
  received: number;
  /** sent - received: flows that never reached the client. */
  missing: number;
  /** Sum of the LostEvent counts the stream reported. */
  reportedLost: number;
  /** Rate the ingest loop achieved. */
  ingestRate: number;
  /** Flows received per second, from the first flow sent to the last one received. */
  deliveredRate: number;
  /** Delay from the end of ingestion until the client had everything. */
  drainMs: number;
  /** The most flows missing in any run (a loss in any run is a loss). */
  worstMissing: number;
  runs: number;
}

export interface MemoryResult {
  ring: number;
  rssMiB: number;
  heapUsedMiB: number;
  /** Heap growth per stored flow over an empty store in the same process. */
  heapBytesPerFlow: number;
}

export interface FlowBenchResults {
  date: string;
  node: string;
  cpus: string;
  cores: number;
  memoryGiB: number;
  options: Omit<FlowBenchOptions, 'resultsDir' | 'print'>;
  ingest: IngestResult[];
  history: HistoryResult[];
  follow: FollowResult;
  memory: MemoryResult[];
  target: { rate: number; ratio: number; lossless: boolean; met: boolean };
}

const silent = pino({ level: 'silent' });

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

// ---------------------------------------------------------------- (a) ingest

type Stage = 'generate' | 'store' | 'store+metrics' | 'store+metrics+pack' | 'pipeline (+flow log)';
const STAGES: Stage[] = ['generate', 'store', 'store+metrics', 'store+metrics+pack', 'pipeline (+flow log)'];
/** Flows handled per event-loop turn: the capture stream and the proxies deliver in batches too. */
const BATCH = 1000;

async function ingestOnce(stage: Stage, flows: number, dir: string): Promise<{ seconds: number; logDropped: number }> {
  const gen = new FlowGenerator();
  const store = new FlowStore(DEFAULT_RING, 'node-1');
  let followed = 0;
  store.subscribe(() => followed++);
  const metrics = new AgentMetrics();
  const log = stage === 'pipeline (+flow log)' ? new FlowLog({ path: join(dir, `flows-${process.hrtime.bigint()}.log`) }) : undefined;
  const start = process.hrtime.bigint();
  for (let done = 0; done < flows; ) {
    const end = Math.min(flows, done + BATCH);
    for (; done < end; done++) {
      const { flow, info, event } = gen.next();
      if (stage === 'generate') continue;
      if (stage !== 'store') metrics.recordFlow(flow, info, event);
      if (stage === 'store+metrics+pack' || stage === 'pipeline (+flow log)') flow.extensions = packConnectionInfo(info);
      store.add(flow);
      log?.write({ flow, node_name: flow.node_name, time: flow.time });
    }
    await tick();
  }
  // The flow log's figure includes getting the lines to the file.
  await log?.close();
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  if (stage !== 'generate' && followed !== flows) throw new Error(`follower saw ${followed} of ${flows} flows`);
  return { seconds, logDropped: log?.dropped ?? 0 };
}

async function benchIngest(o: FlowBenchOptions): Promise<{ results: IngestResult[]; logDropped: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'weft-bench-'));
  try {
    const times = new Map<Stage, number[]>(STAGES.map((s) => [s, []]));
    let logDropped = 0;
    await ingestOnce('pipeline (+flow log)', Math.min(o.ingestFlows, 10_000), dir); // warm-up
    for (let r = 0; r < o.repetitions; r++) {
      for (const stage of STAGES) {
        const { seconds, logDropped: d } = await ingestOnce(stage, o.ingestFlows, dir);
        times.get(stage)!.push(seconds);
        logDropped += d;
      }
    }
    const results = STAGES.map((stage) => {
      const s = median(times.get(stage)!);
      return { stage, flowsPerSecond: o.ingestFlows / s, usPerFlow: (s * 1e6) / o.ingestFlows };
    });
    return { results, logDropped };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------- (b) served

interface ClientData {
  role: 'observer-client';
  address: string;
  request: GetFlowsRequest;
}

type ClientMessage =
  | { kind: 'first' }
  | { kind: 'count'; flows: number; lost: number }
  | { kind: 'done'; flows: number; lost: number; firstMs: number; lastMs: number; startMs: number };

/** Worker thread: one GetFlows call, counting flows and reported losses until the stream ends or 'stop'. */
function observerClient(data: ClientData): void {
  const { ObserverClient } = flowProtos();
  const client = new ObserverClient(data.address, grpc.credentials.createInsecure(), { 'grpc.max_receive_message_length': 64 * 1024 * 1024 });
  let flows = 0;
  let lost = 0;
  let firstMs = 0;
  let lastMs = 0;
  const startMs = performance.timeOrigin + performance.now();
  const call = (client as unknown as { GetFlows(req: GetFlowsRequest): grpc.ClientReadableStream<GetFlowsResponse> }).GetFlows(data.request);
  let reported = false;
  const report = (): void => {
    if (reported) return;
    reported = true;
    parentPort!.postMessage({ kind: 'done', flows, lost, firstMs, lastMs, startMs } satisfies ClientMessage);
    client.close();
  };
  call.on('data', (resp: GetFlowsResponse) => {
    const now = performance.timeOrigin + performance.now();
    if (resp.flow) {
      if (flows === 0) {
        firstMs = now;
        parentPort!.postMessage({ kind: 'first' } satisfies ClientMessage);
      }
      flows++;
      lastMs = now;
    } else if (resp.lost_events) {
      lost += Number(resp.lost_events.num_events_lost);
    }
  });
  call.on('end', report);
  call.on('error', (err: grpc.ServiceError) => {
    if (err.code !== grpc.status.CANCELLED) throw err;
    report();
  });
  parentPort!.on('message', (m: string) => {
    if (m === 'stop') call.cancel();
    if (m === 'count') parentPort!.postMessage({ kind: 'count', flows, lost } satisfies ClientMessage);
  });
}

class ClientHandle {
  private readonly worker: Worker;
  readonly first: Promise<void>;
  readonly done: Promise<Extract<ClientMessage, { kind: 'done' }>>;
  private counted: ((c: { flows: number; lost: number }) => void) | undefined;

  constructor(address: string, request: GetFlowsRequest) {
    this.worker = new Worker(fileURLToPath(import.meta.url), { workerData: { role: 'observer-client', address, request } satisfies ClientData });
    let onFirst!: () => void;
    this.first = new Promise((resolve) => (onFirst = resolve));
    this.done = new Promise((resolve, reject) => {
      this.worker.on('message', (m: ClientMessage) => {
        if (m.kind === 'first') onFirst();
        else if (m.kind === 'count') this.counted?.(m);
        else resolve(m);
      });
      this.worker.on('error', reject);
    });
  }

  /** What the client has received so far. */
  count(): Promise<{ flows: number; lost: number }> {
    return new Promise((resolve) => {
      this.counted = resolve;
      this.worker.postMessage('count');
    });
  }

  stop(): void {
    this.worker.postMessage('stop');
  }

  async close(): Promise<void> {
    await this.worker.terminate();
  }
}

async function withServer<T>(ring: number, fn: (store: FlowStore, address: string) => Promise<T>): Promise<T> {
  const store = new FlowStore(ring, 'node-1');
  const server = new ObserverServer({ store, nodeName: 'node-1', version: 'weft/bench', log: silent });
  const port = await server.listen('127.0.0.1', 0);
  try {
    return await fn(store, `127.0.0.1:${port}`);
  } finally {
    await server.close();
  }
}

function fill(store: FlowStore, n: number, gen = new FlowGenerator()): void {
  for (let i = 0; i < n; i++) {
    const { flow, info } = gen.next();
    flow.extensions = packConnectionInfo(info);
    store.add(flow);
  }
}

async function benchHistory(o: FlowBenchOptions): Promise<HistoryResult[]> {
  const out: HistoryResult[] = [];
  for (const ring of o.rings) {
    const rates: number[] = [];
    let received = 0;
    await withServer(ring, async (store, address) => {
      fill(store, ring);
      for (let r = 0; r < o.repetitions; r++) {
        const client = new ClientHandle(address, { number: ring });
        const d = await client.done;
        await client.close();
        if (d.flows !== ring) throw new Error(`history of ${ring}: received ${d.flows}`);
        received = d.flows;
        rates.push(d.flows / ((d.lastMs - d.startMs) / 1000));
      }
    });
    out.push({ ring, flowsPerSecond: median(rates), received });
  }
  return out;
}

async function followOnce(o: FlowBenchOptions): Promise<FollowResult> {
  return withServer(DEFAULT_RING, async (store, address) => {
    const gen = new FlowGenerator();
    const add = (): void => {
      const { flow, info } = gen.next();
      flow.extensions = packConnectionInfo(info);
      store.add(flow);
    };
    const client = new ClientHandle(address, { follow: true });
    // The follower is in place once it has received a first flow; the primer flows are not counted.
    // Only primer flows added after the server subscribed the follower are owed to it: the ones
    // before (while the worker and its connection start) were never its to receive nor to lose.
    let primed = 0;
    const primer = setInterval(() => {
      if (store.followers > 0) primed++;
      add();
    }, 20);
    await client.first;
    clearInterval(primer);

    const total = Math.round(o.followRate * o.followSeconds);
    const now = (): number => performance.timeOrigin + performance.now();
    const start = now();
    let sent = 0;
    while (sent < total) {
      const due = Math.min(total, Math.floor(((now() - start) / 1000) * o.followRate));
      for (; sent < due; sent++) add();
      await tick();
    }
    const ingestEnd = now();

    // Wait until the client has everything, or nothing more arrived for a second.
    let last = -1;
    let still = now();
    for (;;) {
      const c = await client.count();
      if (c.flows + c.lost >= primed + sent) break;
      if (c.flows + c.lost !== last) {
        last = c.flows + c.lost;
        still = now();
      } else if (now() - still > 1000) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    client.stop();
    const d = await client.done;
    await client.close();
    const received = d.flows - primed;
    return {
      targetRate: o.followRate,
      seconds: o.followSeconds,
      sent,
      received,
      missing: sent - received,
      reportedLost: d.lost,
      ingestRate: sent / ((ingestEnd - start) / 1000),
      deliveredRate: received / ((d.lastMs - start) / 1000),
      drainMs: Math.max(0, d.lastMs - ingestEnd),
      worstMissing: sent - received,
      runs: 1,
    };
  });
}

async function benchFollow(o: FlowBenchOptions): Promise<FollowResult> {
  const runs: FollowResult[] = [];
  for (let r = 0; r < Math.min(o.repetitions, 3); r++) runs.push(await followOnce(o));
  // The median run by delivered rate, with its own figures; plus the worst loss of any run.
  runs.sort((a, b) => a.deliveredRate - b.deliveredRate);
  const mid = runs[Math.floor((runs.length - 1) / 2)]!;
  return { ...mid, worstMissing: Math.max(...runs.map((r) => r.missing)), runs: runs.length };
}

// ---------------------------------------------------------------- (c) memory

interface MemoryProbe {
  empty: NodeJS.MemoryUsage;
  full: NodeJS.MemoryUsage;
}

/** In a fresh process (--expose-gc): memory with an empty store, then with a full ring. */
async function memoryProbe(ring: number): Promise<void> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error('memory probe needs --expose-gc');
  const settle = async (): Promise<NodeJS.MemoryUsage> => {
    for (let i = 0; i < 3; i++) {
      gc();
      await tick();
    }
    return process.memoryUsage();
  };
  const store = new FlowStore(ring, 'node-1');
  const metrics = new AgentMetrics();
  const gen = new FlowGenerator();
  // Warm the code paths (protos, metric series) before the baseline.
  packConnectionInfo(gen.next().info);
  const empty = await settle();
  for (let i = 0; i < ring; i++) {
    const { flow, info, event } = gen.next();
    metrics.recordFlow(flow, info, event);
    flow.extensions = packConnectionInfo(info);
    store.add(flow);
  }
  const full = await settle();
  if (store.status().numFlows !== ring) throw new Error('store not full');
  process.stdout.write(JSON.stringify({ empty, full } satisfies MemoryProbe) + '\n');
}

function benchMemory(o: FlowBenchOptions): MemoryResult[] {
  const MiB = 1024 * 1024;
  return o.rings.map((ring) => {
    const probes: MemoryProbe[] = [];
    for (let r = 0; r < Math.min(o.repetitions, 3); r++) {
      const out = execFileSync(process.execPath, ['--expose-gc', fileURLToPath(import.meta.url), '--memory-probe', String(ring)], { encoding: 'utf8' });
      probes.push(JSON.parse(out.trim().split('\n').pop()!) as MemoryProbe);
    }
    return {
      ring,
      rssMiB: median(probes.map((p) => p.full.rss)) / MiB,
      heapUsedMiB: median(probes.map((p) => p.full.heapUsed)) / MiB,
      heapBytesPerFlow: median(probes.map((p) => (p.full.heapUsed - p.empty.heapUsed) / ring)),
    };
  });
}

// ---------------------------------------------------------------- report

const fmt = (n: number, digits = 0): string => n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });

export function renderMarkdown(r: FlowBenchResults): string {
  const lines: string[] = [];
  lines.push(`# Flow benchmark`, '');
  lines.push(`${r.date} · node ${r.node} · ${r.cores} × ${r.cpus} · ${fmt(r.memoryGiB, 1)} GiB`, '');
  lines.push(`Medians of ${r.options.repetitions} repetitions (follow and memory: up to 3). Other processes shared the machine's cores, so figures vary by up to ~2× between runs.`, '');
  lines.push(`## Ingest (${fmt(r.options.ingestFlows)} flows per repetition, batches of ${BATCH})`, '');
  lines.push('| stage | flows/s | µs/flow |', '|---|---:|---:|');
  for (const i of r.ingest) lines.push(`| ${i.stage} | ${fmt(i.flowsPerSecond)} | ${fmt(i.usPerFlow, 2)} |`);
  lines.push('', `Stages add up: "store" is FlowStore.add with one follower; "+metrics" AgentMetrics.recordFlow; "+pack" the ConnectionInfo packed into extensions; "pipeline" adds a flow-log line (Hubble JSON, file closed and flushed inside the timing).`, '');
  lines.push('## Served by the Observer API (gRPC on 127.0.0.1, client in a worker thread)', '');
  lines.push('| case | flows | flows/s |', '|---|---:|---:|');
  for (const h of r.history) lines.push(`| history of a full ring of ${fmt(h.ring)} | ${fmt(h.received)} | ${fmt(h.flowsPerSecond)} |`);
  const f = r.follow;
  lines.push(`| follow at ${fmt(f.targetRate)}/s for ${f.seconds} s | ${fmt(f.received)} of ${fmt(f.sent)} | ${fmt(f.deliveredRate)} |`);
  lines.push(
    '',
    `Follow (median of ${f.runs} runs by delivered rate): ingest loop achieved ${fmt(f.ingestRate)} flows/s; missing ${fmt(f.missing)}, reported in LostEvents ${fmt(f.reportedLost)}; last flow ${fmt(f.drainMs)} ms after ingestion ended; worst run missing ${fmt(f.worstMissing)}.`,
    '',
  );
  lines.push('## Memory (full ring, fresh process, after GC)', '');
  lines.push('| ring | RSS MiB | heap used MiB | heap bytes/flow |', '|---:|---:|---:|---:|');
  for (const m of r.memory) lines.push(`| ${fmt(m.ring)} | ${fmt(m.rssMiB, 1)} | ${fmt(m.heapUsedMiB, 1)} | ${fmt(m.heapBytesPerFlow)} |`);
  lines.push('', '## Target', '');
  lines.push(`Follow delivery ≥ ${fmt(r.target.rate)} flows/s with no loss: ${fmt(f.deliveredRate)} flows/s (ratio ${fmt(r.target.ratio, 2)}), ${r.target.lossless ? 'no loss' : 'LOSSES'} → ${r.target.met ? 'met' : 'NOT met'}.`, '');
  return lines.join('\n');
}

export async function runFlowBench(options: Partial<FlowBenchOptions> = {}): Promise<FlowBenchResults> {
  const o: FlowBenchOptions = { ...FULL_OPTIONS, ...options };
  const say = (s: string): void => {
    if (o.print) process.stdout.write(s + '\n');
  };
  say(`flows bench: ingest ${o.ingestFlows} × ${o.repetitions}, rings ${o.rings.join(', ')}, follow ${o.followRate}/s × ${o.followSeconds} s`);
  const { results: ingest, logDropped } = await benchIngest(o);
  if (logDropped) say(`note: the flow log dropped ${logDropped} lines under load (counted, as designed)`);
  const history = await benchHistory(o);
  const follow = await benchFollow(o);
  const memory = benchMemory(o);
  const lossless = follow.worstMissing === 0 && follow.reportedLost === 0;
  const ratio = follow.deliveredRate / FOLLOW_TARGET_RATE;
  const cpu = cpus();
  const results: FlowBenchResults = {
    date: new Date().toISOString(),
    node: process.version,
    cpus: cpu[0]?.model.trim() ?? 'unknown',
    cores: cpu.length,
    memoryGiB: totalmem() / 1024 ** 3,
    options: { ingestFlows: o.ingestFlows, repetitions: o.repetitions, rings: o.rings, followRate: o.followRate, followSeconds: o.followSeconds },
    ingest,
    history,
    follow,
    memory,
    target: { rate: FOLLOW_TARGET_RATE, ratio, lossless, met: lossless && ratio >= 1 },
  };
  const md = renderMarkdown(results);
  say('\n' + md);
  if (o.resultsDir) {
    mkdirSync(o.resultsDir, { recursive: true });
    writeFileSync(join(o.resultsDir, 'flows.json'), JSON.stringify(results, null, 2) + '\n');
    writeFileSync(join(o.resultsDir, 'flows.md'), md);
    say(`wrote ${join(o.resultsDir, 'flows.json')} and flows.md`);
  }
  return results;
}

if (!isMainThread && (workerData as { role?: string } | null)?.role === 'observer-client') {
  observerClient(workerData as ClientData);
} else if (isMainThread && process.argv[1] === fileURLToPath(import.meta.url)) {
  const i = process.argv.indexOf('--memory-probe');
  const run = i > 0 ? memoryProbe(Number(process.argv[i + 1])) : runFlowBench().then(() => undefined);
  run.then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exit(1);
    },
  );
}
