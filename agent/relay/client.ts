// A client of an Observer API (a node's on 4244, or the relay's on 4245): typed calls over the
// service definition from agent/flows/proto.ts. Plaintext (loopback servers), or mutual TLS to a
// node's Observer with a client credential from the mesh CA and the node's identity checked.
import * as grpc from '@grpc/grpc-js';
import { observerChannelCredentials, type ObserverClientTls } from '../flows/observer-tls.js';
import { flowProtos } from '../flows/proto.js';
import type { GetFlowsRequest, GetFlowsResponse, GetNamespacesResponse, GetNodesResponse, ServerStatusResponse } from '../flows/types.js';

/** Reconnect quickly after a node comes back (grpc-js backs off up to 2 minutes by default). */
const CHANNEL_OPTIONS: grpc.ChannelOptions = { 'grpc.initial_reconnect_backoff_ms': 250, 'grpc.max_reconnect_backoff_ms': 3000 };

export class ObserverClient {
  readonly client: grpc.Client;

  constructor(
    readonly address: string,
    readonly tls?: ObserverClientTls,
  ) {
    if (tls) {
      const { credentials, options } = observerChannelCredentials(tls, address);
      this.client = new grpc.Client(address, credentials, { ...CHANNEL_OPTIONS, ...options });
    } else {
      this.client = new grpc.Client(address, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
    }
  }

  getFlows(req: GetFlowsRequest): grpc.ClientReadableStream<GetFlowsResponse> {
    const m = flowProtos().observer.GetFlows;
    return this.client.makeServerStreamRequest(m.path, m.requestSerialize, m.responseDeserialize, req);
  }

  serverStatus(timeoutMs: number): Promise<ServerStatusResponse> {
    return this.unary(flowProtos().observer.ServerStatus, timeoutMs);
  }

  getNodes(timeoutMs: number): Promise<GetNodesResponse> {
    return this.unary(flowProtos().observer.GetNodes, timeoutMs);
  }

  getNamespaces(timeoutMs: number): Promise<GetNamespacesResponse> {
    return this.unary(flowProtos().observer.GetNamespaces, timeoutMs);
  }

  private unary<T>(m: grpc.MethodDefinition<Record<string, never>, T>, timeoutMs: number): Promise<T> {
    return new Promise((resolve, reject) => {
      this.client.makeUnaryRequest(m.path, m.requestSerialize, m.responseDeserialize, {}, { deadline: Date.now() + timeoutMs }, (err, res) => {
        if (err) reject(err);
        else resolve(res!);
      });
    });
  }

  /**
   * Connects if needed and tells whether the server can be reached: READY → true; a failed
   * connection attempt, or no answer within timeoutMs → false (as Hubble's relay treats a peer in
   * TRANSIENT_FAILURE as unavailable).
   */
  ready(timeoutMs: number): Promise<boolean> {
    const channel = this.client.getChannel();
    const deadline = Date.now() + timeoutMs;
    return new Promise((resolve) => {
      const check = (): void => {
        const state = channel.getConnectivityState(true);
        if (state === grpc.connectivityState.READY) return resolve(true);
        if (state === grpc.connectivityState.TRANSIENT_FAILURE || state === grpc.connectivityState.SHUTDOWN) return resolve(false);
        if (Date.now() >= deadline) return resolve(false);
        channel.watchConnectivityState(state, deadline, (err) => (err ? resolve(false) : check()));
      };
      check();
    });
  }

  close(): void {
    this.client.close();
  }
}

/** `host:port`, `[v6]:port`, or a bare host (then `defaultPort`). */
export function observerAddress(text: string, defaultPort: number): string {
  if (/^\[.+\]:\d+$/.test(text) || /^[^:]+:\d+$/.test(text)) return text;
  if (text.includes(':') && !text.startsWith('[')) return `[${text}]:${defaultPort}`;
  return `${text}:${defaultPort}`;
}
