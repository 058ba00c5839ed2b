// Hubble's flow filters (FlowFilter of GetFlowsRequest) compiled to a predicate, with Hubble's
// semantics: inside one FlowFilter every field that is set must match (AND) and the values inside a
// field are alternatives (OR); a list of filters matches when any filter does. A flow passes when the
// whitelist is empty or matches, and the blacklist does not match. Malformed values (an address, a
// port, a status code, a regular expression, a label selector) are refused when compiling, as
// Hubble refuses them, never silently ignored.
import { setFlagsFromString } from 'node:v8';
import { ErrorCodes, WeftError } from '../errors.js';
import { ipFamily, netContains, parseIp, parseIpNet, parsePortDigits, type IpNet } from '../net/address.js';
import { quote } from '../quote.js';
import type { Endpoint, EventTypeFilter, Flow, FlowFilter, Service, TCPFlags, Workload } from './types.js';

export type { FlowFilter } from './types.js';

export type FlowPredicate = (flow: Flow) => boolean;

/** A filter value Hubble would reject (gRPC INVALID_ARGUMENT). */
export class InvalidFilterError extends WeftError {
  constructor(message: string) {
    super(ErrorCodes.USAGE, `invalid flow filter: ${message}`);
    this.name = 'InvalidFilterError';
  }
}

/** The cluster name Hubble assumes for node names written without one. */
export const DEFAULT_CLUSTER_NAME = 'default';

export function compileFilters(whitelist: FlowFilter[] | undefined, blacklist: FlowFilter[] | undefined): FlowPredicate {
  const list = (l: unknown, name: string): FlowFilter[] => {
    if (l === undefined || l === null) return [];
    if (!Array.isArray(l)) throw new InvalidFilterError(`${name} must be a list of FlowFilter objects`);
    return l as FlowFilter[];
  };
  const allow = list(whitelist, 'whitelist').map(compileFilter);
  const deny = list(blacklist, 'blacklist').map(compileFilter);
  return (flow) => (allow.length === 0 || allow.some((f) => f(flow))) && !deny.some((f) => f(flow));
}

/** One FlowFilter: the conjunction of its set fields. A filter with no field set matches every flow. */
export function compileFilter(filter: FlowFilter): FlowPredicate {
  checkFilterShape(filter);
  const parts: FlowPredicate[] = [];
  const add = <T>(values: T[] | undefined, build: (values: T[]) => FlowPredicate): void => {
    if (values && values.length > 0) parts.push(build(values));
  };

  add(filter.uuid, (ids) => (f) => ids.includes(f.uuid));
  add(filter.event_type, (types) => (f) => matchEventType(types, f));
  add(filter.verdict, (vs) => (f) => vs.includes(f.verdict ?? 'VERDICT_UNKNOWN'));
  add(filter.reply, (rs) => (f) => matchReply(rs, f));
  add(filter.source_identity, (ids) => (f) => f.source !== undefined && ids.includes(f.source.identity ?? 0));
  add(filter.destination_identity, (ids) => (f) => f.destination !== undefined && ids.includes(f.destination.identity ?? 0));
  add(filter.protocol, (ps) => protocolFilter(ps));
  add(filter.source_ip, (ips) => ipFilter(ips, (f) => f.IP?.source));
  add(filter.destination_ip, (ips) => ipFilter(ips, (f) => f.IP?.destination));
  add(filter.source_pod, (names) => namespacedNameFilter(names, (f) => endpointName(f.source)));
  add(filter.destination_pod, (names) => namespacedNameFilter(names, (f) => endpointName(f.destination)));
  add(filter.source_workload, (ws) => (f) => matchWorkload(ws, f.source));
  add(filter.destination_workload, (ws) => (f) => matchWorkload(ws, f.destination));
  add(filter.source_service, (names) => namespacedNameFilter(names, (f) => serviceName(f.source_service)));
  add(filter.destination_service, (names) => namespacedNameFilter(names, (f) => serviceName(f.destination_service)));
  add(filter.source_fqdn, (ps) => fqdnFilter(ps, (f) => f.source_names));
  add(filter.destination_fqdn, (ps) => fqdnFilter(ps, (f) => f.destination_names));
  add(filter.dns_query, (ps) => regexFilter(ps, 'DNS query', (f) => f.l7?.dns?.query));
  add(filter.source_label, (ss) => labelFilter(ss, (f) => f.source?.labels));
  add(filter.destination_label, (ss) => labelFilter(ss, (f) => f.destination?.labels));
  add(filter.source_port, (ps) => portFilter(ps, 'source_port'));
  add(filter.destination_port, (ps) => portFilter(ps, 'destination_port'));
  add(filter.http_status_code, (cs) => statusCodeFilter(cs));
  add(filter.http_method, (ms) => (f) => {
    const method = f.l7?.http?.method;
    return !!method && ms.some((m) => m.toLowerCase() === method.toLowerCase());
  });
  add(filter.http_path, (ps) => regexFilter(ps, 'HTTP path', (f) => httpPath(f.l7?.http?.url)));
  add(filter.tcp_flags, (fs) => (f) => matchTcpFlags(fs, f.l4?.TCP?.flags));
  add(filter.node_name, (ps) => nodeNameFilter(ps));
  add(filter.ip_version, (vs) => (f) => vs.includes(f.IP?.ipVersion ?? 'IP_NOT_USED'));
  add(filter.trace_id, (ids) => (f) => {
    const id = f.trace_context?.parent?.trace_id;
    return !!id && ids.includes(id);
  });
  add(filter.traffic_direction, (ds) => (f) => ds.includes(f.traffic_direction ?? 'TRAFFIC_DIRECTION_UNKNOWN'));

  return (flow) => parts.every((p) => p(flow));
}

