// Strict validation of the kinds a waypoint reads: Istio's RequestAuthentication (security.istio.io),
// DestinationRule and VirtualService (networking.istio.io), Gateway API's Gateway and HTTPRoute
// (gateway.networking.k8s.io), in the shapes of waypoint-types.ts. Field names, defaults and limits
// follow Istio's and Gateway API's references (Gateway API's CRD rules: at most 16 rules, 64 matches,
// 16 filters and backendRefs, weights 0–1,000,000, durations `1h30m`, `500ms`). Listed in kinds.ts.
// A route's regular expression is user text a proxy will run on every request: it must compile and
// use no construct that backtracks without bound (the proxy's matcher is meant to be linear, as RE2).
import type { ObjectMeta } from './meta.js';
import { POLICY_API_VERSIONS, checkSelector, checkTargetRefs, checkValues } from './policy-kinds.js';
import type {
  BackendRef,
  ConnectionPool,
  DestinationRuleResource,
  GatewayListener,
  GatewayResource,
  HTTPFault,
  HTTPRouteFilter,
  HTTPRouteMatch,
  HTTPRouteResource,
  HTTPRouteRule,
  HeaderModifier,
  JwtRule,
  LoadBalancerSimple,
  OutlierDetection,
  PathMatchType,
  PathModifier,
  RequestAuthenticationResource,
  RouteParentRef,
  TrafficPolicy,
  ValueMatchType,
  VirtualServiceHTTPRoute,
  VirtualServiceResource,
  WaypointFor,
} from './waypoint-types.js';
import { WAYPOINT_FOR_LABEL, WAYPOINT_FOR_VALUES } from './waypoint-types.js';
import { DNS1123_SUBDOMAIN, checkList, checkObject, checkPort, checkString, checkStringMap, describe, isPlainObject, quote, type DocContext, type Json, type PathSeg } from './validators.js';

export const REQUEST_AUTHN_API_VERSIONS = POLICY_API_VERSIONS;
export const GATEWAY_API_VERSIONS = ['gateway.networking.k8s.io/v1', 'gateway.networking.k8s.io/v1beta1'] as const;
export const ISTIO_NETWORKING_API_VERSIONS = ['networking.istio.io/v1', 'networking.istio.io/v1beta1'] as const;

const TOP = ['apiVersion', 'kind', 'metadata', 'spec'];
const TOLERATED_TOP = ['status'];
const GATEWAY_GROUP = 'gateway.networking.k8s.io';

/** Gateway API's limits (its CRDs' maxItems / maxLength). */
export const GATEWAY_LIMITS = {
  rules: 16,
  matches: 64,
  totalMatches: 128,
  filters: 16,
  backendRefs: 16,
  parentRefs: 32,
  hostnames: 16,
  listeners: 64,
  headerMatches: 16,
  headerMods: 16,
  pathLength: 1024,
  headerName: 256,
  maxWeight: 1_000_000,
} as const;
const INT32 = 2_147_483_647;
/** The longest regular expression a route may carry. */
export const MAX_REGEX_LENGTH = 1024;

export const HTTP_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH'] as const;
export const SUPPORTED_FILTERS = ['RequestHeaderModifier', 'ResponseHeaderModifier', 'RequestRedirect', 'RequestMirror', 'URLRewrite', 'CORS'] as const;
export const LOAD_BALANCERS: readonly LoadBalancerSimple[] = ['UNSPECIFIED', 'RANDOM', 'PASSTHROUGH', 'ROUND_ROBIN', 'LEAST_REQUEST', 'LEAST_CONN'];

// Gateway API's patterns (HTTPHeaderName, Hostname, SectionName, ProtocolType, Duration).
const HEADER_NAME = /^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$/;
const HOSTNAME = /^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const PROTOCOL = /^(?:[a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?|[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/[A-Za-z0-9]+)$/;
// Gateway API's character rule for Exact and PathPrefix values.
const PATH_CHARS = /^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|%[0-9a-fA-F]{2})+$/;
const GATEWAY_DURATION = /^([0-9]{1,5}(h|m|s|ms)){1,4}$/;
const GATEWAY_DURATION_PART = /([0-9]{1,5})(h|ms|m|s)/g;
// Istio's durations are Go's (`5s`, `1.5s`, `100ms`, `1h30m`).
const GO_DURATION = /^(?:\d{1,12}(?:\.\d{1,9})?(?:ns|us|µs|ms|s|m|h)){1,6}$/;
const GO_DURATION_PART = /(\d{1,12}(?:\.\d{1,9})?)(ns|us|µs|ms|s|m|h)/g;
const UNIT_MS: Record<string, number> = { ns: 1e-6, us: 1e-3, µs: 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Milliseconds of a Gateway API duration (`1h`, `500ms`, `0s`), or undefined when it is not one. */
export function parseGatewayDurationMs(text: string): number | undefined {
  if (!GATEWAY_DURATION.test(text)) return undefined;
  let ms = 0;
  for (const m of text.matchAll(GATEWAY_DURATION_PART)) ms += Number(m[1]) * UNIT_MS[m[2]!]!;
  return ms;
}

/** Milliseconds of an Istio (Go-style) duration, or undefined when it is not one. */
export function parseIstioDurationMs(text: string): number | undefined {
  if (!GO_DURATION.test(text)) return undefined;
  let ms = 0;
  for (const m of text.matchAll(GO_DURATION_PART)) ms += Number(m[1]) * UNIT_MS[m[2]!]!;
  return Number.isFinite(ms) ? ms : undefined;
}

/**
 * Why `source` is not a regular expression a route may carry, or undefined. It must compile, stay
 * within MAX_REGEX_LENGTH, and use no backreference or lookaround (which RE2, Envoy's engine that
 * Istio's users write for, refuses) and no quantified group that itself repeats or has alternatives
 * (`(a+)+`, `(a|aa)+`: RE2 runs them in linear time, a backtracking matcher in exponential time).
 */
export function regexProblem(source: string): string | undefined {
  if (source.length > MAX_REGEX_LENGTH) return `regular expression is longer than ${MAX_REGEX_LENGTH} characters`;
  try {
    new RegExp(source, 'u');
  } catch (err) {
    // The engine's message repeats the pattern before the reason: keep the reason only (user text stays out).
    const msg = err instanceof Error ? err.message : '';
    return `is not a valid regular expression (${msg.slice(msg.lastIndexOf(': ') + 2).slice(0, 80) || 'invalid'})`;
  }
  if (/\\[1-9]|\\k</.test(source)) return 'regular expression must not use backreferences (unbounded matching time)';
  if (/\(\?<?[=!]/.test(source)) return 'regular expression must not use lookaround (unbounded matching time)';
  if (ambiguousRepeat(source)) return 'regular expression repeats a group that itself repeats or has alternatives, such as (a+)+ or (a|aa)+ (unbounded matching time)';
  return undefined;
}

/**
 * Does a repeated group hold a repetition or alternatives (`(a+)*`, `(?:x*y){2,}`, `(a|aa)+`)? Those are
 * the shapes that make a backtracking matcher try exponentially many ways. Scans once; being strict
 * refuses a few harmless patterns too (`(GET|POST)+`), never an unbounded one of these shapes.
 */
function ambiguousRepeat(s: string): boolean {
  const stack: Array<{ rep: boolean; alt: boolean }> = [];
  let inClass = false;
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (c === '\\') {
      i++;
      continue;
    }
    if (inClass) {
      if (c === ']') inClass = false;
      continue;
    }
    const top = stack[stack.length - 1];
    if (c === '[') inClass = true;
    else if (c === '(') stack.push({ rep: false, alt: false });
    else if (c === '|') {
      if (top) top.alt = true;
    } else if (c === ')') {
      const inner = stack.pop() ?? { rep: false, alt: false };
      const next = s[i + 1];
      const quantified = next === '*' || next === '+' || next === '{';
      if (quantified && (inner.rep || inner.alt)) return true;
      // The group counts as repeating inside its parent when it is itself quantified or holds one.
      const parent = stack[stack.length - 1];
      if (parent && (inner.rep || quantified)) parent.rep = true;
    } else if ((c === '*' || c === '+' || c === '{') && top) top.rep = true;
  }
  return false;
}

// ---- small checkers -----------------------------------------------------------------------------

function checkInt(ctx: DocContext, path: PathSeg[], v: Json, opts: { min: number; max: number; required?: boolean }): number | undefined {
  if (v === undefined || v === null) {
    if (opts.required) ctx.add(path, 'required field is missing');
    return undefined;
  }
  if (typeof v !== 'number' || !Number.isInteger(v)) {
    ctx.add(path, `must be an integer, got ${describe(v)}`);
    return undefined;
  }
  if (v < opts.min || v > opts.max) {
    ctx.add(path, `${v} is outside ${opts.min}-${opts.max}`);
    return undefined;
  }
  return v;
}

function checkBool(ctx: DocContext, path: PathSeg[], v: Json): boolean | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') {
    ctx.add(path, `must be true or false, got ${describe(v)}`);
    return undefined;
  }
  return v;
}

