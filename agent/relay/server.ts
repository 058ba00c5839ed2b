// The relay's Observer API (Hubble Relay, port 4245): one cluster-wide view over every node's
// Observer. GetFlows sends the client's request to every node; history is merged in time order and
// number/first apply to the merged stream; with follow, responses are forwarded as they arrive and
// nodes that appear (or come back) are picked up at each re-check. Nodes that cannot be reached are
// reported in the stream (node_status) and in ServerStatus; a node lost mid-stream is reported and
// the stream goes on with the others.
import { hostname } from 'node:os';
import * as grpc from '@grpc/grpc-js';
import { StreamSlots, shutdownGrpcServer } from '../system/grpc.js';
import { formatAuthority } from '../system/host-port.js';
import { setLongTimeout } from '../system/long-timeout.js';
import { Ports } from '../config.js';
import { errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import { DEFAULT_MAX_STREAMS, nowTimestamp } from '../flows/observer-server.js';
import { nsToTimestamp, timestampToNs } from '../flows/query.js';
import { flowProtos } from '../flows/proto.js';
import type {
  EmptyRequest,
  GetFlowsRequest,
  GetFlowsResponse,
  GetNamespacesResponse,
  GetNodesResponse,
  Node,
  NodeState,
  ServerStatusResponse,
} from '../flows/types.js';
import { HistoryWindow, KWayMerge } from './merge.js';
import type { Peer, PeerPool } from './peers.js';

/** Ports.relay, under the name the relay's callers know. */
export const RELAY_PORT: number = Ports.relay;
/** Hubble reports at most this many unavailable nodes by name in ServerStatus. */
const UNAVAILABLE_NODES_REPORTED = 10;

export interface RelayServerOptions {
  pool: PeerPool;
  version: string;
  log: Logger;
  /** The relay's own name in the node_status responses it writes (default: the host name). */
  name?: string;
  /** How long a node gets to accept a connection before it counts as unavailable (default 2 s). */
  connectTimeoutMs?: number;
  /** Timeout of a node's ServerStatus/GetNodes/GetNamespaces answer (default 3 s). */
  callTimeoutMs?: number;
  /** How often a follow stream looks for nodes it does not stream from yet (default 5 s). */
  recheckMs?: number;
  /** Concurrent GetFlows streams before the next is RESOURCE_EXHAUSTED (default DEFAULT_MAX_STREAMS). */
  maxStreams?: number;
}

function unimplemented(what: string): grpc.ServiceError {
  const details = `${what} not yet implemented`;
  return Object.assign(new Error(details), { code: grpc.status.UNIMPLEMENTED, details, metadata: new grpc.Metadata() });
}

const sum = (values: Array<string | number | undefined>): string => values.reduce<bigint>((n, v) => n + BigInt(v ?? 0), 0n).toString();

/** The client side of one GetFlows call: writes in order, pausing the nodes' streams while the client is slow. */
class Downstream {
  private blocked = false;
  private ended = false;
  readonly upstreams = new Set<grpc.ClientReadableStream<GetFlowsResponse>>();

  constructor(private readonly call: grpc.ServerWritableStream<GetFlowsRequest, GetFlowsResponse>) {
    call.on('drain', () => {
      this.blocked = false;
      for (const u of this.upstreams) u.resume();
    });
  }

  send(resp: GetFlowsResponse): void {
    if (this.ended || this.call.cancelled) return;
    if (!this.call.write(resp) && !this.blocked) {
      this.blocked = true;
      for (const u of this.upstreams) u.pause();
    }
  }

  end(): void {
    if (this.ended) return;
    this.ended = true;
    if (!this.call.cancelled) this.call.end();
  }
}

export class RelayServer {
  private readonly server = new grpc.Server();
  private readonly name: string;
  private readonly connectTimeoutMs: number;
  private readonly callTimeoutMs: number;
  private readonly recheckMs: number;
  private readonly active = new Set<() => void>();
  private readonly slots: StreamSlots;

  constructor(private readonly o: RelayServerOptions) {
    this.name = o.name ?? hostname();
    this.slots = new StreamSlots(o.maxStreams ?? DEFAULT_MAX_STREAMS);
    this.connectTimeoutMs = o.connectTimeoutMs ?? 2000;
    this.callTimeoutMs = o.callTimeoutMs ?? 3000;
    this.recheckMs = o.recheckMs ?? 5000;
    const unary =
      <T>(f: () => Promise<T>) =>
      (_call: grpc.ServerUnaryCall<EmptyRequest, T>, cb: grpc.sendUnaryData<T>): void => {
        f().then(
          (r) => cb(null, r),
          (err: unknown) => cb({ code: grpc.status.INTERNAL, details: errorMessage(err) }),
        );
      };
    this.server.addService(flowProtos().observer, {
      GetFlows: (call: grpc.ServerWritableStream<GetFlowsRequest, GetFlowsResponse>) => {
        if (!this.admit(call)) return;
        this.getFlows(call).catch((err: unknown) => {
          this.o.log.error({ err: errorMessage(err) }, 'GetFlows failed');
          call.emit('error', { code: grpc.status.INTERNAL, details: errorMessage(err) });
        });
      },
      // As Hubble Relay: agent and debug events are per-node only.
      GetAgentEvents: (call: grpc.ServerWritableStream<unknown, unknown>) => call.emit('error', unimplemented('GetAgentEvents')),
      GetDebugEvents: (call: grpc.ServerWritableStream<unknown, unknown>) => call.emit('error', unimplemented('GetDebugEvents')),
      GetNodes: unary(() => this.nodes()),
      GetNamespaces: unary(() => this.namespaces()),
      ServerStatus: unary(() => this.status()),
    });
  }

  /** Takes a stream slot, given back when the call is over (however it ends); false: refused, none left. */
  private admit(call: grpc.ServerWritableStream<GetFlowsRequest, GetFlowsResponse>): boolean {
    if (this.slots.take(call)) return true;
    this.o.log.warn({ peer: call.getPeer(), limit: this.slots.max }, 'relay stream refused: too many concurrent streams');
    const details = `too many concurrent streams on the relay (limit ${this.slots.max})`;
    call.emit('error', Object.assign(new Error(details), { code: grpc.status.RESOURCE_EXHAUSTED, details, metadata: new grpc.Metadata() }));
    return false;
  }

  listen(host: string, port: number): Promise<number> {
    const target = formatAuthority(host, port);
    return new Promise((resolve, reject) => {
      this.server.bindAsync(target, grpc.ServerCredentials.createInsecure(), (err, bound) => {
        if (err) return reject(err);
        this.o.log.info({ listen: target.replace(/:\d+$/, `:${bound}`) }, 'relay listening');
        resolve(bound);
      });
    });
  }

  close(): Promise<void> {
    for (const stop of [...this.active]) stop();
    return shutdownGrpcServer(this.server);
  }

  private statusEvent(state: NodeState, names: string[], message?: string): GetFlowsResponse {
    return { node_status: { state_change: state, node_names: names, ...(message ? { message } : {}) }, node_name: this.name, time: nowTimestamp() };
  }

  /** Which peers answer a connection now. */
  private async reachable(peers: Peer[]): Promise<{ up: Peer[]; down: Peer[] }> {
    const ok = await Promise.all(peers.map((p) => p.client.ready(this.connectTimeoutMs)));
    return { up: peers.filter((_, i) => ok[i]), down: peers.filter((_, i) => !ok[i]) };
  }

  /** How a node's stream ending early is reported: unreachable → NODE_UNAVAILABLE, anything else → NODE_ERROR. */
  private lossEvent(peer: Peer, err: grpc.ServiceError | undefined): GetFlowsResponse {
    if (!err) return this.statusEvent('NODE_UNAVAILABLE', [peer.name], 'the node ended its stream');
    const gone = err.code === grpc.status.UNAVAILABLE || err.code === grpc.status.CANCELLED;
    return this.statusEvent(gone ? 'NODE_UNAVAILABLE' : 'NODE_ERROR', [peer.name], err.details || err.message);
  }

  private async getFlows(call: grpc.ServerWritableStream<GetFlowsRequest, GetFlowsResponse>): Promise<void> {
    const req = call.request;
    const down = new Downstream(call);
    const { up, down: unavailable } = await this.reachable(this.o.pool.list());
    if (call.cancelled) return;
    if (up.length) down.send(this.statusEvent('NODE_CONNECTED', up.map((p) => p.name)));
    if (unavailable.length) down.send(this.statusEvent('NODE_UNAVAILABLE', unavailable.map((p) => p.name)));
    if (req.follow) this.follow(call, down, up);
    else this.history(call, down, up);
  }

  private open(peer: Peer, req: GetFlowsRequest, down: Downstream): grpc.ClientReadableStream<GetFlowsResponse> {
    const stream = peer.client.getFlows(req);
    down.upstreams.add(stream);
    return stream;
  }

  private history(call: grpc.ServerWritableStream<GetFlowsRequest, GetFlowsResponse>, down: Downstream, peers: Peer[]): void {
    const req = call.request;
    let stopping = false;
    const streams: Array<grpc.ClientReadableStream<GetFlowsResponse>> = [];
    const stopAll = (): void => {
      stopping = true;
      for (const s of streams) s.cancel();
    };
    const window = new HistoryWindow(Number(req.number ?? 0), req.first === true, (r) => down.send(r), stopAll);
    const merge = new KWayMerge(
      peers.map((p) => p.name),
      (r) => window.add(r),
    );
    const finishIfDone = (): void => {
      if (!merge.done) return;
      this.active.delete(stopAll);
      window.finish();
      down.end();
    };
    this.active.add(stopAll);
    call.on('cancelled', stopAll);
    for (const peer of peers) {
      const stream = this.open(peer, req, down);
      streams.push(stream);
      let ended = false;
      const end = (err?: grpc.ServiceError): void => {
        if (ended) return;
        ended = true;
        down.upstreams.delete(stream);
        if (err && !stopping) {
          this.o.log.warn({ node: peer.name, err: err.details || err.message }, 'flows from a node failed');
          down.send(this.lossEvent(peer, err));
        }
        merge.end(peer.name);
        finishIfDone();
      };
      stream.on('data', (r: GetFlowsResponse) => merge.push(peer.name, { ...r, node_name: r.node_name || peer.name }));
      stream.on('error', (err: grpc.ServiceError) => end(err));
      stream.on('end', () => end());
    }
    finishIfDone();
  }

  private follow(call: grpc.ServerWritableStream<GetFlowsRequest, GetFlowsResponse>, down: Downstream, initial: Peer[]): void {
    const req = call.request;
    const until = req.until ? timestampToNs(req.until) : undefined;
    const streams = new Map<string, { peer: Peer; stream: grpc.ClientReadableStream<GetFlowsResponse> }>();
    /** Time of the last flow each node sent: a node that comes back resumes just after it. */
    const lastSeen = new Map<string, bigint>();
    let stopping = false;
    let checking = false;

    const untilPassed = (): boolean => until !== undefined && BigInt(Date.now()) * 1_000_000n >= until;
    const stop = (): void => {
      if (stopping) return;
      stopping = true;
      clearInterval(recheck);
      untilTimer?.clear();
      unwatch();
      this.active.delete(stop);
      for (const { stream } of streams.values()) stream.cancel();
      streams.clear();
      down.end();
    };
    const endIfOver = (): void => {
      if (untilPassed() && streams.size === 0) stop();
    };

    const start = (peer: Peer): void => {
      const last = lastSeen.get(peer.name);
      const request: GetFlowsRequest = last === undefined ? req : { ...req, number: 0, first: false, since: nsToTimestamp(last + 1n) };
      const stream = this.open(peer, request, down);
      streams.set(peer.name, { peer, stream });
      let ended = false;
      const end = (err?: grpc.ServiceError): void => {
        if (ended) return;
        ended = true;
        down.upstreams.delete(stream);
        if (streams.get(peer.name)?.stream === stream) streams.delete(peer.name);
        if (stopping) return;
        if (!untilPassed()) {
          this.o.log.warn({ node: peer.name, err: err ? err.details || err.message : 'stream ended' }, 'lost the flows of a node');
          down.send(this.lossEvent(peer, err));
          if (!lastSeen.has(peer.name)) lastSeen.set(peer.name, BigInt(Date.now()) * 1_000_000n);
        }
        endIfOver();
      };
      stream.on('data', (r: GetFlowsResponse) => {
        if (r.flow?.time) lastSeen.set(peer.name, timestampToNs(r.flow.time));
        down.send({ ...r, node_name: r.node_name || peer.name });
      });
      stream.on('error', (err: grpc.ServiceError) => end(err));
      stream.on('end', () => end());
    };

    /** Nodes not streamed from yet (new, or back after a failure), and nodes no longer in the cluster. */
    const collect = async (): Promise<void> => {
      if (checking || stopping || untilPassed()) return;
      checking = true;
      try {
        const peers = this.o.pool.list();
        const names = new Set(peers.map((p) => p.name));
        for (const [name, { stream }] of [...streams]) {
          if (names.has(name)) continue;
          streams.delete(name);
          stream.cancel();
          down.send(this.statusEvent('NODE_GONE', [name]));
        }
        const { up } = await this.reachable(peers.filter((p) => !streams.has(p.name)));
        if (stopping) return;
        const fresh = up.filter((p) => !streams.has(p.name));
        for (const p of fresh) start(p);
        if (fresh.length) down.send(this.statusEvent('NODE_CONNECTED', fresh.map((p) => p.name)));
      } finally {
        checking = false;
      }
    };

    this.active.add(stop);
    call.on('cancelled', stop);
    const recheck = setInterval(() => void collect(), this.recheckMs);
    const unwatch = this.o.pool.onRefresh(() => void collect());
    const untilMs = until !== undefined ? Number(until / 1_000_000n) - Date.now() : undefined;
    const untilTimer = untilMs !== undefined ? setLongTimeout(endIfOver, Math.max(0, untilMs) + 50) : undefined;
    for (const p of initial) start(p);
    endIfOver();
  }

  async status(): Promise<ServerStatusResponse> {
    const peers = this.o.pool.list();
    const answers = await Promise.all(
      peers.map(async (p) => ((await p.client.ready(this.connectTimeoutMs)) ? p.client.serverStatus(this.callTimeoutMs).catch(() => undefined) : undefined)),
    );
    const ok = answers.filter((a): a is ServerStatusResponse => a !== undefined);
    const unavailable = peers.filter((_, i) => answers[i] === undefined).map((p) => p.name);
    return {
      num_flows: sum(ok.map((s) => s.num_flows)),
      max_flows: sum(ok.map((s) => s.max_flows)),
      seen_flows: sum(ok.map((s) => s.seen_flows)),
      // The oldest node's uptime, as Hubble Relay reports it.
      uptime_ns: ok.reduce((m, s) => (BigInt(s.uptime_ns) > m ? BigInt(s.uptime_ns) : m), 0n).toString(),
      num_connected_nodes: { value: ok.length },
      num_unavailable_nodes: { value: unavailable.length },
      unavailable_nodes: unavailable.slice(0, UNAVAILABLE_NODES_REPORTED),
      version: this.o.version,
      flows_rate: ok.reduce((n, s) => n + (s.flows_rate ?? 0), 0),
    };
  }

  async nodes(): Promise<GetNodesResponse> {
    const nodes = await Promise.all(
      this.o.pool.list().map(async (p): Promise<Node> => {
        const base: Node = { name: p.name, address: p.address, tls: { enabled: this.o.pool.tlsEnabled, server_name: '' } };
        if (!(await p.client.ready(this.connectTimeoutMs))) return { ...base, state: 'NODE_UNAVAILABLE' };
        try {
          const s = await p.client.serverStatus(this.callTimeoutMs);
          return { ...base, state: 'NODE_CONNECTED', version: s.version, uptime_ns: s.uptime_ns, num_flows: s.num_flows, max_flows: s.max_flows, seen_flows: s.seen_flows };
        } catch {
          return { ...base, state: 'NODE_ERROR' };
        }
      }),
    );
    return { nodes };
  }

  async namespaces(): Promise<GetNamespacesResponse> {
    const seen = new Map<string, { cluster: string; namespace: string }>();
    await Promise.all(
      this.o.pool.list().map(async (p) => {
        if (!(await p.client.ready(this.connectTimeoutMs))) return;
        const r = await p.client.getNamespaces(this.callTimeoutMs).catch(() => undefined);
        for (const ns of r?.namespaces ?? []) seen.set(`${ns.cluster ?? ''}/${ns.namespace}`, { cluster: ns.cluster ?? '', namespace: ns.namespace });
      }),
    );
    return { namespaces: [...seen.values()].sort((a, b) => a.cluster.localeCompare(b.cluster) || a.namespace.localeCompare(b.namespace)) };
  }
}
