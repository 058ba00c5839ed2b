// Faults on a two-node lab: agents SIGKILLed under traffic (nothing passes around the proxy while they
// are gone, the new agents adopt the pinned programs and traffic resumes), the controller down (agents
// keep configuration and certificates, and resync when it returns), the CA down across a rotation
// (the old certificate serves until it expires, failures visible), and a destination pod dying in the
// middle of a stream.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { labDown, labUp, type LabHandle } from '../agent/lab/index.js';
import { agentAdminGet, eventually } from '../agent/node/admin-client.js';
import type { CertSnapshot } from '../agent/identity/manager.js';
import type { PodProxyStats } from '../agent/ztunnel/pod-proxy.js';
import { metricsOf, sample } from './helpers/metrics.js';
import { repoRoot, requirePrivileges, requireLab } from './helpers/privileged.js';

const run = promisify(execFile);
const LAB = `f${process.pid.toString(36)}`;
const FIXTURES = join(repoRoot(), 'test', 'fixtures');
const WEFT = join(repoRoot(), 'dist', 'agent', 'cli', 'main.js');
let lab: LabHandle | undefined;

after(async () => {
  if (lab) await labDown({ name: LAB });
});

interface ProbeResult {
  successes: number[];
  failures: number;
  attempts: number;
}

/** Starts a probe in a pod; resolves with its result once --duration is over. */
function probe(from: string, target: string, durationMs: number): Promise<ProbeResult> {
  return lab!.exec(from, [process.execPath, join(FIXTURES, 'probe.mjs'), '--target', target, '--duration', String(durationMs)], { stdio: 'pipe' }).then((r) => {
    assert.equal(r.code, 0, `probe ${from} -> ${target}: ${r.stderr}`);
    return JSON.parse(r.stdout.trim().split('\n').pop()!) as ProbeResult;
  });
}

async function echoes(from: string, target: string): Promise<boolean> {
  const r = await lab!.exec(from, [process.execPath, join(FIXTURES, 'conn-storm.mjs'), '--targets', target, '--count', '1', '--timeout', '3000'], { stdio: 'pipe' });
  return r.code === 0;
}

const certs = (node: string): Promise<CertSnapshot[]> => agentAdminGet<CertSnapshot[]>(lab!.node(node).netnsPath, '/certs');

test('lab up', async (t) => {
  if (!requirePrivileges(t)) return;
  lab = await labUp([join(FIXTURES, 'faults-lab.yaml')], { name: LAB });
  assert.ok(await echoes('mesh/client', `${lab.pod('mesh/server').ip}:8080`));
});

test('agents SIGKILLed under traffic: nothing passes around the proxy, the new agents adopt and serve', async (t) => {
  if (!requireLab(t, lab)) return;
  const server = `${lab.pod('mesh/server').ip}:8080`;
  const plainServer = `${lab.pod('plain/server').ip}:9090`;
  const duration = 9000;
  const probes = Promise.all([
    probe('mesh/client', server, duration), // through both agents (HBONE)
    probe('mesh/client', plainServer, duration), // out of an enrolled pod to a plain one
    probe('plain/client', server, duration), // plaintext into an enrolled pod
  ]);
  await new Promise((r) => setTimeout(r, 1500));
  await Promise.all(['node-a', 'node-b'].map((n) => lab!.stopAgent(n, 'SIGKILL')));
  const killedAt = Date.now();
  // With no agent at all, every one of these must fail: refused, never passed in plaintext.
  await new Promise((r) => setTimeout(r, 800));
  const restartAt = Date.now();
  await Promise.all(['node-a', 'node-b'].map((n) => lab!.startAgent(n)));
  const [mesh, outbound, inbound] = await probes;
  for (const [name, p] of [['mesh', mesh], ['outbound', outbound], ['inbound', inbound]] as const) {
    const during = p.successes.filter((s) => s > killedAt + 50 && s < restartAt);
    assert.deepEqual(during, [], `${name}: a connection succeeded while no agent ran`);
    assert.ok(p.successes.some((s) => s < killedAt), `${name}: worked before`);
    assert.ok(p.successes.some((s) => s > restartAt), `${name}: works again after the restart`);
  }
  const back = mesh.successes.find((s) => s > restartAt)!;
  console.log(`# enrolled traffic refused for ${back - restartAt} ms after the restart began (${back - killedAt} ms after the kill)`);
  for (const node of ['node-a', 'node-b']) {
    const dump: { datapath: { adopted: string[]; attached: string[] } } = await agentAdminGet<{ datapath: { adopted: string[]; attached: string[] } }>(lab.node(node).netnsPath, '/config_dump');
    assert.deepEqual([...dump.datapath.adopted].sort(), ['weft_connect4', 'weft_connect6', 'weft_sockops'], `${node} adopted the pinned programs`);
    assert.deepEqual(dump.datapath.attached, []);
  }
});

