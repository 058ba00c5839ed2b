// Process supervision: the lab's controller, its node agents, its relay and its pods' containers —
// started (each in its cgroup, agents and containers in their netns), stopped, waited for until ready,
// and the graceful agent upgrade (a new agent takes the old one's sockets over). Credentials come from
// the controller's public API; processes are spawned by procs.ts.
import { mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { Ports, RelayDefaults } from '../config.js';
import { writeNodeCredentials, writeObserverCredentials, writeRelayCredentials } from '../controller/index.js';
import { ErrorCodes, WeftError } from '../errors.js';
import { agentAdminGet } from '../node/index.js';
import { ObserverClient } from '../relay/index.js';
import { cgroup2Root } from '../system/mounts.js';
import { cliEntry, repoRoot } from '../system/assets.js';
import { log } from './log.js';
import type { LabModel } from './model.js';
import type { LabNames } from './names.js';
import { execInPod, startAgentProcess, startContainer, startHostProcess, stopPid, tail, waitListening, waitReady, type ExecOptions, type ExecResult } from './procs.js';
import { findNode, findPod, mkCgroup, mustState, writeState, type ControllerState, type LabState, type NodeState, type PodState, type RelayState } from './state.js';
import { killCgroupTree, pidAlive, requireRoot, sleep, waitCgroupEmpty } from './sys.js';

export const READINESS_PORT = Ports.readiness;
export const CONTROLLER_PORT = Ports.controller;

/** How long to wait for a process to be ready (default $WEFT_LAB_READY_TIMEOUT_MS or 60 s). */
export function readyTimeout(opts?: { readyTimeoutMs?: number }): number {
  return opts?.readyTimeoutMs ?? Number(process.env.WEFT_LAB_READY_TIMEOUT_MS ?? 60_000);
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
export async function startController(state: LabState, names: LabNames, model: LabModel, timeoutMs: number): Promise<void> {
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
export async function runController(state: LabState, names: LabNames, timeoutMs: number): Promise<void> {
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

/** Stops the lab's controller (signal, SIGKILL after timeoutMs): agents keep what they have. */
export async function stopController(state: LabState, signal: NodeJS.Signals, timeoutMs: number): Promise<void> {
  const pid = state.controller?.pid;
  if (pid === undefined) return;
  await stopPid(pid, signal, timeoutMs);
  log.info({ pid, signal }, 'controller stopped');
}

/** Starts the lab's controller again (same CA, same sources) and waits until it is ready. */
export async function restartController(state: LabState, names: LabNames, timeoutMs: number): Promise<number> {
  requireRoot();
  const pid = state.controller?.pid;
  if (pid !== undefined && pidAlive(pid)) throw new WeftError(ErrorCodes.LAB_STATE, `the controller is already running (pid ${pid})`);
  await runController(state, names, timeoutMs);
  return state.controller!.pid!;
}

// ---------------------------------------------------------------------------------------------
// relay

export const RELAY_LISTEN = RelayDefaults.listen;

/** Fails with a clear message when something already listens where the relay must. */
export function requirePortFree(host: string, port: number): Promise<void> {
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
export async function relayAnswers(listen: string, timeoutMs: number): Promise<boolean> {
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
export async function startRelay(state: LabState, names: LabNames, timeoutMs: number): Promise<void> {
  const c = state.controller;
  if (!c) throw new WeftError(ErrorCodes.LAB_STATE, `lab "${state.name}" has no controller; the relay discovers nodes through it`);
  await requirePortFree('127.0.0.1', Ports.relay);
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

export async function startAgentFor(state: LabState, names: LabNames, node: NodeState, extraArgs: readonly string[] = []): Promise<void> {
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

export async function waitAgentReady(state: LabState, node: NodeState, timeoutMs: number): Promise<void> {
  if (!node.agentPid) throw new WeftError(ErrorCodes.LAB_STATE, `no agent is running on node ${node.name}`);
  await waitReady(readyUrl(node), node.agentPid, node.agentLog, timeoutMs, `agent of node ${node.name}`);
  log.info({ lab: state.name, node: node.name }, 'agent ready');
}

export function readyUrl(node: NodeState): string {
  return `http://${node.ip}:${READINESS_PORT}/healthz/ready`;
}

/** Starts the node's agent (if not running) and waits until it is ready. */
export async function startAgent(state: LabState, names: LabNames, node: string, timeoutMs: number): Promise<number> {
  requireRoot();
  const n = findNode(state, node);
  if (n.agentPid !== undefined && pidAlive(n.agentPid)) throw new WeftError(ErrorCodes.LAB_STATE, `the agent of node ${node} is already running (pid ${n.agentPid})`);
  await startAgentFor(state, names, n);
  await waitAgentReady(state, n, timeoutMs);
  return n.agentPid!;
}

/** Sends `signal` to the node's agent and waits for it to exit (SIGKILL after timeoutMs). */
export async function stopAgent(state: LabState, node: string, signal: NodeJS.Signals, timeoutMs: number): Promise<void> {
  const n = findNode(state, node);
  if (n.agentPid === undefined) return;
  await stopPid(n.agentPid, signal, timeoutMs);
  log.info({ node, pid: n.agentPid, signal }, 'agent stopped');
}

/**
 * The graceful upgrade: the new agent starts beside the old one and takes its listening sockets over;
 * the old one drains its live connections (`drainSeconds`) and exits by itself. Nothing is refused or
 * reset. Returns the new pid once it answers for the node.
 */
export async function upgradeAgent(state: LabState, names: LabNames, node: string, opts: { readyTimeoutMs?: number; drainSeconds?: number }): Promise<number> {
  requireRoot();
  const n = findNode(state, node);
  const old = n.agentPid;
  if (old === undefined || !pidAlive(old)) throw new WeftError(ErrorCodes.LAB_STATE, `no agent runs on node ${node} to take over from`);
  await startAgentFor(state, names, n, ['--takeover', '--drain-seconds', String(opts.drainSeconds ?? 30)]);
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

// ---------------------------------------------------------------------------------------------
// containers

export async function startPodContainers(state: LabState, names: LabNames, model: LabModel, ps: PodState): Promise<void> {
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

export async function killPodProcesses(ps: PodState): Promise<void> {
  killCgroupTree(ps.cgroup);
  await waitCgroupEmpty(ps.cgroup, 5000);
  ps.containers = [];
}

/** Like a readiness probe: resolves once every declared TCP containerPort of these pods listens. */
export async function waitContainersListening(model: LabModel, pods: readonly PodState[]): Promise<void> {
  await Promise.all(
    pods.flatMap((ps) => {
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

/** Runs argv inside a pod (its cgroup and netns, with its /etc/netns files); resolves with the exit code. */
export async function labExec(name: string | undefined, target: string, argv: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  requireRoot();
  const { state } = mustState(name);
  const ps = findPod(state, target);
  if (argv.length === 0) throw new WeftError(ErrorCodes.USAGE, 'lab exec needs a command after --');
  return execInPod(ps.cgroup, ps.netns, argv, { cwd: ps.cwd, ...opts });
}
