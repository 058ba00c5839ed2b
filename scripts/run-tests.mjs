#!/usr/bin/env node
// Runs the compiled tests with node's test runner. Extra arguments select files by name.
//
//   node scripts/run-tests.mjs [name…]          every test, one file at a time: the privileged tests
//                                               build labs with fixed address ranges and must not overlap.
//   node scripts/run-tests.mjs --unit [name…]   the same files without privileges, so every test that
//                                               needs root, BPF or network namespaces skips (saying why)
//                                               and the rest run: as the invoking user, or, when invoked
//                                               as root, as the sudo user or nobody. CI is unset for the
//                                               run (under CI=true a privileged test fails instead of
//                                               skipping). No list to keep: a unit test is one that
//                                               passes unprivileged.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dir = join(root, 'dist', 'test');
const args = process.argv.slice(2);
const unit = args.includes('--unit');
const filters = args.filter((a) => a !== '--unit');

function fail(msg) {
  process.stderr.write(`[run-tests] ${msg}\n`);
  process.exit(1);
}

if (!existsSync(dir)) fail(`${dir} is missing: build first (npx tsc -p tsconfig.json)`);
const files = readdirSync(dir)
  .filter((n) => n.endsWith('.test.js'))
  // Only tests whose source still exists: dist/ keeps the output of deleted or renamed ones.
  .filter((n) => existsSync(join(root, 'test', n.replace(/\.js$/, '.ts'))))
  .filter((n) => filters.length === 0 || filters.some((f) => n.includes(f)))
  .sort()
  .map((n) => join(dir, n));
if (files.length === 0) fail(`no test files match ${filters.join(' ')}`);

if (!unit) {
  const r = spawnSync(process.execPath, ['--test', '--test-concurrency=1', ...files], { cwd: root, stdio: 'inherit' });
  process.exit(r.status ?? 1);
}

// Unprivileged tests build no lab, so files may run side by side.
const testArgs = ['--test', `--test-concurrency=${Math.max(1, availableParallelism())}`, ...files];
const env = { ...process.env };
delete env.CI;

let cmd = process.execPath;
let cmdArgs = testArgs;
if (process.getuid?.() === 0) {
  // Root: drop to the user who ran sudo, else nobody. No capabilities stay (all uids become non-zero)
  // and no-new-privs keeps setuid helpers from handing any back.
  const sudoUid = process.env.SUDO_UID;
  const asSudoUser = sudoUid !== undefined && sudoUid !== '0' && process.env.SUDO_GID !== undefined;
  const [uid, gid] = asSudoUser ? [sudoUid, process.env.SUDO_GID] : ['nobody', 'nogroup'];
  const drop = ['--reuid', uid, '--regid', gid, '--clear-groups', '--no-new-privs', '--'];
  const probe = spawnSync('setpriv', [...drop, process.execPath, '-e', `require('node:fs').accessSync(${JSON.stringify(dir)}, require('node:fs').constants.R_OK | require('node:fs').constants.X_OK)`], { stdio: 'ignore' });
  if (probe.error) fail(`setpriv (util-linux) is needed to drop root for the unit tests: ${probe.error.message}`);
  if (probe.status !== 0) fail(`user ${uid} cannot read ${dir}: run the unit tests as a user who can (or make the checkout readable)`);
  cmd = 'setpriv';
  cmdArgs = [...drop, process.execPath, ...testArgs];
  process.stderr.write(`[run-tests] unit tests as ${uid}:${gid}, without privileges\n`);
}
const r = spawnSync(cmd, cmdArgs, { cwd: root, stdio: 'inherit', env });
process.exit(r.status ?? 1);
