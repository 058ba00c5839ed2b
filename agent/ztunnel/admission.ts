// Which destinations an inbound connection may be forwarded to at all, before any policy: never one of
// the proxy's own ports and never loopback. A connection to the pod's own 15006 would otherwise be
// forwarded to that same listener again, hop after hop, until the agent ran out of descriptors; and
// loopback inside the pod is the app's private side, which no peer may reach through the mesh
// (ztunnel refuses both too). Pure functions: the inbound paths (HBONE, plaintext, same-node) call
// them alike, and tests call them without sockets.
import { isIPv4, isIPv6 } from 'node:net';
import { PROXY_PORTS } from '../config.js';

export function isLoopback(ip: string): boolean {
  if (isIPv4(ip)) return ip.startsWith('127.');
  if (!isIPv6(ip)) return false;
  const lower = ip.toLowerCase();
  if (lower === '::1' || lower === '0:0:0:0:0:0:0:1') return true;
  // Node writes an IPv4-mapped peer as ::ffff:a.b.c.d.
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(lower);
  return mapped ? mapped[1]!.startsWith('127.') : false;
}

/**
 * Why a connection to `dst` must not be forwarded to the app of the pod at `podIp`, or undefined when
 * it may (policy still decides). The destination must be the pod itself, on a port that is not the
 * proxy's.
 */
export function destinationProblem(dst: { ip: string; port: number }, podIp: string): string | undefined {
  if (isLoopback(dst.ip)) return `loopback destination ${dst.ip} is not reachable through the mesh`;
  if (dst.ip !== podIp) return `destination ${dst.ip} is not this pod (${podIp})`;
  if (!Number.isInteger(dst.port) || dst.port < 1 || dst.port > 65535) return `destination port ${dst.port} is not a port`;
  if (PROXY_PORTS.has(dst.port)) return `destination port ${dst.port} is the proxy's own`;
  return undefined;
}
