// SPDX-License-Identifier: Apache-2.0
// Small typed codecs for BPF map keys/values: describe a C struct once, get encode/decode with the
// same layout the C compiler uses (natural alignment, tail padding), and a TypedMap over a BpfMap.
//
//   const Key = struct({ cookie: u64, port: be16, addr: ipv4 });  // offsets 0, 8, 12; size 16
//   const enrolled = new TypedMap(obj.map('weft_enrolled'), Key, u32);
//   enrolled.set({ cookie: 1n, port: 443, addr: '10.0.0.1' }, 1);
import { isIPv4, isIPv6 } from 'node:net';

import { NativeErrorCodes as ErrorCodes, WeftError } from './errors.js';
import type { BpfMap } from './index.js';

export interface Codec<T> {
  /** sizeof(T) in C. */
  readonly size: number;
  /** _Alignof(T) in C. */
  readonly align: number;
  encode(value: T, buf: Buffer, offset: number): void;
  decode(buf: Buffer, offset: number): T;
  /** Set by pad(): the field carries no value. */
  readonly padding?: true;
}

export type Decoded<C> = C extends Codec<infer T> ? T : never;

function usage(msg: string): WeftError {
  return new WeftError(ErrorCodes.NATIVE_USAGE, msg);
}

/** A value as an error shows it: short, whatever its type (BigInt and symbols included). */
function show(v: unknown): string {
  if (typeof v === 'bigint') return `${v}n`;
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v);
  if (typeof v === 'symbol' || typeof v === 'function') return typeof v;
  if (Array.isArray(v)) return 'an array';
  if (v instanceof Uint8Array) return `${v.length} bytes`;
  if (typeof v === 'object' && v !== null) return 'an object';
  return String(v);
}

function int(size: 1 | 2 | 4, signed: boolean, bigEndian = false): Codec<number> {
  const name = `${signed ? 'i' : bigEndian ? 'be' : 'u'}${size * 8}`;
  const min = signed ? -(2 ** (size * 8 - 1)) : 0;
  const max = signed ? 2 ** (size * 8 - 1) - 1 : 2 ** (size * 8) - 1;
  return {
    size,
    align: size,
    encode(v, buf, off) {
      // Checked here, not by Buffer: its RangeError names neither the type nor the field.
      if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw usage(`${show(v)} is not a ${name} (an integer in ${min}..${max})`);
      if (signed) buf.writeIntLE(v, off, size);
      else if (bigEndian) buf.writeUIntBE(v, off, size);
      else buf.writeUIntLE(v, off, size);
    },
    decode(buf, off) {
      if (signed) return buf.readIntLE(off, size);
      return bigEndian ? buf.readUIntBE(off, size) : buf.readUIntLE(off, size);
    },
  };
}

// Host byte order is little-endian on every platform weft supports (x86_64, arm64).
export const u8 = int(1, false);
export const u16 = int(2, false);
export const u32 = int(4, false);
export const i32 = int(4, true);
/** __be16 / __be32: network byte order (ports, addresses as numbers). */
export const be16 = int(2, false, true);
export const be32 = int(4, false, true);

export const u64: Codec<bigint> = {
  size: 8,
  align: 8,
  encode(v, buf, off) {
    if (typeof v !== 'bigint' || v < 0n || v > 0xffffffffffffffffn) throw usage(`${show(v)} is not a u64 (a BigInt in 0n..${0xffffffffffffffffn}n)`);
    buf.writeBigUInt64LE(v, off);
  },
  decode: (buf, off) => buf.readBigUInt64LE(off),
};
export const i64: Codec<bigint> = {
  size: 8,
  align: 8,
  encode(v, buf, off) {
    if (typeof v !== 'bigint' || v < -(2n ** 63n) || v >= 2n ** 63n) throw usage(`${show(v)} is not an i64 (a BigInt in ${-(2n ** 63n)}n..${2n ** 63n - 1n}n)`);
    buf.writeBigInt64LE(v, off);
  },
  decode: (buf, off) => buf.readBigInt64LE(off),
};

/** An IPv4 address stored as 4 bytes in network order (a __be32), exposed as "10.0.0.1". */
export const ipv4: Codec<string> = {
  size: 4,
  align: 4,
  encode(v, buf, off) {
    if (typeof v !== 'string' || !isIPv4(v)) throw usage(`not an IPv4 address: ${show(v)}`);
    const parts = v.split('.');
    for (let i = 0; i < 4; i++) buf[off + i] = Number(parts[i]);
  },
  decode: (buf, off) => `${buf[off]}.${buf[off + 1]}.${buf[off + 2]}.${buf[off + 3]}`,
};

