// Every lost flow is accounted for, exactly: under a follower that does not read (on a ring far
// smaller than what is produced, with kernel losses in between), through the relay with a slow
// client, at the server's shutdown, and in the flow bench's own count (received + reported lost ==
// produced). A flow pushed out of the ring is history, not a follower's loss.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setImmediate as tick } from 'node:timers/promises';
import { ObserverServer } from '../agent/flows/observer-server.js';
import { FlowStore } from '../agent/flows/store.js';
import type { GetFlowsResponse } from '../agent/flows/types.js';
import { createLogger } from '../agent/log.js';
import { AgentMetrics } from '../agent/metrics/agent-metrics.js';
import { PeerPool, parsePeer, staticPeers } from '../agent/relay/peers.js';
import { RelayServer } from '../agent/relay/server.js';
import { runFlowBench } from '../bench/flows.js';
import { follow, makeFlow } from './helpers/flow-fixtures.js';
import { sample } from './helpers/metrics.js';

const log = createLogger('test', { level: 'silent' });

interface Tally {
  flows: Map<string, number>;
  lost: Map<string, number>;
}

/** Flows received and losses reported, by node and by `node/source`. */
function tally(rs: GetFlowsResponse[]): Tally {
  const t: Tally = { flows: new Map(), lost: new Map() };
  for (const r of rs) {
    if (r.flow) t.flows.set(r.node_name, (t.flows.get(r.node_name) ?? 0) + 1);
    if (r.lost_events) {
      const k = `${r.node_name}/${r.lost_events.source}`;
      t.lost.set(k, (t.lost.get(k) ?? 0) + Number(r.lost_events.num_events_lost));
    }
  }
  return t;
}

