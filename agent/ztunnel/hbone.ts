// HBONE: TCP tunnelled in HTTP/2 CONNECT streams over mutual TLS to port 15008, as Istio ambient
// does it. Constants and headers shared by the client pool and the server.

import { formatAuthority } from '../system/host-port.js';
import { isIPv4, isIPv6 } from 'node:net';

// The port is the datapath's: sk_lookup leaves it to the HBONE listener (bpf/include/weft.h).
export { HBONE_PORT } from '../datapath/layout.js';

/** Flow control as ztunnel sets it: large windows and frames so a stream is not window-bound. */
export const HBONE_SETTINGS = {
  initialWindowSize: 4 * 1024 * 1024,
  maxFrameSize: 1024 * 1024,
  maxConcurrentStreams: 100,
} as const;
export const HBONE_CONNECTION_WINDOW = 16 * 1024 * 1024;
export const MAX_STREAMS_PER_CONNECTION = 100;
export const POOL_IDLE_MS = 5 * 60 * 1000;

export interface SourceInfo {
  namespace: string;
  pod: string;
  ip: string;
  /** The application socket's own port (capture rewrote only its destination). */
  port: number;
  serviceName?: string;
}

/** The request headers of an HBONE CONNECT, as ztunnel sends them. */
export function connectHeaders(authority: string, src: SourceInfo, serviceHost?: string): Record<string, string> {
  const baggage = [`k8s.namespace.name=${src.namespace}`, `k8s.pod.name=${src.pod}`, ...(src.serviceName ? [`service.name=${src.serviceName}`] : [])];
  return {
    ':method': 'CONNECT',
    ':authority': authority,
    forwarded: `for="${formatAuthority(src.ip, src.port)}"${serviceHost ? `;host=${serviceHost}` : ''}`,
    baggage: baggage.join(','),
  };
}

/** The client's address from a `forwarded: for="ip:port"` header (RFC 7239), if well formed. */
export function forwardedFor(header: string | string[] | undefined): { ip: string; port: number } | undefined {
  const value = Array.isArray(header) ? header[0] : header;
  const m = /(?:^|[;,\s])for="?([^";,]+)"?/i.exec(value ?? '');
  return m ? parseAuthority(m[1]) : undefined;
}

// The longest authority we produce: `[` + 39 hex-and-colon characters + `]:65535`.
const MAX_AUTHORITY_LENGTH = 47;
const IPV4 = /^(?:0|[1-9]\d{0,2})(?:\.(?:0|[1-9]\d{0,2})){3}$/;
const IPV6_CHARS = /^[0-9a-fA-F:]+$/;
const PORT = /^[1-9]\d{0,4}$/;

/**
 * The target of a CONNECT (or a `forwarded` address): exactly `a.b.c.d:port` or `[ipv6]:port`, port
 * 1–65535, and nothing else. This is a security boundary — the destination authorizes and connects
 * to what it returns — so it refuses every form another parser might read differently: host names,
 * userinfo (`x@ip:port`), paths, lists (`,`), spaces, percent-encoding and IPv6 zone ids, leading
 * zeros (octal to some parsers), IPv4 inside brackets, and trailing junk. IPv6 comes back in its
 * canonical form (lower case, compressed) so comparisons with a pod's address hold.
 */
export function parseAuthority(authority: string | undefined): { ip: string; port: number } | undefined {
  if (typeof authority !== 'string' || authority.length === 0 || authority.length > MAX_AUTHORITY_LENGTH) return undefined;
  const colon = authority.lastIndexOf(':');
  if (colon <= 0) return undefined;
  const host = authority.slice(0, colon);
  const portText = authority.slice(colon + 1);
  if (!PORT.test(portText)) return undefined;
  const port = Number(portText);
  if (port > 65535) return undefined;
  if (host.startsWith('[')) {
    if (!host.endsWith(']')) return undefined;
    const inner = host.slice(1, -1);
    if (!IPV6_CHARS.test(inner) || !isIPv6(inner)) return undefined;
    return { ip: canonicalIPv6(inner), port };
  }
  if (!IPV4.test(host) || !isIPv4(host)) return undefined;
  return { ip: host, port };
}

/** RFC 5952 text for an IPv6 address already known to be valid (hex groups only). */
function canonicalIPv6(ip: string): string {
  // WHATWG URL serializes IPv6 hosts exactly as RFC 5952 asks: lower case, longest zero run compressed.
  return new URL(`http://[${ip}]/`).hostname.slice(1, -1);
}
