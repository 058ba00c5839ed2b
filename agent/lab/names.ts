// Every name the lab gives to something it creates, derived from the lab name, so that `lab down`
// can find all of it again — from state.json, or by name prefix after a crash.
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { WeftError, ErrorCodes } from '../errors.js';
import { NodePaths } from '../config.js';

export const DEFAULT_LAB_NAME = 'weft';
export const STATE_ROOT = process.env.WEFT_LAB_STATE_ROOT ?? '/run/weft/lab';
export const NETNS_DIR = '/var/run/netns';
export const ETC_NETNS = '/etc/netns';

const LAB_NAME = /^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$/;
const RESERVED_SEGMENTS = new Set(['node', 'pod', 'fabric']);

/** The lab name from an explicit option, else $WEFT_LAB, else `weft`; validated. */
export function resolveLabName(name?: string): string {
  const n = name ?? process.env.WEFT_LAB ?? DEFAULT_LAB_NAME;
  if (!LAB_NAME.test(n)) {
    throw new WeftError(ErrorCodes.USAGE, `invalid lab name "${n}": use 1-32 lower-case letters, digits and "-", starting and ending alphanumeric`);
  }
  // Names like "x-pod" would make prefix sweeps of lab "x" match this lab's namespaces.
  if (n.split('-').some((seg) => RESERVED_SEGMENTS.has(seg))) {
    throw new WeftError(ErrorCodes.USAGE, `invalid lab name "${n}": the words node, pod and fabric cannot be "-"-separated parts of it`);
  }
  return n;
}

export interface LabNames {
  lab: string;
  /** 6 hex chars of sha256(lab): the interface-name prefix is `wl<hash>` (8 chars). */
  hash: string;
  linkPrefix: string;
  stateDir: string;
  stateFile: string;
  logsDir: string;
  resourcesDir: string;
  /** /sys/fs/bpf/weft/<lab> */
  pinRoot: string;
  /** /sys/fs/bpf/weft/<lab>/lab — the lab's own programs and maps. */
  labPinDir: string;
  fabricNetns: string;
  /** host-side veth into the fabric (in the host netns). */
  hostLink: string;
  /** its peer in the fabric netns. */
  hostLinkPeer: string;
  nodeNetns(node: string): string;
  podNetns(namespace: string, pod: string): string;
  /** fabric-side peer of node #i's eth0. */
  nodeFabricPeer(index: number): string;
  /** node-side peer of pod #i's eth0 (in the node's netns). */
  podPeer(index: number): string;
  nodePinDir(node: string): string;
  /** The controller's state (its CA root) and log. */
  controllerDir: string;
  controllerLog: string;
  /** A node agent's credential toward the controller: node-cert.pem, node-key.pem, root-cert.pem. */
  nodeCredentialsDir(node: string): string;
  /** The node agent's own state directory (its pods) and its pod channel socket. */
  agentStateDir(node: string): string;
  podSocket(node: string): string;
  controllerCgroupRel: string;
  /** The relay's log and cgroup (host netns, like the controller). */
  relayLog: string;
  relayCgroupRel: string;
  /** cgroup paths relative to the cgroup2 mount. */
  cgroupRel: string;
  nodeCgroupRel(node: string): string;
  agentCgroupRel(node: string): string;
  podCgroupRel(node: string, namespace: string, pod: string): string;
  netnsPrefixes: string[];
}

export function labNames(lab: string): LabNames {
  const hash = createHash('sha256').update(lab).digest('hex').slice(0, 6);
  const linkPrefix = `wl${hash}`;
  const stateDir = join(STATE_ROOT, lab);
  const pinRoot = join(NodePaths.bpffs, lab);
  const cgroupRel = `weft-lab-${lab}`;
  return {
    lab,
    hash,
    linkPrefix,
    stateDir,
    stateFile: join(stateDir, 'state.json'),
    logsDir: join(stateDir, 'logs'),
    resourcesDir: join(stateDir, 'resources'),
    pinRoot,
    labPinDir: join(pinRoot, 'lab'),
    fabricNetns: `${lab}-fabric`,
    hostLink: `${linkPrefix}h`,
    hostLinkPeer: `${linkPrefix}f`,
    nodeNetns: (node) => `${lab}-node-${node}`,
    podNetns: (ns, pod) => `${lab}-pod-${ns}-${pod}`,
    nodeFabricPeer: (i) => `${linkPrefix}n${i}`,
    podPeer: (i) => `${linkPrefix}p${i}`,
    nodePinDir: (node) => join(pinRoot, node),
    controllerDir: join(stateDir, 'controller'),
    controllerLog: join(stateDir, 'logs', 'controller.log'),
    nodeCredentialsDir: (node) => join(stateDir, 'nodes', node),
    agentStateDir: (node) => join(stateDir, 'nodes', node, 'agent'),
    podSocket: (node) => join(stateDir, 'nodes', node, 'pods.sock'),
    controllerCgroupRel: `${cgroupRel}/controller`,
    relayLog: join(stateDir, 'logs', 'relay.log'),
    relayCgroupRel: `${cgroupRel}/relay`,
    cgroupRel,
    nodeCgroupRel: (node) => `${cgroupRel}/${node}`,
    agentCgroupRel: (node) => `${cgroupRel}/${node}/agent`,
    podCgroupRel: (node, ns, pod) => `${cgroupRel}/${node}/pods/${ns}_${pod}`,
    netnsPrefixes: [`${lab}-node-`, `${lab}-pod-`, `${lab}-fabric`],
  };
}

/** Does a netns (or /etc/netns entry) name belong to this lab? */
export function isLabNetns(names: LabNames, netns: string): boolean {
  return netns === names.fabricNetns || netns.startsWith(`${names.lab}-node-`) || netns.startsWith(`${names.lab}-pod-`);
}
