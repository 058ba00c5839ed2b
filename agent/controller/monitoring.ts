// The controller's monitoring endpoint (default 127.0.0.1:15014): Prometheus metrics, readiness and a
// JSON status page that `weft status` reads.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { ErrorCodes, WeftError, errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import type { ControllerMetrics } from './metrics.js';
import { parseHostPort } from '../system/host-port.js';

export interface ControllerStatus {
  trustDomain: string;
  rootNamespace: string;
  source: string;
  listen: string;
  registry: { version: number; objects: number; byKind: Record<string, number> };
  connectedAgents: Array<{ node: string; peer: string; since: string; version: number; objects: number }>;
  /** Every Node of the registry and its InternalIP (where its agent serves, e.g. the Observer API on 4244). */
  nodes: Array<{ name: string; internalIP?: string }>;
  /** Every document currently rejected: `file:line: field: reason` and its parts. */
  configProblems: Array<{ file: string; line: number; field: string; reason: string; message: string }>;
  ca: { rootSubject: string; rootNotAfter: string; maxCertTtlSeconds: number };
  certificates: { issued: number; denied: number };
}

export interface MonitoringOptions {
  listen: string;
  metrics: ControllerMetrics;
  status: () => Promise<ControllerStatus>;
  ready: () => boolean;
  log: Logger;
}

function send(res: http.ServerResponse, code: number, type: string, body: string): void {
  res.writeHead(code, { 'content-type': type }).end(body);
}

export class MonitoringServer {
  private readonly server: http.Server;
  port = 0;

  private constructor(private readonly options: MonitoringOptions) {
    this.server = http.createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => send(res, 500, 'text/plain', `${errorMessage(err)}\n`));
    });
  }

  static async start(options: MonitoringOptions): Promise<MonitoringServer> {
    const m = new MonitoringServer(options);
    const { host, port } = parseHostPort(options.listen, '--monitoring');
    await new Promise<void>((resolve, reject) => {
      m.server.once('error', (err) => reject(new WeftError(ErrorCodes.CONTROLLER, `cannot listen on ${options.listen}: ${err.message}`, { cause: err })));
      m.server.listen(port, host, () => resolve());
    });
    m.port = (m.server.address() as AddressInfo).port;
    options.log.info({ listen: `${host}:${m.port}` }, 'controller monitoring listening');
    return m;
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET') return send(res, 405, 'text/plain', 'method not allowed\n');
    switch (path) {
      case '/metrics':
        return send(res, 200, this.options.metrics.registry.contentType, await this.options.metrics.registry.metrics());
      case '/healthz/ready': {
        const ready = this.options.ready();
        return send(res, ready ? 200 : 503, 'text/plain', ready ? 'ready\n' : 'not ready\n');
      }
      case '/debug/status':
        return send(res, 200, 'application/json', JSON.stringify(await this.options.status(), null, 2) + '\n');
      default:
        return send(res, 404, 'text/plain', 'not found (paths: /metrics, /healthz/ready, /debug/status)\n');
    }
  }

  close(): void {
    this.server.close();
    this.server.closeAllConnections();
  }
}
