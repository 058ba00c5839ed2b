// L4 authorization: Istio AuthorizationPolicy evaluated the way ambient mode enforces it in ztunnel.
//
// Istiod does not hand ztunnel the policy as written: it translates every rule into L4 "clauses"
// (one for `to`, one for `from`, one per `when` condition), drops what needs HTTP, and ztunnel then
// ANDs the clauses and ORs the matches inside each. We compile a policy into that same shape and
// evaluate it with ztunnel's rules, because the corner cases (L7 fields, empty sources, plaintext
// peers and `not*` fields) only come out right that way.
import type { AuthorizationPolicyResource, AuthzRule } from '../registry/policy-types.js';
import { Mesh } from '../config.js';
import {
  compileString,
  matchString,
  netContains,
  parseIp,
  parseIpNet,
  parsePort,
  parseServiceAccount,
  peerIdentity,
  type IpAddr,
  type IpNet,
  type PeerIdentity,
  type ServiceAccountRef,
  type StringMatcher,
} from './match.js';

export interface WorkloadRef {
  namespace: string;
  labels: Record<string, string>;
}

export interface ConnectionAttrs {
  /** SPIFFE principal of the peer without scheme: "<td>/ns/<ns>/sa/<sa>"; undefined for plaintext. */
  sourcePrincipal?: string;
  /**
   * Derived from the principal when present. Only used when the principal is present but not of the
   * `<td>/ns/<ns>/sa/<sa>` form; a plaintext peer has no namespace (Istio: namespaces are mTLS-only).
   */
  sourceNamespace?: string;
  sourceIp: string;
  destinationIp: string;
  destinationPort: number;
}

export interface AuthzDecision {
  allowed: boolean;
  /** e.g. "denied by shop/deny-legacy", "no ALLOW policy matched (2 apply)", "allowed by shop/allow-frontend", "no policies" */
  reason: string;
  /** ns/name of the deciding policy, if one */
  policy?: string;
  /** AUDIT policies that matched (Istio: audit never changes the decision at L4; report them) */
  audited: string[];
}

export interface AuthzOptions {
  /** Istio's root namespace (meshConfig.rootNamespace); default istio-system. */
  rootNamespace?: string;
  /**
   * The mesh trust domain. Accepted for the caller's convenience but deliberately not used when
   * matching: ztunnel compares principals exactly, so `cluster.local/...` in a policy is not an
   * alias of a custom trust domain at L4 as it is for sidecars (istio/ztunnel#1260).
   */
  trustDomain?: string;
}

/** `from.source` fields and `when` keys that need HTTP: they cannot be evaluated by ztunnel. */
const L7_SOURCE_FIELDS = ['requestPrincipals', 'notRequestPrincipals', 'remoteIpBlocks', 'notRemoteIpBlocks'] as const;
const L7_OPERATION_FIELDS = ['hosts', 'notHosts', 'methods', 'notMethods', 'paths', 'notPaths'] as const;
const L4_WHEN_KEYS = new Set(['source.ip', 'source.namespace', 'source.principal', 'destination.ip', 'destination.port']);

/** One L4 match: every non-empty field must hold (values OR, `not` values none). Empty never matches. */
interface L4Match {
  principals: StringMatcher[];
  notPrincipals: StringMatcher[];
  namespaces: StringMatcher[];
  notNamespaces: StringMatcher[];
  serviceAccounts: ServiceAccountRef[];
  notServiceAccounts: ServiceAccountRef[];
  sourceIps: IpNet[];
  notSourceIps: IpNet[];
  destinationIps: IpNet[];
  notDestinationIps: IpNet[];
  destinationPorts: number[];
  notDestinationPorts: number[];
}

/** A clause holds when any of its matches does; a rule holds when all its clauses do. */
type Clause = L4Match[];
type CompiledRule = Clause[];

type L4Action = 'ALLOW' | 'DENY' | 'AUDIT';

interface CompiledPolicy {
  key: string;
  action: L4Action;
  rules: CompiledRule[];
}

function emptyMatch(): L4Match {
  return {
    principals: [],
    notPrincipals: [],
    namespaces: [],
    notNamespaces: [],
    serviceAccounts: [],
    notServiceAccounts: [],
    sourceIps: [],
    notSourceIps: [],
    destinationIps: [],
    notDestinationIps: [],
    destinationPorts: [],
    notDestinationPorts: [],
  };
}

function isEmptyMatch(m: L4Match): boolean {
  return Object.values(m).every((v: unknown[]) => v.length === 0);
}

const strings = (v: string[] | undefined): StringMatcher[] => (v ?? []).map(compileString);
const nets = (v: string[] | undefined): IpNet[] => (v ?? []).map(parseIpNet).filter((n): n is IpNet => n !== undefined);
const ports = (v: string[] | undefined): number[] => (v ?? []).map(parsePort).filter((p): p is number => p !== undefined);

