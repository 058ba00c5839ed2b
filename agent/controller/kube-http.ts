// Plain JSON requests to the Kubernetes API server, authenticated the way @kubernetes/client-node's
// KubeConfig says (CA, client certificate, bearer token — re-read from the projected file in a pod).
// The Kubernetes source lists, patches status and posts Events through it rather than through the
// generated typed clients: those turn list metadata into `_continue` and serialise a JavaScript Date
// (milliseconds) where the API's MicroTime wants exactly six fractional digits (the server refuses
// such an Event with 422). Watches go through client-node's own Watch (kube-source.ts).
import { request as httpRequest } from 'node:http';
import { request as httpsRequest, type RequestOptions } from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';
import { ErrorCodes, WeftError } from '../errors.js';

/** A list page (or any answer) is read up to this size; a cluster's 500 pods are a few MiB. */
const MAX_RESPONSE_BYTES = 256 * 1024 * 1024;
const DEFAULT_TIMEOUT_MS = 60_000;

/** The API server answered with an error status: its HTTP code and the Status's reason and message. */
class KubeApiError extends WeftError {
  constructor(
    readonly status: number,
    readonly reason: string,
    message: string,
  ) {
    super(ErrorCodes.CONTROLLER, message);
  }
}

export interface KubeRequest {
  method?: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  query?: Record<string, string | number | undefined>;
  body?: unknown;
  /** Default application/json (for PATCH say which patch: application/merge-patch+json). */
  contentType?: string;
  timeoutMs?: number;
}

export class KubeHttp {
  constructor(readonly kc: KubeConfig) {}

  /** The API server's URL, for logs. */
  get server(): string {
    return this.kc.getCurrentCluster()?.server ?? '';
  }

  async request<T = unknown>(path: string, r: KubeRequest = {}): Promise<T> {
    const cluster = this.kc.getCurrentCluster();
    if (!cluster) throw new WeftError(ErrorCodes.USAGE, 'kubeconfig: no current cluster');
    const url = new URL(cluster.server.replace(/\/+$/, '') + path);
    for (const [k, v] of Object.entries(r.query ?? {})) if (v !== undefined) url.searchParams.set(k, String(v));
    const body = r.body === undefined ? undefined : Buffer.from(JSON.stringify(r.body));
    const opts: RequestOptions = {
      method: r.method ?? 'GET',
      headers: { Accept: 'application/json', ...(body ? { 'Content-Type': r.contentType ?? 'application/json', 'Content-Length': String(body.length) } : {}) },
    };
    await this.kc.applyToHTTPSOptions(opts);
    const plain = url.protocol === 'http:';
    // applyToHTTPSOptions builds a TLS agent; `kubectl proxy` and the like speak plain HTTP.
    if (plain) delete opts.agent;
    const timeoutMs = r.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    return new Promise<T>((resolve, reject) => {
      const req = (plain ? httpRequest : httpsRequest)(url, opts, (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > MAX_RESPONSE_BYTES) {
            req.destroy(new WeftError(ErrorCodes.CONTROLLER, `${r.method ?? 'GET'} ${path}: the answer is larger than ${MAX_RESPONSE_BYTES} bytes`));
            return;
          }
          chunks.push(c);
        });
        res.on('error', reject);
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown;
          try {
            parsed = text ? JSON.parse(text) : undefined;
          } catch {
            parsed = undefined;
          }
          const code = res.statusCode ?? 0;
          if (code >= 200 && code < 300) {
            if (parsed === undefined && text) reject(new WeftError(ErrorCodes.CONTROLLER, `${r.method ?? 'GET'} ${path}: the API server's answer is not JSON`));
            else resolve(parsed as T);
            return;
          }
          const st = (parsed ?? {}) as { reason?: unknown; message?: unknown };
          const reason = typeof st.reason === 'string' ? st.reason : (res.statusMessage ?? '');
          const message = typeof st.message === 'string' ? st.message : text.slice(0, 200);
          reject(new KubeApiError(code, reason, `${r.method ?? 'GET'} ${path}: HTTP ${code}${reason ? ` ${reason}` : ''}${message ? `: ${message}` : ''}`));
        });
      });
      req.setTimeout(timeoutMs, () => req.destroy(new WeftError(ErrorCodes.CONTROLLER, `${r.method ?? 'GET'} ${path}: no answer within ${timeoutMs} ms`)));
      req.on('error', reject);
      req.end(body);
    });
  }
}

/** The HTTP status of an error from KubeHttp or from client-node's Watch (`statusCode`), if it has one. */
export function httpStatusOf(err: unknown): number | undefined {
  if (err instanceof KubeApiError) return err.status;
  const e = err as { statusCode?: unknown; code?: unknown } | undefined;
  if (typeof e?.statusCode === 'number') return e.statusCode;
  if (typeof e?.code === 'number') return e.code;
  return undefined;
}
