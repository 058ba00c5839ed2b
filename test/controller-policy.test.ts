// Istio policy kinds in the registry: valid documents normalised, bad ones refused with file, line,
// field and reason.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { parseDocuments } from '../agent/registry/parse.js';
import type { ConfigProblem } from '../agent/errors.js';

const F = '/cfg/policies.yaml';

function problems(text: string): ConfigProblem[] {
  return parseDocuments(text, F).problems;
}

function one(text: string): ConfigProblem {
  const p = problems(text);
  assert.equal(p.length, 1, `expected one problem, got ${JSON.stringify(p, null, 2)}`);
  return p[0]!;
}

const AUTHZ = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-frontend, namespace: shop}
spec:
  selector:
    matchLabels: {app: api}
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/shop/sa/frontend"]
        ipBlocks: ["10.0.0.0/8", "fd00::/8", "192.168.1.7"]
    to:
    - operation:
        ports: ["8080"]
    when:
    - key: source.namespace
      values: [shop]
`;

describe('policy kinds: valid documents', () => {
  test('AuthorizationPolicy (v1 and v1beta1) parses into the typed shape', () => {
    for (const v of ['v1', 'v1beta1']) {
      const r = parseDocuments(AUTHZ.replace('security.istio.io/v1', `security.istio.io/${v}`), F);
      assert.deepEqual(r.problems, []);
      const p = r.resources[0]!;
      assert.equal(p.kind, 'AuthorizationPolicy');
      if (p.kind !== 'AuthorizationPolicy') return;
      assert.equal(p.apiVersion, `security.istio.io/${v}`);
      assert.deepEqual(p.spec.selector, { matchLabels: { app: 'api' } });
      assert.deepEqual(p.spec.rules?.[0]?.from?.[0]?.source.ipBlocks, ['10.0.0.0/8', 'fd00::/8', '192.168.1.7']);
      assert.deepEqual(p.spec.rules?.[0]?.to?.[0]?.operation.ports, ['8080']);
      assert.deepEqual(p.spec.rules?.[0]?.when, [{ key: 'source.namespace', values: ['shop'] }]);
    }
  });

  test('deny-all (no spec), PeerAuthentication with portLevelMtls', () => {
    const r = parseDocuments(
      `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-all, namespace: shop}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: istio-system}
spec:
  mtls: {mode: STRICT}
---
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: api, namespace: shop}
spec:
  selector: {matchLabels: {app: api}}
  mtls: {mode: STRICT}
  portLevelMtls:
    8080: {mode: PERMISSIVE}
`,
      F,
    );
    assert.deepEqual(r.problems, []);
    assert.equal(r.resources.length, 3);
    const pa = r.resources[2]!;
    assert.ok(pa.kind === 'PeerAuthentication');
    assert.deepEqual(pa.spec.portLevelMtls, { '8080': { mode: 'PERMISSIVE' } });
  });
});

describe('policy kinds: bad input → file:line: field: reason', () => {
  test('YAML syntax error', () => {
    const p = one(`apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: x, namespace: shop\nspec: {}\n`);
    assert.equal(p.file, F);
    assert.equal(p.field, '');
    assert.match(p.reason, /YAML syntax error/);
    assert.ok(p.line >= 3, `line ${p.line}`);
  });

  test('unknown field', () => {
    const p = one(AUTHZ.replace('  action: ALLOW\n', '  action: ALLOW\n  actions: [DENY]\n'));
    assert.deepEqual({ ...p, reason: '' }, { file: F, line: 8, field: 'spec.actions', reason: '' });
    assert.match(p.reason, /unknown field "actions"/);
  });

  test('bad selector label value', () => {
    const p = one(AUTHZ.replace('{app: api}', '{app: "no spaces allowed"}'));
    assert.deepEqual({ ...p, reason: '' }, { file: F, line: 6, field: 'spec.selector.matchLabels.app', reason: '' });
    assert.match(p.reason, /not a valid label value/);
  });

  test('bad CIDR', () => {
    const p = one(AUTHZ.replace('"fd00::/8"', '"10.0.0.0/33"'));
    assert.deepEqual({ ...p, reason: '' }, { file: F, line: 12, field: 'spec.rules[0].from[0].source.ipBlocks[1]', reason: '' });
    assert.match(p.reason, /invalid prefix length/);
    const q = one(AUTHZ.replace('"192.168.1.7"', '"not-an-ip"'));
    assert.equal(q.field, 'spec.rules[0].from[0].source.ipBlocks[2]');
    assert.match(q.reason, /not an IP address or CIDR/);
  });

  test('bad port: out of range, and a number instead of a string', () => {
    const p = one(AUTHZ.replace('ports: ["8080"]', 'ports: ["70000"]'));
    assert.deepEqual({ ...p, reason: '' }, { file: F, line: 15, field: 'spec.rules[0].to[0].operation.ports[0]', reason: '' });
    assert.match(p.reason, /outside 1-65535/);
    const q = one(AUTHZ.replace('ports: ["8080"]', 'ports: [8080]'));
    assert.match(q.reason, /must be a string.*quote it/);
  });

  test('action, CUSTOM without provider, when without values, mtls mode', () => {
    assert.match(one(AUTHZ.replace('action: ALLOW', 'action: PERMIT')).reason, /"PERMIT" is not one of ALLOW, DENY, AUDIT, CUSTOM/);
    const custom = one(AUTHZ.replace('action: ALLOW', 'action: CUSTOM'));
    assert.equal(custom.field, 'spec.action');
    assert.match(custom.reason, /provider/);
    const when = one(AUTHZ.replace('      values: [shop]\n', ''));
    assert.equal(when.field, 'spec.rules[0].when[0]');
    assert.match(when.reason, /values or notValues/);
    const mode = one(`apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: x, namespace: shop}\nspec:\n  mtls: {mode: STRICTLY}\n`);
    assert.deepEqual({ ...mode, reason: '' }, { file: F, line: 5, field: 'spec.mtls.mode', reason: '' });
  });

  test('portLevelMtls needs a selector; its keys are ports', () => {
    const p = one(`apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: x, namespace: shop}\nspec:\n  portLevelMtls:\n    8080: {mode: DISABLE}\n`);
    assert.equal(p.field, 'spec.portLevelMtls');
    assert.match(p.reason, /requires a selector/);
    const q = one(
      `apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: x, namespace: shop}\nspec:\n  selector: {matchLabels: {app: a}}\n  portLevelMtls:\n    http: {mode: DISABLE}\n`,
    );
    assert.deepEqual({ ...q, reason: '' }, { file: F, line: 7, field: 'spec.portLevelMtls.http', reason: '' });
  });
});
