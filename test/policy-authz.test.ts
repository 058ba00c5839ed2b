// L4 authorization as ztunnel enforces Istio AuthorizationPolicy: a table of connections and
// policies with the decision each must get, then scope selection and decision reasons.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { applicablePolicies, authorize, type ConnectionAttrs, type WorkloadRef } from '../agent/policy/index.js';
import type { AuthorizationPolicyResource, AuthzRule, AuthzAction } from '../agent/registry/policy-types.js';

type Spec = AuthorizationPolicyResource['spec'];

const policy = (ns: string, name: string, spec: Spec): AuthorizationPolicyResource => ({
  apiVersion: 'security.istio.io/v1',
  kind: 'AuthorizationPolicy',
  metadata: { name, namespace: ns },
  spec,
});
/** A namespace-wide policy in `shop` with one action and its rules. */
const inShop = (action: AuthzAction | undefined, rules?: AuthzRule[], name = 'p'): AuthorizationPolicyResource =>
  policy('shop', name, { ...(action ? { action } : {}), ...(rules ? { rules } : {}) });
const allowIf = (rule: AuthzRule) => [inShop('ALLOW', [rule])];
const denyIf = (rule: AuthzRule) => [inShop('DENY', [rule])];

const api: WorkloadRef = { namespace: 'shop', labels: { app: 'api', version: 'v1' } };
const WEB = 'cluster.local/ns/front/sa/web';
/** mTLS from front/web at 10.0.1.5 to the api pod 10.0.2.7:8080. */
const mtls: ConnectionAttrs = { sourcePrincipal: WEB, sourceIp: '10.0.1.5', destinationIp: '10.0.2.7', destinationPort: 8080 };
const plain: ConnectionAttrs = { sourceIp: '10.0.1.5', destinationIp: '10.0.2.7', destinationPort: 8080 };
const v6: ConnectionAttrs = { sourcePrincipal: WEB, sourceIp: 'fd00:1::5', destinationIp: 'fd00:2::7', destinationPort: 8080 };
const from = (source: NonNullable<AuthzRule['from']>[number]['source']): AuthzRule => ({ from: [{ source }] });
const to = (operation: NonNullable<AuthzRule['to']>[number]['operation']): AuthzRule => ({ to: [{ operation }] });
const when = (key: string, values?: string[], notValues?: string[]): AuthzRule => ({
  when: [{ key, ...(values ? { values } : {}), ...(notValues ? { notValues } : {}) }],
});

interface Case {
  name: string;
  policies: AuthorizationPolicyResource[];
  conn?: ConnectionAttrs;
  workload?: WorkloadRef;
  rootNamespace?: string;
  trustDomain?: string;
  allowed: boolean;
  reason?: string;
  audited?: string[];
}

