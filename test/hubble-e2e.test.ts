// Flows end to end on a lab: connections proxied and denied by the mesh come out of `weft observe`
// through the relay in Hubble's JSON, with pods, namespaces, identities, ports and bytes; a denial as
// DROPPED / POLICY_DENIED from the node that denied it, within a second; and each agent's /metrics
// counts them with Istio's and Hubble's metric names.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { labDown, labUp, type LabHandle } from '../agent/lab/index.js';
import { agentAdminGet, eventually } from '../agent/node/admin-client.js';
import { ObserverClient } from '../agent/relay/client.js';
import { metricsOf, sample } from './helpers/metrics.js';
import { repoRoot, requirePrivileges, requireLab } from './helpers/privileged.js';

const run = promisify(execFile);
const LAB = `h${process.pid.toString(36)}`;
const FIXTURES = join(repoRoot(), 'test', 'fixtures');
const WEFT = join(repoRoot(), 'dist', 'agent', 'cli', 'main.js');
let lab: LabHandle | undefined;

after(async () => {
  if (lab) await labDown({ name: LAB });
});

interface JsonFlow {
  flow: {
    time: string;
    verdict: string;
    drop_reason_desc?: string;
    node_name: string;
    traffic_direction: string;
    IP: { source: string; destination: string };
    l4: { TCP: { source_port: number; destination_port: number } };
    source?: { namespace?: string; pod_name?: string };
    destination?: { namespace?: string; pod_name?: string };
    extensions?: { '@type': string; source_principal?: string; destination_principal?: string; bytes_sent?: string | number; bytes_received?: string | number };
  };
  node_name: string;
}

async function observe(args: string[]): Promise<JsonFlow[]> {
  const { stdout } = await run(process.execPath, [WEFT, 'observe', '-o', 'json', ...args], { maxBuffer: 64 * 1024 * 1024 });
  return stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as JsonFlow)
    .filter((r) => r.flow);
}

async function connects(from: string, target: string): Promise<boolean> {
  const r = await lab!.exec(from, [process.execPath, join(FIXTURES, 'conn-storm.mjs'), '--targets', target, '--count', '1', '--timeout', '5000'], { stdio: 'pipe' });
  return r.code === 0;
}

test('lab up with a relay', async (t) => {
  if (!requirePrivileges(t)) return;
  lab = await labUp([join(FIXTURES, 'mesh-lab.yaml')], { name: LAB });
  // The relay reaches every node's Observer API before any flow is asked for.
  const relay = new ObserverClient('localhost:4245');
  try {
    const status = await eventually('the relay to connect both nodes', async () => {
      const s = await relay.serverStatus(3000);
      return Number(s.num_connected_nodes?.value ?? 0) === 2 ? s : undefined;
    });
    assert.equal(Number(status.num_unavailable_nodes?.value ?? 0), 0);
    const nodes = (await relay.getNodes(3000)).nodes.map((n) => n.name).sort();
    assert.deepEqual(nodes, ['node-a', 'node-b']);
  } finally {
    relay.close();
  }
});

test('an allowed connection is FORWARDED in weft observe with pods, namespaces, identities, ports and bytes', async (t) => {
  if (!requireLab(t, lab)) return;
  const client = lab.pod('mesh/client');
  const server = lab.pod('mesh/server');
  assert.equal(await connects('mesh/client', 'server.mesh:80'), true);
  const flows = await eventually('the flow at the relay', async () => {
    const got = await observe(['--from-pod', 'mesh/client', '--to-pod', 'mesh/server', '--verdict', 'FORWARDED', '--last', '50']);
    const inbound = got.filter((f) => f.flow.traffic_direction === 'INGRESS');
    const outbound = got.filter((f) => f.flow.traffic_direction === 'EGRESS');
    return inbound.length && outbound.length ? { inbound: inbound.at(-1)!, outbound: outbound.at(-1)! } : undefined;
  });
  for (const f of [flows.inbound, flows.outbound]) {
    assert.equal(f.flow.verdict, 'FORWARDED');
    assert.equal(f.flow.source?.namespace, 'mesh');
    assert.equal(f.flow.source?.pod_name, 'client');
    assert.equal(f.flow.destination?.namespace, 'mesh');
    assert.equal(f.flow.destination?.pod_name, 'server');
    assert.equal(f.flow.IP.source, client.ip);
    assert.equal(f.flow.IP.destination, server.ip);
    assert.equal(f.flow.l4.TCP.destination_port, 8080);
    assert.ok(f.flow.l4.TCP.source_port > 0);
    assert.equal(f.flow.extensions?.source_principal, 'cluster.local/ns/mesh/sa/client');
    assert.equal(f.flow.extensions?.destination_principal, 'cluster.local/ns/mesh/sa/server');
    assert.ok(Number(f.flow.extensions?.bytes_sent) > 0, 'bytes sent');
    assert.ok(Number(f.flow.extensions?.bytes_received) > 0, 'bytes received');
  }
  assert.equal(flows.inbound.node_name, 'node-b');
  assert.equal(flows.outbound.node_name, 'node-a');
});

