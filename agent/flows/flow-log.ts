// The persistent flow log: every flow that passes its filter, as one line of Hubble JSON (what
// `hubble observe -o json` prints), appended to a file rotated by size: path → path.1 → … →
// path.<maxFiles>, the oldest dropped. Writing never stalls the agent: lines go to a buffered
// stream, and when the file cannot keep up and the buffer passes its bound, new lines are dropped
// and counted (`dropped`, the `onDrop` hook, weft_flow_log_dropped_total), never silently lost.
import { createWriteStream, renameSync, rmSync, type WriteStream, openSync, fstatSync } from 'node:fs';
import { once } from 'node:events';
import { ErrorCodes, WeftError, errorMessage } from '../errors.js';
import { compileFilters } from './filter.js';
import { flowResponseToJson } from './json.js';
import type { Flow, FlowFilter, GetFlowsResponse } from './types.js';

export const DEFAULT_FLOW_LOG_MAX_BYTES = 100 * 1024 * 1024;
export const DEFAULT_FLOW_LOG_MAX_FILES = 5;
/** Bytes waiting for the disk beyond which new lines are dropped. */
export const DEFAULT_FLOW_LOG_MAX_BUFFERED_BYTES = 8 * 1024 * 1024;
/** After a write error, the file is reopened on a later write, at most this often. */
const REOPEN_INTERVAL_MS = 1000;

export interface FlowLogFilter {
  whitelist?: FlowFilter[];
  blacklist?: FlowFilter[];
}

export interface FlowLogOptions extends FlowLogFilter {
  path: string;
  /** Rotate before a line would take the file past this size. */
  maxBytes?: number;
  /** Rotated files kept besides the live one (path.1 … path.maxFiles); 0 keeps none. */
  maxFiles?: number;
  /** Bound of the write buffer; lines arriving while it is exceeded are dropped. */
  maxBufferedBytes?: number;
  /** Called with the number of lines dropped (buffer full or file unwritable). */
  onDrop?: (n: number) => void;
  /** Called once per write error (the log keeps trying to reopen the file). */
  onError?: (err: Error) => void;
}

export class FlowLog {
  readonly path: string;
  readonly maxBytes: number;
  readonly maxFiles: number;
  readonly maxBufferedBytes: number;
  /** Lines written (handed to the stream), dropped, and files rotated since the log was opened. */
  written = 0;
  dropped = 0;
  rotations = 0;
  onDrop: ((n: number) => void) | undefined;
  private readonly onError: ((err: Error) => void) | undefined;
  private readonly matches: (flow: Flow) => boolean;
  private stream: WriteStream | undefined;
  /** Bytes in the live file, counting those still buffered. */
  private size = 0;
  /** Streams of rotated files still flushing their buffers. */
  private readonly draining = new Set<WriteStream>();
  private failedAt = 0;
  private closed = false;

  constructor(options: FlowLogOptions) {
    this.path = options.path;
    this.maxBytes = options.maxBytes ?? DEFAULT_FLOW_LOG_MAX_BYTES;
    this.maxFiles = options.maxFiles ?? DEFAULT_FLOW_LOG_MAX_FILES;
    this.maxBufferedBytes = options.maxBufferedBytes ?? DEFAULT_FLOW_LOG_MAX_BUFFERED_BYTES;
    if (!Number.isInteger(this.maxBytes) || this.maxBytes < 1) throw new RangeError(`flow log maxBytes must be a positive integer, got ${this.maxBytes}`);
    if (!Number.isInteger(this.maxFiles) || this.maxFiles < 0) throw new RangeError(`flow log maxFiles must be a non-negative integer, got ${this.maxFiles}`);
    if (!Number.isInteger(this.maxBufferedBytes) || this.maxBufferedBytes < 1) throw new RangeError(`flow log maxBufferedBytes must be a positive integer, got ${this.maxBufferedBytes}`);
    this.onDrop = options.onDrop;
    this.onError = options.onError;
    this.matches = compileFilters(options.whitelist ?? [], options.blacklist ?? []);
    this.open();
  }

  /**
   * Appends the response as one JSON line if its flow passes the filter (responses without a flow,
   * such as lost-events reports, are always written). Never throws, never waits.
   */
  write(resp: GetFlowsResponse): void {
    if (this.closed || (resp.flow && !this.matches(resp.flow))) return;
    if (!this.stream && !this.reopen()) return this.drop();
    const line = JSON.stringify(flowResponseToJson(resp)) + '\n';
    const bytes = Buffer.byteLength(line);
    if (this.buffered() + bytes > this.maxBufferedBytes) return this.drop();
    if (this.size > 0 && this.size + bytes > this.maxBytes) this.rotate();
    if (!this.stream) return this.drop();
    this.stream.write(line);
    this.size += bytes;
    this.written++;
  }

