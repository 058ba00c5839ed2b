// Hostile YAML for the registry's core kinds, the loader of files and directories, the controller's
// `dir:` source and the lab model: generated valid documents parse to what was written; mutated,
// random and resource-exhausting input never throws, never hangs, is reported with file, line and
// field, and the last good configuration stays in force.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import fc from 'fast-check';
import YAML from 'yaml';
import { ConfigRegistry } from '../agent/controller/registry.js';
import { ControllerMetrics } from '../agent/controller/metrics.js';
import { ConfigError, WeftError } from '../agent/errors.js';
import { buildModel } from '../agent/lab/model.js';
import { createLogger } from '../agent/log.js';
import { loadFiles, loadFilesLenient, readConfigText } from '../agent/registry/load.js';
import { knownKinds, parseDocuments, stripSource } from '../agent/registry/parse.js';
import type { NodeResource, PodResource, Resource, ServiceResource, WithSource } from '../agent/registry/types.js';
import {
  PROTO_KEYS,
  aliasBomb,
  assertProblemShape,
  assertPrototypeUntouched,
  bounded,
  deepFlow,
  garbage,
  lineCount,
  snapshotObjectPrototype,
  withOwnKey,
} from './helpers/hostile.js';

const RUNS = Number(process.env.WEFT_PROPERTY_RUNS ?? 120);
const PROTO_BEFORE = snapshotObjectPrototype();
const dir = mkdtempSync(join(tmpdir(), 'weft-hostile-yaml-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const log = createLogger('test', { level: 'silent' });

function parse(text: string, file = '/cfg/x.yaml'): ReturnType<typeof parseDocuments> {
  const r = bounded(2000, 'parseDocuments', () => parseDocuments(text, file));
  const lines = lineCount(text);
  for (const p of r.problems) assertProblemShape(p, file, lines);
  return r;
}

// ---- arbitraries of valid core documents ----------------------------------------------------------

const dnsLabel = fc.stringMatching(/^[a-z]([-a-z0-9]{0,14}[a-z0-9])?$/);
const labelKey = fc.oneof(fc.stringMatching(/^[A-Za-z0-9]([-A-Za-z0-9_.]{0,12}[A-Za-z0-9])?$/), fc.constantFrom('constructor', 'prototype', 'toString'), fc.constant('weft.io/dataplane-mode'));
const labels = fc.dictionary(labelKey, fc.stringMatching(/^([A-Za-z0-9]([-A-Za-z0-9_.]{0,12}[A-Za-z0-9])?)?$/), { minKeys: 1, maxKeys: 3 });
const annotations = fc.dictionary(labelKey, fc.oneof(fc.string(), fc.fullUnicodeString({ maxLength: 20 })), { minKeys: 1, maxKeys: 3 });
const cidr = fc.tuple(fc.integer({ min: 0, max: 2 ** 32 - 1 }), fc.integer({ min: 8, max: 28 })).map(([n, p]) => {
  const base = p === 0 ? 0 : (n & ((0xffffffff << (32 - p)) >>> 0)) >>> 0;
  return `${base >>> 24}.${(base >>> 16) & 255}.${(base >>> 8) & 255}.${base & 255}/${p}`;
});
const portNum = fc.integer({ min: 1, max: 65535 });
const meta = (namespaced: boolean) =>
  fc.record({ name: dnsLabel, labels, annotations }, { requiredKeys: ['name'] }).chain((m) =>
    namespaced ? dnsLabel.map((namespace) => ({ ...m, namespace })) : fc.constant(m),
  );

const nodeDoc = fc.record({ metadata: meta(false), podCIDR: cidr }).map(({ metadata, podCIDR }): NodeResource => ({ apiVersion: 'weft.io/v1alpha1', kind: 'Node', metadata, spec: { podCIDR } }));
const nsDoc = meta(false).map((metadata): Resource => ({ apiVersion: 'v1', kind: 'Namespace', metadata }));
const container = fc.record(
  {
    name: dnsLabel,
    command: fc.array(fc.oneof(fc.string({ minLength: 1 }), fc.fullUnicodeString({ minLength: 1, maxLength: 10 })), { minLength: 1, maxLength: 3 }),
    ports: fc.array(fc.record({ containerPort: portNum }), { minLength: 1, maxLength: 2 }),
    env: fc.array(fc.record({ name: fc.stringMatching(/^[A-Z_][A-Z0-9_]{0,8}$/), value: fc.string() }), { minLength: 1, maxLength: 2 }),
  },
  { requiredKeys: ['name', 'command'] },
);
const podDoc = fc
  .record({ metadata: meta(true), nodeName: dnsLabel, containers: fc.uniqueArray(container, { minLength: 1, maxLength: 2, selector: (c) => c.name }) })
  .map(({ metadata, nodeName, containers }): PodResource => ({ apiVersion: 'v1', kind: 'Pod', metadata: metadata as PodResource['metadata'], spec: { nodeName, containers } }));
const serviceDoc = fc
  .record({ metadata: meta(true), selector: labels, port: portNum, targetPort: fc.option(portNum, { nil: undefined }) })
  .map(({ metadata, selector, port, targetPort }): ServiceResource => ({
    apiVersion: 'v1',
    kind: 'Service',
    metadata: metadata as ServiceResource['metadata'],
    spec: { selector, ports: [{ port, ...(targetPort !== undefined ? { targetPort } : {}) }] },
  }));
const anyDoc: fc.Arbitrary<Resource> = fc.oneof(nodeDoc, nsDoc, podDoc, serviceDoc);

/** Distinct names (the loader refuses duplicates across documents) without changing the shape. */
function renamed(docs: Resource[]): Resource[] {
  return docs.map((d, i) => ({ ...d, metadata: { ...d.metadata, name: `o${i}` } }) as Resource);
}

test('valid core documents (Node, Namespace, Pod, Service) parse to exactly what was written', () => {
  fc.assert(
    fc.property(anyDoc, (doc) => {
      const text = YAML.stringify(doc);
      const r = parse(text);
      assert.deepEqual(r.problems, [], text);
      assert.deepEqual(stripSource<Resource>(r.resources[0]!), doc);
    }),
    { numRuns: RUNS },
  );
  assertPrototypeUntouched(PROTO_BEFORE);
});

// ---- random documents and random YAML ---------------------------------------------------------------

test('random values where documents belong: never throws, problems located, nothing polluted', () => {
  const docLike = fc.oneof(
    garbage(),
    fc.record({ apiVersion: fc.constantFrom('v1', 'weft.io/v1alpha1', 'security.istio.io/v1'), kind: fc.constantFrom(...knownKinds(), 'Deployment', '__proto__'), metadata: garbage(), spec: garbage() }, { requiredKeys: [] }),
    anyDoc.chain((d) => fc.tuple(fc.constantFrom(...PROTO_KEYS, 'spec', 'metadata', 'status'), garbage()).map(([k, v]) => withOwnKey(d as unknown as Record<string, unknown>, k, v))),
  );
  fc.assert(
    fc.property(fc.array(docLike, { minLength: 1, maxLength: 4 }), (docs) => {
      const text = docs.map((d) => `---\n${YAML.stringify(d) ?? ''}`).join('');
      const r = parse(text);
      assertPrototypeUntouched(PROTO_BEFORE);
      for (const res of r.resources) {
        assert.ok(knownKinds().includes(res.kind));
        assert.equal(typeof res.metadata.name, 'string');
        assert.equal(Object.getPrototypeOf(res), Object.prototype);
      }
    }),
    { numRuns: RUNS * 2 },
  );
});

const TOKENS = ['-', ' ', '  ', ':', ': ', '\n', '\n  ', '[', ']', '{', '}', ',', '&x', '*x', '&y', '*y', '!!str', '!!binary', '!!omap', '!!pairs', '!!set', '!!timestamp', '!bar', '|', '|-', '>', "'", '"', '#', '---', '...', '%YAML 1.1\n---', '%YAML 1.3\n---', '%FOO\n---', '? ', '<<: ', '__proto__', 'apiVersion: v1', 'kind: Pod', 'kind: Node', 'metadata: {name: a}', 'spec', 'containers', '\t', '\r\n', '\u2028', '\ufeff', '\u0000', '\u001b[31m', 'ü', '\ud800', '2001-12-14t21:59:43.10-05:00', '0o17', '+.inf'];

test('random YAML streams: never throws, never hangs, problems located', () => {
  const soup = fc.array(fc.constantFrom(...TOKENS), { maxLength: 150 }).map((t) => t.join(''));
  fc.assert(
    fc.property(fc.oneof(soup, fc.string({ maxLength: 300 }), fc.fullUnicodeString({ maxLength: 100 })), (t) => {
      parse(t);
    }),
    { numRuns: RUNS * 4 },
  );
  assertPrototypeUntouched(PROTO_BEFORE);
});

// ---- resource exhaustion ------------------------------------------------------------------------------

test('alias bombs, deep nesting, huge and numerous documents are refused in bounded time', () => {
  const cases: Array<[string, string, RegExp]> = [
    ['alias bomb in metadata', `apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\nbomb:\n${aliasBomb('  ')}`, /alias/i],
    ['alias bomb alone', aliasBomb(), /alias/i],
    ['self-referencing anchor', 'a: &a [*a]\n', /.+/],
    ['alias to an unknown anchor', 'apiVersion: v1\nkind: Namespace\nmetadata: *nope\n', /.+/],
    ['deep flow sequence', `a: ${deepFlow(200_000)}`, /nests deeper/],
    ['deep flow mapping', `a: ${'{a: '.repeat(50_000)}1${'}'.repeat(50_000)}`, /nests deeper/],
    ['deep block nesting', Array.from({ length: 2500 }, (_, i) => `${' '.repeat(i)}a:`).join('\n'), /.+/],
    ['oversized file', `# ${'z'.repeat(4 * 1024 * 1024)}\n`, /at most/],
    ['a hundred thousand empty documents', '---\n'.repeat(100_000), /^$/],
    ['long implicit key', `apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n  ${'k'.repeat(100_000)}: 1\n`, /at most 1024 chars/],
    ['long explicit key', `apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n  ? ${'k'.repeat(100_000)}\n  : 1\n`, /unknown field "k{100}"…\(100000 characters\)/],
  ];
  for (const [name, text, reason] of cases) {
    const r = bounded(1500, name, () => parse(text));
    assert.equal(r.resources.length, 0, name);
    if (reason.source !== '^$') assert.ok(r.problems.some((p) => reason.test(p.reason)), `${name}: ${JSON.stringify(r.problems).slice(0, 400)}`);
  }
  assertPrototypeUntouched(PROTO_BEFORE);
});

test('duplicate keys, tags and merge keys are refused with the line, never silently resolved', () => {
  const head = 'apiVersion: v1\nkind: Namespace\n';
  const cases: Array<[string, number, RegExp]> = [
    [`${head}metadata:\n  name: a\n  name: b\n`, 5, /unique/],
    [`${head}metadata: !!binary bmFtZTogYQ==\n`, 3, /binary/],
    [`${head}metadata: !!omap [name: a]\n`, 3, /ordered mapping/],
    [`${head}metadata:\n  name: !!timestamp 2001-12-14\n`, 4, /timestamp/],
    [`${head}metadata:\n  name: !local a\n`, 4, /Unresolved tag/],
    [`%YAML 1.1\n---\n${head}base: &b {name: a}\nmetadata:\n  <<: *b\n`, 5, /unknown field "base"/],
    [`${head}metadata:\n  ? [a, b]\n  : 1\n  name: a\n`, 4, /unknown field "\[ a, b \]"/],
    [`${head}metadata:\n  name: a\n  annotations: {__proto__: x}\n`, 5, /not a valid annotation key/],
  ];
  for (const [text, line, reason] of cases) {
    const r = parse(text);
    assert.equal(r.resources.length, 0, text);
    assert.ok(r.problems.some((p) => p.line === line && reason.test(p.reason)), `${text}\n${JSON.stringify(r.problems)}`);
  }
});

// ---- the loader: files and directories ------------------------------------------------------------------

test('loadFilesLenient: good documents kept beside hostile ones, each problem in its own file and document', () => {
  let n = 0;
  const hostile = fc.oneof(
    fc.constant(aliasBomb()),
    fc.constant(`a: ${deepFlow(5000)}\n`),
    fc.constant('apiVersion: v1\nkind: Namespace\nmetadata: {name: a, name: b}\n'),
    fc.array(fc.constantFrom(...TOKENS), { minLength: 1, maxLength: 40 }).map((t) => t.join('')),
    garbage().map((g) => YAML.stringify(g) ?? ''),
  );
  fc.assert(
    fc.property(fc.array(anyDoc, { minLength: 1, maxLength: 3 }), hostile, fc.nat(3), (goodDocs, junk, at) => {
      const good = renamed(goodDocs);
      const d = join(dir, `lenient-${n++}`);
      mkdirSync(d);
      const goodFile = join(d, 'a-good.yaml');
      const mixedFile = join(d, 'b-mixed.yaml');
      writeFileSync(goodFile, good.map((x) => `---\n${YAML.stringify(x)}`).join(''));
      // The junk document sits between two good ones; `...` ends it so a syntax error cannot spill over.
      const before = `apiVersion: v1\nkind: Namespace\nmetadata: {name: before-${at}}\n`;
      const after = `apiVersion: v1\nkind: Namespace\nmetadata: {name: after-${at}}\n`;
      writeFileSync(mixedFile, `${before}---\n${junk}\n...\n---\n${after}`);
      const r = bounded(2000, 'loadFilesLenient', () => loadFilesLenient([goodFile, mixedFile]));
      const names = r.resources.map((x) => x.metadata.name);
      for (const x of good) assert.ok(names.includes(x.metadata.name), `good ${x.metadata.name} lost: ${JSON.stringify(r.problems)}`);
      assert.ok(names.includes(`before-${at}`), JSON.stringify(r.problems));
      for (const p of r.problems) {
        assert.equal(p.file, mixedFile, 'problems only in the file that has them');
        assert.ok(p.line >= 4, `problem at line ${p.line} is before the junk document`);
      }
      rmSync(d, { recursive: true, force: true });
    }),
    { numRuns: Math.ceil(RUNS / 2) },
  );
});

test('loadFiles: unreadable, binary and non-UTF-8 files are problems of that file, never exceptions of another kind', () => {
  const d = join(dir, 'files');
  mkdirSync(d);
  const bin = join(d, 'bin.yaml');
  writeFileSync(bin, Buffer.from([0xff, 0xfe, 0x00, 0x01, 0x80, 0x3a, 0x20, 0x0a, 0xc3, 0x28]));
  const missing = join(d, 'missing.yaml');
  const dirAsFile = join(d, 'dir.yaml');
  mkdirSync(dirAsFile);
  const r = loadFilesLenient([bin, missing, dirAsFile]);
  assert.equal(r.resources.length, 0);
  assert.ok(r.problems.some((p) => p.file === bin && p.line >= 1));
  assert.ok(r.problems.some((p) => p.file === missing && /cannot read file: ENOENT/.test(p.reason)));
  assert.ok(r.problems.some((p) => p.file === dirAsFile && /cannot read file: not a regular file/.test(p.reason)));
  assert.throws(() => loadFiles([bin, missing]), (e: unknown) => e instanceof ConfigError && e instanceof WeftError && e.code === 'WEFT_ERR_CONFIG_INVALID' && e.problems.length >= 2);
});

// ---- the controller's dir: source -----------------------------------------------------------------------

const GOOD = `apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec:
  nodeName: node-a
  containers: [{name: c, command: [sleep, "1"]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-all, namespace: shop}
spec: {action: DENY, rules: [{}]}
`;

test('the controller keeps the last good configuration through hostile rewrites, each reload bounded', async () => {
  const d = join(dir, 'registry');
  mkdirSync(d);
  const file = join(d, 'shop.yaml');
  writeFileSync(file, GOOD);
  const metrics = new ControllerMetrics();
  const reg = new ConfigRegistry({ dir: d, log, metrics });
  reg.reload();
  const good = JSON.stringify(reg.resources());
  assert.deepEqual(reg.problems(), []);
  const hostile: Array<[string, string | Buffer]> = [
    ['alias bomb', `${GOOD}---\n${aliasBomb()}`],
    ['deep nesting', `a: ${deepFlow(1_000_000)}`],
    ['unclosed nesting', `a: ${'['.repeat(1_000_000)}`],
    ['oversized', `# ${'x'.repeat(5 * 1024 * 1024)}`],
    ['many problems', `apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\nspec:\n${Array.from({ length: 3000 }, (_, i) => `  junk${i}: 1`).join('\n')}\n`],
    ['hostile kinds', Array.from({ length: 500 }, (_, i) => `apiVersion: v1\nkind: Evil${i}\nmetadata: {name: x}\n`).join('---\n')],
    ['binary', Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7919) & 255))],
    ['prototype keys', GOOD.replace('labels: {app: web}', 'labels: {app: web, __proto__: {polluted: x}}')],
    ['garbage', '{]: - [}\n\t:\n'],
  ];
  for (const [name, content] of hostile) {
    writeFileSync(file, content);
    bounded(1500, `reload after ${name}`, () => reg.reload());
    assert.equal(JSON.stringify(reg.resources()), good, `${name}: the last good objects stay`);
    const probs = reg.problems();
    assert.ok(probs.length > 0 && probs.length <= 201, `${name}: ${probs.length} problems`);
    for (const p of probs) assertProblemShape(p, file, Number.MAX_SAFE_INTEGER);
    assertPrototypeUntouched(PROTO_BEFORE);
  }
  // Rejections are counted per registered kind; user text never becomes a label value.
  const labelsSeen = (await metrics.rejections.get()).values.map((v) => String(v.labels.kind));
  for (const k of labelsSeen) assert.ok(k === 'unknown' || knownKinds().includes(k), `label value ${k}`);
  // Fixed: the file's objects are read again.
  writeFileSync(file, GOOD.replace('app: web', 'app: web2'));
  reg.reload();
  assert.deepEqual(reg.problems(), []);
  assert.match(JSON.stringify(reg.resources()), /web2/);
});

