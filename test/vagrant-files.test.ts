// The Vagrant + kind way to try weft, checked without a VM: `vagrant validate` accepts the
// Vagrantfile (and refuses a broken one), the scripts pass `bash -n` and shellcheck, the kind config
// gives each node its own BPF filesystem where provision.sh keeps it, and examples/k8s/ is the lab's
// example app (same pods, service accounts, ports and services) in manifests that validate against
// the Kubernetes schemas (kubernetes-models) and that examples/policies.yaml can select.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { accessSync, constants, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { Deployment } from 'kubernetes-models/apps/v1';
import { Namespace, Service, ServiceAccount } from 'kubernetes-models/v1';
import { repoPath } from '../agent/system/assets.js';
import { requirePrivileges } from './helpers/privileged.js';

/** A parsed YAML document: the tests below check its fields one by one. */
type Doc = Record<string, any>;

const VAGRANT_DIR = repoPath('vagrant');
const K8S_DIR = repoPath('examples', 'k8s');
const SCRIPTS = readdirSync(VAGRANT_DIR).filter((f) => f.endsWith('.sh')).sort();

function readDocs(file: string): Doc[] {
  const docs = parseAllDocuments(readFileSync(file, 'utf8'));
  for (const d of docs) assert.deepEqual(d.errors.map((e) => e.message), [], `${file}: YAML errors`);
  return docs.map((d) => d.toJS() as Doc).filter((d) => d !== null);
}

/** A tool from scripts/setup.mjs's PACKAGES: skip without it, but CI (where setup installed it) fails. */
function requireTool(t: TestContext, tool: string, args: string[]): boolean {
  const r = spawnSync(tool, args, { encoding: 'utf8' });
  if (!r.error && r.status === 0) return true;
  const why = `${tool} is not installed (scripts/setup.mjs installs it as root)`;
  if (process.env.CI === 'true') throw new Error(why);
  t.skip(why);
  return false;
}