// ---- Shape ----

type ValueKind = 'string' | 'boolean' | 'uint32' | 'eventType' | 'tcpFlags' | 'workload';

/** What each field's values must be. Filters come from gRPC, JSON and code: none of them is trusted. */
const FIELD_KINDS: Record<keyof FlowFilter, ValueKind> = {
  uuid: 'string',
  source_ip: 'string',
  source_pod: 'string',
  source_fqdn: 'string',
  source_label: 'string',
  source_service: 'string',
  source_workload: 'workload',
  destination_ip: 'string',
  destination_pod: 'string',
  destination_fqdn: 'string',
  destination_label: 'string',
  destination_service: 'string',
  destination_workload: 'workload',
  traffic_direction: 'string',
  verdict: 'string',
  event_type: 'eventType',
  http_status_code: 'string',
  protocol: 'string',
  source_port: 'string',
  destination_port: 'string',
  reply: 'boolean',
  dns_query: 'string',
  source_identity: 'uint32',
  destination_identity: 'uint32',
  http_method: 'string',
  http_path: 'string',
  tcp_flags: 'tcpFlags',
  node_name: 'string',
  ip_version: 'string',
  trace_id: 'string',
};

/** FlowFilter fields of Hubble's flow.proto that weft does not evaluate: refused when set, never ignored. */
const UNSUPPORTED_FIELDS = new Set([
  'http_url',
  'http_header',
  'drop_reason_desc',
  'source_ip_xlated',
  'interface',
  'node_labels',
  'source_cluster_name',
  'destination_cluster_name',
  'ip_trace_id',
  'encrypted',
  'experimental',
]);

function isPlainRecord(v: unknown): v is Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const proto: unknown = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/** An unset field as gRPC and JSON send it: absent, null, an empty list, an empty message. */
function isUnset(v: unknown): boolean {
  if (v === undefined || v === null) return true;
  if (Array.isArray(v)) return v.length === 0;
  if (isPlainRecord(v)) return Object.values(v).every(isUnset);
  return false;
}

