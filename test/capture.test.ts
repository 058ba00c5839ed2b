// Capture end to end, on a real lab with real agents: outbound capture with original destinations
// (1000 concurrent connections), inbound capture, un-enrolled traffic left alone, the proxy's own
// connections never re-captured, enrollment by namespace label on a running pod, and an agent crash
// and restart that adopts the pinned programs without duplicating them.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { labApply, labDown, labUp, type LabHandle } from '../agent/lab/index.js';
import { agentAdminGet, eventually } from '../agent/node/admin-client.js';
import type { CaptureStats } from '../agent/datapath/events.js';
import type { PodProxyStats } from '../agent/ztunnel/pod-proxy.js';
import { cgroupId } from '../agent/system/mounts.js';
import { repoRoot, requirePrivileges, requireLab } from './helpers/privileged.js';

const LAB = `c${process.pid.toString(36)}`;
const LAB_FILE = join(repoRoot(), 'test', 'fixtures', 'capture-lab.yaml');
const STORM = join(repoRoot(), 'test', 'fixtures', 'conn-storm.mjs');
const tmp = mkdtempSync(join(tmpdir(), 'weft-capture-'));
let lab: LabHandle | undefined;

after(async () => {
  rmSync(tmp, { recursive: true, force: true });
  if (lab) await labDown({ name: LAB });
});

interface StormSummary {
  ok: number;
  failed: number;
  errors: Record<string, number>;
  byTarget: Record<string, { ok: number; failed: number; servers: Record<string, number>; peers: Record<string, number> }>;
}

async function storm(from: string, targets: string[], count: number): Promise<{ code: number; summary: StormSummary }> {
  const r = await lab!.exec(from, [process.execPath, STORM, '--targets', targets.join(','), '--count', String(count)], { stdio: 'pipe' });
  const last = r.stdout.trim().split('\n').pop() ?? '';
  assert.ok(last.startsWith('{'), `conn-storm printed no summary (exit ${r.code}): ${r.stderr}`);
  return { code: r.code, summary: JSON.parse(last) as StormSummary };
}

interface Stats {
  events: CaptureStats;
  proxies: Record<string, PodProxyStats>;
}
const stats = (node: string): Promise<Stats> => agentAdminGet<Stats>(lab!.node(node).netnsPath, '/stats/capture');

/** Wait until the ring-buffer counters reach `want` (events arrive asynchronously), then return them. */
async function statsReaching(node: string, want: (s: Stats) => boolean): Promise<Stats> {
  return eventually(`capture stats of ${node}`, async () => {
    const s = await stats(node);
    return want(s) ? s : undefined;
  });
}

interface AccessLog {
  msg: string;
  pod: string;
  direction: string;
  src: string;
  dst: string;
  endpoint: string;
  service?: string;
}
function accessLog(node: string, fromByte: number): AccessLog[] {
  return readFileSync(lab!.node(node).agentLog)
    .subarray(fromByte)
    .toString()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as AccessLog)
    .filter((e) => e.msg === 'connection complete');
}
const logSize = (node: string): number => statSync(lab!.node(node).agentLog).size;

const passedProxy = (s: Stats): number => s.events.passed.PROXY_SOCKET ?? 0;

test('lab up with one agent per node', async (t) => {
  if (!requirePrivileges(t)) return;
  lab = await labUp([LAB_FILE], { name: LAB });
  for (const node of ['node-a', 'node-b']) {
    const dump: { enrolled: Array<{ pod: string }> } = await agentAdminGet(lab.node(node).netnsPath, '/config_dump');
    const want = node === 'node-a' ? ['mesh/client', 'mesh/server-a'] : ['mesh/server-b'];
    assert.deepEqual(dump.enrolled.map((e) => e.pod).sort(), want);
  }
});

