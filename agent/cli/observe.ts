// `weft observe`: hubble observe against weft's Observer API (the relay on localhost:4245 by default,
// or a node's on 4244). Flags, defaults and the request they make are hubble's: filter flags build
// a whitelist, `--not` sends the next one to the blacklist, the either-direction flags (--pod, --ip,
// --label, --port, -n, --service) make two filters (source OR destination), different flags AND,
// repeated flags OR; `--last 20` when nothing else selects the history.
import * as grpc from '@grpc/grpc-js';
import { Ports, RelayDefaults } from '../config.js';
import { ErrorCodes, WeftError, errorMessage } from '../errors.js';
import { flowResponseToJson } from '../flows/json.js';
import { loadTlsCredential, nodeObserverIdentity, trustDomainOfCert, type ObserverClientTls } from '../flows/observer-tls.js';
import { nsToTimestamp } from '../flows/query.js';
import type { EventTypeFilter, FlowFilter, GetFlowsRequest, GetFlowsResponse, TCPFlags, TrafficDirection, Verdict } from '../flows/types.js';
import { ObserverClient } from '../relay/index.js';
import { FlowPrinter, OUTPUT_FORMATS, type OutputFormat } from './observe-printer.js';

const USAGE = `usage: weft observe [flags]   (hubble observe's flags)
  --server HOST:PORT        the Observer API (default ${RelayDefaults.address}, the relay; a node serves on ${Ports.observer}:
                            plaintext on its 127.0.0.1, mutual TLS on its address)
  --tls                     mutual TLS to a node's Observer API, with:
    --tls-client-cert-file FILE, --tls-client-key-file FILE   a credential it allows (weft relay credentials)
    --tls-ca-cert-files FILE                                  the mesh root
    --tls-server-name NODE                                    the node (its spiffe://<td>/weft/node/NODE), or a SPIFFE ID
  -f, --follow              keep printing new flows
  --last N                  the last N flows (default 20 when neither --follow, --first, --since nor --until is given)
  --first N                 the first N flows
  --all                     every stored flow
  --since T, --until T      RFC 3339 time, or a duration ago (5m, 1h30m, 90s)
  -o, --output FORMAT       compact (default) | json | jsonpb | dict | table
  --color WHEN              auto (default: on a terminal, unless NO_COLOR) | always | never
  --print-node-name         print the node of each flow
filters (repeat a flag: any of the values; different flags: all of them; --not FLAG: exclude):
  --from-pod, --to-pod, --pod [NS/]NAME    --from-namespace, --to-namespace, -n/--namespace NS
  --from-ip, --to-ip, --ip IP|CIDR         --from-label, --to-label, -l/--label SELECTOR
  --from-port, --to-port, --port PORT      --from-service, --to-service, --service [NS/]NAME
  --verdict FORWARDED|DROPPED|AUDIT|REDIRECTED|ERROR|TRACED|TRANSLATED
  --protocol tcp|udp|http|...   --http-status CODE   --http-method M   --http-path REGEX
  -t, --type TYPE[:SUBTYPE]     --traffic-direction ingress|egress   --node-name NAME
  --tcp-flags syn,ack,...       --uuid ID   --not`;

/** Filter flags: name → how it changes the pair of filters (left = source side, right = destination side). */
interface FilterFlag {
  /** The field set in both filters. */
  field?: keyof FlowFilter;
  /** Either-direction flags: the source field in the left filter, the destination field in the right one. */
  pair?: [keyof FlowFilter, keyof FlowFilter];
  /** Namespace flags: applied to the pod/service filters when the filters are made. */
  ns?: 'ns' | 'srcNs' | 'dstNs';
  value?: (v: string) => unknown;
}

/** hubble's default for a plain `observe`: the last 20 flows. */
export const DEFAULT_LAST = 20;
const UINT64_MAX = '18446744073709551615';
const VERDICTS: readonly Verdict[] = ['FORWARDED', 'DROPPED', 'AUDIT', 'REDIRECTED', 'ERROR', 'TRACED', 'TRANSLATED'];
/** Cilium's monitor message types, by the names hubble accepts for -t. */
const MESSAGE_TYPES: Record<string, number> = { drop: 1, debug: 2, capture: 3, trace: 4, 'policy-verdict': 5, recorder: 6, 'trace-sock': 7, l7: 129, agent: 130 };
const TRACE_POINTS = ['to-endpoint', 'to-proxy', 'to-host', 'to-stack', 'to-overlay', 'from-endpoint', 'from-proxy', 'from-host', 'from-stack', 'from-overlay', 'from-network', 'to-network', 'from-crypto', 'to-crypto'];

