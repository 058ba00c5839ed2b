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
  LabHandle,
  READINESS_PORT,
  FIRST_VIP_INDEX,
  type UpOptions,
  type ApplyOptions,
  type DownReport,
  type LabStatus,
} from './lab.js';
export { DEFAULT_NODE_NETWORK, DEFAULT_SERVICE_CIDR, DEFAULT_CLUSTER_DOMAIN, buildModel, type LabModel } from './model.js';
export { resolveLabName, labNames, DEFAULT_LAB_NAME, STATE_ROOT, type LabNames } from './names.js';
export type { LabState, NodeState, PodState, ServiceState, ContainerState } from './state.js';
export type { ExecOptions, ExecResult } from './procs.js';
export { encodeKey as encodeLbKey, encodeValue as encodeLbValue, MAX_BACKENDS, LB_MAP, LB_PROGRAM } from './lb.js';
export { cgroup2Root } from '../system/mounts.js';
