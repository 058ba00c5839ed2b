// The generic field validators of Kubernetes-style documents: mappings, strings, names, labels,
// ports, addresses, and the problem collection that gives each problem its file, line and field path
// (`spec.containers[0].command`). Each checker returns the value when valid, else records a problem
// and returns undefined; nothing is thrown. The kinds (core-kinds.ts, policy-kinds.ts) are built from
// these, and parse.ts reads the documents.
import { isMap, isSeq, isScalar, type Document, type LineCounter, type Node as YamlNode } from 'yaml';
import type { ConfigProblem } from '../errors.js';
import { isPort, parseIPv4, parseIPv4Cidr } from '../net/address.js';
import { quote, safeName } from '../quote.js';

export { quote } from '../quote.js';

export type PathSeg = string | number;

export function formatPath(path: readonly PathSeg[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else {
      const s = safeName(seg);
      out += out ? `.${s}` : s;
    }
  }
  return out;
}

/**
 * One document being validated: a YAML document, which knows how to turn a field path into the line
 * of its node, or an object read from the Kubernetes API (no document, no lines: line 0), which the
 * validators take as the cluster holds it (`fromApi`: the kinds relax what only files must say).
 */
export class DocContext {
  constructor(
    readonly file: string,
    readonly doc: Document.Parsed | undefined,
    private readonly lc: LineCounter | undefined,
    readonly problems: ConfigProblem[],
    readonly fromApi = false,
  ) {}

  /** Line (1-based) of the document's first content node; 0 for an object from the API. */
  get startLine(): number {
    if (!this.doc || !this.lc) return 0;
    const c = this.doc.contents;
    const off = c?.range?.[0] ?? this.doc.range?.[0] ?? 0;
    return this.lc.linePos(off).line;
  }

  /**
   * The line of the node at `path`; with `atKey`, the line of its key. A path that does not exist
   * resolves to its deepest existing ancestor (e.g. a missing required field → the parent's key line).
   */
  line(path: readonly PathSeg[], atKey = false): number {
    if (!this.doc || !this.lc) return 0;
    let node: unknown = this.doc.contents;
    let best: number | undefined = (node as YamlNode | null)?.range?.[0];
    for (let i = 0; i < path.length; i++) {
      const seg = path[i]!;
      const last = i === path.length - 1;
      if (isMap(node) && typeof seg === 'string') {
        const pair = node.items.find((p) => (isScalar(p.key) ? String(p.key.value) : p.key) === seg);
        if (!pair) break;
        const keyOff = (pair.key as YamlNode | null)?.range?.[0];
        const valOff = (pair.value as YamlNode | null)?.range?.[0];
        if (last && atKey) {
          best = keyOff ?? best;
        } else {
          best = valOff ?? keyOff ?? best;
        }
        // For a flow value starting on the key's line, the key line is what an editor shows; same line.
        node = pair.value;
      } else if (isSeq(node) && typeof seg === 'number') {
        const item = node.items[seg] as YamlNode | undefined;
        if (!item) break;
        best = item.range?.[0] ?? best;
        node = item;
      } else {
        break;
      }
    }
    return this.lc.linePos(best ?? 0).line;
  }

  add(path: readonly PathSeg[], reason: string, atKey = false): void {
    this.problems.push({ file: this.file, line: this.line(path, atKey), field: formatPath(path), reason });
  }
}

// ---------------------------------------------------------------------------------------------
// Small typed checkers.

export type Json = unknown;

/**
 * A YAML mapping as toJS() returns it. Other objects a tag can produce (`!!binary` → Buffer,
 * `!!timestamp` → Date, `!!set` → Set, `!!omap` → Map) are not mappings of fields.
 */
export function isPlainObject(v: Json): v is Record<string, Json> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const proto: unknown = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