test('an oversized, unreadable or swapped-for-a-FIFO file keeps what it contributed, and costs no read', () => {
  const d = join(dir, 'registry-size');
  mkdirSync(d);
  const f = join(d, 'a.yaml');
  writeFileSync(f, GOOD);
  const reg = new ConfigRegistry({ dir: d, log });
  reg.reload();
  assert.equal(reg.resources().length, 2);
  // Sparse files: no disk used, but reading them would allocate their whole size.
  for (const size of [100 * 1024 * 1024, 3 * 1024 * 1024 * 1024]) {
    rmSync(f);
    writeFileSync(f, '');
    truncateSync(f, size);
    bounded(300, `reload with a ${size}-byte file`, () => reg.reload());
    assert.equal(reg.resources().length, 2, 'the last good objects stay');
    assert.deepEqual(reg.problems().map((p) => [p.file, p.reason]), [[f, `cannot read file: file is ${size} bytes; a configuration file may have at most ${4 * 1024 * 1024}`]]);
  }
  const lenient = loadFilesLenient([f]);
  assert.match(lenient.problems[0]!.reason, /file is \d+ bytes; a configuration file may have at most/);
  if (process.getuid?.() !== 0) {
    chmodSync(f, 0);
    reg.reload();
    assert.equal(reg.resources().length, 2);
    assert.match(reg.problems()[0]!.reason, /EACCES/);
  }
  rmSync(f);
  execFileSync('mkfifo', [f]);
  // A FIFO is not a configuration file: skipped when listing, refused (not waited on) when opened.
  bounded(300, 'reload with a FIFO', () => reg.reload());
  assert.throws(() => readConfigText(f), /not a regular file/);
});

