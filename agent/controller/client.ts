// The node agent's side of the controller: the discovery stream (snapshot, then deltas, applied to a
// local copy; the callback always gets the full current set) and CreateCertificate. The controller is
// verified against the mesh root (its serving certificate names its IP/DNS) in every case; the agent
// authenticates with its node credential (a client certificate: the lab) or, on Kubernetes, with its
// projected service-account token (`authorization: Bearer`, sent with every call and stream, read
// from the file again whenever the kubelet has rotated it). When the stream breaks, the client keeps
// the last state and reconnects with exponential backoff, 1 s doubling to 30 s.
import { readFileSync, statSync } from 'node:fs';
import { isIP } from 'node:net';
import { checkServerIdentity } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { CaTokenAuth } from '../config.js';
import { ErrorCodes, WeftError, errorMessage, type ConfigProblem } from '../errors.js';
import type { Logger } from '../log.js';
import type { Resource } from '../registry/types.js';
import { controllerProtos, type IstioCertificateRequest, type IstioCertificateResponse, type ResourceUpdate, type StreamRequest } from './proto.js';
import { parseHostPort } from '../system/host-port.js';

/** SNI sent when the controller is dialled by IP (TLS forbids an IP there); the certificate is still checked against the IP. */
const IP_SNI = 'weft-controller';

export interface ControllerClientOptions {
  /** `HOST:PORT` of the controller (15012). */
  address: string;
  node: string;
  rootCertPem: string;
  /** The node credential (URI SAN spiffe://<td>/weft/node/<node>); with `tokenFile`, it may be left out. */
  certPem?: string;
  keyPem?: string;
  /** A projected service-account token (audience CaTokenAuth.audience), re-read when it changes. */
  tokenFile?: string;
  log: Logger;
  /** The name to check the controller's certificate against when it is not the address's host. */
  serverName?: string;
  /** Reconnect delays (default 1 s doubling to 30 s). */
  backoff?: { initialMs: number; maxMs: number };
  /** Deadline of CreateCertificate (default 15 s). */
  callTimeoutMs?: number;
}

export interface DiscoveryState {
  resources: Resource[];
  problems: ConfigProblem[];
  trustDomain: string;
  version: number;
}

/**
 * A token file the kubelet keeps fresh (projected tokens are replaced well before they expire, by an
 * atomic symlink swap): read again whenever what the path points at changed, else served from memory.
 */
export class TokenFile {
  private last: { key: string; token: string } | undefined;

  constructor(readonly path: string) {}

