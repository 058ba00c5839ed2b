// IP addresses, CIDR prefixes and ports: the one place weft reads them (registry, policy, flows,
// lab; `HOST:PORT` flags are system/host-port.ts). Two shapes of range, for two jobs:
//   IpNet    — either family, as bigints: is this address inside this prefix (policy ipBlocks,
//              flow filters);
//   Ipv4Cidr — IPv4 as unsigned 32-bit numbers: ranges that addresses are handed out from (the lab's
//              node network, pod CIDRs, service CIDR), with sizes, overlaps and n-th addresses.
// What is a valid address is node:net's isIP, the rule Node's own sockets apply. Where callers differ
// (an IPv6 zone dropped or refused, IPv4-mapped IPv6 reduced or kept, a bare address as a prefix or
// not, leading zeros in a prefix length) it is an option, chosen by the caller that knows why.
import { isIP } from 'node:net';
// A leaf module (no imports): quoting user text into a reason, bounded and with controls escaped.
import { quote } from '../quote.js';

// ---- Addresses of either family ----

export type IpFamily = 4 | 6;

/** An IP address as its family and its 32- or 128-bit value. */
export interface IpAddr {
  family: IpFamily;
  value: bigint;
}

/** A prefix. `base` keeps host bits as written (`10.1.2.3/8`); containment compares the prefix bits only. */
export interface IpNet {
  family: IpFamily;
  base: bigint;
  prefix: number;
}

export function familyBits(family: IpFamily): 32 | 128 {
  return family === 4 ? 32 : 128;
}

/** 4, 6, or 0 when `text` is not an address (an IPv6 address may carry a zone: `fe80::1%eth0`). */
export function ipFamily(text: string): 0 | 4 | 6 {
  return isIP(text) as 0 | 4 | 6;
}

export interface ParseIpOptions {
  /** An IPv6 zone (`fe80::1%eth0`): the address is refused (default), or read without it. */
  zone?: 'refuse' | 'drop';
  /**
   * IPv4-mapped IPv6 (`::ffff:10.1.2.3`): kept as the IPv6 address it is (default), or reduced to
   * the IPv4 address, as ztunnel canonicalises the peer address of a dual-stack socket.
   */
  mapped?: 'keep' | 'unmap';
}

const V4_MAPPED_HIGH = 0xffffn;

export function parseIp(text: string, opts: ParseIpOptions = {}): IpAddr | undefined {
  const family = isIP(text);
  if (family === 4) return { family: 4, value: BigInt(parseIPv4(text)!) };
  if (family !== 6) return undefined;
  const zone = text.indexOf('%');
  if (zone >= 0 && opts.zone !== 'drop') return undefined;
  const ip: IpAddr = { family: 6, value: ipv6Value(zone < 0 ? text : text.slice(0, zone)) };
  return opts.mapped === 'unmap' ? unmapIPv4(ip) : ip;
}

/** `::ffff:a.b.c.d` → `a.b.c.d`; any other address as it is. */
export function unmapIPv4(ip: IpAddr): IpAddr {
  if (ip.family === 6 && ip.value >> 32n === V4_MAPPED_HIGH) return { family: 4, value: ip.value & 0xffffffffn };
  return ip;
}

/** The value of an IPv6 address that isIP accepted, without its zone. */
function ipv6Value(text: string): bigint {
  // An embedded dotted quad (::ffff:1.2.3.4, 64:ff9b::192.0.2.1) stands for the last two groups.
  let t = text;
  const lastColon = t.lastIndexOf(':');
  if (t.includes('.', lastColon)) {
    const v4 = parseIPv4(t.slice(lastColon + 1))!;
    t = `${t.slice(0, lastColon + 1)}${(v4 >>> 16).toString(16)}:${(v4 & 0xffff).toString(16)}`;
  }
  const [head, tail] = t.split('::') as [string, string | undefined];
  const headGroups = head === '' ? [] : head.split(':');
  const tailGroups = tail === undefined || tail === '' ? [] : tail.split(':');
  const zeros = tail === undefined ? 0 : 8 - headGroups.length - tailGroups.length;
  const groups = [...headGroups, ...Array<string>(zeros).fill('0'), ...tailGroups];
  return groups.reduce((acc, g) => (acc << 16n) | BigInt(parseInt(g, 16)), 0n);
}

export interface ParseIpNetOptions {
  /** As ParseIpOptions.zone, for the address part. */
  zone?: 'refuse' | 'drop';
  /** A bare address: a full-length prefix (default, as istiod reads ipBlocks), or refused. */
  bare?: 'host' | 'refuse';
  /** A prefix length with leading zeros (`/08`): refused (default, as Go's netip), or read as decimal. */
  leadingZeros?: boolean;
}

