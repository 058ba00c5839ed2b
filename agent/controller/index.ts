// The controller's public entry: what other programs (the CLI, the node agent, the relay, the lab) may
// use. Everything else under agent/controller/ is the controller's own business; import it only from
// inside the controller (and from the controller's unit tests).

// Running a controller (`weft controller`).
export { Controller, DEFAULT_NODE_CREDENTIAL_TTL_SECONDS, KUBERNETES_SOURCE, type ControllerOptions } from './controller.js';
// The Kubernetes source (`--source kubernetes`): which kinds it reads from where, and its progress.
export { KUBE_KINDS, type KubeKind } from './kube-decode.js';
export { KubeSource, readableKinds, type KindStatus, type KubeSourceOptions } from './kube-source.js';
export { DEFAULT_CSR_RATE_LIMIT, type RateLimit } from './rate-limit.js';
export { REVOKED_NODES_FILE, appendRevocation } from './revocation.js';

// Issuing credentials from a controller's state directory (its CA) into a directory:
// `weft controller node-credentials`, `weft relay credentials`, the lab.
export {
  writeNodeCredentials,
  writeObserverCredentials,
  writeRelayCredentials,
  type CredentialFiles,
  type IssueOptions,
  type NodeCredentialFiles,
} from './credentials.js';

// Talking to a controller: discovery and certificates (gRPC), and its status (monitoring endpoint).
export { ControllerCallError, ControllerClient, TokenFile, type ControllerClientOptions, type DiscoveryState } from './client.js';
export { fetchControllerStatus } from './status-client.js';
export type { ControllerStatus } from './monitoring.js';
