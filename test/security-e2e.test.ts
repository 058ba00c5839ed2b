// The security review's datapath defects, each proved fixed on a two-node lab with real agents:
// no self-loop through the proxy's own ports, no walk around capture with a forged socket mark, no
// reply-routing rule per scanned port, native IPv6 refused with a reason, a pod captured (and refused)
// from its first packet while the controller is down, and no pass-through entry outliving its
// connection.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { labApply, labDown, labUp, type LabHandle } from '../agent/lab/index.js';
import { agentAdminGet, eventually } from '../agent/node/admin-client.js';
import type { PodProxyStats } from '../agent/ztunnel/pod-proxy.js';
import { bridgeMac } from '../agent/lab/net.js';
import { repoRoot, requirePrivileges, requireLab } from './helpers/privileged.js';

const LAB = `s${process.pid.toString(36)}`;
const FIXTURES = join(repoRoot(), 'test', 'fixtures');
const tmp = mkdtempSync(join(tmpdir(), 'weft-security-'));
let lab: LabHandle | undefined;

after(async () => {
  rmSync(tmp, { recursive: true, force: true });
  if (lab) {
    const pid = lab.state.controller?.pid;
    if (pid) {
      try {
        process.kill(pid, 'SIGCONT');
      } catch {
        // already gone
      }
    }
    await labDown({ name: LAB });
  }
});

interface Stats {
  proxies: Record<string, PodProxyStats>;
  maps: { upstreams: number };
}
const stats = (node: string): Promise<Stats> => agentAdminGet<Stats>(lab!.node(node).netnsPath, '/stats/capture');

/** One echo round trip from a pod; true only when the server greeted and echoed intact. */
async function echoes(from: string, target: string, timeoutMs = 3000): Promise<boolean> {
  const r = await lab!.exec(from, [process.execPath, join(FIXTURES, 'conn-storm.mjs'), '--targets', target, '--count', '1', '--timeout', String(timeoutMs)], { stdio: 'pipe' });
  return r.code === 0;
}

/** Runs a Python snippet in a pod (for socket options Node has no API for); resolves with stdout. */
async function python(from: string, code: string): Promise<string> {
  const r = await lab!.exec(from, ['python3', '-c', code], { stdio: 'pipe' });
  assert.equal(r.code, 0, `python in ${from} failed: ${r.stderr}`);
  return r.stdout.trim();
}

/** tcpdump on every interface of a netns (its loopback carries no pod traffic), writing a pcap.
 * `stop` resolves with the packets the kernel dropped (a capture that lost packets proves nothing). */
async function startCapture(netns: string): Promise<{ file: string; stop: () => Promise<number> }> {
  const file = join(tmp, `${netns}.pcap`);
  const child = spawn('ip', ['netns', 'exec', netns, 'tcpdump', '-i', 'any', '--immediate-mode', '-B', '16384', '-U', '-s', '0', '-w', file], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  await new Promise<void>((resolve, reject) => {
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString();
      if (err.includes('listening on')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`tcpdump in ${netns} exited (${code}): ${err}`)));
  });
  return {
    file,
    stop: async () => {
      const exited = once(child, 'exit');
      child.kill('SIGINT');
      await exited;
      const dropped = /(\d+) packets? dropped by kernel/.exec(err);
      assert.ok(dropped, `tcpdump in ${netns} printed no statistics: ${err}`);
      return Number(dropped[1]);
    },
  };
}

function agentFds(node: string): number {
  return readdirSync(`/proc/${lab!.node(node).agentPid}/fd`).length;
}

function weftRules(netns: string): number {
  const rules = JSON.parse(execFileSync('ip', ['-n', netns, '-j', 'rule', 'show'], { encoding: 'utf8' })) as Array<{ priority: number }>;
  return rules.length;
}

test('lab up with a PERMISSIVE, a STRICT and an un-enrolled namespace', async (t) => {
  if (!requirePrivileges(t)) return;
  lab = await labUp([join(FIXTURES, 'security-lab.yaml')], { name: LAB });
  assert.ok(await echoes('plain/client', `${lab.pod('perm/self').ip}:8080`), 'PERMISSIVE pod takes plaintext');
  assert.ok(await echoes('perm/self', `${lab.pod('strict/server').ip}:8080`), 'mesh pod reaches STRICT pod over mTLS');
  assert.equal(await echoes('plain/client', `${lab.pod('strict/server').ip}:8080`), false, 'STRICT pod refuses plaintext');
});

