// The pieces behind the controller's refusals, on their own: the per-node token bucket (burst, refill,
// independence of nodes, bounded memory) and the revocation list's grammar.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_CSR_RATE_LIMIT, KeyedTokenBucket } from '../agent/controller/rate-limit.js';
import { normalizeSerial, parseRevocations } from '../agent/controller/revocation.js';

test('token bucket: a burst, then the refill rate; each key has its own bucket', () => {
  let now = 0;
  const b = new KeyedTokenBucket({ burst: 3, perSecond: 2 }, () => now);
  assert.deepEqual([b.take('a'), b.take('a'), b.take('a'), b.take('a')], [true, true, true, false]);
  assert.equal(b.retryAfterSeconds('a'), 1);
  assert.equal(b.take('b'), true, 'another key is not affected');
  now += 499;
  assert.equal(b.take('a'), false, 'not yet a whole token after 499 ms at 2/s');
  now += 2;
  assert.equal(b.take('a'), true);
  now += 60_000;
  // Refill stops at the burst size.
  assert.deepEqual([b.take('a'), b.take('a'), b.take('a'), b.take('a')], [true, true, true, false]);
});

test('token bucket: buckets that refilled completely are dropped when there are many', () => {
  let now = 0;
  const b = new KeyedTokenBucket({ burst: 1, perSecond: 1 }, () => now);
  for (let i = 0; i < 1024; i++) b.take(`node-${i}`);
  now += 2000; // all of them full again
  b.take('newcomer');
  assert.equal((b as unknown as { buckets: Map<string, unknown> }).buckets.size, 1);
  assert.equal(b.take('node-0'), true);
});

test('token bucket: nonsense limits are refused; the default covers a few hundred service accounts at once', () => {
  assert.throws(() => new KeyedTokenBucket({ burst: 0, perSecond: 1 }), RangeError);
  assert.throws(() => new KeyedTokenBucket({ burst: 1, perSecond: 0 }), RangeError);
  assert.throws(() => new KeyedTokenBucket({ burst: Infinity, perSecond: 1 }), RangeError);
  assert.ok(DEFAULT_CSR_RATE_LIMIT.burst >= 300);
});

test('revocation list: node names, serials in any hex spelling, comments; other lines reported', () => {
  const r = parseRevocations(['# revoked 2025-01-01', 'node-1', '  node-2  # stolen laptop', '', '00:AB:cd:01', 'DEADBEEF', 'not/a node', 'zz'].join('\n'));
  assert.deepEqual([...r.nodes].sort(), ['DEADBEEF', 'node-1', 'node-2', 'zz'].sort());
  assert.deepEqual([...r.serials].sort(), ['ABCD01', 'DEADBEEF']);
  assert.deepEqual(r.invalid, [{ line: 7, text: 'not/a node' }]);
  assert.equal(normalizeSerial('00:0a:BC'), 'ABC');
  assert.equal(normalizeSerial('00'), '0');
});
