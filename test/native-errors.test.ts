// SPDX-License-Identifier: Apache-2.0
// Errors from the addon are weft's own classes with syscall/errno/errnoName, verifier logs are
// included in load failures, and handles are unusable (not dangling) after close.
import assert from 'node:assert/strict';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';

import { SyscallError, WeftError } from '../agent/errors.js';
import { BpfLink, BpfMap, BpfObject, libbpfVersion } from '../native/index.js';
import { BPFFS, RUN_PREFIX, fixture, requirePrivileges } from './helpers/privileged.js';

const PIN_DIR = join(BPFFS, `${RUN_PREFIX}-err`);
after(() => rmSync(PIN_DIR, { recursive: true, force: true }));

const isUsage = (e: unknown): boolean => e instanceof WeftError && e.code === 'WEFT_ERR_NATIVE_USAGE';

test('libbpf version is reported', () => {
  assert.match(libbpfVersion(), /^\d+\.\d+/);
});

test('opening a missing object file is a SyscallError with ENOENT', () => {
  assert.throws(
    () => BpfObject.open('/nonexistent/weft/missing.bpf.o'),
    (e: unknown) => {
      assert.ok(e instanceof SyscallError, String(e));
      assert.ok(e instanceof WeftError);
      assert.ok(e instanceof Error);
      assert.equal(e.name, 'SyscallError');
      assert.equal(e.code, 'WEFT_ERR_SYSCALL');
      assert.equal(e.errno, 2);
      assert.equal(e.errnoName, 'ENOENT');
      assert.equal(e.syscall, 'bpf_object__open_file');
      assert.match(e.message, /^bpf_object__open_file: No such file or directory \(ENOENT\) \[\/nonexistent\/weft\/missing\.bpf\.o\]/);
      return true;
    },
  );
});

test('BpfMap.open on a non-bpf path, a missing pin and a program pin', (t) => {
  if (!requirePrivileges(t)) return;
  assert.throws(() => BpfMap.open('/etc/hostname'), (e: unknown) => {
    assert.ok(e instanceof SyscallError, String(e));
    assert.match(e.syscall, /OBJ_GET/);
    assert.ok(e.errno > 0);
    return true;
  });
  assert.throws(() => BpfMap.open(join(BPFFS, `${RUN_PREFIX}-does-not-exist`)), (e: unknown) => {
    return e instanceof SyscallError && e.errnoName === 'ENOENT';
  });
  assert.throws(() => BpfLink.open('/etc/hostname'), SyscallError);

  mkdirSync(PIN_DIR, { recursive: true });
  const obj = BpfObject.open(fixture('native_maps'));
  t.after(() => obj.close());
  obj.load();
  const progPin = join(PIN_DIR, 'prog');
  obj.program('produce').pin(progPin);
  assert.throws(() => BpfMap.open(progPin), (e: unknown) => e instanceof WeftError && e.code === 'WEFT_ERR_BPF');
  obj.program('produce').unpin(progPin);
});

test('a verifier rejection carries the verifier log', (t) => {
  if (!requirePrivileges(t)) return;
  const obj = BpfObject.open(fixture('native_bad'));
  t.after(() => obj.close());
  assert.throws(
    () => obj.load(),
    (e: unknown) => {
      assert.ok(e instanceof SyscallError, String(e));
      assert.equal(e.syscall, 'bpf_object__load');
      assert.ok(['EACCES', 'EINVAL', 'EPERM'].includes(e.errnoName), e.errnoName);
      assert.match(e.message, /native_bad\.bpf\.o/);
      assert.match(e.message, /invalid mem access|map_value_or_null/);
      assert.ok(e.message.length < 8192, `message length ${e.message.length}`);
      return true;
    },
  );
});

test('handles are unusable after close, close is idempotent', (t) => {
  if (!requirePrivileges(t)) return;
  const obj = BpfObject.open(fixture('native_maps'));
  obj.load();
  const map = obj.map('kv_array');
  const prog = obj.program('produce');
  assert.throws(() => obj.load(), isUsage, 'double load');
  obj.close();
  obj.close();
  assert.throws(() => obj.load(), isUsage);
  assert.throws(() => obj.programNames, isUsage);
  assert.throws(() => obj.map('kv_array'), isUsage);
  assert.throws(() => map.lookup(Buffer.alloc(4)), isUsage);
  assert.throws(() => map.fd, isUsage);
  assert.throws(() => prog.fd, isUsage);
  assert.throws(() => prog.testRun({}), isUsage);
  map.close();

  const unloaded = BpfObject.open(fixture('native_maps'));
  t.after(() => unloaded.close());
  assert.throws(() => unloaded.map('kv_array').lookup(Buffer.alloc(4)), isUsage, 'map of an unloaded object');
  assert.throws(() => unloaded.program('produce').testRun({}), isUsage);
  assert.throws(() => Reflect.construct(BpfMap, []), isUsage, 'not constructible from JS');
});
