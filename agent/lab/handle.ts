// The handle on a running lab that tests and the CLI hold: its state (re-read on every access), its
// nodes, pods and services by name, exec in a pod, status, and the lifecycle of its agents and
// controller (start, stop, restart, the graceful agent upgrade). Lifecycle methods are async all
// through: a lab that is gone is a rejected promise, never a synchronous throw.
import { ErrorCodes, WeftError } from '../errors.js';
import { labNames, resolveLabName, type LabNames } from './names.js';
import type { ExecOptions, ExecResult } from './procs.js';
import { findNode, findPod, namespaced, readState, type LabState, type NodeState, type PodState } from './state.js';
import { labStatus, type LabStatus } from './status.js';
import { labExec, readyTimeout, restartController, startAgent, stopAgent, stopController, upgradeAgent } from './supervision.js';

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
    return startAgent(this.state, this.names, node, readyTimeout(opts));
  }

  /** Sends `signal` to the node's agent and waits for it to exit (SIGKILL after timeoutMs). */
  async stopAgent(node: string, signal: NodeJS.Signals = 'SIGTERM', opts: { timeoutMs?: number } = {}): Promise<void> {
    return stopAgent(this.state, node, signal, opts.timeoutMs ?? 10_000);
  }

  /** Stops the lab's controller (SIGTERM, SIGKILL after timeoutMs): agents keep what they have. */
  async stopController(signal: NodeJS.Signals = 'SIGTERM', opts: { timeoutMs?: number } = {}): Promise<void> {
    return stopController(this.state, signal, opts.timeoutMs ?? 10_000);
  }

  /** Starts the lab's controller again (same CA, same sources) and waits until it is ready. */
  async startController(opts: { readyTimeoutMs?: number } = {}): Promise<number> {
    return restartController(this.state, this.names, readyTimeout(opts));
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
    return upgradeAgent(this.state, this.names, node, opts);
  }
}

export function openLab(name?: string): LabHandle {
  return new LabHandle(name);
}
