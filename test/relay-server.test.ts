// The relay over two real ObserverServers on 127.0.0.1: history merged in time order with number/
// first across nodes, node_name on every response, follow from both, a node stopped mid-stream
// reported (stream and ServerStatus) while the other goes on, discovery from the controller's status,
// the cap on concurrent streams and `until` far in the future.
import { test, before, after } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ObserverServer } from '../agent/flows/observer-server.js';
import { FlowStore } from '../agent/flows/store.js';
import { createLogger } from '../agent/log.js';
import { ObserverClient } from '../agent/relay/client.js';
import { HistoryWindow, KWayMerge } from '../agent/relay/merge.js';
import { PeerPool, controllerPeers, parsePeer, staticPeers } from '../agent/relay/peers.js';
import { RelayServer } from '../agent/relay/server.js';
import type { GetFlowsResponse } from '../agent/flows/types.js';
import { collect, describe, flowsOf, follow, makeFlow } from './helpers/flow-fixtures.js';

const log = createLogger('test', { level: 'silent' });
const stores = { a: new FlowStore(100, 'node-a'), b: new FlowStore(100, 'node-b') };
const nodes: Record<'a' | 'b', ObserverServer> = {
  a: new ObserverServer({ store: stores.a, nodeName: 'node-a', version: 't', log }),
  b: new ObserverServer({ store: stores.b, nodeName: 'node-b', version: 't', log }),
};
let pool: PeerPool;
let relay: RelayServer;
let relayAddress: string;

before(async () => {
  // node-a holds flows at 0, 2, 4, 6, 8 s; node-b at 1, 3, 5, 7, 9 s.
  for (let i = 0; i < 10; i++) (i % 2 === 0 ? stores.a : stores.b).add(makeFlow({ at: i * 1000, uuid: `f${i}`, node: i % 2 === 0 ? 'node-a' : 'node-b' }));
  const pa = await nodes.a.listen('127.0.0.1', 0);
  const pb = await nodes.b.listen('127.0.0.1', 0);
  pool = new PeerPool(staticPeers([parsePeer(`node-a=127.0.0.1:${pa}`), parsePeer(`node-b=127.0.0.1:${pb}`)]), log, 60_000);
  await pool.start();
  relay = new RelayServer({ pool, version: 'relay-t', log, name: 'relay', recheckMs: 200, connectTimeoutMs: 1000 });
  relayAddress = `127.0.0.1:${await relay.listen('127.0.0.1', 0)}`;
});

after(async () => {
  await relay.close();
  pool.close();
  await nodes.a.close();
  await nodes.b.close();
});

const status = (rs: GetFlowsResponse[]): string[] => rs.filter((r) => r.node_status).map(describe);

test('k-way merge and the history window (unit)', () => {
  const out: string[] = [];
  const r = (t: number, id: string): GetFlowsResponse => ({ flow: makeFlow({ at: t, uuid: id }), node_name: 'x', time: makeFlow({ at: t }).time });
  const m = new KWayMerge(['a', 'b'], (x) => out.push(x.flow!.uuid));
  m.push('a', r(0, 'a0'));
  m.push('a', r(2, 'a2'));
  assert.deepEqual(out, [], 'waits for b');
  m.push('b', r(1, 'b1'));
  assert.deepEqual(out, ['a0', 'b1']);
  m.end('b');
  assert.deepEqual(out, ['a0', 'b1', 'a2']);
  m.end('a');
  assert.ok(m.done);

  const kept: string[] = [];
  const w = new HistoryWindow(2, false, (x) => kept.push(describe(x)));
  w.add(r(0, 'x0'));
  w.add({ lost_events: { source: 'OBSERVER_EVENTS_QUEUE', num_events_lost: '3' }, node_name: 'x', time: makeFlow({ at: 1 }).time });
  w.add(r(2, 'x2'));
  w.add(r(3, 'x3'));
  w.finish();
  assert.deepEqual(kept, ['lost OBSERVER_EVENTS_QUEUE 3', 'flow x2@x', 'flow x3@x'], 'a loss is never cut away');
});

test('history: merged in time order across nodes, number/first applied to the merge, node_name set', async () => {
  const last = await collect(relayAddress, { number: 4 });
  assert.deepEqual(status(last), ['status NODE_CONNECTED node-a,node-b']);
  assert.deepEqual(flowsOf(last), ['f6', 'f7', 'f8', 'f9']);
  assert.deepEqual(
    last.filter((r) => r.flow).map((r) => r.node_name),
    ['node-a', 'node-b', 'node-a', 'node-b'],
  );
  assert.deepEqual(flowsOf(await collect(relayAddress, { number: 3, first: true })), ['f0', 'f1', 'f2']);
  assert.deepEqual(flowsOf(await collect(relayAddress, { number: 0 })), ['f0', 'f1', 'f2', 'f3', 'f4', 'f5', 'f6', 'f7', 'f8', 'f9']);
  assert.deepEqual(flowsOf(await collect(relayAddress, { number: 10, whitelist: [{ node_name: ['node-b'] }] })), ['f1', 'f3', 'f5', 'f7', 'f9']);
});

