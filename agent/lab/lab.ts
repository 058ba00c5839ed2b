// The lab: a local Kubernetes-like cluster made of network namespaces, veths, bridges, routes and
// cgroup v2 groups, described by Kubernetes-style YAML. up / apply / down / status / exec, and the
// agent lifecycle (one agent per node, inside the node's netns).
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { stringify } from 'yaml';
import { createServer } from 'node:net';
import { writeNodeCredentials, writeObserverCredentials, writeRelayCredentials } from '../controller/index.js';
import { uninstallCapture } from '../datapath/capture.js';
import { ConfigError, ErrorCodes, WeftError, errorMessage } from '../errors.js';
import { createLogger } from '../log.js';
import { mustParseCidr, nthAddress } from '../registry/cidr.js';
import { loadFiles } from '../registry/load.js';
import { resourceKey, stripSource } from '../registry/parse.js';
import { cgroup2Root, ensureBpffs } from '../system/mounts.js';
import {
  Annotations,
  isEnrolled as isEnrolledLocal,
  type NamespaceResource,
  type NodeResource,
  type PodResource,
  type Resource,
  type ServiceResource,
  type WithSource,
} from '../registry/types.js';
import { writeApplied } from './applied.js';
import { lbObjectPath, loadLb, syncLbMap, type LbEntry } from './lb.js';
import { cliEntry, repoRoot } from '../system/assets.js';
import { buildModel, type LabModel } from './model.js';
import { DEFAULT_LAB_NAME, ETC_NETNS, NETNS_DIR, isLabNetns, labNames, resolveLabName, type LabNames } from './names.js';
import {
  addNodeRoute,
  addressOf,
  configureNode,
  configurePod,
  createFabric,
  createHostLink,
  createNodeNetns,
  createNetns,
  deleteLink,
  deleteNetns,
  etcNetnsDir,
  hostsFile,
  nextFree,
  resolvConf,
  writePodDns,
} from './net.js';
import { execInPod, httpStatus, startAgentProcess, startContainer, startHostProcess, stopPid, tail, waitListening, waitReady, type ExecOptions, type ExecResult } from './procs.js';
import { journal, podKey, readState, writeState, type ControllerState, type LabState, type NodeState, type PodState, type RelayState } from './state.js';
import { ObserverClient } from '../relay/client.js';
import { RELAY_PORT } from '../relay/server.js';
import { podChannelRequest, toRequest, type LocalPod } from '../node/pod-channel.js';
import { agentAdminGet } from '../node/admin-client.js';
import { cgroupPidsDeep, hostRoutes, killCgroupTree, linkNames, netnsList, pidAlive, requireRoot, rmdirCgroupTree, sleep } from './sys.js';

// WEFT_LAB_LOG_LEVEL quiets the lab's own log (the demo prints progress instead) without touching the agents'.
const log = createLogger('lab', { level: process.env.WEFT_LAB_LOG_LEVEL ?? process.env.WEFT_LOG_LEVEL ?? 'info' });

export const READINESS_PORT = 15021;
export const CONTROLLER_PORT = 15012;
export const FIRST_VIP_INDEX = 10;

export interface UpOptions {
  name?: string;
  /** Start one agent per node (default true). */
  agents?: boolean;
  /** How long to wait for every agent to be ready (default $WEFT_LAB_READY_TIMEOUT_MS or 60 s). */
  readyTimeoutMs?: number;
  /** Told of each milestone while the lab comes up (for people watching). */
  onProgress?: (message: string) => void;
}

export interface ApplyOptions {
  name?: string;
  /** Wait until every agent has enrolled the new pods (default true; false when the controller is
   * meant to be unavailable). */
  wait?: boolean;
}

function readyTimeout(opts?: { readyTimeoutMs?: number }): number {
  return opts?.readyTimeoutMs ?? Number(process.env.WEFT_LAB_READY_TIMEOUT_MS ?? 60_000);
}

// ---------------------------------------------------------------------------------------------
// up

export async function labUp(files: readonly string[], opts: UpOptions = {}): Promise<LabHandle> {
  const name = resolveLabName(opts.name);
  const names = labNames(name);
  if (files.length === 0) throw new WeftError(ErrorCodes.USAGE, 'lab up needs at least one file (-f FILE)');
  const existing = readState(names);
  if (existing) {
    throw new WeftError(ErrorCodes.LAB_STATE, `lab "${name}" is already ${existing.status} (state in ${names.stateDir}); ${downFirst(name)}`);
  }
  // Validate everything before creating anything.
  const resources = loadFiles(files);
  const model = buildModel(resources, { labName: name, hostRoutes: await hostRoutes(), requireNodes: true });
  requireRoot();
  const cgRoot = cgroup2Root();
  const leftovers = await findLeftovers(names);
  if (leftovers.length) {
    throw new WeftError(ErrorCodes.LAB_STATE, `lab "${name}" has leftovers of an earlier run (${leftovers.slice(0, 5).join(', ')}${leftovers.length > 5 ? ', …' : ''}); ${downFirst(name)}`);
  }
  lbObjectPath(); // throws now, before anything is created, if the load balancer is not built
  const agents = opts.agents ?? true;
  if (agents && !existsSync(agentEntry())) throw new WeftError(ErrorCodes.LAB, `${agentEntry()} is missing: build with "npx tsc -p ." (or start the lab with --no-agents)`);
  if (agents) await requirePortFree('127.0.0.1', RELAY_PORT); // the relay's port: fail before creating anything

  const nodeNetwork = model.nodeNetwork;
  const now = new Date().toISOString();
  const state: LabState = {
    version: 1,
    name,
    status: 'creating',
    createdAt: now,
    updatedAt: now,
    stateDir: names.stateDir,
    cgroupRoot: join(cgRoot, names.cgroupRel),
    pinRoot: names.pinRoot,
    nodeNetwork: nodeNetwork.text,
    serviceCIDR: model.serviceCIDR.text,
    clusterDomain: model.clusterDomain,
    hostIP: nthAddress(nodeNetwork, 1),
    hostLink: names.hostLink,
    fabricNetns: names.fabricNetns,
    agents,
    nodes: {},
    pods: {},
    services: {},
    nextPodIndex: 0,
    objects: [],
    podSources: {},
    journal: [{ type: 'dir', path: names.stateDir }],
    lbKeys: [],
  };
  mkdirSync(names.logsDir, { recursive: true });
  mkdirSync(names.resourcesDir, { recursive: true });
  writeState(state);
  log.info({ lab: name, stateDir: names.stateDir, nodes: model.nodes.length, pods: model.pods.length, services: model.services.length }, 'creating lab');
  const progress = opts.onProgress ?? (() => undefined);
  try {
    progress(`network: fabric bridge, ${model.nodes.length} nodes, their pod networks`);
    await createInfrastructure(state, names, model);
    if (agents) {
      // As on a real cluster, the node agents run before the pods: each pod is handed to its node's
      // agent (the CNI call) before its containers start, so its first packet is already meshed.
      progress('controller: CA, node credentials, discovery and certificates on :15012');
      await startController(state, names, model, readyTimeout(opts));
      progress(`agents: loading eBPF capture on ${Object.keys(state.nodes).join(', ')}`);
      await Promise.all(Object.values(state.nodes).map((n) => startAgentFor(state, names, n)));
      await Promise.all(Object.values(state.nodes).map((n) => waitAgentReady(state, n, readyTimeout(opts))));
    }
    progress(`pods: ${model.pods.length} network namespaces and cgroups, containers starting`);
    await reconcile(state, names, model);
    if (agents) {
      await Promise.all(
        Object.values(state.nodes).map(async (n) => {
          await waitAgentReady(state, n, readyTimeout(opts));
          progress(`agent on ${n.name} ready, its pods enrolled`);
        }),
      );
      progress('relay: every node\'s flows on localhost:4245');
      await startRelay(state, names, readyTimeout(opts));
    }
    state.status = 'up';
    writeState(state);
  } catch (err) {
    log.error({ lab: name, err: errorMessage(err) }, 'lab up failed; removing what was created');
    state.status = 'failed';
    writeState(state);
    try {
      await labDown({ name });
    } catch (downErr) {
      log.error({ lab: name, err: errorMessage(downErr) }, 'cleanup after a failed lab up was incomplete');
    }
    throw err;
  }
  log.info({ lab: name, stateDir: names.stateDir }, 'lab is up');
  return new LabHandle(name);
}

