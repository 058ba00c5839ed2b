// A STAND-IN for a Kubernetes API server, for tests only. It is not Kubernetes: it keeps objects in
// memory and checks nothing a real API server's admission or schemas would (no defaulting, no
// OpenAPI validation, no RBAC unless a test passes `authorize`). What it does do is speak the API
// server's wire protocol for the resources weft reads, closely enough that Debian's real `kubectl`
// and `@kubernetes/client-node` work against it (test/kube-standin.test.ts holds it to `kubectl`):
//
//   - HTTPS only (kubectl sends credentials over TLS only), with a CA made here; bearer tokens the
//     test registers, or client certificates this CA issued (user = subject CN, groups = O);
//   - discovery: /version, /api, /apis, /api/v1, /apis/<group>, /apis/<group>/<version> (plain
//     APIVersions / APIGroupList / APIResourceList; the aggregated v2 form is not offered, so
//     clients fall back to these, as they do against older servers); no OpenAPI document (404);
//   - list with metadata.resourceVersion (one global counter, like etcd's revision), `limit` +
//     `continue` chunks that are consistent at the first page's resourceVersion (410 Expired once
//     that version is compacted), label and field selectors (equality and set forms);
//   - watch (`?watch=true`): chunked `application/json` lines of {type, object}, ADDED / MODIFIED /
//     DELETED from the requested resourceVersion (history replayed), BOOKMARK when
//     `allowWatchBookmarks=true`, an ERROR event carrying a Status with code 410 (Expired) when the
//     requested version was compacted (then the stream ends), `timeoutSeconds`;
//   - get, create (POST), replace (PUT, with optimistic concurrency on metadata.resourceVersion),
//     PATCH (application/merge-patch+json, application/json-patch+json; strategic merge patch only
//     on built-in kinds — 415 on custom resources, as the real server answers for Istio's kinds;
//     the stand-in applies a strategic patch like a merge patch, without list merge keys), delete;
//   - the `status` subresource on kinds that have one (the main resource ignores status changes,
//     /status ignores everything but status; metadata.generation counts spec changes);
//   - events.k8s.io/v1 Events, validated as the real server validates them (eventTime a MicroTime
//     with exactly six fractional digits, reportingController, reportingInstance, action, reason,
//     type, note length, regarding.namespace) — 422 otherwise;
//   - authentication.k8s.io/v1 TokenReview against the tokens the test registered (user, uid,
//     groups, audiences, extra such as authentication.kubernetes.io/pod-name, expiry).
//
// For tests: put/remove/get objects directly (each write is an event watchers see), compact()
// history (watches and continues from before then get 410), expireWatches() (ERROR 410 on every
// open watch), dropWatches(), sendBookmarks(), stop()/resume()/restart() (every connection dropped,
// same port and same store, as an API server restart behind a stable address), and a log of
// requests (`requests`, and the 'request' / 'watch' events) to await instead of sleeping.
//
// Registering tokens (for TokenReview and for API access):
//   const api = await KubeStandin.start();
//   api.registerToken('agent-token', {
//     username: 'system:serviceaccount:weft-system:weft-agent',
//     audiences: ['weft-ca'],                    // what the token is bound to
//     extra: { 'authentication.kubernetes.io/pod-name': ['weft-agent-x'], 'authentication.kubernetes.io/pod-uid': ['…'] },
//     expiresAt: new Date(Date.now() + 3600_000),
//   });
// A token authenticates API requests only when it carries no audiences or the API server's own
// (STANDIN_API_AUDIENCE), as a bound service-account token for another audience does not.
import { EventEmitter } from 'node:events';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import forge from 'node-forge';

/** One resource type the stand-in serves. */
export interface StandinType {
  /** '' for the core group. */
  group: string;
  version: string;
  plural: string;
  singular: string;
  kind: string;
  namespaced: boolean;
  /** Has the `status` subresource. */
  status: boolean;
  /** Accepts application/strategic-merge-patch+json (built-in kinds only; custom resources answer 415). */
  strategicMerge: boolean;
  shortNames?: string[];
  categories?: string[];
  /** Only POST (TokenReview): nothing is stored. */
  createOnly?: boolean;
}

const ALL_VERBS = ['create', 'delete', 'get', 'list', 'patch', 'update', 'watch'];

/** What the stand-in serves. Extra types can be passed to start(). */
export const STANDIN_TYPES: readonly StandinType[] = [
  { group: '', version: 'v1', plural: 'namespaces', singular: 'namespace', kind: 'Namespace', namespaced: false, status: true, strategicMerge: true, shortNames: ['ns'] },
  { group: '', version: 'v1', plural: 'pods', singular: 'pod', kind: 'Pod', namespaced: true, status: true, strategicMerge: true, shortNames: ['po'], categories: ['all'] },
  { group: '', version: 'v1', plural: 'services', singular: 'service', kind: 'Service', namespaced: true, status: true, strategicMerge: true, shortNames: ['svc'], categories: ['all'] },
  { group: '', version: 'v1', plural: 'nodes', singular: 'node', kind: 'Node', namespaced: false, status: true, strategicMerge: true, shortNames: ['no'] },
  { group: '', version: 'v1', plural: 'events', singular: 'event', kind: 'Event', namespaced: true, status: false, strategicMerge: true, shortNames: ['ev'] },
  { group: 'discovery.k8s.io', version: 'v1', plural: 'endpointslices', singular: 'endpointslice', kind: 'EndpointSlice', namespaced: true, status: false, strategicMerge: true },
  { group: 'events.k8s.io', version: 'v1', plural: 'events', singular: 'event', kind: 'Event', namespaced: true, status: false, strategicMerge: true, shortNames: ['ev'] },
  { group: 'authentication.k8s.io', version: 'v1', plural: 'tokenreviews', singular: 'tokenreview', kind: 'TokenReview', namespaced: false, status: false, strategicMerge: false, createOnly: true },
  { group: 'security.istio.io', version: 'v1', plural: 'authorizationpolicies', singular: 'authorizationpolicy', kind: 'AuthorizationPolicy', namespaced: true, status: true, strategicMerge: false, shortNames: ['ap'], categories: ['istio-io', 'security-istio-io'] },
  { group: 'security.istio.io', version: 'v1', plural: 'peerauthentications', singular: 'peerauthentication', kind: 'PeerAuthentication', namespaced: true, status: true, strategicMerge: false, shortNames: ['pa'], categories: ['istio-io', 'security-istio-io'] },
  { group: 'security.istio.io', version: 'v1', plural: 'requestauthentications', singular: 'requestauthentication', kind: 'RequestAuthentication', namespaced: true, status: true, strategicMerge: false, shortNames: ['ra'], categories: ['istio-io', 'security-istio-io'] },
  { group: 'gateway.networking.k8s.io', version: 'v1', plural: 'gateways', singular: 'gateway', kind: 'Gateway', namespaced: true, status: true, strategicMerge: false, shortNames: ['gtw'], categories: ['gateway-api'] },
  { group: 'gateway.networking.k8s.io', version: 'v1', plural: 'httproutes', singular: 'httproute', kind: 'HTTPRoute', namespaced: true, status: true, strategicMerge: false, categories: ['gateway-api'] },
  { group: 'networking.istio.io', version: 'v1', plural: 'destinationrules', singular: 'destinationrule', kind: 'DestinationRule', namespaced: true, status: true, strategicMerge: false, shortNames: ['dr'], categories: ['istio-io', 'networking-istio-io'] },
  { group: 'networking.istio.io', version: 'v1', plural: 'virtualservices', singular: 'virtualservice', kind: 'VirtualService', namespaced: true, status: true, strategicMerge: false, shortNames: ['vs'], categories: ['istio-io', 'networking-istio-io'] },
];

