// SPDX-License-Identifier: Apache-2.0
// One error catalogue although native/ owns its error classes: the agent's WeftError and SyscallError
// are native/errors.ts's classes, every native code is in ErrorCodes under the same key, and an error
// raised by native/*.ts is an agent WeftError with the code callers check. No privileges needed (the
// addon is not loaded).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ConfigError, ErrorCodes, SyscallError, WeftError } from '../agent/errors.js';
import { encode, u16 } from '../native/codec.js';
import { NativeErrorCodes, SyscallError as NativeSyscallError, WeftError as NativeWeftError } from '../native/errors.js';

test('the agent catalogue is built on native/errors.ts: same classes, native codes under the same keys', () => {
  assert.equal(WeftError, NativeWeftError);
  assert.equal(SyscallError, NativeSyscallError);
  for (const [key, code] of Object.entries(NativeErrorCodes)) assert.equal((ErrorCodes as Record<string, string>)[key], code, key);
  assert.deepEqual(
    Object.keys(NativeErrorCodes).sort(),
    ['BPF', 'NATIVE_USAGE', 'SETUP', 'SYSCALL'],
  );
  const codes = Object.values(ErrorCodes);
  assert.equal(new Set(codes).size, codes.length, 'every code is unique');
  for (const c of codes) assert.match(c, /^WEFT_ERR_[A-Z_]+$/);
});

test('an error raised by native/*.ts is an agent WeftError with the usage code', () => {
  assert.throws(
    () => encode(u16, 70_000),
    (e: unknown) => {
      assert.ok(e instanceof WeftError, String(e));
      assert.ok(e instanceof Error);
      assert.equal(e.name, 'WeftError');
      assert.equal(e.code, ErrorCodes.NATIVE_USAGE);
      assert.equal(e.code, 'WEFT_ERR_NATIVE_USAGE');
      return true;
    },
  );
});

test('SyscallError, as the addon constructs it, is a WeftError of the catalogue; agent subclasses still extend it', () => {
  const e = new NativeSyscallError('bpf(2) MAP_UPDATE_ELEM: Operation not permitted (EPERM)', 'bpf(2) MAP_UPDATE_ELEM', 1, 'EPERM');
  assert.ok(e instanceof WeftError);
  assert.ok(e instanceof SyscallError);
  assert.equal(e.name, 'SyscallError');
  assert.equal(e.code, ErrorCodes.SYSCALL);
  assert.deepEqual([e.syscall, e.errno, e.errnoName], ['bpf(2) MAP_UPDATE_ELEM', 1, 'EPERM']);
  const c = new ConfigError([{ file: 'a.yaml', line: 3, field: 'spec.port', reason: 'must be a number' }]);
  assert.ok(c instanceof WeftError);
  assert.ok(!(c instanceof SyscallError));
  assert.equal(c.code, 'WEFT_ERR_CONFIG_INVALID');
  assert.equal(c.message, 'a.yaml:3: spec.port: must be a number');
  const cause = new Error('inner');
  const w = new WeftError(ErrorCodes.LAB, 'outer', { cause });
  assert.equal(w.cause, cause);
  assert.equal(w.code, 'WEFT_ERR_LAB');
});