test('ServerStatus and GetNodes aggregate both nodes', async () => {
  const client = new ObserverClient(relayAddress);
  try {
    const s = await client.serverStatus(3000);
    assert.equal(s.num_flows, '10');
    assert.equal(s.max_flows, '200');
    assert.equal(s.num_connected_nodes?.value, 2);
    assert.equal(s.num_unavailable_nodes?.value ?? 0, 0);
    assert.equal(s.version, 'relay-t');
    const n = await client.getNodes(3000);
    assert.deepEqual(
      n.nodes.map((x) => [x.name, x.state, x.num_flows]),
      [
        ['node-a', 'NODE_CONNECTED', '5'],
        ['node-b', 'NODE_CONNECTED', '5'],
      ],
    );
    const ns = await client.getNamespaces(3000);
    assert.deepEqual(ns.namespaces.map((x) => x.namespace), ['default']);
  } finally {
    client.close();
  }
});

test('follow: flows from both nodes; a node stopped is reported and the stream goes on; ServerStatus counts it', async () => {
  const f = follow(relayAddress, { follow: true });
  await f.until((rs) => status(rs).length === 1);
  assert.deepEqual(status(f.responses), ['status NODE_CONNECTED node-a,node-b']);
  await new Promise((r) => setTimeout(r, 100));
  const now = Date.now();
  stores.a.add(makeFlow({ at: now, absolute: true, uuid: 'live-a', node: 'node-a' }));
  stores.b.add(makeFlow({ at: now + 1, absolute: true, uuid: 'live-b', node: 'node-b' }));
  await f.until((rs) => flowsOf(rs).length === 2);
  assert.deepEqual(flowsOf(f.responses).sort(), ['live-a', 'live-b']);

  await nodes.b.close();
  await f.until((rs) => status(rs).some((s) => s.startsWith('status NODE_UNAVAILABLE node-b')));
  stores.a.add(makeFlow({ at: Date.now(), absolute: true, uuid: 'live-a2', node: 'node-a' }));
  await f.until((rs) => flowsOf(rs).includes('live-a2'));

  const client = new ObserverClient(relayAddress);
  try {
    const s = await client.serverStatus(3000);
    assert.equal(s.num_connected_nodes?.value, 1);
    assert.equal(s.num_unavailable_nodes?.value, 1);
    assert.deepEqual(s.unavailable_nodes, ['node-b']);
    const n = await client.getNodes(3000);
    assert.deepEqual(
      n.nodes.map((x) => [x.name, x.state]),
      [
        ['node-a', 'NODE_CONNECTED'],
        ['node-b', 'NODE_UNAVAILABLE'],
      ],
    );
  } finally {
    client.close();
  }
  const history = await collect(relayAddress, { number: 2 });
  assert.deepEqual(status(history), ['status NODE_CONNECTED node-a', 'status NODE_UNAVAILABLE node-b']);
  assert.deepEqual(flowsOf(history), ['live-a', 'live-a2']);
  f.close();
});

test('discovery from the controller: every Node with an InternalIP, at the Observer port', async () => {
  const http: Server = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ nodes: [{ name: 'n1', internalIP: '10.0.0.2' }, { name: 'n2' }, { name: 'n3', internalIP: 'fd00::3' }] }));
  });
  await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
  try {
    const { port } = http.address() as AddressInfo;
    assert.deepEqual(await controllerPeers(`http://127.0.0.1:${port}`)(), [
      { name: 'n1', address: '10.0.0.2:4244' },
      { name: 'n3', address: '[fd00::3]:4244' },
    ]);
  } finally {
    http.close();
  }
  assert.throws(() => parsePeer('no-address'), /NAME=HOST:PORT/);
});

test('the relay caps concurrent GetFlows streams: the next is RESOURCE_EXHAUSTED until one ends', async () => {
  const capped = new RelayServer({ pool, version: 'relay-t', log, name: 'relay', recheckMs: 200, connectTimeoutMs: 1000, maxStreams: 1 });
  const addr = `127.0.0.1:${await capped.listen('127.0.0.1', 0)}`;
  const f = follow(addr, { follow: true });
  try {
    await f.until((rs) => status(rs).length >= 1);
    await assert.rejects(collect(addr, { number: 1 }), (err: grpc.ServiceError) => err.code === grpc.status.RESOURCE_EXHAUSTED && /limit 1/.test(err.details));
    f.close();
    await f.ended;
    // The slot comes back when the server sees the cancellation: retry until it has.
    const deadline = Date.now() + 5000;
    for (;;) {
      try {
        await collect(addr, { number: 1 });
        break;
      } catch (err) {
        if ((err as grpc.ServiceError).code !== grpc.status.RESOURCE_EXHAUSTED || Date.now() > deadline) throw err;
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  } finally {
    f.close();
    await capped.close();
  }
});

test('follow through the relay with until a year ahead keeps streaming', async () => {
  const f = follow(relayAddress, { follow: true, until: { seconds: String(Math.floor((Date.now() + 365 * 86_400_000) / 1000)), nanos: 0 } });
  let ended = false;
  void f.ended.then(() => (ended = true));
  try {
    await f.until((rs) => status(rs).some((s) => s.startsWith('status NODE_CONNECTED')));
    // The relay's and the node's until timers would have fired after 1 ms had they overflowed.
    await new Promise((r) => setTimeout(r, 100));
    stores.a.add(makeFlow({ at: Date.now(), absolute: true, uuid: 'far-until-relay', node: 'node-a' }));
    await f.until((rs) => flowsOf(rs).includes('far-until-relay'));
    assert.equal(ended, false);
  } finally {
    f.close();
  }
});