/** The audience of the API server itself: a token bound to it (or to no audience) may call the API. */
export const STANDIN_API_AUDIENCE = 'https://kubernetes.default.svc.cluster.local';
/** The version /version reports. */
export const STANDIN_SERVER_VERSION = { major: '1', minor: '32', gitVersion: 'v1.32.0' } as const;
/** Largest request body (the real server's limit is 3 MiB). */
const MAX_BODY_BYTES = 3 * 1024 * 1024;

export type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
export type JsonObject = { [k: string]: Json };

/** A Kubernetes object as the stand-in keeps it. */
export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: {
    name: string;
    namespace?: string;
    uid?: string;
    resourceVersion?: string;
    generation?: number;
    creationTimestamp?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    [k: string]: Json | undefined;
  };
  [k: string]: Json | undefined | KubeObject['metadata'];
}

/** What a registered token authenticates as (TokenReview's status.user and audiences). */
export interface TokenIdentity {
  username: string;
  uid?: string;
  groups?: string[];
  /** The audiences the token is bound to; absent: the API server's own (it may call the API). */
  audiences?: string[];
  extra?: Record<string, string[]>;
  /** After this instant the token is refused ("token has expired"). */
  expiresAt?: Date;
}

export interface StandinUser {
  username: string;
  groups: string[];
  uid?: string;
  extra?: Record<string, string[]>;
}

export interface StandinRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  contentType: string | undefined;
  accept: string | undefined;
  userAgent: string | undefined;
  user: string | undefined;
  /** The answer's status code (set when answered; watches: 200 once the stream starts). */
  status?: number;
}

export interface AuthorizationAttributes {
  user: StandinUser;
  verb: string;
  group: string;
  resource: string;
  subresource: string | undefined;
  namespace: string | undefined;
  name: string | undefined;
}

export interface StandinOptions {
  host?: string;
  /** 0 (default) picks a free port; restart() keeps whatever was picked. */
  port?: number;
  /** Period of BOOKMARK events on watches that allow them (default 60 s; sendBookmarks() sends at once). */
  bookmarkIntervalMs?: number;
  /** More resource types to serve (served generically, like custom resources). */
  extraTypes?: readonly StandinType[];
  /** Kinds not to serve at all (as a cluster without their CRDs: 404). */
  omitKinds?: readonly string[];
  /** Authorization; default: every authenticated user may do everything. */
  authorize?: (a: AuthorizationAttributes) => boolean;
}

export interface WatchInfo {
  type: StandinType;
  namespace: string | undefined;
  query: Record<string, string>;
  user: string;
}

interface HistoryEntry {
  rv: number;
  typeKey: string;
  key: string;
  event: 'ADDED' | 'MODIFIED' | 'DELETED';
  object: KubeObject;
  previous: KubeObject | undefined;
}

interface Watcher {
  type: StandinType;
  namespace: string | undefined;
  labels: Selector;
  fields: Selector;
  bookmarks: boolean;
  res: ServerResponse;
  timers: NodeJS.Timeout[];
  closed: boolean;
}

type SelectorTerm = { key: string; op: 'in' | 'notin' | 'exists' | '!exists'; values: string[] };
type Selector = SelectorTerm[];

class HttpError extends Error {
  constructor(
    readonly code: number,
    readonly reason: string,
    message: string,
    readonly details?: JsonObject,
  ) {
    super(message);
  }
}

export const typeKeyOf = (t: Pick<StandinType, 'group' | 'plural'>): string => `${t.group || 'core'}/${t.plural}`;
const apiVersionOf = (t: StandinType): string => (t.group ? `${t.group}/${t.version}` : t.version);
const objectKey = (ns: string | undefined, name: string): string => (ns ? `${ns}/${name}` : name);
const clone = <T>(v: T): T => structuredClone(v);
/** RFC 3339 without fractional seconds, as metav1.Time is written. */
const timeNow = (): string => new Date().toISOString().replace(/\.\d+Z$/, 'Z');
/** metav1.MicroTime: exactly six fractional digits. */
const MICRO_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}(Z|[+-]\d{2}:\d{2})$/;

function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function statusBody(code: number, reason: string, message: string, details?: JsonObject): JsonObject {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, ...(details ? { details } : {}), code };
}

/** RFC 7386 JSON merge patch. */
export function mergePatch(target: Json | undefined, patch: Json): Json {
  if (!isObject(patch)) return clone(patch);
  const out: JsonObject = isObject(target) ? clone(target) : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

/** Strategic merge patch, approximated: a merge patch whose `$…` directives are dropped (lists replace). */
function strategicPatch(target: Json | undefined, patch: Json): Json {
  const strip = (v: Json): Json => {
    if (Array.isArray(v)) return v.map(strip);
    if (!isObject(v)) return v;
    const o: JsonObject = {};
    for (const [k, x] of Object.entries(v)) if (!k.startsWith('$')) o[k] = strip(x);
    return o;
  };
  return mergePatch(target, strip(patch));
}

/** RFC 6902 JSON patch: add, remove, replace, test (what clients send in practice). */
function jsonPatch(target: Json, ops: Json): Json {
  if (!Array.isArray(ops)) throw new HttpError(400, 'BadRequest', 'a JSON patch must be an array of operations');
  let doc = clone(target);
  for (const op of ops) {
    if (!isObject(op) || typeof op.op !== 'string' || typeof op.path !== 'string') throw new HttpError(400, 'BadRequest', 'invalid JSON patch operation');
    const parts = op.path.split('/').slice(1).map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
    if (parts.length === 0) {
      if (op.op === 'add' || op.op === 'replace') doc = clone(op.value ?? null);
      continue;
    }
    let parent: Json = doc;
    for (const p of parts.slice(0, -1)) {
      parent = Array.isArray(parent) ? (parent[Number(p)] ?? null) : isObject(parent) ? (parent[p] ?? null) : null;
      if (parent === null) throw new HttpError(422, 'Invalid', `JSON patch path ${op.path} does not exist`);
    }
    const last = parts[parts.length - 1]!;
    if (op.op === 'test') {
      const cur = Array.isArray(parent) ? parent[Number(last)] : isObject(parent) ? parent[last] : undefined;
      if (JSON.stringify(cur) !== JSON.stringify(op.value)) throw new HttpError(422, 'Invalid', `JSON patch test failed at ${op.path}`);
    } else if (op.op === 'remove') {
      if (Array.isArray(parent)) parent.splice(Number(last), 1);
      else if (isObject(parent)) delete parent[last];
    } else if (op.op === 'add' || op.op === 'replace') {
      if (Array.isArray(parent)) {
        if (last === '-') parent.push(clone(op.value ?? null));
        else if (op.op === 'add') parent.splice(Number(last), 0, clone(op.value ?? null));
        else parent[Number(last)] = clone(op.value ?? null);
      } else if (isObject(parent)) parent[last] = clone(op.value ?? null);
    } else throw new HttpError(422, 'Invalid', `unsupported JSON patch operation ${op.op}`);
  }
  return doc;
}

/** Label selector: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`, comma-separated. */
export function parseSelector(text: string | undefined): Selector {
  if (!text) return [];
  const terms: string[] = [];
  let depth = 0;
  let cur = '';
  for (const c of text) {
    if (c === '(') depth++;
    if (c === ')') depth--;
    if (c === ',' && depth === 0) {
      terms.push(cur);
      cur = '';
    } else cur += c;
  }
  terms.push(cur);
  return terms
    .map((t) => t.trim())
    .filter(Boolean)
    .map((t): SelectorTerm => {
      let m = /^(\S+?)\s*(==|=|!=)\s*(\S*)$/.exec(t);
      if (m) return m[2] === '!=' ? { key: m[1]!, op: 'notin', values: [m[3]!] } : { key: m[1]!, op: 'in', values: [m[3]!] };
      m = /^(\S+)\s+(in|notin)\s*\(([^)]*)\)$/.exec(t);
      if (m) return { key: m[1]!, op: m[2] as 'in' | 'notin', values: m[3]!.split(',').map((v) => v.trim()) };
      if (t.startsWith('!')) return { key: t.slice(1).trim(), op: '!exists', values: [] };
      if (/^\S+$/.test(t)) return { key: t, op: 'exists', values: [] };
      throw new HttpError(400, 'BadRequest', `unable to parse requirement: ${JSON.stringify(t)}`);
    });
}

