// Known flows for the Observer, relay and `weft observe` tests, and a client that collects a GetFlows stream.
import type * as grpc from '@grpc/grpc-js';
import type { Flow, GetFlowsRequest, GetFlowsResponse, Verdict } from '../../agent/flows/types.js';
import { ObserverClient } from '../../agent/relay/client.js';

/** 2024-05-04T13:23:47Z, the base time of the fixtures. */
export const T0_MS = Date.UTC(2024, 4, 4, 13, 23, 47);

export interface FlowSpec {
  /** Milliseconds after T0_MS (or an absolute epoch ms with `absolute`). */
  at: number;
  absolute?: boolean;
  uuid?: string;
  node?: string;
  src?: { ns: string; pod: string; ip: string; port: number };
  dst?: { ns: string; pod: string; ip: string; port: number };
  verdict?: Verdict;
  reply?: boolean;
}

export function makeFlow(s: FlowSpec): Flow {
  const ms = s.absolute ? s.at : T0_MS + s.at;
  const src = s.src ?? { ns: 'default', pod: 'client', ip: '10.1.1.2', port: 43210 };
  const dst = s.dst ?? { ns: 'default', pod: 'server', ip: '10.1.2.2', port: 80 };
  const verdict = s.verdict ?? 'FORWARDED';
  return {
    time: { seconds: String(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 },
    uuid: s.uuid ?? `flow-${s.at}`,
    verdict,
    ...(verdict === 'DROPPED' ? { drop_reason_desc: 'POLICY_DENIED' as const } : {}),
    IP: { source: src.ip, destination: dst.ip, ipVersion: 'IPv4' },
    l4: { TCP: { source_port: src.port, destination_port: dst.port } },
    source: { namespace: src.ns, pod_name: src.pod, labels: [`k8s:app=${src.pod}`] },
    destination: { namespace: dst.ns, pod_name: dst.pod, labels: [`k8s:app=${dst.pod}`] },
    Type: 'L3_L4',
    node_name: s.node ?? 'node-a',
    traffic_direction: 'EGRESS',
    event_type: verdict === 'DROPPED' ? { type: 1, sub_type: 133 } : { type: 4, sub_type: 0 },
    ...(s.reply === undefined ? {} : { is_reply: { value: s.reply } }),
  };
}

/** Every response of a GetFlows call that ends by itself. */
export function collect(address: string, req: GetFlowsRequest, timeoutMs = 5000): Promise<GetFlowsResponse[]> {
  const client = new ObserverClient(address);
  const call = client.getFlows(req);
  const out: GetFlowsResponse[] = [];
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      call.cancel();
      reject(new Error(`GetFlows did not end within ${timeoutMs} ms (${out.length} responses)`));
    }, timeoutMs);
    call.on('data', (r: GetFlowsResponse) => out.push(r));
    call.on('error', (err: grpc.ServiceError) => {
      clearTimeout(timer);
      client.close();
      reject(err);
    });
    call.on('end', () => {
      clearTimeout(timer);
      client.close();
      resolve(out);
    });
  });
}

/** A follow stream: responses as they come, `until(n)` waits for n of them, `close()` cancels. */
export function follow(address: string, req: GetFlowsRequest): {
  responses: GetFlowsResponse[];
  call: grpc.ClientReadableStream<GetFlowsResponse>;
  until: (pred: (rs: GetFlowsResponse[]) => boolean, timeoutMs?: number) => Promise<void>;
  ended: Promise<void>;
  close: () => void;
} {
  const client = new ObserverClient(address);
  const call = client.getFlows(req);
  const responses: GetFlowsResponse[] = [];
  const waiters = new Set<() => void>();
  call.on('data', (r: GetFlowsResponse) => {
    responses.push(r);
    for (const w of [...waiters]) w();
  });
  const ended = new Promise<void>((resolve) => {
    call.on('error', () => resolve());
    call.on('end', () => resolve());
  });
  const until = (pred: (rs: GetFlowsResponse[]) => boolean, timeoutMs = 5000): Promise<void> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        if (!pred(responses)) return;
        waiters.delete(check);
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        waiters.delete(check);
        reject(new Error(`condition not met within ${timeoutMs} ms; got ${JSON.stringify(responses.map(describe))}`));
      }, timeoutMs);
      waiters.add(check);
      check();
    });
  return {
    responses,
    call,
    until,
    ended,
    close: () => {
      call.cancel();
      client.close();
    },
  };
}

export function describe(r: GetFlowsResponse): string {
  if (r.flow) return `flow ${r.flow.uuid}@${r.node_name}`;
  if (r.lost_events) return `lost ${r.lost_events.source} ${r.lost_events.num_events_lost}`;
  if (r.node_status) return `status ${r.node_status.state_change} ${(r.node_status.node_names ?? []).join(',')}`;
  return 'empty';
}

export const flowsOf = (rs: GetFlowsResponse[]): string[] => rs.filter((r) => r.flow).map((r) => r.flow!.uuid);
