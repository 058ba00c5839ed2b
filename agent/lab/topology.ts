// The lab's topology: the fabric bridge, the nodes (netns, routes, cgroups), and the reconcile of a
// model into pods (netns, veth, cgroup, then weft-cni run as the node's container runtime would run
// it), services (VIPs, DNS, the load balancer's map) and the resources file the controller reads.
// Used by up and apply.
import { mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { stringify } from 'yaml';
import { ErrorCodes, WeftError, errorMessage } from '../errors.js';
import { CniDefaults } from '../config.js';
import { mustParseIPv4Cidr, nthAddress } from '../net/address.js';
import { resourceKey, stripSource } from '../registry/parse.js';
import {
  type NamespaceResource,
  type NodeResource,
  type PodResource,
  type Resource,
  type ServiceResource,
  type WithSource,
} from '../registry/types.js';
import { execCniPlugin, pluginStdin, requireWeftCni, weftCniPluginConf, type CniCommand, type CniOutcome, type CniRuntimeConf } from '../system/cni.js';
import { cgroup2Root, ensureBpffs } from '../system/mounts.js';
import { writeApplied } from './applied.js';
import { loadLb, syncLbMap, type LbEntry } from './lb.js';
import { log } from './log.js';
import type { LabModel } from './model.js';
import { NETNS_DIR, type LabNames } from './names.js';
import {
  addNodeRoute,
  addressOf,
  bridgeMac,
  configureNode,
  configurePod,
  createFabric,
  createHostLink,
  createNodeNetns,
  createNetns,
  deleteNetns,
  etcNetnsDir,
  hostsFile,
  nextFree,
  resolvConf,
  writePodDns,
} from './net.js';
import { journal, mkCgroup, podKey, writeState, type LabState, type NodeState, type PodState } from './state.js';
import { killPodProcesses, startPodContainers, waitContainersListening } from './supervision.js';
import { pidAlive, rmdirCgroupTree } from './sys.js';

/** Services get VIPs from the service CIDR's .10 on (an explicit clusterIP wins). */
export const FIRST_VIP_INDEX = 10;

/** The host side: lab cgroup, fabric netns and bridge, host link, every node (netns, routes, cgroups), the pin root. */
export async function createInfrastructure(state: LabState, names: LabNames, model: LabModel): Promise<void> {
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

/** Brings the lab to `model`: pods created, moved or restarted, services, DNS, load balancer, resources, containers. */
export async function reconcile(state: LabState, names: LabNames, model: LabModel, sources: Map<string, string> = new Map()): Promise<void> {
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
      ps = await createPod(state, names, pod, cwd);
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
  await waitContainersListening(model, toStart);
}

/** Does a service selector pick this object (every selector label present with the same value)? */
export function selects(selector: Record<string, string>, o: Resource): boolean {
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

async function createPod(state: LabState, names: LabNames, pod: WithSource<PodResource>, cwd: string): Promise<PodState> {
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
  await configurePod({ netns, nodeNetns: node.netns, peer: ps.peer, ip: podIP, prefix: mustParseIPv4Cidr(node.podCIDR).prefix, gateway: node.gateway });
  writeState(state);
  log.info({ pod: key, node: node.name, ip: podIP }, 'pod network ready');
  // The runtime's CNI ADD, before any container runs: weft-cni hands the pod to the node's agent,
  // which attaches capture before answering — or fails closed, and the pod does not start.
  if (state.agents) {
    const add = await runWeftCni(state, names, node, ps, 'ADD');
    if (add.error) {
      // What a runtime does with a failed ADD: DEL, and the sandbox goes.
      await runWeftCni(state, names, node, ps, 'DEL').catch((err: unknown) => log.warn({ pod: key, err: errorMessage(err) }, 'weft-cni DEL after a failed ADD'));
      await killPodProcesses(ps);
      await deleteNetns(ps.netns);
      rmdirCgroupTree(ps.cgroup);
      delete state.pods[key];
      writeState(state);
      throw new WeftError(ErrorCodes.AGENT, `pod ${key}: weft-cni (CNI ADD) failed with code ${add.error.code}: ${add.error.msg}${add.error.details ? `: ${add.error.details}` : ''}`);
    }
    log.info({ pod: key, plugin: lastLine(add.stderr) }, 'pod handed to its node agent by weft-cni');
  }
  return ps;
}

async function destroyPod(state: LabState, names: LabNames, ps: PodState): Promise<void> {
  await killPodProcesses(ps);
  const node = state.nodes[ps.node];
  if (state.agents && node) {
    // CNI DEL succeeds even with the agent down (the plugin says so on stderr; the agent reconciles).
    const del = await runWeftCni(state, names, node, ps, 'DEL').catch((err: unknown): CniOutcome | undefined => {
      log.warn({ pod: `${ps.namespace}/${ps.name}`, err: errorMessage(err) }, 'weft-cni DEL could not run');
      return undefined;
    });
    if (del?.error) log.warn({ pod: `${ps.namespace}/${ps.name}`, code: del.error.code, msg: del.error.msg, details: del.error.details }, 'weft-cni DEL failed');
  }
  await deleteNetns(ps.netns);
  rmSync(etcNetnsDir(ps.netns), { recursive: true, force: true });
  rmdirCgroupTree(ps.cgroup);
  writeState(state);
}

// ---------------------------------------------------------------------------------------------
// The lab as its nodes' container runtime: the network is one conflist per node — the lab's own pod
// network (veth into cni0, the address; net.ts) playing the primary plugin, then weft-cni — and each
// pod is one attachment (sandbox id, netns, eth0, its name in CNI_ARGS), as kubelet and containerd
// pass them. weft-cni is the real binary a node runs, configured with this node's pod channel.

/** The sandbox id of a lab pod: stable for the pod's life, unique in the lab. */
function sandboxId(state: LabState, ps: PodState): string {
  return `lab-${state.name}-${ps.index}`;
}

function podAttachment(state: LabState, ps: PodState, plugin: string): CniRuntimeConf {
  const id = sandboxId(state, ps);
  return {
    containerId: id,
    netns: ps.netnsPath,
    ifName: CniDefaults.ifName,
    args: [
      ['IgnoreUnknown', '1'],
      ['K8S_POD_NAMESPACE', ps.namespace],
      ['K8S_POD_NAME', ps.name],
      ['K8S_POD_INFRA_CONTAINER_ID', id],
    ],
    path: [dirname(plugin)],
  };
}

/** What the lab's pod network did for the pod, as the bridge plugin reports it: the result weft-cni gets as prevResult. */
function podNetworkResult(node: NodeState, ps: PodState): Record<string, unknown> {
  return {
    cniVersion: CniDefaults.cniVersion,
    interfaces: [{ name: 'cni0', mac: bridgeMac(node.gateway) }, { name: ps.peer }, { name: CniDefaults.ifName, sandbox: ps.netnsPath }],
    ips: [{ address: `${ps.ip}/${mustParseIPv4Cidr(node.podCIDR).prefix}`, gateway: node.gateway, interface: 2 }],
    routes: [{ dst: '0.0.0.0/0', gw: node.gateway }],
  };
}

/** Run weft-cni for one pod: ADD and DEL as a runtime does (prevResult on both: the ADD's result). */
function runWeftCni(state: LabState, names: LabNames, node: NodeState, ps: PodState, command: Extract<CniCommand, 'ADD' | 'DEL'>): Promise<CniOutcome> {
  const plugin = requireWeftCni();
  const list = { cniVersion: CniDefaults.cniVersion, name: `weft-lab-${state.name}` };
  const conf = weftCniPluginConf({ podSocket: names.podSocket(node.name) });
  const stdin = pluginStdin(list, conf, podNetworkResult(node, ps));
  // The plugin bounds its own wait for the agent; this only guards against a plugin that hangs.
  return execCniPlugin(plugin, command, podAttachment(state, ps, plugin), stdin, CniDefaults.addTimeoutMs + CNI_EXEC_MARGIN_MS);
}

const CNI_EXEC_MARGIN_MS = 5000;

function lastLine(text: string): string {
  return text.trim().split('\n').pop() ?? '';
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
