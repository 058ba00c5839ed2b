// L4 authorization and PeerAuthentication resolution, as ambient mode's ztunnel enforces them.
export { applicablePolicies, authorize, policyKey } from './authz.js';
export type { AuthzDecision, AuthzOptions, ConnectionAttrs, WorkloadRef } from './authz.js';
export { effectiveMtlsMode } from './peer-authn.js';
export type { EffectiveMtls } from './peer-authn.js';
