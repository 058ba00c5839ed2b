// HBONE: TCP tunnelled in HTTP/2 CONNECT streams over mutual TLS to port 15008, as Istio ambient
// does it. Constants and headers shared by the client pool and the server.

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

/** `ip:port` or `[ipv6]:port` → parts, or undefined when malformed. */
export function parseAuthority(authority: string | undefined): { ip: string; port: number } | undefined {
  if (!authority) return undefined;
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|(\d{1,3}(?:\.\d{1,3}){3})):(\d{1,5})$/.exec(authority);
  if (!m) return undefined;
  const port = Number(m[3]);
  if (port < 1 || port > 65535) return undefined;
  return { ip: (m[1] ?? m[2])!, port };
}

export function formatAuthority(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

