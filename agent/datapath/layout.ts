// The TypeScript mirror of bpf/include/weft.h: constants and the byte layout of every struct the
// agent reads or writes in a BPF map or the event ring. Offsets are explicit; change both together.
import { endianness } from 'node:os';
import { isIPv4, isIPv6 } from 'node:net';

export const PROXY_MARK = 0x539;
export const OUTBOUND_PORT = 15001;
export const INBOUND_PORT = 15006;
export const HBONE_PORT = 15008;

const AF_INET = 2;
const AF_INET6 = 10;

export const EnrollState = { READY: 1, PENDING: 2 } as const;
export type EnrollState = (typeof EnrollState)[keyof typeof EnrollState];

export const ExcludeBits = { OUTBOUND: 1, INBOUND: 2 } as const;

export const EventKind = { 1: 'STEERED', 2: 'PASSED', 3: 'REFUSED', 4: 'CLOSED' } as const;
export type EventKindName = (typeof EventKind)[keyof typeof EventKind];
export const Direction = { 1: 'outbound', 2: 'inbound' } as const;
export type DirectionName = (typeof Direction)[keyof typeof Direction];
export const Reason = {
  0: 'NONE',
  1: 'EXCLUDED_PORT',
  2: 'PROXY_SOCKET',
  3: 'LOOPBACK',
  4: 'PROXY_NOT_READY',
  5: 'NO_LISTENER',
  6: 'PROXY_PORT',
} as const;
export type ReasonName = (typeof Reason)[keyof typeof Reason];

/** Scalars in BPF maps are in the host's byte order; addresses are in network order. */
const LE = endianness() === 'LE';
const u16 = {
  read: (b: Buffer, o: number) => (LE ? b.readUInt16LE(o) : b.readUInt16BE(o)),
  write: (b: Buffer, v: number, o: number) => (LE ? b.writeUInt16LE(v, o) : b.writeUInt16BE(v, o)),
};
const u32 = {
  read: (b: Buffer, o: number) => (LE ? b.readUInt32LE(o) : b.readUInt32BE(o)),
  write: (b: Buffer, v: number, o: number) => (LE ? b.writeUInt32LE(v, o) : b.writeUInt32BE(v, o)),
};
const u64 = {
  read: (b: Buffer, o: number) => (LE ? b.readBigUInt64LE(o) : b.readBigUInt64BE(o)),
  write: (b: Buffer, v: bigint, o: number) => (LE ? b.writeBigUInt64LE(v, o) : b.writeBigUInt64BE(v, o)),
};
export const hostOrder = { u16, u32, u64 };

export interface SockAddr {
  ip: string;
  port: number;
}

/** Write an IP address into 16 bytes (IPv4 in the first four), return its AF_* family. */
function writeIp(buf: Buffer, offset: number, ip: string): number {
  if (isIPv4(ip)) {
    ip.split('.').forEach((part, i) => buf.writeUInt8(Number(part), offset + i));
    return AF_INET;
  }
  if (isIPv6(ip)) {
    const words = expandIPv6(ip);
    words.forEach((w, i) => buf.writeUInt16BE(w, offset + i * 2));
    return AF_INET6;
  }
  throw new TypeError(`not an IP address: ${ip}`);
}

function readIp(buf: Buffer, offset: number, family: number): string {
  if (family === AF_INET) return [0, 1, 2, 3].map((i) => buf[offset + i]).join('.');
  const words: string[] = [];
  for (let i = 0; i < 8; i++) words.push(buf.readUInt16BE(offset + i * 2).toString(16));
  return compressIPv6(words);
}

function expandIPv6(ip: string): number[] {
  let text = ip;
  const tail: number[] = [];
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4?.[1]) {
    const p = v4[1].split('.').map(Number) as [number, number, number, number];
    tail.push((p[0] << 8) | p[1], (p[2] << 8) | p[3]);
    text = text.slice(0, -v4[1].length) + (text.endsWith('::' + v4[1]) ? '' : '0');
    if (text.endsWith(':0')) text = text.slice(0, -2);
  }
  const [head = '', rest] = text.split('::');
  const parse = (s: string) => (s ? s.split(':').map((h) => parseInt(h, 16)) : []);
  const left = parse(head);
  const right = rest === undefined ? [] : parse(rest);
  const fill = 8 - tail.length - left.length - right.length;
  return [...left, ...Array<number>(rest === undefined ? 0 : fill).fill(0), ...right, ...tail];
}

function compressIPv6(words: string[]): string {
  const text = words.join(':');
  const runs = [...text.matchAll(/(^|:)0(:0)+(:|$)/g)];
  const longest = runs.sort((a, b) => b[0].length - a[0].length)[0];
  if (!longest) return text;
  return text.slice(0, longest.index) + '::' + text.slice((longest.index ?? 0) + longest[0].length);
}

