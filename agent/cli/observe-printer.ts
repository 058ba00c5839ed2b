// How `weft observe` prints GetFlowsResponses: Hubble's compact, dict and table layouts (hubble's
// printer package: same columns, same time layout, same arrows and colours), and one JSON object per
// line for json/jsonpb. Node status and lost events are printed the way hubble prints them.
import { isIPv6 } from 'node:net';
import type { Flow, GetFlowsResponse, NodeStatusEvent, Timestamp } from '../flows/types.js';

export type OutputFormat = 'compact' | 'json' | 'jsonpb' | 'dict' | 'table';
export const OUTPUT_FORMATS: readonly OutputFormat[] = ['compact', 'json', 'jsonpb', 'dict', 'table'];

export interface PrinterOptions {
  output: OutputFormat;
  /** ANSI colours (compact and dict only, as hubble). */
  color: boolean;
  /** Print the node name of each flow (hubble's --print-node-name). */
  nodeName?: boolean;
  /** Print informational node status events too (hubble prints only errors and unavailable nodes). */
  debug?: boolean;
  /** The JSON form of a response (Hubble's protojson), for json/jsonpb. */
  toJson: (resp: GetFlowsResponse) => unknown;
  out: (text: string) => void;
  err: (text: string) => void;
}

// ---------------------------------------------------------------------------------------------
// colours (fatih/color's sequences, as hubble uses them)

const SGR = { red: 31, green: 32, yellow: 33, blue: 34, magenta: 35, cyan: 36 } as const;

class Colorer {
  constructor(private readonly enabled: boolean) {}
  private paint(code: number, s: string): string {
    return this.enabled ? `\x1b[${code}m${s}\x1b[0m` : s;
  }
  host = (s: string): string => this.paint(SGR.cyan, s);
  port = (s: string): string => this.paint(SGR.yellow, s);
  forwarded = (s: string): string => this.paint(SGR.green, s);
  dropped = (s: string): string => this.paint(SGR.red, s);
  audit = (s: string): string => this.paint(SGR.yellow, s);
  authEnabled = (s: string): string => this.paint(SGR.green, s);
  authFailed = (s: string): string => this.paint(SGR.red, s);
}

// ---------------------------------------------------------------------------------------------
// the parts of a flow line

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

export function timestampMs(ts: Timestamp | undefined): number | undefined {
  if (!ts) return undefined;
  const seconds = Number(ts.seconds);
  if (!Number.isFinite(seconds)) return undefined;
  return seconds * 1000 + Math.floor((ts.nanos ?? 0) / 1_000_000);
}

/** Go's time.StampMilli ("Jan _2 15:04:05.000") in UTC, as hubble prints a protobuf Timestamp. */
export function formatTime(ts: Timestamp | undefined): string {
  const ms = timestampMs(ts);
  if (ms === undefined || (Number(ts!.seconds) === 0 && ts!.nanos === 0)) return 'N/A';
  const d = new Date(ms);
  const p2 = (n: number): string => String(n).padStart(2, '0');
  return `${MONTHS[d.getUTCMonth()]} ${String(d.getUTCDate()).padStart(2, ' ')} ${p2(d.getUTCHours())}:${p2(d.getUTCMinutes())}:${p2(d.getUTCSeconds())}.${String(d.getUTCMilliseconds()).padStart(3, '0')}`;
}

function ports(f: Flow): [string, string] {
  const l4 = f.l4?.TCP ?? f.l4?.UDP;
  return l4 ? [String(l4.source_port), String(l4.destination_port)] : ['', ''];
}

function joinPath(ns: string, name: string): string {
  return ns ? `${ns}/${name}` : name;
}

function hostname(c: Colorer, ip: string, port: string, ns: string, pod: string, svc: string, names: readonly string[]): string {
  let host = ip;
  if (pod) host = joinPath(ns, pod);
  else if (svc) host = joinPath(ns, svc);
  else if (names.length) host = names.join(',');
  if (port === '' || port === '0') return host;
  return `${isIPv6(host) ? `[${host}]` : host}:${c.port(port)}`;
}