function parseVerdict(v: string): Verdict {
  if (!(VERDICTS as readonly string[]).includes(v)) throw new WeftError(ErrorCodes.USAGE, `invalid --verdict value: ${v}`);
  return v as Verdict;
}

function parseType(v: string): EventTypeFilter {
  const [name, sub] = v.split(/:(.*)/s, 2) as [string, string | undefined];
  const type = MESSAGE_TYPES[name] ?? (/^\d+$/.test(name) ? Number(name) : undefined);
  if (type === undefined) throw new WeftError(ErrorCodes.USAGE, `unable to parse type '${name}', not a known type name (${Object.keys(MESSAGE_TYPES).join(', ')}) and not a number`);
  if (sub === undefined) return { type };
  const point = type === MESSAGE_TYPES.trace ? TRACE_POINTS.indexOf(sub) : -1;
  const subType = point >= 0 ? point : /^\d+$/.test(sub) ? Number(sub) : undefined;
  if (subType === undefined) throw new WeftError(ErrorCodes.USAGE, `unable to parse event sub-type '${sub}', not a known sub-type name and not a number`);
  return { type, match_sub_type: true, sub_type: subType };
}

function parseDirection(v: string): TrafficDirection {
  const d = v.toLowerCase();
  if (d === 'ingress') return 'INGRESS';
  if (d === 'egress') return 'EGRESS';
  throw new WeftError(ErrorCodes.USAGE, `${d}: invalid traffic direction, expected ingress or egress`);
}

function parseTcpFlags(v: string): TCPFlags {
  const flags: TCPFlags = {};
  for (const f of v.split(',')) {
    const k = f.toUpperCase();
    if (!['SYN', 'FIN', 'RST', 'PSH', 'ACK', 'URG', 'ECE', 'CWR', 'NS'].includes(k)) throw new WeftError(ErrorCodes.USAGE, `unknown tcp flag: ${f}`);
    flags[k as keyof TCPFlags] = true;
  }
  return flags;
}

const FILTER_FLAGS: Record<string, FilterFlag> = {
  'from-pod': { field: 'source_pod' },
  'to-pod': { field: 'destination_pod' },
  pod: { pair: ['source_pod', 'destination_pod'] },
  'from-namespace': { ns: 'srcNs' },
  'to-namespace': { ns: 'dstNs' },
  namespace: { ns: 'ns' },
  'from-ip': { field: 'source_ip' },
  'to-ip': { field: 'destination_ip' },
  ip: { pair: ['source_ip', 'destination_ip'] },
  'from-label': { field: 'source_label' },
  'to-label': { field: 'destination_label' },
  label: { pair: ['source_label', 'destination_label'] },
  'from-port': { field: 'source_port' },
  'to-port': { field: 'destination_port' },
  port: { pair: ['source_port', 'destination_port'] },
  'from-service': { field: 'source_service' },
  'to-service': { field: 'destination_service' },
  service: { pair: ['source_service', 'destination_service'] },
  verdict: { field: 'verdict', value: parseVerdict },
  protocol: { field: 'protocol' },
  'http-status': { field: 'http_status_code' },
  'http-method': { field: 'http_method' },
  'http-path': { field: 'http_path' },
  type: { field: 'event_type', value: parseType },
  'traffic-direction': { field: 'traffic_direction', value: parseDirection },
  'node-name': { field: 'node_name' },
  'tcp-flags': { field: 'tcp_flags', value: parseTcpFlags },
  uuid: { field: 'uuid' },
};
const SHORT: Record<string, string> = { '-h': 'help', '-n': 'namespace', '-l': 'label', '-t': 'type', '-f': 'follow', '-o': 'output' };

/** hubble's conflicting filter flags (within the whitelist, or within the blacklist). */
const CONFLICTS: string[][] = [
  ['from-ip', 'ip', 'from-namespace', 'namespace'],
  ['from-ip', 'ip', 'from-pod', 'pod'],
  ['to-ip', 'ip', 'to-namespace', 'namespace'],
  ['to-ip', 'ip', 'to-pod', 'pod'],
  ['to-pod', 'namespace'],
  ['from-pod', 'namespace'],
  ['to-service', 'namespace'],
  ['from-service', 'namespace'],
  ['label', 'from-label'],
  ['label', 'to-label'],
  ['service', 'from-service'],
  ['service', 'to-service'],
  ['port', 'to-port'],
  ['port', 'from-port'],
];