function checkIstioDuration(ctx: DocContext, path: PathSeg[], v: Json, required = false): string | undefined {
  const s = checkString(ctx, path, v, { required });
  if (s === undefined) return undefined;
  const ms = parseIstioDurationMs(s);
  if (ms === undefined) {
    ctx.add(path, `${quote(s)} is not a duration (such as 5s, 100ms, 1h30m)`);
    return undefined;
  }
  // Istio refuses durations under a millisecond.
  if (ms < 1) {
    ctx.add(path, `${quote(s)} is shorter than 1ms`);
    return undefined;
  }
  return s;
}

function checkGatewayDuration(ctx: DocContext, path: PathSeg[], v: Json): string | undefined {
  const s = checkString(ctx, path, v);
  if (s === undefined) return undefined;
  if (parseGatewayDurationMs(s) === undefined) {
    ctx.add(path, `${quote(s)} is not a Gateway API duration (1 to 4 parts of up to 5 digits with h, m, s or ms, such as 10s, 1h30m, 500ms)`);
    return undefined;
  }
  return s;
}

function checkHeaderName(ctx: DocContext, path: PathSeg[], v: Json): string | undefined {
  return checkString(ctx, path, v, { required: true, maxLength: GATEWAY_LIMITS.headerName, pattern: HEADER_NAME, patternReason: 'is not a valid HTTP header name' });
}

/** A sequence with at most `max` items (Gateway API's maxItems), each checked by `item`. */
function checkBoundedList<T>(ctx: DocContext, path: PathSeg[], v: Json, max: number, item: (p: PathSeg[], x: Json) => T | undefined): T[] | undefined {
  if (Array.isArray(v) && v.length > max) {
    ctx.add(path, `must have at most ${max} items, got ${v.length}`);
    return undefined;
  }
  return checkList(ctx, path, v, item);
}

function spec(ctx: DocContext, raw: Record<string, Json>, allowed: readonly string[], required: boolean): Record<string, Json> | undefined {
  checkObject(ctx, [], raw, TOP, { tolerated: TOLERATED_TOP });
  return checkObject(ctx, ['spec'], required ? raw.spec : (raw.spec ?? {}), allowed, { required });
}

type Namespaced = ObjectMeta & { namespace: string };

// ---- RequestAuthentication ---------------------------------------------------------------------

const JWT_RULE_FIELDS = [
  'issuer',
  'audiences',
  'jwksUri',
  'jwks',
  'fromHeaders',
  'fromParams',
  'fromCookies',
  'outputPayloadToHeader',
  'outputClaimToHeaders',
  'forwardOriginalToken',
  'timeout',
] as const;

function jwksUriProblem(s: string): string | undefined {
  let u: URL;
  try {
    u = new URL(s);
  } catch {
    return `${quote(s)} is not a URL`;
  }
  if (u.protocol !== 'https:') return `${quote(s)} must be an https URL (keys fetched in the clear could be replaced)`;
  if (u.username || u.password) return `${quote(s)} must not carry credentials`;
  return undefined;
}

/** Why `s` is not a JWK set ({"keys": [{"kty": ...}, ...]}), or undefined. */
export function jwksProblem(s: string): string | undefined {
  let v: unknown;
  try {
    v = JSON.parse(s);
  } catch {
    return 'is not JSON (a JWK set: {"keys": [...]})';
  }
  if (!isPlainObject(v) || !Array.isArray(v.keys)) return 'is not a JWK set (a JSON object with a "keys" array)';
  if (v.keys.length === 0) return 'JWK set has no keys';
  for (const [i, k] of v.keys.entries()) {
    if (!isPlainObject(k) || typeof k.kty !== 'string' || k.kty === '') return `JWK set key ${i} has no "kty"`;
  }
  return undefined;
}

function checkJwtRule(ctx: DocContext, path: PathSeg[], v: Json): JwtRule | undefined {
  const o = checkObject(ctx, path, v, JWT_RULE_FIELDS, { required: true });
  if (!o) return undefined;
  const before = ctx.problems.length;
  const issuer = checkString(ctx, [...path, 'issuer'], o.issuer, { required: true });
  const audiences = checkValues(ctx, [...path, 'audiences'], o.audiences);
  const jwksUri = o.jwksUri === undefined ? undefined : checkString(ctx, [...path, 'jwksUri'], o.jwksUri, { required: true });
  if (jwksUri !== undefined) {
    const why = jwksUriProblem(jwksUri);
    if (why) ctx.add([...path, 'jwksUri'], why);
  }
  const jwks = o.jwks === undefined ? undefined : checkString(ctx, [...path, 'jwks'], o.jwks, { required: true });
  if (jwks !== undefined) {
    const why = jwksProblem(jwks);
    if (why) ctx.add([...path, 'jwks'], why);
  }
  if (o.jwks != null && o.jwksUri != null) ctx.add([...path, 'jwks'], 'only one of jwks or jwksUri can be set', true);
  const fromHeaders = checkList(ctx, [...path, 'fromHeaders'], o.fromHeaders, (p, x) => {
    const h = checkObject(ctx, p, x, ['name', 'prefix'], { required: true });
    if (!h) return undefined;
    const name = checkHeaderName(ctx, [...p, 'name'], h.name);
    const prefix = checkString(ctx, [...p, 'prefix'], h.prefix);
    if (name === undefined) return undefined;
    return prefix === undefined ? { name } : { name, prefix };
  });
  const fromParams = checkValues(ctx, [...path, 'fromParams'], o.fromParams);
  const fromCookies = checkValues(ctx, [...path, 'fromCookies'], o.fromCookies);
  const outputPayloadToHeader = o.outputPayloadToHeader === undefined ? undefined : checkHeaderName(ctx, [...path, 'outputPayloadToHeader'], o.outputPayloadToHeader);
  const outputClaimToHeaders = checkList(ctx, [...path, 'outputClaimToHeaders'], o.outputClaimToHeaders, (p, x) => {
    const h = checkObject(ctx, p, x, ['header', 'claim'], { required: true });
    if (!h) return undefined;
    const header = checkHeaderName(ctx, [...p, 'header'], h.header);
    const claim = checkString(ctx, [...p, 'claim'], h.claim, { required: true });
    return header === undefined || claim === undefined ? undefined : { header, claim };
  });
  const forwardOriginalToken = checkBool(ctx, [...path, 'forwardOriginalToken'], o.forwardOriginalToken);
  const timeout = checkIstioDuration(ctx, [...path, 'timeout'], o.timeout);
  if (ctx.problems.length !== before || issuer === undefined) return undefined;
  const r: JwtRule = { issuer };
  if (audiences) r.audiences = audiences;
  if (jwksUri !== undefined) r.jwksUri = jwksUri;
  if (jwks !== undefined) r.jwks = jwks;
  if (fromHeaders) r.fromHeaders = fromHeaders;
  if (fromParams) r.fromParams = fromParams;
  if (fromCookies) r.fromCookies = fromCookies;
  if (outputPayloadToHeader !== undefined) r.outputPayloadToHeader = outputPayloadToHeader;
  if (outputClaimToHeaders) r.outputClaimToHeaders = outputClaimToHeaders;
  if (forwardOriginalToken !== undefined) r.forwardOriginalToken = forwardOriginalToken;
  if (timeout !== undefined) r.timeout = timeout;
  return r;
}