test('a denied connection is DROPPED with POLICY_DENIED, from the node that denied it, within a second', async (t) => {
  if (!requireLab(t, lab)) return;
  const file = join(lab.resourcesDir, 'zz-deny.yaml');
  writeFileSync(
    file + '.tmp',
    'apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-other, namespace: mesh}\nspec:\n  selector: {matchLabels: {app: server}}\n  action: DENY\n  rules:\n  - from: [{source: {principals: ["cluster.local/ns/mesh/sa/other"]}}]\n',
  );
  renameSync(file + '.tmp', file);
  await eventually('the policy on node-b', async () => {
    const d = await agentAdminGet<{ policies: { authorization: string[] } }>(lab!.node('node-b').netnsPath, '/config_dump');
    return d.policies.authorization.includes('mesh/deny-other') ? true : undefined;
  });
  const deniedAt = Date.now();
  assert.equal(await connects('mesh/other', 'server.mesh:80'), false);
  const drop = await eventually(
    'the drop at the relay',
    async () => (await observe(['--from-pod', 'mesh/other', '--verdict', 'DROPPED', '--last', '10'])).at(-1),
    5000,
  );
  assert.equal(drop.flow.drop_reason_desc, 'POLICY_DENIED');
  assert.equal(drop.node_name, 'node-b');
  assert.equal(drop.flow.destination?.pod_name, 'server');
  assert.equal(drop.flow.extensions?.source_principal, 'cluster.local/ns/mesh/sa/other');
  const flowTime = Date.parse(drop.flow.time);
  t.diagnostic(`drop recorded ${flowTime - deniedAt} ms after the attempt started`);
  assert.ok(flowTime - deniedAt < 1000, `the drop was recorded ${flowTime - deniedAt} ms after the attempt`);
});

test('agent /metrics counts connections with Istio and Hubble metric names', async (t) => {
  if (!requireLab(t, lab)) return;
  const nodeB = lab.node('node-b').ip;
  const labels = { reporter: 'destination', source_workload: 'client', destination_workload: 'server', connection_security_policy: 'mutual_tls' };
  const before = await metricsOf(nodeB);
  const opened0 = sample(before, 'istio_tcp_connections_opened_total', labels);
  const closed0 = sample(before, 'istio_tcp_connections_closed_total', labels);
  const received0 = sample(before, 'istio_tcp_received_bytes_total', labels);
  const forwarded0 = sample(before, 'hubble_flows_processed_total', { verdict: 'FORWARDED' });
  const r = await lab.exec('mesh/client', [process.execPath, join(FIXTURES, 'conn-storm.mjs'), '--targets', 'server.mesh:80', '--count', '7', '--bytes', '100'], { stdio: 'pipe' });
  assert.equal(r.code, 0, r.stdout);
  const after = await eventually('the counters', async () => {
    const text = await metricsOf(nodeB);
    return sample(text, 'istio_tcp_connections_closed_total', labels) - closed0 >= 7 ? text : undefined;
  });
  assert.equal(sample(after, 'istio_tcp_connections_opened_total', labels) - opened0, 7);
  assert.equal(sample(after, 'istio_tcp_connections_closed_total', labels) - closed0, 7);
  // each payload: "id=N " + 100 bytes + newline, at least 106 bytes
  assert.ok(sample(after, 'istio_tcp_received_bytes_total', labels) - received0 >= 7 * 106);
  assert.ok(sample(after, 'hubble_flows_processed_total', { verdict: 'FORWARDED' }) - forwarded0 >= 7);
  assert.match(after, /hubble_lost_events_total/);
  assert.match(after, /weft_certificate_expiry_seconds\{[^}]*identity="spiffe:\/\/cluster.local\/ns\/mesh\/sa\/server"/);
});