test('1000 concurrent connections from an enrolled pod reach the outbound listener with their original destinations', async (t) => {
  if (!requireLab(t, lab)) return;
  const a = lab.pod('mesh/server-a').ip;
  const b = lab.pod('mesh/server-b').ip;
  const vip = lab.service('mesh/server-b').vip;
  const beforeA = await stats('node-a');
  const beforeB = await stats('node-b');
  const logA = logSize('node-a');
  const targets = [`${a}:8080`, `${b}:8080`, 'server-b:80'];

  const { code, summary } = await storm('mesh/client', targets, 1000);
  assert.equal(summary.failed, 0, `failures: ${JSON.stringify(summary.errors)}`);
  assert.equal(code, 0);
  assert.equal(summary.ok, 1000);
  // Every payload came back intact from the server it was meant for.
  assert.deepEqual(summary.byTarget[`${a}:8080`]?.servers, { 'server-a': 334 });
  assert.deepEqual(summary.byTarget[`${b}:8080`]?.servers, { 'server-b': 333 });
  assert.deepEqual(summary.byTarget['server-b:80']?.servers, { 'server-b': 333 });

  // Each connection was steered exactly once, and the proxy recovered its original destination.
  const afterA = await statsReaching('node-a', (s) => s.events.steered.outbound - beforeA.events.steered.outbound >= 1000);
  assert.equal(afterA.events.steered.outbound - beforeA.events.steered.outbound, 1000);
  const client = (s: Stats) => s.proxies['mesh/client']!.outbound;
  assert.equal(client(afterA).accepted - client(beforeA).accepted, 1000);
  assert.equal(client(afterA).forwarded - client(beforeA).forwarded, 1000);
  assert.equal(client(afterA).noOriginalDst, client(beforeA).noOriginalDst);
  const byDst = new Map<string, number>();
  for (const e of accessLog('node-a', logA).filter((l) => l.direction === 'outbound' && l.pod === 'mesh/client')) {
    byDst.set(e.dst, (byDst.get(e.dst) ?? 0) + 1);
    if (e.dst === `${vip}:80`) {
      assert.equal(e.service, 'mesh/server-b');
      assert.equal(e.endpoint, `${b}:8080`);
    }
  }
  assert.deepEqual(Object.fromEntries(byDst), { [`${a}:8080`]: 334, [`${b}:8080`]: 333, [`${vip}:80`]: 333 });

  // Between enrolled pods across nodes the tunnel is HBONE to the destination pod's 15008, which
  // inbound capture leaves alone; on one node the agent hands the connection to the destination's
  // proxy itself (the splice fast path). Either way the destination proxy admitted every connection
  // and handed it to the app from the client's own address.
  const inbound = (s: Stats, pod: string, kind: 'hbone' | 'local') => s.proxies[pod]?.inbound[kind] ?? 0;
  const afterB = await statsReaching('node-b', (s) => inbound(s, 'mesh/server-b', 'hbone') - inbound(beforeB, 'mesh/server-b', 'hbone') >= 666);
  assert.equal(inbound(afterB, 'mesh/server-b', 'hbone') - inbound(beforeB, 'mesh/server-b', 'hbone'), 666);
  assert.equal(inbound(afterA, 'mesh/server-a', 'local') - inbound(beforeA, 'mesh/server-a', 'local'), 334);
  assert.equal(client(afterA).hbone - client(beforeA).hbone, 666);
  assert.equal(client(afterA).local - client(beforeA).local, 334);
  for (const target of targets) assert.deepEqual(summary.byTarget[target]?.peers, { [lab.pod('mesh/client').ip]: summary.byTarget[target]?.ok });

  // The proxy's own sockets (HBONE dials, hand-offs to apps) were seen by connect4 and passed by their
  // mark: steering stayed at exactly one per application connection.
  const settledA = await statsReaching('node-a', (s) => passedProxy(s) > passedProxy(beforeA));
  assert.ok(passedProxy(settledA) - passedProxy(beforeA) >= 334);
  assert.equal(settledA.events.steered.outbound - beforeA.events.steered.outbound, 1000);
  assert.equal(settledA.events.lost, '0');
});

test('inbound connections to an enrolled pod arrive at the inbound listener with the original destination', async (t) => {
  if (!requireLab(t, lab)) return;
  const b = lab.pod('mesh/server-b').ip;
  const plainClient = lab.pod('plain/client').ip;
  const logB = logSize('node-b');
  const { code, summary } = await storm('plain/client', [`${b}:8080`], 20);
  assert.equal(code, 0, JSON.stringify(summary.errors));
  // The proxy handed it to the app from the client's own address.
  assert.deepEqual(summary.byTarget[`${b}:8080`]?.peers, { [plainClient]: 20 });
  const inbound = accessLog('node-b', logB).filter((e) => e.direction === 'inbound' && e.pod === 'mesh/server-b');
  assert.equal(inbound.length, 20);
  for (const e of inbound) {
    assert.equal(e.dst, `${b}:8080`);
    assert.equal(e.src, plainClient);
  }
});

