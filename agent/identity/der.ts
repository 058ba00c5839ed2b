// Just enough DER (X.690) to read a CSR and to write CSRs and certificates with Node's own crypto:
// node-forge's X.509 code is RSA-only and its RSA runs in JavaScript on the event loop, so the CA
// parses with this reader and signs natively. Definite lengths only, low tag numbers only: anything
// else is not DER we produce or accept, and is refused rather than interpreted.

/** Tag bytes (class, constructed bit and number in one byte) used by weft's certificates. */
export const Tag = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  UTF8_STRING: 0x0c,
  PRINTABLE_STRING: 0x13,
  IA5_STRING: 0x16,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

/** One decoded TLV. `raw` is the whole encoding (header included), `value` its contents. */
export interface Tlv {
  tag: number;
  constructed: boolean;
  /** 0 universal, 1 application, 2 context-specific, 3 private. */
  cls: number;
  /** The tag number within its class (0..30). */
  num: number;
  value: Buffer;
  raw: Buffer;
}

export class DerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DerError';
  }
}

/** Reads the TLV at `offset`; `end` is the offset just past it. */
function readTlv(buf: Buffer, offset = 0): { tlv: Tlv; end: number } {
  if (offset + 2 > buf.length) throw new DerError(`truncated DER at byte ${offset}`);
  const tag = buf[offset] as number;
  if ((tag & 0x1f) === 0x1f) throw new DerError(`high tag numbers are not supported (byte ${offset})`);
  let len = buf[offset + 1] as number;
  let header = 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    // 0x80 is BER's indefinite length; more than 4 length bytes is never a sane size here.
    if (n === 0 || n > 4) throw new DerError(`unsupported length encoding at byte ${offset}`);
    if (offset + 2 + n > buf.length) throw new DerError(`truncated DER length at byte ${offset}`);
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + (buf[offset + 2 + i] as number);
    if (len < 0x80 || (n > 1 && (buf[offset + 2] as number) === 0)) throw new DerError(`non-minimal DER length at byte ${offset}`);
    header += n;
  }
  const end = offset + header + len;
  if (end > buf.length) throw new DerError(`DER element at byte ${offset} runs past the end (${len} bytes declared)`);
  return {
    tlv: { tag, constructed: (tag & 0x20) !== 0, cls: tag >> 6, num: tag & 0x1f, value: buf.subarray(offset + header, end), raw: buf.subarray(offset, end) },
    end,
  };
}

/** Exactly one TLV filling `buf`. */
export function readOne(buf: Buffer): Tlv {
  const { tlv, end } = readTlv(buf, 0);
  if (end !== buf.length) throw new DerError(`${buf.length - end} trailing byte(s) after the DER element`);
  return tlv;
}

/** The elements inside a constructed TLV. */
export function children(tlv: Tlv): Tlv[] {
  if (!tlv.constructed) throw new DerError(`element with tag 0x${tlv.tag.toString(16)} is not constructed`);
  const out: Tlv[] = [];
  let offset = 0;
  while (offset < tlv.value.length) {
    const { tlv: child, end } = readTlv(tlv.value, offset);
    out.push(child);
    offset = end;
  }
  return out;
}

/** Checks the tag and returns the element, for readable parsers. */
export function expectTag(tlv: Tlv | undefined, tag: number, what: string): Tlv {
  if (tlv === undefined) throw new DerError(`${what} is missing`);
  if (tlv.tag !== tag) throw new DerError(`${what}: expected tag 0x${tag.toString(16)}, found 0x${tlv.tag.toString(16)}`);
  return tlv;
}

export function decodeOid(value: Buffer): string {
  if (value.length === 0 || value.length > 64) throw new DerError('bad OBJECT IDENTIFIER length');
  const arcs: number[] = [];
  let n = 0;
  for (let i = 0; i < value.length; i++) {
    const b = value[i] as number;
    if (n === 0 && b === 0x80) throw new DerError('non-minimal OBJECT IDENTIFIER arc');
    n = n * 128 + (b & 0x7f);
    if (n > Number.MAX_SAFE_INTEGER / 128) throw new DerError('OBJECT IDENTIFIER arc too large');
    if (!(b & 0x80)) {
      if (arcs.length === 0) arcs.push(n < 80 ? Math.floor(n / 40) : 2, n < 80 ? n % 40 : n - 80);
      else arcs.push(n);
      n = 0;
    } else if (i === value.length - 1) {
      throw new DerError('truncated OBJECT IDENTIFIER');
    }
  }
  return arcs.join('.');
}

/** The contents of a BIT STRING with no unused bits (keys, signatures). */
export function bitStringBytes(tlv: Tlv, what: string): Buffer {
  expectTag(tlv, Tag.BIT_STRING, what);
  if (tlv.value.length < 1 || tlv.value[0] !== 0) throw new DerError(`${what}: a BIT STRING with unused bits`);
  return tlv.value.subarray(1);
}

// ---- writing ----

