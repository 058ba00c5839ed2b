// `HOST:PORT` / `[v6]:PORT` as flags and addresses spell them (--listen, --controller, --monitoring,
// the relay's peers, HBONE's :authority). Shared by every program: the controller, its client, the relay,
// the node proxy.
import { ErrorCodes, WeftError } from '../errors.js';

/** Splits `HOST:PORT` / `[v6]:PORT`; `flag` names what was malformed in the usage error. */
export function parseHostPort(text: string, flag = 'address'): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(text);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new WeftError(ErrorCodes.USAGE, `${flag}: "${text}" is not HOST:PORT`);
  return { host: m[1] ?? m[2]!, port };
}

/** `ip:port`, or `[ip]:port` for IPv6: the inverse of parseHostPort. */
export function formatAuthority(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}
