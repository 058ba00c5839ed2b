// How the node agent learns about its own pods without waiting for the control plane: the container
// runtime's CNI call. The chained CNI plugin (and the lab, which calls it the way a runtime does)
// posts ADD after the pod's network is set up and before its containers start, and waits for the
// answer: by then capture is attached, so the pod's first packet is already meshed or refused —
// never plaintext around the mesh, even with the controller down.
//
//   POST /v1/cni/add   {containerId, netns, podNamespace, podName, ips, labels?, namespaceLabels?}
//   POST /v1/cni/del   {containerId, podNamespace, podName}
//   POST /v1/cni/check {containerId, podNamespace, podName} → {state}, or UNKNOWN when this agent
//                      does not hold that sandbox of the pod (the plugin's CHECK)
//   POST /v1/handover  {path}: a new agent (an upgrade) asks this one for its listening sockets,
//                      sent to the unix socket at `path` (agent/node/handover.ts)
//
// The network namespace the privileged agent enters comes from here (the runtime) or from the kernel
// (pod-scan.ts, at start), never from an object a tenant can write. Served on a unix socket that only root can reach. Every pod is kept
// as one small file in the agent's state directory, so a restarted agent knows its pods at once.
import { chmodSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { dirname, join } from 'node:path';
import { isIP } from 'node:net';
import { ErrorCodes, WeftError, errorMessage } from '../errors.js';
import type { Logger } from '../log.js';

/** A pod of this node as its runtime described it. */
export interface LocalPod {
  namespace: string;
  name: string;
  containerId: string;
  /** Path of the pod's network namespace (e.g. /var/run/netns/cni-…). */
  netns: string;
  ips: string[];
  /** The pod's and its namespace's labels, when the caller knows them. */
  labels?: Record<string, string>;
  namespaceLabels?: Record<string, string>;
}

export type CaptureState = 'READY' | 'PENDING' | 'NOT_ENROLLED';
/** CHECK's answer: the pod's state, or UNKNOWN when the agent does not hold that sandbox of it. */
export type CheckState = CaptureState | 'UNKNOWN';
export type PodRef = { namespace: string; name: string; containerId: string };

export interface PodChannelHandlers {
  /** Attach capture (or decide the pod is not enrolled) and resolve with the state it is in. */
  add(pod: LocalPod): Promise<CaptureState>;
  del(key: PodRef): Promise<void>;
  check(key: PodRef): CheckState;
  handOver(path: string): Promise<{ pods: number }>;
}

const MAX_BODY = 64 * 1024;
const ROUTES = new Set(['/v1/cni/add', '/v1/cni/del', '/v1/cni/check', '/v1/handover']);
const NAME = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

export const podKeyOf = (p: { namespace: string; name: string }): string => `${p.namespace}/${p.name}`;

function field<T>(body: Record<string, unknown>, name: string, check: (v: unknown) => v is T, what: string): T {
  const v = body[name];
  if (!check(v)) throw new WeftError(ErrorCodes.USAGE, `${name}: ${what}`);
  return v;
}

const isName = (v: unknown): v is string => typeof v === 'string' && NAME.test(v);
const isLabels = (v: unknown): v is Record<string, string> =>
  typeof v === 'object' && v !== null && !Array.isArray(v) && Object.values(v).every((x) => typeof x === 'string');

const isContainerId = (v: unknown): v is string => typeof v === 'string' && /^[A-Za-z0-9_.-]{1,256}$/.test(v);

/** Validate the pod a request names (every request has it); a WEFT_ERR_USAGE error names the field. */
function parseRef(body: unknown): PodRef & { body: Record<string, unknown> } {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new WeftError(ErrorCodes.USAGE, 'the request body must be a JSON object');
  const b = body as Record<string, unknown>;
  return {
    body: b,
    namespace: field(b, 'podNamespace', isName, 'a Kubernetes namespace name'),
    name: field(b, 'podName', isName, 'a Kubernetes pod name'),
    containerId: field(b, 'containerId', isContainerId, 'a container id'),
  };
}

/** Validate an ADD request body; a WEFT_ERR_USAGE error names the field. */
export function parseAdd(body: unknown): LocalPod {
  const { body: b, namespace, name, containerId } = parseRef(body);
  const pod: LocalPod = {
    namespace,
    name,
    containerId,
    netns: field(b, 'netns', (v): v is string => typeof v === 'string' && v.startsWith('/') && !v.includes('\0') && !v.split('/').includes('..'), 'an absolute path'),
    ips: field(b, 'ips', (v): v is string[] => Array.isArray(v) && v.length > 0 && v.every((ip) => typeof ip === 'string' && isIP(ip) !== 0), 'a non-empty list of IP addresses'),
  };
  if (b.labels !== undefined) pod.labels = { ...field(b, 'labels', isLabels, 'a map of strings') };
  if (b.namespaceLabels !== undefined) pod.namespaceLabels = { ...field(b, 'namespaceLabels', isLabels, 'a map of strings') };
  return pod;
}

function parseDel(body: unknown): PodRef {
  const { namespace, name, containerId } = parseRef(body);
  return { namespace, name, containerId };
}

/** The pods of this node, one JSON file each under `dir` (written atomically). */
export class LocalPodStore {
  constructor(private readonly dir: string) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  }

  private file(key: string): string {
    return join(this.dir, `${key.replace('/', '_')}.json`);
  }

  save(pod: LocalPod): void {
    const path = this.file(podKeyOf(pod));
    writeFileSync(`${path}.tmp`, JSON.stringify(pod), { mode: 0o600 });
    renameSync(`${path}.tmp`, path);
  }

  remove(key: string): void {
    rmSync(this.file(key), { force: true });
  }

  /** Every saved pod; a file that cannot be read is reported and skipped. */
  load(log: Logger): LocalPod[] {
    const out: LocalPod[] = [];
    for (const name of readdirSync(this.dir)) {
      if (!name.endsWith('.json')) continue;
      try {
        out.push(parseAdd(toRequest(JSON.parse(readFileSync(join(this.dir, name), 'utf8')) as LocalPod)));
      } catch (err) {
        log.error({ file: join(this.dir, name), err: errorMessage(err) }, 'unreadable pod record skipped');
      }
    }
    return out;
  }
}

