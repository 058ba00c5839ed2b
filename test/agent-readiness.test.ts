// The agent's readiness endpoint (15021, reachable from the network) says how many pods are not
// enrolled, never which: pod names stay on the loopback admin API. The agent is built without its
// datapath (nothing started), and its pod bookkeeping is set the way reconcile leaves it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '../agent/log.js';
import { NodeAgent, type AgentOptions } from '../agent/node/agent.js';
import type { ReadinessServer } from '../agent/metrics/admin-server.js';

function get(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on('error', reject);
  });
}

test('readiness over the network gives a count of pods not enrolled, not their names', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-readiness-'));
  const options = {
    node: 'node-a',
    source: { start: () => undefined, close: () => undefined },
    ca: { createCertificate: () => Promise.reject(new Error('no CA in this test')) },
    certTtlSeconds: 3600,
    trustDomain: 'cluster.local',
    rootNamespace: 'istio-system',
    cgroup: '/sys/fs/cgroup',
    bpffs: join(dir, 'bpf'),
    readinessPort: 0,
    adminPort: 0,
    excludeOutboundPorts: [],
    excludeInboundPorts: [],
    observerPort: 0,
    metricsPort: 0,
    flowRingSize: 16,
    fastPaths: { splice: false, hbone: false },
    stateDir: join(dir, 'state'),
    podSocket: join(dir, 'pods.sock'),
    version: 'weft/test',
    log: createLogger('test', { level: 'silent' }),
  } as unknown as AgentOptions;
  // The constructor only builds (start() is what opens the datapath and listens).
  const agent = new (NodeAgent as unknown as new (o: AgentOptions) => NodeAgent)(options);
  const inside = agent as unknown as {
    synced: boolean;
    readiness: ReadinessServer;
    decisions?: Map<string, unknown>;
    failed: Map<string, unknown>;
  };
  const secret = ['shop/payments-7f9c', 'hr/salaries-0'];
  inside.synced = true;
  if (inside.decisions instanceof Map) {
    // Pods the agent decided to enroll whose proxy is not up.
    inside.decisions = new Map(secret.map((k) => [k, { kind: 'enroll', workload: { key: k } }]));
  } else {
    for (const k of secret) inside.failed.set(k, { error: 'netns gone', cookie: undefined });
  }
  await inside.readiness.listen('127.0.0.1', 0);
  try {
    const r = await get(inside.readiness.port, '/healthz/ready');
    assert.equal(r.status, 503);
    const body = JSON.parse(r.body) as { ready: boolean; reason?: string };
    assert.equal(body.ready, false);
    assert.match(body.reason ?? '', /\b2\b/, 'the count is there');
    for (const name of [...secret, 'payments', 'salaries', 'shop/', 'hr/']) assert.ok(!r.body.includes(name), `readiness leaks ${name}: ${r.body}`);
  } finally {
    inside.readiness.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