function downFirst(name: string): string {
  return `run "weft lab down${name === DEFAULT_LAB_NAME ? '' : ` --name ${name}`}" first`;
}

/** Things of this lab that exist on the machine without a state file (an earlier crash). */
async function findLeftovers(names: LabNames): Promise<string[]> {
  const out: string[] = [];
  for (const ns of await netnsList()) if (isLabNetns(names, ns)) out.push(`netns ${ns}`);
  for (const l of await linkNames()) if (l.startsWith(names.linkPrefix)) out.push(`link ${l}`);
  const cg = join(cgroup2Root(), names.cgroupRel);
  if (existsSync(cg)) out.push(`cgroup ${cg}`);
  if (existsSync(names.pinRoot)) out.push(`bpf pins ${names.pinRoot}`);
  if (existsSync(ETC_NETNS)) for (const e of readdirSync(ETC_NETNS)) if (isLabNetns(names, e)) out.push(`${join(ETC_NETNS, e)}`);
  if (existsSync(names.stateDir)) out.push(`state dir ${names.stateDir}`);
  return out;
}

function mkCgroup(state: LabState, path: string): void {
  journal(state, { type: 'cgroup', path });
  mkdirSync(path, { recursive: true });
}

async function createInfrastructure(state: LabState, names: LabNames, model: LabModel): Promise<void> {
  ensureBpffs();
  mkCgroup(state, state.cgroupRoot);
  const cg = cgroup2Root();

  journal(state, { type: 'netns', name: names.fabricNetns });
  await createFabric(names.fabricNetns);
  journal(state, { type: 'link', name: names.hostLink });
  await createHostLink(names.fabricNetns, names.hostLink, names.hostLinkPeer, state.hostIP, model.nodeNetwork.prefix);

  model.nodes.forEach((n, i) => {
    const name = n.metadata.name;
    state.nodes[name] = {
      name,
      index: i,
      ip: nthAddress(model.nodeNetwork, i + 2),
      podCIDR: n.spec.podCIDR,
      gateway: addressOf(n.spec.podCIDR, 1),
      netns: names.nodeNetns(name),
      netnsPath: join(NETNS_DIR, names.nodeNetns(name)),
      cgroup: join(cg, names.nodeCgroupRel(name)),
      agentCgroup: join(cg, names.agentCgroupRel(name)),
      fabricPeer: names.nodeFabricPeer(i),
      bpffs: names.nodePinDir(name),
      agentLog: join(names.logsDir, `agent-${name}.log`),
    };
  });
  writeState(state);
  for (const node of Object.values(state.nodes)) {
    mkCgroup(state, node.cgroup);
    mkCgroup(state, node.agentCgroup);
    mkCgroup(state, join(node.cgroup, 'pods'));
    journal(state, { type: 'netns', name: node.netns });
    await createNodeNetns(node.netns);
    await configureNode({
      netns: node.netns,
      fabric: names.fabricNetns,
      fabricPeer: node.fabricPeer,
      ip: node.ip,
      prefix: model.nodeNetwork.prefix,
      podCIDR: node.podCIDR,
      gateway: node.gateway,
    });
  }
  for (const node of Object.values(state.nodes)) {
    for (const other of Object.values(state.nodes)) {
      if (other.name !== node.name) await addNodeRoute(node.netns, other.podCIDR, other.ip);
    }
  }
  journal(state, { type: 'pin', path: names.pinRoot });
  mkdirSync(names.pinRoot, { recursive: true });
}

// ---------------------------------------------------------------------------------------------
// reconcile: pods, services, DNS, load balancer, resources file, containers (used by up and apply)

function specOf(p: PodResource): string {
  return JSON.stringify({ nodeName: p.spec.nodeName, containers: p.spec.containers });
}

