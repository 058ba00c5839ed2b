// Lab input parsing and validation: every problem names file, line, field and reason, and a refused
// lab creates nothing (no netns, link, cgroup, pin, /etc/netns entry or state dir).
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { ConfigError } from '../agent/errors.js';
import { parseDocuments } from '../agent/registry/parse.js';
import { loadDir, loadFiles } from '../agent/registry/load.js';
import { labUp, labNames } from '../agent/lab/index.js';
import { labLeftovers } from './helpers/privileged.js';

const LAB = `t${process.pid.toString(36)}c`;
const dir = mkdtempSync(join(tmpdir(), 'weft-lab-config-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}

const NODE_A = `apiVersion: weft.io/v1alpha1
kind: Node
metadata: {name: node-a}
spec: {podCIDR: 10.213.1.0/26}
`;

const footprint = (): string[] => labLeftovers(labNames(LAB));

/** Non-default ranges, so a lab running on the machine (with the default ranges) does not interfere. */
function labConfig(): string {
  return file(
    'cfg.yaml',
    `apiVersion: weft.io/v1alpha1
kind: LabConfig
metadata: {name: t}
spec:
  nodeNetwork: 10.213.255.0/28
  serviceCIDR: 10.213.128.0/24
`,
  );
}

async function refused(files: string[]): Promise<ConfigError> {
  const before = footprint();
  let caught: unknown;
  try {
    await labUp(files, { name: LAB, agents: false });
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof ConfigError, `expected a ConfigError, got ${String(caught)}`);
  assert.equal(caught.code, 'WEFT_ERR_CONFIG_INVALID');
  assert.deepEqual(footprint(), before, 'a refused lab must create nothing');
  assert.deepEqual(before, [], 'nothing of the test lab should exist');
  return caught;
}

describe('lab: bad input is refused with file, line and reason, and nothing is created', () => {
  test('unknown kind → problem at the kind: line', async () => {
    const f = file('unknown-kind.yaml', `${NODE_A}---\napiVersion: v1\nkind: Deployment\nmetadata: {name: x}\n`);
    const err = await refused([labConfig(), f]);
    assert.equal(err.problems.length, 1);
    assert.deepEqual({ ...err.problems[0]!, reason: '' }, { file: f, line: 7, field: 'kind', reason: '' });
    assert.match(err.problems[0]!.reason, /unknown kind "Deployment"/);
    assert.match(err.message, new RegExp(`${f.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:7: kind: unknown kind`));
  });

  test('pod on a missing node → problem at spec.nodeName', async () => {
    const f = file(
      'missing-node.yaml',
      `${NODE_A}---
apiVersion: v1
kind: Pod
metadata: {name: p, namespace: x}
spec:
  nodeName: node-z
  containers:
  - name: main
    command: ["sleep", "1"]
`,
    );
    const err = await refused([labConfig(), f]);
    assert.equal(err.problems.length, 1, err.message);
    const p = err.problems[0]!;
    assert.equal(p.file, f);
    assert.equal(p.line, 10);
    assert.equal(p.field, 'spec.nodeName');
    assert.match(p.reason, /node "node-z", which is not defined \(nodes: node-a\)/);
  });

  test('overlapping CIDRs (pod CIDRs of two nodes, pod CIDR vs service CIDR) → problems at the later field', async () => {
    const cfg = labConfig();
    const f = file(
      'overlap.yaml',
      `${NODE_A}---
apiVersion: weft.io/v1alpha1
kind: Node
metadata: {name: node-b}
spec:
  podCIDR: 10.213.1.32/27
---
apiVersion: weft.io/v1alpha1
kind: Node
metadata: {name: node-c}
spec: {podCIDR: 10.213.128.0/26}
`,
    );
    const err = await refused([cfg, f]);
    assert.equal(err.problems.length, 2, err.message);
    const [b, c] = err.problems;
    assert.deepEqual([b!.file, b!.line, b!.field], [f, 10, 'spec.podCIDR']);
    assert.match(b!.reason, /10\.213\.1\.32\/27 of node node-b overlaps the pod CIDR 10\.213\.1\.0\/26 of node node-a/);
    assert.deepEqual([c!.file, c!.line, c!.field], [f, 15, 'spec.podCIDR']);
    assert.match(c!.reason, /overlaps the service CIDR 10\.213\.128\.0\/24/);
  });

  test('YAML syntax error → its line', async () => {
    const f = file('syntax.yaml', `${NODE_A}---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: [shop\n  labels: {a: b}\n`);
    const err = await refused([f]);
    assert.ok(err.problems.length >= 1);
    assert.equal(err.problems[0]!.file, f);
    assert.ok(err.problems[0]!.line >= 9 && err.problems[0]!.line <= 11, `line ${err.problems[0]!.line}`);
    assert.match(err.problems[0]!.reason, /YAML syntax error/);
  });

  test('overlap with a host route is refused (the host has a route for its own address range)', async () => {
    const routes = JSON.parse(execFileSync('ip', ['-j', '-4', 'route', 'show'], { encoding: 'utf8' })) as Array<{ dst: string }>;
    const r = routes.find((x) => x.dst !== 'default' && x.dst.includes('/'));
    if (!r) return; // no non-default route on this host
    const f = file('host-overlap.yaml', `apiVersion: weft.io/v1alpha1\nkind: Node\nmetadata: {name: node-a}\nspec: {podCIDR: ${r.dst}}\n`);
    const err = await refused([f]);
    assert.ok(err.problems.some((p) => p.line === 4 && p.field === 'spec.podCIDR' && /host's route/.test(p.reason)), err.message);
  });
});

describe('registry parsing', () => {
  test('every problem of every document is reported, with field paths and lines', () => {
    const text = `apiVersion: v1
kind: Pod
metadata: {name: Bad_Name, namespace: shop}
spec:
  nodeName: node-a
  containers:
  - name: main
    command: "not a list"
    ports: [{containerPort: 70000}]
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec:
  ports: [{port: 80, targetPort: http}]
  colour: blue
`;
    const r = parseDocuments(text, 'x.yaml');
    assert.equal(r.resources.length, 0);
    const got = r.problems.map((p) => `${p.line} ${p.field}`);
    assert.deepEqual(got, [
      '3 metadata.name',
      '8 spec.containers[0].command',
      '9 spec.containers[0].ports[0].containerPort',
      '15 spec.ports[0].targetPort',
      '16 spec.colour',
    ]);
  });

  test('valid documents are normalised (args appended, namespace defaulted) and carry their source', () => {
    const r = parseDocuments(
      `# comment\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  nodeName: n\n  containers: [{name: c, image: ignored, command: [a], args: [b]}]\n`,
      'p.yaml',
    );
    assert.deepEqual(r.problems, []);
    const pod = r.resources[0]!;
    assert.equal(pod.kind, 'Pod');
    assert.equal(pod.metadata.namespace, 'default');
    assert.deepEqual(pod.kind === 'Pod' && pod.spec.containers[0]!.command, ['a', 'b']);
    assert.deepEqual(pod.source, { file: 'p.yaml', line: 2 });
  });

  test('duplicate objects across files and loadDir', () => {
    const d = join(dir, 'resources');
    mkdirSync(d, { recursive: true });
    writeFileSync(join(d, 'a.yaml'), NODE_A);
    writeFileSync(join(d, 'b.yaml'), `apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}\n`);
    writeFileSync(join(d, '.tmp.yaml'), 'garbage: [');
    assert.deepEqual(
      loadDir(d).map((x) => `${x.kind}/${x.metadata.name}`),
      ['Node/node-a', 'Namespace/shop'],
    );
    writeFileSync(join(d, 'c.yaml'), `# again\n${NODE_A}`);
    assert.throws(
      () => loadFiles([join(d, 'a.yaml'), join(d, 'c.yaml')]),
      (e: unknown) => e instanceof ConfigError && e.problems.length === 1 && e.problems[0]!.line === 4 && /duplicate Node "node-a" \(first defined at .*a\.yaml:1\)/.test(e.problems[0]!.reason),
    );
  });
});
