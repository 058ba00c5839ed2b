// Processes of the lab: pod containers (in the pod's cgroup and netns, via `ip netns exec` so the
// pod's /etc/netns files apply), `lab exec` commands, and node agents (in the node's netns via nsenter).
import { spawn, type StdioOptions } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, statSync } from 'node:fs';
import { get } from 'node:http';
import { dirname, join } from 'node:path';
import { ErrorCodes, WeftError } from '../errors.js';
import { pidAlive, sleep } from './sys.js';

const AGENT_NOFILE = 1048576;

/** `sh -c` prologue: join a cgroup first (ip netns exec remounts /sys), then exec the rest. */
function inCgroup(cgroupDir: string, argv: readonly string[]): string[] {
  return ['-c', `echo $$ > '${join(cgroupDir, 'cgroup.procs').replace(/'/g, `'\\''`)}' && exec "$@"`, 'sh', ...argv];
}

export function podArgv(cgroupDir: string, netns: string, command: readonly string[]): string[] {
  return inCgroup(cgroupDir, ['ip', 'netns', 'exec', netns, ...command]);
}

export interface DetachedOptions {
  cwd: string;
  env: NodeJS.ProcessEnv;
  log: string;
}

/** Starts a detached process (own session), stdout+stderr appended to `log`. Returns its pid. */
export function spawnDetached(argv: readonly string[], opts: DetachedOptions): Promise<number> {
  mkdirSync(dirname(opts.log), { recursive: true });
  const fd = openSync(opts.log, 'a');
  return new Promise((resolve, reject) => {
    try {
      const child = spawn('sh', argv, { cwd: opts.cwd, env: opts.env, detached: true, stdio: ['ignore', fd, fd] });
      child.once('error', (err) => reject(new WeftError(ErrorCodes.LAB, `cannot start ${argv.join(' ')}: ${err.message}`, { cause: err })));
      child.once('spawn', () => {
        child.unref();
        resolve(child.pid!);
      });
    } finally {
      closeSync(fd);
    }
  });
}

export function startContainer(p: { cgroup: string; netns: string; command: readonly string[]; cwd: string; env: NodeJS.ProcessEnv; log: string }): Promise<number> {
  if (!existsSync(p.cwd) || !statSync(p.cwd).isDirectory()) throw new WeftError(ErrorCodes.LAB, `working directory ${p.cwd} does not exist`);
  return spawnDetached(podArgv(p.cgroup, p.netns, p.command), { cwd: p.cwd, env: p.env, log: p.log });
}

export function startAgentProcess(a: { cgroup: string; netnsPath: string; argv: readonly string[]; env: NodeJS.ProcessEnv; log: string; cwd: string }): Promise<number> {
  // A node proxy holds two descriptors per proxied connection: give it what a DaemonSet's container
  // gets (the kernel's nr_open), not the shell's default.
  const argv = ['sh', '-c', `ulimit -n ${AGENT_NOFILE} 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$@"`, 'sh', 'nsenter', `--net=${a.netnsPath}`, '--', ...a.argv];
  return spawnDetached(inCgroup(a.cgroup, argv), { cwd: a.cwd, env: a.env, log: a.log });
}

/** A process in the host netns, joined to `cgroup` before it execs (the lab's controller). */
export function startHostProcess(a: { cgroup: string; argv: readonly string[]; env: NodeJS.ProcessEnv; log: string; cwd: string }): Promise<number> {
  return spawnDetached(inCgroup(a.cgroup, a.argv), { cwd: a.cwd, env: a.env, log: a.log });
}

export interface ExecOptions {
  /** 'inherit' (CLI) or 'pipe' (tests: output captured and returned). */
  stdio?: 'inherit' | 'pipe';
  input?: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  timeoutMs?: number;
}

export interface ExecResult {
  /** Exit code; 128+signal number when killed by a signal. */
  code: number;
  stdout: string;
  stderr: string;
}

const SIGNALS: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGTERM: 15, SIGPIPE: 13, SIGABRT: 6, SIGSEGV: 11 };