function valueProblem(kind: ValueKind, v: unknown): string | undefined {
  switch (kind) {
    case 'string':
      return typeof v === 'string' ? undefined : 'must be a string';
    case 'boolean':
      return typeof v === 'boolean' ? undefined : 'must be a boolean';
    case 'uint32':
      return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 0xffffffff ? undefined : 'must be an integer in 0..4294967295';
    case 'eventType': {
      if (!isPlainRecord(v)) return 'must be an EventTypeFilter object';
      for (const [k, x] of Object.entries(v)) {
        if (k === 'type' || k === 'sub_type') {
          if (x !== undefined && x !== null && !(typeof x === 'number' && Number.isInteger(x) && Math.abs(x) <= 0x7fffffff)) return `${k} must be an int32`;
        } else if (k === 'match_sub_type') {
          if (x !== undefined && x !== null && typeof x !== 'boolean') return 'match_sub_type must be a boolean';
        } else return `unknown EventTypeFilter field ${quote(k)}`;
      }
      return undefined;
    }
    case 'tcpFlags': {
      if (!isPlainRecord(v)) return 'must be a TCPFlags object';
      for (const [k, x] of Object.entries(v)) {
        if (!(TCP_FLAG_NAMES as readonly string[]).includes(k)) return `unknown TCP flag ${quote(k)}`;
        if (x !== undefined && x !== null && typeof x !== 'boolean') return `${k} must be a boolean`;
      }
      return undefined;
    }
    case 'workload': {
      if (!isPlainRecord(v)) return 'must be a Workload object';
      for (const [k, x] of Object.entries(v)) {
        if (k !== 'name' && k !== 'kind') return `unknown Workload field ${quote(k)}`;
        if (x !== undefined && x !== null && typeof x !== 'string') return `${k} must be a string`;
      }
      return undefined;
    }
  }
}

/** Refuses a filter that is not a FlowFilter: not an object, an unknown or unsupported field set, values of the wrong type. */
function checkFilterShape(filter: unknown): asserts filter is FlowFilter {
  if (!isPlainRecord(filter)) throw new InvalidFilterError('a filter must be a FlowFilter object');
  for (const [field, values] of Object.entries(filter)) {
    if (!Object.hasOwn(FIELD_KINDS, field)) {
      if (isUnset(values)) continue;
      throw new InvalidFilterError(UNSUPPORTED_FIELDS.has(field) ? `${field}: not supported by weft` : `unknown FlowFilter field ${quote(field)}`);
    }
    if (values === undefined || values === null) continue;
    if (!Array.isArray(values)) throw new InvalidFilterError(`${field}: must be a list`);
    const kind = FIELD_KINDS[field as keyof FlowFilter];
    values.forEach((v: unknown, i) => {
      const why = valueProblem(kind, v);
      if (why) throw new InvalidFilterError(`${field}[${i}]: ${why}`);
    });
  }
}

// ---- Regular expressions ----

/**
 * Hubble compiles filter patterns with Go's RE2, which runs in time linear in the input. V8's
 * default engine backtracks: `(a+)+$` against a long path would stall the agent for minutes. V8's
 * linear-time engine (the `l` flag, behind a V8 flag Node does not turn on) has RE2's guarantee and
 * refuses what it cannot run in linear time, as RE2 has no backreferences or lookaround either.
 */
const LINEAR_ENGINE: boolean = (() => {
  try {
    new RegExp('', 'l');
    return true;
  } catch {
    /* not enabled yet */
  }
  try {
    setFlagsFromString('--enable-experimental-regexp-engine');
    new RegExp('', 'l');
    return true;
  } catch {
    return false;
  }
})();

/** Longest user regular expression (the linear engine's cost is pattern size times input length). */
export const MAX_PATTERN_LENGTH = 256;

/** A user's regular expression, compiled for linear-time matching, or refused saying why. */
function userRegExp(pattern: string, what: string): RegExp {
  if (pattern.length > MAX_PATTERN_LENGTH) throw new InvalidFilterError(`${what} ${quote(pattern)}: longer than ${MAX_PATTERN_LENGTH} characters`);
  if (!LINEAR_ENGINE) throw new InvalidFilterError(`${what} ${quote(pattern)}: regular expression filters need V8's linear-time engine, which this Node.js lacks`);
  try {
    return new RegExp(pattern, 'l');
  } catch (err) {
    const msg = (err as Error).message;
    if (/linear time/.test(msg))
      throw new InvalidFilterError(`${what} ${quote(pattern)}: not supported (backreferences, lookaround and counted repetitions above 16 cannot be matched in linear time)`);
    throw new InvalidFilterError(`${what} ${quote(pattern)}: ${msg.replace(/^Invalid regular expression: \/.*\/[a-z]*: /s, '')}`);
  }
}