test('an un-enrolled pod reaches a STRICT pod by no path: pod IP, node IP, service VIP, proxy ports', async (t) => {
  if (!requireLab(t, lab)) return;
  const pod = lab.pod('strict/server').ip;
  const node = lab.node('node-b').ip;
  const vip = lab.service('strict/server').vip;
  for (const target of [`${pod}:8080`, `${node}:8080`, `${vip}:80`, `${pod}:15001`, `${pod}:15006`, `${pod}:15008`]) {
    assert.equal(await echoes('plain/client', target), false, target);
  }
  assert.ok(await echoes('perm/self', `${vip}:80`), 'the service works for a mesh client');
});

test('on the wire: no byte of enrolled traffic in clear on any non-loopback interface', async (t) => {
  if (!requireLab(t, lab)) return;
  const state = lab.state;
  const captures = await Promise.all([state.fabricNetns, lab.node('node-a').netns, lab.node('node-b').netns].map((ns) => startCapture(ns)));
  const meshMarker = `weft-mesh-${randomBytes(12).toString('hex')}`;
  const plainMarker = `weft-plain-${randomBytes(12).toString('hex')}`;
  try {
    assert.equal((await lab.exec('perm/self', [process.execPath, join(FIXTURES, 'send-marker.mjs'), '--target', `${lab.pod('strict/server').ip}:8080`, '--marker', meshMarker], { stdio: 'pipe' })).code, 0, 'mesh marker echoed');
    assert.equal((await lab.exec('plain/client', [process.execPath, join(FIXTURES, 'send-marker.mjs'), '--target', `${lab.pod('plain/server').ip}:9090`, '--marker', plainMarker], { stdio: 'pipe' })).code, 0, 'plain marker echoed');
  } finally {
    const dropped = await Promise.all(captures.map((c) => c.stop()));
    assert.deepEqual(dropped, [0, 0, 0], 'the captures lost no packet');
  }
  const pcaps = captures.map((c) => readFileSync(c.file));
  // The capture works: the plaintext pair's marker is on the wire...
  assert.ok(pcaps.some((p) => p.includes(plainMarker)), 'plaintext marker seen (the capture works)');
  // ...and the enrolled pair's is nowhere, in either direction.
  for (const [i, p] of pcaps.entries()) assert.equal(p.includes(meshMarker), false, `mesh marker in clear in capture ${i}`);
});

test('no self-loop: connections to the proxy\'s own ports and to loopback are refused on every path', async (t) => {
  if (!requireLab(t, lab)) return;
  const self = lab.pod('perm/self').ip;
  const strict = lab.pod('strict/server').ip;
  const fdsBefore = agentFds('node-a');
  const before = (await stats('node-a')).proxies['perm/self']!.inbound.badRequest;
  // Own IP (steered outbound, then the same-node hand-off), loopback straight onto the in-pod
  // listener, a plaintext peer onto 15006 itself, and HBONE to another pod's proxy port.
  assert.equal(await echoes('perm/self', `${self}:15006`), false, 'own IP:15006');
  assert.equal(await echoes('perm/self', '127.0.0.1:15006'), false, '127.0.0.1:15006');
  assert.equal(await echoes('plain/client', `${self}:15006`), false, 'plaintext peer to 15006');
  assert.equal(await echoes('perm/self', `${self}:15008`), false, 'own IP:15008');
  assert.equal(await echoes('perm/self', `${strict}:15008`), false, 'HBONE CONNECT to a proxy port');
  const after = await stats('node-a');
  assert.ok(after.proxies['perm/self']!.inbound.badRequest >= before + 4, `refusals counted: ${before} -> ${after.proxies['perm/self']!.inbound.badRequest}`);
  // Each attempt cost a handful of descriptors at most, not thousands.
  assert.ok(agentFds('node-a') < fdsBefore + 50, `agent fds ${fdsBefore} -> ${agentFds('node-a')}`);
  assert.ok(await echoes('perm/self', `${strict}:8080`), 'ordinary traffic still flows');
});

