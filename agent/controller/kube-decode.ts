// From the Kubernetes API to weft's documents: where each kind lives in the API (group, version,
// plural) and how an object the API server holds becomes the document weft's registry validates. The
// decoding keeps the fields weft reads and drops the rest (a real Pod has dozens weft has no use for,
// and some it must never take from the API); the result then goes through the registry's parser
// (parse.ts parseObject) exactly as a file's document does: same kinds table, same validators.
//
// What decoding decides on its own, because it is a fact of the cluster and no mistake of a user:
//   - a Pod that has not been scheduled, or has finished (Succeeded, Failed), is no workload (its IP
//     may already belong to another pod);
//   - a host-network Pod has the node's address, shared with every other such pod: it keeps no podIP;
//   - a Pod's annotations are not read: the pod's network namespace comes from the runtime or the
//     kernel, never from an annotation a tenant can write (`weft.io/netns`);
//   - IPv6 addresses and CIDRs are left out (weft's data path is IPv4), as are SCTP ports;
//   - an ExternalName Service, and a Service without ports (headless), has nothing to proxy;
//   - EndpointSlices that are not IPv4 or not tied to a Service by its label are not read;
//   - a named targetPort is left to the Service's EndpointSlices, which carry the resolved number;
//   - `status` of the policy kinds is not read (weft writes its own condition there);
//   - kubectl's last-applied-configuration annotation (a copy of the whole object) is dropped.
import { isIPv4 } from 'node:net';
import { SERVICE_NAME_LABEL } from '../registry/types.js';

/** Where a kind weft reads is served. */
export interface KubeKind {
  kind: string;
  /** '' for the core group. */
  group: string;
  version: string;
  plural: string;
  namespaced: boolean;
  /** weft reports a rejection as a status condition (Istio's kinds), else as an Event. */
  statusConditions: boolean;
}

/**
 * Every kind the Kubernetes source can read. The source watches those the registry knows (its kinds
 * table); the rest wait for their validators (the waypoint's Gateway API and Istio routing kinds).
 */
export const KUBE_KINDS: readonly KubeKind[] = [
  { kind: 'Namespace', group: '', version: 'v1', plural: 'namespaces', namespaced: false, statusConditions: false },
  { kind: 'Node', group: '', version: 'v1', plural: 'nodes', namespaced: false, statusConditions: false },
  { kind: 'Pod', group: '', version: 'v1', plural: 'pods', namespaced: true, statusConditions: false },
  { kind: 'Service', group: '', version: 'v1', plural: 'services', namespaced: true, statusConditions: false },
  { kind: 'EndpointSlice', group: 'discovery.k8s.io', version: 'v1', plural: 'endpointslices', namespaced: true, statusConditions: false },
  { kind: 'AuthorizationPolicy', group: 'security.istio.io', version: 'v1', plural: 'authorizationpolicies', namespaced: true, statusConditions: true },
  { kind: 'PeerAuthentication', group: 'security.istio.io', version: 'v1', plural: 'peerauthentications', namespaced: true, statusConditions: true },
  { kind: 'RequestAuthentication', group: 'security.istio.io', version: 'v1', plural: 'requestauthentications', namespaced: true, statusConditions: true },
  { kind: 'DestinationRule', group: 'networking.istio.io', version: 'v1', plural: 'destinationrules', namespaced: true, statusConditions: true },
  { kind: 'VirtualService', group: 'networking.istio.io', version: 'v1', plural: 'virtualservices', namespaced: true, statusConditions: true },
  // Gateway API status is per parent (`status.parents[].conditions`), written by each parent's
  // controller: weft reports on these with Events.
  { kind: 'Gateway', group: 'gateway.networking.k8s.io', version: 'v1', plural: 'gateways', namespaced: true, statusConditions: false },
  { kind: 'HTTPRoute', group: 'gateway.networking.k8s.io', version: 'v1', plural: 'httproutes', namespaced: true, statusConditions: false },
];

export const apiVersionOf = (k: KubeKind): string => (k.group ? `${k.group}/${k.version}` : k.version);

/** The collection's path across all namespaces: `/api/v1/pods`, `/apis/<group>/<version>/<plural>`. */
export function collectionPath(k: KubeKind): string {
  return `${k.group ? `/apis/${k.group}` : '/api'}/${k.version}/${k.plural}`;
}

