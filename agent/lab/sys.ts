// Thin wrappers over the host: running commands (ip), listing netns, links and routes, and walking,
// killing and removing cgroup trees. Where cgroup2 and bpffs are mounted: agent/system/mounts.ts.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ErrorCodes, WeftError } from '../errors.js';

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion, capturing output. Throws WEFT_ERR_LAB on a non-zero exit unless allowFail. */
export function run(cmd: string, args: readonly string[], opts: { allowFail?: boolean; input?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: [opts.input !== undefined ? 'pipe' : 'ignore', 'pipe', 'pipe'], timeout: opts.timeoutMs ?? 30_000 });
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', (err) => reject(new WeftError(ErrorCodes.LAB, `cannot run ${cmd}: ${err.message}`, { cause: err })));
    child.on('close', (code, signal) => {
      const c = code ?? (signal ? 128 : 1);
      if (c !== 0 && !opts.allowFail) {
        reject(new WeftError(ErrorCodes.LAB, `${cmd} ${args.join(' ')} failed (exit ${code ?? signal}): ${stderr.trim() || stdout.trim()}`));
      } else resolve({ code: c, stdout, stderr });
    });
    if (child.stdin) {
      child.stdin.on('error', () => undefined);
      child.stdin.end(opts.input);
    }
  });
}

export const ip = (...args: string[]): Promise<RunResult> => run('ip', args);
/** `ip -n <netns> ...` */
export const ipn = (netns: string, ...args: string[]): Promise<RunResult> => run('ip', ['-n', netns, ...args]);

export function requireRoot(): void {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new WeftError(ErrorCodes.PRIVILEGE, 'the lab needs root (network namespaces, cgroups, BPF): run it with sudo');
  }
}

export async function netnsList(): Promise<string[]> {
  const r = await run('ip', ['netns', 'list'], { allowFail: true });
  return r.stdout
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter(Boolean);
}

export async function linkNames(netns?: string): Promise<string[]> {
  const args = netns ? ['-n', netns, '-o', 'link', 'show'] : ['-o', 'link', 'show'];
  const r = await run('ip', args, { allowFail: true });
  return r.stdout
    .split('\n')
    .map((l) => /^\d+:\s+([^:@\s]+)/.exec(l)?.[1])
    .filter((x): x is string => !!x);
}

/** Destination prefixes of the host's main IPv4 routing table (default route excluded). */
export async function hostRoutes(): Promise<Array<{ dst: string; dev?: string }>> {
  const r = await run('ip', ['-j', '-4', 'route', 'show'], { allowFail: true });
  try {
    const list = JSON.parse(r.stdout || '[]') as Array<{ dst: string; dev?: string }>;
    return list.filter((x) => x.dst && x.dst !== 'default').map((x) => ({ dst: x.dst.includes('/') ? x.dst : `${x.dst}/32`, dev: x.dev }));
  } catch {
    return [];
  }
}

// ---------------------------------------------------------------------------------------------
// cgroups

/** The child directories of `dir` (none if it is gone). */
function subdirs(dir: string): string[] {
  try {
    return readdirSync(dir, { withFileTypes: true })
      .filter((d) => d.isDirectory())
      .map((d) => join(dir, d.name));
  } catch {
    return [];
  }
}

/** Pids of a cgroup and all its descendants. */
export function cgroupPidsDeep(path: string): number[] {
  const out: number[] = [];
  const walk = (p: string): void => {
    try {
      for (const l of readFileSync(join(p, 'cgroup.procs'), 'utf8').split('\n')) if (l.trim()) out.push(Number(l));
    } catch {
      return;
    }
    for (const child of subdirs(p)) walk(child);
  };
  walk(path);
  return out;
}

/** Kills every process in a cgroup tree: cgroup.kill where the kernel has it, else SIGKILL per pid. */
export function killCgroupTree(path: string): void {
  if (!existsSync(path)) return;
  const killFile = join(path, 'cgroup.kill');
  if (existsSync(killFile)) {
    try {
      writeFileSync(killFile, '1');
      return;
    } catch {
      /* fall through to per-pid kill */
    }
  }
  for (const pid of cgroupPidsDeep(path)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
}

/** Removes a cgroup tree depth-first (each directory must be empty of processes). Returns the paths it could not remove. */
export function rmdirCgroupTree(path: string): string[] {
  const failed: string[] = [];
  const walk = (p: string): void => {
    for (const child of subdirs(p)) walk(child);
    try {
      rmdirSync(p);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') failed.push(`${p}: ${(err as NodeJS.ErrnoException).code}`);
    }
  };
  walk(path);
  return failed;
}

/** Is this pid alive (not a zombie)? */
export function pidAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Waits until no process is left in the cgroup tree; false if some still are after timeoutMs. */
export async function waitCgroupEmpty(path: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (cgroupPidsDeep(path).length === 0) return true;
    await sleep(25);
  }
  return cgroupPidsDeep(path).length === 0;
}