test('un-enrolled pods are left alone (checked at the listeners)', async (t) => {
  if (!requireLab(t, lab)) return;
  const server = lab.pod('plain/server').ip;
  const client = lab.pod('plain/client').ip;
  const beforeA = await stats('node-a');
  const beforeB = await stats('node-b');
  const { code, summary } = await storm('plain/client', [`${server}:9090`], 50);
  assert.equal(code, 0, JSON.stringify(summary.errors));
  assert.deepEqual(summary.byTarget[`${server}:9090`]?.peers, { [client]: 50 }, 'the server saw the client directly');
  const afterA = await stats('node-a');
  const afterB = await stats('node-b');
  assert.equal(afterA.events.steered.outbound, beforeA.events.steered.outbound);
  assert.equal(afterB.events.steered.inbound, beforeB.events.steered.inbound);
  assert.equal(afterA.proxies['plain/client'], undefined, 'no proxy exists for an un-enrolled pod');
});

test('enrolling and un-enrolling a running pod by its namespace label', async (t) => {
  if (!requireLab(t, lab)) return;
  const server = lab.pod('plain/server').ip;
  const client = lab.pod('plain/client').ip;
  const pid = lab.pod('plain/client').containers[0]?.pid;
  const nsFile = (labels: string) => {
    const file = join(tmp, 'plain-ns.yaml');
    writeFileSync(file, `apiVersion: v1\nkind: Namespace\nmetadata: {name: plain, labels: {${labels}}}\n`);
    return file;
  };
  const enrolledOnA = async () =>
    (await agentAdminGet<{ enrolled: Array<{ pod: string }> }>(lab!.node('node-a').netnsPath, '/config_dump')).enrolled.map((e) => e.pod);

  await labApply([nsFile('weft.io/dataplane-mode: ambient')], { name: LAB });
  await eventually('plain/client enrolled', async () => ((await enrolledOnA()).includes('plain/client') ? true : undefined));
  await eventually('plain/server enrolled', async () => {
    const d = await agentAdminGet<{ enrolled: Array<{ pod: string }> }>(lab!.node('node-b').netnsPath, '/config_dump');
    return d.enrolled.some((e) => e.pod === 'plain/server') ? true : undefined;
  });
  let r = await storm('plain/client', [`${server}:9090`], 20);
  assert.equal(r.code, 0, JSON.stringify(r.summary.errors));
  assert.deepEqual(r.summary.byTarget[`${server}:9090`]?.peers, { [client]: 20 });
  const s = await statsReaching('node-a', (x) => (x.proxies['plain/client']?.outbound.forwarded ?? 0) >= 20);
  assert.equal(s.proxies['plain/client']?.outbound.hbone, 20, 'captured and tunnelled');

  await labApply([nsFile('team: legacy')], { name: LAB });
  await eventually('plain/client un-enrolled', async () => ((await enrolledOnA()).includes('plain/client') ? undefined : true));
  const steered = (await stats('node-a')).events.steered.outbound;
  r = await storm('plain/client', [`${server}:9090`], 20);
  assert.equal(r.code, 0, JSON.stringify(r.summary.errors));
  assert.deepEqual(r.summary.byTarget[`${server}:9090`]?.peers, { [client]: 20 }, 'direct again');
  assert.equal((await stats('node-a')).events.steered.outbound, steered, 'no longer captured');
  assert.equal((await stats('node-a')).proxies['plain/client'], undefined);
  assert.equal(lab.pod('plain/client').containers[0]?.pid, pid, 'the pod was not restarted');
});

test('dual-stack sockets dialling IPv4 are captured through connect6', async (t) => {
  if (!requireLab(t, lab)) return;
  const b = lab.pod('mesh/server-b').ip;
  const before = await stats('node-a');
  const { code, summary } = await storm('mesh/client', [`::ffff:${b}:8080`], 20);
  assert.equal(code, 0, JSON.stringify(summary.errors));
  assert.deepEqual(summary.byTarget[`::ffff:${b}:8080`]?.servers, { 'server-b': 20 });
  const after = await statsReaching('node-a', (s) => s.events.steered.outbound - before.events.steered.outbound >= 20);
  assert.equal(after.events.steered.outbound - before.events.steered.outbound, 20);
  const client = (s: Stats) => s.proxies['mesh/client']!.outbound;
  assert.equal(client(after).forwarded - client(before).forwarded, 20);
});

