// Hostile input for the policy kinds (AuthorizationPolicy, PeerAuthentication) of the registry
// parser: generated valid documents parse to exactly the structure written; mutated and garbage
// documents never throw, never hang, and are refused with problems naming file, line and field;
// prototype keys anywhere are plain data or refused, and nothing reaches Object.prototype.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import YAML from 'yaml';
import { parseDocuments, stripSource } from '../agent/registry/parse.js';
import type { AuthorizationPolicyResource, AuthzRule, PeerAuthenticationResource } from '../agent/registry/policy-types.js';
import { applicablePolicies, authorize, effectiveMtlsMode } from '../agent/policy/index.js';
import type { Resource } from '../agent/registry/types.js';
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

const FILE = '/cfg/policy.yaml';
const RUNS = Number(process.env.WEFT_PROPERTY_RUNS ?? 150);
const PROTO_BEFORE = snapshotObjectPrototype();

/** Parses and checks the parser's contract; returns what it produced. */
function parse(text: string): ReturnType<typeof parseDocuments> {
  const r = bounded(2000, 'parseDocuments', () => parseDocuments(text, FILE));
  const lines = lineCount(text);
  for (const p of r.problems) assertProblemShape(p, FILE, lines);
  return r;
}

// ---- arbitraries of valid documents ------------------------------------------------------------