/** One object's path (with a subresource such as `status`). */
export function objectPath(k: KubeKind, namespace: string | undefined, name: string, subresource?: string): string {
  const base = `${k.group ? `/apis/${k.group}` : '/api'}/${k.version}`;
  const ns = k.namespaced && namespace ? `/namespaces/${encodeURIComponent(namespace)}` : '';
  return `${base}${ns}/${k.plural}/${encodeURIComponent(name)}${subresource ? `/${subresource}` : ''}`;
}

/** An object as the API serves it, before anything is known of it. */
export interface ApiObject {
  apiVersion?: string;
  kind?: string;
  metadata?: {
    name?: string;
    namespace?: string;
    uid?: string;
    resourceVersion?: string;
    generation?: number;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
  [field: string]: unknown;
}

/** The registry's key of an API object: `Kind/namespace/name` or `Kind/name` (parse.ts resourceKey's form). */
export function objectKey(k: KubeKind, o: ApiObject): string {
  const name = o.metadata?.name ?? '';
  return k.namespaced ? `${k.kind}/${o.metadata?.namespace ?? ''}/${name}` : `${k.kind}/${name}`;
}

/** What decoding made of an object: a document for the parser, or why the object is no part of weft's view. */
export type Decoded = { doc: Record<string, unknown> } | { skip: string };

type Obj = Record<string, unknown>;

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const arr = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
const str = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);

const LAST_APPLIED = 'kubectl.kubernetes.io/last-applied-configuration';

function metadataOf(o: ApiObject, keepAnnotations: boolean): Obj {
  const m = o.metadata ?? {};
  const out: Obj = { name: m.name };
  if (m.namespace !== undefined) out.namespace = m.namespace;
  if (m.uid !== undefined) out.uid = m.uid;
  if (m.labels !== undefined) out.labels = m.labels;
  if (keepAnnotations && isObj(m.annotations)) {
    const a = { ...m.annotations };
    delete a[LAST_APPLIED];
    if (Object.keys(a).length) out.annotations = a;
  }
  return out;
}

/** The first IPv4 of a `podIPs`/`hostIPs`-style list, else the single field. */
function firstIPv4(list: unknown, single: unknown): string | undefined {
  for (const e of arr(list)) {
    const ip = isObj(e) ? str(e.ip) : undefined;
    if (ip && isIPv4(ip)) return ip;
  }
  const s = str(single);
  return s && isIPv4(s) ? s : undefined;
}

function firstIPv4Cidr(list: unknown, single: unknown): string | undefined {
  for (const c of [...arr(list), single]) {
    const s = str(c);
    if (s && isIPv4(s.split('/')[0] ?? '')) return s;
  }
  return undefined;
}

const l4 = (p: unknown): boolean => p === undefined || p === 'TCP' || p === 'UDP';

/** Decodes an API object of kind `k` into the document weft's parser validates. */
export function decodeKubeObject(k: KubeKind, o: ApiObject): Decoded {
  const head = { apiVersion: apiVersionOf(k), kind: k.kind };
  switch (k.kind) {
    case 'Namespace':
      return { doc: { ...head, metadata: metadataOf(o, true) } };
    case 'Node':
      return { doc: decodeNode(o, head) };
    case 'Pod':
      return decodePod(o, head);
    case 'Service':
      return decodeService(o, head);
    case 'EndpointSlice':
      return decodeEndpointSlice(o, head);
    default: {
      // The policy and routing kinds: the user's spec, whole, for the same strict checks as a file.
      const doc: Obj = { ...head, metadata: metadataOf(o, true) };
      if (o.spec !== undefined) doc.spec = o.spec;
      return { doc };
    }
  }
}

function decodeNode(o: ApiObject, head: Obj): Obj {
  const spec = isObj(o.spec) ? o.spec : {};
  const status = isObj(o.status) ? o.status : {};
  const podCIDR = firstIPv4Cidr(spec.podCIDRs, spec.podCIDR);
  const addresses = arr(status.addresses)
    .filter((a): a is Obj => isObj(a) && a.type === 'InternalIP' && typeof a.address === 'string' && isIPv4(a.address))
    .map((a) => ({ type: 'InternalIP', address: a.address }));
  const doc: Obj = { ...head, metadata: metadataOf(o, false), spec: podCIDR ? { podCIDR } : {} };
  if (addresses.length) doc.status = { addresses };
  return doc;
}

