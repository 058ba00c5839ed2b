// The mesh benchmark (`npm run bench:mesh`, `--quick` for smoke sizes): weft's data path against
// baselines measured in the same run, on one lab (bench/mesh-lab.yaml) that is torn down at the end.
//   paths:     direct (no mesh, pod to pod); stunnel (an mTLS tunnel pair, TLS 1.3 with client
//              certificates, between the same un-enrolled pods); weft (enrolled pods: eBPF capture,
//              the node proxies, HBONE); for capture cost only, iptables REDIRECT instead of eBPF.
//   workloads: (a) bulk throughput, 1 and 8 streams, across nodes and on one node; (b) 1 KB
//              request/response at a fixed rate (open loop) over 8 connections: p50/p90/p99 and what a
//              path adds over direct; (c) new connections per second (connect, 1 byte each way, close);
//              (d) agent CPU per 1,000 rps and RSS with 1,000 idle connections (stunnel's processes
//              measured the same way); (e) connect() latency under eBPF capture vs iptables REDIRECT.
// The load generator (bench/tools/loadgen.mjs) runs inside the client pods; its own cost is in the
// direct figures. Repetitions are interleaved across paths; every figure is a median.
// Results: bench/results/latest.json (rows), latest.md (table and targets), mesh.json (everything).
import { execFile, execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import net from 'node:net';
import { labDown, labUp, type LabHandle } from '../agent/lab/index.js';
import { RELAY_PORT } from '../agent/relay/server.js';
import { agentAdminGet, agentAdminPost } from '../agent/node/admin-client.js';
import { repoPath } from '../agent/system/assets.js';

const run = promisify(execFile);
/** The bench's source directory (this file runs from dist/bench). */
const BENCH_DIR = repoPath('bench');
export const DEFAULT_RESULTS_DIR = join(BENCH_DIR, 'results');
const LAB_FILE = join(BENCH_DIR, 'mesh-lab.yaml');
const LOADGEN = join(BENCH_DIR, 'tools', 'loadgen.mjs');

const SINK = 5001;
const ECHO = 5002;
/** stunnel: the client's local accept ports (plain/client) and the servers' TLS ports. */
const STUNNEL_LOCAL = { 'b-sink': 16001, 'b-echo': 16002, 'a-sink': 16003, 'a-echo': 16004 } as const;
const STUNNEL_TLS = { sink: 16101, echo: 16102 } as const;
/** The local listener iptables REDIRECT (and the uncaptured connect() baseline) reaches. */
const REDIRECT_PORT = 15901;

export interface MeshBenchOptions {
  labName: string;
  repetitions: number;
  bulkSeconds: number;
  rrRate: number;
  rrConns: number;
  rrSeconds: number;
  connsSeconds: number;
  connsConcurrency: number;
  connectCount: number;
  holdCount: number;
  /** How long the held connections stay idle while the agents are measured. */
  holdSeconds: number;
  /** How long to wait for another lab on this machine to go away (the relay's port is shared). */
  waitForLabsSeconds: number;
  /** Where latest.json, latest.md and mesh.json go; undefined: not written. */
  resultsDir?: string;
  print: boolean;
  /** Progress lines (the lab coming up, each measurement). */
  onProgress?: (message: string) => void;
}

export const FULL_OPTIONS: MeshBenchOptions = {
  labName: 'bench',
  repetitions: 3,
  bulkSeconds: 4,
  rrRate: 1000,
  rrConns: 8,
  rrSeconds: 6,
  connsSeconds: 2,
  connsConcurrency: 16,
  connectCount: 1000,
  holdCount: 1000,
  holdSeconds: 3,
  waitForLabsSeconds: 900,
  resultsDir: DEFAULT_RESULTS_DIR,
  print: true,
};

/** Smoke sizes: every stage runs end to end in seconds; the figures mean little. */
export const QUICK_OPTIONS: MeshBenchOptions = {
  ...FULL_OPTIONS,
  repetitions: 1,
  bulkSeconds: 0.2,
  rrRate: 200,
  rrSeconds: 0.5,
  connsSeconds: 0.3,
  connsConcurrency: 4,
  connectCount: 50,
  holdCount: 50,
  holdSeconds: 0.5,
  waitForLabsSeconds: 120,
};

export type PathName = 'weft' | 'direct' | 'stunnel' | 'iptables' | 'weft_no_fast_paths';
/** The paths a data-plane workload runs on: weft twice, with its fast paths and without. */
const DATA_PATHS = ['direct', 'stunnel', 'weft', 'weft_no_fast_paths'] as const;
type DataPath = (typeof DATA_PATHS)[number];

/** One row of latest.json: medians; a baseline that does not apply is null. */
export interface Row {
  id: string;
  unit: string;
  higher_is_better: boolean;
  weft: number | null;
  direct: number | null;
  stunnel: number | null;
  iptables: number | null;
}

export interface TargetResult {
  id: string;
  text: string;
  figure: number | null;
  /** The bound the figure is held to (an absolute figure, or ratio × a baseline). */
  bound: number | null;
  met: boolean;
}

export interface MeshBenchResults {
  date: string;
  node: string;
  kernel: string;
  cpus: string;
  cores: number;
  memoryGiB: number;
  stunnel: string;
  options: Omit<MeshBenchOptions, 'resultsDir' | 'print' | 'onProgress'>;
  rows: Row[];
  targets: TargetResult[];
  /** Every repetition's raw figures, by row id and path. */
  samples: Record<string, Partial<Record<PathName, number[]>>>;
  /** What the fast paths buy: weft with them (all) and without (none), same run. */
  fastPaths: FastPathRow[];
}

export interface FastPathRow {
  id: string;
  unit: string;
  higher_is_better: boolean;
  with: number | null;
  without: number | null;
}

/** The ids latest.json always has (the issue's list). */
export const REQUIRED_IDS = [
  'bulk_cross_node_1stream_gbps',
  'bulk_same_node_1stream_gbps',
  'rr_1k_rps_added_p99_us',
  'rr_1k_rps_added_p50_us',
  'new_conns_per_s',
  'agent_cpu_cores_per_1k_rps',
  'agent_rss_mb_1k_conns',
  'capture_connect_us',
] as const;

function median(xs: number[]): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/** Another lab (a test run) holds the relay's port on this machine: wait for it, bounded. */
async function waitForOtherLabs(seconds: number, progress: (m: string) => void): Promise<void> {
  const deadline = Date.now() + seconds * 1000;
  let told = false;
  while (!(await portFree(RELAY_PORT))) {
    if (Date.now() > deadline) throw new Error(`127.0.0.1:${RELAY_PORT} (a lab's relay) is still taken after ${seconds} s: another lab is up`);
    if (!told) progress(`another lab is up (127.0.0.1:${RELAY_PORT} taken): waiting up to ${seconds} s`);
    told = true;
    await sleep(2000);
  }
}

// ---------------------------------------------------------------- processes: CPU and memory

const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

interface Usage {
  /** utime + stime of every process, seconds. */
  cpuSeconds: number;
  rssMiB: number;
}

function usageOf(pids: number[]): Usage {
  let ticks = 0;
  let rssKiB = 0;
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14 and 15 of stat)
      const rss = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
      rssKiB += Number(rss?.[1] ?? 0);
    } catch {
      /* exited */
    }
  }
  return { cpuSeconds: ticks / CLK_TCK, rssMiB: rssKiB / 1024 };
}

