// SPDX-License-Identifier: Apache-2.0
// close() releases every fd: thousands of object/consumer lifecycles leave the fd table unchanged.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { BpfObject, RingBufferConsumer } from '../native/index.js';
import { fixture, openFdCount, requirePrivileges } from './helpers/privileged.js';

test('no fd leaks across object load/close, open/close and consumer create/close', { timeout: 300_000 }, (t) => {
  if (!requirePrivileges(t)) return;
  // Warm up once so lazily created process-wide fds (libbpf feature probes) are not counted.
  const warm = BpfObject.open(fixture('native_attach'));
  warm.load();
  warm.close();
  const before = openFdCount();

  for (let i = 0; i < 1000; i++) {
    const obj = BpfObject.open(fixture('native_attach'));
    obj.load();
    assert.ok(obj.program('connect_a').fd > 0);
    obj.close();
  }
  assert.equal(openFdCount(), before, 'after 1000x open+load+close');

  for (let i = 0; i < 1000; i++) {
    const obj = BpfObject.open(fixture('native_maps'));
    obj.close();
  }
  assert.equal(openFdCount(), before, 'after 1000x open+close');

  const rb = BpfObject.open(fixture('native_maps'));
  rb.load();
  const events = rb.map('events');
  const during = openFdCount();
  for (let i = 0; i < 200; i++) {
    const c = new RingBufferConsumer(events, () => {}, { pollMs: 5 });
    c.close();
  }
  assert.equal(openFdCount(), during, 'after 200x consumer create+close');
  rb.close();
  assert.equal(openFdCount(), before, 'after closing everything');
});