  /** Bytes handed to streams and not yet on disk. */
  buffered(): number {
    let n = this.stream?.writableLength ?? 0;
    for (const s of this.draining) n += s.writableLength;
    return n;
  }

  /** Flushes everything written so far and closes the file. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const streams = [...this.draining];
    if (this.stream) streams.push(this.stream);
    this.stream = undefined;
    await Promise.all(streams.map((s) => finish(s)));
  }

  private drop(): void {
    this.dropped++;
    this.onDrop?.(1);
  }

  private open(): void {
    // The descriptor is opened here, synchronously: a stream that opened its file later could open
    // the *next* file if a rotation renamed the path in between, and its lines would land there.
    let fd: number;
    try {
      fd = openSync(this.path, 'a');
    } catch (err) {
      this.stream = undefined;
      this.failedAt = Date.now();
      this.onError?.(new WeftError(ErrorCodes.USAGE, `flow log ${this.path}: ${errorMessage(err)}`, { cause: err }));
      return;
    }
    this.size = fstatSync(fd).size;
    const stream = createWriteStream(this.path, { fd });
    stream.on('error', (err) => this.failed(stream, err));
    this.stream = stream;
  }

  private failed(stream: WriteStream, err: Error): void {
    this.draining.delete(stream);
    if (this.stream !== stream) return;
    this.stream = undefined;
    this.failedAt = Date.now();
    this.onError?.(new WeftError(ErrorCodes.USAGE, `flow log ${this.path}: ${errorMessage(err)}`, { cause: err }));
  }

  private reopen(): boolean {
    if (Date.now() - this.failedAt < REOPEN_INTERVAL_MS) return false;
    this.open();
    return true;
  }

  /**
   * Renames path.(k) → path.(k+1) from the oldest down, then path → path.1, and opens a fresh path.
   * The old stream keeps its file descriptor, so its buffered lines land in path.1.
   */
  private rotate(): void {
    const old = this.stream;
    try {
      if (this.maxFiles === 0) {
        rmSync(this.path, { force: true });
      } else {
        rmSync(`${this.path}.${this.maxFiles}`, { force: true });
        for (let k = this.maxFiles - 1; k >= 1; k--) renameIfExists(`${this.path}.${k}`, `${this.path}.${k + 1}`);
        renameIfExists(this.path, `${this.path}.1`);
      }
    } catch (err) {
      if (old) this.failed(old, err as Error);
      return;
    }
    if (old) {
      this.draining.add(old);
      old.end(() => this.draining.delete(old));
    }
    this.rotations++;
    this.open();
    this.size = 0;
  }
}