export function validateRequestAuthentication(ctx: DocContext, raw: Record<string, Json>, meta: ObjectMeta): RequestAuthenticationResource | undefined {
  const before = ctx.problems.length;
  const s = spec(ctx, raw, ['selector', 'targetRefs', 'jwtRules'], false);
  const out: RequestAuthenticationResource['spec'] = {};
  if (s) {
    const selector = checkSelector(ctx, ['spec', 'selector'], s.selector);
    const targetRefs = checkTargetRefs(ctx, ['spec', 'targetRefs'], s.targetRefs);
    if (s.selector != null && s.targetRefs != null) ctx.add(['spec', 'targetRefs'], 'only one of selector or targetRefs can be set', true);
    const jwtRules = checkList(ctx, ['spec', 'jwtRules'], s.jwtRules, (p, x) => checkJwtRule(ctx, p, x));
    if (selector) out.selector = selector;
    if (targetRefs) out.targetRefs = targetRefs;
    if (jwtRules) out.jwtRules = jwtRules;
  }
  if (ctx.problems.length !== before) return undefined;
  return { apiVersion: raw.apiVersion as RequestAuthenticationResource['apiVersion'], kind: 'RequestAuthentication', metadata: meta as Namespaced, spec: out };
}

// ---- Gateway -----------------------------------------------------------------------------------

export function validateGateway(ctx: DocContext, raw: Record<string, Json>, meta: ObjectMeta): GatewayResource | undefined {
  const before = ctx.problems.length;
  const waypointFor = meta.labels?.[WAYPOINT_FOR_LABEL];
  if (waypointFor !== undefined && !WAYPOINT_FOR_VALUES.includes(waypointFor as WaypointFor)) {
    ctx.add(['metadata', 'labels', WAYPOINT_FOR_LABEL], `${quote(waypointFor)} is not one of ${WAYPOINT_FOR_VALUES.join(', ')}`);
  }
  const s = spec(ctx, raw, ['gatewayClassName', 'listeners'], true);
  let gatewayClassName: string | undefined;
  let listeners: GatewayListener[] | undefined;
  if (s) {
    gatewayClassName = checkString(ctx, ['spec', 'gatewayClassName'], s.gatewayClassName, {
      required: true,
      maxLength: 253,
      pattern: DNS1123_SUBDOMAIN,
      patternReason: 'is not a valid name (DNS-1123 subdomain)',
    });
    if (s.listeners == null) ctx.add(['spec', 'listeners'], 'required field is missing');
    else if (Array.isArray(s.listeners) && s.listeners.length === 0) ctx.add(['spec', 'listeners'], 'must have at least one listener');
    const seen = new Set<string>();
    listeners = checkBoundedList(ctx, ['spec', 'listeners'], s.listeners, GATEWAY_LIMITS.listeners, (p, x) => {
      const l = checkObject(ctx, p, x, ['name', 'hostname', 'port', 'protocol'], { required: true });
      if (!l) return undefined;
      const name = checkString(ctx, [...p, 'name'], l.name, { required: true, maxLength: 253, pattern: DNS1123_SUBDOMAIN, patternReason: 'is not a valid listener name (DNS-1123 subdomain)' });
      const port = checkPort(ctx, [...p, 'port'], l.port, true);
      const protocol = checkString(ctx, [...p, 'protocol'], l.protocol, { required: true, maxLength: 255, pattern: PROTOCOL, patternReason: 'is not a protocol (such as HBONE, HTTP, HTTPS, TCP)' });
      const hostname = checkString(ctx, [...p, 'hostname'], l.hostname, { maxLength: 253, pattern: HOSTNAME, patternReason: 'is not a valid hostname' });
      if (name !== undefined && seen.has(name)) {
        ctx.add([...p, 'name'], `listener name ${quote(name)} is used more than once`);
        return undefined;
      }
      if (name !== undefined) seen.add(name);
      if (name === undefined || port === undefined || protocol === undefined) return undefined;
      const out: GatewayListener = { name, port, protocol };
      if (hostname !== undefined) out.hostname = hostname;
      return out;
    });
  }
  if (ctx.problems.length !== before || gatewayClassName === undefined || !listeners) return undefined;
  return { apiVersion: raw.apiVersion as GatewayResource['apiVersion'], kind: 'Gateway', metadata: meta as Namespaced, spec: { gatewayClassName, listeners } };
}

// ---- HTTPRoute ---------------------------------------------------------------------------------

function checkRef(ctx: DocContext, path: PathSeg[], v: Json, extra: readonly string[]): Record<string, Json> | undefined {
  return checkObject(ctx, path, v, ['group', 'kind', 'name', 'namespace', 'port', ...extra], { required: true });
}

/** The fields a parentRef and a backendRef share, checked in this order. */
function checkRefFields(ctx: DocContext, path: PathSeg[], o: Record<string, Json>) {
  return {
    group: checkString(ctx, [...path, 'group'], o.group, { maxLength: 253 }),
    kind: checkString(ctx, [...path, 'kind'], o.kind, { maxLength: 63 }),
    name: checkString(ctx, [...path, 'name'], o.name, { required: true, maxLength: 253 }),
    namespace: checkString(ctx, [...path, 'namespace'], o.namespace, { maxLength: 63 }),
    port: checkPort(ctx, [...path, 'port'], o.port, false),
  };
}

