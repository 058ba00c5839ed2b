// Upgrading both node agents in place under traffic (`weft lab restart-agent NODE --graceful`): the
// new agent takes the listening sockets over from the old one, which drains. Measured: zero refused
// new connections and zero reset long-lived connections (what no anchor does: istio#51126).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { labDown, labUp, type LabHandle } from '../agent/lab/index.js';
import { eventually } from '../agent/node/admin-client.js';
import { pidAlive } from '../agent/lab/sys.js';
import { agentComplaints } from './helpers/lab-logs.js';
import { repoRoot, requirePrivileges, requireLab } from './helpers/privileged.js';

const LAB = `u${process.pid.toString(36)}`;
const FIXTURES = join(repoRoot(), 'test', 'fixtures');
let lab: LabHandle | undefined;

after(async () => {
  if (lab) await labDown({ name: LAB });
});

test('lab up', async (t) => {
  if (!requirePrivileges(t)) return;
  lab = await labUp([join(FIXTURES, 'load-lab.yaml')], { name: LAB });
});

test('graceful upgrade of both agents under traffic: no connection refused, no long-lived connection reset', async (t) => {
  if (!requireLab(t, lab)) return;
  const target = `${lab.pod('mesh/server').ip}:8080`;
  const old = { a: lab.node('node-a').agentPid!, b: lab.node('node-b').agentPid! };
  // Long-lived: 20 tunnels held through both upgrades, a message echoed on each every 300 ms.
  const held = lab.exec('mesh/client', [process.execPath, join(FIXTURES, 'hold-many.mjs'), '--target', target, '--count', '20', '--hold', '9000', '--interval', '300'], { stdio: 'pipe' });
  // New connections, one after another, all along.
  const probing = lab.exec('mesh/client', [process.execPath, join(FIXTURES, 'probe.mjs'), '--target', target, '--duration', '8000', '--gap', '5'], { stdio: 'pipe' });
  await new Promise((r) => setTimeout(r, 1000));
  const pidA = await lab.restartAgent('node-a', { graceful: true, drainSeconds: 30 });
  const pidB = await lab.restartAgent('node-b', { graceful: true, drainSeconds: 30 });
  assert.notEqual(pidA, old.a);
  assert.notEqual(pidB, old.b);
  const [h, p] = await Promise.all([held, probing]);
  const probe = JSON.parse(p.stdout.trim().split('\n').pop()!) as { successes: number[]; failures: number; attempts: number };
  console.log(`# ${probe.attempts} new connections during the upgrades, ${probe.failures} failed`);
  assert.equal(probe.failures, 0, `no new connection refused or lost; agents said:\n${agentComplaints(lab)}`);
  assert.ok(probe.attempts > 100, `probe made ${probe.attempts} attempts`);
  assert.equal(h.code, 0, `long-lived connections: ${h.stdout} ${h.stderr}`);
  const summary = JSON.parse(h.stdout.trim().split('\n').pop()!) as { opened: number; errors: Record<string, number>; sent: number; echoed: number };
  assert.equal(summary.opened, 20);
  assert.deepEqual(summary.errors, {});
  assert.equal(summary.echoed, summary.sent);
  // Their connections over, the old agents leave by themselves.
  await eventually('old agents exited after draining', async () => (!pidAlive(old.a) && !pidAlive(old.b) ? true : undefined), 30_000);
  assert.ok(pidAlive(pidA) && pidAlive(pidB), 'the new agents run');
});

test('after the upgrade the new agents serve alone', async (t) => {
  if (!requireLab(t, lab)) return;
  const target = `${lab.pod('mesh/server').ip}:8080`;
  const r = await lab.exec('mesh/client', [process.execPath, join(FIXTURES, 'conn-storm.mjs'), '--targets', target, '--count', '200', '--concurrency', '50'], { stdio: 'pipe' });
  assert.equal(r.code, 0, r.stdout);
});
