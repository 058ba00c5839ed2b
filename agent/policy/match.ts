// Value matchers of Istio's L4 authorization: string patterns, IP ranges, ports and peer identity.
// Each one models how istiod translates a policy value for ztunnel and how ztunnel then compares it
// with a connection (istio pilot/.../ambient/authorization.go, ztunnel src/rbac.rs).
import { parseIp as parseAddress, parseIpNet as parsePrefix, parsePortDigits, type IpAddr, type IpNet } from '../net/address.js';

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

export type { IpAddr, IpNet } from '../net/address.js';
export { netContains } from '../net/address.js';

/**
 * Parses a connection address. IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are reduced to IPv4,
 * as ztunnel canonicalises peer addresses of dual-stack sockets before matching them.
 */
export function parseIp(text: string): IpAddr | undefined {
  return parseAddress(text, { mapped: 'unmap' });
}

/**
 * Parses a policy's ipBlocks entry: `a.b.c.d`, `a.b.c.d/n`, `x::y` or `x::y/n`. Host bits may be
 * set (Go's netip.ParsePrefix accepts them; ztunnel masks when it compares). Returns undefined for
 * text istiod could not parse (a zone, `/08`): istiod drops such entries rather than rejecting the policy.
 */
export function parseIpNet(text: string): IpNet | undefined {
  return parsePrefix(text, { zone: 'refuse', bare: 'host', leadingZeros: false });
}

/**
 * Ports in policies are strings; istiod keeps those that parse as a decimal number up to 65535 and
 * drops the rest.
 */
export function parsePort(text: string): number | undefined {
  return parsePortDigits(text);
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
