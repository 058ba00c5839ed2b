// The node's Observer API (Hubble's observer.Observer, per-node server on 4244). Plaintext is served
// on loopback only (`weft observe` on the node); remote readers (the relay) come over mutual TLS on
// the node's address, with a client certificate from the mesh CA whose identity is on an allow-list
// (observer-tls.ts). GetFlows answers from the FlowStore — history chosen by selectHistory, then,
// with `follow`, every new flow that matches. A follower that cannot keep up has a bounded queue:
// what does not fit is dropped and reported in the stream as a LostEvent (OBSERVER_EVENTS_QUEUE)
// with the exact count, and the store's own losses reach followers the same way. Never silent.
// Streams served at once are capped (a reader cannot pin unbounded memory and timers).
import * as grpc from '@grpc/grpc-js';
import { Ports } from '../config.js';
import { ErrorCodes, WeftError } from '../errors.js';
import { setLongTimeout, type LongTimer } from '../system/long-timeout.js';
import { StreamSlots, shutdownGrpcServer } from '../system/grpc.js';
import { formatAuthority } from '../system/host-port.js';
import type { Logger } from '../log.js';
import { compileFilters } from './filter.js';
import type { ObserverCertRenewer } from './observer-cert.js';
import { ObserverServingCredentials, observerServerCredentials, refusePeer, type ObserverServerTls } from './observer-tls.js';
import { flowProtos } from './proto.js';
import { nsToTimestamp, selectHistory, timestampToNs, validateFlowsRequest } from './query.js';
import type { FlowStore } from './store.js';
import type {
  EmptyRequest,
  Flow,
  GetEventsRequest,
  GetFlowsRequest,
  GetFlowsResponse,
  GetNamespacesResponse,
  GetNodesResponse,
  LostEventSource,
  ServerStatusResponse,
  Timestamp,
} from './types.js';

/** Ports.observer, under the name the Observer's callers know. */
export const OBSERVER_PORT: number = Ports.observer;
/** Live responses a follower may have pending before new ones are dropped (and reported). */
export const DEFAULT_FOLLOW_QUEUE = 1024;
/** Streams (GetFlows, followed agent/debug events) served at once, over every listener. */
export const DEFAULT_MAX_STREAMS = 32;

export interface ObserverServerOptions {
  store: FlowStore;
  nodeName: string;
  version: string;
  log: Logger;
  /** Bound of each follower's queue of live responses (default DEFAULT_FOLLOW_QUEUE). */
  followQueue?: number;
  /**
   * Told of every flow a follower lost: dropped by its full queue (also reported in its stream), or
   * still queued when the server shut down (for hubble_lost_events_total).
   */
  onQueueLoss?: (n: number) => void;
  /** Concurrent streams before the next is RESOURCE_EXHAUSTED (default DEFAULT_MAX_STREAMS). */
  maxStreams?: number;
}

/** The mutual-TLS listener: the node's own address (never a wildcard: loopback serves plaintext on the same port). */
export interface ObserverTlsListen extends ObserverServerTls {
  host: string;
}

/** The mutual-TLS listener with its serving certificate from the controller, renewed while it runs. */
export interface ObserverTlsFromController {
  host: string;
  allowedIdentities: readonly string[];
  renewer: ObserverCertRenewer;
}

/** How the agent serves: plaintext on 127.0.0.1:port, plus mutual TLS on tls.host:port when given. */
export interface ObserverServeOptions {
  tls?: ObserverTlsListen | ObserverTlsFromController;
  maxStreams?: number;
}

const LOOPBACK = /^(127\.\d{1,3}\.\d{1,3}\.\d{1,3}|::1|localhost)$/;

export function isLoopbackHost(host: string): boolean {
  return LOOPBACK.test(host.replace(/^\[(.*)\]$/, '$1'));
}

export function nowTimestamp(): Timestamp {
  return nsToTimestamp(BigInt(Date.now()) * 1_000_000n);
}

export function flowResponse(flow: Flow, nodeName: string): GetFlowsResponse {
  return { flow, node_name: flow.node_name || nodeName, time: flow.time };
}

export function lostResponse(source: LostEventSource, count: number, nodeName: string): GetFlowsResponse {
  return { lost_events: { source, num_events_lost: String(count) }, node_name: nodeName, time: nowTimestamp() };
}

