#!/usr/bin/env node
// Runs every compiled test file with node's test runner, one file at a time: the privileged tests
// build labs with fixed address ranges and must not overlap. Extra arguments select files by name.
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dir = join(root, 'dist', 'test');
const filters = process.argv.slice(2);
const files = readdirSync(dir)
  .filter((n) => n.endsWith('.test.js'))
  .filter((n) => filters.length === 0 || filters.some((f) => n.includes(f)))
  .sort()
  .map((n) => join(dir, n));
if (files.length === 0) {
  process.stderr.write(`no test files match ${filters.join(' ')}\n`);
  process.exit(1);
}
const r = spawnSync(process.execPath, ['--test', '--test-concurrency=1', ...files], { cwd: root, stdio: 'inherit' });
process.exit(r.status ?? 1);
