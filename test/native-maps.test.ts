// SPDX-License-Identifier: Apache-2.0
// Map CRUD and iteration over hash, array and LRU maps, raw and through typed codecs.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';

import { SyscallError, WeftError } from '../agent/errors.js';
import { TypedMap, struct, ipv4, u16, u32, u64, u8 } from '../native/codec.js';
import { BpfObject } from '../native/index.js';
import { fixture, requirePrivileges } from './helpers/privileged.js';

const Key = struct({ cookie: u64, port: u16, proto: u8, addr: ipv4 }, { size: 16 });
const Val = struct({ id: u32, bytes: u64 }, { size: 16 });

let obj: BpfObject | undefined;
after(() => obj?.close());

function loaded(t: Parameters<typeof requirePrivileges>[0]): BpfObject | undefined {
  if (!requirePrivileges(t)) return undefined;
  if (!obj) {
    obj = BpfObject.open(fixture('native_maps'));
    obj.load();
  }
  return obj;
}

const u32b = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
};
const u64b = (n: bigint): Buffer => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(n);
  return b;
};

test('object metadata lists programs and user maps', (t) => {
  const o = loaded(t);
  if (!o) return;
  assert.deepEqual(o.programNames, ['produce']);
  assert.deepEqual([...o.mapNames].sort(), ['events', 'events_lost', 'kv_array', 'kv_hash', 'kv_lru']);
  const h = o.map('kv_hash');
  assert.equal(h.type, 'hash');
  assert.equal(h.keySize, 16);
  assert.equal(h.valueSize, 16);
  assert.equal(h.maxEntries, 64);
  assert.ok(h.fd > 0);
  assert.equal(o.map('kv_lru').type, 'lru_hash');
  assert.equal(o.map('events').type, 'ringbuf');
  assert.equal(o.map('events_lost').type, 'percpu_array');
  const p = o.program('produce');
  assert.equal(p.sectionName, 'xdp');
  assert.ok(p.fd > 0);
  assert.throws(() => o.program('nope'), (e: unknown) => e instanceof WeftError && e.code === 'WEFT_ERR_BPF');
  assert.throws(() => o.map('nope'), (e: unknown) => e instanceof WeftError && e.code === 'WEFT_ERR_BPF');
});

test('hash map CRUD through a typed codec', (t) => {
  const o = loaded(t);
  if (!o) return;
  const m = new TypedMap(o.map('kv_hash'), Key, Val);
  const k1 = { cookie: 1n, port: 443, proto: 6, addr: '10.0.0.1' };
  const k2 = { cookie: 2n, port: 80, proto: 17, addr: '192.168.1.20' };
  const k3 = { cookie: 0xffffffffffffffffn, port: 65535, proto: 255, addr: '255.255.255.255' };
  m.set(k1, { id: 1, bytes: 100n });
  m.set(k2, { id: 2, bytes: 200n });
  m.set(k3, { id: 3, bytes: 1n << 63n });
  assert.deepEqual(m.get(k1), { id: 1, bytes: 100n });
  assert.deepEqual(m.get(k3), { id: 3, bytes: 1n << 63n });
  assert.equal(m.get({ ...k1, port: 444 }), undefined);

  const entries = m.entries().sort((a, b) => a[1].id - b[1].id);
  assert.deepEqual(entries, [
    [k1, { id: 1, bytes: 100n }],
    [k2, { id: 2, bytes: 200n }],
    [k3, { id: 3, bytes: 1n << 63n }],
  ]);
  assert.equal(m.keys().length, 3);

  m.set(k1, { id: 11, bytes: 101n }, 'exist');
  assert.deepEqual(m.get(k1), { id: 11, bytes: 101n });
  assert.throws(
    () => m.set(k1, { id: 12, bytes: 0n }, 'noexist'),
    (e: unknown) => {
      assert.ok(e instanceof SyscallError, String(e));
      assert.ok(e instanceof WeftError);
      assert.equal(e.code, 'WEFT_ERR_SYSCALL');
      assert.equal(e.errnoName, 'EEXIST');
      assert.equal(e.errno, 17);
      assert.match(e.syscall, /MAP_UPDATE/);
      assert.match(e.message, /File exists \(EEXIST\) \[map kv_hash\]/);
      return true;
    },
  );
  assert.throws(() => m.set({ ...k1, cookie: 99n }, { id: 0, bytes: 0n }, 'exist'), (e: unknown) => {
    return e instanceof SyscallError && e.errnoName === 'ENOENT';
  });

  assert.equal(m.delete(k2), true);
  assert.equal(m.delete(k2), false, 'delete of a missing key is false');
  assert.equal(m.get(k2), undefined);
  assert.equal(m.entries().length, 2);
  m.delete(k1);
  m.delete(k3);
  assert.deepEqual(m.entries(), []);
});

test('raw keys of the wrong size are usage errors', (t) => {
  const o = loaded(t);
  if (!o) return;
  const h = o.map('kv_hash');
  assert.throws(() => h.lookup(Buffer.alloc(3)), (e: unknown) => e instanceof WeftError && e.code === 'WEFT_ERR_NATIVE_USAGE');
  assert.throws(() => h.update(Buffer.alloc(16), Buffer.alloc(15)), (e: unknown) => e instanceof WeftError && e.code === 'WEFT_ERR_NATIVE_USAGE');
  assert.throws(() => new TypedMap(h, u32, Val), WeftError);
});

test('array map: all slots exist, update in place, delete is EINVAL', (t) => {
  const o = loaded(t);
  if (!o) return;
  const a = o.map('kv_array');
  assert.equal(a.type, 'array');
  assert.equal(a.keys().length, 8);
  assert.deepEqual(a.lookup(u32b(5)), u64b(0n));
  a.update(u32b(5), u64b(12345n));
  assert.deepEqual(a.lookup(u32b(5)), u64b(12345n));
  assert.equal(a.lookup(u32b(8)), undefined, 'out of range index reads as missing');
  const typed = new TypedMap(a, u32, u64);
  const entries = typed.entries();
  assert.equal(entries.length, 8);
  assert.deepEqual(entries.find(([k]) => k === 5), [5, 12345n]);
  assert.throws(() => a.delete(u32b(5)), (e: unknown) => e instanceof SyscallError && e.errnoName === 'EINVAL');
  assert.throws(() => a.update(u32b(1), u64b(1n), 'noexist'), (e: unknown) => e instanceof SyscallError && e.errnoName === 'EEXIST');
  a.update(u32b(5), u64b(0n));
});

test('LRU hash evicts instead of failing when full', (t) => {
  const o = loaded(t);
  if (!o) return;
  const lru = new TypedMap(o.map('kv_lru'), u32, u32);
  assert.equal(lru.map.type, 'lru_hash');
  for (let i = 0; i < 200; i++) lru.set(i, i * 2);
  const entries = lru.entries();
  assert.ok(entries.length <= 32 && entries.length > 0, `lru holds ${entries.length}`);
  for (const [k, v] of entries) assert.equal(v, k * 2);
  assert.equal(lru.get(199), 398, 'the most recent insert survives');
  for (const k of lru.keys()) assert.equal(lru.delete(k), true);
  assert.equal(lru.entries().length, 0);
});
