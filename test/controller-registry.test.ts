// The controller's registry: reads a directory, keeps the last good version of a file's objects when
// the file breaks (problem with file:line, counted by kind), recovers when it is fixed, and emits deltas.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigRegistry, type RegistryChange } from '../agent/controller/registry.js';
import { ControllerMetrics } from '../agent/controller/metrics.js';
import { createLogger } from '../agent/log.js';
import type { PodResource } from '../agent/registry/types.js';

const dir = mkdtempSync(join(tmpdir(), 'weft-registry-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const log = createLogger('test', { level: 'silent' });

const pod = (name: string, sa: string): string =>
  `apiVersion: v1\nkind: Pod\nmetadata: {name: ${name}, namespace: shop}\nspec:\n  nodeName: node-a\n  serviceAccountName: ${sa}\n  containers: [{name: c, command: [sleep, "1"]}]\n`;
const policy = (action: string): string =>
  `apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: shop}\nspec:\n  action: ${action}\n`;

test('last good objects stay while a file is broken; fixing it recovers; removals are emitted', async () => {
  const a = join(dir, 'a.yaml');
  const b = join(dir, 'b.yaml');
  writeFileSync(a, `${pod('one', 'api')}---\n${policy('DENY')}`);
  writeFileSync(b, pod('two', 'web'));
  const metrics = new ControllerMetrics();
  const reg = new ConfigRegistry({ dir, log, metrics });
  const changes: RegistryChange[] = [];
  reg.subscribe((c) => changes.push(c));
  reg.reload();
  assert.equal(reg.version, 1);
  assert.deepEqual(reg.resources().map((r) => `${r.kind}/${r.metadata.name}`).sort(), ['AuthorizationPolicy/p', 'Pod/one', 'Pod/two']);
  assert.deepEqual(reg.problems(), []);

  // Break a.yaml: the pod gets an unknown field, the policy a bad action. Both stay as they were.
  writeFileSync(a, `${pod('one', 'changed').replace('  nodeName', '  nodeNam: x\n  nodeName')}---\n${policy('PERMIT')}`);
  reg.reload();
  assert.equal(reg.version, 2);
  const probs = reg.problems();
  assert.equal(probs.length, 2);
  assert.deepEqual(
    probs.map((p) => [p.file, p.line, p.field]),
    [
      [a, 5, 'spec.nodeNam'],
      [a, 14, 'spec.action'],
    ],
  );
  const one = reg.resources().find((r) => r.metadata.name === 'one') as PodResource;
  assert.equal(one.spec.serviceAccountName, 'api', 'the last good pod is still in force');
  assert.ok(reg.resources().some((r) => r.kind === 'AuthorizationPolicy'));
  const last = changes.at(-1)!;
  assert.deepEqual(last.upserts, []);
  assert.deepEqual(last.removals, []);
  assert.equal(last.problems.length, 2);
  const rejected = await metrics.rejections.get();
  assert.deepEqual(rejected.values.map((v) => [v.labels.kind, v.value]).sort(), [
    ['AuthorizationPolicy', 1],
    ['Pod', 1],
  ]);

  // Re-reading the same broken file changes nothing and counts nothing again.
  reg.reload();
  assert.equal(reg.version, 2);
  assert.equal((await metrics.rejections.get()).values.reduce((n, v) => n + v.value, 0), 2);

  // A file that fails to parse entirely keeps its objects too.
  writeFileSync(b, 'apiVersion: v1\nkind: Pod\nmetadata: {name: two\n');
  reg.reload();
  assert.ok(reg.resources().some((r) => r.metadata.name === 'two'));
  assert.ok(reg.problems().some((p) => p.file === b && /YAML syntax error/.test(p.reason)));

  // Fixed: new versions in force, problems gone; the policy dropped from the file is removed.
  writeFileSync(a, pod('one', 'changed'));
  writeFileSync(b, pod('two', 'web'));
  reg.reload();
  assert.deepEqual(reg.problems(), []);
  assert.equal((reg.resources().find((r) => r.metadata.name === 'one') as PodResource).spec.serviceAccountName, 'changed');
  const fixed = changes.at(-1)!;
  assert.deepEqual(fixed.upserts.map((r) => r.metadata.name), ['one']);
  assert.deepEqual(fixed.removals, ['AuthorizationPolicy/shop/p']);

  // A deleted file takes its objects with it.
  unlinkSync(b);
  reg.reload();
  assert.deepEqual(changes.at(-1)!.removals, ['Pod/shop/two']);
  reg.close();
});

test('the watcher picks up changes on its own', async () => {
  const sub = mkdtempSync(join(dir, 'watch-'));
  writeFileSync(join(sub, 'x.yaml'), pod('w', 'a'));
  const reg = new ConfigRegistry({ dir: sub, log, debounceMs: 20 });
  reg.start();
  const changed = new Promise<RegistryChange>((resolve) => reg.subscribe(resolve));
  writeFileSync(join(sub, 'y.yaml'), policy('ALLOW'));
  const c = await changed;
  assert.deepEqual(c.upserts.map((r) => r.kind), ['AuthorizationPolicy']);
  reg.close();
});