function vagrantValidate(cwd: string, home: string): { status: number | null; out: string } {
  // Provider settings are skipped (-p): validating them needs VirtualBox or libvirt installed. The
  // machine state (.vagrant) and Vagrant's home go to a scratch directory, not into the checkout.
  const r = spawnSync('vagrant', ['validate', '-p'], {
    encoding: 'utf8',
    env: { ...process.env, VAGRANT_CWD: cwd, VAGRANT_HOME: join(home, 'home'), VAGRANT_DOTFILE_PATH: join(home, 'dot'), VAGRANT_CHECKPOINT_DISABLE: '1', VAGRANT_NO_COLOR: '1' },
    timeout: 60_000,
  });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

test('vagrant validate accepts the Vagrantfile and refuses one whose provisioner has no script', (t) => {
  if (!requireTool(t, 'vagrant', ['--version'])) return;
  const scratch = mkdtempSync(join(tmpdir(), 'weft-vagrant-'));
  try {
    const ok = vagrantValidate(VAGRANT_DIR, scratch);
    assert.equal(ok.status, 0, ok.out);
    assert.match(ok.out, /validated successfully/);
    const broken = join(scratch, 'broken');
    const text = readFileSync(join(VAGRANT_DIR, 'Vagrantfile'), 'utf8');
    const mangled = text.replace('inline: "bash /weft/vagrant/smoke.sh"', 'inline: nil');
    assert.notEqual(mangled, text, 'the smoke provisioner is where the test expects it');
    mkdirSync(broken);
    writeFileSync(join(broken, 'Vagrantfile'), mangled);
    const bad = vagrantValidate(broken, scratch);
    assert.notEqual(bad.status, 0, bad.out);
    assert.match(bad.out, /`path` or `inline` must be set/);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
});

test('the Vagrantfile runs the provisioning, cluster and smoke scripts, which exist and are executable (run by hand too)', () => {
  const text = readFileSync(join(VAGRANT_DIR, 'Vagrantfile'), 'utf8');
  const run = [...text.matchAll(/config\.vm\.provision "(\w+)", type: "shell", inline: "bash \/weft\/vagrant\/([\w.-]+)"/g)].map((m) => [m[1], m[2]]);
  assert.deepEqual(run, [['system', 'provision.sh'], ['cluster', 'cluster-up.sh'], ['smoke', 'smoke.sh']]);
  for (const [, script] of run) accessSync(join(VAGRANT_DIR, script!), constants.X_OK);
  assert.match(text, /config\.vm\.box = ENV\.fetch\("WEFT_VM_BOX", "debian\/bookworm64"\)/);
});

test('every script in vagrant/ parses with bash -n', () => {
  assert.ok(SCRIPTS.length >= 3, `scripts found: ${SCRIPTS.join(', ')}`);
  for (const s of SCRIPTS) {
    const r = spawnSync('bash', ['-n', join(VAGRANT_DIR, s)], { encoding: 'utf8' });
    assert.equal(r.status, 0, `${s}: ${r.stderr}`);
    assert.match(readFileSync(join(VAGRANT_DIR, s), 'utf8'), /^#!\/usr\/bin\/env bash\n[\s\S]*\nset -euo pipefail\n/, `${s}: bash with errexit, nounset and pipefail`);
  }
  const bad = spawnSync('bash', ['-n'], { input: 'if true; then\n', encoding: 'utf8' });
  assert.notEqual(bad.status, 0, 'bash -n refuses an unterminated if');
});

test('every script in vagrant/ passes shellcheck, which finds a planted mistake', (t) => {
  if (!requireTool(t, 'shellcheck', ['--version'])) return;
  for (const s of SCRIPTS) {
    const r = spawnSync('shellcheck', ['--shell=bash', join(VAGRANT_DIR, s)], { encoding: 'utf8' });
    assert.equal(r.status, 0, `${s}:\n${r.stdout}${r.stderr}`);
  }
  // A check that cannot fail proves nothing: an unquoted expansion must be reported.
  const planted = spawnSync('shellcheck', ['--shell=bash', '-'], { input: '#!/usr/bin/env bash\nrm $1\n', encoding: 'utf8' });
  assert.notEqual(planted.status, 0);
  assert.match(planted.stdout, /SC2086/);
});

test('the kind config: two nodes on kindnet, each with its own BPF filesystem from provision.sh', () => {
  const [cfg, ...rest] = readDocs(join(VAGRANT_DIR, 'kind-config.yaml'));
  assert.equal(rest.length, 0);
  assert.equal(cfg!.kind, 'Cluster');
  assert.equal(cfg!.apiVersion, 'kind.x-k8s.io/v1alpha4');
  assert.notEqual(cfg!.networking?.disableDefaultCNI, true, 'weft chains after a CNI: kindnet stays');
  const nodes = cfg!.nodes as Doc[];
  assert.deepEqual(nodes.map((n) => n.role), ['control-plane', 'worker']);
  const bpf = nodes.map((n) => (n.extraMounts as Doc[]).filter((m) => m.containerPath === '/sys/fs/bpf'));
  assert.deepEqual(bpf.map((m) => m.length), [1, 1], 'one bpffs mount per node');
  const hostPaths = bpf.map((m) => m[0]!.hostPath as string);
  assert.notEqual(hostPaths[0], hostPaths[1], 'the nodes share a kernel: one bpffs for both would mix their pins');
  // provision.sh keeps exactly these directories (tmpfiles), cluster-up.sh makes them too.
  const provision = readFileSync(join(VAGRANT_DIR, 'provision.sh'), 'utf8');
  const dir = /BPFFS_NODES_DIR="\$\{BPFFS_NODES_DIR:-([^}]+)\}"/.exec(provision)?.[1];
  const names = /KIND_NODES=\(([^)]*)\)/.exec(provision)?.[1]?.split(/\s+/);
  assert.ok(dir && names, 'provision.sh names the bpffs directories');
  assert.deepEqual(hostPaths, names!.map((n) => `${dir}/${n}`));
  for (const p of hostPaths) assert.ok(p.startsWith('/sys/fs/bpf/'), `${p} is on the machine's bpffs`);
  // The example app's placement preferences name these node labels.
  assert.deepEqual(nodes.map((n) => n.labels?.['weft.io/example-node']), ['a', 'b']);
});

/** examples/k8s/ as kustomize would read it: the resources of its kustomization, in order. */
function k8sDocs(): Doc[] {
  const [kust] = readDocs(join(K8S_DIR, 'kustomization.yaml'));
  assert.equal(kust!.kind, 'Kustomization');
  const files = kust!.resources as string[];
  const onDisk = readdirSync(K8S_DIR).filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml').sort();
  assert.deepEqual([...files].sort(), onDisk, 'the kustomization lists every manifest in examples/k8s/');
  return files.flatMap((f) => readDocs(join(K8S_DIR, f)));
}

const MODELS: Record<string, (d: Doc) => { validate(): void }> = {
  'v1/Namespace': (d) => new Namespace(d),
  'v1/ServiceAccount': (d) => new ServiceAccount(d),
  'v1/Service': (d) => new Service(d),
  'apps/v1/Deployment': (d) => new Deployment(d),
};

test('examples/k8s/ manifests validate against the Kubernetes schemas, and a broken one does not', () => {
  const docs = k8sDocs();
  assert.ok(docs.length > 0);
  for (const d of docs) {
    const make = MODELS[`${d.apiVersion}/${d.kind}`];
    assert.ok(make, `${d.apiVersion} ${d.kind} ${d.metadata?.name}: a kind this test knows`);
    assert.doesNotThrow(() => make(d).validate(), `${d.kind} ${d.metadata?.namespace}/${d.metadata?.name}`);
  }
  const deployment = docs.find((d) => d.kind === 'Deployment')!;
  const broken = structuredClone(deployment);
  broken.spec.template.spec.containers[0].ports = [{ containerPort: '8080' }];
  assert.throws(() => new Deployment(broken).validate(), /containerPort must be integer/);
});

test('examples/k8s/ is the lab example: same namespaces, enrollment, pods, service accounts, ports and services', () => {
  const k8s = k8sDocs();
  const lab = readDocs(repoPath('examples', 'lab.yaml'));
  const key = (d: Doc) => `${d.metadata.namespace}/${d.metadata.name}`;

  const namespaces = (docs: Doc[]) => docs.filter((d) => d.kind === 'Namespace').map((d): [string, unknown] => [d.metadata.name, d.metadata.labels ?? {}]);
  const labNs = namespaces(lab);
  const k8sNs = namespaces(k8s);
  assert.deepEqual(new Map(k8sNs), new Map(labNs));

  const deployments = new Map(k8s.filter((d) => d.kind === 'Deployment').map((d) => [key(d), d]));
  const accounts = new Set(k8s.filter((d) => d.kind === 'ServiceAccount').map(key));
  const labPods = lab.filter((d) => d.kind === 'Pod');
  assert.deepEqual([...deployments.keys()].sort(), labPods.map(key).sort());
  for (const pod of labPods) {
    const dep = deployments.get(key(pod))!;
    const tpl = dep.spec.template;
    assert.deepEqual(dep.spec.selector.matchLabels, pod.metadata.labels, `${key(pod)}: selector`);
    assert.deepEqual(tpl.metadata.labels, pod.metadata.labels, `${key(pod)}: pod labels`);
    assert.equal(tpl.spec.serviceAccountName, pod.spec.serviceAccountName, `${key(pod)}: service account (its SPIFFE identity)`);
    assert.ok(accounts.has(`${pod.metadata.namespace}/${pod.spec.serviceAccountName}`), `${key(pod)}: its ServiceAccount is created`);
    const ports = (c: Doc[]) => c.flatMap((x) => (x.ports ?? []).map((p: Doc) => p.containerPort)).sort();
    assert.deepEqual(ports(tpl.spec.containers), ports(pod.spec.containers), `${key(pod)}: container ports`);
    // The lab puts node-a's pods on kind's node "a" and node-b's on "b" (vagrant/kind-config.yaml).
    const prefer = tpl.spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].preference.matchExpressions[0];
    assert.deepEqual([prefer.key, prefer.values], ['weft.io/example-node', [pod.spec.nodeName.replace(/^node-/, '')]], `${key(pod)}: node preference`);
    // No probes: the kubelet would probe in plaintext, which STRICT mTLS refuses.
    for (const c of tpl.spec.containers) assert.ok(!c.readinessProbe && !c.livenessProbe && !c.startupProbe, `${key(pod)}: no kubelet probes`);
  }

  const labServices = lab.filter((d) => d.kind === 'Service');
  const services = new Map(k8s.filter((d) => d.kind === 'Service').map((d) => [key(d), d]));
  assert.deepEqual([...services.keys()].sort(), labServices.map(key).sort());
  for (const s of labServices) {
    const svc = services.get(key(s))!;
    assert.deepEqual(svc.spec.selector, s.spec.selector, `${key(s)}: selector`);
    const backing = [...deployments.values()].find((d) => d.metadata.namespace === s.metadata.namespace && Object.entries(s.spec.selector).every(([k, v]) => d.spec.template.metadata.labels[k] === v));
    assert.ok(backing, `${key(s)}: a Deployment's pods match its selector`);
    const containerPorts = new Set(backing.spec.template.spec.containers.flatMap((c: Doc) => (c.ports ?? []).map((p: Doc) => p.containerPort)));
    assert.deepEqual(
      svc.spec.ports.map((p: Doc) => [p.port, p.targetPort ?? p.port]),
      s.spec.ports.map((p: Doc) => [p.port, p.targetPort ?? p.port]),
      `${key(s)}: ports`,
    );
    for (const p of svc.spec.ports) assert.ok(containerPorts.has(p.targetPort ?? p.port), `${key(s)}: port ${p.port} reaches a container port`);
  }
});

test('examples/policies.yaml selects the example pods and names their service accounts', () => {
  const k8s = k8sDocs();
  const policies = readDocs(repoPath('examples', 'policies.yaml'));
  const accounts = new Set(k8s.filter((d) => d.kind === 'ServiceAccount').map((d) => `cluster.local/ns/${d.metadata.namespace}/sa/${d.metadata.name}`));
  const pods = k8s.filter((d) => d.kind === 'Deployment').map((d) => ({ ns: d.metadata.namespace as string, labels: d.spec.template.metadata.labels as Record<string, string> }));
  for (const p of policies.filter((d) => d.kind === 'AuthorizationPolicy')) {
    const sel = (p.spec.selector?.matchLabels ?? {}) as Record<string, string>;
    assert.ok(pods.some((pod) => pod.ns === p.metadata.namespace && Object.entries(sel).every(([k, v]) => pod.labels[k] === v)), `${p.metadata.name} selects a pod`);
    for (const r of p.spec.rules ?? []) {
      for (const f of r.from ?? []) for (const principal of f.source?.principals ?? []) assert.ok(accounts.has(principal), `${p.metadata.name}: ${principal} exists`);
    }
  }
});

/** daemonset/core/ as kustomize reads it (the resources of its kustomization). */
function daemonsetDocs(): Doc[] {
  const dir = repoPath('daemonset', 'core');
  const [kust] = readDocs(join(dir, 'kustomization.yaml'));
  return (kust!.resources as string[]).flatMap((f) => readDocs(join(dir, f)));
}

test('the scripts and the kind config agree with daemonset/: the relay smoke.sh reads, the image, the bpffs the agent mounts', () => {
  const docs = daemonsetDocs();
  const smoke = readFileSync(join(VAGRANT_DIR, 'smoke.sh'), 'utf8');
  const namespace = /^WEFT_NAMESPACE=(\S+)$/m.exec(smoke)?.[1];
  const relay = /^RELAY="\$\{RELAY:-deployment\/([^}]+)\}"$/m.exec(smoke)?.[1];
  assert.ok(namespace && relay, 'smoke.sh names the namespace and the relay');
  assert.equal(/^WEFT_NAMESPACE=(\S+)$/m.exec(readFileSync(join(VAGRANT_DIR, 'cluster-up.sh'), 'utf8'))?.[1], namespace);
  const relayDeployment = docs.find((d) => d.kind === 'Deployment' && d.metadata.name === relay && d.metadata.namespace === namespace);
  assert.ok(relayDeployment, `daemonset/ has the Deployment ${namespace}/${relay} that smoke.sh runs weft observe in`);

  // cluster-up.sh loads the image into kind instead of pushing it: no container may insist on pulling.
  const containers = docs.flatMap((d) => (d.spec?.template?.spec ? [...(d.spec.template.spec.initContainers ?? []), ...d.spec.template.spec.containers] : []));
  const weft = containers.filter((c: Doc) => /^(.*\/)?weft(:|@|$)/.test(c.image));
  assert.ok(weft.length >= 3, 'the controller, the agent and the relay run weft');
  for (const c of weft) assert.notEqual(c.imagePullPolicy, 'Always', `${c.name}: a kind node would pull instead of using the loaded image`);

  // The agent pins under the node's /sys/fs/bpf, which kind-config.yaml makes a per-node bpffs.
  const agent = docs.find((d) => d.kind === 'DaemonSet')!;
  const podSpec = agent.spec.template.spec;
  const mount = podSpec.containers.flatMap((c: Doc) => c.volumeMounts ?? []).find((m: Doc) => m.mountPath === '/sys/fs/bpf');
  assert.ok(mount, 'the agent mounts /sys/fs/bpf');
  const volume = podSpec.volumes.find((v: Doc) => v.name === mount.name);
  const [cfg] = readDocs(join(VAGRANT_DIR, 'kind-config.yaml'));
  for (const n of cfg!.nodes as Doc[]) {
    assert.ok((n.extraMounts as Doc[]).some((m) => m.containerPath === volume.hostPath.path), `kind node ${n.role} has a bpffs at ${volume.hostPath.path}`);
  }
});

test('a kind node\'s /sys/fs/bpf, bound from its own directory of the machine\'s bpffs, satisfies the agent and keeps the nodes\' pins apart', async (t) => {
  if (!requirePrivileges(t)) return;
  // What kind does with kind-config.yaml's extraMounts, in a scratch mount namespace per node: the
  // node's directory of the machine's bpffs is bound where the node (and the agent's hostPath) sees
  // /sys/fs/bpf; the agent pins under /sys/fs/bpf/weft there.
  const { checkNode } = (await import(repoPath('daemonset', 'image', 'weft-node.mjs'))) as { checkNode: (p: { bpffs: string }, mountinfo: string) => string[] };
  const machine = `/sys/fs/bpf/weft-kind-test-${process.pid}`;
  const scratch = mkdtempSync(join(tmpdir(), 'weft-kind-node-'));
  try {
    const nodes = ['control-plane', 'worker'];
    for (const n of nodes) {
      const dir = join(machine, n);
      mkdirSync(dir, { recursive: true });
      const nodeBpffs = join(scratch, n);
      mkdirSync(nodeBpffs);
      // Inside the node's mount namespace: bind, then pin a map the way the agent would, then read mountinfo.
      const script = `set -e; mount --bind ${dir} ${nodeBpffs}; mkdir ${nodeBpffs}/weft; bpftool map create ${nodeBpffs}/weft/m type array key 4 value 4 entries 1 name weft_kind_${n === 'worker' ? 'w' : 'c'}; cat /proc/self/mountinfo`;
      const r = spawnSync('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      assert.deepEqual(checkNode({ bpffs: join(nodeBpffs, 'weft') }, r.stdout), [], `node ${n}: the agent's node check`);
    }
    // Each node's pins are in its own directory of the machine's bpffs, and only there.
    for (const n of nodes) assert.deepEqual(readdirSync(join(machine, n, 'weft')), ['m'], `node ${n}'s pins`);
    // And a plain directory is refused by the same check (it can fail).
    const plain = spawnSync('cat', ['/proc/self/mountinfo'], { encoding: 'utf8' }).stdout;
    assert.equal(checkNode({ bpffs: join(scratch, 'control-plane', 'weft') }, plain).length, 1);
  } finally {
    rmSync(machine, { recursive: true, force: true });
    rmSync(scratch, { recursive: true, force: true });
  }
});
