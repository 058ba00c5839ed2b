// The pods of this node found without the CNI plugin, from the kernel: for pods that were running
// before weft was installed, or whose ADD no agent took (the record of an agent's pods is lost with
// its state directory). Read once at agent start:
//
//   /proc/<pid>/ns/net      every process's network namespace (an nsfs inode)
//   /var/run/netns/*        the namespaces runtimes pin there (containerd, CRI-O, `ip netns`): the
//                           stable path the agent then enters; a netns nobody pinned is skipped
//   /proc/<pid>/cgroup      the process's cgroup v2 path, which names its pod: kubelet's pod cgroup
//                           (`pod<uid>` with the cgroupfs driver, `kubepods-…-pod<uid>.slice` with
//                           systemd) gives the pod's uid; the lab's (`<node cgroup>/pods/<ns>_<name>`)
//                           its namespace and name
//
// Only the kernel and the runtime's pins are read — nothing a tenant can write names a netns — and a
// pod found here is adopted only if the cluster state places it on this node (the caller checks).
// Limits: a pod with no process (a sandbox whose processes all exited) is not seen; a netns shared by
// processes of two pods is skipped; the kubelet layout needs the pod's uid in the cluster state.
import { readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { join } from 'node:path';

/** Who a pod is, as its cgroup path says. */
export type PodCgroupIdentity = { kind: 'uid'; uid: string } | { kind: 'name'; namespace: string; name: string };

export interface FoundPod {
  /** The pod's netns, by its pinned path. */
  netns: string;
  /** The netns inode (nsfs), the same for every process in the pod. */
  inode: bigint;
  identity: PodCgroupIdentity;
  /** The processes seen in it. */
  pids: number[];
}

export interface PodScanOptions {
  procDir: string;
  netnsDir: string;
  /** Where cgroup v2 is mounted: /proc/<pid>/cgroup paths are relative to it. */
  cgroupRoot: string;
  /** The lab's pod cgroups live under here, one `<namespace>_<name>` each (absolute path). */
  labPodsCgroup?: string;
}

export interface PodScanResult {
  pods: FoundPod[];
  /** Namespaces that look like a pod's but were left alone, and why. */
  skipped: Array<{ inode: bigint; pids: number[]; why: string }>;
}

const UUID = '[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}';
/** cgroupfs driver: `.../kubepods/burstable/pod<uid>/<container>`; static pods have a 32-hex uid. */
const KUBELET_CGROUPFS = new RegExp(`^pod(${UUID}|[0-9a-f]{32})$`);
/** systemd driver: `kubepods-burstable-pod<uid with _ for ->.slice`. */
const KUBELET_SYSTEMD = new RegExp(`^kubepods(?:-[a-z]+)*-pod(${UUID}|[0-9a-f]{32})\\.slice$`);
const LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const POD_NAME = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

/** The pod a cgroup v2 path (absolute) belongs to, if it is a pod's. */
export function podOfCgroup(path: string, opts: Pick<PodScanOptions, 'labPodsCgroup'>): PodCgroupIdentity | undefined {
  if (opts.labPodsCgroup && path.startsWith(`${opts.labPodsCgroup}/`)) {
    const seg = path.slice(opts.labPodsCgroup.length + 1).split('/')[0] ?? '';
    const cut = seg.indexOf('_');
    // Namespace and pod names cannot contain '_', so the first one splits them unambiguously.
    const namespace = seg.slice(0, cut);
    const name = seg.slice(cut + 1);
    if (cut > 0 && LABEL.test(namespace) && POD_NAME.test(name)) return { kind: 'name', namespace, name };
    return undefined;
  }
  for (const seg of path.split('/')) {
    const m = KUBELET_CGROUPFS.exec(seg) ?? KUBELET_SYSTEMD.exec(seg);
    if (m) return { kind: 'uid', uid: m[1]!.replaceAll('_', '-') };
  }
  return undefined;
}

function nsInode(link: string): bigint | undefined {
  const m = /^net:\[(\d+)\]$/.exec(link);
  return m ? BigInt(m[1]!) : undefined;
}

function readNetns(procDir: string, pid: string): bigint | undefined {
  try {
    return nsInode(readlinkSync(join(procDir, pid, 'ns', 'net')));
  } catch {
    return undefined; // exited meanwhile, or a kernel thread
  }
}

/** The cgroup v2 line of /proc/<pid>/cgroup (`0::/path`), made absolute. */
function readCgroup(procDir: string, pid: number, cgroupRoot: string): string | undefined {
  try {
    const line = readFileSync(join(procDir, String(pid), 'cgroup'), 'utf8')
      .split('\n')
      .find((l) => l.startsWith('0::'));
    return line === undefined ? undefined : join(cgroupRoot, line.slice(3));
  } catch {
    return undefined;
  }
}

/** Pinned network namespaces by inode (the first name in sorted order when one is pinned twice). */
function pinnedNetns(netnsDir: string): Map<bigint, string> {
  const out = new Map<bigint, string>();
  let names: string[];
  try {
    names = readdirSync(netnsDir).sort();
  } catch {
    return out;
  }
  for (const name of names) {
    try {
      const ino = statSync(join(netnsDir, name), { bigint: true }).ino;
      if (!out.has(ino)) out.set(ino, join(netnsDir, name));
    } catch {
      // removed meanwhile, or not a namespace
    }
  }
  return out;
}

const sameIdentity = (a: PodCgroupIdentity, b: PodCgroupIdentity): boolean =>
  a.kind === 'uid' ? b.kind === 'uid' && a.uid === b.uid : b.kind === 'name' && a.namespace === b.namespace && a.name === b.name;

/** One pass over /proc: every netns other than ours and init's whose processes belong to one pod. */
export function scanPods(opts: PodScanOptions): PodScanResult {
  const own = readNetns(opts.procDir, 'self');
  const init = readNetns(opts.procDir, '1');
  const byNetns = new Map<bigint, number[]>();
  for (const entry of readdirSync(opts.procDir)) {
    if (!/^\d+$/.test(entry)) continue;
    const ino = readNetns(opts.procDir, entry);
    if (ino === undefined || ino === own || ino === init) continue;
    const pids = byNetns.get(ino);
    if (pids) pids.push(Number(entry));
    else byNetns.set(ino, [Number(entry)]);
  }
  const pinned = pinnedNetns(opts.netnsDir);
  const result: PodScanResult = { pods: [], skipped: [] };
  for (const [inode, pids] of byNetns) {
    pids.sort((a, b) => a - b);
    const identities: PodCgroupIdentity[] = [];
    for (const pid of pids) {
      const cg = readCgroup(opts.procDir, pid, opts.cgroupRoot);
      const id = cg === undefined ? undefined : podOfCgroup(cg, opts);
      if (id && !identities.some((x) => sameIdentity(x, id))) identities.push(id);
    }
    if (identities.length === 0) continue; // not a pod's (a test's, a tool's, another lab node's)
    if (identities.length > 1) {
      result.skipped.push({ inode, pids, why: 'processes of more than one pod share this netns' });
      continue;
    }
    const netns = pinned.get(inode);
    if (!netns) {
      result.skipped.push({ inode, pids, why: `the netns is not pinned under ${opts.netnsDir}` });
      continue;
    }
    result.pods.push({ netns, inode, identity: identities[0]!, pids });
  }
  return result;
}