function lengthBytes(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

function tlv(tag: number, ...contents: Buffer[]): Buffer {
  const value = Buffer.concat(contents);
  return Buffer.concat([Buffer.from([tag]), lengthBytes(value.length), value]);
}

export const seq = (...items: Buffer[]): Buffer => tlv(Tag.SEQUENCE, ...items);
export const set = (...items: Buffer[]): Buffer => tlv(Tag.SET, ...items);
export const octetString = (b: Buffer): Buffer => tlv(Tag.OCTET_STRING, b);
export const derNull = (): Buffer => Buffer.from([Tag.NULL, 0]);
export const derBoolean = (v: boolean): Buffer => Buffer.from([Tag.BOOLEAN, 1, v ? 0xff : 0]);
/** A context-specific tag: [num] IMPLICIT for primitive contents, or a constructed wrapper. */
export const context = (num: number, constructed: boolean, ...contents: Buffer[]): Buffer => tlv(0x80 | (constructed ? 0x20 : 0) | num, ...contents);

/** A BIT STRING of whole bytes (keys, signatures). */
export const bitString = (b: Buffer): Buffer => tlv(Tag.BIT_STRING, Buffer.from([0]), b);

/** A named-bit BIT STRING (keyUsage): bit 0 is the most significant bit of the first byte; DER
 * drops trailing zero bits and says how many bits of the last byte are unused. */
export function namedBits(bits: number[]): Buffer {
  const max = Math.max(...bits);
  const bytes = Buffer.alloc(Math.floor(max / 8) + 1);
  for (const b of bits) bytes[b >> 3] = (bytes[b >> 3] as number) | (0x80 >> (b & 7));
  return tlv(Tag.BIT_STRING, Buffer.from([7 - (max & 7)]), bytes);
}

/** An unsigned INTEGER from big-endian bytes (a 0x00 pad added when the top bit is set). */
export function unsignedInteger(bytes: Buffer): Buffer {
  let i = 0;
  while (i < bytes.length - 1 && bytes[i] === 0 && !((bytes[i + 1] as number) & 0x80)) i++;
  const v = bytes.subarray(i);
  return tlv(Tag.INTEGER, ((v[0] ?? 0) & 0x80) !== 0 ? Buffer.concat([Buffer.from([0]), v]) : v.length === 0 ? Buffer.from([0]) : v);
}

export const smallInteger = (n: number): Buffer => {
  if (!Number.isInteger(n) || n < 0 || n > 127) throw new DerError(`smallInteger: ${n} out of range`);
  return tlv(Tag.INTEGER, Buffer.from([n]));
};

export function oid(dotted: string): Buffer {
  const arcs = dotted.split('.').map(Number);
  if (arcs.length < 2 || arcs.some((a) => !Number.isSafeInteger(a) || a < 0)) throw new DerError(`bad OID ${dotted}`);
  const out: number[] = [];
  const push = (n: number): void => {
    const chunk = [n & 0x7f];
    for (let v = Math.floor(n / 128); v > 0; v = Math.floor(v / 128)) chunk.unshift(0x80 | (v & 0x7f));
    out.push(...chunk);
  };
  push((arcs[0] as number) * 40 + (arcs[1] as number));
  for (const a of arcs.slice(2)) push(a);
  return tlv(Tag.OID, Buffer.from(out));
}

export const utf8 = (s: string): Buffer => tlv(Tag.UTF8_STRING, Buffer.from(s, 'utf8'));

/** X.509 time: UTCTime for 1950..2049, GeneralizedTime otherwise (RFC 5280 §4.1.2.5), whole seconds. */
export function x509Time(d: Date): Buffer {
  const iso = d.toISOString(); // YYYY-MM-DDTHH:MM:SS.sssZ
  const year = d.getUTCFullYear();
  const digits = iso.slice(0, 19).replace(/[-:T]/g, '');
  if (year >= 1950 && year < 2050) return tlv(Tag.UTC_TIME, Buffer.from(`${digits.slice(2)}Z`, 'ascii'));
  return tlv(Tag.GENERALIZED_TIME, Buffer.from(`${digits}Z`, 'ascii'));
}

/** PEM armour, 64 columns. */
export function toPem(label: string, der: Buffer): string {
  const b64 = der.toString('base64');
  const lines: string[] = [];
  for (let i = 0; i < b64.length; i += 64) lines.push(b64.slice(i, i + 64));
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

/** The DER inside exactly one PEM block with one of `labels`; undefined when the text is not that. */
export function fromPem(text: string, labels: readonly string[]): Buffer | undefined {
  const m = /^\s*-----BEGIN ([A-Z0-9 ]+)-----\r?\n([A-Za-z0-9+/=\r\n]+?)\r?\n?-----END \1-----\s*$/.exec(text);
  if (!m || !labels.includes(m[1] as string)) return undefined;
  const b64 = (m[2] as string).replace(/[\r\n]/g, '');
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(b64) || b64.length % 4 !== 0) return undefined;
  return Buffer.from(b64, 'base64');
}
