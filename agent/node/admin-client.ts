// Reaching a node agent's loopback-only admin API from outside its network namespace: the connection is made inside the
// node's network namespace by the native addon, then spoken to with Node's http client.
import http from 'node:http';
import net from 'node:net';
import { connectInNetns } from '../../native/index.js';
import { Ports } from '../config.js';
import { ADMIN_HEADER, ADMIN_HEADER_VALUE } from '../metrics/admin-server.js';

export function agentAdminGet<T = unknown>(nodeNetns: string, path: string, port: number = Ports.admin): Promise<T> {
  return agentAdminRequest<T>('GET', nodeNetns, path, port);
}

/** POST to an admin action, e.g. `/fast_paths?set=none`. */
export function agentAdminPost<T = unknown>(nodeNetns: string, path: string, port: number = Ports.admin): Promise<T> {
  return agentAdminRequest<T>('POST', nodeNetns, path, port);
}

async function agentAdminRequest<T>(method: 'GET' | 'POST', nodeNetns: string, path: string, port: number): Promise<T> {
  const fd = await connectInNetns(nodeNetns, { host: '127.0.0.1', port, timeoutMs: 5000 });
  const socket = new net.Socket({ fd, readable: true, writable: true });
  return new Promise<T>((resolve, reject) => {
    // A loopback Host, and the header the admin API wants on every action (it refuses POSTs without it).
    const headers = { host: `127.0.0.1:${port}`, [ADMIN_HEADER]: ADMIN_HEADER_VALUE };
    const req = http.request({ path, method, headers, createConnection: () => socket }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const body = Buffer.concat(chunks).toString();
        if (res.statusCode !== 200) return reject(new Error(`${method} ${path}: ${res.statusCode} ${body}`));
        try {
          resolve(JSON.parse(body) as T);
        } catch (err) {
          reject(err instanceof Error ? err : new Error(String(err)));
        }
      });
    });
    req.on('error', reject);
    req.end();
  });
}

/** Poll `check` until it returns a value (not undefined), or fail after `timeoutMs` with `what`. */
export async function eventually<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
