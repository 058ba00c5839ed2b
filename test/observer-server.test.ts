// The node's Observer API over real gRPC on 127.0.0.1 with a FlowStore of known flows: history
// selection (number, first, since, until, filters), follow in order, a slow follower's losses with
// exact counts, the store's losses, ServerStatus / GetNodes / GetNamespaces / empty event streams,
// the cap on concurrent streams, and `until` far in the future (beyond setTimeout's range).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setImmediate as tick } from 'node:timers/promises';
import * as grpc from '@grpc/grpc-js';
import { DEFAULT_MAX_STREAMS, ObserverServer } from '../agent/flows/observer-server.js';
import { MAX_TIMEOUT_MS, setLongTimeout } from '../agent/system/long-timeout.js';
import { flowProtos } from '../agent/flows/proto.js';
import { FlowStore } from '../agent/flows/store.js';
import type { GetFlowsResponse } from '../agent/flows/types.js';
import { createLogger } from '../agent/log.js';
import { ObserverClient } from '../agent/relay/client.js';
import { T0_MS, collect, describe, flowsOf, follow, makeFlow } from './helpers/flow-fixtures.js';

const log = createLogger('test', { level: 'silent' });
const ts = (ms: number): { seconds: string; nanos: number } => ({ seconds: String(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1e6 });

let store: FlowStore;
let queueLosses = 0;
let server: ObserverServer;
let address: string;

before(async () => {
  store = new FlowStore(100, 'node-a');
  // 10 flows, one per second: even ones FORWARDED default/client → default/server, odd ones DROPPED shop/web → shop/db.
  for (let i = 0; i < 10; i++) {
    store.add(
      makeFlow(
        i % 2 === 0
          ? { at: i * 1000, uuid: `f${i}` }
          : { at: i * 1000, uuid: `f${i}`, verdict: 'DROPPED', src: { ns: 'shop', pod: 'web', ip: '10.1.1.3', port: 5000 + i }, dst: { ns: 'shop', pod: 'db', ip: '10.1.2.3', port: 5432 } },
      ),
    );
  }
  server = new ObserverServer({ store, nodeName: 'node-a', version: '0.1.0-test', log, followQueue: 50, onQueueLoss: (n) => (queueLosses += n) });
  address = `127.0.0.1:${await server.listen('127.0.0.1', 0)}`;
});

after(async () => {
  await server.close();
});

test('history: number is the newest N, first the oldest N, each response with node_name and time', async () => {
  const last = await collect(address, { number: 3 });
  assert.deepEqual(flowsOf(last), ['f7', 'f8', 'f9']);
  for (const r of last) {
    assert.equal(r.node_name, 'node-a');
    assert.deepEqual(r.time, r.flow!.time);
  }
  assert.deepEqual(flowsOf(await collect(address, { number: 2, first: true })), ['f0', 'f1']);
  assert.deepEqual(flowsOf(await collect(address, { number: 0 })), ['f0', 'f1', 'f2', 'f3', 'f4', 'f5', 'f6', 'f7', 'f8', 'f9']);
});

test('history: since and until (inclusive), with and without number', async () => {
  assert.deepEqual(flowsOf(await collect(address, { since: ts(T0_MS + 3000), until: ts(T0_MS + 6000) })), ['f3', 'f4', 'f5', 'f6']);
  assert.deepEqual(flowsOf(await collect(address, { since: ts(T0_MS + 3000), number: 2 })), ['f3', 'f4']);
  assert.deepEqual(flowsOf(await collect(address, { until: ts(T0_MS + 1500), number: 10 })), ['f0', 'f1']);
});

test('history: whitelist, blacklist and either-direction filters', async () => {
  assert.deepEqual(flowsOf(await collect(address, { number: 3, whitelist: [{ verdict: ['DROPPED'] }] })), ['f5', 'f7', 'f9']);
  assert.deepEqual(flowsOf(await collect(address, { number: 0, blacklist: [{ source_pod: ['shop/web'] }], until: ts(T0_MS + 4000) })), ['f0', 'f2', 'f4']);
  const either = await collect(address, { number: 4, whitelist: [{ source_pod: ['shop/db'] }, { destination_pod: ['shop/db'] }] });
  assert.deepEqual(flowsOf(either), ['f3', 'f5', 'f7', 'f9']);
  assert.deepEqual(flowsOf(await collect(address, { number: 10, whitelist: [{ destination_port: ['5432'], verdict: ['FORWARDED'] }] })), []);
});

test('an invalid filter or first+follow is INVALID_ARGUMENT', async () => {
  await assert.rejects(collect(address, { whitelist: [{ source_ip: ['not-an-ip'] }] }), (err: grpc.ServiceError) => err.code === grpc.status.INVALID_ARGUMENT);
  await assert.rejects(collect(address, { first: true, follow: true, number: 1 }), (err: grpc.ServiceError) => err.code === grpc.status.INVALID_ARGUMENT);
});

test('follow: history first, then every new matching flow in order; cancel unsubscribes', async () => {
  const subscribers = (): number => (store as unknown as { subscribers: Set<unknown> }).subscribers.size;
  const before = subscribers();
  const f = follow(address, { follow: true, number: 2, whitelist: [{ verdict: ['FORWARDED'] }] });
  await f.until((rs) => rs.length === 2);
  assert.deepEqual(flowsOf(f.responses), ['f6', 'f8']);
  const now = Date.now();
  store.add(makeFlow({ at: now, absolute: true, uuid: 'live-1' }));
  store.add(makeFlow({ at: now + 1, absolute: true, uuid: 'live-dropped', verdict: 'DROPPED' }));
  store.add(makeFlow({ at: now + 2, absolute: true, uuid: 'live-2' }));
  await f.until((rs) => flowsOf(rs).length === 4);
  assert.deepEqual(flowsOf(f.responses), ['f6', 'f8', 'live-1', 'live-2']);
  assert.equal(subscribers(), before + 1);
  f.close();
  await f.ended;
  for (let i = 0; i < 50 && subscribers() !== before; i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(subscribers(), before);
});

test("follow: a loss in the store reaches the stream with its source and count", async () => {
  const f = follow(address, { follow: true });
  await new Promise((r) => setTimeout(r, 100));
  store.reportLost('PERF_EVENT_RING_BUFFER', 7);
  store.add(makeFlow({ at: Date.now(), absolute: true, uuid: 'after-loss' }));
  await f.until((rs) => rs.length === 2);
  assert.deepEqual(f.responses.map(describe), ['lost PERF_EVENT_RING_BUFFER 7', 'flow after-loss@node-a']);
  assert.equal(f.responses[0]!.node_name, 'node-a');
  f.close();
});

test('follow: a client that does not read loses flows, reported as OBSERVER_EVENTS_QUEUE with exact counts at the gaps', async () => {
  const total = 5000;
  const lossesBefore = queueLosses;
  const f = follow(address, { follow: true });
  await new Promise((r) => setTimeout(r, 100));
  f.call.pause();
  const base = Date.now();
  for (let i = 0; i < total; i++) {
    store.add(makeFlow({ at: base + i, absolute: true, uuid: `slow-${i}` }));
    if (i % 250 === 249) await tick();
  }
  await new Promise((r) => setTimeout(r, 300));
  f.call.resume();
  const counted = (rs: GetFlowsResponse[]): number => rs.reduce((n, r) => n + (r.flow ? 1 : r.lost_events ? Number(r.lost_events.num_events_lost) : 0), 0);
  await f.until((rs) => counted(rs) >= total, 10_000);
  f.close();
  let expected = 0;
  let lost = 0;
  for (const r of f.responses) {
    if (r.lost_events) {
      assert.equal(r.lost_events.source, 'OBSERVER_EVENTS_QUEUE');
      expected += Number(r.lost_events.num_events_lost);
      lost += Number(r.lost_events.num_events_lost);
    } else {
      assert.equal(r.flow!.uuid, `slow-${expected}`, 'a flow right after its gap, in order');
      expected++;
    }
  }
  assert.equal(expected, total);
  assert.ok(lost > 0, 'the slow client lost flows');
  assert.ok(lost < total, 'and received some');
  assert.equal(queueLosses - lossesBefore, lost, 'every loss also reached the metrics hook');
});

test('follow: until ends the stream', async () => {
  const f = follow(address, { follow: true, until: ts(Date.now() + 400) });
  await new Promise((r) => setTimeout(r, 100));
  store.add(makeFlow({ at: Date.now(), absolute: true, uuid: 'before-until' }));
  await f.ended;
  assert.ok(flowsOf(f.responses).includes('before-until'));
  f.close();
});

test('ServerStatus, GetNodes, GetNamespaces', async () => {
  const client = new ObserverClient(address);
  try {
    const s = await client.serverStatus(2000);
    const st = store.status();
    assert.equal(s.num_flows, String(st.numFlows));
    assert.equal(s.max_flows, '100');
    assert.equal(s.seen_flows, String(st.seenFlows));
    assert.equal(s.version, '0.1.0-test');
    assert.ok(BigInt(s.uptime_ns) > 0n);
    const n = await client.getNodes(2000);
    assert.equal(n.nodes.length, 1);
    assert.equal(n.nodes[0]!.name, 'node-a');
    assert.equal(n.nodes[0]!.state, 'NODE_CONNECTED');
    assert.equal(n.nodes[0]!.num_flows, String(st.numFlows));
    const ns = await client.getNamespaces(2000);
    assert.deepEqual(
      ns.namespaces.map((x) => x.namespace),
      ['default'],
      'only the default namespace is left in the 100-flow ring',
    );
  } finally {
    client.close();
  }
});

test('GetAgentEvents and GetDebugEvents: an empty stream, not UNIMPLEMENTED', async () => {
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  try {
    for (const m of [flowProtos().observer.GetAgentEvents, flowProtos().observer.GetDebugEvents]) {
      const call = client.makeServerStreamRequest(m.path, m.requestSerialize, m.responseDeserialize, { number: 10 });
      let n = 0;
      await new Promise<void>((resolve, reject) => {
        call.on('data', () => n++);
        call.on('error', reject);
        call.on('end', resolve);
      });
      assert.equal(n, 0);
    }
  } finally {
    client.close();
  }
});

/** Polls a condition the server has no event for (a stream slot given back, a subscription made). */
async function waitFor(what: string, cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const YEAR_MS = 365 * 86_400_000;

test('concurrent streams are capped: the next one is RESOURCE_EXHAUSTED, unary calls still work, a slot frees when a stream ends', async () => {
  assert.equal(DEFAULT_MAX_STREAMS, 32);
  const capped = new ObserverServer({ store, nodeName: 'node-a', version: 't', log, maxStreams: 2 });
  const addr = `127.0.0.1:${await capped.listen('127.0.0.1', 0)}`;
  const f1 = follow(addr, { follow: true });
  const f2 = follow(addr, { follow: true });
  try {
    await waitFor('two streams served', () => capped.activeStreams === 2);
    await assert.rejects(collect(addr, { number: 1 }), (err: grpc.ServiceError) => err.code === grpc.status.RESOURCE_EXHAUSTED && /limit 2/.test(err.details));
    const client = new ObserverClient(addr);
    try {
      assert.equal((await client.serverStatus(2000)).max_flows, '100');
    } finally {
      client.close();
    }
    f1.close();
    await f1.ended;
    await waitFor('the cancelled stream to give its slot back', () => capped.activeStreams === 1);
    assert.equal(flowsOf(await collect(addr, { number: 1 })).length, 1, 'a finished history stream also gave its slot back');
    await waitFor('the history stream to give its slot back', () => capped.activeStreams === 1);
  } finally {
    f1.close();
    f2.close();
    await capped.close();
  }
});

test('follow with until a year ahead keeps streaming new flows (setTimeout would overflow and end it at once)', async () => {
  const subscribed = store.followers;
  const f = follow(address, { follow: true, until: ts(Date.now() + YEAR_MS) });
  let ended = false;
  void f.ended.then(() => (ended = true));
  try {
    await waitFor('the follower to subscribe', () => store.followers >= subscribed + 1);
    // An overflowed timer fires after 1 ms: give it far more than that to show.
    await new Promise((r) => setTimeout(r, 50));
    store.add(makeFlow({ at: Date.now(), absolute: true, uuid: 'far-until' }));
    await f.until((rs) => flowsOf(rs).includes('far-until'));
    assert.equal(ended, false, 'the stream is still open');
  } finally {
    f.close();
  }
});

test('agent events followed until a year ahead stay open', async () => {
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  const m = flowProtos().observer.GetAgentEvents;
  const call = client.makeServerStreamRequest(m.path, m.requestSerialize, m.responseDeserialize, { follow: true, until: ts(Date.now() + YEAR_MS) });
  let ended = false;
  call.on('data', () => undefined);
  call.on('error', () => (ended = true));
  call.on('status', () => (ended = true));
  try {
    // An overflowed timer fires after 1 ms: give it far more than that to show.
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(ended, false);
  } finally {
    call.cancel();
    client.close();
  }
});

test('setLongTimeout: waits past setTimeout\'s maximum in steps, fires once, can be cleared', (t) => {
  t.mock.timers.enable({ apis: ['setTimeout', 'Date'], now: 0 });
  let fired = 0;
  setLongTimeout(() => fired++, 3 * MAX_TIMEOUT_MS + 5);
  t.mock.timers.tick(MAX_TIMEOUT_MS);
  t.mock.timers.tick(MAX_TIMEOUT_MS);
  t.mock.timers.tick(MAX_TIMEOUT_MS);
  assert.equal(fired, 0);
  t.mock.timers.tick(5);
  assert.equal(fired, 1);
  t.mock.timers.tick(MAX_TIMEOUT_MS);
  assert.equal(fired, 1);
  const cleared = setLongTimeout(() => fired++, 2 * MAX_TIMEOUT_MS);
  t.mock.timers.tick(MAX_TIMEOUT_MS);
  cleared.clear();
  t.mock.timers.tick(2 * MAX_TIMEOUT_MS);
  assert.equal(fired, 1);
  setLongTimeout(() => fired++, -10);
  t.mock.timers.tick(0);
  assert.equal(fired, 2);
});