test('an invalid resource document is reported and the last good version stays in force', async (t) => {
  if (!requireLab(t, lab)) return;
  const file = join(lab.resourcesDir, 'lab.yaml');
  const good = readFileSync(file, 'utf8');
  const dump = () =>
    agentAdminGet<{ enrolled: Array<{ pod: string }>; configProblems: string[] }>(lab!.node('node-a').netnsPath, '/config_dump');
  const enrolledBefore = (await dump()).enrolled.map((e) => e.pod).sort();
  try {
    // The namespace document itself turns invalid: it is rejected, and its last good version (enrolled)
    // stays in force, so nothing is un-enrolled by a typo.
    writeFileSync(file, good.replace('istio.io/dataplane-mode: ambient', 'istio.io/dataplane-mode: [ambient]'));
    const d = await eventually('the problem to be reported', async () => {
      const x = await dump();
      return x.configProblems.length > 0 ? x : undefined;
    });
    assert.match(d.configProblems[0] ?? '', /lab\.yaml:\d+: metadata\.labels/);
    assert.deepEqual(d.enrolled.map((e) => e.pod).sort(), enrolledBefore);
    const r = await storm('mesh/client', [`${lab.pod('mesh/server-b').ip}:8080`], 5);
    assert.equal(r.code, 0, JSON.stringify(r.summary.errors));
  } finally {
    writeFileSync(file, good);
  }
  await eventually('the problem to clear', async () => ((await dump()).configProblems.length === 0 ? true : undefined));
});

/** Links attached for the capture: attach type → count, for one cgroup, and sk_lookup links by netns inode. */
function bpfLinks(cgroup: string, netnsPaths: string[]): { cgroup: Record<string, number>; netns: number[] } {
  const links = JSON.parse(execFileSync('bpftool', ['-j', 'link', 'show'], { encoding: 'utf8' })) as Array<{
    type: string;
    attach_type?: string;
    cgroup_id?: number;
    netns_ino?: number;
  }>;
  const id = Number(cgroupId(cgroup));
  const byType: Record<string, number> = {};
  for (const l of links) if (l.type === 'cgroup' && l.cgroup_id === id && l.attach_type) byType[l.attach_type] = (byType[l.attach_type] ?? 0) + 1;
  const netns = netnsPaths.map((p) => links.filter((l) => l.type === 'netns' && l.netns_ino === statSync(p).ino).length);
  return { cgroup: byType, netns };
}

test('agent restart: pinned programs stay attached, the new agent adopts them, no duplicates', async (t) => {
  if (!requireLab(t, lab)) return;
  const node = lab.node('node-a');
  const enrolledNetns = ['mesh/client', 'mesh/server-a'].map((p) => lab!.pod(p).netnsPath);
  const once = { cgroup_inet4_connect: 1, cgroup_inet6_connect: 1, cgroup_sock_ops: 1 };
  assert.deepEqual(bpfLinks(node.cgroup, enrolledNetns), { cgroup: once, netns: [1, 1] });

  await lab.stopAgent('node-a', 'SIGKILL');
  // Capture outlives the agent...
  assert.deepEqual(bpfLinks(node.cgroup, enrolledNetns), { cgroup: once, netns: [1, 1] });
  // ...and, with no proxy to take them, enrolled pods' connections fail closed.
  const down = await storm('mesh/client', [`${lab.pod('plain/server').ip}:9090`], 5);
  assert.equal(down.code, 1);
  assert.equal(down.summary.ok, 0);

  await lab.startAgent('node-a');
  const dump = await agentAdminGet<{ datapath: { adopted: string[]; attached: string[] } }>(node.netnsPath, '/config_dump');
  assert.deepEqual(dump.datapath.adopted.sort(), ['weft_connect4', 'weft_connect6', 'weft_sockops']);
  assert.deepEqual(dump.datapath.attached, []);
  assert.deepEqual(bpfLinks(node.cgroup, enrolledNetns), { cgroup: once, netns: [1, 1] });

  const before = await stats('node-a');
  const up = await storm('mesh/client', [`${lab.pod('mesh/server-b').ip}:8080`, 'server-b:80'], 50);
  assert.equal(up.code, 0, JSON.stringify(up.summary.errors));
  const after = await statsReaching('node-a', (s) => s.events.steered.outbound - before.events.steered.outbound >= 50);
  assert.equal(after.events.steered.outbound - before.events.steered.outbound, 50);
  assert.equal(after.proxies['mesh/client']?.outbound.forwarded, 50);
});
