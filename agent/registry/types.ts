// The Kubernetes-shaped objects weft reads: the lab's input, the lab's generated resources directory
// (what a cluster's API server would hold, with status filled in), and the controller's source.
// The one module of resource types: the core kinds are here, the policy kinds and the metadata are
// re-exported from the layers below it (meta.ts ← policy-types.ts ← types.ts; never the reverse).
import type { ObjectMeta } from './meta.js';
import type { AuthorizationPolicyResource, PeerAuthenticationResource } from './policy-types.js';
import type { WaypointResource } from './waypoint-types.js';

export type { ObjectMeta, SourceRef, WithSource } from './meta.js';
export type * from './policy-types.js';
export type * from './waypoint-types.js';

/** weft's own small kind for lab nodes (apiVersion weft.io/v1alpha1). */
export interface NodeResource {
  apiVersion: 'weft.io/v1alpha1';
  kind: 'Node';
  metadata: ObjectMeta;
  spec: { podCIDR: string };
  status?: { addresses?: Array<{ type: 'InternalIP'; address: string }> };
}

/**
 * A Kubernetes Node (apiVersion v1), as the Kubernetes source decodes it: the pod CIDR when the
 * cluster allocates one (not every network plugin does) and the InternalIP addresses.
 */
export interface ClusterNodeResource {
  apiVersion: 'v1';
  kind: 'Node';
  metadata: ObjectMeta;
  spec: { podCIDR?: string };
  status?: { addresses?: Array<{ type: 'InternalIP'; address: string }> };
}

export interface NamespaceResource {
  apiVersion: 'v1';
  kind: 'Namespace';
  metadata: ObjectMeta;
}

export interface ContainerPort {
  containerPort: number;
  name?: string;
  protocol?: 'TCP' | 'UDP';
}

export interface Container {
  name: string;
  command: string[];
  ports?: ContainerPort[];
  env?: Array<{ name: string; value: string }>;
}

export interface PodResource {
  apiVersion: 'v1';
  kind: 'Pod';
  metadata: ObjectMeta & { namespace: string };
  spec: { nodeName: string; serviceAccountName?: string; containers: Container[] };
  /** Filled by the lab (or the cluster): the pod's IP and its node's IP. */
  status?: { podIP?: string; hostIP?: string; phase?: 'Pending' | 'Running' };
}

export interface ServicePort {
  name?: string;
  port: number;
  targetPort?: number;
  protocol?: 'TCP' | 'UDP';
}

export interface ServiceResource {
  apiVersion: 'v1';
  kind: 'Service';
  metadata: ObjectMeta & { namespace: string };
  spec: { selector?: Record<string, string>; ports: ServicePort[]; clusterIP?: string };
}

/** The label that ties an EndpointSlice to its Service (Kubernetes' own). */
export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';

export interface EndpointConditions {
  /** Unset means ready (the API's rule). */
  ready?: boolean;
  serving?: boolean;
  terminating?: boolean;
}

export interface SliceEndpoint {
  addresses: string[];
  conditions?: EndpointConditions;
  nodeName?: string;
  targetRef?: { kind?: string; namespace?: string; name?: string };
}

export interface SlicePort {
  name?: string;
  /** Unset: every port (the API's rule); weft needs a number to connect to. */
  port?: number;
  protocol?: 'TCP' | 'UDP';
}

/**
 * A Service's endpoints as Kubernetes publishes them (discovery.k8s.io/v1): which addresses are ready,
 * and the port numbers behind the Service's ports (named target ports resolved per pod). When a
 * Service has slices, they decide its endpoints instead of its selector (agent/state/cluster-state.ts).
 */
export interface EndpointSliceResource {
  apiVersion: 'discovery.k8s.io/v1';
  kind: 'EndpointSlice';
  metadata: ObjectMeta & { namespace: string };
  addressType: 'IPv4';
  endpoints: SliceEndpoint[];
  ports?: SlicePort[];
}

/** The lab-wide settings document (optional): node network, service CIDR, mesh trust domain, workload certificate lifetime. */
export interface LabConfigResource {
  apiVersion: 'weft.io/v1alpha1';
  kind: 'LabConfig';
  metadata: ObjectMeta;
  spec: {
    nodeNetwork?: string;
    serviceCIDR?: string;
    clusterDomain?: string;
    /** SPIFFE trust domain of the lab's mesh (default cluster.local). */
    trustDomain?: string;
    /** Lifetime of workload certificates, a duration such as `24h` or `5s` (default 24h). */
    workloadCertTTL?: string;
  };
}

export type Resource =
  | NodeResource
  | ClusterNodeResource
  | EndpointSliceResource
  | NamespaceResource
  | PodResource
  | ServiceResource
  | LabConfigResource
  | AuthorizationPolicyResource
  | PeerAuthenticationResource
  | WaypointResource;

/** Enrollment labels, as in Istio ambient; `weft.io/dataplane-mode` is our alias. */
export const DataplaneModeLabels = ['istio.io/dataplane-mode', 'weft.io/dataplane-mode'] as const;
export const DATAPLANE_AMBIENT = 'ambient';
export const DATAPLANE_NONE = 'none';

/** Is this pod enrolled in the mesh: its namespace is labelled ambient and the pod does not opt out. */
export function isEnrolled(pod: PodResource, ns: NamespaceResource | undefined): boolean {
  return enrolledByLabels(pod.metadata.labels, ns?.metadata.labels);
}

/** The enrollment rule on labels alone: the pod's own label wins (`none` opts out), else the namespace's. */
export function enrolledByLabels(podLabels: Readonly<Record<string, string>> | undefined, namespaceLabels: Readonly<Record<string, string>> | undefined): boolean {
  const podMode = DataplaneModeLabels.map((k) => podLabels?.[k]).find((v) => v !== undefined);
  if (podMode === DATAPLANE_NONE) return false;
  if (podMode === DATAPLANE_AMBIENT) return true;
  const nsMode = DataplaneModeLabels.map((k) => namespaceLabels?.[k]).find((v) => v !== undefined);
  return nsMode === DATAPLANE_AMBIENT;
}
