// The controller's gRPC endpoint (port 15012): one server, TLS with client certificates required
// (the serving certificate comes from the CA; node agents present node credentials signed by the same
// root). Two services:
//   weft.discovery.v1.Discovery/Stream — a snapshot of what the node needs, then deltas;
//   istio.v1.auth.IstioCertificateService/CreateCertificate — workload certificates, with node
//   authorization: a node may obtain an identity only if a pod with that service account runs on it.
// Callers are identified by the URI SAN `spiffe://<trust-domain>/weft/node/<node>` of their certificate.
import * as grpc from '@grpc/grpc-js';
import type { CertificateAuthority } from './ca.js';
import { ErrorCodes, WeftError, errorMessage, type ConfigProblem } from '../errors.js';
import { formatSpiffeId, parseNodeSpiffeUri, uriSansOf, type SpiffeId } from '../identity/spiffe.js';
import type { Logger } from '../log.js';
import { resourceKey } from '../registry/parse.js';
import type { PodResource, Resource } from '../registry/types.js';
import { csrIdentity } from './csr.js';
import type { ControllerMetrics } from './metrics.js';
import {
  controllerProtos,
  type IstioCertificateRequest,
  type IstioCertificateResponse,
  type ProtoResource,
  type ResourceUpdate,
  type StreamRequest,
} from './proto.js';
import type { ConfigRegistry } from './registry.js';

/** The kinds a node agent receives (LabConfig and any other kind stay in the controller). */
export const DISCOVERY_KINDS: ReadonlySet<string> = new Set(['Namespace', 'Node', 'Pod', 'Service', 'AuthorizationPolicy', 'PeerAuthentication']);
const POLICY_KINDS: ReadonlySet<string> = new Set(['AuthorizationPolicy', 'PeerAuthentication']);

export interface ControllerServerOptions {
  ca: CertificateAuthority;
  registry: ConfigRegistry;
  /** `HOST:PORT` (`[v6]:PORT` for IPv6); port 0 picks a free one. */
  listen: string;
  /** The controller's serving certificate and key (PEM), issued by `ca`. */
  serving: { certPem: string; keyPem: string };
  maxCertTtlSeconds: number;
  /** Policies in this namespace apply mesh-wide: every node receives them. */
  rootNamespace: string;
  metrics: ControllerMetrics;
  log: Logger;
}

export interface ConnectedAgent {
  node: string;
  peer: string;
  since: string;
  /** Registry version last sent to it. */
  version: number;
  /** Objects it currently holds. */
  objects: number;
}

interface Session extends ConnectedAgent {
  id: number;
  /** key → JSON of every object sent and not removed since. */
  sent: Map<string, string>;
  problems: string;
}

/**
 * What `node` receives: every Namespace, Node, Pod and Service, and the policies of the root namespace
 * and of the namespaces that have a pod on the node (destinations enforce policy; a node needs the
 * policies of its own pods only).
 */
export function nodeView(resources: readonly Resource[], node: string, rootNamespace: string): Map<string, Resource> {
  const localNamespaces = new Set<string>([rootNamespace]);
  for (const r of resources) if (r.kind === 'Pod' && r.spec.nodeName === node) localNamespaces.add(r.metadata.namespace);
  const view = new Map<string, Resource>();
  for (const r of resources) {
    if (!DISCOVERY_KINDS.has(r.kind)) continue;
    if (POLICY_KINDS.has(r.kind) && !localNamespaces.has(r.metadata.namespace ?? '')) continue;
    view.set(resourceKey(r), r);
  }
  return view;
}

/** Why `node` may not hold `id`, or undefined when a pod with that service account runs on it. */
export function nodeAuthorizationProblem(resources: readonly Resource[], node: string, id: SpiffeId): string | undefined {
  const pods = resources.filter(
    (r): r is PodResource => r.kind === 'Pod' && r.metadata.namespace === id.namespace && (r.spec.serviceAccountName ?? 'default') === id.serviceAccount,
  );
  if (pods.some((p) => p.spec.nodeName === node)) return undefined;
  const what = `node "${node}" may not obtain a certificate for ${formatSpiffeId(id)}`;
  if (pods.length === 0) return `${what}: no pod in namespace ${id.namespace} runs as service account ${id.serviceAccount}`;
  const elsewhere = [...new Set(pods.map((p) => p.spec.nodeName))].sort().join(', ');
  return `${what}: no pod with that service account runs on this node (its pods run on ${elsewhere})`;
}

function status(code: grpc.status, details: string): Partial<grpc.StatusObject> {
  return { code, details };
}

