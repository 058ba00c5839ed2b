// The TypeScript mirror of bpf/include/weft.h: constants and the byte layout of every struct the
// agent reads or writes in a BPF map or the event ring. Offsets are explicit; change both together.
import { isIPv4, isIPv6 } from 'node:net';
import { Marks, Ports } from '../config.js';
import { decode, encode, ipv4, ipv6, pad, struct, u16, u32, u64, u8, type Codec, type StructLayout } from '../../native/codec.js';

// The values bpf/include/weft.h compiles in (WEFT_PROXY_MARK, WEFT_*_PORT), from the one config.
export const PROXY_MARK = Marks.proxy;
export const APP_MARK = Marks.app;
export const OUTBOUND_PORT = Ports.outbound;
export const INBOUND_PORT = Ports.inbound;
export const HBONE_PORT = Ports.hbone;

const AF_INET = 2;
const AF_INET6 = 10;

export const EnrollState = { READY: 1, PENDING: 2 } as const;
export type EnrollState = (typeof EnrollState)[keyof typeof EnrollState];

export const ExcludeBits = { OUTBOUND: 1, INBOUND: 2 } as const;
/** Bits of weft_upstreams values. */
export const UpstreamBits = { PASS: 1, SPLICE: 2 } as const;

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
  7: 'IPV6',
} as const;
export type ReasonName = (typeof Reason)[keyof typeof Reason];

export interface SockAddr {
  ip: string;
  port: number;
}

export const SOCKADDR_SIZE = 20;

function family(ip: string): number {
  if (isIPv4(ip)) return AF_INET;
  if (isIPv6(ip)) return AF_INET6;
  throw new TypeError(`not an IP address: ${ip}`);
}

/** `__u8 addr[16]` holding an IPv4 address in its first four bytes, or an IPv6 address. */
const ip16: Codec<string> = {
  size: 16,
  align: 1, // a __u8 array: struct weft_sockaddr is 2-aligned
  encode(ip, buf, off) {
    buf.fill(0, off, off + 16);
    (family(ip) === AF_INET ? ipv4 : ipv6).encode(ip, buf, off);
  },
  // The family lives outside the address; the structs below decode it together with it.
  decode: (buf, off) => ipv6.decode(buf, off),
};

/** struct weft_sockaddr's bytes: addr[16] @0, port u16 (host order) @16, family u8 @18, pad — 20 bytes. */
const SockAddrC = struct({ addr: ip16, port: u16, family: u8, pad: pad(1) }, { size: SOCKADDR_SIZE });
const saOff = SockAddrC.offsets;

/** struct weft_sockaddr as { ip, port }: the family is derived from the address. Carries SockAddrC's
 * layout, so structs that embed it are checked against the C side like any other. */
const sockAddr: Codec<SockAddr> & StructLayout = {
  size: SockAddrC.size,
  align: SockAddrC.align,
  offsets: SockAddrC.offsets,
  fields: SockAddrC.fields,
  encode(v, buf, off) {
    ip16.encode(v.ip, buf, off + saOff.addr);
    u16.encode(v.port, buf, off + saOff.port);
    u8.encode(family(v.ip), buf, off + saOff.family);
    u8.encode(0, buf, off + saOff.pad);
  },
  decode(buf, off) {
    const ip = u8.decode(buf, off + saOff.family) === AF_INET ? ipv4.decode(buf, off + saOff.addr) : ipv6.decode(buf, off + saOff.addr);
    return { ip, port: u16.decode(buf, off + saOff.port) };
  },
};

const Enrollment = struct({ state: u32, pad: pad(4) }, { size: 8 });
const OriginalDstC = struct({ dst: sockAddr, netns_cookie: u64, start_ns: u64 }, { size: 40 });
const SockKeyC = struct({ netns_cookie: u64, local: sockAddr, remote: sockAddr }, { size: 48 });
const SpliceCtlC = struct({ target: SockKeyC, forwarded: u64, armed: u32, pad: pad(4) }, { size: 64 });
const Config = struct({ flags: u32, pad: pad(4) }, { size: 8 });
const TupleKey = struct({ netns_cookie: u64, src: sockAddr }, { size: 32 });
const IpKey = struct({ addr: ip16, family: u32 }, { size: 20 });
const Event = struct(
  {
    ts_ns: u64,
    netns_cookie: u64,
    socket_cookie: u64,
    src: sockAddr,
    dst: sockAddr,
    kind: u8,
    direction: u8,
    reason: u8,
    pad: pad(5),
    bytes_sent: u64,
    bytes_received: u64,
    duration_ns: u64,
  },
  { size: 96 },
);