async function reconcile(state: LabState, names: LabNames, model: LabModel, sources: Map<string, string> = new Map()): Promise<void> {
  const previous = new Map(state.objects.map((o) => [resourceKey(o), o]));
  const toStart: PodState[] = [];

  for (const pod of model.pods) {
    const key = podKey(pod.metadata.namespace, pod.metadata.name);
    let ps: PodState | undefined = state.pods[key];
    const prev = previous.get(resourceKey(pod)) as PodResource | undefined;
    const changed = !prev || specOf(prev) !== specOf(pod);
    if (ps && ps.node !== pod.spec.nodeName) {
      log.info({ pod: key, from: ps.node, to: pod.spec.nodeName }, 'pod moved to another node; recreating it');
      await destroyPod(state, names, ps);
      delete state.pods[key];
      ps = undefined;
    } else if (ps && changed) {
      log.info({ pod: key }, 'pod spec changed; restarting its containers');
      await killPodProcesses(ps);
    }
    const cwd = dirname(sources.get(key) ?? pod.source.file);
    if (!ps) {
      ps = await createPod(state, names, model, pod, cwd);
    } else if (sources.has(key)) {
      ps.cwd = cwd;
    }
    state.podSources[key] = sources.get(key) ?? state.podSources[key] ?? pod.source.file;
    if (!ps.containers.length || changed || !ps.containers.some((c) => c.pid && pidAlive(c.pid))) toStart.push(ps);
  }

  // Services: stable VIPs (an explicit clusterIP wins), first .10 of the service CIDR.
  const taken = new Set(Object.values(state.services).map((s) => s.vip));
  for (const svc of model.services) {
    const key = podKey(svc.metadata.namespace, svc.metadata.name);
    const cur = state.services[key];
    let vip: string | undefined = svc.spec.clusterIP ?? cur?.vip;
    if (vip && cur?.vip !== vip) {
      const owner = Object.entries(state.services).find(([k, s]) => s.vip === vip && k !== key);
      if (owner) throw new WeftError(ErrorCodes.LAB, `clusterIP ${vip} of service ${key} is already used by service ${owner[0]}`);
    }
    if (!vip) {
      vip = nextFree(state.serviceCIDR, FIRST_VIP_INDEX, taken);
      if (!vip) throw new WeftError(ErrorCodes.LAB, `the service CIDR ${state.serviceCIDR} is full`);
    }
    taken.add(vip);
    state.services[key] = { namespace: svc.metadata.namespace, name: svc.metadata.name, vip };
  }

  state.objects = [
    ...(model.config ? [stripSource(model.config)] : []),
    ...model.nodes.map((n) => stripSource(n)),
    ...[...model.namespaces.values()].filter((n) => (n as Partial<WithSource<NamespaceResource>>).source).map((n) => stripSource(n)),
    ...model.pods.map((p) => stripSource(p)),
    ...model.services.map((s) => stripSource(s)),
  ];
  writeState(state);

  // DNS of every pod (service set or VIPs may have changed).
  const svcList = Object.values(state.services);
  for (const ps of Object.values(state.pods)) {
    journal(state, { type: 'etcnetns', path: etcNetnsDir(ps.netns) });
    writePodDns(ps.netns, hostsFile({ namespace: ps.namespace, name: ps.name, ip: ps.ip }, svcList, state.clusterDomain), resolvConf(ps.namespace, state.clusterDomain));
  }

  // kube-proxy.
  if (!state.lb) {
    state.lb = loadLb(state.cgroupRoot, names.labPinDir, log);
    writeState(state);
  }
  state.lbKeys = syncLbMap(state.lb, lbEntries(state, model), state.lbKeys);
  writeState(state);

  writeResources(state, names, model);
  // Policies go to the controller as objects of their own (the files `weft apply` writes too).
  writeApplied(names.resourcesDir, model.policies);

  for (const ps of toStart) await startPodContainers(state, names, model, ps);
  writeState(state);
  // Like a readiness probe: every declared TCP containerPort must be listening before up/apply return.
  await Promise.all(
    toStart.flatMap((ps) => {
      const pod = model.pods.find((p) => p.metadata.namespace === ps.namespace && p.metadata.name === ps.name)!;
      return pod.spec.containers.map((c, i) => {
        const ports = (c.ports ?? []).filter((p) => (p.protocol ?? 'TCP') === 'TCP').map((p) => p.containerPort);
        const cs = ps.containers[i];
        if (!ports.length || !cs?.pid) return Promise.resolve();
        return waitListening(cs.pid, ports, cs.log, Number(process.env.WEFT_LAB_POD_READY_TIMEOUT_MS ?? 30_000), `container ${c.name} of pod ${ps.namespace}/${ps.name}`);
      });
    }),
  );
}

/** Does a service selector pick this object (every selector label present with the same value)? */
function selects(selector: Record<string, string>, o: Resource): boolean {
  return Object.entries(selector).every(([k, v]) => o.metadata.labels?.[k] === v);
}

function lbEntries(state: LabState, model: LabModel): LbEntry[] {
  const entries: LbEntry[] = [];
  for (const svc of model.services) {
    const vip = state.services[podKey(svc.metadata.namespace, svc.metadata.name)]!.vip;
    const selector = svc.spec.selector;
    const pods = selector
      ? model.pods
          .filter((p) => p.metadata.namespace === svc.metadata.namespace)
          .filter((p) => selects(selector, p))
          .sort((a, b) => a.metadata.name.localeCompare(b.metadata.name))
      : [];
    for (const port of svc.spec.ports) {
      entries.push({
        vip,
        port: port.port,
        backends: pods.map((p) => ({ ip: state.pods[podKey(p.metadata.namespace, p.metadata.name)]!.ip, port: port.targetPort ?? port.port })),
      });
    }
  }
  return entries;
}

async function createPod(state: LabState, names: LabNames, model: LabModel, pod: WithSource<PodResource>, cwd: string): Promise<PodState> {
  const key = podKey(pod.metadata.namespace, pod.metadata.name);
  const node = state.nodes[pod.spec.nodeName];
  if (!node) throw new WeftError(ErrorCodes.LAB, `pod ${key}: node ${pod.spec.nodeName} does not exist`);
  const taken = new Set(Object.values(state.pods).filter((p) => p.node === node.name).map((p) => p.ip));
  const podIP = nextFree(node.podCIDR, 2, taken);
  if (!podIP) throw new WeftError(ErrorCodes.LAB, `node ${node.name}'s pod CIDR ${node.podCIDR} is full`);
  const index = state.nextPodIndex++;
  const netns = names.podNetns(pod.metadata.namespace, pod.metadata.name);
  const ps: PodState = {
    namespace: pod.metadata.namespace,
    name: pod.metadata.name,
    node: node.name,
    index,
    ip: podIP,
    netns,
    netnsPath: join(NETNS_DIR, netns),
    cgroup: join(cgroup2Root(), names.podCgroupRel(node.name, pod.metadata.namespace, pod.metadata.name)),
    peer: names.podPeer(index),
    cwd,
    containers: [],
  };
  state.pods[key] = ps;
  mkCgroup(state, ps.cgroup);
  journal(state, { type: 'netns', name: netns });
  await createNetns(netns);
  await configurePod({ netns, nodeNetns: node.netns, peer: ps.peer, ip: podIP, prefix: mustParseCidr(node.podCIDR).prefix, gateway: node.gateway });
  writeState(state);
  log.info({ pod: key, node: node.name, ip: podIP }, 'pod network ready');
  // The runtime's CNI call, before any container runs: the agent attaches capture, or says no.
  if (state.agents && node.agentPid !== undefined && pidAlive(node.agentPid)) {
    const nsLabels = model.namespaces.get(pod.metadata.namespace)?.metadata.labels ?? {};
    const local: LocalPod = { namespace: ps.namespace, name: ps.name, containerId: `lab-${state.name}-${index}`, netns: ps.netnsPath, ips: [podIP], labels: pod.metadata.labels ?? {}, namespaceLabels: nsLabels };
    const r = await podChannelRequest(names.podSocket(node.name), 'add', toRequest(local));
    if (r.status !== 200) throw new WeftError(ErrorCodes.LAB, `pod ${key}: the agent of node ${node.name} refused it: ${String(r.body.error)}`);
    log.info({ pod: key, capture: r.body.state }, 'pod handed to its node agent');
  }
  return ps;
}

