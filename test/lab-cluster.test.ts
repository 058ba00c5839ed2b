// A real lab: two nodes, pods in two namespaces, services. Cross-node and same-node TCP by pod IP,
// service VIPs (the lab's eBPF load balancer), DNS names, exec exit codes, apply, and a `down` that
// leaves nothing behind — also after a crash.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { labLeftovers, requirePrivileges, repoRoot, requireLab } from './helpers/privileged.js';
import { labUp, labApply, labDown, labExec, openLab, labNames, type LabHandle } from '../agent/lab/index.js';

const LAB = `t${process.pid.toString(36)}`;
const names = labNames(LAB);
const dir = mkdtempSync(join(tmpdir(), 'weft-lab-cluster-'));
const ECHO = join(repoRoot(), 'examples', 'apps', 'echo-server.mjs');
const CLIENT = join(repoRoot(), 'examples', 'apps', 'echo-client.mjs');
const NODE = process.execPath;

const pod = (ns: string, name: string, node: string, app: string, port: number): string => `---
apiVersion: v1
kind: Pod
metadata: {name: ${name}, namespace: ${ns}, labels: {app: ${app}}}
spec:
  nodeName: ${node}
  serviceAccountName: ${name}
  containers:
  - name: main
    command: [${JSON.stringify(NODE)}, ${JSON.stringify(ECHO)}, "${port}", "${name}"]
    ports: [{containerPort: ${port}}]
`;

const LAB_YAML = `apiVersion: weft.io/v1alpha1
kind: LabConfig
metadata: {name: test}
spec: {nodeNetwork: 10.213.255.0/28, serviceCIDR: 10.213.128.0/24}
---
apiVersion: weft.io/v1alpha1
kind: Node
metadata: {name: node-a}
spec: {podCIDR: 10.213.1.0/26}
---
apiVersion: weft.io/v1alpha1
kind: Node
metadata: {name: node-b}
spec: {podCIDR: 10.213.2.0/26}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata: {name: legacy}
${pod('shop', 'frontend', 'node-a', 'frontend', 8080)}${pod('shop', 'api', 'node-b', 'api', 8080)}${pod('shop', 'db', 'node-b', 'db', 5432)}${pod('legacy', 'client', 'node-a', 'client', 9000)}---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec: {selector: {app: api}, ports: [{port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec: {selector: {app: db}, ports: [{port: 5432}]}
`;

const APPLY_YAML = `apiVersion: v1
kind: Namespace
metadata: {name: legacy, labels: {istio.io/dataplane-mode: ambient, team: old}}
${pod('legacy', 'worker', 'node-b', 'worker', 7000)}---
apiVersion: v1
kind: Service
metadata: {name: worker, namespace: legacy}
spec: {selector: {app: worker}, ports: [{port: 70, targetPort: 7000}]}
`;

const footprint = (): string[] => labLeftovers(names);

let lab: LabHandle | undefined;
let privileged = false;

before(async () => {
  writeFileSync(join(dir, 'lab.yaml'), LAB_YAML);
  writeFileSync(join(dir, 'apply.yaml'), APPLY_YAML);
});

after(async () => {
  if (privileged) await labDown({ name: LAB }).catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
});

async function echo(from: string, host: string, port: number, msg = 'ping'): Promise<string> {
  const r = await labExec(LAB, from, [NODE, CLIENT, host, String(port), msg], { timeoutMs: 15_000 });
  assert.equal(r.code, 0, `${from} → ${host}:${port} failed: ${r.stderr}`);
  return r.stdout;
}

test('lab up: two nodes, pods and services', async (t) => {
  if (!requirePrivileges(t)) return;
  privileged = true;
  await labDown({ name: LAB }); // leftovers of an earlier crashed run of the same pid, if any
  lab = await labUp([join(dir, 'lab.yaml')], { name: LAB, agents: false });
  assert.equal(lab.nodes.length, 2);
  assert.deepEqual(lab.nodes.map((n) => n.ip), ['10.213.255.2', '10.213.255.3']);
  assert.equal(lab.pod('shop/frontend').ip, '10.213.1.2');
  assert.equal(lab.pod('shop/api').ip, '10.213.2.2');
  assert.equal(lab.service('shop/api').vip, '10.213.128.10');
  const res = readFileSync(join(names.resourcesDir, 'lab.yaml'), 'utf8');
  assert.match(res, /podIP: 10\.213\.2\.2/);
  // No path a privileged agent would enter is written into an object (the runtime or the kernel names the netns).
  assert.doesNotMatch(res, /weft\.io\/(netns|cgroup)/);
  assert.match(res, /clusterIP: 10\.213\.128\.10/);
  assert.match(res, /type: InternalIP\n\s+address: 10\.213\.255\.2/);
});