export function execInPod(cgroup: string, netns: string, argv: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const mode = opts.stdio ?? 'pipe';
  const stdio: StdioOptions = mode === 'inherit' ? 'inherit' : [opts.input !== undefined ? 'pipe' : 'ignore', 'pipe', 'pipe'];
  return new Promise((resolve, reject) => {
    const child = spawn('sh', podArgv(cgroup, netns, argv), { stdio, env: opts.env ?? process.env, cwd: opts.cwd, timeout: opts.timeoutMs });
    let stdout = '';
    let stderr = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    if (child.stdin) {
      child.stdin.on('error', () => undefined);
      child.stdin.end(opts.input);
    }
    child.once('error', (err) => reject(new WeftError(ErrorCodes.LAB, `cannot run ${argv.join(' ')}: ${err.message}`, { cause: err })));
    child.once('close', (code, signal) => {
      resolve({ code: code ?? 128 + (signal ? (SIGNALS[signal] ?? 1) : 1), stdout, stderr });
    });
  });
}

/** Last `lines` lines of a file ('' if unreadable). */
export function tail(file: string, lines = 20): string {
  try {
    const text = readFileSync(file, 'utf8');
    return text.split('\n').slice(-lines - 1).join('\n').trimEnd();
  } catch {
    return '';
  }
}

export function httpStatus(url: string, timeoutMs: number): Promise<number> {
  return new Promise((resolve) => {
    const req = get(url, { timeout: timeoutMs }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(0));
  });
}

/** Polls `url` until it answers 200; fails early if `pid` exits. The error carries the log tail. */
export async function waitReady(url: string, pid: number, log: string, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = 0;
  while (Date.now() < deadline) {
    last = await httpStatus(url, 1000);
    if (last === 200) return;
    if (!pidAlive(pid)) {
      throw new WeftError(ErrorCodes.LAB, `${what} (pid ${pid}) exited before it was ready; last lines of ${log}:\n${tail(log)}`);
    }
    await sleep(200);
  }
  throw new WeftError(ErrorCodes.LAB, `${what} was not ready within ${timeoutMs} ms (${url} last answered ${last || 'nothing'}); last lines of ${log}:\n${tail(log)}`);
}

/** Sends `signal` and waits (up to timeoutMs) until the process is gone; SIGKILL after that. */
export async function stopPid(pid: number, signal: NodeJS.Signals, timeoutMs: number): Promise<void> {
  try {
    process.kill(pid, signal);
  } catch {
    return;
  }
  const deadline = Date.now() + timeoutMs;
  while (pidAlive(pid)) {
    if (Date.now() > deadline) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        return;
      }
      await sleep(50);
      if (Date.now() > deadline + 2000) break;
      continue;
    }
    await sleep(25);
  }
}

/** TCP ports in LISTEN state in the network namespace of `pid` (from /proc/<pid>/net/tcp{,6}). */
export function listeningPorts(pid: number): Set<number> {
  const out = new Set<number>();
  for (const f of ['tcp', 'tcp6']) {
    let text = '';
    try {
      text = readFileSync(`/proc/${pid}/net/${f}`, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length < 4 || cols[3] !== '0A') continue;
      const port = parseInt(cols[1]!.split(':')[1] ?? '', 16);
      if (Number.isInteger(port)) out.add(port);
    }
  }
  return out;
}

/** Waits until `ports` are listening in the netns of `pid`; fails early if the process exits. */
export async function waitListening(pid: number, ports: readonly number[], log: string, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!pidAlive(pid)) throw new WeftError(ErrorCodes.LAB, `${what} (pid ${pid}) exited; last lines of ${log}:\n${tail(log)}`);
    const open = listeningPorts(pid);
    const missing = ports.filter((p) => !open.has(p));
    if (missing.length === 0) return;
    if (Date.now() > deadline) {
      throw new WeftError(ErrorCodes.LAB, `${what} did not listen on port ${missing.join(', ')} within ${timeoutMs} ms; last lines of ${log}:\n${tail(log)}`);
    }
    await sleep(50);
  }
}