function decodePod(o: ApiObject, head: Obj): Decoded {
  const spec = isObj(o.spec) ? o.spec : {};
  const status = isObj(o.status) ? o.status : {};
  const phase = str(status.phase);
  if (phase === 'Succeeded' || phase === 'Failed') return { skip: `the pod has finished (phase ${phase})` };
  if (!str(spec.nodeName)) return { skip: 'the pod is not scheduled on a node yet' };
  const containers = arr(spec.containers).map((c) => {
    const x = isObj(c) ? c : {};
    const out: Obj = { name: x.name };
    if (x.command !== undefined) out.command = x.command;
    if (x.args !== undefined) out.args = x.args;
    const ports = arr(x.ports)
      .filter((p) => isObj(p) && l4(p.protocol))
      .map((p) => {
        const q = p as Obj;
        const port: Obj = { containerPort: q.containerPort };
        if (q.name !== undefined) port.name = q.name;
        if (q.protocol !== undefined) port.protocol = q.protocol;
        return port;
      });
    if (ports.length) out.ports = ports;
    return out;
  });
  const podSpec: Obj = { nodeName: spec.nodeName, containers };
  if (spec.serviceAccountName !== undefined) podSpec.serviceAccountName = spec.serviceAccountName;
  const podStatus: Obj = {};
  const podIP = spec.hostNetwork === true ? undefined : firstIPv4(status.podIPs, status.podIP);
  const hostIP = firstIPv4(status.hostIPs, status.hostIP);
  if (podIP) podStatus.podIP = podIP;
  if (hostIP) podStatus.hostIP = hostIP;
  if (phase === 'Pending' || phase === 'Running') podStatus.phase = phase;
  const doc: Obj = { ...head, metadata: metadataOf(o, false), spec: podSpec };
  if (Object.keys(podStatus).length) doc.status = podStatus;
  return { doc };
}

function decodeService(o: ApiObject, head: Obj): Decoded {
  const spec = isObj(o.spec) ? o.spec : {};
  if (spec.type === 'ExternalName') return { skip: 'an ExternalName service has no endpoints to proxy' };
  const ports = arr(spec.ports)
    .filter((p): p is Obj => isObj(p) && l4(p.protocol))
    .map((p) => {
      const out: Obj = { port: p.port };
      if (p.name !== undefined && p.name !== '') out.name = p.name;
      if (typeof p.targetPort === 'number') out.targetPort = p.targetPort;
      if (p.protocol !== undefined) out.protocol = p.protocol;
      return out;
    });
  if (ports.length === 0) return { skip: 'the service has no TCP or UDP ports' };
  const svcSpec: Obj = { ports };
  if (isObj(spec.selector)) svcSpec.selector = spec.selector;
  const clusterIP = firstIPv4(undefined, spec.clusterIP) ?? arr(spec.clusterIPs).map(str).find((ip) => ip !== undefined && isIPv4(ip));
  if (clusterIP) svcSpec.clusterIP = clusterIP;
  return { doc: { ...head, metadata: metadataOf(o, true), spec: svcSpec } };
}

function decodeEndpointSlice(o: ApiObject, head: Obj): Decoded {
  if (o.addressType !== 'IPv4') return { skip: `weft reads IPv4 endpoints (this slice is ${String(o.addressType)})` };
  if (!str(o.metadata?.labels?.[SERVICE_NAME_LABEL])) return { skip: `the slice has no ${SERVICE_NAME_LABEL} label` };
  const endpoints = arr(o.endpoints).map((e) => {
    const x = isObj(e) ? e : {};
    const out: Obj = { addresses: x.addresses };
    if (isObj(x.conditions)) {
      const c: Obj = {};
      for (const k of ['ready', 'serving', 'terminating']) if (typeof x.conditions[k] === 'boolean') c[k] = x.conditions[k];
      out.conditions = c;
    }
    if (x.nodeName !== undefined) out.nodeName = x.nodeName;
    if (isObj(x.targetRef)) {
      const t: Obj = {};
      for (const k of ['kind', 'namespace', 'name']) if (x.targetRef[k] !== undefined) t[k] = x.targetRef[k];
      out.targetRef = t;
    }
    return out;
  });
  const ports = arr(o.ports)
    .filter((p): p is Obj => isObj(p) && l4(p.protocol ?? undefined) && typeof p.port === 'number')
    .map((p) => {
      const out: Obj = { port: p.port };
      if (typeof p.name === 'string' && p.name !== '') out.name = p.name;
      if (p.protocol !== undefined && p.protocol !== null) out.protocol = p.protocol;
      return out;
    });
  const doc: Obj = { ...head, metadata: metadataOf(o, false), addressType: 'IPv4', endpoints };
  if (ports.length) doc.ports = ports;
  return { doc };
}