// ---- the lab model ----------------------------------------------------------------------------------------

function parseAll(text: string, file: string): Array<WithSource<Resource>> {
  const r = parseDocuments(text, file);
  assert.deepEqual(r.problems, [], text);
  return r.resources;
}

test('lab model: random nodes, pods and services either build or fail with located ConfigError problems', () => {
  const labDocs = fc.record({
    nodes: fc.uniqueArray(nodeDoc, { minLength: 0, maxLength: 4, selector: (n) => n.metadata.name }),
    pods: fc.array(podDoc, { maxLength: 4 }),
    services: fc.array(serviceDoc, { maxLength: 3 }),
    config: fc.option(fc.record({ nodeNetwork: fc.constantFrom('192.168.240.0/24', '10.0.0.0/8', '10.96.0.0/12'), serviceCIDR: fc.constantFrom('10.96.0.0/16', '10.0.0.0/24') }, { requiredKeys: [] }), { nil: undefined }),
  });
  const file = '/cfg/lab.yaml';
  fc.assert(
    fc.property(labDocs, fc.boolean(), ({ nodes, pods, services, config }, running) => {
      const all: unknown[] = [
        ...(config ? [{ apiVersion: 'weft.io/v1alpha1', kind: 'LabConfig', metadata: { name: 'lab' }, spec: config }] : []),
        ...nodes,
        // Pods and services with distinct names, some on the generated nodes.
        ...pods.map((p, i) => ({ ...p, metadata: { ...p.metadata, name: `pod${i}` }, spec: { ...p.spec, nodeName: nodes[i % Math.max(1, nodes.length)]?.metadata.name ?? p.spec.nodeName } })),
        ...services.map((s, i) => ({ ...s, metadata: { ...s.metadata, name: `svc${i}` } })),
      ];
      const text = all.map((d) => `---\n${YAML.stringify(d)}`).join('');
      const resources = parseAll(text, file);
      const opts = running
        ? {
            labName: 'hostile',
            running: {
              nodes: Object.fromEntries(nodes.map((n) => [n.metadata.name, { podCIDR: n.spec.podCIDR }])),
              nodeNetwork: config?.nodeNetwork ?? '192.168.240.0/24',
              serviceCIDR: config?.serviceCIDR ?? '10.96.0.0/16',
              clusterDomain: 'cluster.local',
            },
          }
        : { labName: 'hostile', requireNodes: true, hostRoutes: [{ dst: '10.0.0.0/8', dev: 'eth9' }] };
      try {
        const m = buildModel(resources, opts);
        assert.equal(m.nodes.length, nodes.length);
      } catch (err) {
        assert.ok(err instanceof ConfigError, String(err));
        // With no document at all there is no file to name (the model says so).
        if (resources.length === 0) for (const p of err.problems) assert.equal(p.file, '(no files)');
        else for (const p of err.problems) assertProblemShape(p, file, lineCount(text));
      }
    }),
    { numRuns: RUNS },
  );
});

test('lab model on a running lab: a node named like an Object.prototype member is a new node, not a changed one', () => {
  const text = `apiVersion: weft.io/v1alpha1
kind: Node
metadata: {name: constructor}
spec: {podCIDR: 10.213.0.0/24}
`;
  const resources = parseAll(text, '/cfg/lab.yaml');
  assert.throws(
    () => buildModel(resources, { labName: 'hostile', running: { nodes: { 'node-a': { podCIDR: '10.213.1.0/24' } }, nodeNetwork: '192.168.240.0/24', serviceCIDR: '10.96.0.0/16', clusterDomain: 'cluster.local' } }),
    (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.deepEqual(
        e.problems.map((p) => [p.line, p.field, p.reason]),
        [[3, 'metadata.name', 'cannot add node "constructor" to a running lab; run "weft lab down" and "weft lab up" with it']],
      );
      return true;
    },
  );
});
