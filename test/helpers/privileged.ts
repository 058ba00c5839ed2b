// SPDX-License-Identifier: Apache-2.0
// Helpers for tests that need root and BPF: skip (or fail in CI) without them, mount bpffs when
// missing, find cgroup2, and hand out a per-run name prefix for netns/cgroups/pins.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';

export const BPFFS = '/sys/fs/bpf';

/** Per-run prefix for every name a test creates (netns, cgroup, pin dir): short, unique per pid. */
export const RUN_PREFIX = `wt${process.pid.toString(36)}`;

/** Repo root, from either dist/test/helpers or test/helpers. */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'bpf', 'Makefile'))) return dir;
    dir = dirname(dir);
  }
  throw new Error('cannot find the repository root from ' + fileURLToPath(import.meta.url));
}

/** Path of a compiled test fixture, bpf/build/test/<name>.bpf.o. */
export function fixture(name: string): string {
  return join(repoRoot(), 'bpf', 'build', 'test', `${name}.bpf.o`);
}

interface Mount {
  source: string;
  target: string;
  fstype: string;
}

function mounts(): Mount[] {
  return readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const [source = '', target = '', fstype = ''] = l.split(' ');
      return { source, target: target.replace(/\\040/g, ' '), fstype };
    });
}

/** Mounts bpffs at /sys/fs/bpf unless one is already there. */
export function ensureBpffs(): void {
  if (mounts().some((m) => m.fstype === 'bpf' && m.target === BPFFS)) return;
  mkdirSync(BPFFS, { recursive: true });
  execFileSync('mount', ['-t', 'bpf', 'bpf', BPFFS]);
}

/** Where cgroup2 is mounted (/sys/fs/cgroup on unified hosts, /sys/fs/cgroup/unified on hybrid ones). */
export function cgroup2Root(): string {
  const all = mounts().filter((m) => m.fstype === 'cgroup2');
  const pref = all.find((m) => m.target === '/sys/fs/cgroup') ?? all[0];
  if (!pref) throw new Error('cgroup2 is not mounted');
  return pref.target;
}

function whyUnprivileged(): string | undefined {
  if (process.getuid?.() !== 0) return 'not running as root';
  if (!existsSync('/sys/kernel/btf/vmlinux')) return 'kernel has no BTF (/sys/kernel/btf/vmlinux)';
  try {
    ensureBpffs();
  } catch (err) {
    return `cannot mount bpffs: ${err instanceof Error ? err.message : String(err)}`;
  }
  try {
    // bpftool needs bpf(2) to list programs: a cheap end-to-end check that BPF is usable here.
    execFileSync('bpftool', ['prog', 'show'], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (err) {
    return `bpf(2) unavailable (bpftool prog show failed: ${err instanceof Error ? err.message : String(err)})`;
  }
  if (!existsSync(fixture('native_maps'))) return `BPF fixtures not built (${fixture('native_maps')}); run make -C bpf`;
  return undefined;
}

let cached: { why: string | undefined } | undefined;

/**
 * Call first in every privileged test. Without root/BPF: fails when CI=true, skips otherwise.
 * Returns true when the test may proceed.
 */
export function requirePrivileges(t: TestContext): boolean {
  cached ??= { why: whyUnprivileged() };
  const why = cached.why;
  if (why === undefined) return true;
  if (process.env.CI === 'true') throw new Error(`privileged test cannot run in CI: ${why}`);
  console.log(`# skipping ${t.name}: ${why}`);
  t.skip(why);
  return false;
}

export function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Best-effort command for cleanup paths: never throws. */
export function shQuiet(cmd: string, args: string[]): void {
  try {
    execFileSync(cmd, args, { stdio: 'ignore' });
  } catch {
    /* cleanup */
  }
}

/** Creates netns `name` with lo up; returns its path under /run/netns. */
export function createNetns(name: string): string {
  sh('ip', ['netns', 'add', name]);
  sh('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
  return `/run/netns/${name}`;
}

export function deleteNetns(name: string): void {
  shQuiet('ip', ['netns', 'del', name]);
}

/** Number of open file descriptors of this process. */
export function openFdCount(): number {
  return readdirSync('/proc/self/fd').length;
}