const cases: Case[] = [
  // --- source.principals / notPrincipals: exact, prefix, suffix, presence
  { name: 'principals exact match', policies: allowIf(from({ principals: [WEB] })), allowed: true },
  { name: 'principals exact mismatch', policies: allowIf(from({ principals: ['cluster.local/ns/front/sa/other'] })), allowed: false },
  { name: 'principals prefix match', policies: allowIf(from({ principals: ['cluster.local/ns/front/*'] })), allowed: true },
  { name: 'principals prefix mismatch', policies: allowIf(from({ principals: ['cluster.local/ns/back/*'] })), allowed: false },
  { name: 'principals suffix match', policies: allowIf(from({ principals: ['*/sa/web'] })), allowed: true },
  { name: 'principals suffix mismatch', policies: allowIf(from({ principals: ['*/sa/db'] })), allowed: false },
  { name: 'principals * matches any mTLS peer', policies: allowIf(from({ principals: ['*'] })), allowed: true },
  { name: 'principals * does not match plaintext', policies: allowIf(from({ principals: ['*'] })), conn: plain, allowed: false },
  { name: 'principals exact never matches plaintext', policies: allowIf(from({ principals: [WEB] })), conn: plain, allowed: false },
  { name: 'principals values are ORed', policies: allowIf(from({ principals: ['x/ns/a/sa/b', WEB] })), allowed: true },
  { name: 'principals are compared exactly: cluster.local is no trust-domain alias at L4', policies: allowIf(from({ principals: [WEB] })), conn: { ...mtls, sourcePrincipal: 'corp.example/ns/front/sa/web' }, trustDomain: 'corp.example', allowed: false },
  { name: 'principal given with spiffe:// scheme is normalised', policies: allowIf(from({ principals: [WEB] })), conn: { ...mtls, sourcePrincipal: `spiffe://${WEB}` }, allowed: true },
  { name: 'notPrincipals containing the peer', policies: allowIf(from({ notPrincipals: [WEB] })), allowed: false },
  { name: 'notPrincipals not containing the peer', policies: allowIf(from({ notPrincipals: ['*/sa/db'] })), allowed: true },
  { name: 'notPrincipals ["*"] matches plaintext', policies: allowIf(from({ notPrincipals: ['*'] })), conn: plain, allowed: true },
  { name: 'notPrincipals ["*"] does not match mTLS', policies: allowIf(from({ notPrincipals: ['*'] })), allowed: false },
  { name: 'notPrincipals exact matches plaintext (no identity is "not" anything)', policies: allowIf(from({ notPrincipals: [WEB] })), conn: plain, allowed: true },

  // --- source.namespaces / notNamespaces
  { name: 'namespaces exact match', policies: allowIf(from({ namespaces: ['front'] })), allowed: true },
  { name: 'namespaces mismatch', policies: allowIf(from({ namespaces: ['back'] })), allowed: false },
  { name: 'namespaces prefix', policies: allowIf(from({ namespaces: ['fr*'] })), allowed: true },
  { name: 'namespaces suffix', policies: allowIf(from({ namespaces: ['*ont'] })), allowed: true },
  { name: 'namespaces * does not match plaintext', policies: allowIf(from({ namespaces: ['*'] })), conn: plain, allowed: false },
  { name: 'namespaces never match plaintext, even with sourceNamespace set', policies: allowIf(from({ namespaces: ['front'] })), conn: { ...plain, sourceNamespace: 'front' }, allowed: false },
  { name: 'namespace comes from the principal, not sourceNamespace', policies: allowIf(from({ namespaces: ['front'] })), conn: { ...mtls, sourceNamespace: 'back' }, allowed: true },
  { name: 'notNamespaces containing the peer', policies: allowIf(from({ notNamespaces: ['front'] })), allowed: false },
  { name: 'notNamespaces not containing the peer', policies: allowIf(from({ notNamespaces: ['back'] })), allowed: true },
  { name: 'notNamespaces matches plaintext (ISTIO-SECURITY-2021-004)', policies: allowIf(from({ notNamespaces: ['front'] })), conn: plain, allowed: true },

  // --- source.serviceAccounts / notServiceAccounts (ns/sa, or sa in the policy's namespace)
  { name: 'serviceAccounts ns/sa match', policies: allowIf(from({ serviceAccounts: ['front/web'] })), allowed: true },
  { name: 'serviceAccounts ns/sa mismatch', policies: allowIf(from({ serviceAccounts: ['front/db'] })), allowed: false },
  { name: 'serviceAccounts bare name means the policy namespace (shop), not front', policies: allowIf(from({ serviceAccounts: ['web'] })), allowed: false },
  { name: 'serviceAccounts bare name matches a peer in the policy namespace', policies: allowIf(from({ serviceAccounts: ['web'] })), conn: { ...mtls, sourcePrincipal: 'cluster.local/ns/shop/sa/web' }, allowed: true },
  { name: 'serviceAccounts never match plaintext', policies: allowIf(from({ serviceAccounts: ['front/web'] })), conn: plain, allowed: false },
  { name: 'notServiceAccounts containing the peer', policies: allowIf(from({ notServiceAccounts: ['front/web'] })), allowed: false },
  { name: 'notServiceAccounts matches plaintext', policies: allowIf(from({ notServiceAccounts: ['front/web'] })), conn: plain, allowed: true },

  // --- source.ipBlocks / notIpBlocks
  { name: 'ipBlocks v4 CIDR contains source', policies: allowIf(from({ ipBlocks: ['10.0.1.0/24'] })), allowed: true },
  { name: 'ipBlocks v4 CIDR does not contain source', policies: allowIf(from({ ipBlocks: ['10.0.9.0/24'] })), allowed: false },
  { name: 'ipBlocks single v4 address', policies: allowIf(from({ ipBlocks: ['10.0.1.5'] })), allowed: true },
  { name: 'ipBlocks single v4 address, other source', policies: allowIf(from({ ipBlocks: ['10.0.1.6'] })), allowed: false },
  { name: 'ipBlocks CIDR with host bits set still masks', policies: allowIf(from({ ipBlocks: ['10.0.1.99/24'] })), allowed: true },
  { name: 'ipBlocks /0 matches any v4 source', policies: allowIf(from({ ipBlocks: ['0.0.0.0/0'] })), conn: plain, allowed: true },
  { name: 'ipBlocks v6 CIDR contains v6 source', policies: allowIf(from({ ipBlocks: ['fd00:1::/64'] })), conn: v6, allowed: true },
  { name: 'ipBlocks v6 CIDR does not contain v6 source', policies: allowIf(from({ ipBlocks: ['fd00:9::/64'] })), conn: v6, allowed: false },
  { name: 'ipBlocks single v6 address', policies: allowIf(from({ ipBlocks: ['fd00:1:0:0::5'] })), conn: v6, allowed: true },
  { name: 'ipBlocks v6 range never contains a v4 source', policies: allowIf(from({ ipBlocks: ['::/0'] })), allowed: false },
  { name: 'ipBlocks v4 range matches a v4-mapped v6 source', policies: allowIf(from({ ipBlocks: ['10.0.1.0/24'] })), conn: { ...mtls, sourceIp: '::ffff:10.0.1.5' }, allowed: true },
  { name: 'notIpBlocks containing source', policies: allowIf(from({ notIpBlocks: ['10.0.0.0/16'] })), allowed: false },
  { name: 'notIpBlocks not containing source', policies: allowIf(from({ notIpBlocks: ['192.168.0.0/16'] })), allowed: true },

  // --- to.operation.ports / notPorts
  { name: 'ports match', policies: allowIf(to({ ports: ['80', '8080'] })), allowed: true },
  { name: 'ports mismatch', policies: allowIf(to({ ports: ['80'] })), allowed: false },
  { name: 'notPorts containing destination port', policies: allowIf(to({ notPorts: ['8080'] })), allowed: false },
  { name: 'notPorts not containing destination port', policies: allowIf(to({ notPorts: ['9090'] })), allowed: true },
  { name: 'ports that are not numbers are dropped, leaving an empty match that never matches', policies: allowIf(to({ ports: ['http'] })), allowed: false },

  // --- when: the five L4 keys, values and notValues
  { name: 'when source.ip values', policies: allowIf(when('source.ip', ['10.0.1.0/24'])), allowed: true },
  { name: 'when source.ip notValues', policies: allowIf(when('source.ip', undefined, ['10.0.1.5'])), allowed: false },
  { name: 'when source.namespace values', policies: allowIf(when('source.namespace', ['front'])), allowed: true },
  { name: 'when source.namespace values, plaintext', policies: allowIf(when('source.namespace', ['front'])), conn: plain, allowed: false },
  { name: 'when source.namespace notValues', policies: allowIf(when('source.namespace', undefined, ['fr*'])), allowed: false },
  { name: 'when source.principal values', policies: allowIf(when('source.principal', ['*/sa/web'])), allowed: true },
  { name: 'when source.principal notValues', policies: allowIf(when('source.principal', undefined, [WEB])), allowed: false },
  { name: 'when source.principal notValues ["*"] matches plaintext', policies: allowIf(when('source.principal', undefined, ['*'])), conn: plain, allowed: true },
  { name: 'when destination.ip values', policies: allowIf(when('destination.ip', ['10.0.2.7'])), allowed: true },
  { name: 'when destination.ip values, v6', policies: allowIf(when('destination.ip', ['fd00:2::/32'])), conn: v6, allowed: true },
  { name: 'when destination.ip notValues', policies: allowIf(when('destination.ip', undefined, ['10.0.2.0/24'])), allowed: false },
  { name: 'when destination.port values', policies: allowIf(when('destination.port', ['8080'])), allowed: true },
  { name: 'when destination.port notValues', policies: allowIf(when('destination.port', undefined, ['8080'])), allowed: false },
  { name: 'when destination.port values and notValues both hold', policies: allowIf(when('destination.port', ['8080', '9090'], ['9090'])), allowed: true },

  // --- combining: fields AND, entries OR, from/to/when AND, conditions AND, rules OR
  { name: 'fields of one source AND (principal ok, ip not)', policies: allowIf(from({ principals: [WEB], ipBlocks: ['192.168.0.0/16'] })), allowed: false },
  { name: 'fields of one source AND (both ok)', policies: allowIf(from({ principals: [WEB], ipBlocks: ['10.0.0.0/8'] })), allowed: true },
  { name: 'positive and not fields of one source AND', policies: allowIf(from({ namespaces: ['front'], notPrincipals: [WEB] })), allowed: false },
  { name: 'from entries OR', policies: allowIf({ from: [{ source: { namespaces: ['back'] } }, { source: { ipBlocks: ['10.0.1.5'] } }] }), allowed: true },
  { name: 'to entries OR', policies: allowIf({ to: [{ operation: { ports: ['80'] } }, { operation: { ports: ['8080'] } }] }), allowed: true },
  { name: 'from and to AND (to fails)', policies: allowIf({ from: [{ source: { namespaces: ['front'] } }], to: [{ operation: { ports: ['80'] } }] }), allowed: false },
  { name: 'from, to and when AND (all hold)', policies: allowIf({ from: [{ source: { namespaces: ['front'] } }], to: [{ operation: { ports: ['8080'] } }], when: [{ key: 'source.ip', values: ['10.0.1.5'] }] }), allowed: true },
  { name: 'when conditions AND (second fails)', policies: allowIf({ when: [{ key: 'destination.port', values: ['8080'] }, { key: 'source.namespace', values: ['back'] }] }), allowed: false },
  { name: 'rules OR', policies: [inShop('ALLOW', [from({ namespaces: ['back'] }), to({ ports: ['8080'] })])], allowed: true },

  // --- empty rule / no rules / action default
  { name: 'ALLOW with an empty rule {} allows everything', policies: [inShop('ALLOW', [{}])], conn: plain, allowed: true, reason: 'allowed by shop/p' },
  { name: 'ALLOW without rules allows nothing (allow-nothing)', policies: [inShop('ALLOW')], allowed: false, reason: 'no ALLOW policy matched (1 apply)' },
  { name: 'ALLOW with rules: [] allows nothing', policies: [inShop('ALLOW', [])], allowed: false },
  { name: 'action defaults to ALLOW', policies: [inShop(undefined, [from({ namespaces: ['back'] })])], allowed: false, reason: 'no ALLOW policy matched (1 apply)' },
  { name: 'DENY with an empty rule {} denies everything (deny-all), ALLOW notwithstanding', policies: [inShop('DENY', [{}], 'deny-all'), inShop('ALLOW', [{}], 'allow-all')], allowed: false, reason: 'denied by shop/deny-all' },
  { name: 'DENY without rules denies nothing', policies: [inShop('DENY')], allowed: true, reason: 'no ALLOW policy applies (1 DENY did not match)' },
  { name: 'an empty source {} never matches', policies: allowIf(from({})), allowed: false },

  // --- decision order
  { name: 'no policies: allow', policies: [], allowed: true, reason: 'no policies' },
  { name: 'DENY beats a matching ALLOW', policies: [inShop('ALLOW', [from({ namespaces: ['front'] })], 'allow-front'), inShop('DENY', [to({ ports: ['8080'] })], 'deny-8080')], allowed: false, reason: 'denied by shop/deny-8080' },
  { name: 'DENY that does not match leaves ALLOW to decide', policies: [inShop('ALLOW', [from({ namespaces: ['front'] })], 'allow-front'), inShop('DENY', [to({ ports: ['22'] })], 'deny-ssh')], allowed: true, reason: 'allowed by shop/allow-front' },
  { name: 'default deny once any ALLOW applies', policies: [inShop('ALLOW', [from({ namespaces: ['back'] })], 'a'), inShop('ALLOW', [to({ ports: ['80'] })], 'b')], allowed: false, reason: 'no ALLOW policy matched (2 apply)' },
  { name: 'any one matching ALLOW allows', policies: [inShop('ALLOW', [from({ namespaces: ['back'] })], 'a'), inShop('ALLOW', [to({ ports: ['8080'] })], 'b')], allowed: true, reason: 'allowed by shop/b' },
  { name: 'STRICT as ztunnel models it (DENY notPrincipals ["*"]) refuses plaintext', policies: denyIf(from({ notPrincipals: ['*'] })), conn: plain, allowed: false },
  { name: 'STRICT as ztunnel models it lets mTLS through', policies: denyIf(from({ notPrincipals: ['*'] })), allowed: true },

  // --- AUDIT and CUSTOM never decide at L4
  { name: 'matching AUDIT is reported and does not deny', policies: [inShop('AUDIT', [from({ namespaces: ['front'] })], 'audit-front')], allowed: true, reason: 'no policies', audited: ['shop/audit-front'] },
  { name: 'AUDIT that does not match is not reported', policies: [inShop('AUDIT', [from({ namespaces: ['back'] })], 'audit-back')], allowed: true, audited: [] },
  { name: 'AUDIT does not count as an ALLOW policy', policies: [inShop('AUDIT', [{}], 'audit-all'), inShop('ALLOW', [from({ namespaces: ['back'] })], 'allow-back')], allowed: false, reason: 'no ALLOW policy matched (1 apply)', audited: ['shop/audit-all'] },
  { name: 'AUDIT reported alongside a DENY decision', policies: [inShop('AUDIT', [{}], 'audit-all'), inShop('DENY', [{}], 'deny-all')], allowed: false, reason: 'denied by shop/deny-all', audited: ['shop/audit-all'] },
  { name: 'CUSTOM is not enforced by ztunnel: ignored', policies: [policy('shop', 'ext', { action: 'CUSTOM', provider: { name: 'opa' }, rules: [{}] })], allowed: true, reason: 'no policies' },
  { name: 'CUSTOM does not count as an ALLOW policy', policies: [policy('shop', 'ext', { action: 'CUSTOM', provider: { name: 'opa' }, rules: [{}] }), inShop('ALLOW', [to({ ports: ['8080'] })], 'allow')], allowed: true, reason: 'allowed by shop/allow' },

  // --- fields that need HTTP: ALLOW drops the rule, DENY drops the fields
  { name: 'ALLOW rule with methods never matches', policies: allowIf({ from: [{ source: { namespaces: ['front'] } }], to: [{ operation: { methods: ['GET'] } }] }), allowed: false },
  { name: 'ALLOW rule with ports and paths never matches', policies: allowIf(to({ ports: ['8080'], paths: ['/api/*'] })), allowed: false },
  { name: 'ALLOW rule with hosts never matches', policies: allowIf(to({ hosts: ['api.shop'] })), allowed: false },
  { name: 'ALLOW rule with requestPrincipals never matches', policies: allowIf(from({ namespaces: ['front'], requestPrincipals: ['*'] })), allowed: false },
  { name: 'ALLOW rule with remoteIpBlocks never matches', policies: allowIf(from({ remoteIpBlocks: ['10.0.0.0/8'] })), allowed: false },
  { name: 'ALLOW rule with an HTTP when key never matches', policies: allowIf({ from: [{ source: { namespaces: ['front'] } }], when: [{ key: 'request.headers[x-user]', values: ['admin'] }] }), allowed: false },
  { name: 'ALLOW: only the rule with HTTP fields is dropped, an L4 rule still allows', policies: [inShop('ALLOW', [to({ methods: ['GET'] }), from({ namespaces: ['front'] })])], allowed: true },
  { name: 'DENY with principals and requestPrincipals in one source denies that peer outright', policies: denyIf(from({ principals: [WEB], requestPrincipals: ['*'] })), allowed: false },
  { name: 'DENY from a peer to methods-only: the to entry is left empty, so no effect at L4', policies: denyIf({ from: [{ source: { principals: [WEB] } }], to: [{ operation: { methods: ['DELETE'] } }] }), allowed: true },
  { name: 'DENY with ports and paths denies the whole port', policies: denyIf(to({ ports: ['8080'], paths: ['/admin'] })), allowed: false },
  { name: 'DENY with ports and paths: other ports unaffected', policies: denyIf(to({ ports: ['9090'], paths: ['/admin'] })), allowed: true },
  { name: 'DENY with namespaces and an HTTP when key: the when clause cannot match, no effect', policies: denyIf({ from: [{ source: { namespaces: ['front'] } }], when: [{ key: 'request.auth.claims[iss]', values: ['x'] }] }), allowed: true },
  { name: 'DENY whose to is only methods has no effect at L4', policies: denyIf(to({ methods: ['POST'] })), allowed: true },
  { name: 'DENY with only notRequestPrincipals has no effect at L4', policies: denyIf(from({ notRequestPrincipals: ['*'] })), conn: plain, allowed: true },
  { name: 'DENY: an HTTP-only source entry is skipped, an L4 entry still matches', policies: denyIf({ from: [{ source: { requestPrincipals: ['*'] } }, { source: { namespaces: ['front'] } }] }), allowed: false },

  // --- which policies apply
  { name: 'root-namespace policy without selector is mesh-wide', policies: [policy('istio-system', 'mesh-deny', { action: 'DENY', rules: [from({ namespaces: ['front'] })] })], allowed: false, reason: 'denied by istio-system/mesh-deny' },
  { name: 'root-namespace ALLOW puts every workload under default deny', policies: [policy('istio-system', 'mesh-allow', { rules: [from({ namespaces: ['istio-system'] })] })], allowed: false },
  { name: 'root-namespace selector policy applies to matching workloads in any namespace', policies: [policy('istio-system', 'api-deny', { action: 'DENY', selector: { matchLabels: { app: 'api' } }, rules: [{}] })], allowed: false },
  { name: 'root-namespace selector policy skips workloads it does not select', policies: [policy('istio-system', 'db-deny', { action: 'DENY', selector: { matchLabels: { app: 'db' } }, rules: [{}] })], allowed: true, reason: 'no policies' },
  { name: 'workload selector matching a subset of labels applies', policies: [policy('shop', 'v1', { action: 'DENY', selector: { matchLabels: { version: 'v1' } }, rules: [{}] })], allowed: false },
  { name: 'workload selector with a label the workload lacks does not apply', policies: [policy('shop', 'v2', { action: 'DENY', selector: { matchLabels: { app: 'api', version: 'v2' } }, rules: [{}] })], allowed: true },
  { name: 'empty matchLabels selects every workload in the namespace', policies: [policy('shop', 'all', { action: 'DENY', selector: { matchLabels: {} }, rules: [{}] })], allowed: false },
  { name: 'namespace-wide policy of another namespace does not apply', policies: [policy('back', 'deny', { action: 'DENY', rules: [{}] })], allowed: true, reason: 'no policies' },
  { name: 'selector policy of another namespace does not apply even if labels match', policies: [policy('back', 'deny', { action: 'DENY', selector: { matchLabels: { app: 'api' } }, rules: [{}] })], allowed: true },
  { name: 'policies with targetRefs are for waypoints and ignored', policies: [policy('shop', 'wp', { action: 'DENY', targetRefs: [{ kind: 'Gateway', group: 'gateway.networking.k8s.io', name: 'waypoint' }], rules: [{}] })], allowed: true, reason: 'no policies' },
  { name: 'custom root namespace is mesh-wide', policies: [policy('mesh-root', 'deny', { action: 'DENY', rules: [{}] })], rootNamespace: 'mesh-root', allowed: false },
  { name: 'istio-system is not special under a custom root namespace', policies: [policy('istio-system', 'deny', { action: 'DENY', rules: [{}] })], rootNamespace: 'mesh-root', allowed: true },
  { name: 'workload in the root namespace sees its namespace-wide policies', policies: [policy('istio-system', 'deny', { action: 'DENY', rules: [{}] })], workload: { namespace: 'istio-system', labels: {} }, allowed: false },
  { name: 'first matching DENY in namespace/name order is the one reported', policies: [inShop('DENY', [{}], 'z-deny'), policy('istio-system', 'a-deny', { action: 'DENY', rules: [{}] })], allowed: false, reason: 'denied by istio-system/a-deny' },
];

