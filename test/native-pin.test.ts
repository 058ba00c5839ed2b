// SPDX-License-Identifier: Apache-2.0
// Pinning and adoption (maps, LIBBPF_PIN_BY_NAME, links) and the attach paths: cgroup, netns
// (sk_lookup), tc (inside a netns) and sk_msg on a sockhash.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, rmSync, rmdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import { WeftError } from '../agent/errors.js';
import { BpfLink, BpfMap, BpfObject, connectInNetns, listenInNetns } from '../native/index.js';
import {
  BPFFS,
  RUN_PREFIX,
  cgroup2Root,
  createNetns,
  deleteNetns,
  fixture,
  requirePrivileges,
  sh,
} from './helpers/privileged.js';

const PIN_DIR = join(BPFFS, `${RUN_PREFIX}-pin`);
const NETNS = `${RUN_PREFIX}-pin`;
let cgroupDir: string | undefined;

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

before(() => {
  if (process.getuid?.() === 0 && existsSync(BPFFS)) {
    try {
      mkdirSync(PIN_DIR, { recursive: true });
    } catch {
      /* requirePrivileges will explain */
    }
  }
});

after(() => {
  rmSync(PIN_DIR, { recursive: true, force: true });
  if (cgroupDir) {
    try {
      rmdirSync(cgroupDir);
    } catch {
      /* already gone */
    }
  }
  deleteNetns(NETNS);
});

function cgroupAttachments(cg: string): Array<{ id: number; attach_type: string; name: string }> {
  return JSON.parse(sh('bpftool', ['-j', 'cgroup', 'show', cg]).trim() || '[]');
}

test('pinned map survives its object and is adopted with BpfMap.open', (t) => {
  if (!requirePrivileges(t)) return;
  mkdirSync(PIN_DIR, { recursive: true });
  const pin = join(PIN_DIR, 'kv_array');
  const obj = BpfObject.open(fixture('native_maps'));
  try {
    obj.load();
    const m = obj.map('kv_array');
    m.update(u32b(3), u64b(42n));
    m.pin(pin);
  } finally {
    obj.close();
  }
  assert.ok(existsSync(pin));
  const adopted = BpfMap.open(pin);
  try {
    assert.equal(adopted.name, 'kv_array');
    assert.equal(adopted.type, 'array');
    assert.equal(adopted.keySize, 4);
    assert.equal(adopted.valueSize, 8);
    assert.equal(adopted.maxEntries, 8);
    assert.deepEqual(adopted.lookup(u32b(3)), u64b(42n));
    adopted.update(u32b(4), u64b(7n));
    adopted.unpin(pin);
    assert.ok(!existsSync(pin));
    assert.deepEqual(adopted.lookup(u32b(4)), u64b(7n), 'fd stays valid after unpin');
  } finally {
    adopted.close();
    adopted.close();
  }
  assert.throws(() => adopted.lookup(u32b(3)), (e: unknown) => e instanceof WeftError && e.code === 'WEFT_ERR_NATIVE_USAGE');
});

test('LIBBPF_PIN_BY_NAME with pinRoot: a second object reuses the pinned map', (t) => {
  if (!requirePrivileges(t)) return;
  const root = join(PIN_DIR, 'root');
  mkdirSync(root, { recursive: true });
  const a = BpfObject.open(fixture('native_pin'), { pinRoot: root });
  t.after(() => a.close());
  a.load();
  assert.ok(existsSync(join(root, 'shared_state')), 'map pinned by name under pinRoot');
  a.map('shared_state').update(u32b(1), u64b(77n));

  const b = BpfObject.open(fixture('native_pin'), { pinRoot: root });
  t.after(() => b.close());
  b.load();
  assert.deepEqual(b.map('shared_state').lookup(u32b(1)), u64b(77n), 'value written via the first object');
  b.map('shared_state').update(u32b(2), u64b(88n));
  assert.deepEqual(a.map('shared_state').lookup(u32b(2)), u64b(88n), 'and the other way round');
  a.close();
  b.close();
  const adopted = BpfMap.open(join(root, 'shared_state'));
  t.after(() => adopted.close());
  assert.equal(adopted.keys().length, 2);
});