test('pod IPs: cross-node and same-node TCP echo', async (t) => {
  if (!requireLab(t, lab)) return;
  const api = lab.pod('shop/api');
  const cross = await echo('shop/frontend', api.ip, 8080, 'cross');
  assert.equal(cross, `hello api local=${api.ip}:8080 peer=${lab.pod('shop/frontend').ip}:${/peer=[\d.]+:(\d+)/.exec(cross)![1]}\ncross\n`);
  const same = await echo('shop/api', lab.pod('shop/db').ip, 5432, 'same');
  assert.match(same, new RegExp(`^hello db local=${lab.pod('shop/db').ip}:5432 peer=${api.ip}:\\d+\\nsame\\n$`));
});

test('service VIPs work from another namespace and from the same namespace', async (t) => {
  if (!requireLab(t, lab)) return;
  const vip = lab.service('shop/api').vip;
  assert.match(await echo('legacy/client', vip, 80, 'a'), /^hello api local=10\.213\.2\.2:8080 peer=10\.213\.1\.\d+:\d+\na\n$/);
  assert.match(await echo('shop/frontend', vip, 80, 'b'), /^hello api local=10\.213\.2\.2:8080 /);
  assert.match(await echo('shop/frontend', 'db', 5432), /^hello db /);
});

test('service names resolve inside pods', async (t) => {
  if (!requireLab(t, lab)) return;
  const vip = lab.service('shop/api').vip;
  for (const [from, name] of [
    ['legacy/client', 'api.shop.svc.cluster.local'],
    ['legacy/client', 'api.shop'],
    ['shop/frontend', 'api'],
  ] as const) {
    const r = await labExec(LAB, from, ['getent', 'hosts', name]);
    assert.equal(r.code, 0, `${name} from ${from}`);
    assert.equal(r.stdout.split(/\s+/)[0], vip, `${name} from ${from}`);
  }
  const miss = await labExec(LAB, 'legacy/client', ['getent', 'hosts', 'api']);
  assert.notEqual(miss.code, 0, 'the short name must not resolve from another namespace');
});

test('exec passes the exit code through', async (t) => {
  if (!requireLab(t, lab)) return;
  const r = await labExec(LAB, 'shop/api', ['sh', '-c', 'echo $POD_NAME; exit 7']);
  assert.equal(r.code, 7);
  const env = await labExec(LAB, 'shop/api', ['sh', '-c', 'cat /proc/self/cgroup; readlink /proc/self/ns/net']);
  assert.match(env.stdout, new RegExp(`/${names.cgroupRel}/node-b/pods/shop_api`));
  const nsIno = execFileSync('stat', ['-L', '-c', '%i', `/var/run/netns/${LAB}-pod-shop-api`], { encoding: 'utf8' }).trim();
  assert.match(env.stdout, new RegExp(`net:\\[${nsIno}\\]`));
});

test('apply adds a pod and a service and changes a namespace label', async (t) => {
  if (!requireLab(t, lab)) return;
  const apiIP = lab.pod('shop/api').ip;
  await labApply([join(dir, 'apply.yaml')], { name: LAB });
  const worker = lab.pod('legacy/worker');
  assert.equal(worker.node, 'node-b');
  assert.equal(lab.pod('shop/api').ip, apiIP, 'existing pods keep their IPs');
  const vip = lab.service('legacy/worker').vip;
  assert.equal(vip, '10.213.128.12');
  const res = readFileSync(join(names.resourcesDir, 'lab.yaml'), 'utf8');
  assert.match(res, /name: legacy\n\s+labels:\n\s+istio\.io\/dataplane-mode: ambient\n\s+team: old/);
  assert.match(res, /name: worker/);
  assert.match(res, /clusterIP: 10\.213\.128\.12/);
  // The new service resolves (hosts rewritten in place, also for pods that were already running) and works.
  assert.match(await echo('legacy/client', 'worker', 70), /^hello worker /);
  assert.match(await echo('shop/frontend', 'worker.legacy', 70), /^hello worker /);
  const status = await openLab(LAB).status();
  assert.equal(status.pods.find((p) => p.name === 'client')!.enrolled, true);
});

test('down leaves no netns, link, cgroup, pin, process, /etc/netns entry or state dir', async (t) => {
  if (!requireLab(t, lab)) return;
  assert.ok(footprint().length > 0);
  await labDown({ name: LAB });
  assert.deepEqual(footprint(), []);
  lab = undefined;
});

test('down after a crash (state.json gone) still removes everything', async (t) => {
  if (!requirePrivileges(t)) return;
  await labUp([join(dir, 'lab.yaml')], { name: LAB, agents: false });
  assert.ok(footprint().some((x) => x.startsWith('process ')));
  unlinkSync(names.stateFile);
  await labDown({ name: LAB });
  assert.deepEqual(footprint(), []);
});
