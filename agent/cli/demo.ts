// `weft demo` — the newcomer's tour on one Linux box: bring up the example lab (two nodes, an enrolled
// namespace and one that is not), send traffic that the eBPF capture steers into the node proxies,
// print each proxied connection as it completes, summarise what the datapath saw, and tear down.
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { labDown, labUp, type LabHandle } from '../lab/index.js';
import { REPO_ROOT } from '../lab/lb.js';
import { agentAdminGet } from '../node/admin-client.js';
import type { CaptureStats } from '../datapath/events.js';
import { formatStatus } from './lab.js';

const LAB_NAME = 'weft-demo';

interface AccessLine {
  time: string;
  msg: string;
  pod?: string;
  direction?: string;
  src?: string;
  dst?: string;
  endpoint?: string;
  service?: string;
  dstWorkload?: string;
  bytesSent?: number;
  bytesReceived?: number;
  err?: string;
}

const colour = process.stdout.isTTY && !process.env.NO_COLOR;
const paint = (code: number, text: string): string => (colour ? `\x1b[${code}m${text}\x1b[0m` : text);

/** Reads the access-log lines the agents wrote since the last call. */
class AgentLogReader {
  private readonly offsets = new Map<string, number>();
  constructor(private readonly logs: Record<string, string>) {
    for (const file of Object.values(logs)) this.offsets.set(file, statSync(file).size);
  }
  drain(): Array<AccessLine & { node: string }> {
    const out: Array<AccessLine & { node: string }> = [];
    for (const [node, file] of Object.entries(this.logs)) {
      const text = readFileSync(file);
      const from = this.offsets.get(file) ?? 0;
      this.offsets.set(file, text.length);
      for (const line of text.subarray(from).toString().split('\n')) {
        if (!line.startsWith('{')) continue;
        const entry = JSON.parse(line) as AccessLine;
        if (entry.msg === 'connection complete' || entry.msg === 'upstream connect failed') out.push({ ...entry, node });
      }
    }
    return out.sort((a, b) => a.time.localeCompare(b.time));
  }
}

function compact(e: AccessLine & { node: string }, lab: LabHandle): string {
  const who = (addr: string | undefined): string => {
    const ip = addr?.replace(/:\d+$/, '') ?? '?';
    const pod = Object.values(lab.state.pods).find((p) => p.ip === ip);
    return pod ? `${pod.namespace}/${pod.name}:${addr?.split(':').pop()}` : (addr ?? '?');
  };
  const src = e.direction === 'outbound' ? `${e.pod}` : who(e.src);
  const dst = e.service ? `${e.service} (${e.dst} → ${who(e.endpoint)})` : who(e.dst);
  const verdict = e.msg === 'connection complete' && !e.err ? paint(32, 'FORWARDED') : paint(31, 'ERROR');
  const bytes = e.bytesSent !== undefined ? ` ${e.bytesSent}B → ${e.bytesReceived}B ←` : '';
  return `${e.time.slice(11, 23)} [${e.node}] ${src} -> ${dst} ${e.direction}-capture ${verdict}${bytes}${e.err ? ` (${e.err})` : ''}`;
}

export async function demoCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { keep: { type: 'boolean', default: false } } });
  const out = (s = ''): boolean => process.stdout.write(s + '\n');
  out(paint(1, '▶ bringing up the example lab (examples/lab.yaml): 2 nodes, namespace "shop" enrolled, "legacy" not'));
  await labDown({ name: LAB_NAME });
  const lab = await labUp([join(REPO_ROOT, 'examples', 'lab.yaml')], { name: LAB_NAME });
  try {
    out(formatStatus(await lab.status()));
    const logs = new AgentLogReader(Object.fromEntries(Object.values(lab.state.nodes).map((n) => [n.name, n.agentLog])));
    const steps: Array<{ what: string; from: string; to: string }> = [
      { what: 'enrolled → enrolled service, across nodes', from: 'shop/frontend', to: 'api.shop:80' },
      { what: 'enrolled → enrolled pod IP, across nodes', from: 'shop/frontend', to: `${lab.pod('shop/db').ip}:5432` },
      { what: 'un-enrolled → enrolled service (inbound capture only)', from: 'legacy/client', to: 'api.shop:80' },
      { what: 'un-enrolled → enrolled, same node', from: 'legacy/client', to: 'frontend.shop:80' },
    ];
    let failures = 0;
    for (const step of steps) {
      out('');
      out(paint(1, `▶ ${step.what}: ${step.from} → ${step.to}`));
      const r = await lab.exec(step.from, ['node', join(REPO_ROOT, 'test', 'fixtures', 'conn-storm.mjs'), '--targets', step.to, '--count', '20'], {
        stdio: 'pipe',
      });
      const summary = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as { ok?: number; failed?: number; byTarget?: Record<string, { peers: Record<string, number> }> };
      if (r.code !== 0) failures++;
      const peers = Object.keys(summary.byTarget?.[step.to]?.peers ?? {}).join(', ');
      out(`  20 connections: ${summary.ok ?? 0} echoed intact, ${summary.failed ?? 20} failed; the server saw the client as ${peers || '?'}`);
      const lines = logs.drain();
      for (const line of lines.slice(0, 4)) out('  ' + compact(line, lab));
      if (lines.length > 4) out(`  … ${lines.length - 4} more proxied connections`);
    }
    out('');
    out(paint(1, '▶ what the datapath saw'));
    for (const node of Object.values(lab.state.nodes)) {
      const s = await agentAdminGet<{ events: CaptureStats }>(node.netnsPath, '/stats/capture');
      const passed = Object.entries(s.events.passed).map(([k, v]) => `${k.toLowerCase()} ${v}`).join(', ') || 'none';
      const refused = Object.values(s.events.refused).reduce((a, b) => a + b, 0);
      out(`  ${node.name}: steered ${s.events.steered.outbound} outbound + ${s.events.steered.inbound} inbound, passed (${passed}), refused ${refused}, ring-buffer losses ${s.events.lost}`);
    }
    out('');
    out('where to look next: `weft lab up -f examples/lab.yaml`, then `weft lab status`, `weft lab logs node-a`,');
    out('`weft lab exec shop/frontend -- node examples/apps/echo-client.mjs api.shop 80`; docs/architecture.md explains the capture.');
    return failures === 0 ? 0 : 1;
  } finally {
    if (values.keep) out(`lab "${LAB_NAME}" kept; remove it with: weft lab down --name ${LAB_NAME}`);
    else {
      await labDown({ name: LAB_NAME });
      out(paint(1, '▶ lab removed'));
    }
  }
}