function checkParentRef(ctx: DocContext, path: PathSeg[], v: Json): RouteParentRef | undefined {
  const o = checkRef(ctx, path, v, ['sectionName']);
  if (!o) return undefined;
  const before = ctx.problems.length;
  const { group, kind, name, namespace, port } = checkRefFields(ctx, path, o);
  const sectionName = checkString(ctx, [...path, 'sectionName'], o.sectionName, { maxLength: 253 });
  // A route attaches to a Gateway (the default) or, in the mesh (GAMMA), to a Service.
  const g = group ?? GATEWAY_GROUP;
  const k = kind ?? 'Gateway';
  const isGateway = g === GATEWAY_GROUP && k === 'Gateway';
  const isService = g === '' && k === 'Service';
  if (!isGateway && !isService) {
    const at = kind !== undefined && group !== undefined ? path : [...path, o.kind !== undefined ? 'kind' : 'group'];
    ctx.add(at, `a parentRef must be a Gateway (group ${GATEWAY_GROUP}) or a Service (group ""), got ${quote(g)}/${quote(k)}`);
  }
  if (ctx.problems.length !== before || name === undefined) return undefined;
  const out: RouteParentRef = { name };
  if (group !== undefined) out.group = group;
  if (kind !== undefined) out.kind = kind;
  if (namespace !== undefined) out.namespace = namespace;
  if (port !== undefined) out.port = port;
  if (sectionName !== undefined) out.sectionName = sectionName;
  return out;
}

function checkBackendRef(ctx: DocContext, path: PathSeg[], v: Json, extra: readonly string[]): (BackendRef & { raw: Record<string, Json> }) | undefined {
  const o = checkRef(ctx, path, v, ['weight', ...extra]);
  if (!o) return undefined;
  const before = ctx.problems.length;
  const { group, kind, name, namespace, port } = checkRefFields(ctx, path, o);
  const weight = checkInt(ctx, [...path, 'weight'], o.weight, { min: 0, max: GATEWAY_LIMITS.maxWeight });
  // Gateway API: a reference to a Service (the default kind) must name its port.
  if ((kind ?? 'Service') === 'Service' && (group ?? '') === '' && o.port == null) ctx.add([...path, 'port'], 'a backendRef to a Service must set port');
  if (ctx.problems.length !== before || name === undefined) return undefined;
  const out: BackendRef & { raw: Record<string, Json> } = { name, raw: o };
  if (group !== undefined) out.group = group;
  if (kind !== undefined) out.kind = kind;
  if (namespace !== undefined) out.namespace = namespace;
  if (port !== undefined) out.port = port;
  if (weight !== undefined) out.weight = weight;
  return out;
}

function withoutRaw({ raw: _raw, ...ref }: BackendRef & { raw: Record<string, Json> }): BackendRef {
  void _raw;
  return ref;
}

function checkRouteValue(ctx: DocContext, path: PathSeg[], type: ValueMatchType | PathMatchType, v: Json, maxLength: number): string | undefined {
  const s = checkString(ctx, path, v, { required: true, maxLength });
  if (s === undefined) return undefined;
  if (type === 'RegularExpression') {
    const why = regexProblem(s);
    if (why) {
      ctx.add(path, why);
      return undefined;
    }
  }
  return s;
}

function checkPathValue(ctx: DocContext, path: PathSeg[], type: PathMatchType, v: Json): string | undefined {
  const s = checkRouteValue(ctx, path, type, v, GATEWAY_LIMITS.pathLength);
  if (s === undefined || type === 'RegularExpression') return s;
  // Gateway API's rules for Exact and PathPrefix values: absolute, no empty or dot segments, no `#`/`?`.
  let why: string | undefined;
  if (!s.startsWith('/')) why = 'must be an absolute path (start with "/")';
  else if (s.includes('//')) why = 'must not contain "//"';
  else if (/\/\.\.?(\/|$)/.test(s)) why = 'must not contain "/./" or "/../" segments';
  else if (/%2f/i.test(s)) why = 'must not contain "%2f" or "%2F"';
  else if (!PATH_CHARS.test(s)) why = 'must contain only path characters (RFC 3986: letters, digits, -._~!$&\'()*+,;=:@/ and %XX escapes; no "?" or "#")';
  if (why) {
    ctx.add(path, `${quote(s)} ${why}`);
    return undefined;
  }
  return s;
}

function checkNameValueMatches(ctx: DocContext, path: PathSeg[], v: Json, what: 'header' | 'query'): Array<{ type: ValueMatchType; name: string; value: string }> | undefined {
  const names = new Set<string>();
  return checkBoundedList(ctx, path, v, GATEWAY_LIMITS.headerMatches, (p, x) => {
    const o = checkObject(ctx, p, x, ['type', 'name', 'value'], { required: true });
    if (!o) return undefined;
    const type = (checkString(ctx, [...p, 'type'], o.type, { oneOf: ['Exact', 'RegularExpression'] }) ?? (o.type == null ? 'Exact' : undefined)) as ValueMatchType | undefined;
    const name = what === 'header' ? checkHeaderName(ctx, [...p, 'name'], o.name) : checkString(ctx, [...p, 'name'], o.name, { required: true, maxLength: 256, pattern: HEADER_NAME, patternReason: 'is not a valid query parameter name' });
    // Gateway API: header values up to 4096 characters, query parameter values up to 1024.
    const value = type === undefined ? undefined : checkRouteValue(ctx, [...p, 'value'], type, o.value, what === 'header' ? 4096 : 1024);
    if (name !== undefined) {
      // The API server keys these lists by name: the same name twice is refused. (Names differing only
      // in case are allowed; Gateway API says the first one counts, which the waypoint must honour.)
      if (names.has(name)) {
        ctx.add([...p, 'name'], `${what} ${quote(name)} is matched more than once`);
        return undefined;
      }
      names.add(name);
    }
    return type === undefined || name === undefined || value === undefined ? undefined : { type, name, value };
  });
}

function checkMatch(ctx: DocContext, path: PathSeg[], v: Json): HTTPRouteMatch | undefined {
  if (v === null) return { path: { type: 'PathPrefix', value: '/' } };
  const o = checkObject(ctx, path, v, ['path', 'headers', 'queryParams', 'method'], { required: true });
  if (!o) return undefined;
  const before = ctx.problems.length;
  const out: HTTPRouteMatch = {};
  // Gateway API's default: a match without a path matches every path (PathPrefix "/").
  const po = o.path == null ? undefined : checkObject(ctx, [...path, 'path'], o.path, ['type', 'value']);
  if (o.path == null) out.path = { type: 'PathPrefix', value: '/' };
  else if (po) {
    const type = (po.type == null ? 'PathPrefix' : checkString(ctx, [...path, 'path', 'type'], po.type, { oneOf: ['Exact', 'PathPrefix', 'RegularExpression'] })) as PathMatchType | undefined;
    const value = type === undefined ? undefined : po.value == null ? '/' : checkPathValue(ctx, [...path, 'path', 'value'], type, po.value);
    if (type !== undefined && value !== undefined) out.path = { type, value };
  }
  const headers = checkNameValueMatches(ctx, [...path, 'headers'], o.headers, 'header');
  const queryParams = checkNameValueMatches(ctx, [...path, 'queryParams'], o.queryParams, 'query');
  const method = checkString(ctx, [...path, 'method'], o.method, { oneOf: HTTP_METHODS });
  if (ctx.problems.length !== before) return undefined;
  if (headers) out.headers = headers;
  if (queryParams) out.queryParams = queryParams;
  if (method !== undefined) out.method = method;
  return out;
}