async function startPodContainers(state: LabState, names: LabNames, model: LabModel, ps: PodState): Promise<void> {
  const pod = model.pods.find((p) => p.metadata.namespace === ps.namespace && p.metadata.name === ps.name);
  if (!pod) return;
  const node = state.nodes[ps.node]!;
  ps.containers = [];
  for (const c of pod.spec.containers) {
    const logFile = join(names.logsDir, `${ps.namespace}_${ps.name}_${c.name}.log`);
    const env: NodeJS.ProcessEnv = { ...process.env };
    for (const e of c.env ?? []) env[e.name] = e.value;
    Object.assign(env, { POD_NAME: ps.name, POD_NAMESPACE: ps.namespace, POD_IP: ps.ip, NODE_NAME: node.name });
    const pid = await startContainer({ cgroup: ps.cgroup, netns: ps.netns, command: c.command, cwd: ps.cwd, env, log: logFile });
    ps.containers.push({ name: c.name, pid, log: logFile });
    log.info({ pod: `${ps.namespace}/${ps.name}`, container: c.name, pid }, 'container started');
  }
  writeState(state);
}

async function killPodProcesses(ps: PodState): Promise<void> {
  killCgroupTree(ps.cgroup);
  await waitCgroupEmpty(ps.cgroup, 5000);
  ps.containers = [];
}

async function destroyPod(state: LabState, names: LabNames, ps: PodState): Promise<void> {
  await killPodProcesses(ps);
  const node = state.nodes[ps.node];
  if (node?.agentPid !== undefined && pidAlive(node.agentPid)) {
    await podChannelRequest(names.podSocket(node.name), 'del', { podNamespace: ps.namespace, podName: ps.name, containerId: `lab-${state.name}-${ps.index}` }).catch((err: unknown) =>
      log.warn({ pod: `${ps.namespace}/${ps.name}`, err: errorMessage(err) }, 'the node agent did not take the pod deletion'),
    );
  }
  await deleteNetns(ps.netns);
  rmSync(etcNetnsDir(ps.netns), { recursive: true, force: true });
  rmdirCgroupTree(ps.cgroup);
  writeState(state);
}

async function waitCgroupEmpty(path: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (cgroupPidsDeep(path).length === 0) return true;
    await sleep(25);
  }
  return cgroupPidsDeep(path).length === 0;
}

/** `<state>/resources/lab.yaml`: what a cluster's API server would hold (status filled in). Atomic rewrite. */
function writeResources(state: LabState, names: LabNames, model: LabModel): void {
  const docs: Resource[] = [];
  for (const n of model.nodes) {
    const ns = state.nodes[n.metadata.name]!;
    const node: NodeResource = { ...stripSource(n), status: { addresses: [{ type: 'InternalIP', address: ns.ip }] } };
    docs.push(node);
  }
  for (const ns of [...model.namespaces.values()].sort((a, b) => a.metadata.name.localeCompare(b.metadata.name))) {
    docs.push(stripSource(ns as WithSource<NamespaceResource>));
  }
  for (const p of model.pods) {
    const ps = state.pods[podKey(p.metadata.namespace, p.metadata.name)]!;
    const node = state.nodes[ps.node]!;
    const base = stripSource(p);
    const pod: PodResource = {
      ...base,
      metadata: { ...base.metadata, annotations: { ...base.metadata.annotations, [Annotations.netns]: ps.netnsPath, [Annotations.cgroup]: ps.cgroup } },
      status: { podIP: ps.ip, hostIP: node.ip, phase: 'Running' },
    };
    docs.push(pod);
  }
  for (const s of model.services) {
    const base = stripSource(s);
    const svc: ServiceResource = { ...base, spec: { ...base.spec, clusterIP: state.services[podKey(s.metadata.namespace, s.metadata.name)]!.vip } };
    docs.push(svc);
  }
  const text =
    `# Generated by weft lab "${state.name}" — the lab's cluster state (rewritten on up and apply).\n` +
    docs.map((d) => stringify(d, { lineWidth: 0 })).join('---\n');
  mkdirSync(names.resourcesDir, { recursive: true });
  const tmp = join(names.resourcesDir, '.lab.yaml.tmp');
  writeFileSync(tmp, text);
  renameSync(tmp, join(names.resourcesDir, 'lab.yaml'));
}

// ---------------------------------------------------------------------------------------------
// apply

export async function labApply(files: readonly string[], opts: ApplyOptions = {}): Promise<LabHandle> {
  requireRoot();
  const name = resolveLabName(opts.name);
  const names = labNames(name);
  const state = readState(names);
  if (!state) throw new WeftError(ErrorCodes.LAB_STATE, `lab "${name}" is not running (no ${names.stateFile}); run "weft lab up" first`);
  if (state.status !== 'up' && state.status !== 'applying') {
    throw new WeftError(ErrorCodes.LAB_STATE, `lab "${name}" is ${state.status}; run "weft lab down" and "weft lab up" again`);
  }
  if (files.length === 0) throw new WeftError(ErrorCodes.USAGE, 'lab apply needs at least one file (-f FILE)');
  const incoming = loadFiles(files);
  // kubectl-apply semantics: objects in the files are created or replaced; others stay as they are.
  const merged = new Map<string, WithSource<Resource>>();
  for (const o of state.objects) {
    const key = resourceKey(o);
    const file = o.kind === 'Pod' ? (state.podSources[podKey(o.metadata.namespace!, o.metadata.name)] ?? '(running lab)') : '(running lab)';
    merged.set(key, { ...o, source: { file, line: 0 } } as WithSource<Resource>);
  }
  const sources = new Map<string, string>();
  for (const o of incoming) {
    merged.set(resourceKey(o), o);
    if (o.kind === 'Pod') sources.set(podKey(o.metadata.namespace, o.metadata.name), o.source.file);
  }
  const model = buildModel([...merged.values()], {
    labName: name,
    running: {
      nodes: Object.fromEntries(Object.values(state.nodes).map((n) => [n.name, { podCIDR: n.podCIDR }])),
      nodeNetwork: state.nodeNetwork,
      serviceCIDR: state.serviceCIDR,
      clusterDomain: state.clusterDomain,
      trustDomain: state.controller?.trustDomain,
    },
  });
  state.status = 'applying';
  writeState(state);
  await reconcile(state, names, model, sources);
  // Like `kubectl apply` followed by a rollout wait: new pods are enrolled before apply returns.
  if (state.agents && opts.wait !== false) {
    await Promise.all(Object.values(state.nodes).filter((n) => n.agentPid !== undefined && pidAlive(n.agentPid)).map((n) => waitAgentReady(state, n, readyTimeout())));
  }
  state.status = 'up';
  writeState(state);
  log.info({ lab: name, objects: incoming.length }, 'applied');
  return new LabHandle(name);
}

