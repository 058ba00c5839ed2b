// Running CNI plugins the way a container runtime does (containernetworking/cni SPEC.md, sections 2
// and 3): parameters in CNI_* environment variables, the plugin's configuration on stdin — its entry
// of the network's list, with the list's name and cniVersion and the previous plugin's result as
// `prevResult` — and a result or an error object on stdout. The lab plays the runtime of its nodes
// through this, so its pods are enrolled by weft-cni exactly as a real node's are; tests run Debian's
// plugins with it. Also: where weft-cni is built, and its entry in a network configuration list.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { CniDefaults, NodePaths } from '../config.js';
import { ErrorCodes, WeftError } from '../errors.js';
import { repoPath } from './assets.js';

export type CniCommand = 'ADD' | 'DEL' | 'CHECK' | 'VERSION' | 'STATUS' | 'GC';

/** What the runtime knows of one attachment (SPEC.md "Parameters"). */
export interface CniRuntimeConf {
  containerId: string;
  /** The pod's network namespace path (optional on DEL). */
  netns?: string;
  ifName: string;
  /** CNI_ARGS, in order (Kubernetes runtimes pass K8S_POD_NAMESPACE and K8S_POD_NAME). */
  args?: ReadonlyArray<readonly [string, string]>;
  /** CNI_PATH: the directories plugins (and the IPAM plugins they delegate to) are found in. */
  path: readonly string[];
}

/** A network configuration list: what a runtime reads from its conf dir. */
export interface CniConfList {
  cniVersion: string;
  name: string;
  plugins: ReadonlyArray<Record<string, unknown> & { type: string }>;
}

/** An error result (SPEC.md "Error"). */
export interface CniErrorResult {
  cniVersion?: string;
  code: number;
  msg: string;
  details?: string;
}

export interface CniOutcome {
  exitCode: number;
  /** stdout exactly as the plugin wrote it. */
  stdout: string;
  stderr: string;
  /** stdout decoded, when it is JSON. */
  json?: unknown;
  /** Set when the plugin failed: its error object, or one made up from how it failed. */
  error?: CniErrorResult;
}

/** Where `make -C cni` writes weft-cni, whether or not it has run. $WEFT_CNI_PLUGIN overrides it. */
export function weftCniPath(): string {
  return process.env.WEFT_CNI_PLUGIN ?? repoPath('cni', 'build', CniDefaults.type);
}

/** weft-cni, checked: throws WEFT_ERR_SETUP (with how to build it) when it is not built. */
export function requireWeftCni(): string {
  const path = weftCniPath();
  if (!existsSync(path)) throw new WeftError(ErrorCodes.SETUP, `${path} is missing: build the CNI plugin with "make -C cni" (or npm run setup)`);
  return path;
}

/** weft-cni's entry in a network configuration list: the agent's pod channel and the fail-closed rule. */
export function weftCniPluginConf(opts: { podSocket?: string; timeoutMs?: number; excludeNamespaces?: readonly string[] } = {}): Record<string, unknown> & { type: string } {
  return {
    type: CniDefaults.type,
    weft: {
      podSocket: opts.podSocket ?? NodePaths.podSocket,
      timeoutMs: opts.timeoutMs ?? CniDefaults.addTimeoutMs,
      excludeNamespaces: [...(opts.excludeNamespaces ?? CniDefaults.excludeNamespaces)],
    },
  };
}

/** The configuration a runtime streams to one plugin of `list`: its entry, the list's name and version, and prevResult. */
export function pluginStdin(list: Pick<CniConfList, 'name' | 'cniVersion'>, plugin: Record<string, unknown>, prevResult?: unknown): string {
  const conf: Record<string, unknown> = { ...plugin, cniVersion: list.cniVersion, name: list.name };
  if (prevResult !== undefined) conf.prevResult = prevResult;
  return JSON.stringify(conf);
}