/** Source and destination as hubble names them: `ns/pod:port`, `ns/service:port`, names, or the IP. */
export function hostNames(f: Flow, color = false): [string, string] {
  const c = new Colorer(color);
  if (!f.IP) return ['', ''];
  const [sp, dp] = ports(f);
  const srcNs = f.source_service?.namespace ?? f.source?.namespace ?? '';
  const dstNs = f.destination_service?.namespace ?? f.destination?.namespace ?? '';
  const src = hostname(c, f.IP.source, sp, srcNs, f.source?.pod_name ?? '', f.source_service?.name ?? '', f.source_names ?? []);
  const dst = hostname(c, f.IP.destination, dp, dstNs, f.destination?.pod_name ?? '', f.destination_service?.name ?? '', f.destination_names ?? []);
  return [c.host(src), c.host(dst)];
}

/** Cilium's texts for the drop reasons weft emits (by DropReason name, then by number). */
const DROP_TEXT_BY_NAME: Record<string, string> = {
  POLICY_DENIED: 'Policy denied',
  AUTH_REQUIRED: 'Authentication required',
  UNSUPPORTED_L3_PROTOCOL: 'Unsupported L3 protocol',
  NO_SOCKET: 'No socket',
  DROP_HOST_NOT_READY: 'Host datapath not ready',
  DROP_EP_NOT_READY: 'Endpoint policy program not available',
};
const DROP_TEXT_BY_CODE: Record<number, string> = { 133: 'Policy denied', 139: 'Unsupported L3 protocol', 189: 'Authentication required', 202: 'Host datapath not ready', 203: 'Endpoint policy program not available' };
const TRACE_POINTS = ['to-endpoint', 'to-proxy', 'to-host', 'to-stack', 'to-overlay', 'from-endpoint', 'from-proxy', 'from-host', 'from-stack', 'from-overlay', 'from-network', 'to-network', 'from-crypto', 'to-crypto'];
const POLICY_MATCH = ['none', 'L3-Only', 'L3-L4', 'L4-Only', 'all'];
const MESSAGE_TYPE = { DROP: 1, TRACE: 4, POLICY_VERDICT: 5, TRACE_SOCK: 7 } as const;

/** hubble's TYPE column: `http-request`, a drop reason, a trace observation point, `policy-verdict:…`. */
export function flowType(f: Flow): string {
  if (f.l7) {
    const proto = f.l7.http ? 'http' : 'l7';
    return `${proto}-${f.l7.type.toLowerCase()}`;
  }
  if (f.verdict === 'DROPPED' && f.drop_reason_desc && DROP_TEXT_BY_NAME[f.drop_reason_desc]) return DROP_TEXT_BY_NAME[f.drop_reason_desc]!;
  const type = f.event_type?.type;
  const sub = f.event_type?.sub_type ?? 0;
  switch (type) {
    case MESSAGE_TYPE.TRACE:
      return TRACE_POINTS[sub] ?? String(sub);
    case MESSAGE_TYPE.DROP:
      return (f.drop_reason_desc && DROP_TEXT_BY_NAME[f.drop_reason_desc]) ?? DROP_TEXT_BY_CODE[sub] ?? String(sub);
    case MESSAGE_TYPE.POLICY_VERDICT: {
      const match = f.policy_match_type ?? 0;
      return `policy-verdict:${POLICY_MATCH[match] ?? 'unknown'} ${f.traffic_direction}`;
    }
    case MESSAGE_TYPE.TRACE_SOCK:
      return 'trace-sock';
    default:
      return 'UNKNOWN';
  }
}

function verdictText(f: Flow, c: Colorer): string {
  const policyVerdict = f.event_type?.type === MESSAGE_TYPE.POLICY_VERDICT;
  switch (f.verdict) {
    case 'FORWARDED':
    case 'REDIRECTED':
      return c.forwarded(policyVerdict ? 'ALLOWED' : f.verdict);
    case 'DROPPED':
    case 'ERROR':
      return c.dropped(policyVerdict ? 'DENIED' : f.verdict);
    case 'AUDIT':
      return c.audit(policyVerdict ? 'AUDITED' : f.verdict);
    case 'TRACED':
    case 'TRANSLATED':
      return c.audit(f.verdict);
    default:
      return f.verdict;
  }
}

