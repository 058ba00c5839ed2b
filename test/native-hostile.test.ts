// SPDX-License-Identifier: Apache-2.0
// Hostile calls into the native addon: keys and values of the wrong length or type, numbers that
// used to wrap (2^32 + 1 as fd 1 or ifindex 1) or be undefined behaviour in C (NaN), NUL bytes in
// paths, closed handles, wrong receivers (a getter called on another class's instance used to
// crash the process), wrong argument counts, codecs given values out of range, and random garbage
// to every entry point. Each must end in a typed error (WEFT_ERR_NATIVE_USAGE, a SyscallError with
// its errno, or a TypeError), never a crash: the calls run in a child process, so a crash is a
// failed test naming the call, not a dead test runner.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { BPFFS, RUN_PREFIX, createNetns, deleteNetns, requirePrivileges } from './helpers/privileged.js';

const CHILD = join(dirname(fileURLToPath(import.meta.url)), 'helpers', 'native-hostile-child.js');
const PIN_DIR = join(BPFFS, `${RUN_PREFIX}-hostile`);
const NETNS = `${RUN_PREFIX}-hostile`;
let scratch: string | undefined;
let netnsPath: string | undefined;

before(() => {
  if (process.getuid?.() !== 0) return;
  scratch = mkdtempSync(join(tmpdir(), 'weft-native-hostile-'));
  try {
    mkdirSync(PIN_DIR, { recursive: true });
    netnsPath = createNetns(NETNS);
  } catch {
    /* requirePrivileges explains */
  }
});

after(() => {
  rmSync(PIN_DIR, { recursive: true, force: true });
  if (netnsPath) deleteNetns(NETNS);
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

interface CaseResult {
  name: string;
  ok: boolean;
  detail?: string;
}

/** Runs a group of the child; fails with the call in progress when the child dies of a signal. */
function runChild(group: string, timeoutMs: number): CaseResult[] {
  const r = spawnSync(process.execPath, [CHILD, group, PIN_DIR, netnsPath ?? '/proc/self/ns/net'], {
    // An empty scratch directory: a relative path given to the addon names nothing of the repo.
    cwd: scratch,
    encoding: 'utf8',
    timeout: timeoutMs,
    maxBuffer: 64 * 1024 * 1024,
  });
  const lines = r.stdout.split('\n').filter(Boolean);
  const started = lines.filter((l) => l.startsWith('start ')).map((l) => l.slice(6));
  const results = lines.filter((l) => l.startsWith('done ')).map((l) => JSON.parse(l.slice(5)) as CaseResult);
  const inProgress = started[started.length - 1];
  assert.equal(r.error, undefined, `child ${group}: ${String(r.error)} (during "${inProgress}")`);
  assert.equal(r.signal, null, `child ${group} died of ${r.signal} during "${inProgress}"\n${r.stderr.slice(-2000)}`);
  assert.equal(r.status, 0, `child ${group} exited ${r.status} during "${inProgress}"\n${r.stderr.slice(-4000)}`);
  return results;
}

test('fixed hostile calls end in the typed error each one names', { timeout: 120_000 }, (t) => {
  if (!requirePrivileges(t)) return;
  const results = runChild('fixed', 60_000);
  assert.ok(results.length >= 100, `only ${results.length} cases ran`);
  const failed = results.filter((c) => !c.ok);
  assert.deepEqual(failed.map((c) => `${c.name}: ${c.detail}`), []);
  // Nothing pinned outside the run's directory was left behind by the cases themselves.
  assert.deepEqual(readdirSync(PIN_DIR), []);
});

test('random garbage to every method, getter and function: typed errors only, no crash', { timeout: 300_000 }, (t) => {
  if (!requirePrivileges(t)) return;
  const results = runChild('fuzz', 240_000);
  assert.deepEqual(results.map((c) => c.name), ['fuzz', 'connect', 'routing']);
  // The repo and the machine: nothing created outside the scratch dir and the pin dir.
  assert.deepEqual(readdirSync(scratch!), []);
});

test('a worker terminated while it holds handles, and an exit with handles open, do not crash', { timeout: 120_000 }, (t) => {
  if (!requirePrivileges(t)) return;
  const results = runChild('teardown', 60_000);
  assert.deepEqual(results.map((c) => c.name), ['worker terminated mid-use', 'exit with open handles']);
});
