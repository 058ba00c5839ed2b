// A lab with its node agents running: every agent attaches connect4, connect6 and sockops to its
// node's cgroup and one sk_lookup link per enrolled pod netns, all pinned. `lab down` must leave none
// of those links attached and nothing else behind either.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { labLeftovers, requirePrivileges, repoRoot } from './helpers/privileged.js';
import { labDown, labNames, labUp, type LabHandle } from '../agent/lab/index.js';
import { cgroup2Root, cgroupId } from '../agent/system/mounts.js';

const LAB = `t${process.pid.toString(36)}a`;
const names = labNames(LAB);
const dir = mkdtempSync(join(tmpdir(), 'weft-lab-agents-'));
const ECHO = join(repoRoot(), 'examples', 'apps', 'echo-server.mjs');

const pod = (ns: string, name: string, node: string): string => `---
apiVersion: v1
kind: Pod
metadata: {name: ${name}, namespace: ${ns}, labels: {app: ${name}}}
spec:
  nodeName: ${node}
  containers:
  - name: main
    command: [${JSON.stringify(process.execPath)}, ${JSON.stringify(ECHO)}, "8080", "${name}"]
    ports: [{containerPort: 8080}]
`;

// Ranges of this test only: other lab tests (and a lab someone runs by hand) use other ones.
const LAB_YAML = `apiVersion: weft.io/v1alpha1
kind: LabConfig
metadata: {name: agents}
spec: {nodeNetwork: 192.168.251.0/24, serviceCIDR: 10.97.0.0/16}
---
apiVersion: weft.io/v1alpha1
kind: Node
metadata: {name: node-a}
spec: {podCIDR: 10.251.1.0/24}
---
apiVersion: weft.io/v1alpha1
kind: Node
metadata: {name: node-b}
spec: {podCIDR: 10.251.2.0/24}
---
apiVersion: v1
kind: Namespace
metadata: {name: mesh, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata: {name: plain}
${pod('mesh', 'echo-a', 'node-a')}${pod('mesh', 'echo-b', 'node-b')}${pod('plain', 'outside', 'node-a')}`;

const CGROUP_ATTACH_TYPES = ['cgroup_inet4_connect', 'cgroup_inet6_connect', 'cgroup_sock_ops'];

interface LinkInfo {
  id: number;
  type: string;
  attach_type?: string;
  cgroup_id?: number;
  netns_ino?: number;
}

const links = (): LinkInfo[] => JSON.parse(execFileSync('bpftool', ['-j', 'link', 'show'], { encoding: 'utf8' }) || '[]') as LinkInfo[];

/** Entries of `bpftool cgroup tree` that name one of this lab's cgroups. */
function labCgroupTree(): string[] {
  const tree = JSON.parse(execFileSync('bpftool', ['-j', 'cgroup', 'tree', cgroup2Root()], { encoding: 'utf8' }) || '[]') as unknown[];
  const ours = new RegExp(`/${names.cgroupRel}["/]`);
  return tree.map((e) => JSON.stringify(e)).filter((e) => ours.test(e));
}

let privileged = false;
let lab: LabHandle | undefined;

before(() => writeFileSync(join(dir, 'lab.yaml'), LAB_YAML));

after(async () => {
  if (privileged) await labDown({ name: LAB }).catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
});

test('lab down detaches every link the agents attached and leaves nothing behind', async (t) => {
  if (!requirePrivileges(t)) return;
  privileged = true;
  await labDown({ name: LAB }); // leftovers of an earlier crashed run of the same pid, if any
  lab = await labUp([join(dir, 'lab.yaml')], { name: LAB, agents: true });

  // What the agents attached: matched by the node cgroup's id (its inode) and the pod netns' inode.
  const cgroups = new Map(lab.nodes.map((n) => [cgroupId(n.cgroup), n.name]));
  const enrolled = lab.pods.filter((p) => p.namespace === 'mesh');
  const outside = lab.pod('plain/outside');
  const netnsIno = (path: string): number => Number(statSync(path).ino);
  const before = links();
  for (const [id, node] of cgroups) {
    const onNode = before.filter((l) => l.cgroup_id !== undefined && BigInt(l.cgroup_id) === id);
    assert.deepEqual(onNode.map((l) => l.attach_type).sort(), CGROUP_ATTACH_TYPES, `links on the cgroup of ${node}`);
  }
  for (const p of enrolled) {
    const ino = netnsIno(p.netnsPath);
    assert.equal(before.filter((l) => l.attach_type === 'sk_lookup' && l.netns_ino === ino).length, 1, `sk_lookup links of ${p.namespace}/${p.name}`);
  }
  assert.equal(before.filter((l) => l.netns_ino === netnsIno(outside.netnsPath)).length, 0, 'the un-enrolled pod has no sk_lookup link');
  // Plus the lab's own service load balancer on the lab's root cgroup.
  const labCgroup = cgroupId(lab.state.cgroupRoot);
  const inos = new Set([...enrolled, outside].map((p) => netnsIno(p.netnsPath)));
  const isOurs = (l: LinkInfo): boolean =>
    (l.cgroup_id !== undefined && (cgroups.has(BigInt(l.cgroup_id)) || BigInt(l.cgroup_id) === labCgroup)) || (l.netns_ino !== undefined && inos.has(l.netns_ino));
  const ours = before.filter(isOurs);
  assert.equal(ours.length, 3 * cgroups.size + enrolled.length + 1);
  assert.ok(labCgroupTree().length > 0, 'bpftool cgroup tree shows the agents’ programs while the lab is up');

  await labDown({ name: LAB });
  lab = undefined;

  // Detached at once: nothing is attached to the lab's cgroups or pod netns any more.
  assert.deepEqual(links().filter(isOurs), []);
  assert.deepEqual(labCgroupTree(), []);
  // The kernel frees a link whose last pin went from a workqueue, so allow it a moment to go.
  const ids = new Set(ours.map((l) => l.id));
  let remaining = links().filter((l) => ids.has(l.id));
  for (let i = 0; i < 40 && remaining.length; i++) {
    await new Promise((r) => setTimeout(r, 50));
    remaining = links().filter((l) => ids.has(l.id));
  }
  assert.deepEqual(remaining, [], 'the links themselves are gone');
  assert.deepEqual(labLeftovers(names), []);
});