/** struct weft_sockaddr: addr[16] @0, port u16 @16, family u8 @18, pad @19 — 20 bytes. */
export const SOCKADDR_SIZE = 20;
export function encodeSockAddr(sa: SockAddr, buf = Buffer.alloc(SOCKADDR_SIZE), offset = 0): Buffer {
  const family = writeIp(buf, offset, sa.ip);
  u16.write(buf, sa.port, offset + 16);
  buf.writeUInt8(family, offset + 18);
  return buf;
}
export function decodeSockAddr(buf: Buffer, offset = 0): SockAddr {
  const family = buf.readUInt8(offset + 18);
  return { ip: readIp(buf, offset, family), port: u16.read(buf, offset + 16) };
}

/** struct weft_enrollment: state u32, pad u32. */
export function encodeEnrollment(state: EnrollState): Buffer {
  const b = Buffer.alloc(8);
  u32.write(b, state, 0);
  return b;
}
export function decodeEnrollment(b: Buffer): number {
  return u32.read(b, 0);
}

export function encodeU64(v: bigint): Buffer {
  const b = Buffer.alloc(8);
  u64.write(b, v, 0);
  return b;
}
export function decodeU64(b: Buffer, offset = 0): bigint {
  return u64.read(b, offset);
}
export function encodePort(port: number): Buffer {
  const b = Buffer.alloc(2);
  u16.write(b, port, 0);
  return b;
}
export function decodePort(b: Buffer): number {
  return u16.read(b, 0);
}

/** struct weft_orig_dst: dst @0 (20), pad 4, netns_cookie @24, start_ns @32 — 40 bytes. */
export interface OriginalDst {
  dst: SockAddr;
  netnsCookie: bigint;
  startNs: bigint;
}
export function decodeOriginalDst(b: Buffer): OriginalDst {
  return { dst: decodeSockAddr(b, 0), netnsCookie: u64.read(b, 24), startNs: u64.read(b, 32) };
}

/** struct weft_tuple_key: netns_cookie @0, src @8 (20), pad 4 — 32 bytes. */
export function encodeTupleKey(netnsCookie: bigint, src: SockAddr): Buffer {
  const b = Buffer.alloc(32);
  u64.write(b, netnsCookie, 0);
  encodeSockAddr(src, b, 8);
  return b;
}

/** struct weft_ip_key: addr[16] @0, family u32 @16 — 20 bytes. */
export function encodeIpKey(ip: string): Buffer {
  const b = Buffer.alloc(20);
  const family = writeIp(b, 0, ip);
  u32.write(b, family, 16);
  return b;
}

/** struct weft_event — 96 bytes; see bpf/include/weft.h. */
export const EVENT_SIZE = 96;
export interface CaptureEvent {
  /** CLOCK_MONOTONIC nanoseconds, as bpf_ktime_get_ns() gives them. */
  monotonicNs: bigint;
  netnsCookie: bigint;
  socketCookie: bigint;
  src: SockAddr | undefined;
  dst: SockAddr;
  kind: EventKindName;
  direction: DirectionName;
  reason: ReasonName;
  bytesSent: bigint;
  bytesReceived: bigint;
  durationNs: bigint;
}
export function decodeEvent(b: Buffer): CaptureEvent {
  if (b.length < EVENT_SIZE) throw new RangeError(`capture event of ${b.length} bytes, expected ${EVENT_SIZE}`);
  const srcFamily = b.readUInt8(24 + 18);
  return {
    monotonicNs: u64.read(b, 0),
    netnsCookie: u64.read(b, 8),
    socketCookie: u64.read(b, 16),
    src: srcFamily === 0 ? undefined : decodeSockAddr(b, 24),
    dst: decodeSockAddr(b, 44),
    kind: EventKind[b.readUInt8(64) as keyof typeof EventKind] ?? 'PASSED',
    direction: Direction[b.readUInt8(65) as keyof typeof Direction] ?? 'outbound',
    reason: Reason[b.readUInt8(66) as keyof typeof Reason] ?? 'NONE',
    bytesSent: u64.read(b, 72),
    bytesReceived: u64.read(b, 80),
    durationNs: u64.read(b, 88),
  };
}

/** struct weft_upstream_key: src sockaddr @0 (20), dst_port u16 @20, pad — 24 bytes. */
export function encodeUpstreamKey(src: SockAddr, dstPort: number): Buffer {
  const b = Buffer.alloc(24);
  encodeSockAddr(src, b, 0);
  u16.write(b, dstPort, 20);
  return b;
}