/** The request body that describes `pod` (what the CNI plugin sends). */
export function toRequest(pod: LocalPod): Record<string, unknown> {
  return {
    containerId: pod.containerId,
    netns: pod.netns,
    podNamespace: pod.namespace,
    podName: pod.name,
    ips: pod.ips,
    ...(pod.labels ? { labels: pod.labels } : {}),
    ...(pod.namespaceLabels ? { namespaceLabels: pod.namespaceLabels } : {}),
  };
}

export class PodChannel {
  private readonly server: http.Server;

  constructor(
    private readonly handlers: PodChannelHandlers,
    private readonly log: Logger,
  ) {
    this.server = http.createServer((req, res) => void this.serve(req, res));
  }

  private async serve(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const reply = (status: number, body: unknown): void => {
      res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body) + '\n');
    };
    if (req.method !== 'POST' || !req.url || !ROUTES.has(req.url)) return reply(404, { error: 'not found' });
    let body: unknown;
    try {
      body = JSON.parse(await readBody(req));
    } catch (err) {
      return reply(400, { error: `invalid request: ${errorMessage(err)}` });
    }
    try {
      if (req.url === '/v1/cni/add') {
        const pod = parseAdd(body);
        const state = await this.handlers.add(pod);
        return reply(200, { state });
      }
      if (req.url === '/v1/cni/check') return reply(200, { state: this.handlers.check(parseDel(body)) });
      if (req.url === '/v1/handover') {
        const path = (body as { path?: unknown } | null)?.path;
        if (typeof path !== 'string' || !path.startsWith('/')) throw new WeftError(ErrorCodes.USAGE, 'path: an absolute path');
        return reply(200, await this.handlers.handOver(path));
      }
      await this.handlers.del(parseDel(body));
      return reply(200, {});
    } catch (err) {
      const usage = err instanceof WeftError && err.code === ErrorCodes.USAGE;
      this.log.warn({ url: req.url, err: errorMessage(err) }, 'pod request failed');
      return reply(usage ? 400 : 500, { error: errorMessage(err) });
    }
  }

  /** Listen on `path`, replacing a stale socket; only root may connect. */
  async listen(path: string): Promise<void> {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    rmSync(path, { force: true });
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(path, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    chmodSync(path, 0o600);
  }

  /** Stop accepting (the socket file goes); a request being answered still gets its answer. */
  stopListening(): void {
    this.server.close();
  }

  close(): void {
    this.server.close();
    this.server.closeAllConnections();
  }
}

function readBody(req: http.IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(new Error(`body over ${MAX_BODY} bytes`));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

/** Send one request to an agent's pod channel (the lab and tests; the CNI plugin speaks the same). */
export function podChannelRequest(socketPath: string, op: 'add' | 'del' | 'check' | 'handover', body: Record<string, unknown>, timeoutMs = 30_000): Promise<{ status: number; body: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const payload = JSON.stringify(body);
    const req = http.request(
      { socketPath, path: op === 'handover' ? '/v1/handover' : `/v1/cni/${op}`, method: 'POST', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) }, timeout: timeoutMs },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          try {
            resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown> });
          } catch (err) {
            reject(err instanceof Error ? err : new Error(String(err)));
          }
        });
      },
    );
    req.on('timeout', () => req.destroy(new WeftError(ErrorCodes.AGENT, `pod channel ${socketPath}: no answer in ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(payload);
  });
}
