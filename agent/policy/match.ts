// Value matchers of Istio's L4 authorization: string patterns, IP ranges, ports and peer identity.
// Each one models how istiod translates a policy value for ztunnel and how ztunnel then compares it
// with a connection (istio pilot/.../ambient/authorization.go, ztunnel src/rbac.rs).
import { isIP } from 'node:net';

/**
 * Istio's string pattern: `*` alone means "present and non-empty", `*abc` is a suffix match, `abc*`
 * a prefix match, anything else exact. A leading `*` is checked before a trailing one, as istiod does.
 */
export type StringMatcher =
  | { kind: 'presence' }
  | { kind: 'prefix'; value: string }
  | { kind: 'suffix'; value: string }
  | { kind: 'exact'; value: string };

export function compileString(pattern: string): StringMatcher {
  if (pattern === '*') return { kind: 'presence' };
  if (pattern.startsWith('*')) return { kind: 'suffix', value: pattern.slice(1) };
  if (pattern.endsWith('*')) return { kind: 'prefix', value: pattern.slice(0, -1) };
  return { kind: 'exact', value: pattern };
}

export function matchString(m: StringMatcher, value: string): boolean {
  switch (m.kind) {
    case 'presence':
      return value !== '';
    case 'prefix':
      return value.startsWith(m.value);
    case 'suffix':
      return value.endsWith(m.value);
    case 'exact':
      return value === m.value;
  }
}

/** An IP address as family plus a 32- or 128-bit integer. */
export interface IpAddr {
  family: 4 | 6;
  value: bigint;
}

/** A CIDR range; a single address is a full-length prefix, as istiod converts it. */
export interface IpNet {
  family: 4 | 6;
  base: bigint;
  prefix: number;
}

function parseV4(text: string): bigint {
  return text.split('.').reduce((acc, part) => (acc << 8n) | BigInt(Number(part)), 0n);
}

function parseV6(text: string): bigint {
  // An embedded dotted quad (::ffff:1.2.3.4) stands for the last two 16-bit groups.
  let t = text;
  const lastColon = t.lastIndexOf(':');
  if (t.includes('.', lastColon)) {
    const v4 = parseV4(t.slice(lastColon + 1));
    t = `${t.slice(0, lastColon + 1)}${(v4 >> 16n).toString(16)}:${(v4 & 0xffffn).toString(16)}`;
  }
  const [head, tail] = t.split('::') as [string, string | undefined];
  const headGroups = head === '' ? [] : head.split(':');
  const tailGroups = tail === undefined || tail === '' ? [] : tail.split(':');
  const zeros = tail === undefined ? 0 : 8 - headGroups.length - tailGroups.length;
  const groups = [...headGroups, ...Array<string>(zeros).fill('0'), ...tailGroups];
  return groups.reduce((acc, g) => (acc << 16n) | BigInt(parseInt(g, 16)), 0n);
}

const V4_MAPPED_PREFIX = 0xffffn << 32n;

/**
 * Parses a connection address. IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are reduced to IPv4,
 * as ztunnel canonicalises peer addresses of dual-stack sockets before matching them.
 */
export function parseIp(text: string): IpAddr | undefined {
  const family = isIP(text);
  if (family === 4) return { family: 4, value: parseV4(text) };
  if (family !== 6 || text.includes('%')) return undefined;
  const value = parseV6(text);
  if (value >> 32n === V4_MAPPED_PREFIX >> 32n) return { family: 4, value: value & 0xffffffffn };
  return { family: 6, value };
}

/**
 * Parses a policy's ipBlocks entry: `a.b.c.d`, `a.b.c.d/n`, `x::y` or `x::y/n`. Host bits may be
 * set (Go's netip.ParsePrefix accepts them; ztunnel masks when it compares). Returns undefined for
 * text istiod could not parse: istiod drops such entries rather than rejecting the policy.
 */
export function parseIpNet(text: string): IpNet | undefined {
  const slash = text.indexOf('/');
  const addrText = slash < 0 ? text : text.slice(0, slash);
  const family = isIP(addrText);
  if (family !== 4 && family !== 6) return undefined;
  if (addrText.includes('%')) return undefined;
  const bits = family === 4 ? 32 : 128;
  let prefix = bits;
  if (slash >= 0) {
    const p = text.slice(slash + 1);
    if (!/^(0|[1-9]\d{0,2})$/.test(p) || Number(p) > bits) return undefined;
    prefix = Number(p);
  }
  const value = family === 4 ? parseV4(addrText) : parseV6(addrText);
  return { family, base: value, prefix };
}

export function netContains(net: IpNet, ip: IpAddr): boolean {
  if (net.family !== ip.family) return false;
  const shift = BigInt((net.family === 4 ? 32 : 128) - net.prefix);
  return net.base >> shift === ip.value >> shift;
}

/**
 * Ports in policies are strings; istiod keeps those that parse as a decimal number up to 65535 and
 * drops the rest.
 */
export function parsePort(text: string): number | undefined {
  if (!/^\d+$/.test(text)) return undefined;
  const n = Number(text);
  return n <= 65535 ? n : undefined;
}

/** The service account a `serviceAccounts` entry names: `ns/sa`, or a bare `sa` in the policy's namespace. */
export interface ServiceAccountRef {
  namespace: string;
  serviceAccount: string;
}

export function parseServiceAccount(text: string, policyNamespace: string): ServiceAccountRef {
  const slash = text.indexOf('/');
  if (slash < 0) return { namespace: policyNamespace, serviceAccount: text };
  return { namespace: text.slice(0, slash), serviceAccount: text.slice(slash + 1) };
}

/** The authenticated peer as ztunnel sees it: its SPIFFE identity, or nothing for plaintext. */
export interface PeerIdentity {
  /** `<td>/ns/<ns>/sa/<sa>`, without the `spiffe://` scheme. */
  principal: string;
  namespace: string;
  serviceAccount?: string;
}

const PRINCIPAL = /^([^/]+)\/ns\/([^/]+)\/sa\/([^/]+)$/;

/**
 * Builds the peer identity from the principal. Namespace and service account come from the
 * principal, never from anything the peer claims without a certificate: a connection without a
 * principal has no identity, whatever `sourceNamespace` says.
 */
export function peerIdentity(principal: string | undefined, sourceNamespace: string | undefined): PeerIdentity | undefined {
  if (principal === undefined) return undefined;
  const p = principal.startsWith('spiffe://') ? principal.slice('spiffe://'.length) : principal;
  if (p === '') return undefined;
  const m = PRINCIPAL.exec(p);
  if (m) return { principal: p, namespace: m[2]!, serviceAccount: m[3]! };
  return { principal: p, namespace: sourceNamespace ?? '' };
}