function parseIPv6(v: string): number[] {
  if (typeof v !== 'string' || !isIPv6(v)) throw usage(`not an IPv6 address: ${show(v)}`);
  let s = v;
  const pct = s.indexOf('%');
  if (pct >= 0) s = s.slice(0, pct);
  let tail: number[] = [];
  const lastColon = s.lastIndexOf(':');
  if (s.slice(lastColon + 1).includes('.')) {
    const p = s.slice(lastColon + 1).split('.').map(Number);
    tail = [(p[0]! << 8) | p[1]!, (p[2]! << 8) | p[3]!];
    s = s.slice(0, lastColon + 1) + '0:0';
  }
  const [head, rest] = s.includes('::') ? s.split('::') : [s, undefined];
  const h = head ? head.split(':') : [];
  const r = rest !== undefined && rest !== '' ? rest.split(':') : [];
  const fill = rest !== undefined ? 8 - h.length - r.length : 0;
  const groups = [...h, ...Array<string>(fill).fill('0'), ...r].map((g) => parseInt(g, 16));
  if (tail.length) groups.splice(6, 2, ...tail);
  return groups;
}

function formatIPv6(groups: number[]): string {
  // RFC 5952: compress the longest run (>= 2) of zero groups, lower-case hex.
  let best = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (best < 0) return hex.join(':');
  return `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLen).join(':')}`;
}

/** An IPv6 address stored as 16 bytes in network order, exposed in RFC 5952 form ("fd00::1"). */
export const ipv6: Codec<string> = {
  size: 16,
  align: 4, // struct in6_addr / __u32[4]
  encode(v, buf, off) {
    const g = parseIPv6(v);
    for (let i = 0; i < 8; i++) buf.writeUInt16BE(g[i]!, off + 2 * i);
  },
  decode(buf, off) {
    const g: number[] = [];
    for (let i = 0; i < 8; i++) g.push(buf.readUInt16BE(off + 2 * i));
    return formatIPv6(g);
  },
};

/** A fixed byte array (`__u8 name[n]`); encode accepts shorter input and zero-fills. */
export function bytes(n: number): Codec<Buffer> {
  return {
    size: n,
    align: 1,
    encode(v, buf, off) {
      if (!(v instanceof Uint8Array)) throw usage(`${show(v)} is not a Buffer`);
      if (v.length > n) throw usage(`byte array of ${v.length} bytes does not fit in ${n}`);
      buf.fill(0, off, off + n);
      buf.set(v, off);
    },
    decode: (buf, off) => Buffer.from(buf.subarray(off, off + n)),
  };
}

/** A fixed C string (`char name[n]`), NUL-padded; decode stops at the first NUL. */
export function cstring(n: number): Codec<string> {
  return {
    size: n,
    align: 1,
    encode(v, buf, off) {
      if (typeof v !== 'string') throw usage(`${show(v)} is not a string`);
      const b = Buffer.from(v, 'utf8');
      if (b.length >= n) throw usage(`string of ${b.length} bytes does not fit in char[${n}]`);
      buf.fill(0, off, off + n);
      b.copy(buf, off);
    },
    decode(buf, off) {
      const end = buf.indexOf(0, off);
      return buf.toString('utf8', off, end < 0 || end > off + n ? off + n : end);
    },
  };
}

/** `T name[n]`. */
export function array<T>(elem: Codec<T>, n: number): Codec<T[]> {
  return {
    size: elem.size * n,
    align: elem.align,
    encode(v, buf, off) {
      if (!Array.isArray(v)) throw usage(`${show(v)} is not an array`);
      if (v.length !== n) throw usage(`array needs ${n} elements, got ${v.length}`);
      for (let i = 0; i < n; i++) {
        try {
          elem.encode(v[i]!, buf, off + i * elem.size);
        } catch (err) {
          throw usage(`[${i}]: ${err instanceof Error ? err.message : String(err)}`);
        }
      }
    },
    decode(buf, off) {
      const out: T[] = [];
      for (let i = 0; i < n; i++) out.push(elem.decode(buf, off + i * elem.size));
      return out;
    },
  };
}

/** Explicit padding (`__u8 _pad[n]`): encodes zeros, decodes to undefined; omitted from values. */
export function pad(n: number): Codec<undefined> {
  return {
    size: n,
    align: 1,
    padding: true,
    encode: (_v, buf, off) => void buf.fill(0, off, off + n),
    decode: () => undefined,
  };
}

type Fields = Record<string, Codec<unknown>>;
type PadKeys<F extends Fields> = { [K in keyof F]: F[K] extends Codec<undefined> ? K : never }[keyof F];
export type StructValue<F extends Fields> = { [K in Exclude<keyof F, PadKeys<F>>]: Decoded<F[K]> };

