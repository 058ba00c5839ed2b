// The start-up scan for running pods (agent/node/pod-scan.ts) over a made-up /proc and netns dir: the
// same files the kernel and the runtime provide (ns/net links naming an nsfs inode, cgroup v2 lines,
// pinned namespaces), so every rule is checked without root.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { podOfCgroup, scanPods } from '../agent/node/pod-scan.js';

const LAB_PODS = '/sys/fs/cgroup/weft-lab-x/node-a/pods';

test('a cgroup path names its pod: kubelet (cgroupfs and systemd drivers, static pods) and the lab', () => {
  const uid = '3f1c1a52-8e0b-4a57-9c1e-2b7a4d2f9e01';
  assert.deepEqual(podOfCgroup(`/sys/fs/cgroup/kubepods/burstable/pod${uid}/0f7e1c`, {}), { kind: 'uid', uid });
  assert.deepEqual(podOfCgroup(`/sys/fs/cgroup/kubepods/pod${uid}/abc`, {}), { kind: 'uid', uid });
  assert.deepEqual(
    podOfCgroup(`/sys/fs/cgroup/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${uid.replaceAll('-', '_')}.slice/cri-containerd-0f7e.scope`, {}),
    { kind: 'uid', uid },
  );
  assert.deepEqual(podOfCgroup('/sys/fs/cgroup/kubepods.slice/kubepods-pod0123456789abcdef0123456789abcdef.slice/x.scope', {}), { kind: 'uid', uid: '0123456789abcdef0123456789abcdef' });
  // Inside a cgroup namespace the path starts with /.. segments: the pod segment is still there.
  assert.deepEqual(podOfCgroup(`/sys/fs/cgroup/../../kubepods/pod${uid}/c`, {}), { kind: 'uid', uid });
  assert.deepEqual(podOfCgroup(`${LAB_PODS}/shop_api-0`, { labPodsCgroup: LAB_PODS }), { kind: 'name', namespace: 'shop', name: 'api-0' });
  assert.deepEqual(podOfCgroup(`${LAB_PODS}/shop_api.v2/sub`, { labPodsCgroup: LAB_PODS }), { kind: 'name', namespace: 'shop', name: 'api.v2' });
  for (const p of [
    '/sys/fs/cgroup/system.slice/sshd.service',
    '/sys/fs/cgroup/kubepods/burstable', // the QoS class, no pod
    '/sys/fs/cgroup/kubepods/podnot-a-uid/x',
    `${LAB_PODS}/noseparator`,
    `${LAB_PODS}/Shop_api`, // not a namespace name
    `${LAB_PODS}/_api`,
    '/sys/fs/cgroup/weft-lab-x/node-b/pods/shop_api', // another node's pod
  ]) {
    assert.equal(podOfCgroup(p, { labPodsCgroup: LAB_PODS }), undefined, p);
  }
});

test('the scan finds each pod netns once, by its pinned path, and leaves the rest alone', (t) => {
  const root = mkdtempSync(join(tmpdir(), 'weft-podscan-'));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  const proc = join(root, 'proc');
  const netnsDir = join(root, 'netns');
  mkdirSync(netnsDir);
  // Pinned namespaces: files whose inode stands for the nsfs inode.
  const pin = (name: string): bigint => {
    writeFileSync(join(netnsDir, name), '');
    return statSync(join(netnsDir, name), { bigint: true }).ino;
  };
  const api = pin('cni-1111');
  const db = pin('cni-2222');
  const shared = pin('cni-3333');
  const host = 4026531840n;
  const node = 4026532000n;
  const unpinned = 4026539999n;
  const proc_ = (pid: string, netns: bigint, cgroup: string): void => {
    mkdirSync(join(proc, pid, 'ns'), { recursive: true });
    symlinkSync(`net:[${netns}]`, join(proc, pid, 'ns', 'net'));
    writeFileSync(join(proc, pid, 'cgroup'), `0::${cgroup}\n`);
  };
  proc_('1', host, '/init.scope');
  proc_('self', node, '/weft-lab-x/node-a/agent');
  proc_('100', node, '/weft-lab-x/node-a/agent'); // the agent's own netns: never a pod
  proc_('200', api, '/weft-lab-x/node-a/pods/shop_api');
  proc_('201', api, '/weft-lab-x/node-a/pods/shop_api'); // a second process of the same pod
  proc_('202', api, '/user.slice/nsenter'); // someone nsenter'ed: not the pod's, ignored
  proc_('300', db, '/kubepods/besteffort/pod3f1c1a52-8e0b-4a57-9c1e-2b7a4d2f9e01/c1');
  proc_('400', shared, '/weft-lab-x/node-a/pods/shop_a');
  proc_('401', shared, '/weft-lab-x/node-a/pods/shop_b'); // two pods in one netns: ambiguous
  proc_('500', unpinned, '/weft-lab-x/node-a/pods/shop_ghost');
  proc_('600', host, '/weft-lab-x/node-a/pods/shop_hostnet'); // a host-network pod: the host's netns
  mkdirSync(join(proc, 'sys'), { recursive: true }); // not a pid
  mkdirSync(join(proc, '700')); // a process that exited while we looked: no files

  const r = scanPods({ procDir: proc, netnsDir, cgroupRoot: '/sys/fs/cgroup', labPodsCgroup: '/sys/fs/cgroup/weft-lab-x/node-a/pods' });
  const pods = r.pods.map((p) => ({ netns: p.netns, identity: p.identity, pids: p.pids })).sort((a, b) => a.netns.localeCompare(b.netns));
  assert.deepEqual(pods, [
    { netns: join(netnsDir, 'cni-1111'), identity: { kind: 'name', namespace: 'shop', name: 'api' }, pids: [200, 201, 202] },
    { netns: join(netnsDir, 'cni-2222'), identity: { kind: 'uid', uid: '3f1c1a52-8e0b-4a57-9c1e-2b7a4d2f9e01' }, pids: [300] },
  ]);
  const skipped = r.skipped.map((s) => ({ inode: s.inode, why: s.why })).sort((a, b) => Number(a.inode - b.inode));
  assert.deepEqual(skipped, [
    { inode: shared, why: 'processes of more than one pod share this netns' },
    { inode: unpinned, why: `the netns is not pinned under ${netnsDir}` },
  ].sort((a, b) => Number(a.inode - b.inode)));
});

test('no /proc entries and no netns dir: nothing found, nothing thrown', (t) => {
  const root = mkdtempSync(join(tmpdir(), 'weft-podscan-'));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  mkdirSync(join(root, 'proc'));
  assert.deepEqual(scanPods({ procDir: join(root, 'proc'), netnsDir: join(root, 'missing'), cgroupRoot: '/sys/fs/cgroup' }), { pods: [], skipped: [] });
});
