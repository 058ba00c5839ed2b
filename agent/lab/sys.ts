// Thin wrappers over the host: running commands (ip, nsenter, bpftool), cgroup v2 and bpffs discovery.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ErrorCodes, WeftError } from '../errors.js';
import { BPFFS } from './names.js';

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

function mounts(): Array<{ source: string; target: string; fstype: string }> {
  return readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const [source = '', target = '', fstype = ''] = l.split(' ');
      return { source, target: target.replace(/\\(\d{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8))), fstype };
    });
}

let cgroup2Cache: string | undefined;
/** The cgroup v2 mount point (from /proc/mounts: /sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid hosts). */
export function cgroup2Root(): string {
  if (cgroup2Cache) return cgroup2Cache;
  const m = mounts().find((x) => x.fstype === 'cgroup2');
  if (!m) throw new WeftError(ErrorCodes.PRIVILEGE, 'no cgroup v2 hierarchy is mounted (see /proc/mounts)');
  cgroup2Cache = m.target;
  return m.target;
}

/** Mounts bpffs at /sys/fs/bpf if it is not mounted yet. */
export async function ensureBpffs(): Promise<void> {
  if (mounts().some((m) => m.fstype === 'bpf' && m.target === BPFFS)) return;
  mkdirSync(BPFFS, { recursive: true });
  await run('mount', ['-t', 'bpf', 'bpf', BPFFS]);
}

export function bpffsMounted(): boolean {
  return mounts().some((m) => m.fstype === 'bpf' && m.target === BPFFS);
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

export function cgroupPath(rel: string): string {
  return join(cgroup2Root(), rel);
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
    let entries: string[] = [];
    try {
      entries = readdirSync(p, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name);
    } catch {
      /* gone */
    }
    for (const e of entries) walk(join(p, e));
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
    let entries: string[] = [];
    try {
      entries = readdirSync(p, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name);
    } catch {
      return;
    }
    for (const e of entries) walk(join(p, e));
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

/** The cgroup v2 path (relative to the mount, starting with /) of a pid, or undefined. */
export function pidCgroup(pid: number): string | undefined {
  try {
    const line = readFileSync(`/proc/${pid}/cgroup`, 'utf8')
      .split('\n')
      .find((l) => l.startsWith('0::'));
    return line?.slice(3);
  } catch {
    return undefined;
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