function cgroupPids(cgroup: string): number[] {
  return readFileSync(join(cgroup, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
}

/** The processes whose cost a path adds: each node's agent (weft) or each end's stunnel. */
type Meters = Array<{ name: string; pids: () => number[] }>;

function sample(meters: Meters): Usage[] {
  return meters.map((m) => usageOf(m.pids()));
}

// ---------------------------------------------------------------- the pods' side

interface Endpoint {
  client: string;
  /** host:port per server ('a' same node, 'b' across nodes) and port kind. */
  target(server: 'a' | 'b', kind: 'sink' | 'echo'): string;
}

class Bench {
  readonly samples: MeshBenchResults['samples'] = {};
  private readonly stunnels: ChildProcess[] = [];
  private readonly iptablesRules: Array<{ netns: string; rule: string[] }> = [];
  private tmp = '';
  endpoints!: Record<DataPath, Endpoint>;
  private fastPathsOn = true;
  stunnelMeters: Meters = [];
  agentMeters: Meters = [];

  constructor(
    readonly lab: LabHandle,
    readonly o: MeshBenchOptions,
  ) {}

  progress(msg: string): void {
    this.o.onProgress?.(msg);
  }

  record(id: string, path: PathName, value: number): void {
    ((this.samples[id] ??= {})[path] ??= []).push(value);
  }

  async loadgen(pod: string, mode: string, args: Array<string | number>, timeoutMs: number): Promise<Record<string, unknown>> {
    const r = await this.lab.exec(pod, [process.execPath, LOADGEN, mode, ...args.map(String)], { stdio: 'pipe', timeoutMs });
    const line = r.stdout.trim().split('\n').pop() ?? '';
    if (r.code !== 0 || !line.startsWith('{')) throw new Error(`loadgen ${mode} in ${pod} ${args.join(' ')}: exit ${r.code}: ${r.stderr.trim() || r.stdout.trim()}`);
    return JSON.parse(line) as Record<string, unknown>;
  }

  setup(): void {
    const ip = (pod: string): string => this.lab.pod(pod).ip;
    const port = (kind: 'sink' | 'echo'): number => (kind === 'sink' ? SINK : ECHO);
    const weft: Endpoint = { client: 'mesh/client', target: (s, k) => `${ip(`mesh/server-${s}`)}:${port(k)}` };
    this.endpoints = {
      direct: { client: 'plain/client', target: (s, k) => `${ip(`plain/server-${s}`)}:${port(k)}` },
      stunnel: { client: 'plain/client', target: (s, k) => `127.0.0.1:${STUNNEL_LOCAL[`${s}-${k}`]}` },
      weft,
      // The same pods, with the agents' fast paths switched off (useFastPaths).
      weft_no_fast_paths: weft,
    };
    // Many short connections per run on every path: let the clients reuse their TIME_WAIT ports.
    for (const client of ['plain/client', 'mesh/client']) execFileSync('ip', ['netns', 'exec', this.lab.pod(client).netns, 'sysctl', '-qw', 'net.ipv4.tcp_tw_reuse=1']);
    this.agentMeters = this.lab.nodes.map((n) => ({ name: `agent ${n.name}`, pids: () => cgroupPids(n.agentCgroup) }));
  }

  /** Both agents' fast paths, switched at run time through their admin API (new connections). */
  async useFastPaths(path: DataPath): Promise<void> {
    const on = path !== 'weft_no_fast_paths';
    if (on === this.fastPathsOn) return;
    for (const n of this.lab.nodes) await agentAdminPost(n.netnsPath, `/fast_paths?set=${on ? 'all' : 'none'}`);
    this.fastPathsOn = on;
  }

  /** Bytes the kernel carried around node-a's proxies so far (same-node splice). */
  async splicedBytes(): Promise<number> {
    const s = await agentAdminGet<{ proxies: Record<string, { spliced?: { bytes: number } }> }>(this.lab.node('node-a').netnsPath, '/stats/capture');
    return Object.values(s.proxies).reduce((a, p) => a + (p.spliced?.bytes ?? 0), 0);
  }

  // ------------------------------------------------------------ stunnel

  /** CA, server and client certificates (RSA 2048, as weft's), stunnel configs, the processes. */
  async startStunnel(): Promise<void> {
    this.tmp = mkdtempSync(join(tmpdir(), 'weft-bench-stunnel-'));
    const t = (f: string): string => join(this.tmp, f);
    const ssl = (args: string[]): Promise<unknown> => run('openssl', args, { cwd: this.tmp });
    await ssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=weft bench CA']);
    for (const who of ['server', 'client']) {
      await ssl(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${who}.key`, '-out', `${who}.csr`, '-subj', `/CN=${who}`]);
      await ssl(['x509', '-req', '-in', `${who}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-out', `${who}.crt`]);
    }
    const common = (who: string): string[] => [
      `cert = ${t(`${who}.crt`)}`,
      `key = ${t(`${who}.key`)}`,
      `CAfile = ${t('ca.crt')}`,
      'verifyChain = yes',
      'requireCert = yes',
      'sslVersionMin = TLSv1.3',
    ];
    const global = ['foreground = yes', 'pid =', 'debug = 3', 'socket = l:TCP_NODELAY=1', 'socket = r:TCP_NODELAY=1'];
    const serverConf = [...global];
    for (const kind of ['sink', 'echo'] as const) {
      serverConf.push(`[${kind}]`, `accept = 0.0.0.0:${STUNNEL_TLS[kind]}`, `connect = 127.0.0.1:${kind === 'sink' ? SINK : ECHO}`, ...common('server'));
    }
    const clientConf = [...global];
    for (const [name, local] of Object.entries(STUNNEL_LOCAL)) {
      const [server, kind] = name.split('-') as ['a' | 'b', 'sink' | 'echo'];
      clientConf.push(`[${name}]`, 'client = yes', `accept = 127.0.0.1:${local}`, `connect = ${this.lab.pod(`plain/server-${server}`).ip}:${STUNNEL_TLS[kind]}`, ...common('client'));
    }
    writeFileSync(t('server.conf'), serverConf.join('\n') + '\n');
    writeFileSync(t('client.conf'), clientConf.join('\n') + '\n');
    const ends: Array<[string, string, number[]]> = [
      ['plain/server-a', 'server.conf', Object.values(STUNNEL_TLS)],
      ['plain/server-b', 'server.conf', Object.values(STUNNEL_TLS)],
      ['plain/client', 'client.conf', Object.values(STUNNEL_LOCAL)],
    ];
    for (const [pod, conf, ports] of ends) {
      const p = this.lab.pod(pod);
      const log = openSync(t(`${pod.replace('/', '_')}.log`), 'a');
      // In the pod's cgroup and netns, as its containers are; one thread per connection needs fds.
      const child = spawn('sh', ['-c', `echo $$ > "$1/cgroup.procs" && ulimit -n "$(ulimit -Hn)" && exec ip netns exec "$2" stunnel "$3"`, 'sh', p.cgroup, p.netns, t(conf)], {
        stdio: ['ignore', log, log],
      });
      closeSync(log);
      this.stunnels.push(child);
      await this.waitListening(p.netns, ports, child, t(`${pod.replace('/', '_')}.log`));
    }
    const pid = (i: number): number[] => (this.stunnels[i]?.pid && this.stunnels[i]?.exitCode === null ? [this.stunnels[i]!.pid!] : []);
    // The tunnel's two ends on the paths measured: the client's (node-a) and server-b's (node-b).
    this.stunnelMeters = [
      { name: 'stunnel client (node-a)', pids: () => pid(2) },
      { name: 'stunnel server-b (node-b)', pids: () => pid(1) },
    ];
  }

  private async waitListening(netns: string, ports: number[], child: ChildProcess, log: string): Promise<void> {
    for (let i = 0; i < 100; i++) {
      if (child.exitCode !== null) throw new Error(`stunnel in ${netns} exited ${child.exitCode}: ${readFileSync(log, 'utf8').trim()}`);
      const { stdout } = await run('ip', ['netns', 'exec', netns, 'ss', '-Hltn']);
      if (ports.every((p) => stdout.includes(`:${p} `))) return;
      await sleep(100);
    }
    throw new Error(`stunnel in ${netns} is not listening on ${ports.join(', ')} after 10 s`);
  }

  // ------------------------------------------------------------ cleanup

  async cleanup(): Promise<void> {
    for (const r of this.iptablesRules.splice(0)) {
      await run('ip', ['netns', 'exec', r.netns, 'iptables', '-t', 'nat', '-D', ...r.rule]).catch(() => undefined);
    }
    for (const c of this.stunnels.splice(0)) {
      if (c.exitCode !== null || c.signalCode !== null) continue;
      const exited = new Promise((r) => c.once('exit', r));
      c.kill('SIGTERM');
      await Promise.race([exited, sleep(5000)]);
      if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    }
    if (this.tmp) rmSync(this.tmp, { recursive: true, force: true });
  }

  // ------------------------------------------------------------ (a) bulk

  async bulk(): Promise<void> {
    const o = this.o;
    for (let rep = 0; rep < o.repetitions; rep++) {
      for (const [where, server] of [['cross_node', 'b'], ['same_node', 'a']] as const) {
        for (const streams of [1, 8]) {
          for (const path of DATA_PATHS) {
            const e = this.endpoints[path];
            await this.useFastPaths(path);
            const spliced0 = path === 'weft' && where === 'same_node' ? await this.splicedBytes() : 0;
            const r = await this.loadgen(e.client, 'bulk', ['--target', e.target(server, 'sink'), '--streams', streams, '--seconds', o.bulkSeconds], o.bulkSeconds * 1000 + 60_000);
            const id = `bulk_${where}_${streams === 1 ? '1stream' : `${streams}streams`}_gbps`;
            this.record(id, path, r.gbps as number);
            let share = '';
            if (path === 'weft' && where === 'same_node') {
              // Bytes acknowledged by the sink that went around the proxy (sk_msg redirect).
              const fraction = Math.min(1, ((await this.splicedBytes()) - spliced0) / (r.bytes as number));
              this.record(`${id}:spliced_fraction`, path, fraction);
              share = `, ${(fraction * 100).toFixed(0)}% spliced`;
            }
            this.progress(`bulk ${where} ${streams} stream(s) ${path}: ${(r.gbps as number).toFixed(2)} Gbit/s${share} (rep ${rep + 1})`);
          }
        }
      }
    }
  }

  // ------------------------------------------------------------ (b) request/response, (d) CPU per 1k rps

  async rr(): Promise<void> {
    const o = this.o;
    for (let rep = 0; rep < o.repetitions; rep++) {
      for (const path of DATA_PATHS) {
        const e = this.endpoints[path];
        await this.useFastPaths(path);
        const meters = path === 'weft' || path === 'weft_no_fast_paths' ? this.agentMeters : path === 'stunnel' ? this.stunnelMeters : [];
        const before = sample(meters);
        const r = await this.loadgen(e.client, 'rr', ['--target', e.target('b', 'echo'), '--rate', o.rrRate, '--conns', o.rrConns, '--seconds', o.rrSeconds], o.rrSeconds * 1000 + 60_000);
        const after = sample(meters);
        if ((r.lost as number) > 0) throw new Error(`rr ${path}: ${r.lost as number} of ${r.sent as number} requests unanswered`);
        for (const p of ['p50', 'p90', 'p99'] as const) this.record(`rr_1k_rps_${p}_us`, path, r[`${p}_us`] as number);
        this.record('rr_1k_rps_achieved_rps', path, r.achieved_rps as number);
        if (meters.length) {
          // CPU seconds per 1,000 requests = cores per 1,000 rps; the busier process of the pair.
          const per1k = Math.max(...meters.map((_, i) => ((after[i]!.cpuSeconds - before[i]!.cpuSeconds) * 1000) / (r.completed as number)));
          this.record('agent_cpu_cores_per_1k_rps', path, per1k);
          meters.forEach((m, i) => this.record(`cpu_per_1k_rps:${m.name}`, path, ((after[i]!.cpuSeconds - before[i]!.cpuSeconds) * 1000) / (r.completed as number)));
        }
        this.progress(`rr ${o.rrRate}/s ${path}: p50 ${r.p50_us as number} µs, p99 ${r.p99_us as number} µs (rep ${rep + 1})`);
      }
    }
  }

  // ------------------------------------------------------------ (c) new connections

  async conns(): Promise<void> {
    const o = this.o;
    for (let rep = 0; rep < o.repetitions; rep++) {
      for (const [id, server] of [['new_conns_per_s', 'a'], ['new_conns_cross_node_per_s', 'b']] as const) {
        for (const path of DATA_PATHS) {
          const e = this.endpoints[path];
          await this.useFastPaths(path);
          const r = await this.loadgen(e.client, 'conns', ['--target', e.target(server, 'echo'), '--concurrency', o.connsConcurrency, '--seconds', o.connsSeconds], o.connsSeconds * 1000 + 60_000);
          const errors = r.errors as Record<string, number>;
          if (Object.keys(errors).length) this.progress(`  ${path} connection errors: ${JSON.stringify(errors)}`);
          this.record(id, path, r.conns_per_s as number);
          this.progress(`${id} ${path}: ${Math.round(r.conns_per_s as number)}/s (rep ${rep + 1})`);
          await sleep(Math.min(500, o.connsSeconds * 250)); // let the closed connections' state settle
        }
      }
    }
  }

  // ------------------------------------------------------------ (d) memory with 1,000 idle connections

  async hold(): Promise<void> {
    const o = this.o;
    for (let rep = 0; rep < o.repetitions; rep++) {
      for (const path of ['stunnel', 'weft'] as const) {
        const e = this.endpoints[path];
        const meters = path === 'weft' ? this.agentMeters : this.stunnelMeters;
        const idle = sample(meters);
        this.record('agent_rss_mb_no_conns', path, Math.max(...idle.map((u) => u.rssMiB)));
        const p = this.lab.pod(e.client);
        const child = spawn('sh', ['-c', `echo $$ > "$1/cgroup.procs" && exec ip netns exec "$2" "$3" "$4" hold --target "$5" --count "$6" --seconds 120`, 'sh', p.cgroup, p.netns, process.execPath, LOADGEN, e.target('b', 'echo'), String(o.holdCount)], {
          stdio: ['pipe', 'pipe', 'pipe'],
        });
        try {
          let output = '';
          let errors = '';
          child.stderr.setEncoding('utf8').on('data', (d: string) => (errors += d));
          await new Promise<void>((resolve, reject) => {
            const timer = setTimeout(() => reject(new Error(`hold ${path}: ${o.holdCount} connections not open after 60 s`)), 60_000);
            child.stdout.setEncoding('utf8').on('data', (d: string) => {
              output += d;
              if (output.includes('"held"')) {
                clearTimeout(timer);
                resolve();
              }
            });
            child.once('exit', (code) => {
              clearTimeout(timer);
              reject(new Error(`hold ${path} exited ${code}: ${errors.trim() || output.trim()}`));
            });
          });
          await sleep(Math.min(1000, o.holdSeconds * 1000)); // settle: the proxies' buffers and pools are in place
          const start = sample(meters);
          const t0 = performance.now();
          await sleep(o.holdSeconds * 1000);
          const end = sample(meters);
          const wall = (performance.now() - t0) / 1000;
          this.record('agent_rss_mb_1k_conns', path, Math.max(...end.map((u) => u.rssMiB)));
          this.record('agent_cpu_cores_1k_idle_conns', path, Math.max(...meters.map((_, i) => (end[i]!.cpuSeconds - start[i]!.cpuSeconds) / wall)));
          meters.forEach((m, i) => this.record(`rss_1k_conns:${m.name}`, path, end[i]!.rssMiB));
          this.progress(`hold ${o.holdCount} ${path}: RSS ${end.map((u, i) => `${meters[i]!.name} ${u.rssMiB.toFixed(1)} MiB`).join(', ')} (rep ${rep + 1})`);
        } finally {
          const exited = new Promise((r) => child.once('exit', r));
          child.stdin.end();
          await Promise.race([exited, sleep(10_000)]);
          if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
        }
        await sleep(Math.min(1000, o.holdSeconds * 1000));
      }
    }
  }

  // ------------------------------------------------------------ (e) the cost of capture

  async capture(): Promise<void> {
    const o = this.o;
    const plain = this.lab.pod('plain/client');
    // Through NAT to a local listener: the destination is server-b's echo, as for the weft pod.
    const rule = ['OUTPUT', '-p', 'tcp', '-d', this.lab.pod('plain/server-b').ip, '--dport', String(ECHO), '-j', 'REDIRECT', '--to-ports', String(REDIRECT_PORT)];
    await run('ip', ['netns', 'exec', plain.netns, 'iptables', '-t', 'nat', '-A', ...rule]);
    this.iptablesRules.push({ netns: plain.netns, rule });
    try {
      for (let rep = 0; rep < o.repetitions; rep++) {
        const runs: Array<[PathName, string, Array<string | number>]> = [
          ['direct', 'plain/client', ['--target', `127.0.0.1:${REDIRECT_PORT}`, '--listen', REDIRECT_PORT]],
          ['iptables', 'plain/client', ['--target', this.endpoints.direct.target('b', 'echo'), '--listen', REDIRECT_PORT]],
          ['weft', 'mesh/client', ['--target', this.endpoints.weft.target('b', 'echo')]],
        ];
        for (const [path, pod, args] of runs) {
          const r = await this.loadgen(pod, 'connect', [...args, '--count', o.connectCount], 120_000);
          if (Object.keys(r.errors as object).length) throw new Error(`connect ${path}: ${JSON.stringify(r.errors)}`);
          this.record('capture_connect_us', path, r.p50_us as number);
          this.record('capture_connect_p99_us', path, r.p99_us as number);
          this.progress(`connect() ${path}: p50 ${r.p50_us as number} µs, p99 ${r.p99_us as number} µs (rep ${rep + 1})`);
        }
      }
    } finally {
      await run('ip', ['netns', 'exec', plain.netns, 'iptables', '-t', 'nat', '-D', ...rule]).catch(() => undefined);
      this.iptablesRules.splice(0);
    }
  }

  /** Short unmeasured bulk and rr runs per path: pools, certificates, JIT (smoke sizes: rr only). */
  async warmUp(): Promise<void> {
    const quick = this.o.repetitions === 1 && this.o.bulkSeconds < 1;
    for (const path of ['direct', 'stunnel', 'weft'] as const) {
      const e = this.endpoints[path];
      for (const server of quick ? (['b'] as const) : (['a', 'b'] as const)) {
        if (!quick) await this.loadgen(e.client, 'bulk', ['--target', e.target(server, 'sink'), '--streams', 2, '--seconds', 0.5], 60_000);
        await this.loadgen(e.client, 'rr', ['--target', e.target(server, 'echo'), '--rate', 200, '--conns', 2, '--seconds', 0.3], 60_000);
      }
    }
  }
}

// ---------------------------------------------------------------- rows, targets, output

interface RowSpec {
  id: string;
  unit: string;
  higher: boolean;
  what: string;
}

const ROWS: RowSpec[] = [
  { id: 'bulk_cross_node_1stream_gbps', unit: 'Gbit/s', higher: true, what: 'bulk, 1 stream, across nodes' },
  { id: 'bulk_cross_node_8streams_gbps', unit: 'Gbit/s', higher: true, what: 'bulk, 8 streams, across nodes' },
  { id: 'bulk_same_node_1stream_gbps', unit: 'Gbit/s', higher: true, what: 'bulk, 1 stream, same node' },
  { id: 'bulk_same_node_8streams_gbps', unit: 'Gbit/s', higher: true, what: 'bulk, 8 streams, same node' },
  { id: 'rr_1k_rps_p50_us', unit: 'µs', higher: false, what: 'request/response p50' },
  { id: 'rr_1k_rps_p90_us', unit: 'µs', higher: false, what: 'request/response p90' },
  { id: 'rr_1k_rps_p99_us', unit: 'µs', higher: false, what: 'request/response p99' },
  { id: 'rr_1k_rps_added_p50_us', unit: 'µs', higher: false, what: 'added over direct, p50' },
  { id: 'rr_1k_rps_added_p90_us', unit: 'µs', higher: false, what: 'added over direct, p90' },
  { id: 'rr_1k_rps_added_p99_us', unit: 'µs', higher: false, what: 'added over direct, p99' },
  { id: 'rr_1k_rps_achieved_rps', unit: 'req/s', higher: true, what: 'request/response rate achieved' },
  { id: 'new_conns_per_s', unit: 'conn/s', higher: true, what: 'new connections, same node (one node)' },
  { id: 'new_conns_cross_node_per_s', unit: 'conn/s', higher: true, what: 'new connections, across nodes' },
  { id: 'agent_cpu_cores_per_1k_rps', unit: 'cores', higher: false, what: 'CPU per 1,000 rps (busier end)' },
  { id: 'agent_rss_mb_no_conns', unit: 'MiB', higher: false, what: 'RSS before opening the 1,000 (after the workloads above; larger end)' },
  { id: 'agent_rss_mb_1k_conns', unit: 'MiB', higher: false, what: 'RSS, 1,000 idle connections (larger end)' },
  { id: 'agent_cpu_cores_1k_idle_conns', unit: 'cores', higher: false, what: 'CPU, 1,000 idle connections (busier end)' },
  { id: 'capture_connect_us', unit: 'µs', higher: false, what: 'connect() latency p50 (weft = eBPF)' },
  { id: 'capture_connect_p99_us', unit: 'µs', higher: false, what: 'connect() latency p99 (weft = eBPF)' },
];

const PATHS = ['weft', 'direct', 'stunnel', 'iptables'] as const;

/** The rows where the fast paths can make a difference: same node (splice), across nodes (hbone). */
const FAST_PATH_IDS = [
  'bulk_same_node_1stream_gbps',
  'bulk_same_node_8streams_gbps',
  'new_conns_per_s',
  'bulk_cross_node_1stream_gbps',
  'bulk_cross_node_8streams_gbps',
  'rr_1k_rps_p50_us',
  'rr_1k_rps_p99_us',
  'new_conns_cross_node_per_s',
  'agent_cpu_cores_per_1k_rps',
];

function buildFastPathRows(samples: MeshBenchResults['samples']): FastPathRow[] {
  return FAST_PATH_IDS.map((id) => {
    const spec = ROWS.find((r) => r.id === id)!;
    return { id, unit: spec.unit, higher_is_better: spec.higher, with: median(samples[id]?.weft ?? []), without: median(samples[id]?.weft_no_fast_paths ?? []) };
  });
}

function buildRows(samples: MeshBenchResults['samples']): Row[] {
  const med = (id: string, p: PathName): number | null => median(samples[id]?.[p] ?? []);
  const rows = ROWS.map((spec): Row => {
    const row: Row = { id: spec.id, unit: spec.unit, higher_is_better: spec.higher, weft: null, direct: null, stunnel: null, iptables: null };
    const added = /^rr_1k_rps_added_(p\d+)_us$/.exec(spec.id);
    for (const p of PATHS) {
      if (added) {
        const base = med(`rr_1k_rps_${added[1]}_us`, 'direct');
        const v = med(`rr_1k_rps_${added[1]}_us`, p);
        row[p] = p === 'iptables' || v === null || base === null ? null : v - base;
      } else {
        row[p] = med(spec.id, p);
      }
    }
    return row;
  });
  return rows;
}

function buildTargets(rows: Row[]): TargetResult[] {
  const row = (id: string): Row => rows.find((r) => r.id === id)!;
  const atLeast = (id: string, text: string, figure: number | null, bound: number | null): TargetResult => ({
    id,
    text,
    figure,
    bound,
    met: figure !== null && bound !== null && figure >= bound,
  });
  const atMost = (id: string, text: string, figure: number | null, bound: number | null): TargetResult => ({
    id,
    text,
    figure,
    bound,
    met: figure !== null && bound !== null && figure <= bound,
  });
  const times = (v: number | null, k: number): number | null => (v === null ? null : v * k);
  return [
    atLeast('bulk_cross_node_1stream_gbps', 'cross-node bulk, 1 stream: weft ≥ 1.0 × stunnel', row('bulk_cross_node_1stream_gbps').weft, row('bulk_cross_node_1stream_gbps').stunnel),
    atLeast('bulk_same_node_1stream_gbps', 'same-node bulk, 1 stream: weft ≥ 0.9 × direct', row('bulk_same_node_1stream_gbps').weft, times(row('bulk_same_node_1stream_gbps').direct, 0.9)),
    atMost('rr_1k_rps_added_p99_us', "added p99 at 1,000 rps: weft ≤ stunnel's", row('rr_1k_rps_added_p99_us').weft, row('rr_1k_rps_added_p99_us').stunnel),
    atLeast('new_conns_per_s', 'new connections through one node ≥ 5,000/s', row('new_conns_per_s').weft, 5000),
    atMost('agent_cpu_cores_per_1k_rps', 'agent CPU ≤ 0.1 core per 1,000 rps', row('agent_cpu_cores_per_1k_rps').weft, 0.1),
    atMost('agent_rss_mb_1k_conns', 'agent RSS ≤ 100 MB with 1,000 open connections', row('agent_rss_mb_1k_conns').weft, 100),
  ];
}

function fmt(v: number | null, unit?: string): string {
  if (v === null) return '–';
  const digits = unit === 'cores' ? 3 : unit === 'Gbit/s' ? 2 : Math.abs(v) >= 100 ? 0 : 1;
  return v.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function ratio(a: number | null, b: number | null): string {
  if (a === null || b === null || b === 0) return '–';
  return `${(a / b).toFixed(2)}×`;
}

export function renderMarkdown(r: MeshBenchResults): string {
  const o = r.options;
  const lines = [
    '# Mesh benchmark',
    '',
    `${r.date} · node ${process.version} · ${r.cores} × ${r.cpus} · ${r.memoryGiB.toFixed(1)} GiB · Linux ${r.kernel} · ${r.stunnel}`,
    '',
    `Medians of ${o.repetitions} repetitions, interleaved across paths. Bulk ${o.bulkSeconds} s per run; request/response ${o.rrRate.toLocaleString('en-US')} rps of 1 KB each way over ${o.rrConns} connections for ${o.rrSeconds} s (open loop, latency from the scheduled send time); new connections ${o.connsConcurrency} at a time for ${o.connsSeconds} s; ${o.holdCount.toLocaleString('en-US')} idle connections; ${o.connectCount.toLocaleString('en-US')} connect() calls one at a time.`,
    '',
    '| id | what | unit | weft | direct | stunnel | iptables | weft/direct | weft/stunnel |',
    '|---|---|---|---:|---:|---:|---:|---:|---:|',
  ];
  for (const row of r.rows) {
    const what = ROWS.find((s) => s.id === row.id)?.what ?? '';
    const ratios = row.id.includes('_added_') ? ['–', ratio(row.weft, row.stunnel)] : [ratio(row.weft, row.direct), ratio(row.weft, row.stunnel)];
    lines.push(`| \`${row.id}\` | ${what} | ${row.unit} | ${fmt(row.weft, row.unit)} | ${fmt(row.direct, row.unit)} | ${fmt(row.stunnel, row.unit)} | ${fmt(row.iptables, row.unit)} | ${ratios.join(' | ')} |`);
  }
  lines.push('', '## What the fast paths buy', '', 'weft as above, and the same agents with `POST /fast_paths?set=none` (interleaved in the same repetitions). Same node: the splice (local hand-off and sk_msg redirect); across nodes: the HBONE tuning.', '');
  lines.push('| id | unit | with | without | with/without |', '|---|---|---:|---:|---:|');
  for (const f of r.fastPaths) lines.push(`| \`${f.id}\` | ${f.unit} | ${fmt(f.with, f.unit)} | ${fmt(f.without, f.unit)} | ${ratio(f.with, f.without)} |`);
  const share = (id: string): string => {
    const v = median(r.samples[`${id}:spliced_fraction`]?.weft ?? []);
    return v === null ? '–' : `${(v * 100).toFixed(0)}%`;
  };
  lines.push('', `Share of the same-node bulk bytes that went around the proxy: 1 stream ${share('bulk_same_node_1stream_gbps')}, 8 streams ${share('bulk_same_node_8streams_gbps')} (median).`);
  lines.push('', '## Targets', '', '| target | figure | bound | |', '|---|---:|---:|---|');
  for (const t of r.targets) {
    const unit = r.rows.find((x) => x.id === t.id)?.unit;
    lines.push(`| ${t.text} | ${fmt(t.figure, unit)} | ${fmt(t.bound, unit)} | ${t.met ? 'met' : '**MISSED**'} |`);
  }
  lines.push(
    '',
    'weft: enrolled pods (eBPF capture, the node proxies, HBONE mTLS between nodes). direct: the same workload between un-enrolled pods. stunnel: a stunnel client in the client pod (127.0.0.1) and a stunnel server in the server pod, TLS 1.3 with client certificates. iptables: `REDIRECT` in the client pod netns to a local listener (capture cost only; direct there is connect() to the same listener without capture).',
    'CPU and RSS: the agents of both nodes (weft) or both stunnel ends, summed over their processes; the figure is the busier (larger) of the two.',
  );
  return lines.join('\n') + '\n';
}

function renderTable(r: MeshBenchResults): string {
  const head = ['id', 'weft', 'direct', 'stunnel', 'iptables', 'w/direct', 'w/stunnel'];
  const body = r.rows.map((row) => [row.id, fmt(row.weft, row.unit), fmt(row.direct, row.unit), fmt(row.stunnel, row.unit), fmt(row.iptables, row.unit), row.id.includes('_added_') ? '–' : ratio(row.weft, row.direct), ratio(row.weft, row.stunnel)]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  const out = [line(head), ...body.map(line), ''];
  for (const f of r.fastPaths) out.push(`fast paths ${f.id}: ${fmt(f.with, f.unit)} with, ${fmt(f.without, f.unit)} without (${ratio(f.with, f.without)})`);
  out.push('');
  for (const t of r.targets) {
    const unit = r.rows.find((x) => x.id === t.id)?.unit ?? '';
    out.push(`${t.met ? 'met    ' : 'MISSED '} ${t.text}: ${fmt(t.figure, unit)} ${unit} (bound ${fmt(t.bound, unit)})`);
  }
  return out.join('\n') + '\n';
}

export function writeResults(r: MeshBenchResults, dir: string): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'latest.json'), JSON.stringify(r.rows, null, 2) + '\n');
  writeFileSync(join(dir, 'latest.md'), renderMarkdown(r));
  writeFileSync(join(dir, 'mesh.json'), JSON.stringify(r, null, 2) + '\n');
}

// ---------------------------------------------------------------- the run

export async function runMeshBench(opts: Partial<MeshBenchOptions> = {}): Promise<MeshBenchResults> {
  const o: MeshBenchOptions = { ...FULL_OPTIONS, ...opts };
  if (!existsSync(LOADGEN)) throw new Error(`${LOADGEN} is missing`);
  const progress = o.onProgress ?? (() => undefined);
  // stunnel -version prints to stderr (and exits non-zero on some builds).
  const versionOut = spawnSync('stunnel', ['-version'], { encoding: 'utf8' });
  const stunnelVersion = `${versionOut.stdout}${versionOut.stderr}`.split('\n').find((l) => l.startsWith('stunnel '))?.trim() ?? 'stunnel';
  // A lab of this name left by an interrupted run is ours: remove it first.
  await labDown({ name: o.labName });
  await waitForOtherLabs(o.waitForLabsSeconds, progress);
  progress(`lab ${o.labName}: ${LAB_FILE}`);
  let lab: LabHandle | undefined;
  let bench: Bench | undefined;
  const onSignal = (): void => {
    progress('interrupted: cleaning up');
    void (bench?.cleanup() ?? Promise.resolve())
      .then(() => labDown({ name: o.labName }))
      .finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    lab = await labUp([LAB_FILE], { name: o.labName, onProgress: (m) => progress(`  · ${m}`) });
    bench = new Bench(lab, o);
    bench.setup();
    progress('stunnel: CA, certificates, client in plain/client, servers in plain/server-a and plain/server-b');
    await bench.startStunnel();
    const phases: Array<[string, () => Promise<void>]> = [
      ['warm-up', () => bench!.warmUp()],
      ['(a) bulk throughput', () => bench!.bulk()],
      ['(b) request/response at a fixed rate, (d) CPU per 1,000 rps', () => bench!.rr()],
      ['(c) new connections', () => bench!.conns()],
      ['fast paths back on', () => bench!.useFastPaths('weft')],
      ['(d) RSS and CPU with idle connections', () => bench!.hold()],
      ['(e) connect() under eBPF capture and iptables REDIRECT', () => bench!.capture()],
    ];
    for (const [name, phase] of phases) {
      const t0 = Date.now();
      progress(`== ${name}`);
      await phase();
      progress(`   (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
    }
    const rows = buildRows(bench.samples);
    const results: MeshBenchResults = {
      date: new Date().toISOString(),
      node: process.version,
      kernel: execFileSync('uname', ['-r'], { encoding: 'utf8' }).trim(),
      cpus: (cpus()[0]?.model ?? 'unknown').replace(/\s+\d+-Core Processor$/, '').trim(),
      cores: cpus().length,
      memoryGiB: totalmem() / 2 ** 30,
      stunnel: stunnelVersion,
      options: {
        labName: o.labName,
        repetitions: o.repetitions,
        bulkSeconds: o.bulkSeconds,
        rrRate: o.rrRate,
        rrConns: o.rrConns,
        rrSeconds: o.rrSeconds,
        connsSeconds: o.connsSeconds,
        connsConcurrency: o.connsConcurrency,
        connectCount: o.connectCount,
        holdCount: o.holdCount,
        holdSeconds: o.holdSeconds,
        waitForLabsSeconds: o.waitForLabsSeconds,
      },
      rows,
      targets: buildTargets(rows),
      samples: bench.samples,
      fastPaths: buildFastPathRows(bench.samples),
    };
    if (o.resultsDir) writeResults(results, o.resultsDir);
    if (o.print) process.stdout.write(renderTable(results));
    return results;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await bench?.cleanup();
    progress(`lab ${o.labName}: down`);
    await labDown({ name: o.labName });
  }
}

/** Command line: `--quick` (smoke sizes; results written only with --out), `--out DIR`. */
export function optionsFromArgv(argv: readonly string[]): MeshBenchOptions {
  const quick = argv.includes('--quick');
  const i = argv.indexOf('--out');
  const out = i >= 0 ? argv[i + 1] : undefined;
  return { ...(quick ? QUICK_OPTIONS : FULL_OPTIONS), resultsDir: out ?? (quick ? undefined : DEFAULT_RESULTS_DIR), onProgress: (m) => process.stderr.write(`${m}\n`) };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  runMeshBench(optionsFromArgv(process.argv.slice(2))).then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exit(1);
    },
  );
}