function toProtoProblem(p: ConfigProblem): ConfigProblem {
  return { file: p.file, line: p.line, field: p.field, reason: p.reason };
}

/** Splits `HOST:PORT` / `[v6]:PORT`. */
export function parseHostPort(text: string, flag = 'address'): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(text);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new WeftError(ErrorCodes.USAGE, `${flag}: "${text}" is not HOST:PORT`);
  return { host: m[1] ?? m[2]!, port };
}

export class ControllerServer {
  private readonly server = new grpc.Server({ 'grpc.keepalive_time_ms': 30_000, 'grpc.keepalive_timeout_ms': 10_000 });
  private readonly sessions = new Map<number, Session>();
  private nextSession = 1;
  port = 0;

  private constructor(private readonly options: ControllerServerOptions) {
    const protos = controllerProtos();
    this.server.addService(protos.discovery, {
      Stream: (call: grpc.ServerWritableStream<StreamRequest, ResourceUpdate>) => this.stream(call),
    });
    this.server.addService(protos.certificates, {
      CreateCertificate: (
        call: grpc.ServerUnaryCall<IstioCertificateRequest, IstioCertificateResponse>,
        callback: grpc.sendUnaryData<IstioCertificateResponse>,
      ) => {
        this.createCertificate(call).then(
          (res) => callback(null, res),
          (err: unknown) => callback(isStatus(err) ? err : status(grpc.status.INTERNAL, errorMessage(err))),
        );
      },
    });
  }

  static async start(options: ControllerServerOptions): Promise<ControllerServer> {
    const s = new ControllerServer(options);
    const { host, port } = parseHostPort(options.listen, '--listen');
    const credentials = grpc.ServerCredentials.createSsl(
      Buffer.from(options.ca.rootCertPem),
      [{ cert_chain: Buffer.from(options.serving.certPem), private_key: Buffer.from(options.serving.keyPem) }],
      true,
    );
    const target = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
    s.port = await new Promise<number>((resolve, reject) => {
      s.server.bindAsync(target, credentials, (err, bound) =>
        err ? reject(new WeftError(ErrorCodes.CONTROLLER, `cannot listen on ${target}: ${err.message}`, { cause: err })) : resolve(bound),
      );
    });
    options.log.info({ listen: target, port: s.port, trustDomain: options.ca.trustDomain }, 'controller gRPC listening (mTLS, client certificates required)');
    return s;
  }

  connectedAgents(): ConnectedAgent[] {
    return [...this.sessions.values()].map(({ node, peer, since, version, objects }) => ({ node, peer, since, version, objects }));
  }

  /** Closes every stream and the listener. */
  close(): void {
    this.server.forceShutdown();
    this.sessions.clear();
    this.options.metrics.connectedAgents.set(0);
  }

  /** The node named by the caller's certificate, or the status to fail the call with. */
  private callerNode(call: { getAuthContext(): { sslPeerCertificate?: { raw?: Buffer } } }): string | Partial<grpc.StatusObject> {
    const cert = call.getAuthContext().sslPeerCertificate;
    if (!cert?.raw) return status(grpc.status.UNAUTHENTICATED, 'a client certificate issued by the controller is required');
    let uris: string[];
    try {
      uris = uriSansOf(cert.raw);
    } catch (err) {
      return status(grpc.status.UNAUTHENTICATED, `unreadable client certificate: ${errorMessage(err)}`);
    }
    const td = this.options.ca.trustDomain;
    const node = uris.map((u) => parseNodeSpiffeUri(u, td)).find((n): n is string => n !== undefined);
    if (!node) {
      return status(grpc.status.UNAUTHENTICATED, `the client certificate is not a node credential (expected URI SAN spiffe://${td}/weft/node/<node>, got ${uris.join(', ') || 'none'})`);
    }
    return node;
  }

