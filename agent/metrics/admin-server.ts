// The agent's two small HTTP servers: readiness on 15021 (reachable by the kubelet or the lab) and the
// admin API on 15000, bound to loopback only (config dump, capture stats, and actions).
//
// Loopback is not enough for the admin API: a web page in a browser on the node can send requests to
// 127.0.0.1 (a cross-site form POST needs no permission) or reach it by DNS rebinding. So every request
// must name a loopback Host, none may carry an Origin (browsers add one to cross-origin and to every
// POST; tools never do), and a POST must carry `x-weft-admin: 1`, a header no page can add to a
// cross-origin request without a CORS preflight, which this server never grants.
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export type AdminRoutes = Record<string, () => unknown>;
/** POST handlers take the query string; a thrown error is the caller's mistake (400). */
export type AdminActions = Record<string, (query: URLSearchParams) => unknown>;

/** The header (and value) every admin POST must carry. */
export const ADMIN_HEADER = 'x-weft-admin';
export const ADMIN_HEADER_VALUE = '1';

const LOOPBACK_HOST = /^(localhost|127\.\d{1,3}\.\d{1,3}\.\d{1,3}|\[::1\])(:\d{1,5})?$/i;

/** Why a request to the admin API is refused (403), or undefined when it may go on. */
export function adminRequestProblem(req: http.IncomingMessage): string | undefined {
  if (req.headers.origin !== undefined) return 'requests from a web page (Origin header) are refused';
  const host = req.headers.host;
  if (host === undefined || !LOOPBACK_HOST.test(host)) return `Host must be a loopback address, not ${JSON.stringify(host ?? '')}`;
  if (req.method !== 'GET' && req.method !== 'HEAD' && req.headers[ADMIN_HEADER] !== ADMIN_HEADER_VALUE) {
    return `${req.method ?? 'this method'} needs the header ${ADMIN_HEADER}: ${ADMIN_HEADER_VALUE}`;
  }
  return undefined;
}

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
      const problem = adminRequestProblem(req);
      if (problem) return json(res, 403, { error: problem });
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