// ---------------------------------------------------------------------------------------------
// down

export interface DownReport {
  lab: string;
  removed: string[];
  /** Things that could not be removed (down throws if this is not empty). */
  failed: string[];
}

/** Removes everything of the lab: from its state journal, and by name prefix (works with no state at all). */
export async function labDown(opts: { name?: string } = {}): Promise<DownReport> {
  requireRoot();
  const name = resolveLabName(opts.name);
  const names = labNames(name);
  let state: LabState | undefined;
  try {
    state = readState(names);
  } catch (err) {
    log.warn({ lab: name, err: errorMessage(err) }, 'state unreadable; removing by name');
  }
  const report: DownReport = { lab: name, removed: [], failed: [] };
  let cgRoot: string | undefined;
  try {
    cgRoot = join(cgroup2Root(), names.cgroupRel);
  } catch {
    cgRoot = state?.cgroupRoot;
  }

  // 1. Processes: everything in the lab's cgroup tree (agents, containers, exec'd commands). First,
  // because a process holding a BPF link keeps it alive after its pin is gone.
  const cgroups = new Set<string>([...(cgRoot ? [cgRoot] : []), ...(state?.journal ?? []).filter((e) => e.type === 'cgroup').map((e) => (e as { path: string }).path)]);
  for (const cg of cgroups) killCgroupTree(cg);
  for (const cg of cgroups) {
    if (existsSync(cg) && !(await waitCgroupEmpty(cg, 10_000))) report.failed.push(`processes still running in ${cg}: ${cgroupPidsDeep(cg).join(', ')}`);
  }

  // 2. BPF pins: <pinRoot>/lab (the load balancer) and <pinRoot>/<node> (each agent's maps, cgroup
  // links and per-pod sk_lookup links), all in the agents' layout. Every pinned link is detached
  // before its pin goes: removing a pin alone detaches a link only once nothing holds it any more,
  // and the kernel frees it some time later.
  if (existsSync(names.pinRoot)) {
    try {
      let detached = 0;
      for (const dir of readdirSync(names.pinRoot)) detached += uninstallCapture(join(names.pinRoot, dir), log).detached;
      rmSync(names.pinRoot, { recursive: true, force: true });
      report.removed.push(`pins ${names.pinRoot} (${detached} links detached)`);
    } catch (err) {
      report.failed.push(`pins ${names.pinRoot}: ${errorMessage(err)}`);
    }
  }

  // 3. Network namespaces (pods first, then nodes, then the fabric), then host links.
  const nsNames = new Set<string>([
    ...(state?.journal ?? []).filter((e) => e.type === 'netns').map((e) => (e as { name: string }).name),
    ...(await netnsList()).filter((n) => isLabNetns(names, n)),
  ]);
  const order = (n: string): number => (n.startsWith(`${name}-pod-`) ? 0 : n.startsWith(`${name}-node-`) ? 1 : 2);
  for (const ns of [...nsNames].sort((a, b) => order(a) - order(b))) {
    if (!existsSync(join(NETNS_DIR, ns))) continue;
    await deleteNetns(ns);
    if (existsSync(join(NETNS_DIR, ns))) report.failed.push(`netns ${ns}`);
    else report.removed.push(`netns ${ns}`);
  }
  const links = new Set<string>([
    ...(state?.journal ?? []).filter((e) => e.type === 'link').map((e) => (e as { name: string }).name),
    ...(await linkNames()).filter((l) => l.startsWith(names.linkPrefix)),
  ]);
  const present = new Set(await linkNames());
  for (const l of links) {
    if (!present.has(l)) continue;
    await deleteLink(l);
    report.removed.push(`link ${l}`);
  }
  const still = (await linkNames()).filter((l) => l.startsWith(names.linkPrefix));
  for (const l of still) report.failed.push(`link ${l}`);

  // 4. /etc/netns entries.
  const etc = new Set<string>((state?.journal ?? []).filter((e) => e.type === 'etcnetns').map((e) => (e as { path: string }).path));
  if (existsSync(ETC_NETNS)) for (const e of readdirSync(ETC_NETNS)) if (isLabNetns(names, e)) etc.add(join(ETC_NETNS, e));
  for (const p of etc) {
    if (!existsSync(p)) continue;
    try {
      rmSync(p, { recursive: true, force: true });
      report.removed.push(p);
    } catch (err) {
      report.failed.push(`${p}: ${errorMessage(err)}`);
    }
  }

  // 5. cgroups, depth-first (retry briefly: killed processes take a moment to leave).
  for (const cg of cgroups) {
    if (!existsSync(cg)) continue;
    let failed: string[] = [];
    for (let i = 0; i < 40; i++) {
      failed = rmdirCgroupTree(cg);
      if (!failed.length) break;
      await sleep(50);
    }
    if (failed.length) report.failed.push(...failed.map((f) => `cgroup ${f}`));
    else report.removed.push(`cgroup ${cg}`);
  }

  // 6. The state directory (last: it is the journal).
  if (report.failed.length === 0 && existsSync(names.stateDir)) {
    rmSync(names.stateDir, { recursive: true, force: true });
    report.removed.push(`state ${names.stateDir}`);
  }
  if (report.failed.length) {
    log.error({ lab: name, failed: report.failed }, 'lab down incomplete');
    throw new WeftError(ErrorCodes.LAB, `lab "${name}" could not be removed completely:\n  ${report.failed.join('\n  ')}`);
  }
  log.info({ lab: name, removed: report.removed.length }, 'lab removed');
  return report;
}

// ---------------------------------------------------------------------------------------------
// controller

/** A free TCP port on the host's loopback (for the controller's monitoring endpoint). */
function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

/**
 * The lab's control plane: a CA in `<state>/controller`, one node credential per node in
 * `<state>/nodes/<node>`, and the controller process in the host netns (cgroup `<lab>/controller`),
 * serving on the lab's host IP, which every node reaches. Resolves once it is ready.
 */
async function startController(state: LabState, names: LabNames, model: LabModel, timeoutMs: number): Promise<void> {
  for (const node of Object.values(state.nodes)) {
    await writeNodeCredentials({ stateDir: names.controllerDir, trustDomain: model.trustDomain, node: node.name, outDir: names.nodeCredentialsDir(node.name) });
  }
  const c: ControllerState = {
    cgroup: join(cgroup2Root(), names.controllerCgroupRel),
    stateDir: names.controllerDir,
    log: names.controllerLog,
    listen: `${state.hostIP}:${CONTROLLER_PORT}`,
    monitoring: `127.0.0.1:${await freeLoopbackPort()}`,
    trustDomain: model.trustDomain,
    workloadCertTTL: model.workloadCertTTL,
  };
  state.controller = c;
  mkCgroup(state, c.cgroup);
  await runController(state, names, timeoutMs);
}