function cniEnv(command: CniCommand, rt: CniRuntimeConf | undefined): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, CNI_COMMAND: command };
  for (const k of ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME', 'CNI_ARGS', 'CNI_PATH']) delete env[k];
  if (!rt) return env;
  env.CNI_CONTAINERID = rt.containerId;
  if (rt.netns !== undefined) env.CNI_NETNS = rt.netns;
  env.CNI_IFNAME = rt.ifName;
  if (rt.args?.length) env.CNI_ARGS = rt.args.map(([k, v]) => `${k}=${v}`).join(';');
  env.CNI_PATH = rt.path.join(':');
  return env;
}

function asErrorResult(v: unknown): CniErrorResult | undefined {
  if (typeof v !== 'object' || v === null) return undefined;
  const o = v as Record<string, unknown>;
  if (typeof o.code !== 'number' || typeof o.msg !== 'string') return undefined;
  return { code: o.code, msg: o.msg, ...(typeof o.details === 'string' ? { details: o.details } : {}), ...(typeof o.cniVersion === 'string' ? { cniVersion: o.cniVersion } : {}) };
}

/**
 * Run one plugin binary once, as the runtime does, and wait (at most `timeoutMs`, then SIGKILL). A
 * non-zero exit is an outcome with `error`, not an exception; only failing to run it at all throws.
 */
export function execCniPlugin(binary: string, command: CniCommand, rt: CniRuntimeConf | undefined, stdin: string | Uint8Array, timeoutMs: number): Promise<CniOutcome> {
  return new Promise((resolve, reject) => {
    const child = spawn(binary, [], { env: cniEnv(command, rt), stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    child.stdin.on('error', () => undefined); // a plugin that exits without reading its input (VERSION)
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new WeftError(ErrorCodes.SETUP, `cannot run CNI plugin ${binary}: ${e.message}`, { cause: e }));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const stdout = Buffer.concat(out).toString('utf8');
      const stderr = Buffer.concat(err).toString('utf8');
      let json: unknown;
      try {
        json = stdout.trim() ? JSON.parse(stdout) : undefined;
      } catch {
        json = undefined;
      }
      const exitCode = code ?? -1;
      const outcome: CniOutcome = { exitCode, stdout, stderr, ...(json !== undefined ? { json } : {}) };
      if (exitCode !== 0) {
        outcome.error = asErrorResult(json) ?? {
          code: -1,
          msg: timedOut ? `no answer within ${timeoutMs} ms (killed)` : `exited with ${signal ?? exitCode} and no error object`,
          details: stderr.trim().slice(-2000),
        };
      }
      resolve(outcome);
    });
    child.stdin.end(stdin);
  });
}

/** Find a plugin by its `type` in CNI_PATH, as runtimes do. */
export function findCniPlugin(type: string, path: readonly string[]): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(type)) throw new WeftError(ErrorCodes.USAGE, `CNI plugin type "${type}" is not a file name`);
  for (const dir of path) {
    const p = join(dir, type);
    if (existsSync(p)) return p;
  }
  throw new WeftError(ErrorCodes.SETUP, `CNI plugin "${type}" not found in ${path.join(':')}`);
}

/**
 * ADD, CHECK or DEL of a whole list, the order libcni runs it in: ADD plugin by plugin, each one's
 * result the next one's prevResult; CHECK in order and DEL in reverse, each with the ADD's final
 * result (`prevResult`). Stops at the first failure (SPEC.md: the runtime must stop the list), whose
 * outcome is the last one returned.
 */
export async function runCniList(list: CniConfList, command: 'ADD' | 'CHECK' | 'DEL', rt: CniRuntimeConf, opts: { prevResult?: unknown; timeoutMs: number }): Promise<{ result?: unknown; outcomes: CniOutcome[] }> {
  const outcomes: CniOutcome[] = [];
  const plugins = command === 'DEL' ? [...list.plugins].reverse() : list.plugins;
  let prev = opts.prevResult;
  for (const plugin of plugins) {
    const outcome = await execCniPlugin(findCniPlugin(plugin.type, rt.path), command, rt, pluginStdin(list, plugin, prev), opts.timeoutMs);
    outcomes.push(outcome);
    if (outcome.error) return { outcomes };
    if (command === 'ADD') prev = outcome.json;
  }
  return { ...(command === 'ADD' ? { result: prev } : {}), outcomes };
}
