// The kinds table: parsing knows every kind through the public entry alone (no module has to be
// imported for its side effect), and the table lists each kind once with the apiVersions it accepts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
// Deliberately the only static registry import: a policy must parse with nothing else loaded (the
// table itself is imported later, by the test that inspects it).
import { knownKinds, parseDocuments, problemKind } from '../agent/registry/parse.js';

const POLICIES = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-client, namespace: demo}
spec:
  selector: {matchLabels: {app: server}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/demo/sa/client"]}}]
    to: [{operation: {ports: ["8080"]}}]
---
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: strict, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
`;

test('a policy parses when only the public parse entry is imported', () => {
  const r = parseDocuments(POLICIES, 'policies.yaml');
  assert.deepEqual(r.problems, []);
  assert.deepEqual(
    r.resources.map((x) => [x.apiVersion, x.kind, x.metadata.namespace, x.metadata.name, x.source.line]),
    [
      ['security.istio.io/v1', 'AuthorizationPolicy', 'demo', 'allow-client', 1],
      ['security.istio.io/v1beta1', 'PeerAuthentication', 'istio-system', 'strict', 11],
    ],
  );
});

test('a policy with a bad field is refused by the policy validator, located at the field', () => {
  const r = parseDocuments(`apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: p, namespace: demo}\nspec:\n  mtls: {mode: MAYBE}\n`, 'p.yaml');
  assert.equal(r.resources.length, 0);
  assert.equal(r.problems.length, 1);
  assert.deepEqual({ ...r.problems[0]!, reason: '' }, { file: 'p.yaml', line: 5, field: 'spec.mtls.mode', reason: '' });
  assert.match(r.problems[0]!.reason, /"MAYBE" is not one of UNSET, STRICT, PERMISSIVE, DISABLE/);
  assert.equal(problemKind(r.problems[0]!), 'PeerAuthentication');
});

test('the table lists every kind once; unknown kinds and wrong apiVersions are refused naming the table', async () => {
  const { KINDS } = await import('../agent/registry/kinds.js');
  const kinds = KINDS.map((k) => k.kind);
  assert.equal(new Set(kinds).size, kinds.length, 'a kind appears twice');
  assert.deepEqual(knownKinds(), [
    'AuthorizationPolicy',
    'DestinationRule',
    'EndpointSlice',
    'Gateway',
    'HTTPRoute',
    'LabConfig',
    'Namespace',
    'Node',
    'PeerAuthentication',
    'Pod',
    'RequestAuthentication',
    'Service',
    'VirtualService',
  ]);
  for (const k of KINDS) assert.ok(k.apiVersions.length > 0, `${k.kind} accepts no apiVersion`);

  const unknown = parseDocuments('apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n', 'u.yaml');
  assert.equal(unknown.problems.length, 1);
  assert.equal(unknown.problems[0]!.field, 'kind');
  assert.equal(unknown.problems[0]!.reason, `unknown kind "Deployment" (known kinds: ${knownKinds().join(', ')})`);
  assert.equal(problemKind(unknown.problems[0]!), 'unknown');

  // A kind that only an object's prototype has is not a kind of the table.
  const proto = parseDocuments('apiVersion: v1\nkind: __proto__\nmetadata: {name: x}\n', 'p.yaml');
  assert.match(proto.problems[0]!.reason, /^unknown kind "__proto__"/);

  const wrongVersion = parseDocuments('apiVersion: security.istio.io/v2\nkind: AuthorizationPolicy\nmetadata: {name: x, namespace: d}\n', 'v.yaml');
  assert.equal(wrongVersion.problems[0]!.field, 'apiVersion');
  assert.match(wrongVersion.problems[0]!.reason, /expected security\.istio\.io\/v1 or security\.istio\.io\/v1beta1/);
});

test('metadata.name follows the row: a Pod takes a DNS-1123 subdomain, a Service only a label', () => {
  const pod = parseDocuments('apiVersion: v1\nkind: Pod\nmetadata: {name: a.b, namespace: d}\nspec: {nodeName: n, containers: [{name: c, command: [x]}]}\n', 'pod.yaml');
  assert.deepEqual(pod.problems, []);
  assert.equal(pod.resources[0]!.metadata.name, 'a.b');
  const svc = parseDocuments('apiVersion: v1\nkind: Service\nmetadata: {name: a.b, namespace: d}\nspec: {ports: [{port: 80}]}\n', 'svc.yaml');
  assert.equal(svc.resources.length, 0);
  assert.equal(svc.problems[0]!.field, 'metadata.name');
});