const TCP_FLAG_ORDER = ['SYN', 'FIN', 'RST', 'PSH', 'ACK', 'URG', 'ECE', 'CWR', 'NS'] as const;

/** The summary hubble's parsers write into `Summary`, for flows that come without one. */
function derivedSummary(f: Flow): string {
  const http = f.l7?.http;
  if (http) {
    const request = `${http.method} ${http.url}`;
    if (f.l7!.type === 'RESPONSE') return `${http.protocol} ${http.code} ${Math.floor(Number(f.l7!.latency_ns) / 1e6)}ms (${request})`;
    return `${http.protocol} ${request}`;
  }
  if (f.l4?.TCP) {
    const flags = f.l4.TCP.flags ? TCP_FLAG_ORDER.filter((k) => f.l4!.TCP!.flags![k]) : [];
    return flags.length ? `TCP Flags: ${flags.join(', ')}` : 'TCP';
  }
  if (f.l4?.UDP) return 'UDP';
  return '';
}

function summaryText(f: Flow, c: Colorer): string {
  let s = f.Summary || derivedSummary(f);
  const auth = f.auth_type;
  if (auth && auth !== 'DISABLED') s += `; ${auth === 'TEST_ALWAYS_FAIL' ? c.authFailed(auth) : c.authEnabled(auth)}`;
  return s;
}

// ---------------------------------------------------------------------------------------------
// table output (Go's text/tabwriter with hubble's settings: minwidth 2, padding 3, spaces)

export function tabulate(rows: readonly string[][]): string {
  const cols = Math.max(0, ...rows.map((r) => r.length - 1));
  const widths: number[] = [];
  for (let c = 0; c < cols; c++) widths.push(Math.max(2, ...rows.map((r) => (c < r.length - 1 ? r[c]!.length + 3 : 0))));
  return rows.map((r) => r.map((cell, c) => (c < r.length - 1 ? cell.padEnd(widths[c]!) : cell)).join('') + '\n').join('');
}

// ---------------------------------------------------------------------------------------------

function joinWithCutOff(names: readonly string[], sep: string, target: number): string {
  let len = 0;
  let end = names.length;
  for (let i = 0; i < names.length; i++) {
    len += names[i]!.length + sep.length;
    if (len > target && i > 0) {
      end = i;
      break;
    }
  }
  const joined = names.slice(0, end).join(sep);
  return end === names.length ? joined : `${joined} (and ${names.length - end} more)`;
}

export class FlowPrinter {
  private line = 0;
  private readonly rows: string[][] = [];
  private readonly colored: boolean;
  private readonly c: Colorer;

  constructor(private readonly o: PrinterOptions) {
    // hubble's tabwriter output has no colours.
    this.colored = o.color && (o.output === 'compact' || o.output === 'dict');
    this.c = new Colorer(this.colored);
  }

  write(resp: GetFlowsResponse): void {
    if (resp.flow) this.flow(resp);
    else if (resp.node_status) this.nodeStatus(resp, resp.node_status);
    else if (resp.lost_events) this.lost(resp);
  }

  /** Flushes the table (table output is aligned over all rows, so it is printed at the end). */
  close(): void {
    if (this.o.output === 'table' && this.rows.length) this.o.out(tabulate(this.rows));
    this.rows.length = 0;
  }

  private header(): string[] {
    return ['TIMESTAMP', ...(this.o.nodeName ? ['NODE'] : []), 'SOURCE', 'DESTINATION', 'TYPE', 'VERDICT', 'SUMMARY'];
  }

