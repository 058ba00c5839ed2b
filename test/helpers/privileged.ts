// SPDX-License-Identifier: Apache-2.0
// Helpers for tests that need root and BPF: skip (or fail in CI) without them, mount bpffs when
// missing, find cgroup2, hand out a per-run name prefix for netns/cgroups/pins, and list what a lab
// left on the machine.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import type { LabNames } from '../../agent/lab/names.js';
import { repoRoot } from '../../agent/system/assets.js';
import { cgroup2Root, ensureBpffs } from '../../agent/system/mounts.js';

// The host facts come from the agent's own implementation, so tests and agent agree on them.
export { BPFFS_ROOT as BPFFS, cgroup2Root, ensureBpffs } from '../../agent/system/mounts.js';

/** Per-run prefix for every name a test creates (netns, cgroup, pin dir): short, unique per pid. */
export const RUN_PREFIX = `wt${process.pid.toString(36)}`;

/** Repo root, from the agent's asset locator (tests and agent find the tree the same way). */
export { repoRoot };

/** Path of a compiled test fixture, bpf/build/test/<name>.bpf.o. */
export function fixture(name: string): string {
  return join(repoRoot(), 'bpf', 'build', 'test', `${name}.bpf.o`);
}

function whyUnprivileged(): string | undefined {
  if (process.getuid?.() !== 0) return 'not running as root';
  if (!existsSync('/sys/kernel/btf/vmlinux')) return 'kernel has no BTF (/sys/kernel/btf/vmlinux)';
  try {
    ensureBpffs();
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
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

/**
 * For the tests that use a lab an earlier test brought up: without it (unprivileged, or lab up
 * failed) they skip outside CI, saying why, and fail under CI=true like every privileged test.
 */
export function requireLab<L>(t: TestContext, lab: L | undefined): lab is L {
  if (lab !== undefined) return true;
  const why = 'no lab: the lab could not be brought up (see the first test of this file)';
  if (process.env.CI === 'true') throw new Error(why);
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

/**
 * Everything of a lab that exists on the machine: netns, host links, its cgroup, bpf pins, /etc/netns
 * entries, state dir, and processes in its cgroups. Found by name, independently of the lab's code.
 * Works unprivileged too (then it sees little), for tests that check a refused lab created nothing.
 */
export function labLeftovers(names: LabNames): string[] {
  const out: string[] = [];
  let netns = '';
  try {
    netns = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  } catch {
    /* no netns support: nothing to find */
  }
  for (const l of netns.split('\n')) if (l.startsWith(`${names.lab}-`)) out.push(`netns ${l.split(' ')[0]}`);
  for (const l of execFileSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' }).split('\n')) {
    if (l.includes(names.linkPrefix)) out.push(`link ${l.split(':')[1]?.trim()}`);
  }
  try {
    const cg = join(cgroup2Root(), names.cgroupRel);
    if (existsSync(cg)) out.push(`cgroup ${cg}`);
  } catch {
    /* no cgroup2: nothing to find */
  }
  if (existsSync(names.pinRoot)) out.push(`pins ${names.pinRoot}`);
  if (existsSync('/etc/netns')) for (const e of readdirSync('/etc/netns')) if (e.startsWith(`${names.lab}-`)) out.push(`/etc/netns/${e}`);
  if (existsSync(names.stateDir)) out.push(`state ${names.stateDir}`);
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      // A killed process stays a zombie until its (re)parent reaps it; it holds nothing any more.
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')) continue;
      if (readFileSync(`/proc/${p}/cgroup`, 'utf8').includes(`/${names.cgroupRel}/`)) out.push(`process ${p}`);
    } catch {
      /* exited */
    }
  }
  return out;
}