function checkHeaderModifier(ctx: DocContext, path: PathSeg[], v: Json): HeaderModifier | undefined {
  const o = checkObject(ctx, path, v, ['set', 'add', 'remove'], { required: true });
  if (!o) return undefined;
  const before = ctx.problems.length;
  const pairs = (f: 'set' | 'add'): Array<{ name: string; value: string }> | undefined =>
    checkBoundedList(ctx, [...path, f], o[f], GATEWAY_LIMITS.headerMods, (p, x) => {
      const h = checkObject(ctx, p, x, ['name', 'value'], { required: true });
      if (!h) return undefined;
      const name = checkHeaderName(ctx, [...p, 'name'], h.name);
      const value = checkString(ctx, [...p, 'value'], h.value, { required: true, maxLength: 4096 });
      return name === undefined || value === undefined ? undefined : { name, value };
    });
  const set = pairs('set');
  const add = pairs('add');
  const remove =
    Array.isArray(o.remove) && o.remove.length > GATEWAY_LIMITS.headerMods
      ? (ctx.add([...path, 'remove'], `must have at most ${GATEWAY_LIMITS.headerMods} items, got ${o.remove.length}`), undefined)
      : checkValues(ctx, [...path, 'remove'], o.remove, (s) => (HEADER_NAME.test(s) && s.length <= GATEWAY_LIMITS.headerName ? undefined : `${quote(s)} is not a valid HTTP header name`));
  if (ctx.problems.length !== before) return undefined;
  const out: HeaderModifier = {};
  if (set) out.set = set;
  if (add) out.add = add;
  if (remove) out.remove = remove;
  return out;
}

function checkPathModifier(ctx: DocContext, path: PathSeg[], v: Json): PathModifier | undefined {
  const o = checkObject(ctx, path, v, ['type', 'replaceFullPath', 'replacePrefixMatch']);
  if (!o) return undefined;
  const type = checkString(ctx, [...path, 'type'], o.type, { required: true, oneOf: ['ReplaceFullPath', 'ReplacePrefixMatch'] }) as PathModifier['type'] | undefined;
  if (type === undefined) return undefined;
  const field = type === 'ReplaceFullPath' ? 'replaceFullPath' : 'replacePrefixMatch';
  const other = type === 'ReplaceFullPath' ? 'replacePrefixMatch' : 'replaceFullPath';
  if (o[other] != null) {
    ctx.add([...path, other], `must not be set when type is ${type}`, true);
    return undefined;
  }
  const value = checkString(ctx, [...path, field], o[field], { required: true, maxLength: GATEWAY_LIMITS.pathLength });
  if (value === undefined) return undefined;
  if (!value.startsWith('/')) {
    ctx.add([...path, field], `${quote(value)} must be an absolute path (start with "/")`);
    return undefined;
  }
  return type === 'ReplaceFullPath' ? { type, replaceFullPath: value } : { type, replacePrefixMatch: value };
}

const FILTER_FIELD: Record<(typeof SUPPORTED_FILTERS)[number], string> = {
  RequestHeaderModifier: 'requestHeaderModifier',
  ResponseHeaderModifier: 'responseHeaderModifier',
  RequestRedirect: 'requestRedirect',
  RequestMirror: 'requestMirror',
  URLRewrite: 'urlRewrite',
  CORS: 'cors',
};
const FILTER_FIELDS = ['type', ...Object.values(FILTER_FIELD), 'extensionRef'];

function checkFilter(ctx: DocContext, path: PathSeg[], v: Json): HTTPRouteFilter | undefined {
  const o = checkObject(ctx, path, v, FILTER_FIELDS, { required: true });
  if (!o) return undefined;
  const type = checkString(ctx, [...path, 'type'], o.type, { required: true });
  if (type === undefined) return undefined;
  if (!(SUPPORTED_FILTERS as readonly string[]).includes(type)) {
    ctx.add([...path, 'type'], `filter type ${quote(type)} is not supported (supported: ${SUPPORTED_FILTERS.join(', ')})`);
    return undefined;
  }
  const t = type as (typeof SUPPORTED_FILTERS)[number];
  const field = FILTER_FIELD[t];
  // Gateway API: the field named by the type is set, and no other filter's field.
  for (const f of FILTER_FIELDS) {
    if (f !== 'type' && f !== field && o[f] != null) ctx.add([...path, f], `must not be set for a ${t} filter`, true);
  }
  const p = [...path, field];
  const before = ctx.problems.length;
  let out: HTTPRouteFilter | undefined;
  switch (t) {
    case 'RequestHeaderModifier': {
      const m = checkHeaderModifier(ctx, p, o[field]);
      if (m) out = { type: t, requestHeaderModifier: m };
      break;
    }
    case 'ResponseHeaderModifier': {
      const m = checkHeaderModifier(ctx, p, o[field]);
      if (m) out = { type: t, responseHeaderModifier: m };
      break;
    }
    case 'RequestRedirect': {
      const r = checkObject(ctx, p, o[field], ['scheme', 'hostname', 'path', 'port', 'statusCode'], { required: true });
      if (!r) break;
      const scheme = checkString(ctx, [...p, 'scheme'], r.scheme, { oneOf: ['http', 'https'] }) as 'http' | 'https' | undefined;
      const hostname = checkString(ctx, [...p, 'hostname'], r.hostname, { maxLength: 253, pattern: HOSTNAME, patternReason: 'is not a valid hostname' });
      const pm = checkPathModifier(ctx, [...p, 'path'], r.path);
      const port = checkPort(ctx, [...p, 'port'], r.port, false);
      let statusCode: 301 | 302 | 303 | 307 | 308 | undefined;
      if (r.statusCode != null) {
        if (r.statusCode === 301 || r.statusCode === 302 || r.statusCode === 303 || r.statusCode === 307 || r.statusCode === 308) statusCode = r.statusCode;
        else ctx.add([...p, 'statusCode'], `must be one of 301, 302, 303, 307, 308, got ${describe(r.statusCode)}`);
      }
      const rr: Extract<HTTPRouteFilter, { type: 'RequestRedirect' }>['requestRedirect'] = {};
      if (scheme) rr.scheme = scheme;
      if (hostname !== undefined) rr.hostname = hostname;
      if (pm) rr.path = pm;
      if (port !== undefined) rr.port = port;
      if (statusCode !== undefined) rr.statusCode = statusCode;
      out = { type: t, requestRedirect: rr };
      break;
    }
    case 'RequestMirror': {
      const r = checkObject(ctx, p, o[field], ['backendRef', 'percent'], { required: true });
      if (!r) break;
      const ref = checkBackendRef(ctx, [...p, 'backendRef'], r.backendRef, []);
      if (ref?.weight !== undefined) ctx.add([...p, 'backendRef', 'weight'], 'a mirror backendRef takes no weight', true);
      const percent = checkInt(ctx, [...p, 'percent'], r.percent, { min: 0, max: 100 });
      if (ref) out = { type: t, requestMirror: percent === undefined ? { backendRef: withoutRaw(ref) } : { backendRef: withoutRaw(ref), percent } };
      break;
    }
    case 'URLRewrite': {
      const r = checkObject(ctx, p, o[field], ['hostname', 'path'], { required: true });
      if (!r) break;
      const hostname = checkString(ctx, [...p, 'hostname'], r.hostname, { maxLength: 253, pattern: HOSTNAME, patternReason: 'is not a valid hostname' });
      const pm = checkPathModifier(ctx, [...p, 'path'], r.path);
      const u: Extract<HTTPRouteFilter, { type: 'URLRewrite' }>['urlRewrite'] = {};
      if (hostname !== undefined) u.hostname = hostname;
      if (pm) u.path = pm;
      out = { type: t, urlRewrite: u };
      break;
    }
    case 'CORS': {
      const r = checkObject(ctx, p, o[field], ['allowOrigins', 'allowMethods', 'allowHeaders', 'exposeHeaders', 'allowCredentials', 'maxAge'], { required: true });
      if (!r) break;
      const c: Extract<HTTPRouteFilter, { type: 'CORS' }>['cors'] = {};
      const allowOrigins = checkValues(ctx, [...p, 'allowOrigins'], r.allowOrigins, (s) => (s === '*' || /^(https?):\/\/(\*\.)?[^\s/]+$/.test(s) ? undefined : `${quote(s)} is not an origin (scheme://host[:port] or *)`));
      const allowMethods = checkValues(ctx, [...p, 'allowMethods'], r.allowMethods, (s) => (s === '*' || (HTTP_METHODS as readonly string[]).includes(s) ? undefined : `${quote(s)} is not an HTTP method or *`));
      const headerItem = (s: string): string | undefined => (s === '*' || HEADER_NAME.test(s) ? undefined : `${quote(s)} is not a valid HTTP header name`);
      const allowHeaders = checkValues(ctx, [...p, 'allowHeaders'], r.allowHeaders, headerItem);
      const exposeHeaders = checkValues(ctx, [...p, 'exposeHeaders'], r.exposeHeaders, headerItem);
      const allowCredentials = checkBool(ctx, [...p, 'allowCredentials'], r.allowCredentials);
      const maxAge = checkInt(ctx, [...p, 'maxAge'], r.maxAge, { min: 1, max: 2_147_483_647 });
      if (allowOrigins) c.allowOrigins = allowOrigins;
      if (allowMethods) c.allowMethods = allowMethods;
      if (allowHeaders) c.allowHeaders = allowHeaders;
      if (exposeHeaders) c.exposeHeaders = exposeHeaders;
      if (allowCredentials !== undefined) c.allowCredentials = allowCredentials;
      if (maxAge !== undefined) c.maxAge = maxAge;
      out = { type: t, cors: c };
      break;
    }
  }
  return ctx.problems.length === before ? out : undefined;
}