  private flow(resp: GetFlowsResponse): void {
    const f = resp.flow!;
    const c = this.c;
    const time = formatTime(f.time);
    let [src, dst] = hostNames(f, this.colored);
    switch (this.o.output) {
      case 'json':
      case 'jsonpb':
        this.o.out(JSON.stringify(this.o.toJson(resp)) + '\n');
        return;
      case 'table':
        if (this.line === 0) this.rows.push(this.header());
        this.rows.push([time, ...(this.o.nodeName ? [f.node_name] : []), src, dst, flowType(f), verdictText(f, c), summaryText(f, c)]);
        break;
      case 'dict': {
        let t = this.line !== 0 ? '------------\n' : '';
        t += `  TIMESTAMP: ${time}\n`;
        if (this.o.nodeName) t += `       NODE: ${f.node_name}\n`;
        t += `     SOURCE: ${src}\nDESTINATION: ${dst}\n       TYPE: ${flowType(f)}\n    VERDICT: ${verdictText(f, c)}\n    SUMMARY: ${summaryText(f, c)}\n`;
        this.o.out(t);
        break;
      }
      case 'compact': {
        let arrow = '->';
        if (!f.is_reply) arrow = '<>';
        else if (f.is_reply.value) {
          [src, dst] = [dst, src];
          arrow = '<-';
        }
        const node = this.o.nodeName ? ` [${f.node_name}]` : '';
        this.o.out(`${time}${node}: ${src} ${arrow} ${dst} ${flowType(f)} ${verdictText(f, c)} (${summaryText(f, c)})\n`);
        break;
      }
    }
    this.line++;
  }

  private lost(resp: GetFlowsResponse): void {
    const l = resp.lost_events!;
    const cpu = l.cpu?.value ?? 0;
    const n = String(l.num_events_lost);
    switch (this.o.output) {
      case 'json':
      case 'jsonpb':
        this.o.out(JSON.stringify(this.o.toJson(resp)) + '\n');
        return;
      case 'table':
        if (this.line === 0) this.rows.push(this.header());
        this.rows.push(['', ...(this.o.nodeName ? [''] : []), l.source, '', 'EVENTS LOST', '', `CPU(${cpu}) - ${n}`]);
        break;
      case 'dict': {
        let t = this.line !== 0 ? '------------\n' : '';
        t += '  TIMESTAMP: \n';
        if (this.o.nodeName) t += '       NODE: \n';
        t += `     SOURCE: ${l.source}\n       TYPE: EVENTS LOST\n    VERDICT: \n    SUMMARY: CPU(${cpu}) - ${n}\n`;
        this.o.out(t);
        break;
      }
      case 'compact':
        this.o.out(`EVENTS LOST: ${l.source} CPU(${cpu}) ${n}\n`);
        break;
    }
    this.line++;
  }

  /** Node status goes to stderr, as hubble prints it; informational states only with debug. */
  private nodeStatus(resp: GetFlowsResponse, s: NodeStatusEvent): void {
    const state = s.state_change ?? 'UNKNOWN_NODE_STATE';
    if (!this.o.debug && state !== 'NODE_ERROR' && state !== 'NODE_UNAVAILABLE') return;
    const names = s.node_names ?? [];
    const list = joinWithCutOff(names, ', ', 50);
    switch (this.o.output) {
      case 'json':
      case 'jsonpb':
        this.o.err(JSON.stringify(this.o.toJson(resp)) + '\n');
        return;
      case 'dict': {
        const t = this.line !== 0 ? '------------\n' : '';
        if (this.line === 0) this.line++;
        this.o.err(`${t}  TIMESTAMP: ${formatTime(resp.time)}\n      STATE: ${state}\n      NODES: ${list}\n    MESSAGE: ${s.message ? JSON.stringify(s.message) : 'N/A'}\n`);
        return;
      }
      default: {
        const prefix = `${formatTime(resp.time)} [${resp.node_name}]`;
        let msg = `${prefix}: unknown node status event: ${JSON.stringify(s)}`;
        if (state === 'NODE_CONNECTED') msg = `${prefix}: Receiving flows from ${names.length} nodes: ${list}`;
        else if (state === 'NODE_UNAVAILABLE') msg = `${prefix}: ${names.length} nodes are unavailable: ${list}`;
        else if (state === 'NODE_GONE') msg = `${prefix}: ${names.length} nodes removed from cluster: ${list}`;
        else if (state === 'NODE_ERROR') msg = `${prefix}: Error ${JSON.stringify(s.message ?? '')} on ${names.length} nodes: ${list}`;
        this.o.err(msg + '\n');
      }
    }
  }
}