/** Start the lab's controller process from its recorded settings (first start or a restart). */
async function runController(state: LabState, names: LabNames, timeoutMs: number): Promise<void> {
  const c = state.controller;
  if (!c) throw new WeftError(ErrorCodes.LAB_STATE, `lab "${state.name}" has no controller`);
  const argv = [
    process.execPath,
    agentEntry(),
    'controller',
    '--source',
    `dir:${names.resourcesDir}`,
    '--state',
    c.stateDir,
    '--listen',
    c.listen,
    '--monitoring',
    c.monitoring,
    '--trust-domain',
    c.trustDomain,
    '--max-cert-ttl',
    c.workloadCertTTL,
    '--serving-ip',
    state.hostIP,
  ];
  c.pid = await startHostProcess({ cgroup: c.cgroup, argv, env: { ...process.env, WEFT_LAB: state.name }, log: c.log, cwd: repoRoot() });
  writeState(state);
  log.info({ lab: state.name, pid: c.pid, listen: c.listen, monitoring: c.monitoring, log: c.log }, 'controller started');
  await waitReady(controllerReadyUrl(c), c.pid, c.log, timeoutMs, 'controller');
  log.info({ lab: state.name }, 'controller ready');
}

export function controllerReadyUrl(c: ControllerState): string {
  return `http://${c.monitoring}/healthz/ready`;
}

// ---------------------------------------------------------------------------------------------
// relay

export const RELAY_LISTEN = `127.0.0.1:${RELAY_PORT}`;

/** Fails with a clear message when something already listens where the relay must. */
function requirePortFree(host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', (err: NodeJS.ErrnoException) => {
      const why = err.code === 'EADDRINUSE' ? 'is already in use (another lab, or a hubble relay / port-forward?)' : `cannot be used: ${err.message}`;
      reject(new WeftError(ErrorCodes.LAB, `${host}:${port} ${why}; the lab's relay serves the Observer API there ("weft observe" reads it): free the port and run "weft lab up" again`));
    });
    s.listen(port, host, () => s.close(() => resolve()));
  });
}

/** Whether the relay answers ServerStatus. */
async function relayAnswers(listen: string, timeoutMs: number): Promise<boolean> {
  const client = new ObserverClient(listen);
  try {
    await client.serverStatus(timeoutMs);
    return true;
  } catch {
    return false;
  } finally {
    client.close();
  }
}

/**
 * The lab's relay: `weft relay` in the host netns (cgroup `<lab>/relay`), on 127.0.0.1:4245,
 * discovering the nodes (their Observer on <node IP>:4244, mutual TLS) from the controller, with its
 * own client credential from the lab's CA in `<state>/relay`. Resolves once it answers ServerStatus.
 */
async function startRelay(state: LabState, names: LabNames, timeoutMs: number): Promise<void> {
  const c = state.controller;
  if (!c) throw new WeftError(ErrorCodes.LAB_STATE, `lab "${state.name}" has no controller; the relay discovers nodes through it`);
  await requirePortFree('127.0.0.1', RELAY_PORT);
  const r: RelayState = { cgroup: join(cgroup2Root(), names.relayCgroupRel), log: names.relayLog, listen: RELAY_LISTEN };
  state.relay = r;
  mkCgroup(state, r.cgroup);
  // The nodes' Observer APIs take only the relay's identity over TLS: it gets its credential from the mesh CA.
  const creds = await writeRelayCredentials({ stateDir: names.controllerDir, trustDomain: c.trustDomain, outDir: join(names.stateDir, 'relay') });
  const argv = [
    process.execPath,
    agentEntry(),
    'relay',
    '--listen',
    r.listen,
    '--controller-monitoring',
    `http://${c.monitoring}`,
    '--refresh',
    '5',
    '--client-cert',
    creds.certFile,
    '--client-key',
    creds.keyFile,
    '--root-cert',
    creds.rootFile,
  ];
  r.pid = await startHostProcess({ cgroup: r.cgroup, argv, env: { ...process.env, WEFT_LAB: state.name }, log: r.log, cwd: repoRoot() });
  writeState(state);
  log.info({ lab: state.name, pid: r.pid, listen: r.listen, log: r.log }, 'relay started');
  const deadline = Date.now() + timeoutMs;
  while (!(await relayAnswers(r.listen, 3000))) {
    if (!pidAlive(r.pid)) throw new WeftError(ErrorCodes.LAB, `relay (pid ${r.pid}) exited before it was ready; last lines of ${r.log}:\n${tail(r.log)}`);
    if (Date.now() > deadline) throw new WeftError(ErrorCodes.LAB, `relay did not answer ServerStatus on ${r.listen} within ${timeoutMs} ms; last lines of ${r.log}:\n${tail(r.log)}`);
    await sleep(200);
  }
  log.info({ lab: state.name }, 'relay ready');
}

// ---------------------------------------------------------------------------------------------
// agents

/** The agent entry point, `<repo>/dist/agent/cli/main.js` ($WEFT_AGENT_ENTRY overrides it). */
export function agentEntry(): string {
  return cliEntry();
}

async function startAgentFor(state: LabState, names: LabNames, node: NodeState, extraArgs: readonly string[] = []): Promise<void> {
  mkdirSync(node.bpffs, { recursive: true });
  const controller = state.controller;
  if (!controller) throw new WeftError(ErrorCodes.LAB_STATE, `lab "${state.name}" has no controller; agents need one (run "weft lab down" and "weft lab up")`);
  const creds = names.nodeCredentialsDir(node.name);
  // The Observer API: plaintext on the node's loopback, mutual TLS on the node's IP (the relay's way in),
  // served with a certificate from the lab's CA naming the node.
  const observer = await writeObserverCredentials({ stateDir: names.controllerDir, trustDomain: controller.trustDomain, node: node.name, outDir: creds });
  const argv = [
    process.execPath,
    agentEntry(),
    'agent',
    '--node',
    node.name,
    '--controller',
    controller.listen,
    '--node-cert',
    join(creds, 'node-cert.pem'),
    '--node-key',
    join(creds, 'node-key.pem'),
    '--root-cert',
    join(creds, 'root-cert.pem'),
    '--cert-ttl',
    controller.workloadCertTTL,
    '--trust-domain',
    controller.trustDomain,
    '--cgroup',
    node.cgroup,
    '--bpffs',
    node.bpffs,
    '--state-dir',
    names.agentStateDir(node.name),
    '--pod-socket',
    names.podSocket(node.name),
    '--observer-tls',
    '--observer-address',
    node.ip,
    '--observer-cert',
    observer.certFile,
    '--observer-key',
    observer.keyFile,
    ...extraArgs,
  ];
  const env: NodeJS.ProcessEnv = { ...process.env, WEFT_LAB: state.name, WEFT_NODE_NAME: node.name, WEFT_NODE_IP: node.ip };
  const pid = await startAgentProcess({ cgroup: node.agentCgroup, netnsPath: node.netnsPath, argv, env, log: node.agentLog, cwd: repoRoot() });
  node.agentPid = pid;
  writeState(state);
  log.info({ node: node.name, pid, log: node.agentLog }, 'agent started');
}

