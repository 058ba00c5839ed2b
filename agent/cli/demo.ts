// `weft demo` — the newcomer's tour on one Linux box: bring up the example lab (two nodes, an enrolled
// namespace and one that is not, a controller and one agent per node), send traffic that eBPF steers
// into the node proxies and mutual TLS carries between nodes, apply Istio policies, send the same
// traffic again, print every connection's verdict as the proxies logged it, summarise, tear down.
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { labDown, labUp, type LabHandle } from '../lab/index.js';
import { REPO_ROOT } from '../lab/lb.js';
import { agentAdminGet, eventually } from '../node/admin-client.js';
import type { CaptureStats } from '../datapath/events.js';
import { applyPolicies } from './apply.js';
import { formatStatus } from './lab.js';

const LAB_NAME = 'weft-demo';

/** The fields of the agents' access log that the demo shows. */
interface AccessLine {
  time: string;
  msg: string;
  direction?: 'outbound' | 'inbound';
  transport?: string;
  pod?: string;
  src?: string;
  dst?: string;
  endpoint?: string;
  service?: string;
  dstWorkload?: string;
  srcIdentity?: string;
  dstIdentity?: string;
  security?: string;
  reason?: string;
  err?: string;
  bytesSent?: number;
  bytesReceived?: number;
}

const colour = process.stdout.isTTY && !process.env.NO_COLOR;
const paint = (code: number, text: string): string => (colour ? `\x1b[${code}m${text}\x1b[0m` : text);

/** Reads what the agents logged since the last call. */
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
        if (entry.direction) out.push({ ...entry, node });
      }
    }
    return out.sort((a, b) => a.time.localeCompare(b.time));
  }
}