/** Polls a condition the server has no event for (a follower's subscription in the store). */
async function waitFor(what: string, cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const accounted = (rs: GetFlowsResponse[]): number => rs.reduce((n, r) => n + (r.flow ? 1 : r.lost_events ? Number(r.lost_events.num_events_lost) : 0), 0);

/** Adds `n` flows to `store` with event-loop turns in between, as the agent's producers do. */
async function produce(store: FlowStore, n: number, prefix: string, node = 'node-a'): Promise<void> {
  const base = Date.now();
  for (let i = 0; i < n; i++) {
    store.add(makeFlow({ at: base + i, absolute: true, uuid: `${prefix}-${i}`, node }));
    if (i % 200 === 199) await tick();
  }
}

test('a follower that does not read, on a 16-flow ring: received + reported lost == produced, exactly; the metric agrees', async () => {
  const store = new FlowStore(16, 'node-a');
  const metrics = new AgentMetrics();
  const server = new ObserverServer({ store, nodeName: 'node-a', version: 't', log, followQueue: 50, onQueueLoss: (n) => metrics.recordLost('OBSERVER_EVENTS_QUEUE', n) });
  const address = `127.0.0.1:${await server.listen('127.0.0.1', 0)}`;
  const f = follow(address, { follow: true });
  try {
    await waitFor('the follower to subscribe', () => store.followers === 1);
    store.add(makeFlow({ at: Date.now(), absolute: true, uuid: 'primer' }));
    await f.until((rs) => rs.length === 1);
    f.call.pause();
    const produced = 4000;
    const kernelLost = 7;
    await produce(store, produced / 2, 'a');
    // The kernel's own losses, as the agent reports them (store, stream and metric).
    store.reportLost('PERF_EVENT_RING_BUFFER', kernelLost);
    metrics.recordLost('PERF_EVENT_RING_BUFFER', kernelLost);
    await produce(store, produced / 2, 'b');
    f.call.resume();
    await f.until((rs) => accounted(rs) >= 1 + produced + kernelLost, 15_000);
    const t = tally(f.responses);
    const queueLost = t.lost.get('node-a/OBSERVER_EVENTS_QUEUE') ?? 0;
    assert.ok(queueLost > 0, 'the follower lost flows');
    assert.equal((t.flows.get('node-a') ?? 0) - 1 + queueLost, produced, 'received + reported lost == produced');
    assert.equal(t.lost.get('node-a/PERF_EVENT_RING_BUFFER'), kernelLost);
    assert.equal(accounted(f.responses), 1 + produced + kernelLost, 'nothing more than produced either');
    const text = await metrics.registry.metrics();
    assert.equal(sample(text, 'hubble_lost_events_total', { source: 'observer_events_queue' }), queueLost);
    assert.equal(sample(text, 'hubble_lost_events_total', { source: 'perf_event_ring_buffer' }), kernelLost);
    // Order: every flow after a gap is the next one produced.
    let next = 0;
    const order = ['primer', ...Array.from({ length: produced / 2 }, (_, i) => `a-${i}`), ...Array.from({ length: produced / 2 }, (_, i) => `b-${i}`)];
    for (const r of f.responses) {
      if (r.lost_events?.source === 'OBSERVER_EVENTS_QUEUE') next += Number(r.lost_events.num_events_lost);
      else if (r.flow) assert.equal(r.flow.uuid, order[next++]);
    }
    assert.equal(next, order.length);
  } finally {
    f.close();
    await server.close();
  }
});

test('through the relay with a client that does not read: per node, received + reported lost == produced, exactly', async () => {
  const stores = { a: new FlowStore(32, 'node-a'), b: new FlowStore(32, 'node-b') };
  const lostAt: Record<string, number> = { 'node-a': 0, 'node-b': 0 };
  const servers = (['a', 'b'] as const).map(
    (k) => new ObserverServer({ store: stores[k], nodeName: `node-${k}`, version: 't', log, followQueue: 40, onQueueLoss: (n) => (lostAt[`node-${k}`]! += n) }),
  );
  const ports = await Promise.all(servers.map((s) => s.listen('127.0.0.1', 0)));
  const pool = new PeerPool(staticPeers([parsePeer(`node-a=127.0.0.1:${ports[0]}`), parsePeer(`node-b=127.0.0.1:${ports[1]}`)]), log, 60_000);
  await pool.start();
  const relay = new RelayServer({ pool, version: 'r', log, name: 'relay', recheckMs: 60_000, connectTimeoutMs: 2000 });
  const f = follow(`127.0.0.1:${await relay.listen('127.0.0.1', 0)}`, { follow: true });
  try {
    await waitFor('the relay to subscribe at both nodes', () => stores.a.followers === 1 && stores.b.followers === 1);
    stores.a.add(makeFlow({ at: Date.now(), absolute: true, uuid: 'primer-a', node: 'node-a' }));
    stores.b.add(makeFlow({ at: Date.now(), absolute: true, uuid: 'primer-b', node: 'node-b' }));
    await f.until((rs) => rs.filter((r) => r.flow).length === 2);
    f.call.pause();
    const produced = 3000;
    await Promise.all([produce(stores.a, produced, 'a', 'node-a'), produce(stores.b, produced, 'b', 'node-b')]);
    f.call.resume();
    await f.until((rs) => accounted(rs) >= 2 + 2 * produced, 20_000);
    const t = tally(f.responses);
    for (const node of ['node-a', 'node-b']) {
      const lost = t.lost.get(`${node}/OBSERVER_EVENTS_QUEUE`) ?? 0;
      assert.equal((t.flows.get(node) ?? 0) - 1 + lost, produced, `${node}: received + reported lost == produced`);
      assert.equal(lostAt[node], lost, `${node}: the metric hook saw the same losses`);
    }
    assert.ok([...t.lost.values()].reduce((a, b) => a + b, 0) > 0, 'the slow client made the nodes drop flows');
  } finally {
    f.close();
    await relay.close();
    pool.close();
    await Promise.all(servers.map((s) => s.close()));
  }
});

test('flows still queued for a follower when the server shuts down are counted as lost', async () => {
  const store = new FlowStore(16, 'node-a');
  let teardownLost = 0;
  const server = new ObserverServer({ store, nodeName: 'node-a', version: 't', log, followQueue: 500, onQueueLoss: (n) => (teardownLost += n) });
  const address = `127.0.0.1:${await server.listen('127.0.0.1', 0)}`;
  const f = follow(address, { follow: true });
  try {
    await waitFor('the follower to subscribe', () => store.followers === 1);
    store.add(makeFlow({ at: Date.now(), absolute: true, uuid: 'primer' }));
    await f.until((rs) => rs.length === 1);
    f.call.pause();
    // Fewer than the queue holds: nothing is dropped while the server runs.
    await produce(store, 400, 'q');
    await server.close();
    const inStream = f.responses.reduce((n, r) => n + (r.lost_events ? Number(r.lost_events.num_events_lost) : 0), 0);
    assert.equal(inStream, 0);
    assert.ok(teardownLost > 0, 'what was still queued at shutdown is counted');
    assert.ok(teardownLost <= 400);
  } finally {
    f.close();
    await server.close();
  }
});

test('the flow bench counts exactly: missing == reported in LostEvents (primer flows before the subscription are not the follower\'s)', async () => {
  // resultsDir undefined: the bench's result files are not touched.
  const r = await runFlowBench({ ingestFlows: 2000, repetitions: 1, rings: [64], followRate: 20_000, followSeconds: 1, print: false, resultsDir: undefined });
  assert.equal(r.follow.sent, 20_000);
  assert.equal(r.follow.missing, r.follow.reportedLost, `missing ${r.follow.missing}, reported ${r.follow.reportedLost}`);
  assert.equal(r.follow.received + r.follow.reportedLost, r.follow.sent);
});