async function waitAgentReady(state: LabState, node: NodeState, timeoutMs: number): Promise<void> {
  if (!node.agentPid) throw new WeftError(ErrorCodes.LAB_STATE, `no agent is running on node ${node.name}`);
  await waitReady(readyUrl(node), node.agentPid, node.agentLog, timeoutMs, `agent of node ${node.name}`);
  log.info({ lab: state.name, node: node.name }, 'agent ready');
}

export function readyUrl(node: NodeState): string {
  return `http://${node.ip}:${READINESS_PORT}/healthz/ready`;
}

// ---------------------------------------------------------------------------------------------
// status, exec, handle

export interface LabStatus {
  name: string;
  stateDir: string;
  status: LabState['status'];
  createdAt: string;
  nodeNetwork: string;
  serviceCIDR: string;
  hostIP: string;
  loadBalancer: string;
  controller: { state: 'ready' | 'running' | 'stopped' | 'disabled'; pid?: number; listen?: string; monitoring?: string; trustDomain?: string; workloadCertTTL?: string; log?: string };
  relay: { state: 'ready' | 'running' | 'stopped' | 'disabled'; pid?: number; listen?: string; log?: string };
  nodes: Array<{ name: string; ip: string; podCIDR: string; netns: string; agentPid?: number; agent: 'ready' | 'running' | 'stopped' | 'disabled'; log: string }>;
  pods: Array<{ namespace: string; name: string; node: string; ip: string; netns: string; cgroup: string; phase: 'Running' | 'Stopped' | 'Partial'; enrolled: boolean; containers: Array<{ name: string; pid?: number; running: boolean; log: string }> }>;
  services: Array<{ namespace: string; name: string; clusterIP: string; ports: string[]; endpoints: string[] }>;
}

function mustState(name?: string): { state: LabState; names: LabNames } {
  const n = resolveLabName(name);
  const names = labNames(n);
  const state = readState(names);
  if (!state) throw new WeftError(ErrorCodes.LAB_STATE, `lab "${n}" is not running (no ${names.stateFile})`);
  return { state, names };
}

export async function labStatus(opts: { name?: string } = {}): Promise<LabStatus> {
  const { state } = mustState(opts.name);
  const nsLabels = new Map<string, Record<string, string> | undefined>();
  for (const o of state.objects) if (o.kind === 'Namespace') nsLabels.set(o.metadata.name, o.metadata.labels);
  const nodes = await Promise.all(
    Object.values(state.nodes).map(async (n) => {
      let agent: LabStatus['nodes'][number]['agent'] = 'disabled';
      if (n.agentPid !== undefined) {
        if (!pidAlive(n.agentPid)) agent = 'stopped';
        else agent = (await httpStatus(readyUrl(n), 500)) === 200 ? 'ready' : 'running';
      } else if (state.agents) agent = 'stopped';
      return { name: n.name, ip: n.ip, podCIDR: n.podCIDR, netns: n.netns, agentPid: n.agentPid, agent, log: n.agentLog };
    }),
  );
  const c = state.controller;
  let controller: LabStatus['controller'] = { state: 'disabled' };
  if (c) {
    const alive = c.pid !== undefined && pidAlive(c.pid);
    const ready = alive && (await httpStatus(controllerReadyUrl(c), 500)) === 200;
    controller = { state: ready ? 'ready' : alive ? 'running' : 'stopped', pid: c.pid, listen: c.listen, monitoring: c.monitoring, trustDomain: c.trustDomain, workloadCertTTL: c.workloadCertTTL, log: c.log };
  }
  const r = state.relay;
  let relay: LabStatus['relay'] = { state: 'disabled' };
  if (r) {
    const alive = r.pid !== undefined && pidAlive(r.pid);
    const ready = alive && (await relayAnswers(r.listen, 1000));
    relay = { state: ready ? 'ready' : alive ? 'running' : 'stopped', pid: r.pid, listen: r.listen, log: r.log };
  }
  const pods = Object.values(state.pods).map((p) => {
    const obj = state.objects.find((o) => o.kind === 'Pod' && o.metadata.namespace === p.namespace && o.metadata.name === p.name) as PodResource | undefined;
    const containers = p.containers.map((c) => ({ name: c.name, pid: c.pid, running: c.pid !== undefined && pidAlive(c.pid), log: c.log }));
    const running = containers.filter((c) => c.running).length;
    const ns: NamespaceResource = { apiVersion: 'v1', kind: 'Namespace', metadata: { name: p.namespace, labels: nsLabels.get(p.namespace) } };
    return {
      namespace: p.namespace,
      name: p.name,
      node: p.node,
      ip: p.ip,
      netns: p.netns,
      cgroup: p.cgroup,
      phase: (running === containers.length && running > 0 ? 'Running' : running === 0 ? 'Stopped' : 'Partial') as 'Running' | 'Stopped' | 'Partial',
      enrolled: obj ? isEnrolledLocal(obj, ns) : false,
      containers,
    };
  });
  const services = Object.values(state.services).map((s) => {
    const obj = state.objects.find((o) => o.kind === 'Service' && o.metadata.namespace === s.namespace && o.metadata.name === s.name) as ServiceResource | undefined;
    const sel = obj?.spec.selector;
    const backends = sel
      ? (state.objects.filter((o) => o.kind === 'Pod' && o.metadata.namespace === s.namespace && selects(sel, o)) as PodResource[])
      : [];
    const ports = (obj?.spec.ports ?? []).map((p) => `${p.port}${p.targetPort && p.targetPort !== p.port ? `→${p.targetPort}` : ''}/${p.protocol ?? 'TCP'}`);
    const endpoints = backends.map((b) => state.pods[podKey(b.metadata.namespace, b.metadata.name)]?.ip).filter((x): x is string => !!x);
    return { namespace: s.namespace, name: s.name, clusterIP: s.vip, ports, endpoints };
  });
  return {
    name: state.name,
    stateDir: state.stateDir,
    status: state.status,
    createdAt: state.createdAt,
    nodeNetwork: state.nodeNetwork,
    serviceCIDR: state.serviceCIDR,
    hostIP: state.hostIP,
    loadBalancer: state.lb ? state.lb.linkPin : 'not loaded',
    controller,
    relay,
    nodes,
    pods,
    services,
  };
}