test('pinned cgroup link survives close, is adopted, updated and detached', (t) => {
  if (!requirePrivileges(t)) return;
  cgroupDir = join(cgroup2Root(), `${RUN_PREFIX}-cg`);
  mkdirSync(cgroupDir, { recursive: true });
  const pin = join(PIN_DIR, 'connect4_link');

  const obj = BpfObject.open(fixture('native_attach'));
  obj.load();
  const link = obj.program('connect_a').attachCgroup(cgroupDir);
  const info = link.info();
  assert.equal(info.type, 'cgroup');
  assert.equal(typeof info.cgroupId, 'bigint');
  assert.ok(info.cgroupId! > 0n);
  assert.ok(info.progId > 0);
  link.pin(pin);
  link.close();
  link.close();
  obj.close();
  assert.throws(() => link.info(), (e: unknown) => e instanceof WeftError && e.code === 'WEFT_ERR_NATIVE_USAGE');

  let attached = cgroupAttachments(cgroupDir);
  assert.equal(attached.length, 1, JSON.stringify(attached));
  assert.match(attached[0]!.attach_type, /connect4|inet4_connect/);
  assert.equal(attached[0]!.name, 'connect_a');

  const adopted = BpfLink.open(pin);
  t.after(() => adopted.close());
  assert.equal(adopted.info().id, info.id);
  assert.equal(adopted.info().progId, info.progId);

  const obj2 = BpfObject.open(fixture('native_attach'));
  t.after(() => obj2.close());
  obj2.load();
  adopted.updateProgram(obj2.program('connect_b'));
  assert.notEqual(adopted.info().progId, info.progId);
  attached = cgroupAttachments(cgroupDir);
  assert.equal(attached.length, 1, JSON.stringify(attached));
  assert.equal(attached[0]!.name, 'connect_b');

  adopted.detach();
  assert.equal(cgroupAttachments(cgroupDir).length, 0);
  adopted.unpin();
  assert.ok(!existsSync(pin));
  adopted.close();
});

test('sk_lookup attaches to a netns; tc attaches inside a netns and detaches', (t) => {
  if (!requirePrivileges(t)) return;
  const nsPath = createNetns(NETNS);
  const obj = BpfObject.open(fixture('native_attach'));
  t.after(() => obj.close());
  obj.load();

  const link = obj.program('lookup_pass').attachNetns(nsPath);
  const info = link.info();
  assert.equal(info.type, 'netns');
  assert.equal(info.netnsIno, statSync(nsPath).ino);
  link.close();

  const tc = obj.program('tc_pass').attachTc(1 /* lo */, 'ingress', nsPath);
  assert.match(sh('tc', ['-n', NETNS, 'filter', 'show', 'dev', 'lo', 'ingress']), /tc_pass/);
  tc.detach();
  assert.doesNotMatch(sh('tc', ['-n', NETNS, 'filter', 'show', 'dev', 'lo', 'ingress']), /tc_pass/);
  tc.close(); // idempotent
  assert.throws(() => obj.program('tc_pass').attachTc(1, 'sideways' as 'ingress'), WeftError);
});

test('sk_msg attaches to a sockhash that holds an established socket', async (t) => {
  if (!requirePrivileges(t)) return;
  const obj = BpfObject.open(fixture('native_attach'));
  t.after(() => obj.close());
  obj.load();
  const socks = obj.map('socks');
  assert.equal(socks.type, 'sockhash');
  const att = obj.program('msg_pass').attachSockmap(socks);
  const hostNs = '/proc/self/ns/net';
  const lfd = listenInNetns(hostNs, { host: '127.0.0.1', port: 0 });
  const net = await import('node:net');
  const server = net.createServer((s) => s.on('data', (d) => s.write(d)));
  await new Promise<void>((r) => server.listen({ fd: lfd }, r));
  t.after(() => server.close());
  const port = (server.address() as { port: number }).port;
  const cfd = await connectInNetns(hostNs, { host: '127.0.0.1', port });
  socks.updateSocket(u64b(1n), cfd);
  assert.equal(socks.keys().length, 1);
  const sock = new net.Socket({ fd: cfd, readable: true, writable: true });
  t.after(() => sock.destroy());
  const echoed = new Promise<string>((r) => sock.once('data', (d) => r(d.toString())));
  sock.write('through sk_msg');
  assert.equal(await echoed, 'through sk_msg');
  att.detach();
  att.close();
});
