// The agent's Prometheus endpoint: `GET /metrics` (the agent listens on 0.0.0.0:15020 in its node
// netns, where ztunnel serves its metrics); anything else is 404, other methods 405.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { ErrorCodes, WeftError, errorMessage } from '../errors.js';

/** What the server exposes: AgentMetrics, or any registry-like source. */
export interface MetricsSource {
  metrics(): Promise<string>;
  readonly contentType: string;
}

export class MetricsServer {
  private readonly server: http.Server;
  port = 0;

  constructor(private readonly source: MetricsSource) {
    this.server = http.createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0];
      if (path !== '/metrics') return void res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      if (req.method !== 'GET' && req.method !== 'HEAD') return void res.writeHead(405, { 'content-type': 'text/plain', allow: 'GET' }).end('method not allowed\n');
      this.source.metrics().then(
        (text) => res.writeHead(200, { 'content-type': this.source.contentType }).end(req.method === 'HEAD' ? undefined : text),
        (err: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`${errorMessage(err)}\n`),
      );
    });
  }

  async listen(host: string, port: number): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => reject(new WeftError(ErrorCodes.USAGE, `metrics server cannot listen on ${host}:${port}: ${err.message}`, { cause: err }));
      this.server.once('error', onError);
      this.server.listen(port, host, () => {
        this.server.off('error', onError);
        resolve();
      });
    });
    this.port = (this.server.address() as AddressInfo).port;
  }

  close(): void {
    this.server.close();
    this.server.closeAllConnections();
  }
}
