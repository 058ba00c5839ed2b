// IPv4 addresses and CIDR ranges as unsigned 32-bit numbers: parsing, overlap, n-th address.
import { quote } from './quote.js';

export interface Cidr {
  /** Network address (host bits zero), unsigned. */
  base: number;
  prefix: number;
  /** The text it was parsed from, normalised (`10.0.0.0/24`). */
  text: string;
}

const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

export function parseIPv4(text: string): number | undefined {
  const m = IPV4.exec(text);
  if (!m) return undefined;
  let n = 0;
  for (let i = 1; i <= 4; i++) {
    const part = m[i]!;
    if (part.length > 1 && part.startsWith('0')) return undefined;
    const v = Number(part);
    if (v > 255) return undefined;
    n = n * 256 + v;
  }
  return n >>> 0;
}

export function formatIPv4(n: number): string {
  n = n >>> 0;
  return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

function maskOf(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

/** Parses `a.b.c.d/p`. Returns a reason string when invalid (including host bits set). */
export function parseCidr(text: string): Cidr | string {
  const slash = text.indexOf('/');
  if (slash < 0) return `${quote(text)} is not a CIDR (expected a.b.c.d/prefix)`;
  const ip = parseIPv4(text.slice(0, slash));
  const prefixText = text.slice(slash + 1);
  if (ip === undefined) return `${quote(text)} is not an IPv4 CIDR`;
  if (!/^\d{1,2}$/.test(prefixText) || Number(prefixText) > 32) return `${quote(text)} has an invalid prefix length`;
  const prefix = Number(prefixText);
  const base = (ip & maskOf(prefix)) >>> 0;
  if (base !== ip) return `${quote(text)} has host bits set (did you mean ${formatIPv4(base)}/${prefix}?)`;
  return { base, prefix, text: `${formatIPv4(base)}/${prefix}` };
}

export function cidrSize(c: Cidr): number {
  return 2 ** (32 - c.prefix);
}

export function cidrLast(c: Cidr): number {
  return (c.base + cidrSize(c) - 1) >>> 0;
}

export function cidrsOverlap(a: Cidr, b: Cidr): boolean {
  return a.base <= cidrLast(b) && b.base <= cidrLast(a);
}

export function cidrContains(c: Cidr, ip: number): boolean {
  return ip >= c.base && ip <= cidrLast(c);
}

/** The n-th address of the range (0 = network address). Throws if outside. */
export function nthAddress(c: Cidr, n: number): string {
  if (n < 0 || n >= cidrSize(c)) throw new RangeError(`address #${n} is outside ${c.text}`);
  return formatIPv4((c.base + n) >>> 0);
}

/** Index of an address within a range, or -1. */
export function indexInCidr(c: Cidr, ip: string): number {
  const n = parseIPv4(ip);
  if (n === undefined || !cidrContains(c, n)) return -1;
  return n - c.base;
}

export function mustParseCidr(text: string): Cidr {
  const c = parseCidr(text);
  if (typeof c === 'string') throw new Error(c);
  return c;
}