function checkFilters(ctx: DocContext, path: PathSeg[], v: Json): HTTPRouteFilter[] | undefined {
  const filters = checkBoundedList(ctx, path, v, GATEWAY_LIMITS.filters, (p, x) => checkFilter(ctx, p, x));
  if (!filters) return undefined;
  // Gateway API: each of these at most once; RequestRedirect and URLRewrite not together.
  for (const once of ['RequestHeaderModifier', 'ResponseHeaderModifier', 'RequestRedirect', 'URLRewrite']) {
    if (filters.filter((f) => f.type === once).length > 1) ctx.add(path, `${once} may appear at most once`);
  }
  if (filters.some((f) => f.type === 'RequestRedirect') && filters.some((f) => f.type === 'URLRewrite')) ctx.add(path, 'RequestRedirect and URLRewrite cannot be used together');
  return filters;
}

function checkHTTPRouteRule(ctx: DocContext, path: PathSeg[], v: Json): HTTPRouteRule | undefined {
  if (v === null) return { matches: [{ path: { type: 'PathPrefix', value: '/' } }] };
  const o = checkObject(ctx, path, v, ['name', 'matches', 'filters', 'backendRefs', 'timeouts', 'retry'], { required: true });
  if (!o) return undefined;
  const before = ctx.problems.length;
  const name = checkString(ctx, [...path, 'name'], o.name, { maxLength: 253, pattern: DNS1123_SUBDOMAIN, patternReason: 'is not a valid rule name (DNS-1123 subdomain)' });
  const matches = checkBoundedList(ctx, [...path, 'matches'], o.matches, GATEWAY_LIMITS.matches, (p, x) => checkMatch(ctx, p, x));
  const filters = checkFilters(ctx, [...path, 'filters'], o.filters);
  const backendRefs = checkBoundedList(ctx, [...path, 'backendRefs'], o.backendRefs, GATEWAY_LIMITS.backendRefs, (p, x) => {
    const ref = checkBackendRef(ctx, p, x, ['filters']);
    if (!ref) return undefined;
    const f = checkFilters(ctx, [...p, 'filters'], ref.raw.filters);
    const out: BackendRef & { filters?: HTTPRouteFilter[] } = withoutRaw(ref);
    if (f) out.filters = f;
    return out;
  });
  if (filters?.some((f) => f.type === 'RequestRedirect') && Array.isArray(o.backendRefs) && o.backendRefs.length > 0) {
    ctx.add([...path, 'backendRefs'], 'a rule with a RequestRedirect filter must not have backendRefs', true);
  }
  const prefixReplace = (fs: readonly HTTPRouteFilter[] | undefined): boolean =>
    fs?.some((f) => (f.type === 'URLRewrite' && f.urlRewrite.path?.type === 'ReplacePrefixMatch') || (f.type === 'RequestRedirect' && f.requestRedirect.path?.type === 'ReplacePrefixMatch')) ?? false;
  // Gateway API: a ReplacePrefixMatch (in the rule's filters or a backendRef's) needs exactly one match, a PathPrefix one.
  const effective = matches && matches.length ? matches : [{ path: { type: 'PathPrefix' } }];
  if ((prefixReplace(filters) || backendRefs?.some((b) => prefixReplace(b.filters))) && matches && (effective.length !== 1 || effective[0]!.path?.type !== 'PathPrefix')) {
    ctx.add([...path, 'filters'], 'ReplacePrefixMatch needs exactly one match in the rule, a PathPrefix match', true);
  }
  let timeouts: HTTPRouteRule['timeouts'];
  const to = checkObject(ctx, [...path, 'timeouts'], o.timeouts, ['request', 'backendRequest']);
  if (to) {
    const request = checkGatewayDuration(ctx, [...path, 'timeouts', 'request'], to.request);
    const backendRequest = checkGatewayDuration(ctx, [...path, 'timeouts', 'backendRequest'], to.backendRequest);
    if (request !== undefined && backendRequest !== undefined) {
      const r = parseGatewayDurationMs(request)!;
      const b = parseGatewayDurationMs(backendRequest)!;
      // Gateway API's rule: backendRequest must not exceed request, unless request is 0s (no timeout).
      if (r !== 0 && b > r) ctx.add([...path, 'timeouts', 'backendRequest'], `${quote(backendRequest)} must not be longer than request (${quote(request)})`);
    }
    timeouts = {};
    if (request !== undefined) timeouts.request = request;
    if (backendRequest !== undefined) timeouts.backendRequest = backendRequest;
  }
  let retry: HTTPRouteRule['retry'];
  const ro = checkObject(ctx, [...path, 'retry'], o.retry, ['attempts', 'codes', 'backoff']);
  if (ro) {
    const attempts = checkInt(ctx, [...path, 'retry', 'attempts'], ro.attempts, { min: 0, max: INT32 });
    const codes = checkList(ctx, [...path, 'retry', 'codes'], ro.codes, (p, x) => checkInt(ctx, p, x, { min: 400, max: 599, required: true }));
    const backoff = checkGatewayDuration(ctx, [...path, 'retry', 'backoff'], ro.backoff);
    retry = {};
    if (attempts !== undefined) retry.attempts = attempts;
    if (codes) retry.codes = codes;
    if (backoff !== undefined) retry.backoff = backoff;
  }
  if (ctx.problems.length !== before) return undefined;
  const out: HTTPRouteRule = { matches: matches && matches.length ? matches : [{ path: { type: 'PathPrefix', value: '/' } }] };
  if (name !== undefined) out.name = name;
  if (filters) out.filters = filters;
  if (backendRefs) out.backendRefs = backendRefs;
  if (timeouts) out.timeouts = timeouts;
  if (retry) out.retry = retry;
  return out;
}