export function policyKey(p: AuthorizationPolicyResource): string {
  return `${p.metadata.namespace}/${p.metadata.name}`;
}

/**
 * Translates one rule. Returns undefined when the rule can never match at L4.
 *
 * - `to` entries become one clause, `from` entries another, each `when` condition its own clause.
 * - HTTP-only fields are left out of the match they sit in. In an ALLOW policy the whole rule is then
 *   dropped (istiod: "rules matching HTTP attributes are omitted"), so it never allows anything.
 *   In a DENY policy the L4 rest of each entry still applies, which denies more than was written
 *   (`ports: [8080], paths: [/admin]` denies all of port 8080). But an entry made only of HTTP
 *   fields leaves an empty match, and ztunnel never matches an empty match: a DENY rule whose `to`
 *   entries (or `from` entries) are all HTTP-only, or with any HTTP-only `when` condition, has no
 *   effect at L4 (istio/istio#61126), e.g. `from: principals X, to: methods [DELETE]`.
 */
function compileRule(action: L4Action, rule: AuthzRule, policyNamespace: string): CompiledRule | undefined {
  let needsL7 = false;
  const clauses: CompiledRule = [];

  if (rule.to && rule.to.length > 0) {
    clauses.push(
      rule.to.map(({ operation: op }) => {
        if (L7_OPERATION_FIELDS.some((f) => (op[f]?.length ?? 0) > 0)) needsL7 = true;
        return { ...emptyMatch(), destinationPorts: ports(op.ports), notDestinationPorts: ports(op.notPorts) };
      }),
    );
  }
  if (rule.from && rule.from.length > 0) {
    clauses.push(
      rule.from.map(({ source: s }) => {
        if (L7_SOURCE_FIELDS.some((f) => (s[f]?.length ?? 0) > 0)) needsL7 = true;
        return {
          ...emptyMatch(),
          principals: strings(s.principals),
          notPrincipals: strings(s.notPrincipals),
          namespaces: strings(s.namespaces),
          notNamespaces: strings(s.notNamespaces),
          serviceAccounts: (s.serviceAccounts ?? []).map((v) => parseServiceAccount(v, policyNamespace)),
          notServiceAccounts: (s.notServiceAccounts ?? []).map((v) => parseServiceAccount(v, policyNamespace)),
          sourceIps: nets(s.ipBlocks),
          notSourceIps: nets(s.notIpBlocks),
        };
      }),
    );
  }
  for (const cond of rule.when ?? []) {
    const m = emptyMatch();
    switch (cond.key) {
      case 'source.ip':
        m.sourceIps = nets(cond.values);
        m.notSourceIps = nets(cond.notValues);
        break;
      case 'source.namespace':
        m.namespaces = strings(cond.values);
        m.notNamespaces = strings(cond.notValues);
        break;
      case 'source.principal':
        m.principals = strings(cond.values);
        m.notPrincipals = strings(cond.notValues);
        break;
      case 'destination.ip':
        m.destinationIps = nets(cond.values);
        m.notDestinationIps = nets(cond.notValues);
        break;
      case 'destination.port':
        m.destinationPorts = ports(cond.values);
        m.notDestinationPorts = ports(cond.notValues);
        break;
    }
    if (!L4_WHEN_KEYS.has(cond.key)) needsL7 = true;
    clauses.push([m]);
  }

  if (action === 'ALLOW' && needsL7) return undefined;
  return clauses;
}

function compilePolicy(p: AuthorizationPolicyResource): CompiledPolicy | undefined {
  const action = p.spec.action ?? 'ALLOW';
  // CUSTOM delegates to an external authorizer, which only exists for HTTP: istiod reports
  // "ztunnel does not support the CUSTOM action" and sends nothing, so it neither allows nor denies.
  if (action === 'CUSTOM') return undefined;
  const rules: CompiledRule[] = [];
  for (const rule of p.spec.rules ?? []) {
    const compiled = compileRule(action, rule, p.metadata.namespace);
    if (compiled) rules.push(compiled);
  }
  return { key: policyKey(p), action, rules };
}

interface ConnView {
  peer: PeerIdentity | undefined;
  src: IpAddr | undefined;
  dst: IpAddr | undefined;
  port: number;
}

/** ztunnel: positive values — any must match; negative values — none may match; empty — no constraint. */
function field<T>(positive: readonly T[], negative: readonly T[], test: (v: T) => boolean): boolean {
  if (positive.length > 0 && !positive.some(test)) return false;
  if (negative.length > 0 && negative.some(test)) return false;
  return true;
}

