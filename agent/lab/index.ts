// The lab's library API (see agent/cli/lab.ts for the `weft lab ...` commands).
export {
  labUp,
  labApply,
  labDown,
  labStatus,
  labExec,
  openLab,
  agentEntry,
  readyUrl,
  controllerReadyUrl,
  CONTROLLER_PORT,
  LabHandle,
  READINESS_PORT,
  FIRST_VIP_INDEX,
  type UpOptions,
  type ApplyOptions,
  type DownReport,
  type LabStatus,
} from './lab.js';
export { DEFAULT_NODE_NETWORK, DEFAULT_SERVICE_CIDR, DEFAULT_CLUSTER_DOMAIN, DEFAULT_TRUST_DOMAIN, DEFAULT_WORKLOAD_CERT_TTL, buildModel, type LabModel } from './model.js';
export { resolveLabName, labNames, DEFAULT_LAB_NAME, STATE_ROOT, type LabNames } from './names.js';
export type { LabState, NodeState, PodState, ServiceState, ContainerState, ControllerState } from './state.js';
export { APPLIABLE_KINDS, appliedFileName, writeApplied, removeApplied } from './applied.js';
export type { ExecOptions, ExecResult } from './procs.js';
export { encodeKey as encodeLbKey, encodeValue as encodeLbValue, MAX_BACKENDS, LB_MAP, LB_PROGRAM } from './lb.js';
export { cgroup2Root } from '../system/mounts.js';
