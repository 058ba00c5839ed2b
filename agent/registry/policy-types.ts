// Istio security policy kinds (security.istio.io/v1), in the shape users write them.
// https://istio.io/latest/docs/reference/config/security/ — field names as documented there.
import type { ObjectMeta } from './meta.js';

export interface WorkloadSelector {
  matchLabels?: Record<string, string>;
}

export interface PolicyTargetReference {
  group?: string;
  kind: string;
  name: string;
  namespace?: string;
}

export interface AuthzSource {
  principals?: string[];
  notPrincipals?: string[];
  requestPrincipals?: string[];
  notRequestPrincipals?: string[];
  namespaces?: string[];
  notNamespaces?: string[];
  serviceAccounts?: string[];
  notServiceAccounts?: string[];
  ipBlocks?: string[];
  notIpBlocks?: string[];
  remoteIpBlocks?: string[];
  notRemoteIpBlocks?: string[];
}

export interface AuthzOperation {
  hosts?: string[];
  notHosts?: string[];
  ports?: string[];
  notPorts?: string[];
  methods?: string[];
  notMethods?: string[];
  paths?: string[];
  notPaths?: string[];
}

export interface AuthzCondition {
  key: string;
  values?: string[];
  notValues?: string[];
}

export interface AuthzRule {
  from?: Array<{ source: AuthzSource }>;
  to?: Array<{ operation: AuthzOperation }>;
  when?: AuthzCondition[];
}

export type AuthzAction = 'ALLOW' | 'DENY' | 'AUDIT' | 'CUSTOM';

export interface AuthorizationPolicyResource {
  apiVersion: 'security.istio.io/v1' | 'security.istio.io/v1beta1';
  kind: 'AuthorizationPolicy';
  metadata: ObjectMeta & { namespace: string };
  spec: {
    selector?: WorkloadSelector;
    targetRefs?: PolicyTargetReference[];
    action?: AuthzAction;
    rules?: AuthzRule[];
    provider?: { name: string };
  };
}

export type PeerAuthMode = 'UNSET' | 'STRICT' | 'PERMISSIVE' | 'DISABLE';

export interface PeerAuthenticationResource {
  apiVersion: 'security.istio.io/v1' | 'security.istio.io/v1beta1';
  kind: 'PeerAuthentication';
  metadata: ObjectMeta & { namespace: string };
  spec: {
    selector?: WorkloadSelector;
    mtls?: { mode?: PeerAuthMode };
    portLevelMtls?: Record<string, { mode?: PeerAuthMode }>;
  };
}

export type PolicyResource = AuthorizationPolicyResource | PeerAuthenticationResource;