/** A regular expression built by this module from globs (always linear-compatible). */
function builtRegExp(source: string): RegExp {
  return LINEAR_ENGINE ? new RegExp(source, 'l') : new RegExp(source);
}

// ---- Event type, reply ----

function matchEventType(types: EventTypeFilter[], flow: Flow): boolean {
  const event = flow.event_type;
  if (!event) return false;
  return types.some((t) => {
    if ((t.type ?? 0) !== 0 && t.type !== (event.type ?? 0)) return false;
    if (t.match_sub_type && (t.sub_type ?? 0) !== (event.sub_type ?? 0)) return false;
    return true;
  });
}

/** is_reply against the wanted values; a flow whose direction is unknown only matches `false` when dropped, as in Hubble. */
function matchReply(wanted: boolean[], flow: Flow): boolean {
  if (flow.is_reply === undefined && flow.verdict !== 'DROPPED') return false;
  return wanted.includes(flow.is_reply?.value ?? false);
}

// ---- Protocol, ports, TCP flags ----

const L4_PROTOCOLS = ['icmp', 'icmpv4', 'icmpv6', 'tcp', 'udp', 'sctp', 'vrrp', 'igmp'];
const L7_PROTOCOLS = ['dns', 'http', 'kafka'];

function protocolFilter(protocols: string[]): FlowPredicate {
  const wanted = protocols.map((p) => p.toLowerCase());
  for (const [i, p] of wanted.entries()) {
    if (!L4_PROTOCOLS.includes(p) && !L7_PROTOCOLS.includes(p)) throw new InvalidFilterError(`unknown protocol ${quote(protocols[i]!)}`);
  }
  return (flow) => {
    const l4 = flow.l4 as Record<string, unknown> | undefined;
    const l7 = flow.l7 as Record<string, unknown> | undefined;
    const has = (o: Record<string, unknown> | undefined, key: string): boolean => o !== undefined && o[key] != null;
    return wanted.some((p) => {
      switch (p) {
        case 'icmp':
          return has(l4, 'ICMPv4') || has(l4, 'ICMPv6');
        case 'icmpv4':
          return has(l4, 'ICMPv4');
        case 'icmpv6':
          return has(l4, 'ICMPv6');
        case 'dns':
        case 'http':
        case 'kafka':
          return has(l7, p);
        default:
          return has(l4, p.toUpperCase());
      }
    });
  };
}

function portFilter(ports: string[], side: 'source_port' | 'destination_port'): FlowPredicate {
  const wanted = ports.map((p) => {
    const n = parsePortDigits(p);
    if (n === undefined) throw new InvalidFilterError(`invalid port ${quote(p)}`);
    return n;
  });
  return (flow) => {
    const l4 = flow.l4;
    const carrier = l4?.TCP ?? l4?.UDP ?? l4?.SCTP;
    return carrier !== undefined && wanted.includes(carrier[side] ?? 0);
  };
}

const TCP_FLAG_NAMES = ['FIN', 'SYN', 'RST', 'PSH', 'ACK', 'URG', 'ECE', 'CWR', 'NS'] as const;

/** Each wanted set matches when the flow has all of its flags (others may be set too). */
function matchTcpFlags(wanted: TCPFlags[], flags: TCPFlags | undefined): boolean {
  if (!flags) return false;
  return wanted.some((w) => TCP_FLAG_NAMES.every((name) => !w[name] || flags[name] === true));
}

// ---- Addresses ----

/**
 * How the filters read addresses: a flow's address or a filter's prefix may carry an IPv6 zone,
 * which is dropped; IPv4-mapped IPv6 stays IPv6; a prefix is `address/length` (a bare address is an
 * exact match, below), and its length may have leading zeros.
 */
