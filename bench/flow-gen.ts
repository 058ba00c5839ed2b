// A generator of the flows the agent makes for proxied connections, made by the agent's own
// FlowBuilder from ConnectionEvents like the pod proxies emit: L3_L4 TCP between pods of a few
// namespaces (Deployment-style pod names, Hubble's `k8s:` labels), a destination service, mostly
// FORWARDED with bytes and identities, some DROPPED by policy.
import { FlowBuilder, type ConnectionEvent } from '../agent/flows/builder.js';
import type { ConnectionInfo, Flow } from '../agent/flows/types.js';
import { ClusterState, type Workload } from '../agent/state/cluster-state.js';

interface Service {
  name: string;
  namespace: string;
  port: number;
  pods: Workload[];
}

export interface GeneratedFlow {
  flow: Flow;
  info: ConnectionInfo;
  event: 'close' | 'deny';
}

const NAMESPACES = ['shop', 'payments', 'search', 'auth'];
const APPS = ['frontend', 'cart', 'checkout', 'catalog', 'ledger', 'gateway'];
const HASH = 'bcdfghjklmnpqrstvwxz2456789';

/** Deterministic pseudo-random numbers (mulberry32), so every run builds the same cluster. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function suffix(rand: () => number, n: number): string {
  let s = '';
  for (let i = 0; i < n; i++) s += HASH[Math.floor(rand() * HASH.length)];
  return s;
}

export class FlowGenerator {
  private readonly services: Service[] = [];
  private readonly clients: Workload[] = [];
  private readonly rand: () => number;
  private readonly builder: FlowBuilder;
  private n = 0;

  /** `denyEvery`: one flow in that many is a policy denial. */
  constructor(
    nodeName = 'node-1',
    private readonly denyEvery = 20,
    seed = 42,
  ) {
    this.rand = rng(seed);
    const state = new ClusterState([]);
    this.builder = new FlowBuilder(nodeName, () => state);
    let host = 10;
    for (const namespace of NAMESPACES) {
      for (const app of APPS) {
        const rs = suffix(this.rand, 10);
        const pods: Workload[] = [];
        for (let r = 0; r < 3; r++) {
          const name = `${app}-${rs}-${suffix(this.rand, 5)}`;
          const ip = `10.42.${Math.floor(host / 250)}.${(host % 250) + 2}`;
          host++;
          pods.push({ key: `${namespace}/${name}`, name, namespace, node: nodeName, ip, serviceAccount: app, labels: { app, version: `v${1 + (r % 2)}` }, enrolled: true });
        }
        this.services.push({ name: app, namespace, port: 8080, pods });
        this.clients.push(...pods);
      }
    }
  }

  /** A new flow, made by the agent's builder from the event a pod proxy would emit. */
  next(): GeneratedFlow {
    const i = this.n++;
    const src = this.clients[i % this.clients.length]!;
    const svc = this.services[(i * 7) % this.services.length]!;
    const dst = svc.pods[i % svc.pods.length]!;
    const denied = this.denyEvery > 0 && i % this.denyEvery === this.denyEvery - 1;
    const principal = (w: Workload): string => `spiffe://cluster.local/ns/${w.namespace}/sa/${w.serviceAccount}`;
    const e: ConnectionEvent = {
      direction: i % 2 === 0 ? 'inbound' : 'outbound',
      verdict: denied ? 'DROPPED' : 'FORWARDED',
      ...(denied ? { dropReason: 'POLICY_DENIED' as const } : {}),
      src: { ip: src.ip!, port: 32768 + (i % 28000) },
      dst: { ip: dst.ip!, port: svc.port },
      srcWorkload: src,
      dstWorkload: dst,
      service: { name: svc.name, namespace: svc.namespace },
      info: denied
        ? { source_principal: principal(src), destination_principal: principal(dst), policy: `${svc.namespace}/deny-all`, reason: 'policy denied', security: 'mutual_tls' }
        : {
            source_principal: principal(src),
            destination_principal: principal(dst),
            bytes_sent: 200 + Math.floor(this.rand() * 4000),
            bytes_received: 1000 + Math.floor(this.rand() * 64000),
            duration_ms: Math.floor(this.rand() * 2000),
            security: 'mutual_tls',
            ...(i % 2 === 0 ? { policy: `${svc.namespace}/allow-${svc.name}` } : {}),
          },
    };
    const { flow, info } = this.builder.connection(e);
    return { flow, info, event: denied ? 'deny' : 'close' };
  }
}
