// Strict validation of Istio's security policy kinds (security.istio.io/v1 and v1beta1):
// AuthorizationPolicy and PeerAuthentication, in the shape of policy-types.ts. Listed in the kinds
// table (kinds.ts), so the lab file, the controller's directory and `weft apply` accept them.
// Rules follow Istio's own validation where it refuses input: selector xor targetRefs, CUSTOM needs a
// provider (and only CUSTOM takes one), portLevelMtls needs a selector.
import { ipOrCidrProblem, portTextProblem } from '../net/address.js';
import type { ObjectMeta } from './meta.js';
import type {
  AuthorizationPolicyResource,
  AuthzAction,
  AuthzCondition,
  AuthzOperation,
  AuthzRule,
  AuthzSource,
  PeerAuthMode,
  PeerAuthenticationResource,
  PolicyTargetReference,
  WorkloadSelector,
} from './policy-types.js';
import { checkList, checkObject, checkString, checkStringMap, describe, isPlainObject, type DocContext, type Json, type PathSeg } from './validators.js';

export const POLICY_API_VERSIONS = ['security.istio.io/v1', 'security.istio.io/v1beta1'] as const;
export const AUTHZ_ACTIONS: readonly AuthzAction[] = ['ALLOW', 'DENY', 'AUDIT', 'CUSTOM'];
export const PEER_AUTH_MODES: readonly PeerAuthMode[] = ['UNSET', 'STRICT', 'PERMISSIVE', 'DISABLE'];

const TOP = ['apiVersion', 'kind', 'metadata', 'spec'];
const TOLERATED_TOP = ['status'];

/** A sequence of non-empty strings, each checked by `item` (which returns a reason when invalid). */
export function checkValues(ctx: DocContext, path: PathSeg[], v: Json, item?: (s: string) => string | undefined): string[] | undefined {
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v)) {
    ctx.add(path, `must be a sequence of strings, got ${describe(v)}`);
    return undefined;
  }
  const out: string[] = [];
  let ok = true;
  v.forEach((x, i) => {
    if (typeof x !== 'string') {
      ctx.add([...path, i], `must be a string, got ${describe(x)}${typeof x === 'number' ? ' (quote it)' : ''}`);
      ok = false;
      return;
    }
    if (x === '') {
      ctx.add([...path, i], 'must not be empty');
      ok = false;
      return;
    }
    const why = item?.(x);
    if (why) {
      ctx.add([...path, i], why);
      ok = false;
      return;
    }
    out.push(x);
  });
  return ok ? out : undefined;
}

export function checkSelector(ctx: DocContext, path: PathSeg[], v: Json): WorkloadSelector | undefined {
  const o = checkObject(ctx, path, v, ['matchLabels']);
  if (!o) return undefined;
  const matchLabels = checkStringMap(ctx, [...path, 'matchLabels'], o.matchLabels, 'selector');
  return matchLabels && Object.keys(matchLabels).length ? { matchLabels } : {};
}

export function checkTargetRefs(ctx: DocContext, path: PathSeg[], v: Json): PolicyTargetReference[] | undefined {
  return checkList(ctx, path, v, (p, t) => {
    const o = checkObject(ctx, p, t, ['group', 'kind', 'name', 'namespace'], { required: true });
    if (!o) return undefined;
    const kind = checkString(ctx, [...p, 'kind'], o.kind, { required: true });
    const name = checkString(ctx, [...p, 'name'], o.name, { required: true });
    const group = o.group === undefined ? undefined : checkString(ctx, [...p, 'group'], o.group);
    const namespace = o.namespace === undefined ? undefined : checkString(ctx, [...p, 'namespace'], o.namespace);
    if (kind === undefined || name === undefined) return undefined;
    const ref: PolicyTargetReference = { kind, name };
    if (group !== undefined) ref.group = group;
    if (namespace !== undefined) ref.namespace = namespace;
    return ref;
  });
}

const SOURCE_FIELDS = [
  'principals',
  'notPrincipals',
  'requestPrincipals',
  'notRequestPrincipals',
  'namespaces',
  'notNamespaces',
  'serviceAccounts',
  'notServiceAccounts',
  'ipBlocks',
  'notIpBlocks',
  'remoteIpBlocks',
  'notRemoteIpBlocks',
] as const satisfies ReadonlyArray<keyof AuthzSource>;
const IP_SOURCE_FIELDS = new Set<string>(['ipBlocks', 'notIpBlocks', 'remoteIpBlocks', 'notRemoteIpBlocks']);