/** One side of hubble's filter tracking: the resulting filter list is `left OR right`. */
class FilterTracker {
  left: FlowFilter | undefined;
  right: FlowFilter | undefined;
  readonly ns: string[] = [];
  readonly srcNs: string[] = [];
  readonly dstNs: string[] = [];
  readonly changed = new Set<string>();

  set(name: string, raw: string): void {
    this.changed.add(name);
    for (const group of CONFLICTS) {
      if (!group.includes(name)) continue;
      const other = group.find((g) => g !== name && this.changed.has(g));
      if (other) throw new WeftError(ErrorCodes.USAGE, `filters --${name} and --${other} cannot be combined`);
    }
    const def = FILTER_FLAGS[name]!;
    const value = def.value ? def.value(raw) : raw;
    if (def.ns) {
      this[def.ns].push(raw);
      return;
    }
    const add = (f: FlowFilter, field: keyof FlowFilter): void => {
      ((f as Record<string, unknown[]>)[field] ??= []).push(value);
    };
    this.left ??= {};
    this.right ??= {};
    if (def.pair) {
      add(this.left, def.pair[0]);
      add(this.right, def.pair[1]);
    } else {
      add(this.left, def.field!);
      add(this.right, def.field!);
    }
  }

  filters(): FlowFilter[] {
    if (!this.left && !this.right && !this.ns.length && !this.srcNs.length && !this.dstNs.length) return [];
    const left = this.left ?? {};
    const right = this.right ?? {};
    if (this.dstNs.length) for (const f of [left, right]) applyNamespaces(f, 'destination', this.dstNs);
    if (this.srcNs.length) for (const f of [left, right]) applyNamespaces(f, 'source', this.srcNs);
    if (this.ns.length) {
      applyNamespaces(left, 'source', this.ns);
      applyNamespaces(right, 'destination', this.ns);
    }
    return canonical(left) === canonical(right) ? [left] : [left, right];
  }
}

/** hubble's namespace modifier: pod (and service) names get the namespace; no pod filter → `ns/` (every pod in it). */
function applyNamespaces(f: FlowFilter, side: 'source' | 'destination', namespaces: string[]): void {
  const podKey = side === 'source' ? 'source_pod' : 'destination_pod';
  const svcKey = side === 'source' ? 'source_service' : 'destination_service';
  if (!f[podKey]?.length && !f[svcKey]?.length) f[podKey] = [''];
  const qualify = (names: string[] | undefined): string[] | undefined =>
    names?.length ? names.flatMap((n) => (n.includes('/') ? [n] : namespaces.map((ns) => `${ns}/${n}`))) : names;
  const pods = qualify(f[podKey]);
  const svcs = qualify(f[svcKey]);
  if (pods) f[podKey] = pods;
  if (svcs) f[svcKey] = svcs;
}

