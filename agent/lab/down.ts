// Teardown: `weft lab down` removes everything of a lab, from its state journal and by name prefix
// (so it also works with no state at all, after a crash), and finds the leftovers `up` refuses to
// start over.
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { uninstallCapture } from '../datapath/capture.js';
import { ErrorCodes, WeftError, errorMessage } from '../errors.js';
import { cgroup2Root } from '../system/mounts.js';
import { log } from './log.js';
import { ETC_NETNS, NETNS_DIR, isLabNetns, labNames, resolveLabName, type LabNames } from './names.js';
import { deleteLink, deleteNetns } from './net.js';
import { readState, type LabState } from './state.js';
import { cgroupPidsDeep, killCgroupTree, linkNames, netnsList, requireRoot, rmdirCgroupTree, sleep, waitCgroupEmpty } from './sys.js';

export interface DownReport {
  lab: string;
  removed: string[];
  /** Things that could not be removed (down throws if this is not empty). */
  failed: string[];
}

/** Removes everything of the lab: from its state journal, and by name prefix (works with no state at all). */
export async function labDown(opts: { name?: string } = {}): Promise<DownReport> {
  requireRoot();
  const name = resolveLabName(opts.name);
  const names = labNames(name);
  let state: LabState | undefined;
  try {
    state = readState(names);
  } catch (err) {
    log.warn({ lab: name, err: errorMessage(err) }, 'state unreadable; removing by name');
  }
  const report: DownReport = { lab: name, removed: [], failed: [] };
  let cgRoot: string | undefined;
  try {
    cgRoot = join(cgroup2Root(), names.cgroupRel);
  } catch {
    cgRoot = state?.cgroupRoot;
  }

  // 1. Processes: everything in the lab's cgroup tree (agents, containers, exec'd commands). First,
  // because a process holding a BPF link keeps it alive after its pin is gone.
  const cgroups = new Set<string>([...(cgRoot ? [cgRoot] : []), ...(state?.journal ?? []).filter((e) => e.type === 'cgroup').map((e) => (e as { path: string }).path)]);
  for (const cg of cgroups) killCgroupTree(cg);
  for (const cg of cgroups) {
    if (existsSync(cg) && !(await waitCgroupEmpty(cg, 10_000))) report.failed.push(`processes still running in ${cg}: ${cgroupPidsDeep(cg).join(', ')}`);
  }

  // 2. BPF pins: <pinRoot>/lab (the load balancer) and <pinRoot>/<node> (each agent's maps, cgroup
  // links and per-pod sk_lookup links), all in the agents' layout. Every pinned link is detached
  // before its pin goes: removing a pin alone detaches a link only once nothing holds it any more,
  // and the kernel frees it some time later.
  if (existsSync(names.pinRoot)) {
    try {
      let detached = 0;
      for (const dir of readdirSync(names.pinRoot)) detached += uninstallCapture(join(names.pinRoot, dir), log).detached;
      rmSync(names.pinRoot, { recursive: true, force: true });
      report.removed.push(`pins ${names.pinRoot} (${detached} links detached)`);
    } catch (err) {
      report.failed.push(`pins ${names.pinRoot}: ${errorMessage(err)}`);
    }
  }

  // 3. Network namespaces (pods first, then nodes, then the fabric), then host links.
  const nsNames = new Set<string>([
    ...(state?.journal ?? []).filter((e) => e.type === 'netns').map((e) => (e as { name: string }).name),
    ...(await netnsList()).filter((n) => isLabNetns(names, n)),
  ]);
  const order = (n: string): number => (n.startsWith(`${name}-pod-`) ? 0 : n.startsWith(`${name}-node-`) ? 1 : 2);
  for (const ns of [...nsNames].sort((a, b) => order(a) - order(b))) {
    if (!existsSync(join(NETNS_DIR, ns))) continue;
    await deleteNetns(ns);
    if (existsSync(join(NETNS_DIR, ns))) report.failed.push(`netns ${ns}`);
    else report.removed.push(`netns ${ns}`);
  }
  const links = new Set<string>([
    ...(state?.journal ?? []).filter((e) => e.type === 'link').map((e) => (e as { name: string }).name),
    ...(await linkNames()).filter((l) => l.startsWith(names.linkPrefix)),
  ]);
  const present = new Set(await linkNames());
  for (const l of links) {
    if (!present.has(l)) continue;
    await deleteLink(l);
    report.removed.push(`link ${l}`);
  }
  const still = (await linkNames()).filter((l) => l.startsWith(names.linkPrefix));
  for (const l of still) report.failed.push(`link ${l}`);

  // 4. /etc/netns entries.
  const etc = new Set<string>((state?.journal ?? []).filter((e) => e.type === 'etcnetns').map((e) => (e as { path: string }).path));
  if (existsSync(ETC_NETNS)) for (const e of readdirSync(ETC_NETNS)) if (isLabNetns(names, e)) etc.add(join(ETC_NETNS, e));
  for (const p of etc) {
    if (!existsSync(p)) continue;
    try {
      rmSync(p, { recursive: true, force: true });
      report.removed.push(p);
    } catch (err) {
      report.failed.push(`${p}: ${errorMessage(err)}`);
    }
  }

  // 5. cgroups, depth-first (retry briefly: killed processes take a moment to leave).
  for (const cg of cgroups) {
    if (!existsSync(cg)) continue;
    let failed: string[] = [];
    for (let i = 0; i < 40; i++) {
      failed = rmdirCgroupTree(cg);
      if (!failed.length) break;
      await sleep(50);
    }
    if (failed.length) report.failed.push(...failed.map((f) => `cgroup ${f}`));
    else report.removed.push(`cgroup ${cg}`);
  }

  // 6. The state directory (last: it is the journal).
  if (report.failed.length === 0 && existsSync(names.stateDir)) {
    rmSync(names.stateDir, { recursive: true, force: true });
    report.removed.push(`state ${names.stateDir}`);
  }
  if (report.failed.length) {
    log.error({ lab: name, failed: report.failed }, 'lab down incomplete');
    throw new WeftError(ErrorCodes.LAB, `lab "${name}" could not be removed completely:\n  ${report.failed.join('\n  ')}`);
  }
  log.info({ lab: name, removed: report.removed.length }, 'lab removed');
  return report;
}

/** Things of this lab that exist on the machine without a state file (an earlier crash). */
export async function findLeftovers(names: LabNames): Promise<string[]> {
  const out: string[] = [];
  for (const ns of await netnsList()) if (isLabNetns(names, ns)) out.push(`netns ${ns}`);
  for (const l of await linkNames()) if (l.startsWith(names.linkPrefix)) out.push(`link ${l}`);
  const cg = join(cgroup2Root(), names.cgroupRel);
  if (existsSync(cg)) out.push(`cgroup ${cg}`);
  if (existsSync(names.pinRoot)) out.push(`bpf pins ${names.pinRoot}`);
  if (existsSync(ETC_NETNS)) for (const e of readdirSync(ETC_NETNS)) if (isLabNetns(names, e)) out.push(`${join(ETC_NETNS, e)}`);
  if (existsSync(names.stateDir)) out.push(`state dir ${names.stateDir}`);
  return out;
}