test('a pod that sets the proxy\'s socket mark is still captured', async (t) => {
  if (!requireLab(t, lab)) return;
  const server = lab.pod('plain/server').ip;
  const before = (await stats('node-a')).proxies['perm/self']!.outbound.passthrough;
  const greeting = await python(
    'perm/self',
    `import socket\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, 36, 0x539)\ns.settimeout(5)\ns.connect(("${server}", 9090))\nprint(s.recv(200).decode().split()[1])`,
  );
  assert.equal(greeting, 'plain-server');
  const after = await eventually('passthrough counted', async () => {
    const n = (await stats('node-a')).proxies['perm/self']!.outbound.passthrough;
    return n > before ? n : undefined;
  });
  assert.equal(after, before + 1, 'the marked connection went through the proxy');
});

test('a scan of closed ports adds no reply-routing rules', async (t) => {
  if (!requireLab(t, lab)) return;
  const pod = lab.pod('perm/self');
  const rulesBefore = weftRules(pod.netns);
  const targets = Array.from({ length: 40 }, (_, i) => `${pod.ip}:${20000 + i}`).join(',');
  const r = await lab.exec('plain/client', [process.execPath, join(FIXTURES, 'conn-storm.mjs'), '--targets', targets, '--count', '40', '--timeout', '3000'], { stdio: 'pipe' });
  assert.notEqual(r.code, 0, 'closed ports do not echo');
  assert.equal(weftRules(pod.netns), rulesBefore, 'rule table unchanged');
});

test('native IPv6 from an enrolled pod is refused (not sent around the proxy)', async (t) => {
  if (!requireLab(t, lab)) return;
  const errno = await python(
    'perm/self',
    'import socket, errno\ns = socket.socket(socket.AF_INET6)\ntry:\n  s.connect(("fd00:dead::1", 80))\n  print("connected")\nexcept OSError as e:\n  print(errno.errorcode[e.errno])',
  );
  assert.equal(errno, 'EPERM');
});

test('controller down: a new pod in a STRICT namespace is captured from its first packet', async (t) => {
  if (!requireLab(t, lab)) return;
  const controller = lab.state.controller!.pid!;
  process.kill(controller, 'SIGSTOP');
  try {
    await labApply([join(FIXTURES, 'security-late-pod.yaml')], { name: LAB, wait: false });
    const late = lab.pod('strict/late').ip;
    // Its app is listening, but nothing reaches it and nothing leaves it while it waits.
    await eventually('late pod listening', async () => {
      const r = await lab!.exec('strict/late', ['ss', '-Htln', 'sport = :8080'], { stdio: 'pipe' });
      return r.stdout.includes('8080') ? true : undefined;
    });
    assert.equal(await echoes('plain/client', `${late}:8080`), false, 'plaintext in refused');
    assert.equal(await echoes('strict/late', `${lab.pod('plain/server').ip}:9090`), false, 'plaintext out refused');
  } finally {
    process.kill(controller, 'SIGCONT');
  }
  const late = lab.pod('strict/late').ip;
  await eventually('late pod enrolled', async () => ((await stats('node-b')).proxies['strict/late'] ? true : undefined), 30_000);
  assert.ok(await echoes('perm/self', `${late}:8080`), 'mTLS in once enrolled');
  assert.equal(await echoes('plain/client', `${late}:8080`), false, 'plaintext still refused (STRICT)');
});

test('no pass-through entry outlives its connection', async (t) => {
  if (!requireLab(t, lab)) return;
  for (const node of ['node-a', 'node-b']) {
    const n = await eventually(`upstream entries drained on ${node}`, async () => {
      const s = await stats(node);
      return s.maps.upstreams === 0 ? 0 : undefined;
    });
    assert.equal(n, 0);
  }
});

test('a node bridge keeps its MAC as pods come and go (no ARP cut-off for the others)', async (t) => {
  if (!requireLab(t, lab)) return;
  for (const name of ['node-a', 'node-b']) {
    const node = lab.node(name);
    const [link] = JSON.parse(execFileSync('ip', ['-n', node.netns, '-j', 'link', 'show', 'cni0'], { encoding: 'utf8' })) as Array<{ address: string }>;
    assert.equal(link?.address, bridgeMac(node.gateway), `${name} cni0`);
  }
});
