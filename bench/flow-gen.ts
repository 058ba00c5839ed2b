// A generator of flows shaped like the agent's FlowBuilder output for proxied connections: L3_L4 TCP
// flows between pods of a few namespaces (endpoints with Hubble's `k8s:` labels and a workload),
// IPv4 addresses, ephemeral source ports, a destination service, mostly FORWARDED with bytes and
// identities, some DROPPED by policy; each with its ConnectionInfo (to be packed into extensions).
import { randomUUID } from 'node:crypto';
import type { ConnectionInfo, Endpoint, Flow } from '../agent/flows/types.js';

interface Pod {
  ip: string;
  endpoint: Endpoint;
  principal: string;
}

interface Service {
  name: string;
  namespace: string;
  port: number;
  pods: Pod[];
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
  private readonly clients: Pod[] = [];
  private readonly rand: () => number;
  private n = 0;

  /** `denyEvery`: one flow in that many is a policy denial. */
  constructor(
    private readonly nodeName = 'node-1',
    private readonly denyEvery = 20,
    seed = 42,
  ) {
    this.rand = rng(seed);
    let host = 10;
    for (const namespace of NAMESPACES) {
      for (const app of APPS) {
        const rs = suffix(this.rand, 10);
        const pods: Pod[] = [];
        for (let r = 0; r < 3; r++) {
          const name = `${app}-${rs}-${suffix(this.rand, 5)}`;
          const ip = `10.42.${Math.floor(host / 250)}.${(host % 250) + 2}`;
          host++;
          const labels = [`k8s:app=${app}`, `k8s:version=v${1 + (r % 2)}`, `k8s:io.kubernetes.pod.namespace=${namespace}`, `k8s:io.cilium.k8s.policy.serviceaccount=${app}`].sort();
          pods.push({
            ip,
            endpoint: { namespace, pod_name: name, labels, workloads: [{ name: `${app}`, kind: 'Pod' }] },
            principal: `spiffe://cluster.local/ns/${namespace}/sa/${app}`,
          });
        }
        this.services.push({ name: app, namespace, port: 8080, pods });
        this.clients.push(...pods);
      }
    }
  }

  /** A new flow object, as the builder makes one per connection. */
  next(): GeneratedFlow {
    const i = this.n++;
    const src = this.clients[i % this.clients.length]!;
    const svc = this.services[(i * 7) % this.services.length]!;
    const dst = svc.pods[i % svc.pods.length]!;
    const denied = this.denyEvery > 0 && i % this.denyEvery === this.denyEvery - 1;
    const inbound = i % 2 === 0;
    const ms = Date.now();
    const flow: Flow = {
      time: { seconds: String(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 },
      uuid: randomUUID(),
      verdict: denied ? 'DROPPED' : 'FORWARDED',
      IP: { source: src.ip, destination: dst.ip, ipVersion: 'IPv4' },
      l4: { TCP: { source_port: 32768 + (i % 28000), destination_port: svc.port } },
      source: src.endpoint,
      destination: dst.endpoint,
      Type: 'L3_L4',
      node_name: this.nodeName,
      traffic_direction: inbound ? 'INGRESS' : 'EGRESS',
      is_reply: { value: false },
      destination_service: { name: svc.name, namespace: svc.namespace },
      event_type: denied ? { type: 1, sub_type: 133 } : { type: inbound ? 5 : 4, sub_type: 0 },
    };
    if (denied) flow.drop_reason_desc = 'POLICY_DENIED';
    const info: ConnectionInfo = denied
      ? { source_principal: src.principal, destination_principal: dst.principal, policy: `${svc.namespace}/deny-all`, reason: 'policy denied', security: 'mutual_tls' }
      : {
          source_principal: src.principal,
          destination_principal: dst.principal,
          bytes_sent: 200 + Math.floor(this.rand() * 4000),
          bytes_received: 1000 + Math.floor(this.rand() * 64000),
          duration_ms: Math.floor(this.rand() * 2000),
          security: 'mutual_tls',
        };
    return { flow, info, event: denied ? 'deny' : 'close' };
  }
}