function renameIfExists(from: string, to: string): void {
  try {
    renameSync(from, to);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

async function finish(stream: WriteStream): Promise<void> {
  if (stream.closed || stream.destroyed) return;
  const done = once(stream, 'close').then(() => undefined, () => undefined);
  stream.end();
  await done;
}

const FILTER_KEYS = ['whitelist', 'blacklist'] as const;

type FieldCheck = (v: unknown) => string | undefined;
const isString: FieldCheck = (v) => (typeof v === 'string' ? undefined : 'expected a string');
const isInteger: FieldCheck = (v) => (Number.isInteger(v) ? undefined : 'expected an integer');
const isBoolean: FieldCheck = (v) => (typeof v === 'boolean' ? undefined : 'expected true or false');
const oneOf =
  (...names: string[]): FieldCheck =>
  (v) =>
    typeof v === 'string' && names.includes(v) ? undefined : `expected one of ${names.join(', ')}`;
const objectOf =
  (fields: Record<string, FieldCheck>, required: string[] = []): FieldCheck =>
  (v) => {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) return 'expected an object';
    const o = v as Record<string, unknown>;
    for (const k of Object.keys(o)) {
      const check = Object.hasOwn(fields, k) ? fields[k] : undefined;
      if (!check) return `unknown field ${k} (expected ${Object.keys(fields).join(', ')})`;
      const problem = check(o[k]);
      if (problem) return `${k}: ${problem}`;
    }
    for (const k of required) if (o[k] === undefined) return `${k} is required`;
    return undefined;
  };

const TCP_FLAG_NAMES = ['FIN', 'SYN', 'RST', 'PSH', 'ACK', 'URG', 'ECE', 'CWR', 'NS'];
/** Every FlowFilter field and the check of each of its (repeated) values. */
const FLOW_FILTER_FIELDS: Record<keyof FlowFilter, FieldCheck> = {
  uuid: isString,
  source_ip: isString,
  source_pod: isString,
  source_fqdn: isString,
  source_label: isString,
  source_service: isString,
  source_workload: objectOf({ name: isString, kind: isString }),
  destination_ip: isString,
  destination_pod: isString,
  destination_fqdn: isString,
  destination_label: isString,
  destination_service: isString,
  destination_workload: objectOf({ name: isString, kind: isString }),
  traffic_direction: oneOf('TRAFFIC_DIRECTION_UNKNOWN', 'INGRESS', 'EGRESS'),
  verdict: oneOf('VERDICT_UNKNOWN', 'FORWARDED', 'DROPPED', 'ERROR', 'AUDIT', 'REDIRECTED', 'TRACED', 'TRANSLATED'),
  event_type: objectOf({ type: isInteger, match_sub_type: isBoolean, sub_type: isInteger }, ['type']),
  http_status_code: isString,
  protocol: isString,
  source_port: isString,
  destination_port: isString,
  reply: isBoolean,
  dns_query: isString,
  source_identity: isInteger,
  destination_identity: isInteger,
  http_method: isString,
  http_path: isString,
  tcp_flags: objectOf(Object.fromEntries(TCP_FLAG_NAMES.map((f) => [f, isBoolean]))),
  node_name: isString,
  ip_version: oneOf('IP_NOT_USED', 'IPv4', 'IPv6'),
  trace_id: isString,
};

/** The problem with one FlowFilter, as `field: why` or `field[i]: why`, or undefined. */
function flowFilterProblem(filter: Record<string, unknown>): string | undefined {
  for (const [field, values] of Object.entries(filter)) {
    // Own fields only: `constructor`, `__proto__` or `hasOwnProperty` must not find Object.prototype's.
    const check = Object.hasOwn(FLOW_FILTER_FIELDS, field) ? (FLOW_FILTER_FIELDS as Record<string, FieldCheck | undefined>)[field] : undefined;
    if (!check) return `${field}: unknown FlowFilter field`;
    if (!Array.isArray(values)) return `${field}: expected a list (every FlowFilter field is repeated)`;
    for (let i = 0; i < values.length; i++) {
      const problem = check(values[i]);
      if (problem) return `${field}[${i}]: ${problem}`;
    }
  }
  return undefined;
}

/**
 * Parses `--flow-log-filter`: `{"whitelist":[FlowFilter...],"blacklist":[FlowFilter...]}`, both
 * optional, each a list of Hubble FlowFilter objects in their JSON form (field names as in
 * flow.proto, every field a list, enums by name), e.g. `{"whitelist":[{"verdict":["DROPPED"]}]}`.
 * Errors name the offending field: `--flow-log-filter: whitelist[0].verdict[0]: expected one of …`.
 */
export function parseFlowLogFilter(text: string): FlowLogFilter {
  const bad = (where: string, why: string): WeftError => new WeftError(ErrorCodes.USAGE, `--flow-log-filter: ${where ? `${where}: ` : ''}${why}`);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw bad('', `not valid JSON (${errorMessage(err)})`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw bad('', 'expected an object like {"whitelist":[{"verdict":["DROPPED"]}]}');
  const obj = value as Record<string, unknown>;
  for (const key of Object.keys(obj)) {
    if (!(FILTER_KEYS as readonly string[]).includes(key)) throw bad(key, 'unknown field (expected whitelist or blacklist)');
  }
  const out: FlowLogFilter = {};
  for (const key of FILTER_KEYS) {
    const list = obj[key];
    if (list === undefined) continue;
    if (!Array.isArray(list)) throw bad(key, 'expected a list of FlowFilter objects');
    const filters: FlowFilter[] = [];
    list.forEach((f: unknown, i) => {
      const where = `${key}[${i}]`;
      if (typeof f !== 'object' || f === null || Array.isArray(f)) throw bad(where, 'expected a FlowFilter object');
      const problem = flowFilterProblem(f as Record<string, unknown>);
      if (problem) throw bad(`${where}.${problem.slice(0, problem.indexOf(':'))}`, problem.slice(problem.indexOf(':') + 2));
      // Values the shape allows but the filter rejects (a bad port, IP, label selector...).
      try {
        compileFilters([f as FlowFilter], []);
      } catch (err) {
        throw bad(where, errorMessage(err));
      }
      filters.push(f as FlowFilter);
    });
    out[key] = filters;
  }
  return out;
}
