// The TypeScript mirror of bpf/include/weft.h: byte layouts must match the C structs exactly.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  EVENT_SIZE,
  decodeEvent,
  decodeOriginalDst,
  decodeSockAddr,
  decodeSpliceCount,
  encodeIpKey,
  encodeSockKey,
  encodeSpliceCtl,
  encodeSockAddr,
  encodeTupleKey,
} from '../agent/datapath/layout.js';
import { u16, u32, u64 } from '../native/codec.js';

// Host-order scalars, as the C side reads them.
const hostOrder = {
  u16: { read: (b: Buffer, o: number) => u16.decode(b, o) },
  u32: { read: (b: Buffer, o: number) => u32.decode(b, o) },
  u64: { read: (b: Buffer, o: number) => u64.decode(b, o), write: (b: Buffer, v: bigint, o: number) => u64.encode(v, b, o) },
};

test('sockaddr round-trips IPv4 and IPv6, port in host order, family AF_INET/AF_INET6', () => {
  const v4 = encodeSockAddr({ ip: '10.244.1.2', port: 8080 });
  assert.equal(v4.length, 20);
  assert.deepEqual([...v4.subarray(0, 4)], [10, 244, 1, 2]);
  assert.equal(hostOrder.u16.read(v4, 16), 8080);
  assert.equal(v4[18], 2);
  assert.deepEqual(decodeSockAddr(v4), { ip: '10.244.1.2', port: 8080 });

  for (const ip of ['::1', 'fd00::2', '2001:db8:0:1::5', 'fe80::fc:ff:fe00:1', '::ffff:10.0.0.1']) {
    const b = encodeSockAddr({ ip, port: 443 });
    assert.equal(b[18], 10, ip);
    const back = decodeSockAddr(b).ip;
    assert.equal(encodeSockAddr({ ip: back, port: 443 }).equals(b), true, `${ip} → ${back}`);
  }
  assert.equal(decodeSockAddr(encodeSockAddr({ ip: '2001:db8:0:0:1:0:0:1', port: 1 })).ip, '2001:db8::1:0:0:1');
  assert.throws(() => encodeSockAddr({ ip: 'not-an-ip', port: 1 }), /not an IP address/);
});

test('tuple key: netns cookie then the client address, padded to 32 bytes', () => {
  const k = encodeTupleKey(343n, { ip: '127.0.0.1', port: 48582 });
  assert.equal(k.length, 32);
  assert.equal(hostOrder.u64.read(k, 0), 343n);
  assert.deepEqual(decodeSockAddr(k, 8), { ip: '127.0.0.1', port: 48582 });
  assert.deepEqual([...k.subarray(28)], [0, 0, 0, 0]);
});

test('ip key: 16 address bytes then the family as u32', () => {
  const k = encodeIpKey('10.247.2.2');
  assert.equal(k.length, 20);
  assert.deepEqual([...k.subarray(0, 4)], [10, 247, 2, 2]);
  assert.equal(hostOrder.u32.read(k, 16), 2);
});

test('splice key, control and count: netns then local and remote ends; 48, 64 and 16 bytes', () => {
  const target = { netnsCookie: 7n, local: { ip: '10.249.1.3', port: 40000 }, remote: { ip: '10.249.1.2', port: 5001 } };
  const key = encodeSockKey(target);
  assert.equal(key.length, 48);
  assert.equal(hostOrder.u64.read(key, 0), 7n);
  assert.deepEqual(decodeSockAddr(key, 8), target.local);
  assert.deepEqual(decodeSockAddr(key, 28), target.remote);
  const ctl = encodeSpliceCtl({ target, forwarded: 1n << 40n, armed: true });
  assert.equal(ctl.length, 64);
  assert.equal(ctl.subarray(0, 48).equals(key), true);
  assert.equal(hostOrder.u64.read(ctl, 48), 1n << 40n);
  assert.equal(hostOrder.u32.read(ctl, 56), 1);
  const count = Buffer.alloc(16);
  hostOrder.u64.write(count, 5n << 32n, 0);
  hostOrder.u64.write(count, 3n, 8);
  assert.deepEqual(decodeSpliceCount(count), { passed: 5n << 32n, redirected: 3n });
});

test('original destination and event records decode from the C layout', () => {
  const od = Buffer.alloc(40);
  encodeSockAddr({ ip: '10.96.0.11', port: 80 }, od, 0);
  hostOrder.u64.write(od, 99n, 24);
  hostOrder.u64.write(od, 123456789n, 32);
  assert.deepEqual(decodeOriginalDst(od), { dst: { ip: '10.96.0.11', port: 80 }, netnsCookie: 99n, startNs: 123456789n });

  const e = Buffer.alloc(EVENT_SIZE);
  hostOrder.u64.write(e, 5n, 0);
  hostOrder.u64.write(e, 343n, 8);
  hostOrder.u64.write(e, 77n, 16);
  encodeSockAddr({ ip: '127.0.0.1', port: 40000 }, e, 24);
  encodeSockAddr({ ip: '10.247.2.2', port: 8080 }, e, 44);
  e.writeUInt8(4, 64); // CLOSED
  e.writeUInt8(1, 65); // outbound
  hostOrder.u64.write(e, 1000n, 72);
  hostOrder.u64.write(e, 2000n, 80);
  hostOrder.u64.write(e, 3000n, 88);
  const ev = decodeEvent(e);
  assert.equal(ev.kind, 'CLOSED');
  assert.equal(ev.direction, 'outbound');
  assert.equal(ev.reason, 'NONE');
  assert.deepEqual(ev.src, { ip: '127.0.0.1', port: 40000 });
  assert.deepEqual(ev.dst, { ip: '10.247.2.2', port: 8080 });
  assert.equal(ev.bytesSent, 1000n);
  assert.equal(ev.bytesReceived, 2000n);
  assert.equal(ev.durationNs, 3000n);
  assert.equal(ev.socketCookie, 77n);
  assert.throws(() => decodeEvent(Buffer.alloc(10)), RangeError);
  // an inbound event has no source socket address family set when unknown
  const noSrc = Buffer.alloc(EVENT_SIZE);
  encodeSockAddr({ ip: '10.0.0.1', port: 1 }, noSrc, 44);
  assert.equal(decodeEvent(noSrc).src, undefined);
});