  /** The current token; throws a WeftError naming the file when it is missing, empty or not a token. */
  read(): string {
    let key: string;
    try {
      const st = statSync(this.path);
      key = `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
      if (this.last?.key === key) return this.last.token;
      if (st.size > CaTokenAuth.maxTokenBytes) throw new Error(`${st.size} bytes; a service-account token is far smaller`);
      const token = readFileSync(this.path, 'utf8').trim();
      if (token === '') throw new Error('the file is empty');
      if (/\s/.test(token)) throw new Error('the file holds more than one word');
      this.last = { key, token };
      return token;
    } catch (err) {
      throw new WeftError(ErrorCodes.CONTROLLER, `--ca-token ${this.path}: ${errorMessage(err)}`, { cause: err });
    }
  }
}

/** A controller call that ended with a gRPC status other than OK. */
export class ControllerCallError extends WeftError {
  readonly grpcCode: grpc.status;
  readonly details: string;
  constructor(method: string, err: grpc.ServiceError) {
    super(ErrorCodes.CONTROLLER, `${method}: ${grpc.status[err.code] ?? err.code}: ${err.details || err.message}`, { cause: err });
    this.name = 'ControllerCallError';
    this.grpcCode = err.code;
    this.details = err.details;
  }
}

export class ControllerClient {
  private readonly client: grpc.Client;
  private readonly options: ControllerClientOptions;
  private readonly objects = new Map<string, Resource>();
  private problems: ConfigProblem[] = [];
  private trustDomain = '';
  private version = 0;
  private synced = false;
  private call: grpc.ClientReadableStream<ResourceUpdate> | undefined;
  private onUpdate: ((u: DiscoveryState) => void) | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private delayMs: number;
  private closed = false;
  private readonly token: TokenFile | undefined;

  constructor(options: ControllerClientOptions) {
    this.options = options;
    this.delayMs = options.backoff?.initialMs ?? 1000;
    const hasCert = options.certPem !== undefined && options.keyPem !== undefined;
    if ((options.certPem === undefined) !== (options.keyPem === undefined)) {
      throw new WeftError(ErrorCodes.USAGE, 'a node credential needs both its certificate and its key');
    }
    if (!hasCert && !options.tokenFile) {
      throw new WeftError(ErrorCodes.USAGE, 'the controller client needs a node credential (certificate and key) or a service-account token file');
    }
    this.token = options.tokenFile ? new TokenFile(options.tokenFile) : undefined;
    // The controller's certificate must chain to the mesh root and name what we dial (or serverName),
    // whether or not we present a certificate of our own.
    const expected = options.serverName ?? parseHostPort(options.address, 'controller address').host;
    const credentials = grpc.credentials.createSsl(
      Buffer.from(options.rootCertPem),
      hasCert ? Buffer.from(options.keyPem!) : null,
      hasCert ? Buffer.from(options.certPem!) : null,
      { checkServerIdentity: (_servername, cert) => checkServerIdentity(expected, cert) },
    );
    const channelOptions: grpc.ChannelOptions = {
      'grpc.keepalive_time_ms': 30_000,
      'grpc.keepalive_timeout_ms': 10_000,
      'grpc.ssl_target_name_override': isIP(expected) ? IP_SNI : expected,
    };
    this.client = new grpc.Client(options.address, credentials, channelOptions);
  }

  /** Whether the first snapshot has arrived (then the callback has been called at least once). */
  get hasSynced(): boolean {
    return this.synced;
  }

  /** Opens the discovery stream; `onUpdate` gets the full current state after every update. */
  watch(onUpdate: (u: DiscoveryState) => void): void {
    if (this.onUpdate) throw new WeftError(ErrorCodes.CONTROLLER, 'ControllerClient.watch was already called');
    this.onUpdate = onUpdate;
    this.connect();
  }

  /** The metadata every call carries: the current service-account token, when the agent has one. */
  private callMetadata(): grpc.Metadata {
    const md = new grpc.Metadata();
    if (this.token) md.set('authorization', `Bearer ${this.token.read()}`);
    return md;
  }

  private retryLater(fields: Record<string, unknown>, message: string): void {
    const delay = this.delayMs;
    this.delayMs = Math.min(this.delayMs * 2, this.options.backoff?.maxMs ?? 30_000);
    this.options.log.warn({ controller: this.options.address, ...fields, retryInMs: delay, keptObjects: this.objects.size }, message);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  private connect(): void {
    if (this.closed) return;
    const { stream } = controllerProtos();
    const { log, node, address } = this.options;
    let metadata: grpc.Metadata;
    try {
      metadata = this.callMetadata();
    } catch (err) {
      this.retryLater({ err: errorMessage(err) }, 'cannot read the service-account token; keeping the last configuration and retrying');
      return;
    }
    const call = this.client.makeServerStreamRequest<StreamRequest, ResourceUpdate>(stream.path, stream.requestSerialize, stream.responseDeserialize, { node }, metadata);
    this.call = call;
    call.on('data', (u: ResourceUpdate) => {
      this.apply(u);
      if (u.snapshot) {
        this.delayMs = this.options.backoff?.initialMs ?? 1000;
        log.info({ controller: address, version: u.version, objects: this.objects.size }, 'discovery snapshot received');
      }
      this.onUpdate?.(this.current());
    });
    // 'status' comes last, whether the stream failed or ended; 'error' only needs a listener.
    call.on('error', () => undefined);
    call.on('status', (s: grpc.StatusObject) => {
      if (this.call !== call || this.closed) return;
      this.call = undefined;
      this.retryLater({ code: grpc.status[s.code] ?? s.code, details: s.details }, 'discovery stream ended; keeping the last configuration and reconnecting');
    });
  }

  private apply(u: ResourceUpdate): void {
    if (u.snapshot) this.objects.clear();
    for (const r of u.upserts) {
      try {
        this.objects.set(r.key, JSON.parse(r.json) as Resource);
      } catch (err) {
        this.options.log.error({ key: r.key, err: errorMessage(err) }, 'unreadable resource from the controller; ignored');
      }
    }
    for (const key of u.removals) this.objects.delete(key);
    this.problems = u.problems.map((p) => ({ file: p.file, line: p.line, field: p.field, reason: p.reason }));
    this.trustDomain = u.trust_domain;
    this.version = u.version;
    if (u.snapshot) this.synced = true;
  }

  private current(): DiscoveryState {
    return { resources: [...this.objects.values()], problems: [...this.problems], trustDomain: this.trustDomain, version: this.version };
  }

  /** Asks the controller to sign a workload CSR; resolves with the chain, leaf first, root last. */
  createCertificate(csrPem: string, ttlSeconds: number): Promise<string[]> {
    const { createCertificate } = controllerProtos();
    const request: IstioCertificateRequest = { csr: csrPem, validity_duration: Math.floor(ttlSeconds) };
    const deadline = new Date(Date.now() + (this.options.callTimeoutMs ?? 15_000));
    return new Promise((resolve, reject) => {
      let metadata: grpc.Metadata;
      try {
        metadata = this.callMetadata();
      } catch (err) {
        reject(err);
        return;
      }
      this.client.makeUnaryRequest<IstioCertificateRequest, IstioCertificateResponse>(
        createCertificate.path,
        createCertificate.requestSerialize,
        createCertificate.responseDeserialize,
        request,
        metadata,
        { deadline },
        (err, res) => {
          if (err) reject(new ControllerCallError('CreateCertificate', err));
          else if (!res || res.cert_chain.length === 0) reject(new WeftError(ErrorCodes.CONTROLLER, 'CreateCertificate: the controller returned an empty chain'));
          else resolve(res.cert_chain);
        },
      );
    });
  }

  /** Stops reconnecting, cancels the stream and closes the channel. */
  close(): void {
    this.closed = true;
    clearTimeout(this.retryTimer);
    this.call?.cancel();
    this.call = undefined;
    this.client.close();
  }
}