/** `a.b.c.d/n` or `x::y/n` (and, by default, a bare address). IPv4-mapped addresses stay IPv6. */
export function parseIpNet(text: string, opts: ParseIpNetOptions = {}): IpNet | undefined {
  const slash = text.indexOf('/');
  if (slash < 0 && opts.bare === 'refuse') return undefined;
  const addr = parseIp(slash < 0 ? text : text.slice(0, slash), { zone: opts.zone ?? 'refuse' });
  if (addr === undefined) return undefined;
  const bits = familyBits(addr.family);
  const prefix = slash < 0 ? bits : prefixLength(text.slice(slash + 1), bits, opts.leadingZeros ?? false);
  if (prefix === undefined) return undefined;
  return { family: addr.family, base: addr.value, prefix };
}

function prefixLength(text: string, bits: number, leadingZeros: boolean): number | undefined {
  if (!(leadingZeros ? /^\d{1,3}$/ : /^(0|[1-9]\d{0,2})$/).test(text)) return undefined;
  const n = Number(text);
  return n <= bits ? n : undefined;
}

/** Is `ip` inside `net` (same family, same prefix bits)? */
export function netContains(net: IpNet, ip: IpAddr): boolean {
  if (net.family !== ip.family) return false;
  const shift = BigInt(familyBits(net.family) - net.prefix);
  return net.base >> shift === ip.value >> shift;
}

/**
 * Why `text` is not an address or a prefix (`1.2.3.4`, `1.2.3.0/24`, `fd00::1`, `fd00::/8`), or
 * undefined. Lenient where matching is strict: host bits and leading zeros in the length pass here.
 */
export function ipOrCidrProblem(text: string): string | undefined {
  const slash = text.indexOf('/');
  const family = isIP(slash < 0 ? text : text.slice(0, slash));
  if (family === 0) return `${quote(text)} is not an IP address or CIDR`;
  if (slash < 0) return undefined;
  const bits = familyBits(family as IpFamily);
  if (prefixLength(text.slice(slash + 1), bits, true) === undefined) return `${quote(text)} has an invalid prefix length (0-${bits} for IPv${family})`;
  return undefined;
}

// ---- IPv4 ranges as numbers ----

export interface Ipv4Cidr {
  /** Network address (host bits zero), unsigned. */
  base: number;
  prefix: number;
  /** The text it was parsed from, normalised (`10.0.0.0/24`). */
  text: string;
}

const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

/** A dotted quad (no leading zeros, as isIP) → its unsigned value. */
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

/** Parses `a.b.c.d/p`, strictly: returns a reason string when invalid (including host bits set). */
export function parseIPv4Cidr(text: string): Ipv4Cidr | string {
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

/** parseIPv4Cidr for text that must be valid (defaults, validated input): throws the reason. */
export function mustParseIPv4Cidr(text: string): Ipv4Cidr {
  const c = parseIPv4Cidr(text);
  if (typeof c === 'string') throw new Error(c);
  return c;
}

export function cidrSize(c: Ipv4Cidr): number {
  return 2 ** (32 - c.prefix);
}

export function cidrLast(c: Ipv4Cidr): number {
  return (c.base + cidrSize(c) - 1) >>> 0;
}

export function cidrsOverlap(a: Ipv4Cidr, b: Ipv4Cidr): boolean {
  return a.base <= cidrLast(b) && b.base <= cidrLast(a);
}

export function cidrContains(c: Ipv4Cidr, ip: number): boolean {
  return ip >= c.base && ip <= cidrLast(c);
}

/** The n-th address of the range (0 = network address). Throws if outside. */
export function nthAddress(c: Ipv4Cidr, n: number): string {
  if (n < 0 || n >= cidrSize(c)) throw new RangeError(`address #${n} is outside ${c.text}`);
  return formatIPv4((c.base + n) >>> 0);
}

/** Index of an address within a range, or -1. */
export function indexInCidr(c: Ipv4Cidr, ip: string): number {
  const n = parseIPv4(ip);
  if (n === undefined || !cidrContains(c, n)) return -1;
  return n - c.base;
}

// ---- Ports ----

export const MAX_PORT = 65535;

/** A TCP/UDP port a socket can name: an integer 1-65535. */
export function isPort(n: unknown): n is number {
  return typeof n === 'number' && Number.isInteger(n) && n >= 1 && n <= MAX_PORT;
}

/** Decimal digits only, at most 65535 (0 included: istiod keeps it, it then matches nothing). */
export function parsePortDigits(text: string): number | undefined {
  if (!/^\d+$/.test(text)) return undefined;
  const n = Number(text);
  return n <= MAX_PORT ? n : undefined;
}

/** Why `text` is not a port written as a string (1-5 digits, 1-65535), or undefined. */
export function portTextProblem(text: string): string | undefined {
  if (!/^\d{1,5}$/.test(text)) return `${quote(text)} is not a port number`;
  const n = Number(text);
  if (n < 1 || n > MAX_PORT) return `port ${n} is outside 1-${MAX_PORT}`;
  return undefined;
}