function grpcError(code: grpc.status, details: string): grpc.ServiceError {
  return Object.assign(new Error(details), { code, details, metadata: new grpc.Metadata() });
}

/**
 * Writes responses to one server stream in order, honouring the stream's backpressure. History is
 * queued without bound (it is a copy of at most the store's capacity); live responses are bounded:
 * once `capacity` of them wait, further ones are counted as lost and reported before the next one
 * that fits, so the client sees the gap exactly where it happened.
 */
export class StreamSender {
  private readonly queue: Array<{ resp: GetFlowsResponse; live: boolean }> = [];
  private head = 0;
  private pendingLive = 0;
  private readonly lost = new Map<LostEventSource, number>();
  private blocked = false;
  private ending = false;
  private closed = false;

  constructor(
    private readonly call: grpc.ServerWritableStream<unknown, GetFlowsResponse>,
    private readonly capacity: number,
    private readonly nodeName: string,
    private readonly onQueueLoss: (n: number) => void = () => undefined,
  ) {
    call.on('drain', () => {
      this.blocked = false;
      this.pump();
    });
  }

  /** History: always queued. */
  push(resp: GetFlowsResponse): void {
    this.enqueue(resp, false);
  }

  /** A live response: queued if it fits, else counted as lost (OBSERVER_EVENTS_QUEUE). */
  offer(resp: GetFlowsResponse): void {
    this.flushLost();
    if (this.lost.size > 0 || this.pendingLive >= this.capacity) {
      this.addLost('OBSERVER_EVENTS_QUEUE', 1);
      this.onQueueLoss(1);
      return;
    }
    this.enqueue(resp, true);
  }

  /** Events lost before they reached this stream (the store's losses, or our own drops). */
  addLost(source: LostEventSource, count: number): void {
    this.lost.set(source, (this.lost.get(source) ?? 0) + count);
    this.flushLost();
    this.pump();
  }

  /** Ends the stream once everything queued (and every pending loss report) is written. */
  finish(): void {
    this.ending = true;
    this.pump();
  }

  /** The client went away: nothing more is written. */
  cancel(): void {
    this.closed = true;
  }

  /** The server goes away before the client took everything: nothing more is written; returns the live flows still queued (now lost). */
  abandon(): number {
    let n = 0;
    for (let i = this.head; i < this.queue.length; i++) if (this.queue[i]!.live && this.queue[i]!.resp.flow) n++;
    this.closed = true;
    this.queue.length = 0;
    this.head = 0;
    return n;
  }

  private enqueue(resp: GetFlowsResponse, live: boolean): void {
    if (this.closed || this.ending) return;
    this.queue.push({ resp, live });
    if (live) this.pendingLive++;
    this.pump();
  }

  /** Loss reports go into the queue as soon as there is room for live responses again. */
  private flushLost(): void {
    for (const [source, count] of this.lost) {
      if (this.pendingLive >= this.capacity) return;
      this.lost.delete(source);
      this.queue.push({ resp: lostResponse(source, count, this.nodeName), live: true });
      this.pendingLive++;
    }
  }

  private pump(): void {
    while (!this.closed && !this.blocked) {
      if (this.head === this.queue.length) {
        this.flushLost();
        if (this.head === this.queue.length) break;
      }
      const item = this.queue[this.head++]!;
      if (item.live) this.pendingLive--;
      if (this.head > 1024 && this.head * 2 > this.queue.length) {
        this.queue.splice(0, this.head);
        this.head = 0;
      }
      if (!this.call.write(item.resp)) this.blocked = true;
    }
    if (this.ending && !this.closed && this.head === this.queue.length && this.lost.size === 0) {
      this.closed = true;
      this.call.end();
    }
  }
}

type StreamCall = grpc.ServerWritableStream<unknown, unknown>;
type Refusal = { code: grpc.status; details: string };

export class ObserverServer {
  private readonly servers: grpc.Server[] = [];
  private readonly followQueue: number;
  private readonly slots: StreamSlots;
  private readonly cleanups = new Set<() => void>();
  private closing = false;
  private address = '';
  private tlsAddress = '';
  private renewer: ObserverCertRenewer | undefined;