export function validateHTTPRoute(ctx: DocContext, raw: Record<string, Json>, meta: ObjectMeta): HTTPRouteResource | undefined {
  const before = ctx.problems.length;
  const s = spec(ctx, raw, ['parentRefs', 'hostnames', 'rules'], false);
  const out: HTTPRouteResource['spec'] = { rules: [] };
  if (s) {
    const parentRefs = checkBoundedList(ctx, ['spec', 'parentRefs'], s.parentRefs, GATEWAY_LIMITS.parentRefs, (p, x) => checkParentRef(ctx, p, x));
    const hostnames =
      Array.isArray(s.hostnames) && s.hostnames.length > GATEWAY_LIMITS.hostnames
        ? (ctx.add(['spec', 'hostnames'], `must have at most ${GATEWAY_LIMITS.hostnames} items, got ${s.hostnames.length}`), undefined)
        : checkValues(ctx, ['spec', 'hostnames'], s.hostnames, (h) => (h.length <= 253 && HOSTNAME.test(h) ? undefined : `${quote(h)} is not a valid hostname`));
    // Gateway API's default: one rule that matches everything.
    const rules = s.rules == null ? [{ matches: [{ path: { type: 'PathPrefix', value: '/' } }] } satisfies HTTPRouteRule] : checkBoundedList(ctx, ['spec', 'rules'], s.rules, GATEWAY_LIMITS.rules, (p, x) => checkHTTPRouteRule(ctx, p, x));
    if (rules) {
      const total = rules.reduce((n, r) => n + r.matches.length, 0);
      if (total > GATEWAY_LIMITS.totalMatches) ctx.add(['spec', 'rules'], `has ${total} matches in all; Gateway API allows at most ${GATEWAY_LIMITS.totalMatches} per route`, true);
      const names = new Set<string>();
      rules.forEach((r, i) => {
        if (r.name === undefined) return;
        if (names.has(r.name)) ctx.add(['spec', 'rules', i, 'name'], `rule name ${quote(r.name)} is used more than once`);
        names.add(r.name);
      });
    }
    if (parentRefs) out.parentRefs = parentRefs;
    if (hostnames) out.hostnames = hostnames;
    if (rules) out.rules = rules;
  }
  if (ctx.problems.length !== before) return undefined;
  return { apiVersion: raw.apiVersion as HTTPRouteResource['apiVersion'], kind: 'HTTPRoute', metadata: meta as Namespaced, spec: out };
}

// ---- DestinationRule ---------------------------------------------------------------------------


function checkConnectionPool(ctx: DocContext, path: PathSeg[], v: Json): ConnectionPool | undefined {
  const o = checkObject(ctx, path, v, ['tcp', 'http']);
  if (!o) return undefined;
  const out: ConnectionPool = {};
  const tcp = checkObject(ctx, [...path, 'tcp'], o.tcp, ['maxConnections', 'connectTimeout', 'maxConnectionDuration', 'idleTimeout']);
  if (tcp) {
    const t: NonNullable<ConnectionPool['tcp']> = {};
    const maxConnections = checkInt(ctx, [...path, 'tcp', 'maxConnections'], tcp.maxConnections, { min: 0, max: INT32 });
    if (maxConnections !== undefined) t.maxConnections = maxConnections;
    for (const f of ['connectTimeout', 'maxConnectionDuration', 'idleTimeout'] as const) {
      const d = checkIstioDuration(ctx, [...path, 'tcp', f], tcp[f]);
      if (d !== undefined) t[f] = d;
    }
    out.tcp = t;
  }
  const http = checkObject(ctx, [...path, 'http'], o.http, ['http1MaxPendingRequests', 'http2MaxRequests', 'maxRequestsPerConnection', 'maxRetries', 'idleTimeout', 'maxConcurrentStreams']);
  if (http) {
    const h: NonNullable<ConnectionPool['http']> = {};
    for (const f of ['http1MaxPendingRequests', 'http2MaxRequests', 'maxRequestsPerConnection', 'maxRetries', 'maxConcurrentStreams'] as const) {
      const n = checkInt(ctx, [...path, 'http', f], http[f], { min: 0, max: INT32 });
      if (n !== undefined) h[f] = n;
    }
    const idle = checkIstioDuration(ctx, [...path, 'http', 'idleTimeout'], http.idleTimeout);
    if (idle !== undefined) h.idleTimeout = idle;
    out.http = h;
  }
  return out;
}

function checkOutlierDetection(ctx: DocContext, path: PathSeg[], v: Json): OutlierDetection | undefined {
  const o = checkObject(ctx, path, v, ['consecutive5xxErrors', 'consecutiveGatewayErrors', 'interval', 'baseEjectionTime', 'maxEjectionPercent', 'minHealthPercent']);
  if (!o) return undefined;
  const out: OutlierDetection = {};
  for (const f of ['consecutive5xxErrors', 'consecutiveGatewayErrors'] as const) {
    const n = checkInt(ctx, [...path, f], o[f], { min: 0, max: INT32 });
    if (n !== undefined) out[f] = n;
  }
  for (const f of ['maxEjectionPercent', 'minHealthPercent'] as const) {
    const n = checkInt(ctx, [...path, f], o[f], { min: 0, max: 100 });
    if (n !== undefined) out[f] = n;
  }
  for (const f of ['interval', 'baseEjectionTime'] as const) {
    const d = checkIstioDuration(ctx, [...path, f], o[f]);
    if (d !== undefined) out[f] = d;
  }
  return out;
}

function checkTrafficPolicy(ctx: DocContext, path: PathSeg[], v: Json): TrafficPolicy | undefined {
  const o = checkObject(ctx, path, v, ['connectionPool', 'outlierDetection', 'loadBalancer']);
  if (!o) return undefined;
  const out: TrafficPolicy = {};
  const cp = checkConnectionPool(ctx, [...path, 'connectionPool'], o.connectionPool);
  const od = checkOutlierDetection(ctx, [...path, 'outlierDetection'], o.outlierDetection);
  const lb = checkObject(ctx, [...path, 'loadBalancer'], o.loadBalancer, ['simple']);
  if (lb) {
    const simple = checkString(ctx, [...path, 'loadBalancer', 'simple'], lb.simple, { required: true, oneOf: LOAD_BALANCERS }) as LoadBalancerSimple | undefined;
    if (simple) out.loadBalancer = { simple };
  }
  if (cp) out.connectionPool = cp;
  if (od) out.outlierDetection = od;
  return out;
}

function checkIstioHost(ctx: DocContext, path: PathSeg[], v: Json): string | undefined {
  // Istio's host: a (possibly wildcard-prefixed) DNS name, a short service name, or `*`.
  return checkString(ctx, path, v, { required: true, maxLength: 253, pattern: /^(\*|(\*\.)?[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)*)$/, patternReason: 'is not a valid host (a DNS name, optionally starting with "*.")' });
}

