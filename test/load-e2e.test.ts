// Load on a two-node lab, every connection crossing both agents (HBONE): 10,000 concurrent connections
// held with data flowing, then 100,000 short ones; afterwards descriptors, memory and every
// per-connection map entry are back to where they started. The CI variant holds the 10,000 for 10 s;
// WEFT_SOAK=1 holds them for a minute (docs/security.md).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { labDown, labUp, type LabHandle } from '../agent/lab/index.js';
import { agentAdminGet, agentAdminPost, eventually } from '../agent/node/admin-client.js';
import { agentComplaints } from './helpers/lab-logs.js';
import { repoRoot, requirePrivileges, requireLab } from './helpers/privileged.js';

const LAB = `l${process.pid.toString(36)}`;
const FIXTURES = join(repoRoot(), 'test', 'fixtures');
const SOAK = process.env.WEFT_SOAK === '1';
const HOLD_MS = SOAK ? 60_000 : 10_000;
const CONCURRENT = 10_000;
const CHURN = 100_000;
/** Unconnected sockets a pod's proxy keeps ready (agent/ztunnel/netns-sockets.ts). */
const NETNS_SOCKET_BATCH = 32;
let lab: LabHandle | undefined;

after(async () => {
  if (lab) await labDown({ name: LAB });
});

interface Usage {
  fds: number;
  rssMiB: number;
  /** Live JavaScript heap right after a full collection: what the agent really still holds. */
  heapMiB: number;
  maps: { originalDstByCookie: number; originalDstByTuple: number; upstreams: number };
  pooled: number;
}

async function usage(node: string): Promise<Usage> {
  const n = lab!.node(node);
  const trimmed = await agentAdminPost<{ process: NodeJS.MemoryUsage }>(n.netnsPath, '/memory/trim');
  const status = readFileSync(`/proc/${n.agentPid}/status`, 'utf8');
  const rssKiB = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
  const stats = await agentAdminGet<{ maps: Usage['maps'] }>(n.netnsPath, '/stats/capture');
  const dump = await agentAdminGet<{ hbonePool: { connections?: number } }>(n.netnsPath, '/config_dump');
  return { fds: readdirSync(`/proc/${n.agentPid}/fd`).length, rssMiB: Math.round(rssKiB / 1024), heapMiB: Math.round(trimmed.process.heapUsed / 1048576), maps: stats.maps, pooled: dump.hbonePool.connections ?? 0 };
}

/** Back to the baseline: every per-connection map empty, descriptors at most the HBONE pool's TLS
 * connections between the nodes above it (pooled until their idle timeout, as ztunnel's; node-a
 * holds their client ends, node-b their server ends) and a batch of the per-pod socket pool, the live heap within a bound of where it was.
 * RSS is reported, not bound: V8 keeps the heap it grew for a while before giving it back. */
async function backToBaseline(node: string, base: Usage): Promise<Usage> {
  return eventually(
    `${node} back to its baseline`,
    async () => {
      const u = await usage(node);
      const pooled = (await usage('node-a')).pooled;
      const mapsEmpty = u.maps.originalDstByCookie === 0 && u.maps.originalDstByTuple === 0 && u.maps.upstreams === 0;
      if (mapsEmpty && u.fds <= base.fds + pooled + NETNS_SOCKET_BATCH + 10 && u.heapMiB <= base.heapMiB + 32) return u;
      throw new Error(`now ${JSON.stringify(u)} (pooled TLS ${pooled}), baseline ${JSON.stringify(base)}`);
    },
    30_000,
  );
}

test('lab up', async (t) => {
  if (!requirePrivileges(t)) return;
  lab = await labUp([join(FIXTURES, 'load-lab.yaml')], { name: LAB });
});

test(`${CONCURRENT} concurrent connections held ${HOLD_MS / 1000} s with data flowing: no error, resources back to baseline`, async (t) => {
  if (!requireLab(t, lab)) return;
  const base = { a: await usage('node-a'), b: await usage('node-b') };
  const target = `${lab.pod('mesh/server').ip}:8080`;
  const script = `ulimit -n "$(ulimit -Hn)" && exec "${process.execPath}" "${join(FIXTURES, 'hold-many.mjs')}" --target ${target} --count ${CONCURRENT} --hold ${HOLD_MS} --interval 2000`;
  const r = await lab.exec('mesh/client', ['sh', '-c', script], { stdio: 'pipe' });
  const summary = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as { opened: number; sent: number; echoed: number; errors: Record<string, number>; openMs: number };
  console.log(`# ${summary.opened} connections opened in ${summary.openMs} ms; ${summary.sent} bytes echoed intact`);
  assert.equal(r.code, 0, `hold-many: ${r.stdout} ${r.stderr}\nagents said:\n${agentComplaints(lab!)}`);
  assert.equal(summary.opened, CONCURRENT);
  assert.deepEqual(summary.errors, {});
  assert.equal(summary.echoed, summary.sent);
  const after = { a: await backToBaseline('node-a', base.a), b: await backToBaseline('node-b', base.b) };
  for (const [node, b, a] of [['node-a', base.a, after.a], ['node-b', base.b, after.b]] as const) {
    console.log(`# ${node}: fds ${b.fds} -> ${a.fds}, live heap ${b.heapMiB} -> ${a.heapMiB} MiB, RSS ${b.rssMiB} -> ${a.rssMiB} MiB`);
  }
});

test(`${CHURN} short connections: every original-destination and pass-through entry removed`, async (t) => {
  if (!requireLab(t, lab)) return;
  const base = { a: await usage('node-a'), b: await usage('node-b') };
  const target = `${lab.pod('mesh/server').ip}:8080`;
  const started = Date.now();
  const r = await lab.exec('mesh/client', ['sh', '-c', `ulimit -n "$(ulimit -Hn)" && exec "${process.execPath}" "${join(FIXTURES, 'conn-storm.mjs')}" --targets ${target} --count ${CHURN} --concurrency 200 --bytes 16 --timeout 20000`], { stdio: 'pipe' });
  const summary = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as { ok: number; failed: number; errors: Record<string, number> };
  console.log(`# ${summary.ok} connections in ${Date.now() - started} ms (${Math.round((summary.ok * 1000) / (Date.now() - started))}/s)`);
  assert.equal(summary.failed, 0, `errors: ${JSON.stringify(summary.errors)}\nagents said:\n${agentComplaints(lab!)}`);
  assert.equal(summary.ok, CHURN);
  await backToBaseline('node-a', base.a);
  await backToBaseline('node-b', base.b);
});