for (const c of cases) {
  test(`authz: ${c.name}`, () => {
    const opts = { ...(c.rootNamespace ? { rootNamespace: c.rootNamespace } : {}), ...(c.trustDomain ? { trustDomain: c.trustDomain } : {}) };
    const d = authorize(c.policies, c.workload ?? api, c.conn ?? mtls, opts);
    assert.equal(d.allowed, c.allowed, `decision (reason: ${d.reason})`);
    if (c.reason !== undefined) assert.equal(d.reason, c.reason);
    if (c.audited !== undefined) assert.deepEqual(d.audited, c.audited);
  });
}

test('authz matrix covers at least 60 cases', () => {
  assert.ok(cases.length >= 60, `${cases.length} cases`);
});

test('decision names the deciding policy for allow and deny, none otherwise', () => {
  const allow = inShop('ALLOW', [from({ namespaces: ['front'] })], 'allow-frontend');
  const deny = inShop('DENY', [from({ notPrincipals: ['*'] })], 'deny-plaintext');
  assert.deepEqual(authorize([allow, deny], api, mtls), { allowed: true, reason: 'allowed by shop/allow-frontend', policy: 'shop/allow-frontend', audited: [] });
  assert.deepEqual(authorize([allow, deny], api, plain), { allowed: false, reason: 'denied by shop/deny-plaintext', policy: 'shop/deny-plaintext', audited: [] });
  const other = { ...mtls, sourcePrincipal: 'cluster.local/ns/back/sa/x' };
  assert.deepEqual(authorize([allow, deny], api, other), { allowed: false, reason: 'no ALLOW policy matched (1 apply)', audited: [] });
});