const OPERATION_FIELDS = ['hosts', 'notHosts', 'ports', 'notPorts', 'methods', 'notMethods', 'paths', 'notPaths'] as const satisfies ReadonlyArray<
  keyof AuthzOperation
>;
const PORT_OPERATION_FIELDS = new Set<string>(['ports', 'notPorts']);

/** An object whose every field is a list of strings; `special` fields check each item with `item`. */
function checkValueLists<F extends string>(
  ctx: DocContext,
  path: PathSeg[],
  v: Json,
  fields: readonly F[],
  special: ReadonlySet<string>,
  item: (s: string) => string | undefined,
): Partial<Record<F, string[]>> | undefined {
  const o = checkObject(ctx, path, v, fields, { required: true });
  if (!o) return undefined;
  const out: Partial<Record<F, string[]>> = {};
  for (const f of fields) {
    const vals = checkValues(ctx, [...path, f], o[f], special.has(f) ? item : undefined);
    if (vals) out[f] = vals;
  }
  return out;
}

function checkSource(ctx: DocContext, path: PathSeg[], v: Json): AuthzSource | undefined {
  return checkValueLists(ctx, path, v, SOURCE_FIELDS, IP_SOURCE_FIELDS, ipOrCidrProblem);
}

function checkOperation(ctx: DocContext, path: PathSeg[], v: Json): AuthzOperation | undefined {
  return checkValueLists(ctx, path, v, OPERATION_FIELDS, PORT_OPERATION_FIELDS, portTextProblem);
}

function checkCondition(ctx: DocContext, path: PathSeg[], v: Json): AuthzCondition | undefined {
  const o = checkObject(ctx, path, v, ['key', 'values', 'notValues'], { required: true });
  if (!o) return undefined;
  const key = checkString(ctx, [...path, 'key'], o.key, { required: true });
  const before = ctx.problems.length;
  const values = checkValues(ctx, [...path, 'values'], o.values);
  const notValues = checkValues(ctx, [...path, 'notValues'], o.notValues);
  if (ctx.problems.length !== before) return undefined;
  if ((values?.length ?? 0) + (notValues?.length ?? 0) === 0) {
    ctx.add(path, 'a condition needs at least one value in values or notValues');
    return undefined;
  }
  if (key === undefined) return undefined;
  const c: AuthzCondition = { key };
  if (values) c.values = values;
  if (notValues) c.notValues = notValues;
  return c;
}

function checkRule(ctx: DocContext, path: PathSeg[], v: Json): AuthzRule | undefined {
  // An empty rule (`- {}`) is valid: it matches every request.
  if (v === null) return {};
  const o = checkObject(ctx, path, v, ['from', 'to', 'when'], { required: true });
  if (!o) return undefined;
  const rule: AuthzRule = {};
  const from = checkList(ctx, [...path, 'from'], o.from, (p, x) => {
    const f = checkObject(ctx, p, x, ['source'], { required: true });
    if (!f) return undefined;
    const source = checkSource(ctx, [...p, 'source'], f.source);
    return source ? { source } : undefined;
  });
  const to = checkList(ctx, [...path, 'to'], o.to, (p, x) => {
    const t = checkObject(ctx, p, x, ['operation'], { required: true });
    if (!t) return undefined;
    const operation = checkOperation(ctx, [...p, 'operation'], t.operation);
    return operation ? { operation } : undefined;
  });
  const when = checkList(ctx, [...path, 'when'], o.when, (p, x) => checkCondition(ctx, p, x));
  if (from) rule.from = from;
  if (to) rule.to = to;
  if (when) rule.when = when;
  return rule;
}