const FILTER_PREFIX = { zone: 'drop', bare: 'refuse', leadingZeros: true } as const;

/** Exact addresses (as written in the flow) or CIDR prefixes. */
function ipFilter(values: string[], get: (f: Flow) => string | undefined): FlowPredicate {
  const exact: string[] = [];
  const nets: IpNet[] = [];
  for (const v of values) {
    if (v.includes('/')) {
      const c = parseIpNet(v, FILTER_PREFIX);
      if (!c) throw new InvalidFilterError(`invalid IP prefix ${quote(v)}`);
      nets.push(c);
    } else {
      if (ipFamily(v) === 0) throw new InvalidFilterError(`invalid IP address ${quote(v)}`);
      exact.push(v);
    }
  }
  return (flow) => {
    const ip = get(flow);
    if (!ip) return false;
    if (exact.includes(ip)) return true;
    if (nets.length === 0) return false;
    const parsed = parseIp(ip, { zone: FILTER_PREFIX.zone });
    return parsed !== undefined && nets.some((c) => netContains(c, parsed));
  };
}

// ---- Pods, services, workloads ----

/** `ns/prefix`, `ns/` (whole namespace), or a bare `prefix` meaning the default namespace (Hubble's rule). */
export function parseNamespacedName(text: string): { namespace: string; prefix: string } {
  const parts = text.split('/');
  if (parts.length > 1) return { namespace: parts[0]!, prefix: parts[1]! };
  if (parts[0] === '') return { namespace: '', prefix: '' };
  return { namespace: 'default', prefix: parts[0]! };
}

function endpointName(ep: Endpoint | undefined): { namespace: string; name: string } {
  return { namespace: ep?.namespace ?? '', name: ep?.pod_name ?? '' };
}

function serviceName(svc: Service | undefined): { namespace: string; name: string } {
  return { namespace: svc?.namespace ?? '', name: svc?.name ?? '' };
}

function namespacedNameFilter(values: string[], get: (f: Flow) => { namespace: string; name: string }): FlowPredicate {
  const wanted = values.map((v) => {
    if (v === '') throw new InvalidFilterError('name must not be empty');
    return parseNamespacedName(v);
  });
  return (flow) => {
    const { namespace, name } = get(flow);
    if (namespace === '' && name === '') return false;
    return wanted.some((w) => (w.prefix === '' || name.startsWith(w.prefix)) && (w.namespace === '' || w.namespace === namespace));
  };
}

/** A wanted workload matches on name and kind, an empty one matching anything. */
function matchWorkload(wanted: Workload[], ep: Endpoint | undefined): boolean {
  return (ep?.workloads ?? []).some((w) => wanted.some((f) => (!f.name || f.name === w.name) && (!f.kind || f.kind === w.kind)));
}

// ---- Names: FQDN and node patterns ----

const FQDN_CHARS = '(?:[-0-9_a-z]+(?:\\.[-0-9_a-z]+)*)';

/** Hubble's FQDN glob: case-insensitive pattern, one trailing dot ignored, `*` = any run of [-.0-9a-z]. */
function fqdnPatternSource(pattern: string): string {
  const p = pattern.trim().replace(/\.$/, '').toLowerCase();
  if (p === '') throw new InvalidFilterError('empty pattern');
  // No name is longer than 253 characters, whatever the globs stand for.
  if (p.replaceAll('*', '').length > 253) throw new InvalidFilterError(`pattern ${quote(pattern)} is longer than a DNS name`);
  if (p.endsWith('.')) throw new InvalidFilterError(`multiple trailing dots in pattern ${quote(pattern)}`);
  let out = '';
  for (const ch of p) {
    if (ch === '.') out += '\\.';
    else if (ch === '*') out += '[-.0-9a-z]*';
    else if (/[-0-9_a-z]/.test(ch)) out += ch;
    else throw new InvalidFilterError(`invalid character ${quote(ch)} in pattern ${quote(pattern)}`);
  }
  return out;
}

