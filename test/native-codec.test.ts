// SPDX-License-Identifier: Apache-2.0
// Codec layouts must match what the C compiler does; no privileges needed.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { WeftError } from '../agent/errors.js';
import { array, be16, bytes, cstring, decode, encode, ipv4, ipv6, pad, struct, u16, u32, u64, u8 } from '../native/codec.js';

test('struct offsets follow C alignment and tail padding', () => {
  // struct kv_key { __u64 cookie; __u16 port; __u8 proto; __be32 addr; } -> 0, 8, 10, 12; sizeof 16
  const Key = struct({ cookie: u64, port: u16, proto: u8, addr: ipv4 }, { size: 16 });
  assert.deepEqual(Key.offsets, { cookie: 0, port: 8, proto: 10, addr: 12 });
  assert.equal(Key.align, 8);
  const buf = encode(Key, { cookie: 0x0102030405060708n, port: 443, proto: 6, addr: '10.1.2.3' });
  assert.equal(buf.toString('hex'), '0807060504030201' + 'bb01' + '06' + '00' + '0a010203');
  assert.deepEqual(decode(Key, buf), { cookie: 0x0102030405060708n, port: 443, proto: 6, addr: '10.1.2.3' });
  // struct { __u32 id; __u64 bytes; } -> 0, 8; sizeof 16; struct { __u8 a; __u16 b; __u8 c; } -> sizeof 6
  assert.equal(struct({ id: u32, bytes: u64 }).size, 16);
  assert.equal(struct({ a: u8, b: u16, c: u8 }).size, 6);
  assert.equal(struct({ a: u8, b: u16, c: u8 }, { packed: true }).size, 4);
  assert.throws(() => struct({ a: u8, b: u32 }, { size: 5 }), WeftError);
});

test('explicit padding, arrays, byte strings and network order', () => {
  const S = struct({ port: be16, _pad: pad(2), ids: array(u32, 2), tag: cstring(8), raw: bytes(3) });
  assert.equal(S.size, 2 + 2 + 8 + 8 + 3 + 1);
  const v = { port: 8080, ids: [1, 2], tag: 'weft', raw: Buffer.from([1, 2, 3]) };
  const buf = encode(S, v);
  assert.equal(buf.readUInt16BE(0), 8080);
  assert.deepEqual(decode(S, buf), v);
  assert.throws(() => encode(S, { ...v, tag: 'too long a tag' }), WeftError);
});

test('ipv6 codec round-trips in RFC 5952 form', () => {
  for (const [input, out] of [
    ['2001:db8::1', '2001:db8::1'],
    ['fd00:0:0:0:0:0:0:10', 'fd00::10'],
    ['::', '::'],
    ['::1', '::1'],
    ['1:0:0:2:0:0:0:3', '1:0:0:2::3'],
    ['::ffff:10.0.0.1', '::ffff:a00:1'],
  ] as const) {
    const buf = encode(ipv6, input);
    assert.equal(buf.length, 16);
    assert.equal(decode(ipv6, buf), out, input);
  }
  assert.equal(encode(ipv6, '::ffff:10.0.0.1').subarray(12).toString('hex'), '0a000001');
  assert.throws(() => encode(ipv6, '10.0.0.1'), WeftError);
  assert.throws(() => encode(ipv4, '::1'), WeftError);
});