/** One line per connection, in the manner of `hubble observe`: time, source -> destination, verdict. */
function compact(e: AccessLine & { node: string }, lab: LabHandle): string {
  const podAt = (addr: string | undefined): string => {
    const ip = addr?.replace(/^\[|\]?:\d+$/g, '') ?? '?';
    const pod = lab.pods.find((p) => p.ip === ip);
    return pod ? `${pod.namespace}/${pod.name}` : ip;
  };
  const port = (addr: string | undefined): string => addr?.split(':').pop() ?? '?';
  const src = e.direction === 'outbound' ? e.pod : podAt(e.src);
  const dst = e.direction === 'outbound' ? `${e.service ? `${e.service.split('/')[1]}.${e.service.split('/')[0]} → ` : ''}${podAt(e.endpoint)}:${port(e.endpoint)}` : `${e.pod}:${port(e.dst)}`;
  const forwarded = e.msg === 'connection complete' && !e.err;
  const verdict = forwarded ? paint(32, 'FORWARDED') : paint(31, 'DROPPED');
  const detail = forwarded
    ? `${e.security === 'mutual_tls' ? `mTLS ${(e.srcIdentity ?? '').replace(/^spiffe:\/\//, '')} → ${(e.dstIdentity ?? '').replace(/^spiffe:\/\//, '')}` : 'plaintext'}, ${e.bytesSent ?? 0}B ↑ ${e.bytesReceived ?? 0}B ↓`
    : (e.reason ?? e.err ?? e.msg);
  return `${e.time.slice(11, 23)} [${e.node}] ${src} -> ${dst} ${e.direction} ${verdict} (${detail})`;
}

export async function demoCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { keep: { type: 'boolean', default: false } } });
  const out = (s = ''): boolean => process.stdout.write(s + '\n');
  out(paint(1, '▶ bringing up the example lab (examples/lab.yaml): a controller, 2 nodes with an agent each; "shop" enrolled, "legacy" not'));
  await labDown({ name: LAB_NAME });
  const lab = await labUp([join(REPO_ROOT, 'examples', 'lab.yaml')], { name: LAB_NAME });
  const totals = { allowed: 0, denied: 0, bytes: 0, identities: new Set<string>() };
  try {
    out(formatStatus(await lab.status()));
    const logs = new AgentLogReader(Object.fromEntries(lab.nodes.map((n) => [n.name, n.agentLog])));
    const traffic = [
      { what: 'frontend → api (service, across nodes)', from: 'shop/frontend', to: 'api.shop:80' },
      { what: 'frontend → db (service, across nodes)', from: 'shop/frontend', to: 'db.shop:5432' },
      { what: 'api → db (same node)', from: 'shop/api', to: 'db.shop:5432' },
      { what: 'legacy/client (not in the mesh) → api', from: 'legacy/client', to: 'api.shop:80' },
    ];
    const round = async (title: string): Promise<void> => {
      out('');
      out(paint(1, `▶ ${title}`));
      for (const step of traffic) {
        const r = await lab.exec(step.from, ['node', join(REPO_ROOT, 'test', 'fixtures', 'conn-storm.mjs'), '--targets', step.to, '--count', '5', '--timeout', '3000'], { stdio: 'pipe' });
        const summary = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as { ok?: number; failed?: number };
        out(`  ${step.what}: ${summary.ok ?? 0} of 5 connections echoed, ${summary.failed ?? 5} refused`);
      }
      // The proxies log each connection as it ends; the last of them may lag the clients slightly.
      const lines = await eventually('the proxies to log the round', async () => {
        const got = logs.drain();
        return got.length ? got : undefined;
      });
      await new Promise((r) => setTimeout(r, 200));
      lines.push(...logs.drain());
      for (const e of lines) {
        if (e.msg === 'connection complete' && !e.err) {
          if (e.direction === 'inbound') totals.allowed++;
          totals.bytes += (e.bytesSent ?? 0) + (e.bytesReceived ?? 0);
          for (const id of [e.srcIdentity, e.dstIdentity]) if (id && e.security === 'mutual_tls') totals.identities.add(id);
        } else if (e.direction === 'inbound' && e.msg.includes('denied')) totals.denied++;
      }
      const shown = new Set<string>();
      for (const e of lines) {
        const line = compact(e, lab);
        const key = line.slice(13);
        if (shown.has(key)) continue;
        shown.add(key);
        out('  ' + line);
      }
    };

    await round('no policies yet: every path is open, and enrolled pods already talk mutual TLS over HBONE');

    out('');
    out(paint(1, '▶ weft apply -f examples/policies.yaml   (STRICT mTLS in shop; api ← frontend only; db ← api only)'));
    const keys = applyPolicies([join(REPO_ROOT, 'examples', 'policies.yaml')], LAB_NAME);
    for (const k of keys) out(`  ${k} applied`);
    for (const node of lab.nodes) {
      await eventually(`policies on ${node.name}`, async () => {
        const d = await agentAdminGet<{ policies: { authorization: string[]; peerAuthentication: string[] } }>(node.netnsPath, '/config_dump');
        return d.policies.authorization.length + d.policies.peerAuthentication.length >= keys.length ? true : undefined;
      });
    }

    await round('the same traffic under the policies');

    out('');
    out(paint(1, '▶ summary'));
    for (const node of lab.nodes) {
      const s = await agentAdminGet<{ events: CaptureStats }>(node.netnsPath, '/stats/capture');
      out(`  ${node.name}: eBPF steered ${s.events.steered.outbound} outbound + ${s.events.steered.inbound} inbound connections, ring-buffer losses ${s.events.lost}`);
    }
    out(`  connections admitted: ${totals.allowed}, denied by policy: ${totals.denied}, bytes proxied: ${totals.bytes}`);
    out(`  identities seen: ${[...totals.identities].sort().join(', ')}`);
    out('');
    out('where to look next: `weft lab up -f examples/lab.yaml`, `weft apply -f examples/policies.yaml`, `weft status`,');
    out('`weft lab logs node-b` (one JSON line per connection), and docs/architecture.md for how a connection travels.');
    return 0;
  } finally {
    if (values.keep) out(`lab "${LAB_NAME}" kept; remove it with: weft lab down --name ${LAB_NAME}`);
    else {
      await labDown({ name: LAB_NAME });
      out(paint(1, '▶ lab removed'));
    }
  }
}