/** Runs argv inside a pod (its cgroup and netns, with its /etc/netns files); resolves with the exit code. */
export async function labExec(name: string | undefined, target: string, argv: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  requireRoot();
  const { state } = mustState(name);
  const ps = findPod(state, target);
  if (argv.length === 0) throw new WeftError(ErrorCodes.USAGE, 'lab exec needs a command after --');
  return execInPod(ps.cgroup, ps.netns, argv, { cwd: ps.cwd, ...opts });
}

/** `ns/name`, or `name` in namespace default (as kubectl reads it). */
function namespaced(target: string): string {
  return target.includes('/') ? target : podKey('default', target);
}

function findPod(state: LabState, target: string): PodState {
  const key = namespaced(target);
  const ps = state.pods[key];
  if (!ps) throw new WeftError(ErrorCodes.USAGE, `no pod ${key} in lab "${state.name}" (pods: ${Object.keys(state.pods).join(', ') || 'none'})`);
  return ps;
}

function findNode(state: LabState, name: string): NodeState {
  const n = state.nodes[name];
  if (!n) throw new WeftError(ErrorCodes.USAGE, `no node ${name} in lab "${state.name}" (nodes: ${Object.keys(state.nodes).join(', ')})`);
  return n;
}

/** A running lab: its state (re-read on every access) and agent lifecycle controls for tests. */
export class LabHandle {
  readonly name: string;
  readonly names: LabNames;
  constructor(name?: string) {
    this.name = resolveLabName(name);
    this.names = labNames(this.name);
    if (!readState(this.names)) throw new WeftError(ErrorCodes.LAB_STATE, `lab "${this.name}" is not running (no ${this.names.stateFile})`);
  }

  get state(): LabState {
    const s = readState(this.names);
    if (!s) throw new WeftError(ErrorCodes.LAB_STATE, `lab "${this.name}" is not running`);
    return s;
  }
  get stateDir(): string {
    return this.names.stateDir;
  }
  get resourcesDir(): string {
    return this.names.resourcesDir;
  }
  get nodes(): NodeState[] {
    return Object.values(this.state.nodes);
  }
  get pods(): PodState[] {
    return Object.values(this.state.pods);
  }
  get services(): Array<{ namespace: string; name: string; vip: string }> {
    return Object.values(this.state.services);
  }
  node(name: string): NodeState {
    return findNode(this.state, name);
  }
  pod(target: string): PodState {
    return findPod(this.state, target);
  }
  service(target: string): { namespace: string; name: string; vip: string } {
    const key = namespaced(target);
    const s = this.state.services[key];
    if (!s) throw new WeftError(ErrorCodes.USAGE, `no service ${key} in lab "${this.name}"`);
    return s;
  }
  exec(target: string, argv: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
    return labExec(this.name, target, argv, opts);
  }
  status(): Promise<LabStatus> {
    return labStatus({ name: this.name });
  }

  /** Starts the node's agent (if not running) and waits until it is ready. */
  async startAgent(node: string, opts: { readyTimeoutMs?: number } = {}): Promise<number> {
    requireRoot();
    const state = this.state;
    const n = findNode(state, node);
    if (n.agentPid !== undefined && pidAlive(n.agentPid)) throw new WeftError(ErrorCodes.LAB_STATE, `the agent of node ${node} is already running (pid ${n.agentPid})`);
    await startAgentFor(state, this.names, n);
    await waitAgentReady(state, n, readyTimeout(opts));
    return n.agentPid!;
  }

  /** Sends `signal` to the node's agent and waits for it to exit (SIGKILL after timeoutMs). */
  async stopAgent(node: string, signal: NodeJS.Signals = 'SIGTERM', opts: { timeoutMs?: number } = {}): Promise<void> {
    const n = this.node(node);
    if (n.agentPid === undefined) return;
    await stopPid(n.agentPid, signal, opts.timeoutMs ?? 10_000);
    log.info({ node, pid: n.agentPid, signal }, 'agent stopped');
  }

  /** Stops the lab's controller (SIGTERM, SIGKILL after timeoutMs): agents keep what they have. */
  async stopController(signal: NodeJS.Signals = 'SIGTERM', opts: { timeoutMs?: number } = {}): Promise<void> {
    const pid = this.state.controller?.pid;
    if (pid === undefined) return;
    await stopPid(pid, signal, opts.timeoutMs ?? 10_000);
    log.info({ pid, signal }, 'controller stopped');
  }

  /** Starts the lab's controller again (same CA, same sources) and waits until it is ready. */
  async startController(opts: { readyTimeoutMs?: number } = {}): Promise<number> {
    requireRoot();
    const state = this.state;
    const pid = state.controller?.pid;
    if (pid !== undefined && pidAlive(pid)) throw new WeftError(ErrorCodes.LAB_STATE, `the controller is already running (pid ${pid})`);
    await runController(state, this.names, readyTimeout(opts));
    return state.controller!.pid!;
  }

  /**
   * SIGTERM, wait for exit, start again, wait ready. Returns the new pid. `graceful`: an upgrade
   * instead — the new agent starts beside the old one and takes its listening sockets over; the old
   * one drains its live connections (`drainSeconds`) and exits by itself. Nothing is refused or reset.
   */
  async restartAgent(node: string, opts: { readyTimeoutMs?: number; timeoutMs?: number; graceful?: boolean; drainSeconds?: number } = {}): Promise<number> {
    if (!opts.graceful) {
      await this.stopAgent(node, 'SIGTERM', opts);
      return this.startAgent(node, opts);
    }
    requireRoot();
    const state = this.state;
    const n = findNode(state, node);
    const old = n.agentPid;
    if (old === undefined || !pidAlive(old)) throw new WeftError(ErrorCodes.LAB_STATE, `no agent runs on node ${node} to take over from`);
    await startAgentFor(state, this.names, n, ['--takeover', '--drain-seconds', String(opts.drainSeconds ?? 30)]);
    const pid = n.agentPid!;
    // The old agent answers readiness until it has handed over: wait for the new one's own answer.
    const deadline = Date.now() + readyTimeout(opts);
    for (;;) {
      const dump = await agentAdminGet<{ pid?: number }>(n.netnsPath, '/config_dump').catch(() => undefined);
      if (dump?.pid === pid) break;
      if (!pidAlive(pid)) throw new WeftError(ErrorCodes.LAB, `the new agent of node ${node} (pid ${pid}) exited before taking over; see ${n.agentLog}`);
      if (Date.now() > deadline) throw new WeftError(ErrorCodes.LAB, `the new agent of node ${node} (pid ${pid}) did not take over within ${readyTimeout(opts)} ms; see ${n.agentLog}`);
      await sleep(50);
    }
    await waitAgentReady(state, n, readyTimeout(opts));
    log.info({ node, old, pid }, 'agent upgraded; the old one drains');
    return pid;
  }
}

export function openLab(name?: string): LabHandle {
  return new LabHandle(name);
}

export { ConfigError };