export interface StructCodec<F extends Fields> extends Codec<StructValue<F>> {
  /** Byte offset of each field, as offsetof() would report. */
  readonly offsets: { readonly [K in keyof F]: number };
  /** Each field's codec, in declaration order: with `offsets`, the layout a test can hold against the C side. */
  readonly fields: Readonly<F>;
}

/** What a struct codec says about its layout (sizeof, each member's offset and codec), without its value type. */
export interface StructLayout {
  readonly size: number;
  readonly align: number;
  readonly offsets: Readonly<Record<string, number>>;
  readonly fields: Readonly<Record<string, Codec<unknown>>>;
}

/**
 * A C struct: fields in declaration order, each at the next offset aligned to its alignment, total
 * size rounded up to the largest alignment (or `options.packed`). Pass `options.size` to assert the
 * layout matches sizeof() on the C side. Implicit padding bytes are encoded as zeros, which hash
 * map keys need.
 */
export function struct<F extends Fields>(fields: F, options: { packed?: boolean; size?: number } = {}): StructCodec<F> {
  const offsets: Record<string, number> = {};
  let off = 0;
  let align = 1;
  for (const [name, c] of Object.entries(fields)) {
    const a = options.packed ? 1 : c.align;
    off = Math.ceil(off / a) * a;
    offsets[name] = off;
    off += c.size;
    align = Math.max(align, a);
  }
  const size = Math.ceil(off / align) * align;
  if (options.size !== undefined && options.size !== size)
    throw usage(`struct layout is ${size} bytes but the C side says ${options.size} (offsets ${JSON.stringify(offsets)})`);
  const entries = Object.entries(fields);
  return {
    size,
    align,
    offsets: offsets as { [K in keyof F]: number },
    fields,
    encode(v, buf, o) {
      if (typeof v !== 'object' || v === null || Array.isArray(v)) throw usage(`${show(v)} is not a struct value (an object of fields)`);
      buf.fill(0, o, o + size);
      const rec = v as Record<string, unknown>;
      for (const [name, c] of entries) {
        // Own fields only: a field named `constructor` must not be read from Object.prototype.
        const fv = Object.hasOwn(rec, name) || !(name in Object.prototype) ? rec[name] : undefined;
        if (fv === undefined && !c.padding)
          throw usage(`struct field '${name}' is missing`);
        try {
          c.encode(fv, buf, o + offsets[name]!);
        } catch (err) {
          throw usage(`struct field '${name}': ${err instanceof Error ? err.message : String(err)}`);
        }
      }
    },
    decode(buf, o) {
      const out: Record<string, unknown> = {};
      for (const [name, c] of entries) {
        if (!c.padding) out[name] = c.decode(buf, o + offsets[name]!);
      }
      return out as StructValue<F>;
    },
  };
}

export function encode<T>(codec: Codec<T>, value: T): Buffer {
  const buf = Buffer.alloc(codec.size);
  codec.encode(value, buf, 0);
  return buf;
}

export function decode<T>(codec: Codec<T>, buf: Buffer): T {
  if (!Buffer.isBuffer(buf)) throw usage(`${show(buf)} is not a Buffer`);
  if (buf.length < codec.size) throw usage(`buffer of ${buf.length} bytes is shorter than ${codec.size}`);
  return codec.decode(buf, 0);
}

/** A BpfMap whose keys and values are encoded with codecs; sizes are checked against the map. */
export class TypedMap<K, V> {
  constructor(
    readonly map: BpfMap,
    readonly key: Codec<K>,
    readonly value: Codec<V>,
  ) {
    if (map.keySize !== key.size)
      throw usage(`map ${map.name}: key codec is ${key.size} bytes, map key is ${map.keySize}`);
    if (map.valueSize !== value.size)
      throw usage(`map ${map.name}: value codec is ${value.size} bytes, map value is ${map.valueSize}`);
  }

  get(k: K): V | undefined {
    const v = this.map.lookup(encode(this.key, k));
    return v === undefined ? undefined : this.value.decode(v, 0);
  }

  set(k: K, v: V, flags?: 'any' | 'noexist' | 'exist'): void {
    this.map.update(encode(this.key, k), encode(this.value, v), flags);
  }

  delete(k: K): boolean {
    return this.map.delete(encode(this.key, k));
  }

  keys(): K[] {
    return this.map.keys().map((b) => this.key.decode(b, 0));
  }

  entries(): Array<[K, V]> {
    return this.map.entries().map(([k, v]) => [this.key.decode(k, 0), this.value.decode(v, 0)]);
  }
}