function fqdnFilter(patterns: string[], get: (f: Flow) => string[] | undefined): FlowPredicate {
  const re = builtRegExp(`^(?:${patterns.map(fqdnPatternSource).join('|')})$`);
  return (flow) => (get(flow) ?? []).some((name) => re.test(name));
}

/** `node`, `cluster/node`, `cluster/` with `*` globs; node names without a cluster are in the default cluster. */
function nodeNameFilter(patterns: string[]): FlowPredicate {
  const sources = patterns.map((pattern) => {
    if (pattern === '') throw new InvalidFilterError('empty node name pattern');
    const parts = pattern.split('/');
    if (parts.length > 2) throw new InvalidFilterError(`too many slashes in node name pattern ${quote(pattern)}`);
    const [cluster, node] = parts.length === 2 ? [parts[0]!, parts[1]!] : ['', parts[0]!];
    return `${cluster === '' ? FQDN_CHARS : fqdnPatternSource(cluster)}/${node === '' ? FQDN_CHARS : fqdnPatternSource(node)}`;
  });
  const re = builtRegExp(`^(?:${sources.join('|')})$`);
  return (flow) => {
    const name = flow.node_name ?? '';
    if (name === '') return false;
    return re.test(name.includes('/') ? name : `${DEFAULT_CLUSTER_NAME}/${name}`);
  };
}

// ---- HTTP ----

function statusCodeFilter(codes: string[]): FlowPredicate {
  const full: string[] = [];
  const prefixes: string[] = [];
  for (const c of codes) {
    if (/^[1-5][0-9]{2}$/.test(c)) full.push(c);
    else if (/^[1-5][0-9]?\+$/.test(c)) prefixes.push(c.slice(0, -1));
    else throw new InvalidFilterError(`invalid status code prefix ${quote(c)}`);
  }
  return (flow) => {
    const code = flow.l7?.http?.code ?? 0;
    if (code === 0) return false;
    const text = String(code).padStart(3, '0');
    return full.includes(text) || prefixes.some((p) => text.startsWith(p));
  };
}