  constructor(private readonly o: ObserverServerOptions) {
    this.followQueue = o.followQueue ?? DEFAULT_FOLLOW_QUEUE;
    this.slots = new StreamSlots(o.maxStreams ?? DEFAULT_MAX_STREAMS);
  }

  /** The service, with every call first checked by `refuse` (undefined: served). */
  private service(refuse: (call: { getAuthContext(): { sslPeerCertificate?: { raw?: Buffer } } }) => Refusal | undefined): grpc.UntypedServiceImplementation {
    const unary =
      <T>(answer: () => T) =>
      (call: grpc.ServerUnaryCall<EmptyRequest, T>, cb: grpc.sendUnaryData<T>): void => {
        const no = refuse(call);
        if (no) return cb({ ...no, metadata: new grpc.Metadata() });
        cb(null, answer());
      };
    const stream =
      <Req>(serve: (call: grpc.ServerWritableStream<Req, never>) => void) =>
      (call: grpc.ServerWritableStream<Req, never>): void => {
        const no = refuse(call);
        if (no) return void call.emit('error', grpcError(no.code, no.details));
        if (!this.admit(call as unknown as StreamCall)) return;
        serve(call);
      };
    return {
      GetFlows: stream<GetFlowsRequest>((call) => this.getFlows(call as grpc.ServerWritableStream<GetFlowsRequest, GetFlowsResponse>)),
      GetAgentEvents: stream<GetEventsRequest>((call) => this.noEvents(call)),
      GetDebugEvents: stream<GetEventsRequest>((call) => this.noEvents(call)),
      GetNodes: unary(() => this.nodes()),
      GetNamespaces: unary(() => this.namespaces()),
      ServerStatus: unary(() => this.status()),
    };
  }

  /** Takes a stream slot, given back when the call is over (however it ends); false: refused, none left. */
  private admit(call: StreamCall): boolean {
    if (this.slots.take(call)) return true;
    this.o.log.warn({ peer: call.getPeer(), limit: this.slots.max }, 'observer stream refused: too many concurrent streams');
    call.emit('error', grpcError(grpc.status.RESOURCE_EXHAUSTED, `too many concurrent streams on this Observer API (limit ${this.slots.max})`));
    return false;
  }

  /** Streams being served now. */
  get activeStreams(): number {
    return this.slots.inUse;
  }

  private bind(server: grpc.Server, host: string, port: number, credentials: grpc.ServerCredentials): Promise<number> {
    const target = formatAuthority(host, port);
    return new Promise((resolve, reject) => {
      server.bindAsync(target, credentials, (err, bound) => (err ? reject(err) : resolve(bound)));
    });
  }

  /**
   * Plaintext on a loopback address only (port 0: any free port); resolves with the port. Anything
   * else would hand every flow of the node to whoever can reach it: remote readers use listenTls.
   */
  async listen(host: string, port: number): Promise<number> {
    if (!isLoopbackHost(host)) {
      throw new WeftError(ErrorCodes.USAGE, `the Observer API serves plaintext on loopback only, not on ${host}; remote readers need mutual TLS (--observer-tls)`);
    }
    const server = new grpc.Server();
    server.addService(flowProtos().observer, this.service(() => undefined));
    this.servers.push(server);
    const bound = await this.bind(server, host, port, grpc.ServerCredentials.createInsecure());
    this.address = formatAuthority(host, bound);
    this.o.log.info({ listen: this.address, node: this.o.nodeName }, 'observer listening (plaintext, loopback)');
    return bound;
  }

  /**
   * Mutual TLS on `host` (the node's address): the client must present a certificate from the mesh
   * root carrying one of `tls.allowedIdentities`, else the handshake (no or foreign certificate) or
   * the call (identity not allowed: PERMISSION_DENIED) fails.
   */
  async listenTls(host: string, port: number, tls: ObserverServerTls): Promise<number> {
    return this.listenTlsWith(host, port, observerServerCredentials(tls), tls.allowedIdentities);
  }

