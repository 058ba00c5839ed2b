// The node's Observer API (Hubble's observer.Observer, per-node server on 4244, no TLS): GetFlows
// answers from the FlowStore — history chosen by selectHistory, then, with `follow`, every new
// flow that matches. A follower that cannot keep up has a bounded queue: what does not fit is
// dropped and reported in the stream as a LostEvent (OBSERVER_EVENTS_QUEUE) with the exact count,
// and the store's own losses reach followers the same way. Never silent.
import * as grpc from '@grpc/grpc-js';
import { shutdownGrpcServer } from '../system/grpc.js';
import type { Logger } from '../log.js';
import { compileFilters } from './filter.js';
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

export const OBSERVER_PORT = 4244;
/** Live responses a follower may have pending before new ones are dropped (and reported). */
export const DEFAULT_FOLLOW_QUEUE = 1024;

export interface ObserverServerOptions {
  store: FlowStore;
  nodeName: string;
  version: string;
  log: Logger;
  /** Bound of each follower's queue of live responses (default DEFAULT_FOLLOW_QUEUE). */
  followQueue?: number;
  /** Told of every flow a follower's full queue dropped (for hubble_lost_events_total). */
  onQueueLoss?: (n: number) => void;
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

export class ObserverServer {
  private readonly server = new grpc.Server();
  private readonly followQueue: number;
  private readonly cleanups = new Set<() => void>();
  private address = '';

  constructor(private readonly o: ObserverServerOptions) {
    this.followQueue = o.followQueue ?? DEFAULT_FOLLOW_QUEUE;
    const impl: grpc.UntypedServiceImplementation = {
      GetFlows: (call: grpc.ServerWritableStream<GetFlowsRequest, GetFlowsResponse>) => this.getFlows(call),
      GetAgentEvents: (call: grpc.ServerWritableStream<GetEventsRequest, unknown>) => this.noEvents(call),
      GetDebugEvents: (call: grpc.ServerWritableStream<GetEventsRequest, unknown>) => this.noEvents(call),
      GetNodes: (_call: grpc.ServerUnaryCall<EmptyRequest, GetNodesResponse>, cb: grpc.sendUnaryData<GetNodesResponse>) => cb(null, this.nodes()),
      GetNamespaces: (_call: grpc.ServerUnaryCall<EmptyRequest, GetNamespacesResponse>, cb: grpc.sendUnaryData<GetNamespacesResponse>) => cb(null, this.namespaces()),
      ServerStatus: (_call: grpc.ServerUnaryCall<EmptyRequest, ServerStatusResponse>, cb: grpc.sendUnaryData<ServerStatusResponse>) => cb(null, this.status()),
    };
    this.server.addService(flowProtos().observer, impl);
  }

  /** Binds host:port (port 0: any free port); resolves with the port. */
  listen(host: string, port: number): Promise<number> {
    const target = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
    return new Promise((resolve, reject) => {
      this.server.bindAsync(target, grpc.ServerCredentials.createInsecure(), (err, bound) => {
        if (err) return reject(err);
        this.address = host.includes(':') ? `[${host}]:${bound}` : `${host}:${bound}`;
        this.o.log.info({ listen: this.address, node: this.o.nodeName }, 'observer listening');
        resolve(bound);
      });
    });
  }

  /** Stops serving: followers are ended, then the server is shut down. */
  close(): Promise<void> {
    for (const c of [...this.cleanups]) c();
    return shutdownGrpcServer(this.server);
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
          address: this.address,
          state: 'NODE_CONNECTED',
          tls: { enabled: false, server_name: '' },
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

  /** weft's agent has no agent or debug events: the stream is empty (and stays open with follow). */
  private noEvents(call: grpc.ServerWritableStream<GetEventsRequest, unknown>): void {
    if (!call.request.follow) {
      call.end();
      return;
    }
    const stop = (): void => {
      this.cleanups.delete(stop);
      clearTimeout(timer);
      call.end();
    };
    const until = call.request.until ? Number(timestampToNs(call.request.until) / 1_000_000n) - Date.now() : undefined;
    const timer = until !== undefined ? setTimeout(stop, Math.max(0, until)) : undefined;
    this.cleanups.add(stop);
    call.on('cancelled', () => {
      this.cleanups.delete(stop);
      clearTimeout(timer);
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
    let timer: NodeJS.Timeout | undefined;
    const since = req.since ? timestampToNs(req.since) : undefined;
    const until = req.until ? timestampToNs(req.until) : undefined;
    const stop = (): void => {
      unsubscribe?.();
      unsubscribe = undefined;
      clearTimeout(timer);
      this.cleanups.delete(stop);
    };
    if (req.follow) {
      unsubscribe = store.subscribe((e) => {
        if ('lost' in e) {
          sender.addLost(e.lost.source, e.lost.count);
          return;
        }
        const t = timestampToNs(e.flow.time);
        if (since !== undefined && t < since) return;
        if (until !== undefined && t > until) {
          stop();
          sender.finish();
          return;
        }
        if (matches(e.flow)) sender.offer(flowResponse(e.flow, this.o.nodeName));
      });
      this.cleanups.add(() => {
        stop();
        sender.finish();
      });
      call.on('cancelled', () => {
        stop();
        sender.cancel();
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
    if (until !== undefined) {
      const ms = Number(until / 1_000_000n) - Date.now();
      const end = (): void => {
        stop();
        sender.finish();
      };
      if (ms <= 0) end();
      else timer = setTimeout(end, ms);
    }
  }
}