export function encodeSockAddr(sa: SockAddr, buf = Buffer.alloc(SOCKADDR_SIZE), offset = 0): Buffer {
  sockAddr.encode(sa, buf, offset);
  return buf;
}
export function decodeSockAddr(buf: Buffer, offset = 0): SockAddr {
  return sockAddr.decode(buf, offset);
}

export function encodeEnrollment(state: EnrollState): Buffer {
  return encode(Enrollment, { state });
}
export function decodeEnrollment(b: Buffer): number {
  return decode(Enrollment, b).state;
}

export function encodeU64(v: bigint): Buffer {
  return encode(u64, v);
}
export function decodeU64(b: Buffer, offset = 0): bigint {
  return u64.decode(b, offset);
}
/** Ports as map keys are host order (the programs compare them with ctx fields). */
export function encodePort(port: number): Buffer {
  return encode(u16, port);
}
export function decodePort(b: Buffer): number {
  return decode(u16, b);
}

/** struct weft_orig_dst. */
export interface OriginalDst {
  dst: SockAddr;
  netnsCookie: bigint;
  startNs: bigint;
}
export function decodeOriginalDst(b: Buffer): OriginalDst {
  const v = decode(OriginalDstC, b);
  return { dst: v.dst, netnsCookie: v.netns_cookie, startNs: v.start_ns };
}

/** struct weft_sock_key: a connected socket by its netns and both ends. */
export interface SockKey {
  netnsCookie: bigint;
  local: SockAddr;
  remote: SockAddr;
}
export function encodeSockKey(k: SockKey): Buffer {
  return encode(SockKeyC, { netns_cookie: k.netnsCookie, local: k.local, remote: k.remote });
}

/** struct weft_splice_ctl: the agent's half of a splice. */
export interface SpliceCtl {
  target: SockKey;
  forwarded: bigint;
  armed: boolean;
}
export function encodeSpliceCtl(c: SpliceCtl): Buffer {
  const target = { netns_cookie: c.target.netnsCookie, local: c.target.local, remote: c.target.remote };
  return encode(SpliceCtlC, { target, forwarded: c.forwarded, armed: c.armed ? 1 : 0 });
}

const SpliceCountC = struct({ passed: u64, redirected: u64 }, { size: 16 });

/** struct weft_splice_count: what the kernel counted for one app socket. */
export interface SpliceCount {
  passed: bigint;
  redirected: bigint;
}
export function decodeSpliceCount(b: Buffer): SpliceCount {
  return decode(SpliceCountC, b);
}

/** struct weft_config and its bits. */
export const ConfigBits = { SPLICE: 1 } as const;
export function encodeConfig(flags: number): Buffer {
  return encode(Config, { flags });
}

/** struct weft_tuple_key: the client socket's local address inside its netns. */
export function encodeTupleKey(netnsCookie: bigint, src: SockAddr): Buffer {
  return encode(TupleKey, { netns_cookie: netnsCookie, src });
}

/** struct weft_ip_key: a pod IP, whose inbound listener is the SOCKHASH value. */
export function encodeIpKey(ip: string): Buffer {
  return encode(IpKey, { addr: ip, family: family(ip) });
}

/** Every struct of bpf/include/weft.h the agent reads or writes, by its C name, laid out as the codecs
 * above encode it. test/datapath-btf-layout.test.ts holds each against the compiled objects' BTF. */
export const StructLayouts: Readonly<Record<string, StructLayout>> = {
  weft_sockaddr: sockAddr,
  weft_enrollment: Enrollment,
  weft_orig_dst: OriginalDstC,
  weft_tuple_key: TupleKey,
  weft_ip_key: IpKey,
  weft_sock_key: SockKeyC,
  weft_splice_ctl: SpliceCtlC,
  weft_splice_count: SpliceCountC,
  weft_config: Config,
  weft_event: Event,
};


/** struct weft_event — 96 bytes; see bpf/include/weft.h. */
export const EVENT_SIZE = Event.size;
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
  const e = decode(Event, b);
  const srcFamily = u8.decode(b, Event.offsets.src + saOff.family);
  return {
    monotonicNs: e.ts_ns,
    netnsCookie: e.netns_cookie,
    socketCookie: e.socket_cookie,
    src: srcFamily === 0 ? undefined : e.src,
    dst: e.dst,
    kind: EventKind[e.kind as keyof typeof EventKind] ?? 'PASSED',
    direction: Direction[e.direction as keyof typeof Direction] ?? 'outbound',
    reason: Reason[e.reason as keyof typeof Reason] ?? 'NONE',
    bytesSent: e.bytes_sent,
    bytesReceived: e.bytes_received,
    durationNs: e.duration_ns,
  };
}