  private stream(call: grpc.ServerWritableStream<StreamRequest, ResourceUpdate>): void {
    const { log, registry, metrics } = this.options;
    const node = this.callerNode(call);
    if (typeof node !== 'string') {
      log.warn({ peer: call.getPeer(), reason: node.details }, 'discovery stream refused');
      call.emit('error', node);
      return;
    }
    const asked = call.request.node;
    if (asked !== node) {
      const details = `discovery for node "${asked}" refused: the client certificate belongs to node "${node}"`;
      log.warn({ peer: call.getPeer(), node, asked }, details);
      call.emit('error', status(grpc.status.PERMISSION_DENIED, details));
      return;
    }
    const session: Session = { id: this.nextSession++, node, peer: call.getPeer(), since: new Date().toISOString(), version: 0, objects: 0, sent: new Map(), problems: '' };
    this.sessions.set(session.id, session);
    metrics.connectedAgents.set(this.sessions.size);
    log.info({ node, peer: session.peer }, 'agent connected');

    const push = (snapshot: boolean): void => {
      const view = nodeView(registry.resources(), node, this.options.rootNamespace);
      const upserts: ProtoResource[] = [];
      const removals: string[] = [];
      const sent = new Map<string, string>();
      for (const [key, r] of view) {
        const json = JSON.stringify(r);
        sent.set(key, json);
        if (snapshot || session.sent.get(key) !== json) upserts.push({ key, kind: r.kind, json });
      }
      if (!snapshot) for (const key of session.sent.keys()) if (!view.has(key)) removals.push(key);
      const problems = registry.problems().map(toProtoProblem);
      const problemsText = JSON.stringify(problems);
      if (!snapshot && !upserts.length && !removals.length && problemsText === session.problems) return;
      session.sent = sent;
      session.problems = problemsText;
      session.version = registry.version;
      session.objects = sent.size;
      call.write({ version: registry.version, snapshot, upserts, removals, problems, trust_domain: this.options.ca.trustDomain });
      log.debug({ node, version: registry.version, snapshot, upserts: upserts.length, removals: removals.length }, 'discovery update sent');
    };
    push(true);
    const unsubscribe = registry.subscribe(() => push(false));
    let ended = false;
    const end = (why: string): void => {
      if (ended) return;
      ended = true;
      unsubscribe();
      this.sessions.delete(session.id);
      metrics.connectedAgents.set(this.sessions.size);
      log.info({ node, peer: session.peer, why }, 'agent disconnected');
    };
    call.on('cancelled', () => end('cancelled'));
    call.on('close', () => end('closed'));
    call.on('error', (err: Error) => end(errorMessage(err)));
  }

  private async createCertificate(call: grpc.ServerUnaryCall<IstioCertificateRequest, IstioCertificateResponse>): Promise<IstioCertificateResponse> {
    const { log, metrics, ca, registry } = this.options;
    const node = this.callerNode(call);
    if (typeof node !== 'string') {
      metrics.certificatesDenied.inc({ reason: 'unauthenticated' });
      throw node;
    }
    let identity: SpiffeId;
    try {
      identity = csrIdentity(call.request.csr);
    } catch (err) {
      metrics.certificatesDenied.inc({ reason: 'invalid' });
      log.warn({ node, err: errorMessage(err) }, 'certificate request refused: malformed CSR');
      throw status(grpc.status.INVALID_ARGUMENT, errorMessage(err));
    }
    if (identity.trustDomain !== ca.trustDomain) {
      metrics.certificatesDenied.inc({ reason: 'unauthorized' });
      const details = `node "${node}" may not obtain a certificate for ${formatSpiffeId(identity)}: not in trust domain ${ca.trustDomain}`;
      log.warn({ node, identity: formatSpiffeId(identity) }, details);
      throw status(grpc.status.PERMISSION_DENIED, details);
    }
    const denied = nodeAuthorizationProblem(registry.resources(), node, identity);
    if (denied) {
      metrics.certificatesDenied.inc({ reason: 'unauthorized' });
      log.warn({ node, identity: formatSpiffeId(identity) }, denied);
      throw status(grpc.status.PERMISSION_DENIED, denied);
    }
    const requested = Number(call.request.validity_duration);
    const max = this.options.maxCertTtlSeconds;
    const ttl = Number.isFinite(requested) && requested > 0 ? Math.min(requested, max) : max;
    let chain: string[];
    try {
      const signed = await ca.signWorkloadCsr(call.request.csr, ttl);
      chain = signed.chain;
    } catch (err) {
      metrics.certificatesDenied.inc({ reason: 'invalid' });
      log.warn({ node, identity: formatSpiffeId(identity), err: errorMessage(err) }, 'certificate request refused by the CA');
      throw status(grpc.status.INVALID_ARGUMENT, errorMessage(err));
    }
    metrics.certificatesIssued.inc();
    log.info({ node, identity: formatSpiffeId(identity), ttlSeconds: ttl }, 'workload certificate issued');
    return { cert_chain: chain };
  }
}

function isStatus(err: unknown): err is Partial<grpc.StatusObject> {
  return typeof err === 'object' && err !== null && 'code' in err && typeof (err as { code: unknown }).code === 'number' && 'details' in err;
}