function matches(sel: Selector, lookup: (key: string) => string | undefined): boolean {
  return sel.every((t) => {
    const v = lookup(t.key);
    switch (t.op) {
      case 'in':
        return v !== undefined && t.values.includes(v);
      case 'notin':
        return v === undefined || !t.values.includes(v);
      case 'exists':
        return v !== undefined;
      case '!exists':
        return v === undefined;
    }
  });
}

function fieldOf(obj: KubeObject, path: string): string | undefined {
  let cur: unknown = obj;
  for (const p of path.split('.')) cur = isObject(cur) ? cur[p] : undefined;
  return cur === undefined || cur === null ? undefined : String(cur);
}

function selected(obj: KubeObject, labels: Selector, fields: Selector): boolean {
  return matches(labels, (k) => obj.metadata.labels?.[k]) && matches(fields, (k) => fieldOf(obj, k));
}

interface Credentials {
  caPem: string;
  caKey: forge.pki.rsa.PrivateKey;
  caCert: forge.pki.Certificate;
  certPem: string;
  keyPem: string;
}

function newKeyPair(): forge.pki.rsa.KeyPair {
  // forge hands RSA key generation to Node's native crypto: milliseconds, not seconds.
  return forge.pki.rsa.generateKeyPair({ bits: 2048, e: 0x10001 });
}

function signCert(
  subject: forge.pki.CertificateField[],
  publicKey: forge.pki.rsa.PublicKey,
  issuer: { cert: forge.pki.Certificate | undefined; key: forge.pki.rsa.PrivateKey },
  extensions: object[],
): forge.pki.Certificate {
  const cert = forge.pki.createCertificate();
  cert.publicKey = publicKey;
  cert.serialNumber = '01' + randomBytes(15).toString('hex');
  cert.validity.notBefore = new Date(Date.now() - 60_000);
  cert.validity.notAfter = new Date(Date.now() + 24 * 3600_000);
  cert.setSubject(subject);
  cert.setIssuer(issuer.cert ? issuer.cert.subject.attributes : subject);
  cert.setExtensions(extensions);
  cert.sign(issuer.key, forge.md.sha256.create());
  return cert;
}

function makeCredentials(host: string): Credentials {
  const ca = newKeyPair();
  const caCert = signCert([{ name: 'commonName', value: 'kube-standin test CA' }], ca.publicKey, { cert: undefined, key: ca.privateKey }, [
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true },
  ]);
  const leaf = newKeyPair();
  const altNames: object[] = [
    { type: 2, value: 'localhost' },
    { type: 7, ip: '127.0.0.1' },
  ];
  if (host !== '127.0.0.1' && host !== 'localhost') altNames.push(/^[\d.]+$/.test(host) ? { type: 7, ip: host } : { type: 2, value: host });
  const cert = signCert([{ name: 'commonName', value: 'kube-apiserver' }], leaf.publicKey, { cert: caCert, key: ca.privateKey }, [
    { name: 'basicConstraints', cA: false },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: true },
    { name: 'subjectAltName', altNames },
  ]);
  return {
    caPem: forge.pki.certificateToPem(caCert),
    caKey: ca.privateKey,
    caCert,
    certPem: forge.pki.certificateToPem(cert),
    keyPem: forge.pki.privateKeyToPem(leaf.privateKey),
  };
}

/** Answers of the real server for a body it cannot take (415). */
const UNSUPPORTED_PATCH =
  'the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml';

export class KubeStandin extends EventEmitter {
  readonly host: string;
  readonly caPem: string;
  /** A token registered at start as `standin-admin` (groups system:masters): may do everything. */
  readonly adminToken: string;
  /** Every request, in arrival order. */
  readonly requests: StandinRequest[] = [];
  /** Every TokenReview asked, with its answer. */
  readonly tokenReviews: Array<{ spec: JsonObject; status: JsonObject }> = [];

  private port: number;
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private readonly creds: Credentials;
  private readonly types: StandinType[];
  private readonly store = new Map<string, Map<string, KubeObject>>();
  private readonly history: HistoryEntry[] = [];
  private rv = 1000;
  private compactedRv = 0;
  private readonly watchers = new Set<Watcher>();
  private readonly tokens = new Map<string, TokenIdentity>();
  private readonly bookmarkIntervalMs: number;
  private readonly authorize: ((a: AuthorizationAttributes) => boolean) | undefined;
  private tempDir: string | undefined;

  private constructor(options: StandinOptions) {
    super();
    this.host = options.host ?? '127.0.0.1';
    this.port = options.port ?? 0;
    this.bookmarkIntervalMs = options.bookmarkIntervalMs ?? 60_000;
    this.authorize = options.authorize;
    this.types = [...STANDIN_TYPES, ...(options.extraTypes ?? [])].filter((t) => !options.omitKinds?.includes(t.kind));
    for (const t of this.types) if (!t.createOnly) this.store.set(typeKeyOf(t), new Map());
    this.creds = makeCredentials(this.host);
    this.caPem = this.creds.caPem;
    this.adminToken = randomBytes(16).toString('hex');
    this.tokens.set(this.adminToken, { username: 'standin-admin', groups: ['system:masters', 'system:authenticated'] });
  }

  static async start(options: StandinOptions = {}): Promise<KubeStandin> {
    const s = new KubeStandin(options);
    await s.listen();
    return s;
  }

  /** `https://host:port` */
  get url(): string {
    return `https://${this.host.includes(':') ? `[${this.host}]` : this.host}:${this.port}`;
  }

  /** The current resourceVersion (the last write's). */
  get resourceVersion(): string {
    return String(this.rv);
  }

  /** Open watch streams. */
  get openWatches(): number {
    return this.watchers.size;
  }

  get running(): boolean {
    return this.server !== undefined;
  }