export function validateDestinationRule(ctx: DocContext, raw: Record<string, Json>, meta: ObjectMeta): DestinationRuleResource | undefined {
  const before = ctx.problems.length;
  const s = spec(ctx, raw, ['host', 'trafficPolicy', 'subsets'], true);
  let host: string | undefined;
  const out: Partial<DestinationRuleResource['spec']> = {};
  if (s) {
    host = checkIstioHost(ctx, ['spec', 'host'], s.host);
    const tp = checkTrafficPolicy(ctx, ['spec', 'trafficPolicy'], s.trafficPolicy);
    const names = new Set<string>();
    const subsets = checkList(ctx, ['spec', 'subsets'], s.subsets, (p, x) => {
      const o = checkObject(ctx, p, x, ['name', 'labels', 'trafficPolicy'], { required: true });
      if (!o) return undefined;
      const name = checkString(ctx, [...p, 'name'], o.name, { required: true, maxLength: 63, pattern: /^[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?$/, patternReason: 'is not a valid subset name' });
      if (name !== undefined && names.has(name)) ctx.add([...p, 'name'], `subset ${quote(name)} is defined more than once`);
      if (name !== undefined) names.add(name);
      const labels = checkStringMap(ctx, [...p, 'labels'], o.labels, 'labels');
      const stp = checkTrafficPolicy(ctx, [...p, 'trafficPolicy'], o.trafficPolicy);
      if (name === undefined) return undefined;
      const sub: NonNullable<DestinationRuleResource['spec']['subsets']>[number] = { name };
      if (labels) sub.labels = labels;
      if (stp) sub.trafficPolicy = stp;
      return sub;
    });
    if (tp) out.trafficPolicy = tp;
    if (subsets) out.subsets = subsets;
  }
  if (ctx.problems.length !== before || host === undefined) return undefined;
  return { apiVersion: raw.apiVersion as DestinationRuleResource['apiVersion'], kind: 'DestinationRule', metadata: meta as Namespaced, spec: { host, ...out } };
}

// ---- VirtualService ----------------------------------------------------------------------------

function checkPercentage(ctx: DocContext, path: PathSeg[], v: Json): { value: number } | undefined {
  const o = checkObject(ctx, path, v, ['value']);
  if (!o) return undefined;
  if (typeof o.value !== 'number' || !Number.isFinite(o.value)) {
    ctx.add([...path, 'value'], o.value == null ? 'required field is missing' : `must be a number, got ${describe(o.value)}`);
    return undefined;
  }
  if (o.value < 0 || o.value > 100) {
    ctx.add([...path, 'value'], `${o.value} is outside 0-100`);
    return undefined;
  }
  return { value: o.value };
}

function checkFault(ctx: DocContext, path: PathSeg[], v: Json): HTTPFault | undefined {
  const o = checkObject(ctx, path, v, ['delay', 'abort']);
  if (!o) return undefined;
  const before = ctx.problems.length;
  if (o.delay == null && o.abort == null) ctx.add(path, 'a fault needs delay or abort');
  const out: HTTPFault = {};
  const d = checkObject(ctx, [...path, 'delay'], o.delay, ['percentage', 'fixedDelay']);
  if (d) {
    const percentage = checkPercentage(ctx, [...path, 'delay', 'percentage'], d.percentage);
    const fixedDelay = checkIstioDuration(ctx, [...path, 'delay', 'fixedDelay'], d.fixedDelay, true);
    if (fixedDelay !== undefined) out.delay = percentage ? { percentage, fixedDelay } : { fixedDelay };
  }
  const a = checkObject(ctx, [...path, 'abort'], o.abort, ['percentage', 'httpStatus']);
  if (a) {
    const percentage = checkPercentage(ctx, [...path, 'abort', 'percentage'], a.percentage);
    const httpStatus = checkInt(ctx, [...path, 'abort', 'httpStatus'], a.httpStatus, { min: 200, max: 599, required: true });
    if (httpStatus !== undefined) out.abort = percentage ? { percentage, httpStatus } : { httpStatus };
  }
  return ctx.problems.length === before ? out : undefined;
}

function checkVirtualServiceRoute(ctx: DocContext, path: PathSeg[], v: Json): VirtualServiceHTTPRoute | undefined {
  const o = checkObject(ctx, path, v, ['name', 'fault', 'route', 'timeout'], { required: true });
  if (!o) return undefined;
  const before = ctx.problems.length;
  const name = checkString(ctx, [...path, 'name'], o.name);
  const fault = o.fault == null ? undefined : checkFault(ctx, [...path, 'fault'], o.fault);
  if (o.route == null || (Array.isArray(o.route) && o.route.length === 0)) ctx.add([...path, 'route'], 'an http route needs at least one route destination');
  const route = checkList(ctx, [...path, 'route'], o.route, (p, x) => {
    const r = checkObject(ctx, p, x, ['destination', 'weight'], { required: true });
    if (!r) return undefined;
    const dest = checkObject(ctx, [...p, 'destination'], r.destination, ['host', 'subset', 'port'], { required: true });
    const weight = checkInt(ctx, [...p, 'weight'], r.weight, { min: 0, max: INT32 });
    if (!dest) return undefined;
    const host = checkIstioHost(ctx, [...p, 'destination', 'host'], dest.host);
    const subset = checkString(ctx, [...p, 'destination', 'subset'], dest.subset);
    const po = checkObject(ctx, [...p, 'destination', 'port'], dest.port, ['number']);
    const port = po ? checkPort(ctx, [...p, 'destination', 'port', 'number'], po.number, true) : undefined;
    if (host === undefined) return undefined;
    const out: NonNullable<VirtualServiceHTTPRoute['route']>[number] = { destination: { host } };
    if (subset !== undefined) out.destination.subset = subset;
    if (port !== undefined) out.destination.port = { number: port };
    if (weight !== undefined) out.weight = weight;
    return out;
  });
  const timeout = checkIstioDuration(ctx, [...path, 'timeout'], o.timeout);
  if (ctx.problems.length !== before) return undefined;
  const out: VirtualServiceHTTPRoute = {};
  if (name !== undefined) out.name = name;
  if (fault) out.fault = fault;
  if (route) out.route = route;
  if (timeout !== undefined) out.timeout = timeout;
  return out;
}

export function validateVirtualService(ctx: DocContext, raw: Record<string, Json>, meta: ObjectMeta): VirtualServiceResource | undefined {
  const before = ctx.problems.length;
  const s = spec(ctx, raw, ['hosts', 'gateways', 'http'], true);
  let hosts: string[] | undefined;
  const out: Partial<VirtualServiceResource['spec']> = {};
  if (s) {
    if (s.hosts == null || (Array.isArray(s.hosts) && s.hosts.length === 0)) ctx.add(['spec', 'hosts'], 'at least one host is required');
    hosts = checkValues(ctx, ['spec', 'hosts'], s.hosts, (h) => (h.length <= 253 && /^(\*|(\*\.)?[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)*)$/.test(h) ? undefined : `${quote(h)} is not a valid host`));
    const gateways = checkValues(ctx, ['spec', 'gateways'], s.gateways);
    const http = checkList(ctx, ['spec', 'http'], s.http, (p, x) => checkVirtualServiceRoute(ctx, p, x));
    if (gateways) out.gateways = gateways;
    if (http) out.http = http;
  }
  if (ctx.problems.length !== before || !hosts) return undefined;
  return { apiVersion: raw.apiVersion as VirtualServiceResource['apiVersion'], kind: 'VirtualService', metadata: meta as Namespaced, spec: { hosts, ...out } };
}
