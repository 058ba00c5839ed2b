// What the node agent knows about the cluster: workloads (pods), services and namespaces, indexed for
// the two questions the proxy asks: "which local pods are enrolled?" and "where does this address go?".
import {
  SERVICE_NAME_LABEL,
  isEnrolled,
  type EndpointSliceResource,
  type NamespaceResource,
  type PodResource,
  type Resource,
  type ServiceResource,
} from '../registry/types.js';
import type { SockAddr } from '../datapath/layout.js';
import type { SpiffeId } from '../identity/spiffe.js';
import type { AuthorizationPolicyResource, PeerAuthenticationResource } from '../registry/policy-types.js';
import { Mesh } from '../config.js';

export interface Workload {
  /** `namespace/name` */
  key: string;
  name: string;
  namespace: string;
  node: string;
  ip: string | undefined;
  serviceAccount: string;
  labels: Record<string, string>;
  enrolled: boolean;
}

/** A workload this node proxies: a pod with its network namespace (from the runtime) and its IP. */
export type EnrolledWorkload = Workload & { netns: string; ip: string };

export interface ServiceEntry {
  key: string;
  name: string;
  namespace: string;
  vip: string | undefined;
  ports: Array<{ port: number; targetPort: number; name?: string }>;
  selector: Record<string, string>;
}

/** Where a connection to an original destination goes. */
export interface Target {
  addr: SockAddr;
  /** `namespace/name` of the service when the destination was a service VIP. */
  service?: string;
  /** `namespace/name` of the destination pod, when it is a known workload. */
  workload?: string;
}

export interface MeshSettings {
  trustDomain: string;
  rootNamespace: string;
  clusterDomain: string;
}

export const DEFAULT_MESH_SETTINGS: MeshSettings = {
  trustDomain: Mesh.trustDomain,
  rootNamespace: Mesh.rootNamespace,
  clusterDomain: Mesh.clusterDomain,
};

export class ClusterState {
  readonly workloads: Workload[];
  readonly services: ServiceEntry[];
  readonly authorizationPolicies: AuthorizationPolicyResource[];
  readonly peerAuthentications: PeerAuthenticationResource[];
  readonly trustDomain: string;
  readonly rootNamespace: string;
  readonly clusterDomain: string;
  private readonly byKey = new Map<string, Workload>();
  private readonly servicesByKey = new Map<string, ServiceEntry>();
  private readonly byIp = new Map<string, Workload>();
  private readonly byVip = new Map<string, ServiceEntry>();
  private readonly roundRobin = new Map<string, number>();
  private readonly namespaces = new Map<string, NamespaceResource>();
  /** A Service's EndpointSlices (the Kubernetes source's), by service key. */
  private readonly slices = new Map<string, EndpointSliceResource[]>();

  constructor(resources: readonly Resource[], settings: MeshSettings = DEFAULT_MESH_SETTINGS) {
    this.trustDomain = settings.trustDomain;
    this.rootNamespace = settings.rootNamespace;
    this.clusterDomain = settings.clusterDomain;
    this.authorizationPolicies = resources.filter((r): r is AuthorizationPolicyResource => r.kind === 'AuthorizationPolicy');
    this.peerAuthentications = resources.filter((r): r is PeerAuthenticationResource => r.kind === 'PeerAuthentication');
    const namespaces = this.namespaces;
    for (const r of resources) if (r.kind === 'Namespace') namespaces.set(r.metadata.name, r);
    this.workloads = resources
      .filter((r): r is PodResource => r.kind === 'Pod')
      .map((pod) => {
        const key = `${pod.metadata.namespace}/${pod.metadata.name}`;
        return {
          key,
          name: pod.metadata.name,
          namespace: pod.metadata.namespace,
          node: pod.spec.nodeName,
          ip: pod.status?.podIP,
          serviceAccount: pod.spec.serviceAccountName ?? 'default',
          labels: pod.metadata.labels ?? {},
          enrolled: isEnrolled(pod, namespaces.get(pod.metadata.namespace)),
        };
      });
    for (const w of this.workloads) {
      this.byKey.set(w.key, w);
      if (w.ip) this.byIp.set(w.ip, w);
    }
    this.services = resources
      .filter((r): r is ServiceResource => r.kind === 'Service')
      .map((svc) => ({
        key: `${svc.metadata.namespace}/${svc.metadata.name}`,
        name: svc.metadata.name,
        namespace: svc.metadata.namespace,
        vip: svc.spec.clusterIP,
        ports: svc.spec.ports.map((p) => ({ port: p.port, targetPort: p.targetPort ?? p.port, ...(p.name ? { name: p.name } : {}) })),
        selector: svc.spec.selector ?? {},
      }));
    for (const s of this.services) {
      this.servicesByKey.set(s.key, s);
      if (s.vip) this.byVip.set(s.vip, s);
    }
    for (const r of resources) {
      if (r.kind !== 'EndpointSlice') continue;
      const svc = r.metadata.labels?.[SERVICE_NAME_LABEL];
      if (!svc) continue;
      const key = `${r.metadata.namespace}/${svc}`;
      this.slices.set(key, [...(this.slices.get(key) ?? []), r]);
    }
  }