export function validateAuthorizationPolicy(ctx: DocContext, raw: Record<string, Json>, meta: ObjectMeta): AuthorizationPolicyResource | undefined {
  const before = ctx.problems.length;
  checkObject(ctx, [], raw, TOP, { tolerated: TOLERATED_TOP });
  // An AuthorizationPolicy without spec is valid: in Istio it denies everything it selects (ALLOW, no rules).
  const spec = checkObject(ctx, ['spec'], raw.spec ?? {}, ['selector', 'targetRefs', 'action', 'rules', 'provider']);
  const out: AuthorizationPolicyResource['spec'] = {};
  if (spec) {
    const selector = checkSelector(ctx, ['spec', 'selector'], spec.selector);
    const targetRefs = checkTargetRefs(ctx, ['spec', 'targetRefs'], spec.targetRefs);
    if (spec.selector != null && spec.targetRefs != null) ctx.add(['spec', 'targetRefs'], 'only one of selector or targetRefs can be set', true);
    const action = spec.action === undefined ? undefined : (checkString(ctx, ['spec', 'action'], spec.action, { oneOf: AUTHZ_ACTIONS }) as AuthzAction | undefined);
    let provider: { name: string } | undefined;
    const po = checkObject(ctx, ['spec', 'provider'], spec.provider, ['name']);
    if (po) {
      const name = checkString(ctx, ['spec', 'provider', 'name'], po.name, { required: true });
      if (name !== undefined) provider = { name };
    }
    if (action === 'CUSTOM' && spec.provider == null) ctx.add(['spec', 'action'], 'action CUSTOM needs spec.provider.name');
    if (spec.provider != null && action !== 'CUSTOM') ctx.add(['spec', 'provider'], 'provider is only allowed with action CUSTOM', true);
    const rules = checkList(ctx, ['spec', 'rules'], spec.rules, (p, x) => checkRule(ctx, p, x));
    if (selector) out.selector = selector;
    if (targetRefs) out.targetRefs = targetRefs;
    if (action) out.action = action;
    if (rules) out.rules = rules;
    if (provider) out.provider = provider;
  }
  if (ctx.problems.length !== before) return undefined;
  return {
    apiVersion: raw.apiVersion as AuthorizationPolicyResource['apiVersion'],
    kind: 'AuthorizationPolicy',
    metadata: meta as ObjectMeta & { namespace: string },
    spec: out,
  };
}

function checkMode(ctx: DocContext, path: PathSeg[], v: Json): { mode?: PeerAuthMode } | undefined {
  const o = checkObject(ctx, path, v, ['mode'], { required: true });
  if (!o) return undefined;
  if (o.mode === undefined || o.mode === null) return {};
  const mode = checkString(ctx, [...path, 'mode'], o.mode, { oneOf: PEER_AUTH_MODES });
  return mode === undefined ? undefined : { mode: mode as PeerAuthMode };
}

export function validatePeerAuthentication(ctx: DocContext, raw: Record<string, Json>, meta: ObjectMeta): PeerAuthenticationResource | undefined {
  const before = ctx.problems.length;
  checkObject(ctx, [], raw, TOP, { tolerated: TOLERATED_TOP });
  const spec = checkObject(ctx, ['spec'], raw.spec ?? {}, ['selector', 'mtls', 'portLevelMtls']);
  const out: PeerAuthenticationResource['spec'] = {};
  if (spec) {
    const selector = checkSelector(ctx, ['spec', 'selector'], spec.selector);
    const mtls = spec.mtls === undefined || spec.mtls === null ? undefined : checkMode(ctx, ['spec', 'mtls'], spec.mtls);
    let portLevelMtls: Record<string, { mode?: PeerAuthMode }> | undefined;
    const plm = spec.portLevelMtls;
    if (plm !== undefined && plm !== null) {
      if (!isPlainObject(plm)) ctx.add(['spec', 'portLevelMtls'], `must be a mapping of port numbers to {mode}, got ${describe(plm)}`);
      else {
        if (!selector?.matchLabels) ctx.add(['spec', 'portLevelMtls'], 'portLevelMtls requires a selector with matchLabels (as in Istio)', true);
        portLevelMtls = {};
        for (const [port, value] of Object.entries(plm)) {
          const why = portTextProblem(port);
          if (why) {
            ctx.add(['spec', 'portLevelMtls', port], `key ${why}`, true);
            continue;
          }
          // `8080` and `08080` are the same port: the second would silently replace the first.
          const key = String(Number(port));
          if (Object.hasOwn(portLevelMtls, key)) {
            ctx.add(['spec', 'portLevelMtls', port], `port ${key} is set more than once`, true);
            continue;
          }
          const m = checkMode(ctx, ['spec', 'portLevelMtls', port], value);
          if (m) portLevelMtls[key] = m;
        }
      }
    }
    if (selector) out.selector = selector;
    if (mtls) out.mtls = mtls;
    if (portLevelMtls) out.portLevelMtls = portLevelMtls;
  }
  if (ctx.problems.length !== before) return undefined;
  return {
    apiVersion: raw.apiVersion as PeerAuthenticationResource['apiVersion'],
    kind: 'PeerAuthentication',
    metadata: meta as ObjectMeta & { namespace: string },
    spec: out,
  };
}
