// The lab's library API (command.ts holds the `weft lab ...` commands): the one entry tests,
// benches and the CLI import. Its rooms: up.ts (up, apply), topology.ts (network, nodes, pods,
// services, reconcile), supervision.ts (controller, agents, relay, containers), status.ts, down.ts
// (teardown, leftovers), handle.ts (LabHandle); state.ts, names.ts, net.ts, procs.ts, sys.ts below them.
export { labUp, labApply, type UpOptions, type ApplyOptions } from './up.js';
export { labDown, type DownReport } from './down.js';
export { labStatus, type LabStatus } from './status.js';
export { LabHandle, openLab } from './handle.js';
export { labExec, agentEntry, readyUrl, controllerReadyUrl, CONTROLLER_PORT, READINESS_PORT } from './supervision.js';
export { FIRST_VIP_INDEX } from './topology.js';
export { DEFAULT_NODE_NETWORK, DEFAULT_SERVICE_CIDR, DEFAULT_CLUSTER_DOMAIN, DEFAULT_TRUST_DOMAIN, DEFAULT_WORKLOAD_CERT_TTL, buildModel, type LabModel } from './model.js';
export { resolveLabName, labNames, DEFAULT_LAB_NAME, STATE_ROOT, type LabNames } from './names.js';
export type { LabState, NodeState, PodState, ServiceState, ContainerState, ControllerState } from './state.js';
export { APPLIABLE_KINDS, appliedFileName, writeApplied, removeApplied } from './applied.js';
export type { ExecOptions, ExecResult } from './procs.js';
export { encodeKey as encodeLbKey, encodeValue as encodeLbValue, MAX_BACKENDS, LB_MAP, LB_PROGRAM } from './lb.js';
export { cgroup2Root } from '../system/mounts.js';