const dnsLabel = fc.stringMatching(/^[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?$/);
const labelName = fc.oneof(fc.stringMatching(/^[A-Za-z0-9]([-A-Za-z0-9_.]{0,20}[A-Za-z0-9])?$/), fc.constantFrom('constructor', 'prototype', 'toString', 'hasOwnProperty', 'valueOf'));
const labelKey = fc.oneof({ weight: 3, arbitrary: labelName }, { weight: 1, arbitrary: fc.tuple(dnsLabel, labelName).map(([p, n]) => `${p}.io/${n}`) });
const labelValue = fc.oneof(fc.constant(''), fc.stringMatching(/^[A-Za-z0-9]([-A-Za-z0-9_.]{0,20}[A-Za-z0-9])?$/));
const matchLabels = fc.dictionary(labelKey, labelValue, { minKeys: 1, maxKeys: 4 });

/** Any non-empty text, unicode and control characters included (principals, hosts, paths, condition values). */
const text = fc.oneof(fc.string({ minLength: 1, maxLength: 30 }), fc.fullUnicodeString({ minLength: 1, maxLength: 12 }), fc.constantFrom('*', 'cluster.local/ns/a/sa/b', '*/sa/web', 'prefix*', ...PROTO_KEYS));
const texts = fc.array(text, { minLength: 1, maxLength: 3 });
const ipBlock = fc.oneof(
  fc.ipV4(),
  fc.tuple(fc.ipV4(), fc.integer({ min: 0, max: 32 })).map(([ip, p]) => `${ip}/${p}`),
  fc.ipV6(),
  fc.tuple(fc.ipV6(), fc.integer({ min: 0, max: 128 })).map(([ip, p]) => `${ip}/${p}`),
);
const port = fc.integer({ min: 1, max: 65535 }).map(String);

function someOf<T extends Record<string, unknown>>(record: { [K in keyof T]: fc.Arbitrary<T[K]> }): fc.Arbitrary<Partial<T>> {
  return fc.record(record, { requiredKeys: [] }) as fc.Arbitrary<Partial<T>>;
}

const source = someOf({
  principals: texts,
  notPrincipals: texts,
  requestPrincipals: texts,
  notRequestPrincipals: texts,
  namespaces: texts,
  notNamespaces: texts,
  serviceAccounts: texts,
  notServiceAccounts: texts,
  ipBlocks: fc.array(ipBlock, { minLength: 1, maxLength: 3 }),
  notIpBlocks: fc.array(ipBlock, { minLength: 1, maxLength: 3 }),
  remoteIpBlocks: fc.array(ipBlock, { minLength: 1, maxLength: 3 }),
  notRemoteIpBlocks: fc.array(ipBlock, { minLength: 1, maxLength: 3 }),
});
const operation = someOf({
  hosts: texts,
  notHosts: texts,
  ports: fc.array(port, { minLength: 1, maxLength: 3 }),
  notPorts: fc.array(port, { minLength: 1, maxLength: 3 }),
  methods: texts,
  notMethods: texts,
  paths: texts,
  notPaths: texts,
});
const condition = fc
  .tuple(text, fc.option(texts, { nil: undefined }), fc.option(texts, { nil: undefined }))
  .filter(([, v, nv]) => v !== undefined || nv !== undefined)
  .map(([key, values, notValues]) => ({ key, ...(values ? { values } : {}), ...(notValues ? { notValues } : {}) }));
const rule: fc.Arbitrary<AuthzRule> = someOf({
  from: fc.array(source.map((s) => ({ source: s })), { maxLength: 2 }),
  to: fc.array(operation.map((o) => ({ operation: o })), { maxLength: 2 }),
  when: fc.array(condition, { maxLength: 2 }),
});

const authzSpec = fc
  .record(
    {
      selector: fc.oneof(matchLabels.map((m) => ({ matchLabels: m })), fc.constant({})),
      targetRefs: fc.array(
        fc.record({ kind: fc.constantFrom('Service', 'Gateway'), name: dnsLabel, group: fc.constantFrom('', 'gateway.networking.k8s.io') }, { requiredKeys: ['kind', 'name'] }),
        { minLength: 1, maxLength: 2 },
      ),
      action: fc.constantFrom('ALLOW', 'DENY', 'AUDIT', 'CUSTOM'),
      rules: fc.array(rule, { maxLength: 3 }),
      provider: dnsLabel.map((name) => ({ name })),
    },
    { requiredKeys: [] },
  )
  // Istio's own rules: selector xor targetRefs, a provider exactly with CUSTOM.
  .map((s) => {
    const out: Record<string, unknown> = { ...s };
    if (out.selector !== undefined && out.targetRefs !== undefined) delete out.targetRefs;
    if (out.action === 'CUSTOM' && out.provider === undefined) out.provider = { name: 'ext-authz' };
    if (out.action !== 'CUSTOM') delete out.provider;
    return out as AuthorizationPolicyResource['spec'];
  });

const authzDoc = fc.record({ name: dnsLabel, namespace: dnsLabel, spec: authzSpec }).map(
  ({ name, namespace, spec }): AuthorizationPolicyResource => ({
    apiVersion: 'security.istio.io/v1',
    kind: 'AuthorizationPolicy',
    metadata: { name, namespace },
    spec,
  }),
);

const mode = fc.constantFrom('UNSET', 'STRICT', 'PERMISSIVE', 'DISABLE') as fc.Arbitrary<'UNSET' | 'STRICT' | 'PERMISSIVE' | 'DISABLE'>;
const peerDoc = fc
  .record(
    {
      name: dnsLabel,
      namespace: dnsLabel,
      selector: matchLabels,
      mtls: fc.option(mode, { nil: undefined }),
      portLevelMtls: fc.dictionary(port, mode.map((m) => ({ mode: m })), { maxKeys: 3 }),
    },
    { requiredKeys: ['name', 'namespace'] },
  )
  .map(({ name, namespace, selector, mtls, portLevelMtls }): PeerAuthenticationResource => {
    const spec: PeerAuthenticationResource['spec'] = {};
    if (selector) spec.selector = { matchLabels: selector };
    if (mtls) spec.mtls = { mode: mtls };
    // portLevelMtls needs a selector (as in Istio).
    if (selector && portLevelMtls && Object.keys(portLevelMtls).length) spec.portLevelMtls = portLevelMtls;
    return { apiVersion: 'security.istio.io/v1beta1', kind: 'PeerAuthentication', metadata: { name, namespace }, spec };
  });

// ---- valid documents -------------------------------------------------------------------------

test('valid AuthorizationPolicy documents parse to exactly what was written', () => {
  fc.assert(
    fc.property(authzDoc, (doc) => {
      const text = YAML.stringify(doc);
      const r = parse(text);
      assert.deepEqual(r.problems, [], text);
      assert.equal(r.resources.length, 1);
      assert.deepEqual(stripSource<Resource>(r.resources[0]!), doc);
      assert.equal(r.resources[0]!.source.line, 1);
    }),
    { numRuns: RUNS },
  );
  assertPrototypeUntouched(PROTO_BEFORE);
});

test('valid PeerAuthentication documents parse to exactly what was written', () => {
  fc.assert(
    fc.property(peerDoc, (doc) => {
      const text = YAML.stringify(doc);
      const r = parse(text);
      assert.deepEqual(r.problems, [], text);
      assert.deepEqual(stripSource<Resource>(r.resources[0]!), doc);
    }),
    { numRuns: RUNS },
  );
});

test('several valid documents in one file each keep their own first line', () => {
  fc.assert(
    fc.property(fc.array(fc.oneof(authzDoc, peerDoc), { minLength: 1, maxLength: 4 }), (docs) => {
      // Distinct names: a duplicate is a cross-document check of the loader, not of this parser.
      docs.forEach((d, i) => (d.metadata.name = `p${i}`));
      const parts = docs.map((d) => YAML.stringify(d));
      const text = parts.map((p) => `---\n${p}`).join('');
      const r = parse(text);
      assert.deepEqual(r.problems, []);
      assert.deepEqual(r.resources.map((x) => stripSource<Resource>(x)), docs);
      let line = 2;
      parts.forEach((p, i) => {
        assert.equal(r.resources[i]!.source.line, line);
        line += lineCount(p);
      });
    }),
    { numRuns: Math.ceil(RUNS / 3) },
  );
});

// ---- prototype keys -----------------------------------------------------------------------------

test('prototype-named label keys are plain data: selectors match only workloads that carry them', () => {
  fc.assert(
    fc.property(fc.constantFrom('constructor', 'prototype', 'toString', 'hasOwnProperty', 'valueOf'), labelValue, (key, value) => {
      const doc = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p, namespace: shop}
spec:
  selector:
    matchLabels: {${key}: "${value}"}
  action: DENY
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: m, namespace: shop}
spec:
  selector:
    matchLabels: {${key}: "${value}"}
  mtls: {mode: STRICT}
`;
      const r = parse(doc);
      assert.deepEqual(r.problems, []);
      const ap = r.resources[0] as unknown as AuthorizationPolicyResource;
      const pa = r.resources[1] as unknown as PeerAuthenticationResource;
      assert.ok(Object.hasOwn(ap.spec.selector!.matchLabels!, key));
      assert.equal(ap.spec.selector!.matchLabels![key], value);
      assert.equal(Object.getPrototypeOf(ap.spec.selector!.matchLabels), Object.prototype);
      const carrying = { namespace: 'shop', labels: withOwnKey({}, key, value) as Record<string, string> };
      const plain = { namespace: 'shop', labels: { app: 'x' } };
      assert.equal(applicablePolicies([ap], carrying).length, 1);
      assert.equal(applicablePolicies([ap], plain).length, 0);
      const conn = { sourceIp: '10.0.0.1', destinationIp: '10.0.0.2', destinationPort: 80 };
      assert.equal(authorize([ap], carrying, conn).allowed, false);
      assert.equal(authorize([ap], plain, conn).allowed, true);
      assert.equal(effectiveMtlsMode([pa], carrying, 80), 'STRICT');
      assert.equal(effectiveMtlsMode([pa], plain, 80), 'PERMISSIVE');
    }),
    { numRuns: 30 },
  );
  assertPrototypeUntouched(PROTO_BEFORE);
});

/** Where a hostile key can be put in a policy document (the object at that path gets the key). */
const KEY_SITES: Array<{ path: string[]; kind: 'authz' | 'peer' }> = [
  { path: [], kind: 'authz' },
  { path: ['metadata'], kind: 'authz' },
  { path: ['metadata', 'labels'], kind: 'authz' },
  { path: ['metadata', 'annotations'], kind: 'authz' },
  { path: ['spec'], kind: 'authz' },
  { path: ['spec', 'selector'], kind: 'authz' },
  { path: ['spec', 'selector', 'matchLabels'], kind: 'authz' },
  { path: ['spec', 'rules', '0'], kind: 'authz' },
  { path: ['spec', 'rules', '0', 'from', '0'], kind: 'authz' },
  { path: ['spec', 'rules', '0', 'from', '0', 'source'], kind: 'authz' },
  { path: ['spec', 'rules', '0', 'to', '0', 'operation'], kind: 'authz' },
  { path: ['spec', 'rules', '0', 'when', '0'], kind: 'authz' },
  { path: ['spec', 'mtls'], kind: 'peer' },
  { path: ['spec', 'portLevelMtls'], kind: 'peer' },
  { path: ['spec', 'portLevelMtls', '8080'], kind: 'peer' },
  { path: ['spec', 'selector', 'matchLabels'], kind: 'peer' },
];

function baseDoc(kind: 'authz' | 'peer'): Record<string, unknown> {
  if (kind === 'peer')
    return {
      apiVersion: 'security.istio.io/v1',
      kind: 'PeerAuthentication',
      metadata: { name: 'm', namespace: 'shop', labels: { app: 'x' }, annotations: { 'weft.io/a': 'b' } },
      spec: { selector: { matchLabels: { app: 'api' } }, mtls: { mode: 'STRICT' }, portLevelMtls: { '8080': { mode: 'DISABLE' } } },
    };
  return {
    apiVersion: 'security.istio.io/v1',
    kind: 'AuthorizationPolicy',
    metadata: { name: 'p', namespace: 'shop', labels: { app: 'x' }, annotations: { 'weft.io/a': 'b' } },
    spec: {
      selector: { matchLabels: { app: 'api' } },
      action: 'DENY',
      rules: [{ from: [{ source: { principals: ['a'] } }], to: [{ operation: { ports: ['80'] } }], when: [{ key: 'source.ip', values: ['10.0.0.1'] }] }],
    },
  };
}

/** A deep copy of `doc` whose object at `path` has the own key `key` = `value`. */
function putKey(doc: Record<string, unknown>, path: readonly string[], key: string, value: unknown): Record<string, unknown> {
  if (path.length === 0) return withOwnKey(doc, key, value);
  const [head, ...rest] = path as [string, ...string[]];
  const child = doc[head];
  if (Array.isArray(child)) {
    const copy = [...child];
    copy[Number(rest[0])] = putKey(child[Number(rest[0])] as Record<string, unknown>, rest.slice(1), key, value);
    return { ...doc, [head]: copy };
  }
  return { ...doc, [head]: putKey(child as Record<string, unknown>, rest, key, value) };
}

test('__proto__, constructor and prototype as keys anywhere: refused or plain data, never pollution', () => {
  const payloads = [{ polluted: 'yes' }, { prototype: { polluted: 'yes' } }, 'yes', ['yes'], { mode: 'STRICT' }, { matchLabels: { polluted: 'yes' } }];
  fc.assert(
    fc.property(fc.constantFrom(...KEY_SITES), fc.constantFrom(...PROTO_KEYS), fc.constantFrom(...payloads), ({ path, kind }, key, value) => {
      const doc = putKey(baseDoc(kind), path, key, value);
      const text = YAML.stringify(doc);
      assert.match(text, new RegExp(key.replace(/[$]/g, '\\$')), 'the key reached the YAML text');
      const r = parse(text);
      assertPrototypeUntouched(PROTO_BEFORE);
      if (r.resources.length === 0) {
        // Refused: a problem names the offending key.
        assert.ok(
          r.problems.some((p) => p.field.includes(key) || p.reason.includes(key)),
          `no problem names ${key}: ${JSON.stringify(r.problems)}`,
        );
        return;
      }
      // Accepted (only where any key is data: label keys): the key is an own property of a plain object.
      const res = r.resources[0]! as unknown as Record<string, unknown>;
      let at: unknown = res;
      for (const seg of path) at = (at as Record<string, unknown>)[seg];
      assert.ok(Object.hasOwn(at as object, key), `${key} accepted at ${path.join('.')} but not kept as data`);
      assert.equal(Object.getPrototypeOf(at), Object.prototype);
    }),
    { numRuns: RUNS },
  );
  // And the result of a refused document never became anything's prototype.
  assertPrototypeUntouched(PROTO_BEFORE);
});

// ---- mutated documents ---------------------------------------------------------------------------

/** Every path to a value inside a plain JSON value. */
function pathsOf(v: unknown, prefix: Array<string | number> = []): Array<Array<string | number>> {
  const out: Array<Array<string | number>> = [prefix];
  if (Array.isArray(v)) v.forEach((x, i) => out.push(...pathsOf(x, [...prefix, i])));
  else if (v !== null && typeof v === 'object') for (const [k, x] of Object.entries(v)) out.push(...pathsOf(x, [...prefix, k]));
  return out;
}

function setAt(v: unknown, path: ReadonlyArray<string | number>, value: unknown): unknown {
  if (path.length === 0) return value;
  const [head, ...rest] = path as [string | number, ...Array<string | number>];
  if (Array.isArray(v)) {
    const copy = [...v];
    copy[head as number] = setAt(v[head as number], rest, value);
    return copy;
  }
  const o = v as Record<string, unknown>;
  return withOwnKey(o, String(head), setAt(o[head as string], rest, value));
}

function deleteAt(v: unknown, path: ReadonlyArray<string | number>): unknown {
  if (path.length === 0) return undefined;
  if (path.length === 1) {
    if (Array.isArray(v)) return v.filter((_, i) => i !== path[0]);
    const { [path[0] as string]: _gone, ...rest } = v as Record<string, unknown>;
    void _gone;
    return rest;
  }
  const [head, ...rest] = path as [string | number, ...Array<string | number>];
  if (Array.isArray(v)) {
    const copy = [...v];
    copy[head as number] = deleteAt(v[head as number], rest);
    return copy;
  }
  return { ...(v as Record<string, unknown>), [head]: deleteAt((v as Record<string, unknown>)[head as string], rest) };
}

type Mutation = { op: 'set'; pick: number; value: unknown } | { op: 'delete'; pick: number } | { op: 'addKey'; pick: number; key: string; value: unknown };
const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ op: fc.constant('set' as const), pick: fc.nat(), value: garbage() }),
  fc.record({ op: fc.constant('delete' as const), pick: fc.nat() }),
  fc.record({ op: fc.constant('addKey' as const), pick: fc.nat(), key: fc.oneof(fc.string({ maxLength: 10 }), fc.constantFrom(...PROTO_KEYS)), value: garbage() }),
);

function mutate(doc: unknown, muts: readonly Mutation[]): unknown {
  let v = doc;
  for (const m of muts) {
    const paths = pathsOf(v);
    const path = paths[m.pick % paths.length]!;
    if (m.op === 'set') v = setAt(v, path, m.value);
    else if (m.op === 'delete') v = deleteAt(v, path);
    else {
      // Add a key to the object at (or around) the path.
      const objPaths = paths.filter((p) => {
        let at: unknown = v;
        for (const s of p) at = (at as Record<string | number, unknown>)[s];
        return at !== null && typeof at === 'object' && !Array.isArray(at);
      });
      if (objPaths.length === 0) continue;
      const p = objPaths[m.pick % objPaths.length]!;
      let at: unknown = v;
      for (const s of p) at = (at as Record<string | number, unknown>)[s];
      v = setAt(v, p, withOwnKey(at as Record<string, unknown>, m.key, m.value));
    }
  }
  return v;
}

/** A parsed policy has the declared shape all the way down: the evaluator can trust it. */
function assertWellTyped(r: Resource): void {
  const strList = (v: unknown, what: string): void => {
    if (v === undefined) return;
    assert.ok(Array.isArray(v) && v.every((x) => typeof x === 'string' && x !== ''), `${what} is not a list of non-empty strings: ${JSON.stringify(v)}`);
  };
  const labels = (v: unknown): void => {
    if (v === undefined) return;
    assert.equal(Object.getPrototypeOf(v), Object.prototype);
    for (const x of Object.values(v as object)) assert.equal(typeof x, 'string');
  };
  labels(r.metadata.labels);
  labels(r.metadata.annotations);
  assert.equal(typeof r.metadata.name, 'string');
  assert.equal(typeof r.metadata.namespace, 'string');
  if (r.kind === 'AuthorizationPolicy') {
    const s = r.spec;
    labels(s.selector?.matchLabels);
    if (s.action !== undefined) assert.ok(['ALLOW', 'DENY', 'AUDIT', 'CUSTOM'].includes(s.action));
    for (const rl of s.rules ?? []) {
      assert.equal(typeof rl, 'object');
      for (const f of rl.from ?? []) for (const [k, v] of Object.entries(f.source)) strList(v, k);
      for (const t of rl.to ?? []) for (const [k, v] of Object.entries(t.operation)) strList(v, k);
      for (const c of rl.when ?? []) {
        assert.equal(typeof c.key, 'string');
        strList(c.values, 'values');
        strList(c.notValues, 'notValues');
      }
    }
    // And it can be evaluated without throwing.
    authorize([r], { namespace: r.metadata.namespace!, labels: s.selector?.matchLabels ?? {} }, { sourceIp: '10.0.0.1', destinationIp: '10.0.0.2', destinationPort: 80, sourcePrincipal: 'td/ns/a/sa/b' });
  } else if (r.kind === 'PeerAuthentication') {
    labels(r.spec.selector?.matchLabels);
    for (const [p, m] of Object.entries(r.spec.portLevelMtls ?? {})) {
      assert.match(p, /^[1-9]\d{0,4}$/);
      assert.ok(m.mode === undefined || ['UNSET', 'STRICT', 'PERMISSIVE', 'DISABLE'].includes(m.mode));
    }
    effectiveMtlsMode([r], { namespace: r.metadata.namespace!, labels: r.spec.selector?.matchLabels ?? {} }, 8080);
  }
}

test('mutated policy documents: parsed well-typed, or refused with located problems', () => {
  fc.assert(
    fc.property(fc.oneof(authzDoc, peerDoc), fc.array(mutation, { minLength: 1, maxLength: 4 }), (doc, muts) => {
      const mutated = mutate(doc, muts);
      const text = YAML.stringify(mutated) ?? '';
      const r = parse(text);
      assertPrototypeUntouched(PROTO_BEFORE);
      for (const res of r.resources) assertWellTyped(res);
      if (r.resources.length === 0 && mutated !== null && mutated !== undefined && text.trim() !== '' && text.trim() !== 'null') {
        assert.ok(r.problems.length > 0, `refused without a problem: ${text}`);
      }
    }),
    { numRuns: RUNS * 2 },
  );
});

/** String-list fields of a rule: garbage in any of them is reported at that field. */
const LIST_FIELDS: Array<{ at: (v: unknown) => AuthzRule; field: string }> = [
  { at: (v) => ({ from: [{ source: { principals: v as string[] } }] }), field: 'spec.rules[0].from[0].source.principals' },
  { at: (v) => ({ from: [{ source: { ipBlocks: v as string[] } }] }), field: 'spec.rules[0].from[0].source.ipBlocks' },
  { at: (v) => ({ to: [{ operation: { ports: v as string[] } }] }), field: 'spec.rules[0].to[0].operation.ports' },
  { at: (v) => ({ to: [{ operation: { paths: v as string[] } }] }), field: 'spec.rules[0].to[0].operation.paths' },
  { at: (v) => ({ when: [{ key: 'source.ip', values: v as string[] }] }), field: 'spec.rules[0].when[0].values' },
];

test('a wrong value in a list field is reported at that field and its line', () => {
  const bad = fc.oneof(
    fc.oneof(fc.integer(), fc.boolean(), fc.double(), fc.dictionary(fc.string({ maxLength: 5 }), fc.string(), { minKeys: 1, maxKeys: 2 })),
    fc.array(fc.oneof(fc.integer(), fc.boolean(), fc.constant(''), fc.constant(null), fc.array(fc.string(), { maxLength: 2 })), { minLength: 1, maxLength: 3 }),
  );
  fc.assert(
    fc.property(fc.constantFrom(...LIST_FIELDS), bad, ({ at, field }, value) => {
      const doc = { apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'p', namespace: 'shop' }, spec: { action: 'DENY', rules: [at(value)] } };
      const text = YAML.stringify(doc);
      const r = parse(text);
      assert.equal(r.resources.length, 0, text);
      const p = r.problems.find((x) => x.field === field || x.field.startsWith(`${field}[`));
      assert.ok(p, `no problem at ${field}: ${JSON.stringify(r.problems)}\n${text}`);
      // The line is the field's own line or one of its items' lines, never the document's first line.
      const key = field.split('.').pop()!;
      const keyLine = text.split('\n').findIndex((l) => l.includes(`${key}:`)) + 1;
      assert.ok(p.line >= keyLine && p.line <= keyLine + 6, `line ${p.line}, field ${key} is on line ${keyLine}\n${text}`);
    }),
    { numRuns: RUNS },
  );
});

// ---- garbage text -------------------------------------------------------------------------------

const YAML_TOKENS = ['-', ' ', '  ', ':', ': ', '\n', '[', ']', '{', '}', ',', '&a', '*a', '&b', '*b', '!!str', '!!binary', '!!set', '!!map', '!foo', '|', '>', "'", '"', '#', '---', '...', '%YAML 1.1', '%TAG ! tag:x,2000:', '? ', '<<', '__proto__', 'constructor', 'kind', 'AuthorizationPolicy', 'PeerAuthentication', 'apiVersion', 'security.istio.io/v1', 'metadata', 'name', 'spec', 'rules', 'from', 'source', 'principals', '\t', '\r', '\u00a0', '\ufeff', 'é', '\ud83d\ude00', '0x1F', '.inf', '1e999', '~', 'null'];

test('garbage text never throws, never hangs, and every problem is located', () => {
  const soup = fc.array(fc.constantFrom(...YAML_TOKENS), { maxLength: 120 }).map((t) => t.join(''));
  fc.assert(
    fc.property(fc.oneof(soup, fc.string({ maxLength: 200 }), fc.fullUnicodeString({ maxLength: 100 })), (t) => {
      const r = parse(t);
      for (const res of r.resources) assertWellTyped(res);
    }),
    { numRuns: RUNS * 3 },
  );
  assertPrototypeUntouched(PROTO_BEFORE);
});

test('garbage appended to a valid document: the valid document still parses', () => {
  const soup = fc.array(fc.constantFrom(...YAML_TOKENS), { minLength: 1, maxLength: 60 }).map((t) => t.join(''));
  fc.assert(
    fc.property(authzDoc, soup, (doc, junk) => {
      const text = `${YAML.stringify(doc)}---\n${junk}\n`;
      const r = parse(text);
      const good = r.resources.find((x) => x.source.line === 1);
      // A junk document can only break the stream when it is a syntax error spanning the separator.
      if (good) assert.deepEqual(stripSource<Resource>(good), doc);
      else assert.ok(r.problems.length > 0);
    }),
    { numRuns: RUNS },
  );
});

// ---- resource exhaustion and the odd corners of YAML ----------------------------------------------

const HEAD = 'apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: shop}\n';

test('an alias bomb is refused quickly, naming the document', () => {
  const text = `${HEAD}spec:\n  rules: []\nbomb:\n${aliasBomb('  ')}`;
  const r = parse(text);
  assert.equal(r.resources.length, 0);
  assert.equal(r.problems.length, 1);
  assert.match(r.problems[0]!.reason, /alias/i);
  assert.equal(r.problems[0]!.line, 1);
});

test('deep nesting is refused quickly, without a stack overflow escaping', () => {
  for (const n of [1_001, 5_000, 50_000, 1_000_000]) {
    // Bounded far below the time the YAML parser itself would need for this (seconds).
    const r = bounded(300, `depth ${n}`, () => parse(`${HEAD}spec:\n  rules: ${deepFlow(n)}\n`));
    assert.equal(r.resources.length, 0, `depth ${n}`);
    assert.deepEqual(r.problems.map((p) => [p.line, p.reason]), [[5, 'YAML syntax error: the document nests deeper than 1000 levels']]);
  }
  // Unclosed, and mixed with mappings.
  assert.equal(parse(`${HEAD}spec:\n  rules: ${'['.repeat(300_000)}\n`).resources.length, 0);
  const r = parse(`${HEAD}spec:\n  rules: ${'[{from: '.repeat(20_000)}x${'}]'.repeat(20_000)}\n`);
  assert.equal(r.resources.length, 0);
  // Block nesting too, one level per line.
  const block = Array.from({ length: 3000 }, (_, i) => `${' '.repeat(i)}a:`).join('\n');
  assert.equal(parse(`${HEAD}spec:\n${block.replace(/^/gm, '  ')} 1\n`).resources.length, 0);
});

test('huge values are refused with a bounded message; oversized files are refused whole', () => {
  const big = 'p'.repeat(2_000_000);
  const r = parse(`${HEAD}spec:\n  rules:\n  - from:\n    - source:\n        ipBlocks: ["${big}"]\n`);
  assert.equal(r.resources.length, 0);
  const p = r.problems.find((x) => x.field === 'spec.rules[0].from[0].source.ipBlocks[0]');
  assert.ok(p, JSON.stringify(r.problems).slice(0, 500));
  assert.match(p.reason, /2000000 characters/);
  assert.equal(p.line, 8);

  const huge = parse(`${HEAD}spec:\n  rules: []\n# ${'x'.repeat(5 * 1024 * 1024)}\n`);
  assert.equal(huge.resources.length, 0);
  assert.match(huge.problems[0]!.reason, /at most \d+/);
});

test('thousands of problems are capped with a count of the rest', () => {
  const fields = Array.from({ length: 5000 }, (_, i) => `  junk${i}: 1`).join('\n');
  const r = parse(`${HEAD}spec:\n${fields}\n`);
  assert.equal(r.resources.length, 0);
  assert.ok(r.problems.length <= 201, String(r.problems.length));
  assert.match(r.problems[r.problems.length - 1]!.reason, /^\d+ more problems in this file are not listed$/);
});

test('duplicate keys, unresolved tags and non-string scalars are refused with their line', () => {
  const cases: Array<[string, number, RegExp]> = [
    [`${HEAD}spec:\n  action: ALLOW\n  action: DENY\n`, 6, /unique/],
    [`${HEAD}spec:\n  action: !foo ALLOW\n`, 5, /Unresolved tag/],
    [`${HEAD}spec:\n  action: !!int DENY\n`, 5, /Unresolved tag/],
    [`${HEAD}spec:\n  action: !!binary QUxMT1c=\n`, 5, /binary/],
    [`${HEAD}spec:\n  rules: !!set {a, b}\n`, 5, /set/],
    [`${HEAD}spec:\n  rules:\n  - to:\n    - operation:\n        ports: [8080]\n`, 8, /must be a string, got number 8080 \(quote it\)/],
    [`${HEAD}spec:\n  rules:\n  - to:\n    - operation:\n        ports: ["70000", "0", "-1"]\n`, 8, /outside 1-65535|not a port/],
    [`${HEAD}spec:\n  action: .inf\n`, 5, /must be a string, got number Infinity/],
    [`${HEAD}spec:\n  action: "ALLOW\\u0000\\u001b[2J"\n`, 5, /\\u0000\\u001b\[2J/],
  ];
  for (const [t, line, reason] of cases) {
    const r = parse(t);
    assert.equal(r.resources.length, 0, t);
    assert.ok(r.problems.some((p) => p.line === line && reason.test(p.reason)), `${t}\n${JSON.stringify(r.problems)}`);
  }
});

test('portLevelMtls: the same port written twice is refused', () => {
  const r = parse(`apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: m, namespace: shop}
spec:
  selector: {matchLabels: {app: api}}
  portLevelMtls:
    "8080": {mode: STRICT}
    "08080": {mode: DISABLE}
`);
  assert.equal(r.resources.length, 0);
  assert.deepEqual(
    r.problems.map((p) => [p.line, p.field, p.reason]),
    [[8, 'spec.portLevelMtls.08080', 'port 8080 is set more than once']],
  );
});

test('an Istio kind weft does not read (WasmPlugin) is refused by name, not guessed at', () => {
  const r = parse(`apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: filter, namespace: shop}
spec:
  url: oci://example.com/filter:v1
`);
  assert.equal(r.resources.length, 0);
  assert.equal(r.problems.length, 1);
  assert.equal(r.problems[0]!.field, 'kind');
  assert.equal(r.problems[0]!.line, 2);
  assert.match(r.problems[0]!.reason, /unknown kind "WasmPlugin"/);
});