  /** A namespace's labels, or undefined when the namespace is unknown. */
  namespaceLabels(name: string): Record<string, string> | undefined {
    const ns = this.namespaces.get(name);
    return ns ? (ns.metadata.labels ?? {}) : undefined;
  }

  /** Pods scheduled on `node` that are enrolled in the mesh and have an IP. */
  enrolledOn(node: string): Workload[] {
    return this.workloads.filter((w) => w.node === node && w.enrolled && w.ip);
  }

  workloadByIp(ip: string): Workload | undefined {
    return this.byIp.get(ip);
  }

  workloadByKey(key: string): Workload | undefined {
    return this.byKey.get(key);
  }

  serviceByKey(key: string): ServiceEntry | undefined {
    return this.servicesByKey.get(key);
  }

  /** The SPIFFE identity a workload's certificate carries: its namespace and service account. */
  identityOf(w: Workload): SpiffeId {
    return { trustDomain: this.trustDomain, namespace: w.namespace, serviceAccount: w.serviceAccount };
  }

  /**
   * A service's endpoints, in a stable order: when Kubernetes published EndpointSlices for it, the
   * known workloads at their ready addresses (readiness and selector-less services are the API's to
   * decide); otherwise the pods its selector picks that have an IP (the lab and the dir: source).
   */
  endpoints(svc: ServiceEntry): Workload[] {
    const slices = this.slices.get(svc.key);
    if (slices) {
      const found = new Map<string, Workload>();
      for (const ip of readyAddresses(slices)) {
        const w = this.byIp.get(ip);
        if (w && w.namespace === svc.namespace) found.set(w.key, w);
      }
      return [...found.values()].sort((a, b) => a.key.localeCompare(b.key));
    }
    const sel = Object.entries(svc.selector);
    if (sel.length === 0) return [];
    return this.workloads
      .filter((w) => w.namespace === svc.namespace && w.ip && sel.every(([k, v]) => w.labels[k] === v))
      .sort((a, b) => a.key.localeCompare(b.key));
  }

  /**
   * Resolve an original destination: a service VIP becomes one of its endpoints (round robin per
   * service port), anything else is its own target. Undefined: a VIP port with no endpoint.
   */
  resolve(dst: SockAddr): Target | undefined {
    const svc = this.byVip.get(dst.ip);
    if (!svc) {
      const w = this.byIp.get(dst.ip);
      return { addr: dst, ...(w ? { workload: w.key } : {}) };
    }
    const port = svc.ports.find((p) => p.port === dst.port);
    const endpoints = this.endpoints(svc);
    if (!port || endpoints.length === 0) return undefined;
    const rrKey = `${svc.key}:${dst.port}`;
    const n = this.roundRobin.get(rrKey) ?? 0;
    this.roundRobin.set(rrKey, n + 1);
    const pod = endpoints[n % endpoints.length]!;
    return { addr: { ip: pod.ip!, port: this.slicePort(svc, port.name, pod.ip!) ?? port.targetPort }, service: svc.key, workload: pod.key };
  }

  /**
   * The port number an EndpointSlice gives the service port `name` at `ip` (a named target port is
   * resolved per pod by Kubernetes), or undefined without slices.
   */
  private slicePort(svc: ServiceEntry, name: string | undefined, ip: string): number | undefined {
    for (const s of this.slices.get(svc.key) ?? []) {
      if (!s.endpoints.some((e) => e.addresses.includes(ip))) continue;
      const p = s.ports?.find((x) => (x.name ?? '') === (name ?? ''));
      if (p?.port !== undefined) return p.port;
    }
    return undefined;
  }
}

/** The addresses of ready endpoints (unset `ready` counts as ready, as the API says). */
function readyAddresses(slices: readonly EndpointSliceResource[]): Set<string> {
  const out = new Set<string>();
  for (const s of slices) for (const e of s.endpoints) if (e.conditions?.ready !== false) for (const a of e.addresses) out.add(a);
  return out;
}

// Kubernetes generates ReplicaSet hashes and pod suffixes from this alphabet (no vowels, no 0/1/3).
const DEPLOYMENT_POD = /^(.+)-[bcdfghjklmnpqrstvwxz2456789]{6,10}-[bcdfghjklmnpqrstvwxz2456789]{5}$/;

/** A pod's workload name, as Istio reports it: the Deployment for its pods, else the pod itself. */
export function workloadOfPod(pod: string): string {
  return DEPLOYMENT_POD.exec(pod)?.[1] ?? pod;
}