function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v && typeof v === 'object') {
    return `{${Object.keys(v)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}

const GO_UNITS: Record<string, number> = { ns: 1e-6, us: 1e-3, µs: 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** hubble's --since/--until: RFC 3339 (or a date), or a Go duration meaning that long ago. */
export function parseTime(text: string, now = Date.now()): number {
  if (/^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$/.test(text)) {
    let ms = 0;
    for (const m of text.matchAll(/(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/g)) ms += Number(m[1]) * GO_UNITS[m[2]!]!;
    if (Number.isFinite(ms)) return now - ms;
  }
  if (/^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$/.test(text)) {
    const t = Date.parse(text.replace(' ', 'T'));
    if (Number.isFinite(t)) return t;
  }
  throw new WeftError(ErrorCodes.USAGE, `failed to parse the time "${text}": use RFC 3339 (2024-05-04T13:23:47Z) or a duration (5m, 1h30m)`);
}

export interface ObserveOptions {
  server: string;
  request: GetFlowsRequest;
  output: OutputFormat;
  color: 'auto' | 'always' | 'never';
  nodeName: boolean;
  help: boolean;
  /** Mutual TLS to a node's Observer API (--tls and its files). */
  tls?: { caFile: string; certFile: string; keyFile: string; serverName: string };
}

/** The command line → the GetFlows request and how to print it, exactly as hubble builds it. */
export function parseObserveArgs(argv: readonly string[], now = Date.now()): ObserveOptions {
  const whitelist = new FilterTracker();
  const blacklist = new FilterTracker();
  let blacklisting = false;
  const o = { server: RelayDefaults.address as string, output: 'compact' as OutputFormat, color: 'auto' as ObserveOptions['color'], nodeName: false, help: false };
  let follow = false;
  let last = 0;
  let first = 0;
  let all = false;
  let since: string | undefined;
  let until: string | undefined;
  let tls = false;
  const tlsFlags: Record<string, string> = {};

  const count = (flag: string, v: string): number => {
    if (!/^\d+$/.test(v) || !Number.isSafeInteger(Number(v))) throw new WeftError(ErrorCodes.USAGE, `${flag} needs a non-negative integer, got "${v}"`);
    return Number(v);
  };
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i]!;
    let inline: string | undefined;
    if (arg.startsWith('--') && arg.includes('=')) {
      inline = arg.slice(arg.indexOf('=') + 1);
      arg = arg.slice(0, arg.indexOf('='));
    }
    // Own entries only: `constructor` or `__proto__` must not find Object.prototype's.
    const name = arg.startsWith('--') ? arg.slice(2) : Object.hasOwn(SHORT, arg) ? SHORT[arg] : undefined;
    if (name === undefined) throw new WeftError(ErrorCodes.USAGE, `unknown argument "${arg}"\n${USAGE}`);
    const value = (): string => {
      if (inline !== undefined) return inline;
      const v = argv[++i];
      if (v === undefined) throw new WeftError(ErrorCodes.USAGE, `flag needs an argument: ${arg}`);
      return v;
    };
    if (name === 'not') {
      if (blacklisting) throw new WeftError(ErrorCodes.USAGE, 'consecutive --not statements');
      blacklisting = true;
      continue;
    }
    if (Object.hasOwn(FILTER_FLAGS, name)) {
      (blacklisting ? blacklist : whitelist).set(name, value());
      blacklisting = false;
      continue;
    }
    if (blacklisting) throw new WeftError(ErrorCodes.USAGE, `--not applies to filter flags, not to --${name}`);
    switch (name) {
      case 'server':
        o.server = value();
        break;
      case 'follow':
        follow = true;
        break;
      case 'last':
        last = count('--last', value());
        break;
      case 'first':
        first = count('--first', value());
        break;
      case 'all':
        all = true;
        break;
      case 'since':
        since = value();
        break;
      case 'until':
        until = value();
        break;
      case 'output': {
        const v = value();
        if (!(OUTPUT_FORMATS as readonly string[]).includes(v) && v !== 'tab' && v !== 'JSON') throw new WeftError(ErrorCodes.USAGE, `invalid output format: ${v}`);
        o.output = v === 'tab' ? 'table' : v === 'JSON' ? 'json' : (v as OutputFormat);
        break;
      }
      case 'color': {
        const v = value();
        if (v !== 'auto' && v !== 'always' && v !== 'never') throw new WeftError(ErrorCodes.USAGE, `--color: expected auto, always or never, got "${v}"`);
        o.color = v;
        break;
      }
      case 'tls':
        tls = true;
        break;
      case 'tls-ca-cert-files':
      case 'tls-client-cert-file':
      case 'tls-client-key-file':
      case 'tls-server-name':
        tlsFlags[name] = value();
        break;
      case 'print-node-name':
        o.nodeName = true;
        break;
      case 'help':
        o.help = true;
        break;
      default:
        throw new WeftError(ErrorCodes.USAGE, `unknown flag: --${name}\n${USAGE}`);
    }
  }
  if (blacklisting) throw new WeftError(ErrorCodes.USAGE, 'trailing --not found in the arguments');
  if (o.output === 'table' && follow) throw new WeftError(ErrorCodes.USAGE, 'table output format is not compatible with follow mode');
  if (first > 0 && last > 0) throw new WeftError(ErrorCodes.USAGE, 'cannot set both --first and --last');
  if (first > 0 && all) throw new WeftError(ErrorCodes.USAGE, 'cannot set both --first and --all');
  if (first > 0 && follow) throw new WeftError(ErrorCodes.USAGE, 'cannot set both --first and --follow');
  if (last > 0 && all) throw new WeftError(ErrorCodes.USAGE, 'cannot set both --last and --all');

  const request: GetFlowsRequest = { follow };
  if (since !== undefined) request.since = nsToTimestamp(BigInt(Math.round(parseTime(since, now))) * 1_000_000n);
  // As hubble: --until only without --follow.
  if (until !== undefined && !follow) request.until = nsToTimestamp(BigInt(Math.round(parseTime(until, now))) * 1_000_000n);
  const number = first > 0 ? first : last > 0 ? last : !request.since && !request.until && !follow ? DEFAULT_LAST : 0;
  if (all && !request.since && !request.until) request.number = UINT64_MAX; // --all: hubble's last = max uint64
  else if (number > 0) request.number = number;
  if (first > 0) request.first = true;
  const wl = whitelist.filters();
  const bl = blacklist.filters();
  if (wl.length) request.whitelist = wl;
  if (bl.length) request.blacklist = bl;
  if (!tls && Object.keys(tlsFlags).length) throw new WeftError(ErrorCodes.USAGE, `--${Object.keys(tlsFlags)[0]} needs --tls`);
  if (tls) {
    const missing = ['tls-ca-cert-files', 'tls-client-cert-file', 'tls-client-key-file', 'tls-server-name'].filter((f) => !tlsFlags[f]);
    if (missing.length) throw new WeftError(ErrorCodes.USAGE, `--tls needs ${missing.map((f) => `--${f}`).join(', ')} (a node's Observer API takes only client certificates it allows)`);
    return {
      ...o,
      request,
      tls: { caFile: tlsFlags['tls-ca-cert-files']!, certFile: tlsFlags['tls-client-cert-file']!, keyFile: tlsFlags['tls-client-key-file']!, serverName: tlsFlags['tls-server-name']! },
    };
  }
  return { ...o, request };
}