  private async listen(): Promise<void> {
    const server = createServer(
      {
        cert: this.creds.certPem,
        key: this.creds.keyPem,
        ca: this.creds.caPem,
        requestCert: true,
        rejectUnauthorized: false,
      },
      (req, res) => this.handle(req, res),
    );
    server.on('connection', (sock: Socket) => {
      this.sockets.add(sock);
      sock.on('close', () => this.sockets.delete(sock));
    });
    server.on('secureConnection', (sock: TLSSocket) => {
      this.sockets.add(sock);
      sock.on('close', () => this.sockets.delete(sock));
    });
    server.on('tlsClientError', () => {
      /* a client that gave up on the handshake: nothing to answer */
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, this.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const addr = server.address();
    if (addr && typeof addr === 'object') this.port = addr.port;
    this.server = server;
  }

  // ---- tokens, certificates, kubeconfig ----------------------------------------------------

  /** Registers a bearer token: what TokenReview says of it, and (audience permitting) an API caller. */
  registerToken(token: string, identity: TokenIdentity): void {
    this.tokens.set(token, clone(identity));
  }

  revokeToken(token: string): void {
    this.tokens.delete(token);
  }

  /** A client certificate from the stand-in's CA: the API server takes the user from CN, groups from O. */
  issueClientCert(username: string, groups: string[] = []): { certPem: string; keyPem: string } {
    const kp = newKeyPair();
    const subject: forge.pki.CertificateField[] = [{ name: 'commonName', value: username }, ...groups.map((g) => ({ name: 'organizationName', value: g }))];
    const cert = signCert(subject, kp.publicKey, { cert: this.creds.caCert, key: this.creds.caKey }, [
      { name: 'basicConstraints', cA: false },
      { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
      { name: 'extKeyUsage', clientAuth: true },
    ]);
    return { certPem: forge.pki.certificateToPem(cert), keyPem: forge.pki.privateKeyToPem(kp.privateKey) };
  }

  /** A kubeconfig for this server: the admin token unless a token or a client certificate is given. */
  kubeconfig(opts: { token?: string; clientCert?: { certPem: string; keyPem: string }; namespace?: string } = {}): string {
    const b64 = (s: string): string => Buffer.from(s).toString('base64');
    const user = opts.clientCert
      ? { 'client-certificate-data': b64(opts.clientCert.certPem), 'client-key-data': b64(opts.clientCert.keyPem) }
      : { token: opts.token ?? this.adminToken };
    return JSON.stringify(
      {
        apiVersion: 'v1',
        kind: 'Config',
        clusters: [{ name: 'standin', cluster: { server: this.url, 'certificate-authority-data': b64(this.caPem) } }],
        users: [{ name: 'standin-user', user }],
        contexts: [{ name: 'standin', context: { cluster: 'standin', user: 'standin-user', ...(opts.namespace ? { namespace: opts.namespace } : {}) } }],
        'current-context': 'standin',
      },
      null,
      2,
    );
  }

  /** Writes kubeconfig() into a file (in a temporary directory removed by close() unless `dir` is given). */
  writeKubeconfig(opts: { token?: string; clientCert?: { certPem: string; keyPem: string }; namespace?: string; dir?: string } = {}): string {
    const dir = opts.dir ?? (this.tempDir ??= mkdtempSync(join(tmpdir(), 'kube-standin-')));
    const file = join(dir, `kubeconfig-${randomBytes(4).toString('hex')}`);
    writeFileSync(file, this.kubeconfig(opts), { mode: 0o600 });
    return file;
  }

  // ---- the store, for tests ------------------------------------------------------------------

  private typeOf(apiVersion: string, kind: string): StandinType {
    const t = this.types.find((x) => apiVersionOf(x) === apiVersion && x.kind === kind && !x.createOnly);
    if (!t) throw new Error(`the stand-in does not serve ${apiVersion} ${kind}`);
    return t;
  }

  /** Creates or replaces an object as given (status included), as a controller writing to the API would. */
  put(obj: KubeObject | JsonObject): KubeObject {
    const o = clone(obj) as KubeObject;
    const t = this.typeOf(o.apiVersion, o.kind);
    if (t.namespaced && !o.metadata.namespace) o.metadata.namespace = 'default';
    const old = this.store.get(typeKeyOf(t))!.get(objectKey(o.metadata.namespace, o.metadata.name));
    return this.write(t, o, old, { keepStatus: false });
  }

  /** Deletes an object; returns it, or undefined if there was none. */
  remove(apiVersion: string, kind: string, namespace: string | undefined, name: string): KubeObject | undefined {
    const t = this.typeOf(apiVersion, kind);
    return this.erase(t, namespace, name);
  }

  get(apiVersion: string, kind: string, namespace: string | undefined, name: string): KubeObject | undefined {
    const t = this.typeOf(apiVersion, kind);
    const o = this.store.get(typeKeyOf(t))!.get(objectKey(t.namespaced ? (namespace ?? 'default') : undefined, name));
    return o ? clone(o) : undefined;
  }

  list(apiVersion: string, kind: string, namespace?: string): KubeObject[] {
    const t = this.typeOf(apiVersion, kind);
    return [...this.store.get(typeKeyOf(t))!.values()].filter((o) => namespace === undefined || o.metadata.namespace === namespace).map(clone);
  }

  private write(t: StandinType, o: KubeObject, old: KubeObject | undefined, opts: { keepStatus: boolean }): KubeObject {
    const ns = t.namespaced ? o.metadata.namespace : undefined;
    const key = objectKey(ns, o.metadata.name);
    this.rv++;
    const meta = o.metadata;
    meta.uid = old?.metadata.uid ?? meta.uid ?? randomUUID();
    meta.creationTimestamp = old?.metadata.creationTimestamp ?? meta.creationTimestamp ?? timeNow();
    meta.resourceVersion = String(this.rv);
    if (opts.keepStatus && t.status) {
      if (old && old.status !== undefined) o.status = clone(old.status);
      else delete o.status;
    }
    if (t.status) {
      const specOf = (x: KubeObject | undefined): string => {
        if (!x) return '';
        const { metadata: _m, status: _s, ...rest } = x;
        void _m;
        void _s;
        return JSON.stringify(rest);
      };
      const oldGen = old?.metadata.generation ?? 0;
      meta.generation = !old ? 1 : specOf(old) !== specOf(o) ? oldGen + 1 : oldGen || 1;
    }
    this.store.get(typeKeyOf(t))!.set(key, o);
    this.record(t, key, old ? 'MODIFIED' : 'ADDED', o, old);
    return clone(o);
  }

  private erase(t: StandinType, namespace: string | undefined, name: string): KubeObject | undefined {
    const key = objectKey(t.namespaced ? (namespace ?? 'default') : undefined, name);
    const objects = this.store.get(typeKeyOf(t))!;
    const old = objects.get(key);
    if (!old) return undefined;
    objects.delete(key);
    this.rv++;
    // A deleted object's last state carries the deletion's resourceVersion, as the watch shows it.
    const gone = clone(old);
    gone.metadata.resourceVersion = String(this.rv);
    this.record(t, key, 'DELETED', gone, old);
    return clone(gone);
  }

  private record(t: StandinType, key: string, event: HistoryEntry['event'], object: KubeObject, previous: KubeObject | undefined): void {
    const entry: HistoryEntry = { rv: this.rv, typeKey: typeKeyOf(t), key, event, object: clone(object), previous: previous ? clone(previous) : undefined };
    this.history.push(entry);
    for (const w of this.watchers) if (w.type === t) this.deliver(w, entry);
  }

  private deliver(w: Watcher, e: HistoryEntry): void {
    if (w.namespace !== undefined && e.object.metadata.namespace !== w.namespace) return;
    const now = e.event !== 'DELETED' && selected(e.object, w.labels, w.fields);
    const before = e.previous !== undefined && selected(e.previous, w.labels, w.fields);
    // The watch cache's view through a selector: entering it is ADDED, leaving it DELETED.
    let type: string;
    if (e.event === 'DELETED') {
      if (!before) return;
      type = 'DELETED';
    } else if (now && before) type = 'MODIFIED';
    else if (now) type = 'ADDED';
    else if (before) type = 'DELETED';
    else return;
    this.send(w, { type, object: e.object });
  }

  private send(w: Watcher, ev: { type: string; object: unknown }): void {
    if (w.closed) return;
    w.res.write(JSON.stringify(ev) + '\n');
  }

  /**
   * Forgets history up to now, as etcd's compaction does: a watch or a `continue` from an older
   * resourceVersion gets 410 Expired from then on.
   */
  compact(): void {
    this.compactedRv = this.rv;
    this.history.length = 0;
  }

  /** Sends every open watch an ERROR event with a 410 Status and ends it (what a client then must do is re-list). */
  expireWatches(): void {
    for (const w of [...this.watchers]) {
      this.send(w, { type: 'ERROR', object: statusBody(410, 'Expired', `too old resource version: ${this.compactedRv} (${this.rv})`) });
      this.closeWatch(w);
    }
  }

  /** Ends every open watch normally (as a watch timeout does). */
  dropWatches(): void {
    for (const w of [...this.watchers]) this.closeWatch(w);
  }

  /** Sends a BOOKMARK at the current resourceVersion to every watch that allows bookmarks. */
  sendBookmarks(): void {
    for (const w of this.watchers) if (w.bookmarks) this.bookmark(w);
  }

  private bookmark(w: Watcher): void {
    this.send(w, { type: 'BOOKMARK', object: { kind: w.type.kind, apiVersion: apiVersionOf(w.type), metadata: { resourceVersion: String(this.rv) } } });
  }

  private closeWatch(w: Watcher): void {
    if (w.closed) return;
    w.closed = true;
    for (const t of w.timers) clearInterval(t);
    this.watchers.delete(w);
    w.res.end();
  }

  /** Stops serving: closes the listener and drops every connection (watches included). The store stays. */
  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    for (const w of [...this.watchers]) {
      w.closed = true;
      for (const t of w.timers) clearInterval(t);
      this.watchers.delete(w);
    }
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
    await closed;
  }

  /** Serves again on the same port, with the same store and resourceVersions. */
  async resume(): Promise<void> {
    if (!this.server) await this.listen();
  }

  /** stop(), then `whileDown` (e.g. writes clients will have to catch up on), then resume(). */
  async restart(whileDown?: () => void | Promise<void>): Promise<void> {
    await this.stop();
    await whileDown?.();
    await this.resume();
  }

  async close(): Promise<void> {
    await this.stop();
    if (this.tempDir) rmSync(this.tempDir, { recursive: true, force: true });
    this.tempDir = undefined;
  }

  /** Resolves with the first request (past or future) that `pred` accepts. */
  waitForRequest(pred: (r: StandinRequest) => boolean, timeoutMs = 10_000): Promise<StandinRequest> {
    const seen = this.requests.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.off('request', on);
        reject(new Error(`kube stand-in: no matching request within ${timeoutMs} ms`));
      }, timeoutMs);
      const on = (r: StandinRequest): void => {
        if (!pred(r)) return;
        clearTimeout(timer);
        this.off('request', on);
        resolve(r);
      };
      this.on('request', on);
    });
  }

  // ---- HTTP ----------------------------------------------------------------------------------

  private authenticate(req: IncomingMessage): StandinUser | undefined {
    const auth = req.headers.authorization;
    if (auth && /^bearer /i.test(auth)) {
      const id = this.tokens.get(auth.slice(7).trim());
      if (!id) return undefined;
      if (id.expiresAt && id.expiresAt.getTime() <= Date.now()) return undefined;
      if (id.audiences && !id.audiences.includes(STANDIN_API_AUDIENCE)) return undefined;
      return { username: id.username, groups: id.groups ?? [], ...(id.uid ? { uid: id.uid } : {}), ...(id.extra ? { extra: id.extra } : {}) };
    }
    const sock = req.socket as TLSSocket;
    if (sock.authorized) {
      const cert = sock.getPeerCertificate();
      const subject = cert.subject as unknown as Record<string, string | string[]> | undefined;
      const cn = subject?.CN;
      const o = subject?.O;
      if (typeof cn === 'string' && cn) return { username: cn, groups: o === undefined ? [] : Array.isArray(o) ? o : [o] };
    }
    return undefined;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'https://standin');
    const query: Record<string, string> = {};
    for (const [k, v] of url.searchParams) query[k] = v;
    const record: StandinRequest = {
      method: req.method ?? 'GET',
      path: url.pathname,
      query,
      contentType: req.headers['content-type'],
      accept: req.headers.accept,
      userAgent: req.headers['user-agent'],
      user: undefined,
    };
    this.requests.push(record);
    const answer = (code: number, body: unknown): void => {
      record.status = code;
      if (!res.headersSent) res.writeHead(code, { 'Content-Type': 'application/json', 'Cache-Control': 'no-cache, private' });
      res.end(JSON.stringify(body));
      this.emit('request', record);
    };
    const fail = (err: unknown): void => {
      if (err instanceof HttpError) answer(err.code, statusBody(err.code, err.reason, err.message, err.details));
      else answer(500, statusBody(500, 'InternalError', `stand-in: ${err instanceof Error ? err.message : String(err)}`));
    };
    const user = this.authenticate(req);
    if (!user) {
      answer(401, statusBody(401, 'Unauthorized', 'Unauthorized'));
      return;
    }
    record.user = user.username;
    this.readBody(req)
      .then((body) => this.route(req.method ?? 'GET', url.pathname, query, req.headers['content-type'], body, user, record, res, answer))
      .catch(fail);
  }

  private readBody(req: IncomingMessage): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      req.on('data', (c: Buffer) => {
        size += c.length;
        if (size > MAX_BODY_BYTES) {
          reject(new HttpError(413, 'RequestEntityTooLarge', 'the request body is too large'));
          req.destroy();
          return;
        }
        chunks.push(c);
      });
      req.on('end', () => resolve(Buffer.concat(chunks)));
      req.on('error', reject);
    });
  }

  private async route(
    method: string,
    path: string,
    query: Record<string, string>,
    contentType: string | undefined,
    body: Buffer,
    user: StandinUser,
    record: StandinRequest,
    res: ServerResponse,
    answer: (code: number, body: unknown) => void,
  ): Promise<void> {
    const parts = path.split('/').filter(Boolean);
    if (method === 'GET' && path === '/version') return answer(200, { ...STANDIN_SERVER_VERSION, platform: 'linux/amd64', goVersion: 'go1.23', compiler: 'gc', buildDate: '2026-01-01T00:00:00Z', gitCommit: 'standin', gitTreeState: 'clean' });
    if (method === 'GET' && path === '/api') {
      return answer(200, { kind: 'APIVersions', versions: ['v1'], serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: `${this.host}:${this.port}` }] });
    }
    if (method === 'GET' && path === '/apis') return answer(200, { kind: 'APIGroupList', apiVersion: 'v1', groups: this.groups() });
    if (method === 'GET' && path === '/openapi/v3') return answer(200, this.openApiIndex());
    if (method === 'GET' && parts[0] === 'openapi' && parts[1] === 'v3' && parts.length > 2) return answer(200, this.openApiDocument(parts.slice(2).join('/')));
    if (method === 'GET' && parts[0] === 'apis' && parts.length === 2) {
      const g = this.groups().find((x) => x.name === parts[1]);
      if (!g) throw new HttpError(404, 'NotFound', 'the server could not find the requested resource');
      return answer(200, { kind: 'APIGroup', apiVersion: 'v1', ...g });
    }
    let group: string;
    let version: string;
    let rest: string[];
    if (parts[0] === 'api' && parts[1] === 'v1') {
      group = '';
      version = 'v1';
      rest = parts.slice(2);
    } else if (parts[0] === 'apis' && parts.length >= 3) {
      group = parts[1]!;
      version = parts[2]!;
      rest = parts.slice(3);
    } else {
      throw new HttpError(404, 'NotFound', 'the server could not find the requested resource');
    }
    const inGroup = this.types.filter((t) => t.group === group && t.version === version);
    if (inGroup.length === 0) throw new HttpError(404, 'NotFound', 'the server could not find the requested resource');
    if (rest.length === 0) {
      if (method !== 'GET') throw new HttpError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource');
      return answer(200, this.resourceList(group, version, inGroup));
    }
    // /namespaces/<ns>/<plural>/... is a namespaced path; /namespaces[/<name>[/status]] the Namespace kind.
    let namespace: string | undefined;
    if (rest[0] === 'namespaces' && rest.length >= 3 && inGroup.some((t) => t.namespaced && t.plural === rest[2])) {
      namespace = decodeURIComponent(rest[1]!);
      rest = rest.slice(2);
    }
    const [plural, rawName, subresource, ...more] = rest;
    const type = inGroup.find((t) => t.plural === plural);
    if (!type || more.length) throw new HttpError(404, 'NotFound', 'the server could not find the requested resource');
    if (namespace !== undefined && !type.namespaced) throw new HttpError(404, 'NotFound', 'the server could not find the requested resource');
    const name = rawName === undefined ? undefined : decodeURIComponent(rawName);
    if (subresource !== undefined && !(subresource === 'status' && type.status)) throw new HttpError(404, 'NotFound', 'the server could not find the requested resource');

    const verb =
      method === 'GET'
        ? name === undefined
          ? query.watch === 'true' || query.watch === '1'
            ? 'watch'
            : 'list'
          : 'get'
        : method === 'POST'
          ? 'create'
          : method === 'PUT'
            ? 'update'
            : method === 'PATCH'
              ? 'patch'
              : method === 'DELETE'
                ? name === undefined
                  ? 'deletecollection'
                  : 'delete'
                : method.toLowerCase();
    if (this.authorize && !this.authorize({ user, verb, group, resource: type.plural, subresource, namespace, name })) {
      const who = `User "${user.username}"`;
      const what = `${type.plural}${type.group ? `.${type.group}` : ''}`;
      throw new HttpError(403, 'Forbidden', `${who} cannot ${verb} resource "${what}" in API group "${type.group}"${namespace ? ` in the namespace "${namespace}"` : ' at the cluster scope'}`, {
        kind: type.plural,
        group: type.group,
        ...(name ? { name } : {}),
      });
    }
    if (type.createOnly) {
      if (verb !== 'create') throw new HttpError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource');
      return answer(201, this.tokenReview(this.parseJson(body, contentType)));
    }
    switch (verb) {
      case 'list':
        return answer(200, this.listObjects(type, namespace, query));
      case 'watch':
        return this.startWatch(type, namespace, query, user, record, res);
      case 'get':
        return answer(200, this.getObject(type, namespace, name!));
      case 'create': {
        if (name !== undefined) throw new HttpError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource');
        return answer(201, this.createObject(type, namespace, this.parseJson(body, contentType), query));
      }
      case 'update':
        return answer(200, this.updateObject(type, namespace, name!, subresource, this.parseJson(body, contentType), query));
      case 'patch':
        return answer(200, this.patchObject(type, namespace, name!, subresource, contentType, body, query));
      case 'delete': {
        const gone = this.erase(type, namespace, name!);
        if (!gone) throw this.notFound(type, name!);
        return answer(200, gone);
      }
      default:
        throw new HttpError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource');
    }
  }

  private groups(): JsonObject[] {
    const byGroup = new Map<string, string[]>();
    for (const t of this.types) {
      if (!t.group) continue;
      const vs = byGroup.get(t.group) ?? [];
      if (!vs.includes(t.version)) vs.push(t.version);
      byGroup.set(t.group, vs);
    }
    return [...byGroup].map(([name, versions]) => ({
      name,
      versions: versions.map((v) => ({ groupVersion: `${name}/${v}`, version: v })),
      preferredVersion: { groupVersion: `${name}/${versions[0]}`, version: versions[0]! },
    }));
  }

  private groupVersions(): Array<{ group: string; version: string; path: string }> {
    const out = new Map<string, { group: string; version: string; path: string }>();
    for (const t of this.types) {
      const path = t.group ? `apis/${t.group}/${t.version}` : `api/${t.version}`;
      out.set(path, { group: t.group, version: t.version, path });
    }
    return [...out.values()];
  }

  /**
   * The OpenAPI v3 index. kubectl reads it to learn whether the server validates fields itself
   * (`fieldValidation` on each kind's PATCH); then it sends `fieldValidation=Strict` and needs no
   * schema of its own. The stand-in has no schemas: it accepts any field (documented above).
   */
  private openApiIndex(): JsonObject {
    const paths: JsonObject = {};
    for (const gv of this.groupVersions()) paths[gv.path] = { serverRelativeURL: `/openapi/v3/${gv.path}?hash=standin` };
    return { paths };
  }

  private openApiDocument(path: string): JsonObject {
    const gv = this.groupVersions().find((x) => x.path === path);
    if (!gv) throw new HttpError(404, 'NotFound', 'the server could not find the requested resource');
    const paths: JsonObject = {};
    const query = (name: string): JsonObject => ({ name, in: 'query', schema: { type: 'string', uniqueItems: true } });
    for (const t of this.types) {
      if (t.group !== gv.group || t.version !== gv.version || t.createOnly) continue;
      const gvk = { group: t.group, version: t.version, kind: t.kind };
      const base = `/${gv.path}${t.namespaced ? '/namespaces/{namespace}' : ''}/${t.plural}/{name}`;
      const op = (action: string): JsonObject => ({
        operationId: `${action}${t.kind}`,
        parameters: [query('dryRun'), query('fieldManager'), query('fieldValidation'), ...(action === 'patch' ? [query('force')] : [])],
        responses: { '200': { description: 'OK' } },
        'x-kubernetes-action': action,
        'x-kubernetes-group-version-kind': gvk,
      });
      paths[base] = { get: { ...op('get'), parameters: [] }, put: op('put'), patch: op('patch'), delete: { ...op('delete'), parameters: [query('dryRun')] } };
    }
    return { openapi: '3.0.0', info: { title: 'Kubernetes (stand-in)', version: STANDIN_SERVER_VERSION.gitVersion }, paths, components: { schemas: {} } };
  }

  private resourceList(group: string, version: string, types: StandinType[]): JsonObject {
    const resources: JsonObject[] = [];
    for (const t of types) {
      resources.push({
        name: t.plural,
        singularName: t.singular,
        namespaced: t.namespaced,
        kind: t.kind,
        verbs: t.createOnly ? ['create'] : [...ALL_VERBS],
        ...(t.shortNames ? { shortNames: t.shortNames } : {}),
        ...(t.categories ? { categories: t.categories } : {}),
      });
      if (t.status) resources.push({ name: `${t.plural}/status`, singularName: '', namespaced: t.namespaced, kind: t.kind, verbs: ['get', 'patch', 'update'] });
    }
    return { kind: 'APIResourceList', apiVersion: 'v1', groupVersion: group ? `${group}/${version}` : version, resources };
  }

  private parseJson(body: Buffer, contentType: string | undefined): JsonObject {
    const ct = (contentType ?? 'application/json').split(';')[0]!.trim();
    if (ct !== 'application/json' && !ct.endsWith('+json')) {
      throw new HttpError(415, 'UnsupportedMediaType', `the body of the request was in an unknown format - accepted media types include: application/json`);
    }
    let v: unknown;
    try {
      v = JSON.parse(body.toString('utf8'));
    } catch (err) {
      throw new HttpError(400, 'BadRequest', `the body of the request could not be decoded: ${err instanceof Error ? err.message : String(err)}`);
    }
    if (!isObject(v)) throw new HttpError(400, 'BadRequest', 'the body of the request must be a JSON object');
    return v;
  }

  private notFound(t: StandinType, name: string): HttpError {
    const what = t.group ? `${t.plural}.${t.group}` : t.plural;
    return new HttpError(404, 'NotFound', `${what} "${name}" not found`, { name, group: t.group, kind: t.plural });
  }

  private invalid(t: StandinType, name: string, causes: Array<{ field: string; reason: string; message: string }>): HttpError {
    const what = t.group ? `${t.kind}.${t.group}` : t.kind;
    const list = causes.map((c) => `${c.field}: ${c.message}`).join(', ');
    return new HttpError(422, 'Invalid', `${what} "${name}" is invalid: ${list}`, { name, group: t.group, kind: t.kind, causes: causes.map((c) => ({ reason: c.reason, message: c.message, field: c.field })) });
  }

  private stateAt(t: StandinType, rv: number): Map<string, KubeObject> {
    const state = new Map(this.store.get(typeKeyOf(t))!);
    for (let i = this.history.length - 1; i >= 0; i--) {
      const e = this.history[i]!;
      if (e.rv <= rv) break;
      if (e.typeKey !== typeKeyOf(t)) continue;
      if (e.previous) state.set(e.key, e.previous);
      else state.delete(e.key);
    }
    return state;
  }

  private listObjects(t: StandinType, namespace: string | undefined, query: Record<string, string>): JsonObject {
    const labels = parseSelector(query.labelSelector);
    const fields = parseSelector(query.fieldSelector);
    let atRv = this.rv;
    let after: string | undefined;
    if (query.continue) {
      let token: { rv?: unknown; start?: unknown };
      try {
        token = JSON.parse(Buffer.from(query.continue, 'base64').toString('utf8')) as { rv?: unknown; start?: unknown };
      } catch {
        throw new HttpError(400, 'BadRequest', 'continue key is not valid: illegal base64 data');
      }
      if (typeof token.rv !== 'number' || typeof token.start !== 'string') throw new HttpError(400, 'BadRequest', 'continue key is not valid');
      if (token.rv < this.compactedRv) {
        throw new HttpError(410, 'Expired', 'The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.');
      }
      atRv = token.rv;
      after = token.start;
    }
    const state = atRv === this.rv ? this.store.get(typeKeyOf(t))! : this.stateAt(t, atRv);
    const all = [...state.entries()]
      .filter(([, o]) => (namespace === undefined || o.metadata.namespace === namespace) && selected(o, labels, fields))
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    const from = after === undefined ? 0 : all.findIndex(([k]) => k > after!);
    const rest = from < 0 ? [] : all.slice(from);
    const limit = query.limit ? Number(query.limit) : 0;
    const page = limit > 0 ? rest.slice(0, limit) : rest;
    const metadata: JsonObject = { resourceVersion: String(atRv) };
    if (limit > 0 && rest.length > limit) {
      metadata.continue = Buffer.from(JSON.stringify({ rv: atRv, start: page[page.length - 1]![0] })).toString('base64');
      metadata.remainingItemCount = rest.length - limit;
    }
    return { kind: `${t.kind}List`, apiVersion: apiVersionOf(t), metadata, items: page.map(([, o]) => clone(o) as unknown as JsonObject) };
  }

  private startWatch(t: StandinType, namespace: string | undefined, query: Record<string, string>, user: StandinUser, record: StandinRequest, res: ServerResponse): void {
    const labels = parseSelector(query.labelSelector);
    const fields = parseSelector(query.fieldSelector);
    const from = query.resourceVersion;
    record.status = 200;
    res.writeHead(200, { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked', 'Cache-Control': 'no-cache, private' });
    res.flushHeaders();
    const w: Watcher = { type: t, namespace, labels, fields, bookmarks: query.allowWatchBookmarks === 'true', res, timers: [], closed: false };
    res.on('close', () => {
      w.closed = true;
      for (const x of w.timers) clearInterval(x);
      this.watchers.delete(w);
    });
    const fromRv = from === undefined || from === '' || from === '0' ? undefined : Number(from);
    if (fromRv !== undefined && (!Number.isInteger(fromRv) || fromRv < 0)) {
      this.send(w, { type: 'ERROR', object: statusBody(400, 'BadRequest', `invalid resource version: ${JSON.stringify(from)}`) });
      this.closeWatch(w);
      this.emit('request', record);
      return;
    }
    if (fromRv !== undefined && fromRv < this.compactedRv) {
      // The watch cache cannot serve it: a 200 stream with one ERROR event, then the end.
      this.send(w, { type: 'ERROR', object: statusBody(410, 'Expired', `too old resource version: ${fromRv} (${this.compactedRv})`) });
      this.closeWatch(w);
      this.emit('request', record);
      return;
    }
    this.watchers.add(w);
    if (fromRv === undefined) {
      // No version: the current state as ADDED events, then changes.
      const objects = [...this.store.get(typeKeyOf(t))!.values()].filter((o) => (namespace === undefined || o.metadata.namespace === namespace) && selected(o, labels, fields));
      for (const o of objects) this.send(w, { type: 'ADDED', object: clone(o) as unknown as JsonObject });
    } else {
      for (const e of this.history) if (e.rv > fromRv && e.typeKey === typeKeyOf(t)) this.deliver(w, e);
    }
    if (w.bookmarks) w.timers.push(setInterval(() => this.bookmark(w), this.bookmarkIntervalMs));
    const timeout = Number(query.timeoutSeconds);
    if (Number.isFinite(timeout) && timeout > 0) w.timers.push(setTimeout(() => this.closeWatch(w), timeout * 1000));
    this.emit('request', record);
    this.emit('watch', { type: t, namespace, query, user: user.username } satisfies WatchInfo);
  }

  private getObject(t: StandinType, namespace: string | undefined, name: string): KubeObject {
    const o = this.store.get(typeKeyOf(t))!.get(objectKey(t.namespaced ? namespace : undefined, name));
    if (!o) throw this.notFound(t, name);
    return clone(o);
  }

  private checkIdentity(t: StandinType, namespace: string | undefined, o: JsonObject, name?: string): KubeObject {
    if (o.apiVersion !== apiVersionOf(t) || o.kind !== t.kind) {
      throw new HttpError(400, 'BadRequest', `the API version in the data (${String(o.apiVersion)}) does not match the expected API version (${apiVersionOf(t)}) or kind ${String(o.kind)} is not ${t.kind}`);
    }
    if (!isObject(o.metadata)) o.metadata = {};
    const meta = o.metadata as JsonObject;
    if (t.namespaced) {
      if (namespace === undefined) throw new HttpError(404, 'NotFound', 'the server could not find the requested resource');
      if (meta.namespace !== undefined && meta.namespace !== namespace) {
        throw new HttpError(400, 'BadRequest', 'the namespace of the provided object does not match the namespace sent on the request');
      }
      meta.namespace = namespace;
    } else delete meta.namespace;
    if (name !== undefined && meta.name !== undefined && meta.name !== name) {
      throw new HttpError(400, 'BadRequest', `the name of the object (${String(meta.name)}) does not match the name on the URL (${name})`);
    }
    if (name !== undefined) meta.name = name;
    if (typeof meta.name !== 'string' || meta.name === '') {
      if (typeof meta.generateName === 'string' && meta.generateName) meta.name = meta.generateName + randomBytes(3).toString('hex').slice(0, 5);
      else throw this.invalid(t, '', [{ field: 'metadata.name', reason: 'FieldValueRequired', message: 'Required value: name or generateName is required' }]);
    }
    return o as unknown as KubeObject;
  }

  private createObject(t: StandinType, namespace: string | undefined, body: JsonObject, query: Record<string, string>): KubeObject {
    const o = this.checkIdentity(t, namespace, body);
    if (t.group === 'events.k8s.io') this.validateEvent(t, o);
    const objects = this.store.get(typeKeyOf(t))!;
    const key = objectKey(o.metadata.namespace, o.metadata.name);
    if (objects.has(key)) {
      const what = t.group ? `${t.plural}.${t.group}` : t.plural;
      throw new HttpError(409, 'AlreadyExists', `${what} "${o.metadata.name}" already exists`, { name: o.metadata.name, group: t.group, kind: t.plural });
    }
    delete o.metadata.resourceVersion;
    delete o.metadata.uid;
    delete o.metadata.creationTimestamp;
    // Status is the controllers' to write, through /status.
    if (t.status) delete o.status;
    if (query.dryRun === 'All') return o;
    return this.write(t, o, undefined, { keepStatus: false });
  }

  private updateObject(t: StandinType, namespace: string | undefined, name: string, subresource: string | undefined, body: JsonObject, query: Record<string, string>): KubeObject {
    const o = this.checkIdentity(t, namespace, body, name);
    const old = this.store.get(typeKeyOf(t))!.get(objectKey(o.metadata.namespace, name));
    if (!old) throw this.notFound(t, name);
    if (o.metadata.resourceVersion !== undefined && o.metadata.resourceVersion !== old.metadata.resourceVersion) {
      const what = t.group ? `${t.plural}.${t.group}` : t.plural;
      throw new HttpError(409, 'Conflict', `Operation cannot be fulfilled on ${what} "${name}": the object has been modified; please apply your changes to the latest version and try again`, {
        name,
        group: t.group,
        kind: t.plural,
      });
    }
    let next: KubeObject;
    if (subresource === 'status') {
      next = clone(old);
      if (o.status === undefined) delete next.status;
      else next.status = clone(o.status);
    } else next = o;
    if (query.dryRun === 'All') return next;
    return this.write(t, next, old, { keepStatus: subresource !== 'status' });
  }

  private patchObject(
    t: StandinType,
    namespace: string | undefined,
    name: string,
    subresource: string | undefined,
    contentType: string | undefined,
    body: Buffer,
    query: Record<string, string>,
  ): KubeObject {
    const ct = (contentType ?? '').split(';')[0]!.trim();
    const old = this.store.get(typeKeyOf(t))!.get(objectKey(t.namespaced ? namespace : undefined, name));
    let patch: Json;
    try {
      patch = JSON.parse(body.toString('utf8')) as Json;
    } catch (err) {
      throw new HttpError(400, 'BadRequest', `the body of the request could not be decoded: ${err instanceof Error ? err.message : String(err)}`);
    }
    let patched: Json;
    if (ct === 'application/merge-patch+json') {
      if (!old) throw this.notFound(t, name);
      patched = mergePatch(old as unknown as Json, patch);
    } else if (ct === 'application/strategic-merge-patch+json') {
      if (!t.strategicMerge) throw new HttpError(415, 'UnsupportedMediaType', UNSUPPORTED_PATCH);
      if (!old) throw this.notFound(t, name);
      patched = strategicPatch(old as unknown as Json, patch);
    } else if (ct === 'application/json-patch+json') {
      if (!old) throw this.notFound(t, name);
      patched = jsonPatch(old as unknown as Json, patch);
    } else {
      throw new HttpError(415, 'UnsupportedMediaType', UNSUPPORTED_PATCH);
    }
    if (!isObject(patched)) throw new HttpError(422, 'Invalid', 'the patched object is not an object');
    const o = this.checkIdentity(t, namespace, patched, name);
    // A patch carrying a resourceVersion is a precondition, as in an update.
    const patchRv = isObject(patch) && isObject(patch.metadata) ? patch.metadata.resourceVersion : undefined;
    if (typeof patchRv === 'string' && patchRv !== old!.metadata.resourceVersion) {
      const what = t.group ? `${t.plural}.${t.group}` : t.plural;
      throw new HttpError(409, 'Conflict', `Operation cannot be fulfilled on ${what} "${name}": the object has been modified; please apply your changes to the latest version and try again`);
    }
    o.metadata.resourceVersion = old!.metadata.resourceVersion;
    return this.updateObject(t, namespace, name, subresource, o as unknown as JsonObject, query);
  }

  /** events.k8s.io/v1 validation, as the API server's (pkg/apis/core/validation/events.go) for new events. */
  private validateEvent(t: StandinType, o: KubeObject): void {
    const causes: Array<{ field: string; reason: string; message: string }> = [];
    const required = (field: string, v: Json | undefined, max?: number): void => {
      if (typeof v !== 'string' || v === '') causes.push({ field, reason: 'FieldValueRequired', message: 'Required value' });
      else if (max !== undefined && v.length > max) causes.push({ field, reason: 'FieldValueTooLong', message: `Too long: may not be more than ${max} bytes` });
    };
    const ev = o as unknown as JsonObject;
    if (ev.eventTime === undefined || ev.eventTime === null) causes.push({ field: 'eventTime', reason: 'FieldValueRequired', message: 'Required value' });
    else if (typeof ev.eventTime !== 'string' || !MICRO_TIME.test(ev.eventTime)) {
      causes.push({ field: 'eventTime', reason: 'FieldValueInvalid', message: `Invalid value: ${JSON.stringify(ev.eventTime)}: must be a MicroTime (RFC 3339 with exactly six fractional digits)` });
    }
    required('reportingController', ev.reportingController);
    required('reportingInstance', ev.reportingInstance, 128);
    required('action', ev.action, 128);
    required('reason', ev.reason, 128);
    if (ev.type !== 'Normal' && ev.type !== 'Warning') causes.push({ field: 'type', reason: 'FieldValueNotSupported', message: `Unsupported value: ${JSON.stringify(ev.type ?? '')}: supported values: "Normal", "Warning"` });
    if (typeof ev.note === 'string' && Buffer.byteLength(ev.note) > 1024) causes.push({ field: 'note', reason: 'FieldValueTooLong', message: 'Too long: may not be more than 1024 bytes' });
    const regarding = ev.regarding;
    if (isObject(regarding) && typeof regarding.namespace === 'string' && regarding.namespace !== '' && regarding.namespace !== o.metadata.namespace) {
      causes.push({ field: 'regarding.namespace', reason: 'FieldValueInvalid', message: `Invalid value: ${JSON.stringify(regarding.namespace)}: does not match event.namespace` });
    }
    if (causes.length) throw this.invalid(t, o.metadata.name, causes);
  }

  private tokenReview(body: JsonObject): JsonObject {
    if (body.apiVersion !== 'authentication.k8s.io/v1' || body.kind !== 'TokenReview') {
      throw new HttpError(400, 'BadRequest', `the API version in the data (${String(body.apiVersion)}) does not match the expected API version (authentication.k8s.io/v1)`);
    }
    const spec = isObject(body.spec) ? body.spec : {};
    const token = typeof spec.token === 'string' ? spec.token : '';
    const wanted = Array.isArray(spec.audiences) ? spec.audiences.filter((a): a is string => typeof a === 'string') : [];
    // No audiences asked: the API server's own, as the real server does.
    const asked = wanted.length ? wanted : [STANDIN_API_AUDIENCE];
    let status: JsonObject;
    const id = token ? this.tokens.get(token) : undefined;
    if (!token) throw this.invalid(this.types.find((t) => t.kind === 'TokenReview')!, '', [{ field: 'spec.token', reason: 'FieldValueRequired', message: 'Required value' }]);
    if (!id) status = { authenticated: false, user: {}, error: '[invalid bearer token, token lookup failed]' };
    else if (id.expiresAt && id.expiresAt.getTime() <= Date.now()) status = { authenticated: false, user: {}, error: '[invalid bearer token, service account token has expired]' };
    else {
      const own = id.audiences ?? [STANDIN_API_AUDIENCE];
      const both = asked.filter((a) => own.includes(a));
      if (both.length === 0) status = { authenticated: false, user: {}, error: '[invalid bearer token, token audiences is invalid for the target audiences]' };
      else {
        const user: JsonObject = { username: id.username, groups: id.groups ?? [] };
        if (id.uid) user.uid = id.uid;
        if (id.extra) user.extra = clone(id.extra);
        status = { authenticated: true, user, audiences: both };
      }
    }
    const specOut: JsonObject = { token: spec.token ?? null, ...(wanted.length ? { audiences: wanted } : {}) };
    this.tokenReviews.push({ spec: specOut, status });
    return { kind: 'TokenReview', apiVersion: 'authentication.k8s.io/v1', metadata: { creationTimestamp: null }, spec: specOut, status };
  }
}
