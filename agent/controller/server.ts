// The controller's gRPC endpoint (port 15012): one server over TLS (the serving certificate comes from
// the CA). Two services:
//   weft.discovery.v1.Discovery/Stream — a snapshot of what the node needs, then deltas;
//   istio.v1.auth.IstioCertificateService/CreateCertificate — workload certificates, with node
//   authorization: a node may obtain an identity only if a pod with that service account runs on it;
//   and a node agent's own Observer serving certificate (spiffe://<td>/weft/node/<node>, serverAuth
//   only, short-lived), for the caller's own node only.
// A caller speaks for a node in one of two ways:
//   - a node credential: a client certificate chaining to the mesh root with the URI SAN
//     `spiffe://<trust-domain>/weft/node/<node>` (the lab, `weft controller node-credentials`);
//   - on Kubernetes, its projected service-account token (`authorization: Bearer`, audience weft-ca),
//     reviewed by the API server: the node is the one its bound pod is scheduled on (token-auth.ts).
// Without token authentication configured, TLS itself demands a client certificate, as always. With
// it, the TLS layer asks for a certificate but lets a caller without one finish the handshake, and
// every call is then checked here: a verified node certificate or an accepted token, or the call is
// refused (UNAUTHENTICATED). That is still fail-closed: a certificate that does not chain to the mesh
// root is not even visible to the check (gRPC reports only verified peers), no method runs before the
// check, and a caller presenting both must present two that agree.
// A node whose name or credential serial is in the revocation list is refused (PERMISSION_DENIED) on
// both services, and its open streams end when it is revoked (or, for a token, when its pod is gone).
// CSRs are rate-limited per node (RESOURCE_EXHAUSTED) before anything in them is parsed.
import { X509Certificate } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import type { CertificateAuthority } from './ca.js';
import { ControllerDefaults } from '../config.js';
import { ErrorCodes, WeftError, errorMessage, type ConfigProblem } from '../errors.js';
import { formatSpiffeId, parseNodeSpiffeUri, uriSansOf, type SpiffeId } from '../identity/spiffe.js';
import type { Logger } from '../log.js';
import { parseHostPort, formatAuthority } from '../system/host-port.js';
import { resourceKey } from '../registry/parse.js';
import type { PodResource, Resource } from '../registry/types.js';
import { checkCsrRequest, workloadCsr, type CheckedCsr, type CheckedCsrRequest } from './csr.js';
import type { ControllerMetrics } from './metrics.js';
import {
  controllerProtos,
  type IstioCertificateRequest,
  type IstioCertificateResponse,
  type ProtoResource,
  type ResourceUpdate,
  type StreamRequest,
} from './proto.js';
import { DEFAULT_CSR_RATE_LIMIT, KeyedTokenBucket, type RateLimit } from './rate-limit.js';
import type { ConfigRegistry } from './registry.js';
import type { RevocationList } from './revocation.js';
import { TokenAuthenticator, type BoundPod, type RefusalReason, type TokenAuthOptions } from './token-auth.js';

/** The kinds a node agent receives (LabConfig and any other kind stay in the controller). */
export const DISCOVERY_KINDS: ReadonlySet<string> = new Set(['Namespace', 'Node', 'Pod', 'Service', 'EndpointSlice', 'AuthorizationPolicy', 'PeerAuthentication']);
const POLICY_KINDS: ReadonlySet<string> = new Set(['AuthorizationPolicy', 'PeerAuthentication']);
/** Requests are a node name or one CSR (a few KiB at most): nothing legitimate comes near this. */
const MAX_REQUEST_BYTES = 64 * 1024;

/** What the server reads of the registry (whichever source fills it). */
export type RegistryView = Pick<ConfigRegistry, 'resources' | 'problems' | 'subscribe' | 'version'>;