export interface ObserveIO {
  out: (s: string) => void;
  err: (s: string) => void;
  isTTY: boolean;
  env: NodeJS.ProcessEnv;
  /** Aborting ends a follow (SIGINT in the CLI). */
  signal?: AbortSignal;
}

function colorWanted(when: ObserveOptions['color'], io: ObserveIO): boolean {
  if (when !== 'auto') return when === 'always';
  return io.isTTY && io.env.NO_COLOR === undefined && io.env.TERM !== 'dumb';
}

/** The credential and the server identity for --tls: a node name means that node's identity in our trust domain. */
function observeTls(t: NonNullable<ObserveOptions['tls']>): ObserverClientTls {
  const cred = loadTlsCredential({ rootFile: t.caFile, certFile: t.certFile, keyFile: t.keyFile });
  const serverIdentity = t.serverName.startsWith('spiffe://') ? t.serverName : nodeObserverIdentity(trustDomainOfCert(cred.certPem), t.serverName);
  return { ...cred, serverIdentity };
}

/** Streams the flows and prints them; resolves with the exit code (errors are printed, not thrown). */
export async function observe(o: ObserveOptions, io: ObserveIO): Promise<number> {
  let clientTls: ObserverClientTls | undefined;
  try {
    clientTls = o.tls ? observeTls(o.tls) : undefined;
  } catch (err) {
    io.err(`weft observe: ${errorMessage(err)}\n`);
    return 1;
  }
  const printer = new FlowPrinter({ output: o.output, color: colorWanted(o.color, io), nodeName: o.nodeName, toJson: flowResponseToJson, out: io.out, err: io.err });
  const client = new ObserverClient(o.server, clientTls);
  const call = client.getFlows(o.request);
  let aborted = false;
  const abort = (): void => {
    aborted = true;
    call.cancel();
  };
  io.signal?.addEventListener('abort', abort, { once: true });
  try {
    return await new Promise<number>((resolve) => {
      call.on('data', (r: GetFlowsResponse) => printer.write(r));
      call.on('end', () => resolve(0));
      call.on('error', (err: grpc.ServiceError) => {
        if (aborted && err.code === grpc.status.CANCELLED) return resolve(0);
        const what = err.code === grpc.status.UNAVAILABLE ? `cannot reach the Observer API at ${o.server} (is the relay running? weft lab up starts one; --server HOST:PORT picks another)` : `the Observer API at ${o.server} answered`;
        const details = (err.details || err.message).replace(/\s*Resolution note:\s*$/, '');
        io.err(`weft observe: ${what}: ${details}\n`);
        resolve(1);
      });
    });
  } finally {
    io.signal?.removeEventListener('abort', abort);
    printer.close();
    client.close();
  }
}

export async function observeCommand(argv: string[]): Promise<number> {
  let o: ObserveOptions;
  try {
    o = parseObserveArgs(argv);
  } catch (err) {
    process.stderr.write(`weft observe: ${errorMessage(err)}\n`);
    return 2;
  }
  if (o.help) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  const controller = new AbortController();
  const stop = (): void => controller.abort();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    return await observe(o, {
      out: (s) => void process.stdout.write(s),
      err: (s) => void process.stderr.write(s),
      isTTY: process.stdout.isTTY === true,
      env: process.env,
      signal: controller.signal,
    });
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
}
