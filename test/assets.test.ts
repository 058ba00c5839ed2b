// SPDX-License-Identifier: Apache-2.0
// The asset locator finds the repository from the build (this test runs from dist/test), and with it
// the proto files, the BPF build directory and the CLI entry; a missing BPF object is a BPF error that
// says how to build it. No privileges needed.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { basename, join, sep } from 'node:path';
import { test } from 'node:test';

import { ErrorCodes, WeftError } from '../agent/errors.js';
import { bpfBuildPath, bpfObjectPath, cliEntry, packageJsonPath, protoDir, repoPath, repoRoot } from '../agent/system/assets.js';
import { weftVersion } from '../agent/system/version.js';

test('the repository is the directory with weft\'s package.json, not dist/', () => {
  const root = repoRoot();
  assert.notEqual(basename(root), 'dist');
  assert.ok(!root.split(sep).includes('dist'), root);
  const pkg = JSON.parse(readFileSync(packageJsonPath(), 'utf8')) as { name: string; version: string };
  assert.equal(pkg.name, 'weft');
  assert.equal(weftVersion(), pkg.version);
  assert.equal(repoPath('examples', 'lab.yaml'), join(root, 'examples', 'lab.yaml'));
  assert.ok(existsSync(repoPath('examples', 'lab.yaml')));
});

test('proto files, BPF build directory and CLI entry are found under it', (t) => {
  assert.ok(existsSync(join(protoDir(), 'flow', 'flow.proto')));
  assert.ok(existsSync(join(protoDir(), 'observer', 'observer.proto')));
  assert.equal(bpfBuildPath(), join(repoRoot(), 'bpf', 'build'));
  const saved = process.env.WEFT_AGENT_ENTRY;
  t.after(() => {
    if (saved === undefined) delete process.env.WEFT_AGENT_ENTRY;
    else process.env.WEFT_AGENT_ENTRY = saved;
  });
  delete process.env.WEFT_AGENT_ENTRY;
  assert.equal(cliEntry(), join(repoRoot(), 'dist', 'agent', 'cli', 'main.js'));
  assert.ok(existsSync(cliEntry()), 'this test runs from the build, so the CLI entry exists');
  process.env.WEFT_AGENT_ENTRY = '/opt/weft/main.js';
  assert.equal(cliEntry(), '/opt/weft/main.js');
});

test('a missing BPF object is WEFT_ERR_BPF naming the path and make -C bpf', () => {
  const missing = `no-such-program-${process.pid}.bpf.o`;
  assert.throws(
    () => bpfObjectPath(missing),
    (e: unknown) => {
      assert.ok(e instanceof WeftError);
      assert.equal(e.code, ErrorCodes.BPF);
      assert.ok(e.message.includes(join(bpfBuildPath(), missing)), e.message);
      assert.match(e.message, /make -C bpf/);
      return true;
    },
  );
});
