// The lab's state file: what exists (nodes, pods, services with their addresses and pids) and a
// journal of every system object, written *before* the object is created so `down` finds it after a crash.
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { ErrorCodes, WeftError } from '../errors.js';
import type { Resource } from '../registry/types.js';
import type { LbPins } from './lb.js';
import { labNames, resolveLabName, type LabNames } from './names.js';

export type JournalEntry =
  | { type: 'dir'; path: string }
  | { type: 'cgroup'; path: string }
  | { type: 'netns'; name: string }
  | { type: 'link'; name: string }
  | { type: 'etcnetns'; path: string }
  | { type: 'pin'; path: string };

export interface NodeState {
  name: string;
  index: number;
  ip: string;
  podCIDR: string;
  /** cni0's address (.1 of the pod CIDR). */
  gateway: string;
  netns: string;
  netnsPath: string;
  cgroup: string;
  agentCgroup: string;
  fabricPeer: string;
  bpffs: string;
  agentPid?: number;
  agentLog: string;
}

export interface ContainerState {
  name: string;
  pid?: number;
  log: string;
}

export interface PodState {
  namespace: string;
  name: string;
  node: string;
  index: number;
  ip: string;
  netns: string;
  netnsPath: string;
  cgroup: string;
  /** node-side veth name (in the node netns). */
  peer: string;
  /** working directory of its containers: the directory of the lab file that defined it. */
  cwd: string;
  containers: ContainerState[];
}

/** The lab's controller: a process in the host netns, in `<lab cgroup>/controller`. */
export interface ControllerState {
  pid?: number;
  cgroup: string;
  stateDir: string;
  log: string;
  /** gRPC (discovery + certificates) on the lab's host IP, reachable from every node. */
  listen: string;
  /** Monitoring on the host's loopback: /metrics, /healthz/ready, /debug/status. */
  monitoring: string;
  trustDomain: string;
  workloadCertTTL: string;
}

/** The lab's relay: the cluster-wide Observer API, a process in the host netns, in `<lab cgroup>/relay`. */
export interface RelayState {
  pid?: number;
  cgroup: string;
  log: string;
  /** Where it serves (host loopback), e.g. 127.0.0.1:4245. */
  listen: string;
}

export interface ServiceState {
  namespace: string;
  name: string;
  vip: string;
}

export interface LabState {
  version: 1;
  name: string;
  status: 'creating' | 'up' | 'applying' | 'failed';
  createdAt: string;
  updatedAt: string;
  stateDir: string;
  cgroupRoot: string;
  pinRoot: string;
  nodeNetwork: string;
  serviceCIDR: string;
  clusterDomain: string;
  hostIP: string;
  hostLink: string;
  fabricNetns: string;
  agents: boolean;
  controller?: ControllerState;
  relay?: RelayState;
  /** The service load balancer's pins, once it is loaded. */
  lb?: LbPins;
  /** Hex keys currently written to the load balancer map. */
  lbKeys: string[];
  nodes: Record<string, NodeState>;
  pods: Record<string, PodState>;
  services: Record<string, ServiceState>;
  nextPodIndex: number;
  /** The desired objects as given (normalised, no status), for apply to merge into. */
  objects: Resource[];
  /** Per pod key `ns/name`: the source file it came from. */
  podSources: Record<string, string>;
  journal: JournalEntry[];
}

export function readState(names: LabNames): LabState | undefined {
  if (!existsSync(names.stateFile)) return undefined;
  try {
    return JSON.parse(readFileSync(names.stateFile, 'utf8')) as LabState;
  } catch (err) {
    throw new WeftError(ErrorCodes.LAB_STATE, `lab state ${names.stateFile} is unreadable (${(err as Error).message}); run "weft lab down" to clean up`);
  }
}

export function writeState(state: LabState): void {
  const names = labNames(state.name);
  mkdirSync(dirname(names.stateFile), { recursive: true });
  state.updatedAt = new Date().toISOString();
  const tmp = `${names.stateFile}.tmp`;
  writeFileSync(tmp, JSON.stringify(state, null, 2) + '\n');
  renameSync(tmp, names.stateFile);
}

/** Records an object in the journal and saves the state, before the caller creates it. */
export function journal(state: LabState, entry: JournalEntry): void {
  const same = state.journal.some((e) => JSON.stringify(e) === JSON.stringify(entry));
  if (!same) {
    state.journal.push(entry);
    writeState(state);
  }
}

export function podKey(namespace: string, name: string): string {
  return `${namespace}/${name}`;
}

/** Records a cgroup in the journal, then creates it. */
export function mkCgroup(state: LabState, path: string): void {
  journal(state, { type: 'cgroup', path });
  mkdirSync(path, { recursive: true });
}

/** The state of a running lab (and its names); LAB_STATE when it is not running. */
export function mustState(name?: string): { state: LabState; names: LabNames } {
  const n = resolveLabName(name);
  const names = labNames(n);
  const state = readState(names);
  if (!state) throw new WeftError(ErrorCodes.LAB_STATE, `lab "${n}" is not running (no ${names.stateFile})`);
  return { state, names };
}

/** `ns/name`, or `name` in namespace default (as kubectl reads it). */
export function namespaced(target: string): string {
  return target.includes('/') ? target : podKey('default', target);
}

export function findPod(state: LabState, target: string): PodState {
  const key = namespaced(target);
  const ps = state.pods[key];
  if (!ps) throw new WeftError(ErrorCodes.USAGE, `no pod ${key} in lab "${state.name}" (pods: ${Object.keys(state.pods).join(', ') || 'none'})`);
  return ps;
}

export function findNode(state: LabState, name: string): NodeState {
  const n = state.nodes[name];
  if (!n) throw new WeftError(ErrorCodes.USAGE, `no node ${name} in lab "${state.name}" (nodes: ${Object.keys(state.nodes).join(', ')})`);
  return n;
}