export function checkObject(
  ctx: DocContext,
  path: PathSeg[],
  v: Json,
  allowed: readonly string[],
  opts: { required?: boolean; tolerated?: readonly string[] } = {},
): Record<string, Json> | undefined {
  if (v === undefined || v === null) {
    if (opts.required) ctx.add(path, 'required field is missing');
    return undefined;
  }
  if (!isPlainObject(v)) {
    ctx.add(path, `must be a mapping, got ${describe(v)}`);
    return undefined;
  }
  for (const k of Object.keys(v)) {
    if (!allowed.includes(k) && !opts.tolerated?.includes(k)) {
      ctx.add([...path, k], `unknown field ${quote(k)} (allowed: ${allowed.join(', ')})`, true);
    }
  }
  return v;
}

export function describe(v: Json): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a sequence';
  if (v instanceof Uint8Array) return 'binary data (!!binary)';
  if (v instanceof Date) return 'a timestamp (!!timestamp)';
  if (v instanceof Set) return 'a set (!!set)';
  if (v instanceof Map) return 'an ordered mapping (!!omap or !!pairs)';
  if (typeof v === 'object') return 'a mapping';
  if (typeof v === 'string') return `the string ${quote(v)}`;
  if (typeof v === 'function' || typeof v === 'symbol') return typeof v;
  return `${typeof v} ${String(v)}`;
}

export function checkString(
  ctx: DocContext,
  path: PathSeg[],
  v: Json,
  opts: { required?: boolean; pattern?: RegExp; patternReason?: string; maxLength?: number; oneOf?: readonly string[] } = {},
): string | undefined {
  if (v === undefined || v === null) {
    if (opts.required) ctx.add(path, 'required field is missing');
    return undefined;
  }
  if (typeof v !== 'string') {
    ctx.add(path, `must be a string, got ${describe(v)}`);
    return undefined;
  }
  if (opts.required && v === '') {
    ctx.add(path, 'must not be empty');
    return undefined;
  }
  if (opts.maxLength !== undefined && v.length > opts.maxLength) {
    ctx.add(path, `${quote(v)} is longer than ${opts.maxLength} characters`);
    return undefined;
  }
  if (opts.oneOf && !opts.oneOf.includes(v)) {
    ctx.add(path, `${quote(v)} is not one of ${opts.oneOf.join(', ')}`);
    return undefined;
  }
  if (opts.pattern && !opts.pattern.test(v)) {
    ctx.add(path, `${quote(v)} ${opts.patternReason ?? `does not match ${opts.pattern}`}`);
    return undefined;
  }
  return v;
}

export function checkPort(ctx: DocContext, path: PathSeg[], v: Json, required: boolean): number | undefined {
  if (v === undefined || v === null) {
    if (required) ctx.add(path, 'required field is missing');
    return undefined;
  }
  if (typeof v !== 'number' || !Number.isInteger(v)) {
    ctx.add(path, `must be an integer port number, got ${describe(v)}`);
    return undefined;
  }
  if (!isPort(v)) {
    ctx.add(path, `port ${v} is outside 1-65535`);
    return undefined;
  }
  return v;
}

export function checkStringArray(ctx: DocContext, path: PathSeg[], v: Json, opts: { required?: boolean; nonEmpty?: boolean } = {}): string[] | undefined {
  if (v === undefined || v === null) {
    if (opts.required) ctx.add(path, 'required field is missing');
    return undefined;
  }
  if (!Array.isArray(v)) {
    ctx.add(path, `must be a sequence of strings, got ${describe(v)}`);
    return undefined;
  }
  if (opts.nonEmpty && v.length === 0) {
    ctx.add(path, 'must not be empty');
    return undefined;
  }
  let ok = true;
  v.forEach((item, i) => {
    if (typeof item !== 'string') {
      ctx.add([...path, i], `must be a string, got ${describe(item)}`);
      ok = false;
    }
  });
  return ok ? (v as string[]) : undefined;
}

/** A CIDR; with `size`, one with a prefix no longer than `maxPrefix` (`forWhat`: "pods" → "too small for pods"). */
export function checkCidr(ctx: DocContext, path: PathSeg[], v: Json, required: boolean, size?: { maxPrefix: number; forWhat?: string }): string | undefined {
  const s = checkString(ctx, path, v, { required });
  if (s === undefined) return undefined;
  const c = parseIPv4Cidr(s);
  if (typeof c === 'string') {
    ctx.add(path, c);
    return undefined;
  }
  // Reported, but the value is still returned: the caller decides from the problem count.
  if (size && c.prefix > size.maxPrefix) ctx.add(path, `${c.text} is too small${size.forWhat ? ` for ${size.forWhat}` : ''} (prefix must be /${size.maxPrefix} or shorter)`);
  return c.text;
}