  /**
   * listenTls with credentials the caller may swap while serving (ObserverServingCredentials.update):
   * new connections get the new certificate, open ones keep theirs. Credentials without a certificate
   * yet make the listener drop every connection until one is set.
   */
  async listenTlsWith(host: string, port: number, credentials: ObserverServingCredentials, allowedIdentities: readonly string[]): Promise<number> {
    if (host === '' || host === '0.0.0.0' || host === '::' || host === '[::]') {
      throw new WeftError(ErrorCodes.USAGE, `the Observer API's TLS listener needs the node's own address, not ${host || 'an empty one'}`);
    }
    if (allowedIdentities.length === 0) throw new WeftError(ErrorCodes.TLS, 'the Observer TLS allow-list is empty: no client could read');
    const allowed = [...allowedIdentities];
    const server = new grpc.Server();
    server.addService(
      flowProtos().observer,
      this.service((call) => {
        const no = refusePeer(call.getAuthContext(), allowed);
        if (no) this.o.log.warn({ reason: no.details }, 'observer call refused');
        return no;
      }),
    );
    this.servers.push(server);
    const bound = await this.bind(server, host, port, credentials);
    this.tlsAddress = formatAuthority(host, bound);
    this.o.log.info({ listen: this.tlsAddress, node: this.o.nodeName, allowed }, 'observer listening (mutual TLS)');
    return bound;
  }

  /** The loopback listener's port once bound (serve() is retried while a handing-over agent holds the port). */
  private loopbackPort: number | undefined;

  /** The agent's listeners: plaintext on 127.0.0.1:port, and mutual TLS on the node address when configured. */
  async serve(port: number, o: ObserverServeOptions = {}): Promise<void> {
    if (o.maxStreams !== undefined) {
      StreamSlots.check(o.maxStreams);
      this.slots.max = o.maxStreams;
    }
    // Resumable: a caller retrying after the TLS bind failed (its port still held by an agent handing
    // over) must not bind the loopback listener a second time.
    this.loopbackPort ??= await this.listen('127.0.0.1', port);
    const tls = o.tls;
    if (!tls) return;
    if ('renewer' in tls) {
      // Bound now, served once the controller signed: the port is ours from the start either way.
      const credentials = new ObserverServingCredentials();
      await this.listenTlsWith(tls.host, port, credentials, tls.allowedIdentities);
      this.renewer = tls.renewer;
      tls.renewer.start((cred) => {
        try {
          credentials.update(cred);
          this.o.log.info({ listen: this.tlsAddress, node: this.o.nodeName }, 'observer serving certificate swapped in');
        } catch (err) {
          this.o.log.error({ err: err instanceof Error ? err.message : String(err) }, 'observer serving certificate refused by TLS; the previous one stays served');
        }
      });
    } else {
      await this.listenTls(tls.host, port, tls);
    }
  }

  /** Stops serving: followers are ended (what they still had queued is counted as lost), then the servers are shut down. */
  async close(): Promise<void> {
    this.closing = true;
    this.renewer?.stop();
    for (const c of [...this.cleanups]) c();
    await Promise.all(this.servers.map((s) => shutdownGrpcServer(s)));
  }

  status(): ServerStatusResponse {
    const s = this.o.store.status();
    return {
      num_flows: String(s.numFlows),
      max_flows: String(s.maxFlows),
      seen_flows: String(s.seenFlows),
      uptime_ns: String(s.uptimeNs),
      version: this.o.version,
      flows_rate: this.flowsRate(),
    };
  }

  /** Flows per second over the last minute of stored flows (or the shorter span the ring holds). */
  private flowsRate(): number {
    const flows = this.o.store.flows();
    const now = BigInt(Date.now()) * 1_000_000n;
    const windowStart = now - 60_000_000_000n;
    let count = 0;
    let oldest = now;
    for (let i = flows.length - 1; i >= 0; i--) {
      const t = timestampToNs(flows[i]!.time);
      if (t < windowStart) break;
      count++;
      oldest = t;
    }
    if (count === 0) return 0;
    const full = count === flows.length && flows.length === this.o.store.capacity;
    const spanNs = full ? now - oldest : 60_000_000_000n;
    return spanNs > 0n ? count / (Number(spanNs) / 1e9) : 0;
  }

  private nodes(): GetNodesResponse {
    const s = this.status();
    return {
      nodes: [
        {
          name: this.o.nodeName,
          version: this.o.version,
          address: this.tlsAddress || this.address,
          state: 'NODE_CONNECTED',
          tls: { enabled: this.tlsAddress !== '', server_name: '' },
          uptime_ns: s.uptime_ns,
          num_flows: s.num_flows,
          max_flows: s.max_flows,
          seen_flows: s.seen_flows,
        },
      ],
    };
  }