/** The path of a request URL (absolute or origin-form), or undefined when it is not one. */
function httpPath(url: string | undefined): string | undefined {
  if (!url) return undefined;
  if (url.startsWith('/')) return url.split(/[?#]/, 1)[0];
  try {
    return new URL(url).pathname;
  } catch {
    return undefined;
  }
}

function regexFilter(patterns: string[], what: string, get: (f: Flow) => string | undefined): FlowPredicate {
  const res = patterns.map((p) => userRegExp(p, what));
  return (flow) => {
    const value = get(flow);
    return value !== undefined && value !== '' && res.some((re) => re.test(value));
  };
}

// ---- Label selectors ----

interface Label {
  source: string;
  key: string;
  value: string;
}

/** `source:key=value` as in Cilium's label arrays; without a source the label is `unspec`. */
function parseLabel(text: string): Label {
  const eq = text.indexOf('=');
  const colon = text.indexOf(':');
  let source = 'unspec';
  let rest = text;
  if (colon >= 0 && (eq < 0 || colon < eq)) {
    source = text.slice(0, colon);
    rest = text.slice(colon + 1);
  }
  const e = rest.indexOf('=');
  return e < 0 ? { source, key: rest, value: '' } : { source, key: rest.slice(0, e), value: rest.slice(e + 1) };
}

type Operator = 'exists' | 'notexists' | '=' | '!=' | 'in' | 'notin' | '>' | '<';

interface Requirement {
  /** Required label source, or undefined for any source (a key written without `source:`). */
  source: string | undefined;
  key: string;
  op: Operator;
  values: string[];
}

/** Tokens of a Kubernetes label selector. */
function tokenize(selector: string): string[] {
  const tokens: string[] = [];
  let i = 0;
  while (i < selector.length) {
    const ch = selector[i]!;
    if (/\s/.test(ch)) {
      i++;
    } else if (selector.startsWith('==', i) || selector.startsWith('!=', i)) {
      tokens.push(selector.slice(i, i + 2));
      i += 2;
    } else if ('!=,()<>'.includes(ch)) {
      tokens.push(ch);
      i++;
    } else {
      let j = i;
      while (j < selector.length && !/[\s!=,()<>]/.test(selector[j]!)) j++;
      tokens.push(selector.slice(i, j));
      i = j;
    }
  }
  return tokens;
}

const SPECIAL_TOKENS = new Set(['!', '=', '==', '!=', ',', '(', ')', '<', '>']);

function splitKey(key: string): { source: string | undefined; key: string } {
  const colon = key.indexOf(':');
  if (colon < 0) return { source: undefined, key };
  const source = key.slice(0, colon);
  return { source: source === 'any' ? undefined : source, key: key.slice(colon + 1) };
}

/** Parses a Kubernetes label selector (`k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`, `k>n`, `k<n`; `,` = AND). */
export function parseLabelSelector(selector: string): Requirement[] {
  const tokens = tokenize(selector);
  const fail = (why: string): never => {
    throw new InvalidFilterError(`label selector ${quote(selector)}: ${why}`);
  };
  const reqs: Requirement[] = [];
  let i = 0;
  const identifier = (what: string): string => {
    const t = tokens[i];
    if (t === undefined || SPECIAL_TOKENS.has(t)) return fail(`expected ${what}${t ? `, found ${quote(t)}` : ''}`);
    i++;
    return t;
  };
  while (i < tokens.length) {
    let req: Requirement;
    if (tokens[i] === '!') {
      i++;
      req = { ...splitKey(identifier('a key')), op: 'notexists', values: [] };
    } else {
      const key = splitKey(identifier('a key'));
      const op = tokens[i];
      if (op === undefined || op === ',') {
        req = { ...key, op: 'exists', values: [] };
      } else if (op === '=' || op === '==' || op === '!=') {
        i++;
        const next = tokens[i];
        const value = next === undefined || SPECIAL_TOKENS.has(next) ? '' : identifier('a value');
        req = { ...key, op: op === '!=' ? '!=' : '=', values: [value] };
      } else if (op === '<' || op === '>') {
        i++;
        const value = identifier('a number');
        if (!/^-?\d+$/.test(value)) fail(`${quote(value)} is not an integer`);
        req = { ...key, op, values: [value] };
      } else if (op === 'in' || op === 'notin') {
        i++;
        if (tokens[i++] !== '(') fail(`expected ( after ${op}`);
        const values: string[] = [];
        while (tokens[i] !== ')') {
          if (tokens[i] === undefined) fail('missing )');
          if (tokens[i] === ',') {
            i++;
            continue;
          }
          values.push(identifier('a value'));
        }
        i++;
        req = { ...key, op, values };
      } else {
        return fail(`unexpected ${quote(op)}`);
      }
    }
    if (req.key === '') fail('empty key');
    reqs.push(req);
    if (i < tokens.length) {
      if (tokens[i] !== ',') fail(`expected , found ${quote(tokens[i])}`);
      i++;
      if (i >= tokens.length) fail('trailing ,');
    }
  }
  return reqs;
}

function matchRequirement(req: Requirement, labels: Label[]): boolean {
  const found = labels.find((l) => l.key === req.key && (req.source === undefined || l.source === req.source));
  switch (req.op) {
    case 'exists':
      return found !== undefined;
    case 'notexists':
      return found === undefined;
    case '=':
    case 'in':
      return found !== undefined && req.values.includes(found.value);
    case '!=':
    case 'notin':
      return found === undefined || !req.values.includes(found.value);
    case '>':
    case '<': {
      if (found === undefined || !/^-?\d+$/.test(found.value)) return false;
      const have = Number(found.value);
      const want = Number(req.values[0]);
      return req.op === '>' ? have > want : have < want;
    }
  }
}

function labelFilter(selectors: string[], get: (f: Flow) => string[] | undefined): FlowPredicate {
  const parsed = selectors.map(parseLabelSelector);
  return (flow) => {
    const labels = (get(flow) ?? []).map(parseLabel);
    return parsed.some((reqs) => reqs.every((r) => matchRequirement(r, labels)));
  };
}