test('applicablePolicies selects by root namespace, workload namespace and labels; drops targetRefs', () => {
  const ps = [
    policy('istio-system', 'mesh', {}),
    policy('istio-system', 'mesh-api', { selector: { matchLabels: { app: 'api' } } }),
    policy('istio-system', 'mesh-db', { selector: { matchLabels: { app: 'db' } } }),
    policy('shop', 'ns', { action: 'DENY' }),
    policy('shop', 'api', { selector: { matchLabels: { app: 'api' } } }),
    policy('shop', 'db', { selector: { matchLabels: { app: 'db' } } }),
    policy('shop', 'waypoint', { targetRefs: [{ kind: 'Service', name: 'api' }] }),
    policy('back', 'ns', {}),
    policy('back', 'api', { selector: { matchLabels: { app: 'api' } } }),
  ];
  const names = (ws: WorkloadRef, root?: string) =>
    applicablePolicies(ps, ws, root ? { rootNamespace: root } : {}).map((p) => `${p.metadata.namespace}/${p.metadata.name}`);
  assert.deepEqual(names(api), ['istio-system/mesh', 'istio-system/mesh-api', 'shop/api', 'shop/ns']);
  assert.deepEqual(names({ namespace: 'back', labels: { app: 'db' } }), ['back/ns', 'istio-system/mesh', 'istio-system/mesh-db']);
  assert.deepEqual(names(api, 'shop'), ['shop/api', 'shop/ns']);
  // The input is not reordered in place.
  assert.equal(ps[0]!.metadata.name, 'mesh');
});

test('malformed connection addresses match no IP range but still get a decision', () => {
  const d = authorize(allowIf(from({ ipBlocks: ['0.0.0.0/0'] })), api, { ...mtls, sourceIp: 'not-an-ip' });
  assert.equal(d.allowed, false);
  const n = authorize(allowIf(from({ notIpBlocks: ['10.0.0.0/8'] })), api, { ...mtls, sourceIp: '' });
  assert.equal(n.allowed, true);
});