test('controller down: agents keep configuration and certificates, and resync when it returns', async (t) => {
  if (!requireLab(t, lab)) return;
  const server = `${lab.pod('mesh/server').ip}:8080`;
  const agents = lab.nodes.map((n) => n.agentPid);
  await lab.stopController('SIGKILL');
  const policy = join(lab.resourcesDir, 'zz-faults-deny.yaml');
  try {
    assert.ok(await echoes('mesh/client', server), 'traffic flows with the controller down');
    // A change made while it is down...
    writeFileSync(`${policy}.tmp`, `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-client, namespace: mesh}
spec:
  selector: {matchLabels: {app: server}}
  action: DENY
  rules: [{from: [{source: {principals: ["cluster.local/ns/mesh/sa/client"]}}]}]
`);
    renameSync(`${policy}.tmp`, policy);
    assert.ok(await echoes('mesh/client', server), 'no controller, no change');
  } finally {
    await lab.startController();
  }
  // ...applies once it is back, without restarting any agent.
  await eventually('the DENY policy in force', async () => ((await echoes('mesh/client', server)) ? undefined : true), 30_000);
  assert.deepEqual(lab.nodes.map((n) => n.agentPid), agents, 'no agent restarted');
  rmSync(policy, { force: true });
  await eventually('the DENY policy gone', async () => ((await echoes('mesh/client', server)) ? true : undefined), 30_000);
});

test('CA down across a rotation: the old certificate serves until it expires, failures are visible, renewal resumes', async (t) => {
  if (!requireLab(t, lab)) return;
  const server = `${lab.pod('mesh/server').ip}:8080`;
  const identity = 'spiffe://cluster.local/ns/mesh/sa/client';
  const before = (await certs('node-a')).find((c) => c.identity === identity)!;
  assert.ok(before?.serial, 'client has a certificate');
  await lab.stopController('SIGKILL');
  let failing: CertSnapshot;
  try {
    failing = await eventually(
      'a failed renewal',
      async () => {
        const c = (await certs('node-a')).find((x) => x.identity === identity);
        return c && c.failures > 0 ? c : undefined;
      },
      20_000,
    );
    assert.ok(failing.lastError, 'the error is reported');
    // Gauges are refreshed once a second.
    await eventually('failures in metrics', async () => (sample(await metricsOf(lab!.node('node-a').ip), 'weft_certificate_request_failures', { identity }) > 0 ? true : undefined));
    // weft status exits 1 (controller unreachable) but still shows what the agents hold.
    const status = await run(process.execPath, [WEFT, 'status', '--name', LAB, '--json']).then(
      () => assert.fail('weft status should report the unreachable controller'),
      (err: { code: number; stdout: string }) => err,
    );
    assert.equal(status.code, 1);
    const shown = JSON.parse(status.stdout) as { controller: { unreachable?: string }; certificates: CertSnapshot[] };
    assert.ok(shown.controller.unreachable);
    assert.ok(shown.certificates.some((c) => c.identity === identity && c.failures > 0 && c.lastError), 'the failing renewal is shown');
    // Still before the old certificate's notAfter: it keeps serving.
    if (Date.now() < new Date(failing.notAfter!).getTime() - 1000) assert.ok(await echoes('mesh/client', server), 'old certificate still serves');
  } finally {
    await lab.startController();
  }
  const renewed = await eventually(
    'renewal after the CA returns',
    async () => {
      const c = (await certs('node-a')).find((x) => x.identity === identity);
      return c && c.failures === 0 && c.serial !== before.serial && c.serial !== failing.serial ? c : undefined;
    },
    30_000,
  );
  assert.ok(new Date(renewed.notAfter!).getTime() > Date.now());
  assert.ok(await echoes('mesh/client', server), 'traffic with the renewed certificate');
});

test('a destination pod dying mid-stream: the client sees the close, the proxies free both sides, a flow records it', async (t) => {
  if (!requireLab(t, lab)) return;
  const victim = lab.pod('mesh/victim');
  // The CA was just down (the test before): the victim's certificate may still be renewing.
  await eventually('the victim reachable', async () => ((await echoes('mesh/client', `${victim.ip}:8080`)) ? true : undefined), 30_000);
  const activeBefore = (await agentAdminGet<{ proxies: Record<string, PodProxyStats> }>(lab.node('node-b').netnsPath, '/stats/capture')).proxies['mesh/victim']!.active;
  const hold = lab.exec('mesh/client', [process.execPath, join(FIXTURES, 'hold-conn.mjs'), '--target', `${victim.ip}:8080`, '--timeout', '20000'], { stdio: 'pipe' });
  await eventually('connection held', async () => {
    const s = await agentAdminGet<{ proxies: Record<string, PodProxyStats> }>(lab!.node('node-b').netnsPath, '/stats/capture');
    return s.proxies['mesh/victim']!.active > activeBefore ? true : undefined;
  });
  const killedAt = Date.now();
  for (const c of victim.containers) if (c.pid) process.kill(c.pid, 'SIGKILL');
  const r = await hold;
  assert.equal(r.code, 0, `the client saw the close: ${r.stdout} ${r.stderr}`);
  assert.match(r.stdout, /closed \d+/);
  await eventually('both sides freed', async () => {
    const s = await agentAdminGet<{ proxies: Record<string, PodProxyStats> }>(lab!.node('node-b').netnsPath, '/stats/capture');
    return s.proxies['mesh/victim']!.active === activeBefore ? true : undefined;
  });
  const flows = await eventually('the flow of the broken connection', async () => {
    const { stdout } = await run(process.execPath, [WEFT, 'observe', '-o', 'json', '--to-pod', 'mesh/victim', '--last', '20']);
    const got = stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as { flow?: { time?: string; traffic_direction?: string } });
    return got.some((f) => f.flow?.traffic_direction === 'INGRESS' && new Date(f.flow.time!).getTime() >= killedAt - 1000) ? got : undefined;
  });
  assert.ok(flows.length > 0);
});
