// `weft lab up` and `weft lab apply`: validate everything, then build the lab in order — network,
// controller, agents, pods, relay — or bring a running lab to new files (kubectl-apply semantics).
// A failed up removes what it created.
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Ports, RelayDefaults } from '../config.js';
import { ErrorCodes, WeftError, errorMessage } from '../errors.js';
import { nthAddress } from '../net/address.js';
import { loadFiles } from '../registry/load.js';
import { resourceKey } from '../registry/parse.js';
import type { Resource, WithSource } from '../registry/types.js';
import { requireWeftCni } from '../system/cni.js';
import { cgroup2Root } from '../system/mounts.js';
import { findLeftovers, labDown } from './down.js';
import { LabHandle } from './handle.js';
import { lbObjectPath } from './lb.js';
import { log } from './log.js';
import { buildModel } from './model.js';
import { DEFAULT_LAB_NAME, labNames, resolveLabName } from './names.js';
import { podKey, readState, writeState, type LabState } from './state.js';
import { agentEntry, readyTimeout, requirePortFree, startAgentFor, startController, startRelay, waitAgentReady } from './supervision.js';
import { hostRoutes, pidAlive, requireRoot } from './sys.js';
import { createInfrastructure, reconcile } from './topology.js';

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
  requireWeftCni(); // likewise the CNI plugin every pod is created through
  const agents = opts.agents ?? true;
  if (agents && !existsSync(agentEntry())) throw new WeftError(ErrorCodes.LAB, `${agentEntry()} is missing: build with "npx tsc -p ." (or start the lab with --no-agents)`);
  if (agents) await requirePortFree('127.0.0.1', Ports.relay); // the relay's port: fail before creating anything

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
      progress(`controller: CA, node credentials, discovery and certificates on :${Ports.controller}`);
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
      progress(`relay: every node's flows on ${RelayDefaults.address}`);
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