function matchL4(m: L4Match, c: ConnView): boolean {
  // A plaintext peer has no principal and an empty namespace: positive identity fields cannot match
  // it, and `not` identity fields always do (STRICT mode is expressed as DENY notPrincipals ["*"]).
  const principal = c.peer?.principal;
  const ns = c.peer?.namespace ?? '';
  const ip = (addr: IpAddr | undefined) => (net: IpNet) => addr !== undefined && netContains(net, addr);
  return (
    field(m.destinationIps, m.notDestinationIps, ip(c.dst)) &&
    field(m.sourceIps, m.notSourceIps, ip(c.src)) &&
    field(m.destinationPorts, m.notDestinationPorts, (p) => p === c.port) &&
    field(m.serviceAccounts, m.notServiceAccounts, (sa) => c.peer?.serviceAccount !== undefined && sa.namespace === c.peer.namespace && sa.serviceAccount === c.peer.serviceAccount) &&
    field(m.principals, m.notPrincipals, (sm) => principal !== undefined && matchString(sm, principal)) &&
    field(m.namespaces, m.notNamespaces, (sm) => matchString(sm, ns))
  );
}

function matchPolicy(p: CompiledPolicy, c: ConnView): boolean {
  // No rules at all matches nothing: an ALLOW policy without rules is Istio's "allow-nothing"
  // (deny all), a DENY policy without rules denies nothing (deny-all is written `rules: [{}]`).
  return p.rules.some((rule) => rule.every((clause) => clause.some((m) => !isEmptyMatch(m) && matchL4(m, c))));
}

/**
 * The policies that apply to a workload at L4: in the root namespace, those without a selector
 * (mesh-wide) and those whose selector matches the workload, in any namespace; in the workload's own
 * namespace, those without a selector (namespace-wide) and those whose selector matches. Policies
 * with `targetRefs` bind to waypoints and gateways, never to ztunnel. An empty `matchLabels` selects
 * every workload in its scope. Sorted by namespace/name so decisions and reasons are stable.
 */
export function applicablePolicies(
  policies: readonly AuthorizationPolicyResource[],
  workload: WorkloadRef,
  opts: AuthzOptions = {},
): AuthorizationPolicyResource[] {
  const root = opts.rootNamespace ?? Mesh.rootNamespace;
  return policies
    .filter((p) => (p.spec.targetRefs?.length ?? 0) === 0)
    .filter((p) => p.metadata.namespace === root || p.metadata.namespace === workload.namespace)
    .filter((p) => {
      const sel = p.spec.selector;
      if (!sel) return true;
      return Object.entries(sel.matchLabels ?? {}).every(([k, v]) => workload.labels[k] === v);
    })
    .sort((a, b) => (policyKey(a) < policyKey(b) ? -1 : policyKey(a) > policyKey(b) ? 1 : 0));
}

/**
 * Decides a connection to `workload` as ztunnel does: any matching DENY denies; otherwise no ALLOW
 * policy means allow; otherwise one matching ALLOW allows and none denies. AUDIT policies are not
 * enforced at L4 (istiod does not send them to ztunnel); they are evaluated like DENY rules (HTTP parts
 * left out) and reported in `audited`. CUSTOM policies are ignored (see compilePolicy).
 */
export function authorize(
  policies: readonly AuthorizationPolicyResource[],
  workload: WorkloadRef,
  conn: ConnectionAttrs,
  opts: AuthzOptions = {},
): AuthzDecision {
  const compiled = applicablePolicies(policies, workload, opts)
    .map(compilePolicy)
    .filter((p): p is CompiledPolicy => p !== undefined);
  const view: ConnView = {
    peer: peerIdentity(conn.sourcePrincipal, conn.sourceNamespace),
    src: parseIp(conn.sourceIp),
    dst: parseIp(conn.destinationIp),
    port: conn.destinationPort,
  };
  const of = (action: L4Action) => compiled.filter((p) => p.action === action);
  const audited = of('AUDIT')
    .filter((p) => matchPolicy(p, view))
    .map((p) => p.key);

  const deny = of('DENY');
  const denied = deny.find((p) => matchPolicy(p, view));
  if (denied) return { allowed: false, reason: `denied by ${denied.key}`, policy: denied.key, audited };

  const allow = of('ALLOW');
  if (allow.length === 0) {
    const reason = deny.length === 0 ? 'no policies' : `no ALLOW policy applies (${deny.length} DENY did not match)`;
    return { allowed: true, reason, audited };
  }
  const allowedBy = allow.find((p) => matchPolicy(p, view));
  if (allowedBy) return { allowed: true, reason: `allowed by ${allowedBy.key}`, policy: allowedBy.key, audited };
  return { allowed: false, reason: `no ALLOW policy matched (${allow.length} apply)`, audited };
}