  /** The namespaces of the endpoints in stored flows, as Hubble's namespace manager reports them. */
  private namespaces(): GetNamespacesResponse {
    const seen = new Map<string, { cluster: string; namespace: string }>();
    for (const f of this.o.store.flows()) {
      for (const ep of [f.source, f.destination]) {
        if (!ep?.namespace) continue;
        const cluster = ep.cluster_name ?? '';
        seen.set(`${cluster}/${ep.namespace}`, { cluster, namespace: ep.namespace });
      }
    }
    return { namespaces: [...seen.values()].sort((a, b) => a.cluster.localeCompare(b.cluster) || a.namespace.localeCompare(b.namespace)) };
  }

  /** ms from now until `until` (a Timestamp), for a timer. */
  private static msUntil(until: Timestamp): number {
    return Number(timestampToNs(until) / 1_000_000n) - Date.now();
  }

  /** weft's agent has no agent or debug events: the stream is empty (and stays open with follow). */
  private noEvents(call: grpc.ServerWritableStream<GetEventsRequest, unknown>): void {
    if (!call.request.follow) {
      call.end();
      return;
    }
    let timer: LongTimer | undefined;
    const stop = (): void => {
      this.cleanups.delete(stop);
      timer?.clear();
      call.end();
    };
    if (call.request.until) timer = setLongTimeout(stop, ObserverServer.msUntil(call.request.until));
    this.cleanups.add(stop);
    call.on('cancelled', () => {
      this.cleanups.delete(stop);
      timer?.clear();
    });
  }

  private getFlows(call: grpc.ServerWritableStream<GetFlowsRequest, GetFlowsResponse>): void {
    const req = call.request;
    let matches: (flow: Flow) => boolean;
    try {
      const invalid = validateFlowsRequest(req);
      if (invalid) throw new Error(invalid);
      matches = compileFilters(req.whitelist, req.blacklist);
    } catch (err) {
      call.emit('error', grpcError(grpc.status.INVALID_ARGUMENT, err instanceof Error ? err.message : String(err)));
      return;
    }
    const store = this.o.store;
    const sender = new StreamSender(call, this.followQueue, this.o.nodeName, this.o.onQueueLoss);

    // Subscribing and taking the history happen in the same tick: no flow is missed or repeated.
    let unsubscribe: (() => void) | undefined;
    let timer: LongTimer | undefined;
    const since = req.since ? timestampToNs(req.since) : undefined;
    const until = req.until ? timestampToNs(req.until) : undefined;
    const stop = (): void => {
      unsubscribe?.();
      unsubscribe = undefined;
      timer?.clear();
      this.cleanups.delete(end);
    };
    const end = (): void => {
      stop();
      sender.finish();
    };
    if (req.follow) {
      unsubscribe = store.subscribe((e) => {
        if ('lost' in e) {
          sender.addLost(e.lost.source, e.lost.count);
          return;
        }
        const t = timestampToNs(e.flow.time);
        if (since !== undefined && t < since) return;
        if (until !== undefined && t > until) return end();
        if (matches(e.flow)) sender.offer(flowResponse(e.flow, this.o.nodeName));
      });
      this.cleanups.add(end);
      call.on('cancelled', () => {
        stop();
        if (!this.closing) return sender.cancel();
        // Shut down before this follower took what it was owed: those flows are lost, and counted.
        const lost = sender.abandon();
        if (lost > 0) {
          this.o.onQueueLoss?.(lost);
          this.o.log.warn({ lost }, 'observer shut down with flows still queued for a follower');
        }
      });
    }
    let history: Flow[];
    try {
      history = selectHistory(store.flows(), req, matches);
    } catch (err) {
      stop();
      call.emit('error', grpcError(grpc.status.INVALID_ARGUMENT, err instanceof Error ? err.message : String(err)));
      return;
    }
    for (const f of history) sender.push(flowResponse(f, this.o.nodeName));
    if (!req.follow) {
      sender.finish();
      return;
    }
    if (req.until) {
      const ms = ObserverServer.msUntil(req.until);
      if (ms <= 0) end();
      else timer = setLongTimeout(end, ms);
    }
  }
}