export interface ControllerServerOptions {
  ca: CertificateAuthority;
  registry: RegistryView;
  /** `HOST:PORT` (`[v6]:PORT` for IPv6); port 0 picks a free one. */
  listen: string;
  /** The controller's serving certificate and key (PEM), issued by `ca`. */
  serving: { certPem: string; keyPem: string };
  maxCertTtlSeconds: number;
  /** The longest Observer serving certificate for a node (default ControllerDefaults.maxObserverCertTtlSeconds). */
  maxObserverCertTtlSeconds?: number;
  /** Policies in this namespace apply mesh-wide: every node receives them. */
  rootNamespace: string;
  metrics: ControllerMetrics;
  log: Logger;
  /** Revoked node names and credential serials; none when absent. */
  revocations?: RevocationList;
  /** CreateCertificate calls per node (default DEFAULT_CSR_RATE_LIMIT). */
  csrRateLimit?: RateLimit;
  /** Accept agents' Kubernetes service-account tokens besides node certificates (token-auth.ts). */
  tokenAuth?: TokenAuthOptions;
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
  /** The serial of the node credential the stream was opened with. */
  serial: string | undefined;
  /** The agent pod whose token opened the stream (the stream ends when that pod no longer vouches for the node). */
  pod: BoundPod | undefined;
  /** Ends the stream with a status. */
  terminate(status: Partial<grpc.StatusObject>): void;
}

/** The authenticated caller: its node name, its credential's serial, the pod its token is bound to. */
interface Caller {
  node: string;
  serial: string | undefined;
  pod: BoundPod | undefined;
  /** What it proved its node with, for messages and logs. */
  via: 'client certificate' | 'service-account token';
}

/** A refused call: the status to answer with, and the reason label of the denial counter. */
type Refusal = Partial<grpc.StatusObject> & { reason: RefusalReason | 'revoked' };

/** What a call exposes of its caller. */
interface CallCredentials {
  getAuthContext(): { sslPeerCertificate?: { raw?: Buffer } };
  getPeer(): string;
  metadata: grpc.Metadata;
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

function refused(code: grpc.status, reason: Refusal['reason'], details: string): Refusal {
  return { code, details, reason };
}

/**
 * TLS that asks for a client certificate and verifies it against the mesh root, but lets a caller
 * without one (an agent holding a service-account token) complete the handshake. gRPC's createSsl
 * offers only "required" or "not asked for"; Node's TLS has the third option, and gRPC's server
 * credentials pass these options to it. A certificate that fails verification leaves the socket
 * unauthorized, and gRPC then reports no peer certificate at all: it counts as none.
 */
class CertificateOrTokenCredentials extends grpc.ServerCredentials {
  constructor(rootPem: string, certPem: string, keyPem: string) {
    super({ requestCert: true, rejectUnauthorized: false }, { ca: rootPem, cert: certPem, key: keyPem });
  }
  _equals(other: grpc.ServerCredentials): boolean {
    return other === this;
  }
}

/** The bearer token of a call: undefined without an authorization header, else the token or why it is unusable. */
function bearerToken(metadata: grpc.Metadata): { token: string } | { problem: string } | undefined {
  const values = metadata.get('authorization');
  if (values.length === 0) return undefined;
  if (values.length > 1) return { problem: 'more than one authorization header' };
  const value = values[0];
  if (typeof value !== 'string') return { problem: 'the authorization header is not text' };
  const m = /^Bearer +(\S+) *$/i.exec(value);
  if (!m) return { problem: 'the authorization header is not "Bearer <token>"' };
  return { token: m[1]! };
}

function toProtoProblem(p: ConfigProblem): ConfigProblem {
  return { file: p.file, line: p.line, field: p.field, reason: p.reason };
}

export class ControllerServer {
  private readonly server = new grpc.Server({
    'grpc.keepalive_time_ms': 30_000,
    'grpc.keepalive_timeout_ms': 10_000,
    'grpc.max_receive_message_length': MAX_REQUEST_BYTES,
  });
  private readonly sessions = new Map<number, Session>();
  private readonly csrLimiter: KeyedTokenBucket;
  private nextSession = 1;
  port = 0;
  /** Present when agents may authenticate with service-account tokens. */
  readonly tokenAuthenticator: TokenAuthenticator | undefined;

