// The agent's two small HTTP servers: readiness on 15021 (reachable by the kubelet or the lab) and the
// admin API on 15000, bound to loopback only (config dump, capture stats).
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export type AdminRoutes = Record<string, () => unknown>;
/** POST handlers take the query string; a thrown error is the caller's mistake (400). */
export type AdminActions = Record<string, (query: URLSearchParams) => unknown>;

function json(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v), 2);
  res.writeHead(status, { 'content-type': 'application/json' }).end(text + '\n');
}

async function listen(server: http.Server, host: string, port: number): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return (server.address() as AddressInfo).port;
}

export class ReadinessServer {
  private readonly server: http.Server;
  port = 0;

  constructor(private readonly isReady: () => { ready: boolean; reason?: string }) {
    this.server = http.createServer((req, res) => {
      if (req.url !== '/healthz/ready') return json(res, 404, { error: 'not found' });
      const state = this.isReady();
      return json(res, state.ready ? 200 : 503, state);
    });
  }

  async listen(host: string, port: number): Promise<void> {
    this.port = await listen(this.server, host, port);
  }

  close(): void {
    this.server.close();
    this.server.closeAllConnections();
  }
}

export class AdminServer {
  private readonly server: http.Server;
  port = 0;

  constructor(
    private readonly routes: AdminRoutes,
    private readonly actions: AdminActions = {},
  ) {
    this.server = http.createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://admin');
      const path = url.pathname;
      const action = this.actions[path];
      if (req.method === 'POST' && action) {
        try {
          return json(res, 200, action(url.searchParams));
        } catch (err) {
          return json(res, 400, { error: err instanceof Error ? err.message : String(err) });
        }
      }
      const route = this.routes[path];
      if (req.method !== 'GET') return json(res, 405, { error: 'method not allowed' });
      if (!route) return json(res, 404, { error: 'not found', paths: Object.keys(this.routes) });
      try {
        return json(res, 200, route());
      } catch (err) {
        return json(res, 500, { error: String(err) });
      }
    });
  }

  /** Loopback only: the admin API tells too much to be exposed. */
  async listen(port: number): Promise<void> {
    this.port = await listen(this.server, '127.0.0.1', port);
  }

  close(): void {
    this.server.close();
    this.server.closeAllConnections();
  }
}
