// Shared pieces of the hostile-input tests: a check that nothing reached Object.prototype, the
// names that have a meaning on every object, garbage values for any field, and the contract every
// ConfigProblem must keep (names a file, a line and a bounded, printable reason).
import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { ConfigProblem } from '../../agent/errors.js';

/** Keys that mean something to JavaScript objects: every parser must treat them as plain data or refuse them. */
export const PROTO_KEYS = ['__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', 'valueOf', '__defineGetter__'] as const;

/** Everything Object.prototype has, with the values, to compare after a run. */
export function snapshotObjectPrototype(): Map<string | symbol, PropertyDescriptor> {
  return new Map(Reflect.ownKeys(Object.prototype).map((k) => [k, Object.getOwnPropertyDescriptor(Object.prototype, k)!]));
}

/** Fails when a property was added to, removed from or changed on Object.prototype, or `({}).polluted` exists. */
export function assertPrototypeUntouched(before: Map<string | symbol, PropertyDescriptor>): void {
  const probe = {} as Record<string, unknown>;
  assert.equal(probe.polluted, undefined, 'Object.prototype.polluted was set');
  assert.equal(Object.getPrototypeOf(probe), Object.prototype);
  const now = snapshotObjectPrototype();
  assert.deepEqual([...now.keys()].map(String).sort(), [...before.keys()].map(String).sort(), 'Object.prototype gained or lost a property');
  for (const [k, d] of before) {
    const n = now.get(k)!;
    assert.equal(n.value, d.value, `Object.prototype.${String(k)} changed`);
    assert.equal(n.get, d.get, `Object.prototype.${String(k)} getter changed`);
    assert.equal(n.set, d.set, `Object.prototype.${String(k)} setter changed`);
  }
}

// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;

/**
 * The contract of a problem: the file given, a line inside the file (1-based; 0 only for a file that
 * could not be read), a reason that is a short printable sentence. `maxLine` is the file's line count.
 */
export function assertProblemShape(p: ConfigProblem, file: string, maxLine: number): void {
  assert.equal(p.file, file, JSON.stringify(p));
  const minLine = p.reason.startsWith('cannot read file: ') ? 0 : 1;
  assert.ok(Number.isInteger(p.line) && p.line >= minLine && p.line <= maxLine + 1, `line ${p.line} outside 1..${maxLine + 1}: ${JSON.stringify(p).slice(0, 500)}`);
  assert.equal(typeof p.field, 'string');
  assert.equal(typeof p.reason, 'string');
  assert.ok(p.reason.length > 0, 'empty reason');
  assert.ok(p.reason.length <= 600, `reason of ${p.reason.length} characters: ${p.reason.slice(0, 300)}`);
  assert.ok(p.field.length <= 600, `field of ${p.field.length} characters`);
  assert.ok(!CONTROL.test(p.reason), `control character in reason: ${JSON.stringify(p.reason)}`);
  assert.ok(!CONTROL.test(p.field), `control character in field: ${JSON.stringify(p.field)}`);
  assert.doesNotMatch(p.reason, /internal error/, 'a validator threw');
}

export function lineCount(text: string): number {
  return text.split(/\r\n|\r|\n/).length;
}

/** Runs fn and fails when it took longer than `ms` (a hang shows up as a slow run, not a stuck test). */
export function bounded<T>(ms: number, what: string, fn: () => T): T {
  const t0 = performance.now();
  const r = fn();
  const took = performance.now() - t0;
  assert.ok(took < ms, `${what} took ${took.toFixed(0)} ms (limit ${ms} ms)`);
  return r;
}

/** A value of any JSON-ish type, weighted towards the ones validators get wrong. */
export function garbage(): fc.Arbitrary<unknown> {
  const leaf = fc.oneof(
    fc.constant(null),
    fc.boolean(),
    fc.integer(),
    fc.double(),
    fc.constantFrom(0, -1, 65536, 2 ** 31, 2 ** 53 + 2, -(2 ** 63), 1e308, -0, Number.MAX_SAFE_INTEGER),
    fc.string(),
    fc.fullUnicodeString({ maxLength: 20 }),
    fc.constantFrom('', ' ', '*', '/', '0', '-1', '1.5', '99999', '0x10', 'null', '~', 'true', 'yes', '\u0000', '\u001b[2J', '\u202e', '\ud83d\ude00'),
    fc.constantFrom(...PROTO_KEYS),
    fc.integer({ min: 70, max: 3000 }).map((n) => 'x'.repeat(n)),
  );
  return fc.letrec<{ v: unknown }>((tie) => ({
    v: fc.oneof(
      { depthSize: 'small', withCrossShrink: true },
      leaf,
      fc.array(tie('v'), { maxLength: 3 }),
      fc.dictionary(fc.oneof(fc.string({ maxLength: 8 }), fc.constantFrom(...PROTO_KEYS)), tie('v'), { maxKeys: 3 }),
    ),
  })).v;
}

/** An object whose own key `key` holds `value` (`{ __proto__: x }` as a literal would set the prototype instead). */
export function withOwnKey(obj: Record<string, unknown>, key: string, value: unknown): Record<string, unknown> {
  const out: Record<string, unknown> = { ...obj };
  Object.defineProperty(out, key, { value, enumerable: true, writable: true, configurable: true });
  return out;
}

/** Nested `[[[...]]]` (flow) n levels deep. */
export function deepFlow(n: number): string {
  return `${'['.repeat(n)}${']'.repeat(n)}`;
}

/** Ten anchors each referencing the previous one ten times: 10^10 nodes once expanded. */
export function aliasBomb(indent = ''): string {
  let out = `${indent}a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n`;
  for (let i = 1; i < 10; i++) out += `${indent}a${i}: &a${i} [${Array(10).fill(`*a${i - 1}`).join(', ')}]\n`;
  return out;
}