  private constructor(private readonly options: ControllerServerOptions) {
    this.csrLimiter = new KeyedTokenBucket(options.csrRateLimit ?? DEFAULT_CSR_RATE_LIMIT);
    this.tokenAuthenticator = options.tokenAuth ? new TokenAuthenticator(options.tokenAuth, options.log) : undefined;
    const protos = controllerProtos();
    this.server.addService(protos.discovery, {
      Stream: (call: grpc.ServerWritableStream<StreamRequest, ResourceUpdate>) => {
        this.stream(call).catch((err: unknown) => {
          options.log.error({ peer: call.getPeer(), err: errorMessage(err) }, 'discovery stream failed');
          call.emit('error', status(grpc.status.INTERNAL, errorMessage(err)));
        });
      },
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
    const credentials = s.tokenAuthenticator
      ? new CertificateOrTokenCredentials(options.ca.rootCertPem, options.serving.certPem, options.serving.keyPem)
      : grpc.ServerCredentials.createSsl(
          Buffer.from(options.ca.rootCertPem),
          [{ cert_chain: Buffer.from(options.serving.certPem), private_key: Buffer.from(options.serving.keyPem) }],
          true,
        );
    const target = formatAuthority(host, port);
    s.port = await new Promise<number>((resolve, reject) => {
      s.server.bindAsync(target, credentials, (err, bound) =>
        err ? reject(new WeftError(ErrorCodes.CONTROLLER, `cannot listen on ${target}: ${err.message}`, { cause: err })) : resolve(bound),
      );
    });
    const auth = s.tokenAuthenticator;
    options.log.info(
      {
        listen: target,
        port: s.port,
        trustDomain: options.ca.trustDomain,
        callers: auth ? 'node certificate or service-account token' : 'node certificate',
        ...(auth ? { tokenAudience: auth.audience, agentServiceAccount: auth.agentServiceAccount } : {}),
      },
      auth ? 'controller gRPC listening (TLS; node certificates or service-account tokens checked per call)' : 'controller gRPC listening (mTLS, client certificates required)',
    );
    return s;
  }

  /** Ends the open streams of nodes that are revoked now (call after the revocation list changed). */
  enforceRevocations(): void {
    const revocations = this.options.revocations;
    if (!revocations) return;
    for (const s of [...this.sessions.values()]) {
      const entry = revocations.revoked(s.node, s.serial);
      if (entry === undefined) continue;
      this.options.log.warn({ node: s.node, peer: s.peer, serial: s.serial, entry }, 'node revoked: closing its discovery stream');
      s.terminate(status(grpc.status.PERMISSION_DENIED, `node "${s.node}" is revoked`));
    }
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

  /**
   * The node the caller speaks for, or the refusal to fail the call with: UNAUTHENTICATED without a
   * node certificate or an accepted token, PERMISSION_DENIED when the token may not speak for a node
   * or the node (or its credential) is revoked, UNAVAILABLE when the token could not be reviewed.
   */
  private async caller(call: CallCredentials, method: string): Promise<Caller | Refusal> {
    const found = await this.authenticate(call);
    if (!isCaller(found)) return found;
    const entry = this.options.revocations?.revoked(found.node, found.serial);
    if (entry !== undefined) {
      this.options.log.warn({ node: found.node, serial: found.serial, entry, peer: call.getPeer(), method }, 'revoked node refused');
      return refused(grpc.status.PERMISSION_DENIED, 'revoked', `node "${found.node}" is revoked (revocation entry ${entry})`);
    }
    return found;
  }

  private async authenticate(call: CallCredentials): Promise<Caller | Refusal> {
    const byCert = this.certificateNode(call);
    if (byCert !== undefined && !isCaller(byCert)) return byCert;
    const bearer = bearerToken(call.metadata);
    if (bearer === undefined) {
      if (byCert) return byCert;
      return refused(
        grpc.status.UNAUTHENTICATED,
        'unauthenticated',
        this.tokenAuthenticator
          ? 'a node credential (client certificate from the controller) or a service-account token (authorization: Bearer) is required'
          : 'a client certificate issued by the controller is required',
      );
    }
    if ('problem' in bearer) return refused(grpc.status.UNAUTHENTICATED, 'unauthenticated', bearer.problem);
    const auth = this.tokenAuthenticator;
    if (!auth) return refused(grpc.status.UNAUTHENTICATED, 'unauthenticated', 'this controller does not accept service-account tokens (it runs without token authentication)');
    const result = await auth.authenticate(bearer.token, () => this.options.registry.resources());
    if (!('node' in result)) return refused(result.code, result.reason, result.details);
    // Two credentials must agree: a token never widens what a certificate allows, nor the reverse.
    if (byCert && byCert.node !== result.node) {
      return refused(
        grpc.status.PERMISSION_DENIED,
        'unauthorized',
        `the client certificate names node "${byCert.node}" but the service-account token's pod ${result.pod.namespace}/${result.pod.name} runs on node "${result.node}"`,
      );
    }
    return { node: result.node, serial: byCert?.serial, pod: result.pod, via: 'service-account token' };
  }

  /** The node of a verified client certificate; undefined without one; a refusal when it is not a node credential. */
  private certificateNode(call: CallCredentials): Caller | Refusal | undefined {
    // Only certificates that chained to the mesh root appear here (gRPC hides unauthorized peers).
    const cert = call.getAuthContext().sslPeerCertificate;
    if (!cert?.raw) return undefined;
    let uris: string[];
    let serial: string | undefined;
    try {
      const x509 = new X509Certificate(cert.raw);
      uris = uriSansOf(x509);
      serial = x509.serialNumber;
    } catch (err) {
      return refused(grpc.status.UNAUTHENTICATED, 'unauthenticated', `unreadable client certificate: ${errorMessage(err)}`);
    }
    const td = this.options.ca.trustDomain;
    const node = uris.map((u) => parseNodeSpiffeUri(u, td)).find((n): n is string => n !== undefined);
    if (!node) {
      return refused(
        grpc.status.UNAUTHENTICATED,
        'unauthenticated',
        `the client certificate is not a node credential (expected URI SAN spiffe://${td}/weft/node/<node>, got ${uris.join(', ') || 'none'})`,
      );
    }
    return { node, serial, pod: undefined, via: 'client certificate' };
  }

  private async stream(call: grpc.ServerWritableStream<StreamRequest, ResourceUpdate>): Promise<void> {
    const { log, registry, metrics } = this.options;
    const caller = await this.caller(call, 'Stream');
    if (call.cancelled) return;
    if (!isCaller(caller)) {
      log.warn({ peer: call.getPeer(), reason: caller.details }, 'discovery stream refused');
      call.emit('error', status(caller.code ?? grpc.status.UNAUTHENTICATED, caller.details ?? 'refused'));
      return;
    }
    const { node, serial, pod } = caller;
    const asked = call.request.node;
    if (asked !== node) {
      const details = `discovery for node "${asked}" refused: the ${caller.via} belongs to node "${node}"`;
      log.warn({ peer: call.getPeer(), node, asked }, details);
      call.emit('error', status(grpc.status.PERMISSION_DENIED, details));
      return;
    }
    const session: Session = {
      id: this.nextSession++,
      node,
      peer: call.getPeer(),
      since: new Date().toISOString(),
      version: 0,
      objects: 0,
      sent: new Map(),
      problems: '',
      serial,
      pod,
      terminate: (s) => call.emit('error', s),
    };
    this.sessions.set(session.id, session);
    metrics.connectedAgents.set(this.sessions.size);
    log.info({ node, peer: session.peer, via: caller.via, ...(pod ? { pod: `${pod.namespace}/${pod.name}` } : {}) }, 'agent connected');

    const push = (snapshot: boolean): void => {
      // A token vouched for the node through its pod: once that pod is gone (or elsewhere), so is the stream.
      const gone = pod && this.tokenAuthenticator?.podProblem(pod, node, registry.resources());
      if (gone) {
        log.warn({ node, peer: session.peer, reason: gone }, "the agent's pod no longer vouches for its node: closing its discovery stream");
        session.terminate(status(grpc.status.PERMISSION_DENIED, gone));
        return;
      }
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
    const caller = await this.caller(call, 'CreateCertificate');
    if (!isCaller(caller)) {
      metrics.certificatesDenied.inc({ reason: caller.reason });
      throw status(caller.code ?? grpc.status.UNAUTHENTICATED, caller.details ?? 'refused');
    }
    const { node } = caller;
    // Before the CSR is even parsed: the limit is what bounds the work one node can cause.
    if (!this.csrLimiter.take(node)) {
      metrics.certificatesDenied.inc({ reason: 'rate_limited' });
      const { burst, perSecond } = this.csrLimiter.limit;
      const details = `node "${node}" sent more certificate requests than allowed (${burst} at once, ${perSecond}/s after); retry in ${this.csrLimiter.retryAfterSeconds(node)} s`;
      log.warn({ node, burst, perSecond }, 'certificate request refused: rate limit');
      throw status(grpc.status.RESOURCE_EXHAUSTED, details);
    }
    let request: CheckedCsrRequest;
    let csr: CheckedCsr;
    try {
      request = checkCsrRequest(call.request.csr);
      // A node identity is the agent's own Observer serving certificate, never a workload's.
      const askedNode = parseNodeSpiffeUri(request.uri, ca.trustDomain);
      if (askedNode !== undefined) return this.observerCertificate(caller, askedNode, request, Number(call.request.validity_duration));
      csr = workloadCsr(request);
    } catch (err) {
      if (isStatus(err)) throw err;
      metrics.certificatesDenied.inc({ reason: 'invalid' });
      log.warn({ node, err: errorMessage(err) }, 'certificate request refused: malformed CSR');
      throw status(grpc.status.INVALID_ARGUMENT, errorMessage(err));
    }
    const identity: SpiffeId = csr.identity;
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
      const signed = ca.signCheckedCsr(csr, ttl);
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

  /**
   * A node agent's Observer serving certificate (spiffe://<td>/weft/node/<node>, serverAuth only): only
   * for the caller's own node, whether it proved that node with a certificate or a token, and never
   * longer than maxObserverCertTtlSeconds.
   */
  private observerCertificate(caller: Caller, asked: string, request: CheckedCsrRequest, requested: number): IstioCertificateResponse {
    const { log, metrics, ca } = this.options;
    const { node } = caller;
    const identity = request.uri;
    if (asked !== node) {
      metrics.certificatesDenied.inc({ reason: 'unauthorized' });
      const details = `node "${node}" may not obtain a certificate for ${identity}: the ${caller.via} belongs to node "${node}", not "${asked}"`;
      log.warn({ node, identity, via: caller.via }, details);
      throw status(grpc.status.PERMISSION_DENIED, details);
    }
    const max = this.options.maxObserverCertTtlSeconds ?? ControllerDefaults.maxObserverCertTtlSeconds;
    const ttl = Number.isFinite(requested) && requested > 0 ? Math.min(requested, max) : max;
    let chain: string[];
    try {
      chain = ca.signObserverServingCsr(request, node, ttl);
    } catch (err) {
      metrics.certificatesDenied.inc({ reason: 'invalid' });
      log.warn({ node, identity, err: errorMessage(err) }, 'observer certificate request refused by the CA');
      throw status(grpc.status.INVALID_ARGUMENT, errorMessage(err));
    }
    metrics.certificatesIssued.inc();
    log.info({ node, identity, ttlSeconds: ttl, via: caller.via }, 'observer serving certificate issued');
    return { cert_chain: chain };
  }
}

function isCaller(c: Caller | Refusal): c is Caller {
  return typeof (c as Caller).node === 'string';
}

function isStatus(err: unknown): err is Partial<grpc.StatusObject> {
  return typeof err === 'object' && err !== null && 'code' in err && typeof (err as { code: unknown }).code === 'number' && 'details' in err;
}
