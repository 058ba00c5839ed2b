// The kinds weft reads, in one table: apiVersion and kind → the validator of the document. Every
// reader of documents (the lab, the controller's directory, `weft apply`, the agent's dir: source)
// goes through parse.ts, which looks kinds up here and nowhere else, so a kind is known wherever
// documents are parsed, whatever else was imported. A new kind is a new row.
import type { Resource } from './types.js';
import { validateEndpointSlice, validateLabConfig, validateNamespace, validateNode, validatePod, validateService } from './core-kinds.js';
import { POLICY_API_VERSIONS, validateAuthorizationPolicy, validatePeerAuthentication } from './policy-kinds.js';
import {
  GATEWAY_API_VERSIONS,
  ISTIO_NETWORKING_API_VERSIONS,
  REQUEST_AUTHN_API_VERSIONS,
  validateDestinationRule,
  validateGateway,
  validateHTTPRoute,
  validateRequestAuthentication,
  validateVirtualService,
} from './waypoint-kinds.js';
import type { ObjectMeta } from './meta.js';
import type { DocContext, Json } from './validators.js';

export interface KindSpec {
  kind: Resource['kind'];
  apiVersions: readonly string[];
  namespaced: boolean;
  /** What metadata.name must be: Pods take a DNS-1123 subdomain (as Kubernetes), the rest a label. */
  name: 'dns1123-label' | 'dns1123-subdomain';
  /** Checks the whole document; returns the normalised resource, or undefined if it had problems. */
  validate(ctx: DocContext, raw: Record<string, Json>, meta: ObjectMeta): Resource | undefined;
}

export const KINDS: readonly KindSpec[] = [
  { kind: 'Namespace', apiVersions: ['v1'], namespaced: false, name: 'dns1123-label', validate: validateNamespace },
  { kind: 'Pod', apiVersions: ['v1'], namespaced: true, name: 'dns1123-subdomain', validate: validatePod },
  { kind: 'Service', apiVersions: ['v1'], namespaced: true, name: 'dns1123-label', validate: validateService },
  // weft.io/v1alpha1: the lab's nodes; v1: a Kubernetes cluster's.
  { kind: 'Node', apiVersions: ['weft.io/v1alpha1', 'v1'], namespaced: false, name: 'dns1123-label', validate: validateNode },
  { kind: 'EndpointSlice', apiVersions: ['discovery.k8s.io/v1'], namespaced: true, name: 'dns1123-subdomain', validate: validateEndpointSlice },
  { kind: 'LabConfig', apiVersions: ['weft.io/v1alpha1'], namespaced: false, name: 'dns1123-label', validate: validateLabConfig },
  { kind: 'AuthorizationPolicy', apiVersions: POLICY_API_VERSIONS, namespaced: true, name: 'dns1123-label', validate: validateAuthorizationPolicy },
  { kind: 'PeerAuthentication', apiVersions: POLICY_API_VERSIONS, namespaced: true, name: 'dns1123-label', validate: validatePeerAuthentication },
  // The waypoint's kinds (L7 policy, routing, resilience), as Istio and Gateway API spell them.
  { kind: 'RequestAuthentication', apiVersions: REQUEST_AUTHN_API_VERSIONS, namespaced: true, name: 'dns1123-label', validate: validateRequestAuthentication },
  { kind: 'Gateway', apiVersions: GATEWAY_API_VERSIONS, namespaced: true, name: 'dns1123-subdomain', validate: validateGateway },
  { kind: 'HTTPRoute', apiVersions: GATEWAY_API_VERSIONS, namespaced: true, name: 'dns1123-subdomain', validate: validateHTTPRoute },
  { kind: 'DestinationRule', apiVersions: ISTIO_NETWORKING_API_VERSIONS, namespaced: true, name: 'dns1123-subdomain', validate: validateDestinationRule },
  { kind: 'VirtualService', apiVersions: ISTIO_NETWORKING_API_VERSIONS, namespaced: true, name: 'dns1123-subdomain', validate: validateVirtualService },
];

const byKind: ReadonlyMap<string, KindSpec> = new Map(KINDS.map((k) => [k.kind, k]));

/** The table's row for `kind`; own entries only (a document's kind is user text: `__proto__` is unknown). */
export function kindSpec(kind: string): KindSpec | undefined {
  return byKind.get(kind);
}

/** Every kind of the table, sorted. */
export function knownKinds(): string[] {
  return [...byKind.keys()].sort();
}
