// Where the kernel's special filesystems are mounted on this host, and mounting bpffs when absent.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ErrorCodes, WeftError } from '../errors.js';

interface Mount {
  source: string;
  target: string;
  fstype: string;
}

function mounts(): Mount[] {
  return readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [source = '', target = '', fstype = ''] = line.split(' ');
      // /proc/mounts escapes space, tab, newline and backslash as \ooo (octal).
      return { source, target: target.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8))), fstype };
    });
}

/** The cgroup v2 mount point: /sys/fs/cgroup on most hosts, /sys/fs/cgroup/unified on hybrid ones. */
export function cgroup2Root(): string {
  const found = mounts().filter((m) => m.fstype === 'cgroup2');
  const preferred = found.find((m) => m.target === '/sys/fs/cgroup') ?? found[0];
  if (!preferred) throw new WeftError(ErrorCodes.PRIVILEGE, 'no cgroup v2 filesystem is mounted (weft needs cgroup v2)');
  return preferred.target;
}

/** A cgroup's id as the kernel reports it to BPF: the inode number of its directory. */
export function cgroupId(path: string): bigint {
  return statSync(path, { bigint: true }).ino;
}

/** This process's cgroup v2 directory (from the `0::` line of /proc/self/cgroup). */
export function ownCgroupPath(): string {
  const line = readFileSync('/proc/self/cgroup', 'utf8').split('\n').find((l) => l.startsWith('0::'));
  if (!line) throw new WeftError(ErrorCodes.PRIVILEGE, 'this process is in no cgroup v2 group (weft needs cgroup v2)');
  return join(cgroup2Root(), line.slice(3));
}

export const BPFFS_ROOT = '/sys/fs/bpf';

/** Make sure a BPF filesystem is mounted at /sys/fs/bpf (mounting it when root and absent). */
export function ensureBpffs(): void {
  if (mounts().some((m) => m.fstype === 'bpf' && m.target === BPFFS_ROOT)) return;
  if (!existsSync(BPFFS_ROOT)) mkdirSync(BPFFS_ROOT, { recursive: true });
  try {
    execFileSync('mount', ['-t', 'bpf', 'bpf', BPFFS_ROOT], { stdio: 'pipe' });
  } catch (err) {
    throw new WeftError(ErrorCodes.PRIVILEGE, `cannot mount bpffs at ${BPFFS_ROOT}: ${String(err)}`, { cause: err });
  }
}