export function checkIPv4(ctx: DocContext, path: PathSeg[], v: Json, required: boolean): string | undefined {
  const s = checkString(ctx, path, v, { required });
  if (s === undefined) return undefined;
  if (parseIPv4(s) === undefined) {
    ctx.add(path, `${quote(s)} is not an IPv4 address`);
    return undefined;
  }
  return s;
}

export const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
export const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL_NAME = /^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
/** An environment variable's name, as the API server accepts it. */
export const ENV_NAME = /^[-._a-zA-Z][-._a-zA-Z0-9]*$/;

export function checkLabelName(ctx: DocContext, path: PathSeg[], v: Json): string | undefined {
  return checkString(ctx, path, v, {
    required: true,
    maxLength: 63,
    pattern: DNS1123_LABEL,
    patternReason: 'is not a valid name (DNS-1123 label: lower-case letters, digits and "-", starting and ending alphanumeric)',
  });
}

export function checkSubdomainName(ctx: DocContext, path: PathSeg[], v: Json, required = true): string | undefined {
  return checkString(ctx, path, v, {
    required,
    maxLength: 253,
    pattern: DNS1123_SUBDOMAIN,
    patternReason: 'is not a valid name (DNS-1123 subdomain: lower-case letters, digits, "-" and ".")',
  });
}

/** A Kubernetes qualified name (`prefix/name`): what label and annotation keys must be. */
function checkLabelKey(ctx: DocContext, path: PathSeg[], key: string, what: 'label' | 'annotation'): boolean {
  const slash = key.indexOf('/');
  const prefix = slash >= 0 ? key.slice(0, slash) : undefined;
  const name = slash >= 0 ? key.slice(slash + 1) : key;
  if (prefix !== undefined && (prefix.length > 253 || !DNS1123_SUBDOMAIN.test(prefix))) {
    ctx.add(path, `key ${quote(key)} has an invalid prefix (must be a DNS-1123 subdomain)`, true);
    return false;
  }
  if (name.length === 0 || name.length > 63 || !LABEL_NAME.test(name)) {
    ctx.add(path, `key ${quote(key)} is not a valid ${what} key`, true);
    return false;
  }
  return true;
}

export function checkStringMap(
  ctx: DocContext,
  path: PathSeg[],
  v: Json,
  kind: 'labels' | 'annotations' | 'selector',
): Record<string, string> | undefined {
  if (v === undefined || v === null) return undefined;
  if (!isPlainObject(v)) {
    ctx.add(path, `must be a mapping of strings, got ${describe(v)}`);
    return undefined;
  }
  const out: Record<string, string> = {};
  for (const [k, val] of Object.entries(v)) {
    const p = [...path, k];
    if (typeof val !== 'string') {
      ctx.add(p, `value must be a string, got ${describe(val)} (quote it)`);
      continue;
    }
    // Annotation keys follow the label key rules too (as the API server checks them); values are free.
    if (!checkLabelKey(ctx, p, k, kind === 'annotations' ? 'annotation' : 'label')) continue;
    if (kind !== 'annotations') {
      if (val.length > 63 || !LABEL_VALUE.test(val)) {
        ctx.add(p, `${quote(val)} is not a valid label value`);
        continue;
      }
    }
    out[k] = val;
  }
  return out;
}

/** An optional sequence whose items are checked by `item`; the items it returns undefined for are left out. */
export function checkList<T>(ctx: DocContext, path: PathSeg[], v: Json, item: (p: PathSeg[], x: Json) => T | undefined): T[] | undefined {
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v)) {
    ctx.add(path, `must be a sequence, got ${describe(v)}`);
    return undefined;
  }
  const out: T[] = [];
  v.forEach((x, i) => {
    const r = item([...path, i], x);
    if (r !== undefined) out.push(r);
  });
  return out;
}
