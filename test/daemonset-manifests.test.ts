// daemonset/, checked without a cluster: every object `kubectl kustomize daemonset/` renders validates
// against the Kubernetes schemas of a current release (kubernetes-models, offline) and against the
// API server's own cross-field rules that the schemas cannot say; no container runs privileged
// without a comment saying why, and every added capability carries its own; the ports, paths, token
// audience and image tag are agent/config.ts's and package.json's; every flag the manifests pass is
// one the program accepts; the RBAC grants exactly the calls of daemonset/rbac-calls.json, each
// found in the code, and the controller's rules are its table of kinds; the CRDs cover every custom kind of the registry's table. Then the pieces of
// the agent container's entry (daemonset/image/): the CNI chain install and restore, the readiness
// probe, the node checks, and the CA bootstrap against an in-memory API.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync, existsSync } from 'node:fs';
import { createServer } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { DaemonSet, Deployment } from 'kubernetes-models/apps/v1';
import { ConfigMap, Namespace, Service, ServiceAccount } from 'kubernetes-models/v1';
import { ClusterRole, ClusterRoleBinding, Role, RoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1';
import { CustomResourceDefinition } from 'kubernetes-models/apiextensions.k8s.io/v1';
import { CaTokenAuth, CniDefaults, NodePaths, Ports } from '../agent/config.js';
import { KINDS } from '../agent/registry/kinds.js';
import { KUBE_KINDS } from '../agent/controller/kube-decode.js';
import { readableKinds } from '../agent/controller/kube-source.js';
import { repoPath } from '../agent/system/assets.js';
import { BPFFS, RUN_PREFIX, cgroup2Root, requirePrivileges, sh, shQuiet } from './helpers/privileged.js';
import { KubeStandin, type AuthorizationAttributes, type StandinRequest, type StandinType } from './helpers/kube-standin.js';
import { CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import { Controller } from '../agent/controller/index.js';
import { KubernetesTokenReviewer } from '../agent/controller/token-review.js';
import { createLogger } from '../agent/log.js';

/** A parsed manifest: the checks below read its fields one by one. */
type Doc = Record<string, any>;

const DAEMONSET = repoPath('daemonset');
const VERSION = (JSON.parse(readFileSync(repoPath('package.json'), 'utf8')) as { version: string }).version;
const CLI = repoPath('dist', 'agent', 'cli', 'main.js');

function parseDocs(text: string, where: string): Doc[] {
  const docs = parseAllDocuments(text);
  for (const d of docs) assert.deepEqual(d.errors.map((e) => e.message), [], `${where}: YAML errors`);
  return docs.map((d) => d.toJS() as Doc).filter((d) => d !== null);
}

/** `kubectl kustomize DIR`; skipped without kubectl, but CI (where setup installs it) fails. */
function kustomize(t: TestContext, dir: string): Doc[] | undefined {
  const r = spawnSync('kubectl', ['kustomize', dir], { encoding: 'utf8' });
  if (r.error || r.status !== 0) {
    const why = r.error ? 'kubectl is not installed (scripts/setup.mjs installs it as root)' : `kubectl kustomize ${dir} failed: ${r.stderr}`;
    if (r.error && process.env.CI !== 'true') {
      t.skip(why);
      return undefined;
    }
    throw new Error(why);
  }
  return parseDocs(r.stdout, `kubectl kustomize ${dir}`);
}

const MODELS: Record<string, new (data: any) => { validate(): void }> = {
  'v1/Namespace': Namespace,
  'v1/ServiceAccount': ServiceAccount,
  'v1/Service': Service,
  'v1/ConfigMap': ConfigMap,
  'apps/v1/Deployment': Deployment,
  'apps/v1/DaemonSet': DaemonSet,
  'rbac.authorization.k8s.io/v1/ClusterRole': ClusterRole,
  'rbac.authorization.k8s.io/v1/ClusterRoleBinding': ClusterRoleBinding,
  'rbac.authorization.k8s.io/v1/Role': Role,
  'rbac.authorization.k8s.io/v1/RoleBinding': RoleBinding,
  'apiextensions.k8s.io/v1/CustomResourceDefinition': CustomResourceDefinition,
};

const podSpecOf = (d: Doc): Doc | undefined => (d.kind === 'Deployment' || d.kind === 'DaemonSet' ? d.spec.template.spec : undefined);
const containersOf = (d: Doc): Doc[] => {
  const spec = podSpecOf(d);
  return spec ? [...(spec.initContainers ?? []), ...(spec.containers ?? [])] : [];
};

/** What the API server refuses although the OpenAPI schema allows it (apps and core validation). */
export function serverRuleProblems(d: Doc): string[] {
  const out: string[] = [];
  const where = `${d.kind}/${d.metadata?.name}`;
  const ru = d.kind === 'DaemonSet' ? d.spec?.updateStrategy?.rollingUpdate : undefined;
  if (ru) {
    const surge = Number(ru.maxSurge ?? 0) !== 0;
    const unavailable = Number(ru.maxUnavailable ?? 1) !== 0;
    if (surge && unavailable) out.push(`${where}: maxSurge may not be set when maxUnavailable is non-zero`);
    if (!surge && !unavailable) out.push(`${where}: maxUnavailable cannot be 0 when maxSurge is 0`);
  }
  for (const c of containersOf(d)) {
    const sc = c.securityContext ?? {};
    const add: string[] = sc.capabilities?.add ?? [];
    if (sc.allowPrivilegeEscalation === false && (sc.privileged === true || add.includes('SYS_ADMIN') || add.includes('CAP_SYS_ADMIN'))) {
      out.push(`${where} ${c.name}: allowPrivilegeEscalation false with privileged or SYS_ADMIN`);
    }
  }
  const spec = podSpecOf(d);
  if (spec && d.spec.selector?.matchLabels) {
    for (const [k, v] of Object.entries(d.spec.selector.matchLabels as Record<string, string>)) {
      if (spec && d.spec.template.metadata?.labels?.[k] !== v) out.push(`${where}: selector ${k}=${v} does not match the pod template's labels`);
    }
  }
  return out;
}

/** Lines of YAML source that set `privileged: true` with no comment saying why (inline or just above). */
export function uncommentedPrivileged(source: string): number[] {
  const lines = source.split('\n');
  const out: number[] = [];
  lines.forEach((line, i) => {
    if (!/^\s*(-\s+)?privileged:\s*true\b/.test(line)) return;
    const inline = line.includes('#') ? line.slice(line.indexOf('#') + 1) : '';
    const above = /^\s*#/.test(lines[i - 1] ?? '') ? (lines[i - 1] ?? '').replace(/^\s*#/, '') : '';
    const why = `${inline} ${above}`.trim();
    if (why.split(/\s+/).filter(Boolean).length < 4) out.push(i + 1);
  });
  return out;
}

/** Capabilities added in YAML source without a comment line directly above each. */
export function uncommentedCapabilities(source: string): string[] {
  const lines = source.split('\n');
  const out: string[] = [];
  let inAdd = false;
  lines.forEach((line, i) => {
    if (/^\s*add:\s*$/.test(line)) return void (inAdd = true);
    if (!inAdd) return;
    const m = /^\s*-\s+([A-Z_]+)\s*$/.exec(line);
    if (m) {
      if (!/^\s*#/.test(lines[i - 1] ?? '')) out.push(m[1]!);
    } else if (!/^\s*#/.test(line)) inAdd = false;
  });
  return out;
}

function sources(): Array<{ file: string; text: string }> {
  const out: Array<{ file: string; text: string }> = [];
  const walk = (dir: string): void => {
    for (const n of readdirSync(dir)) {
      const p = join(dir, n);
      if (statSync(p).isDirectory()) walk(p);
      else if (n.endsWith('.yaml')) out.push({ file: p, text: readFileSync(p, 'utf8') });
    }
  };
  walk(DAEMONSET);
  return out;
}

const byKind = (docs: Doc[], kind: string, name: string): Doc => {
  const d = docs.find((x) => x.kind === kind && x.metadata?.name === name);
  assert.ok(d, `${kind}/${name} is rendered`);
  return d;
};

test('daemonset/ renders with kubectl kustomize; every object validates against the Kubernetes schemas and server rules', (t) => {
  const docs = kustomize(t, DAEMONSET);
  if (!docs) return;
  const core = kustomize(t, join(DAEMONSET, 'core'))!;
  const crds = kustomize(t, join(DAEMONSET, 'crds'))!;
  // The base is exactly core/ plus crds/; core/ alone holds no CRD (the Istio/Gateway API path).
  const key = (d: Doc): string => `${d.kind}/${d.metadata.namespace ?? ''}/${d.metadata.name}`;
  const byKey = (list: Doc[]): Doc[] => [...list].sort((a, b) => key(a).localeCompare(key(b)));
  assert.deepEqual(byKey(docs), byKey([...core, ...crds]), 'daemonset/ renders exactly core/ and crds/');
  assert.equal(core.filter((d) => d.kind === 'CustomResourceDefinition').length, 0);
  assert.ok(crds.every((d) => d.kind === 'CustomResourceDefinition'));
  for (const d of docs) {
    const Model = MODELS[`${d.apiVersion}/${d.kind}`];
    assert.ok(Model, `${d.apiVersion} ${d.kind} has a schema to validate against`);
    assert.doesNotThrow(() => new Model(d).validate(), `${key(d)} validates`);
    assert.deepEqual(serverRuleProblems(d), []);
    if (d.metadata.namespace !== undefined) assert.equal(d.metadata.namespace, 'weft-system', `${key(d)} lives in weft-system`);
  }
  // The validators can fail: a broken copy of each workload is refused.
  const ds = structuredClone(byKind(docs, 'DaemonSet', 'weft-agent'));
  ds.spec.template.spec.containers[0].image = 42;
  assert.throws(() => new DaemonSet(ds).validate(), /image/);
  const surge = structuredClone(byKind(docs, 'DaemonSet', 'weft-agent'));
  surge.spec.updateStrategy.rollingUpdate.maxUnavailable = 1;
  assert.match(serverRuleProblems(surge).join(), /maxSurge may not be set/);
  const dep = structuredClone(byKind(docs, 'Deployment', 'weft-controller'));
  dep.spec.template.spec.containers[0].ports[0].containerPort = 'grpc';
  assert.throws(() => new Deployment(dep).validate(), /containerPort/);
});

test('no container is privileged without a comment that says why; every added capability has its own', (t) => {
  for (const { file, text } of sources()) {
    assert.deepEqual(uncommentedPrivileged(text), [], `${file}: privileged: true needs a comment saying why`);
    assert.deepEqual(uncommentedCapabilities(text), [], `${file}: each added capability needs a comment`);
  }
  // The rules themselves fail on what they must refuse.
  assert.deepEqual(uncommentedPrivileged('securityContext:\n  privileged: true\n'), [2]);
  assert.deepEqual(uncommentedPrivileged('  # mounts bpffs with Bidirectional propagation, which needs it\n  privileged: true\n'), []);
  assert.deepEqual(uncommentedPrivileged('  privileged: true # because\n'), [1]);
  assert.deepEqual(uncommentedCapabilities('add:\n# why\n- BPF\n- NET_ADMIN\n'), ['NET_ADMIN']);
  const docs = kustomize(t, DAEMONSET);
  if (!docs) return;
  // And in what is rendered: whatever is privileged there comes from a commented source line.
  const privileged = docs.flatMap((d) => containersOf(d).filter((c) => c.securityContext?.privileged === true).map((c) => `${d.metadata.name}/${c.name}`));
  const commented = sources().filter(({ text }) => /privileged:\s*true/.test(text)).length;
  assert.ok(privileged.length === 0 || commented > 0, `privileged containers ${privileged.join(', ')} come from commented sources`);
});

test('the agent DaemonSet: host network, capabilities instead of privileged, the config paths, every node, surge upgrades', (t) => {
  const docs = kustomize(t, DAEMONSET);
  if (!docs) return;
  const ds = byKind(docs, 'DaemonSet', 'weft-agent');
  const pod = ds.spec.template.spec;
  assert.equal(pod.hostNetwork, true);
  assert.equal(pod.hostPID, false);
  assert.equal(pod.dnsPolicy, 'ClusterFirstWithHostNet');
  assert.deepEqual(pod.tolerations, [{ operator: 'Exists' }]);
  assert.deepEqual(ds.spec.updateStrategy, { type: 'RollingUpdate', rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } });
  // With host networking a containerPort is a hostPort: the surge pod would not be scheduled.
  const [agent] = pod.containers as Doc[];
  assert.ok(agent);
  assert.equal(agent.ports, undefined);
  const sc = agent.securityContext;
  assert.notEqual(sc.privileged, true);
  assert.deepEqual(sc.capabilities.drop, ['ALL']);
  assert.deepEqual([...sc.capabilities.add].sort(), ['BPF', 'NET_ADMIN', 'SYS_ADMIN', 'SYS_PTRACE', 'SYS_RESOURCE']);
  assert.equal(sc.readOnlyRootFilesystem, true);
  assert.ok(agent.resources.requests.cpu && agent.resources.requests.memory);
  // Readiness on the config's port, answered by this container's agent.
  assert.deepEqual(agent.readinessProbe.exec.command, ['weft-node', 'ready', `--port=${Ports.readiness}`]);
  const ann = ds.spec.template.metadata.annotations;
  assert.deepEqual([ann['prometheus.io/scrape'], ann['prometheus.io/port'], ann['prometheus.io/path']], ['true', String(Ports.metrics), '/metrics']);
  // Paths: the config's, on the host and in the container alike.
  const hostPaths = new Map<string, string>(pod.volumes.filter((v: Doc) => v.hostPath).map((v: Doc) => [v.name, v.hostPath.path]));
  const mounts = new Map<string, Doc>(agent.volumeMounts.map((m: Doc) => [m.name, m]));
  const hostPathAt = (mountPath: string): string | undefined => {
    const m = [...mounts.values()].find((x) => x.mountPath === mountPath);
    return m ? hostPaths.get(m.name) : undefined;
  };
  assert.equal(hostPathAt(dirname(NodePaths.bpffs)), dirname(NodePaths.bpffs));
  assert.equal(hostPathAt(dirname(NodePaths.podSocket)), dirname(NodePaths.podSocket));
  assert.ok(NodePaths.agentStateDir.startsWith(`${dirname(NodePaths.podSocket)}/`), 'the agent state lives on the same host mount');
  assert.equal(hostPathAt(NodePaths.netnsDir), NodePaths.netnsDir);
  assert.equal(hostPathAt('/host/proc'), NodePaths.procDir);
  assert.equal(hostPathAt('/host/sys/fs/cgroup'), '/sys/fs/cgroup');
  assert.equal(hostPathAt(`/host${CniDefaults.binDir}`), CniDefaults.binDir);
  assert.equal(hostPathAt(`/host${CniDefaults.confDir}`), CniDefaults.confDir);
  assert.equal(mounts.get('netns')?.mountPropagation, 'HostToContainer', 'pod netns pinned later must appear');
  const args: string[] = agent.args;
  const flag = (name: string): string | undefined => args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
  assert.equal(flag('bpffs'), NodePaths.bpffs);
  assert.equal(flag('pod-socket'), NodePaths.podSocket);
  assert.equal(flag('state-dir'), NodePaths.agentStateDir);
  assert.equal(flag('controller'), `weft-controller.weft-system.svc:${Ports.controller}`);
  assert.ok(args.includes('--takeover'));
  assert.deepEqual(agent.command, ['weft-node', 'run', `--cni-bin-dir=/host${CniDefaults.binDir}`, `--cni-conf-dir=/host${CniDefaults.confDir}`, '--']);
  // The CA token: the audience the controller accepts, where the agent reads it, for the SA it trusts.
  assert.equal(flag('ca-token'), CaTokenAuth.tokenFile);
  const tokens = pod.volumes.find((v: Doc) => v.name === mounts.get('tokens')?.name);
  assert.equal(`${mounts.get('tokens')?.mountPath}/${tokens.projected.sources[0].serviceAccountToken.path}`, CaTokenAuth.tokenFile);
  assert.equal(tokens.projected.sources[0].serviceAccountToken.audience, CaTokenAuth.audience);
  assert.equal(`system:serviceaccount:${ds.metadata.namespace}:${pod.serviceAccountName}`, CaTokenAuth.agentServiceAccount);
  assert.equal(pod.automountServiceAccountToken, false);
});

test('the controller, the relay and their Services use the config ports; one image, tagged with the version', (t) => {
  const docs = kustomize(t, DAEMONSET);
  if (!docs) return;
  const svc = byKind(docs, 'Service', 'weft-controller');
  assert.deepEqual(svc.spec.ports.map((p: Doc) => p.port).sort(), [Ports.controller, Ports.controllerMonitoring].sort());
  const ctl = byKind(docs, 'Deployment', 'weft-controller').spec.template;
  const [controller] = ctl.spec.containers as Doc[];
  assert.ok(controller);
  assert.ok(controller.args.includes(`--listen=0.0.0.0:${Ports.controller}`));
  assert.ok(controller.args.includes(`--monitoring=0.0.0.0:${Ports.controllerMonitoring}`));
  assert.equal(controller.readinessProbe.httpGet.port, Ports.controllerMonitoring);
  assert.equal(ctl.metadata.annotations['prometheus.io/port'], String(Ports.controllerMonitoring));
  assert.deepEqual(byKind(docs, 'Service', 'weft-relay').spec.ports.map((p: Doc) => p.port), [Ports.relay]);
  for (const d of docs) {
    for (const c of containersOf(d)) {
      assert.equal(c.image, `weft:${VERSION}`, `${d.metadata.name}/${c.name} runs this version's image`);
      assert.equal(c.imagePullPolicy, 'IfNotPresent', 'a loaded image (kind, a local build) is used as it is');
      assert.ok(c.resources?.requests?.cpu && c.resources?.requests?.memory, `${d.metadata.name}/${c.name} requests resources`);
      // A read-only root: the only writable places are mounts, and /tmp must be one (mkdtemp).
      if (c.securityContext?.readOnlyRootFilesystem) assert.ok(c.volumeMounts?.some((m: Doc) => m.mountPath === '/tmp'), `${d.metadata.name}/${c.name} has a writable /tmp`);
    }
  }
  // The controller and the relay run as the restricted Pod Security profile asks.
  for (const name of ['weft-controller', 'weft-relay']) {
    const spec: Doc = byKind(docs, 'Deployment', name).spec.template.spec;
    assert.equal(spec.securityContext.runAsNonRoot, true);
    for (const c of [...(spec.initContainers ?? []), ...spec.containers]) {
      assert.equal(c.securityContext.allowPrivilegeEscalation, false);
      assert.deepEqual(c.securityContext.capabilities, { drop: ['ALL'] });
    }
  }
});

/** Flags the manifests pass that another change is adding to a program: to-do until its usage names them. */
const PENDING_FLAGS: Record<string, string> = {};

test('every flag the manifests pass is one the program accepts (its --help names it)', (t) => {
  const docs = kustomize(t, DAEMONSET);
  if (!docs) return;
  const usage = (program: string): string => {
    const r = spawnSync(process.execPath, [CLI, program, '--help'], { encoding: 'utf8' });
    assert.equal(r.status, 0, `weft ${program} --help: ${r.stderr}`);
    return r.stdout;
  };
  const entry = readFileSync(join(DAEMONSET, 'image', 'weft-node.mjs'), 'utf8');
  for (const d of docs) {
    for (const c of containersOf(d)) {
      if (c.command?.[0] === 'weft-node') {
        for (const a of c.command.slice(1)) if (a.startsWith('--') && a !== '--') assert.ok(entry.includes(`'${a.slice(2).split('=')[0]}'`), `weft-node takes ${a}`);
      }
      if (!c.args || c.command?.[0] === 'node') continue;
      const [program, ...flags] = c.args as string[];
      assert.ok(['agent', 'controller', 'relay'].includes(program!), `${d.metadata.name}/${c.name} runs a weft program`);
      const text = usage(program!);
      for (const f of flags) {
        const name = f.split('=')[0]!;
        const known = name === '--source' && f.includes('=') ? new RegExp(`--source\\b[^\\n]*\\b${f.split('=')[1]}\\b`).test(text) : text.includes(`${name} `) || text.includes(`${name},`);
        const pendingKey = PENDING_FLAGS[`${program} ${name}`] !== undefined ? `${program} ${name}` : `${program} ${f}`;
        const pending = PENDING_FLAGS[pendingKey];
        if (pending !== undefined) {
          if (known) assert.fail(`weft ${program} now accepts ${f}: remove it from PENDING_FLAGS`);
          t.diagnostic(`PENDING weft ${program} ${f}: ${pending}`);
          continue;
        }
        assert.ok(known, `weft ${program} --help names ${name} (${d.metadata.name}/${c.name})`);
      }
    }
  }
});

interface RbacCall {
  role: string;
  apiGroup: string;
  resource: string;
  resourceNames?: string[];
  verbs: string[];
  kind?: string;
  evidence: { file: string; pattern: string };
}

function filesUnder(path: string): string[] {
  if (!statSync(path).isDirectory()) return [path];
  return readdirSync(path).flatMap((n) => filesUnder(join(path, n))).filter((p) => /\.(ts|mjs)$/.test(p));
}

test('RBAC grants exactly the calls of daemonset/rbac-calls.json, each found in the code; the controller reads exactly its kinds', (t) => {
  const docs = kustomize(t, DAEMONSET);
  if (!docs) return;
  const { calls } = JSON.parse(readFileSync(join(DAEMONSET, 'rbac-calls.json'), 'utf8')) as { calls: RbacCall[] };
  const tuples = (role: string, group: string, resource: string, verbs: string[], names?: string[]): string[] =>
    verbs.flatMap((v) => (names?.length ? names : ['*']).map((n) => `${role} ${group}/${resource} ${v} ${n}`));
  const granted = docs
    .filter((d) => d.kind === 'Role' || d.kind === 'ClusterRole')
    .flatMap((d) => (d.rules as Doc[]).flatMap((r) => (r.apiGroups as string[]).flatMap((g) => (r.resources as string[]).flatMap((res) => tuples(`${d.kind}/${d.metadata.name}`, g, res, r.verbs, r.resourceNames)))));
  const listed = calls.flatMap((c) => tuples(c.role, c.apiGroup, c.resource, c.verbs, c.resourceNames));
  assert.deepEqual([...new Set(granted)].sort(), [...new Set(listed)].sort());
  assert.equal(granted.length, new Set(granted).size, 'no rule is granted twice');
  // Bound to the right service accounts (and nothing else).
  const subjectOf = (kind: string, name: string): string[] =>
    docs.filter((d) => d.kind === `${kind}Binding` && d.roleRef.name === name).flatMap((b) => (b.subjects as Doc[]).map((s) => `${s.namespace}/${s.name}`));
  assert.deepEqual(subjectOf('ClusterRole', 'weft-controller'), ['weft-system/weft-controller']);
  assert.deepEqual(subjectOf('Role', 'weft-controller-ca'), ['weft-system/weft-controller']);
  assert.deepEqual(subjectOf('Role', 'weft-agent'), ['weft-system/weft-agent']);
  assert.ok(!granted.some((g) => g.split(' ').slice(1, 3).some((p) => p.includes('*'))), 'no wildcard');
  // Each call is in the code.
  for (const c of calls) {
    const found = filesUnder(repoPath(c.evidence.file)).some((f) => new RegExp(c.evidence.pattern).test(readFileSync(f, 'utf8')));
    assert.ok(found, `${c.role} ${c.resource} ${c.verbs.join(',')}: /${c.evidence.pattern}/ in ${c.evidence.file}`);
  }
  // The controller's list/watch and status rules are exactly its table of kinds.
  const controller = calls.filter((c) => c.role === 'ClusterRole/weft-controller');
  const watched = controller.filter((c) => c.verbs.includes('watch')).map((c) => `${c.apiGroup}/${c.resource} ${c.kind}`);
  assert.deepEqual(watched.sort(), KUBE_KINDS.map((k) => `${k.group}/${k.plural} ${k.kind}`).sort());
  const patched = controller.filter((c) => c.verbs.includes('patch')).map((c) => `${c.apiGroup}/${c.resource}`);
  assert.deepEqual(patched.sort(), KUBE_KINDS.filter((k) => k.statusConditions).map((k) => `${k.group}/${k.plural}/status`).sort());
  // Every kind the registry reads from Kubernetes is in that table (the registry's weft.io kinds are the lab's).
  const groupOf = (apiVersion: string): string => (apiVersion.includes('/') ? apiVersion.split('/')[0]! : '');
  for (const k of KINDS) {
    for (const g of new Set(k.apiVersions.map(groupOf))) {
      if (g === 'weft.io') continue;
      assert.ok(KUBE_KINDS.some((x) => x.kind === k.kind && x.group === g), `the registry's ${k.kind} (${g || 'core'}) is read by the controller`);
    }
  }
  for (const k of KUBE_KINDS.filter((x) => !readableKinds().includes(x))) t.diagnostic(`${k.kind}: granted, read once the registry knows it`);
});

test('the CRDs cover every custom kind of the registry, with its group, scope and versions', (t) => {
  const docs = kustomize(t, join(DAEMONSET, 'crds'));
  if (!docs) return;
  const { calls } = JSON.parse(readFileSync(join(DAEMONSET, 'rbac-calls.json'), 'utf8')) as { calls: RbacCall[] };
  const builtIn = new Set(['', 'discovery.k8s.io', 'weft.io', 'apps']);
  for (const k of KINDS) {
    for (const av of k.apiVersions) {
      if (!av.includes('/') || builtIn.has(av.split('/')[0]!)) continue;
      const [group, version] = av.split('/') as [string, string];
      const crd: Doc | undefined = docs.find((d) => d.spec.group === group && d.spec.names.kind === k.kind);
      assert.ok(crd, `a CRD for ${k.kind} (${group})`);
      assert.equal(crd.spec.scope, k.namespaced ? 'Namespaced' : 'Cluster');
      assert.ok(crd.spec.versions.some((v: Doc) => v.name === version && v.served), `${k.kind} ${av} is served`);
      const plural = calls.find((c) => c.kind === k.kind)?.resource;
      assert.equal(crd.metadata.name, `${plural}.${group}`, 'the CRD and the RBAC name the same resource');
    }
  }
  for (const crd of docs) {
    assert.equal(crd.metadata.name, `${crd.spec.names.plural}.${crd.spec.group}`);
    assert.equal(crd.spec.versions.filter((v: Doc) => v.storage).length, 1, `${crd.metadata.name}: one storage version`);
    for (const v of crd.spec.versions as Doc[]) {
      // Structural, with a status subresource for the controller's conditions.
      assert.equal(v.schema.openAPIV3Schema.type, 'object');
      assert.deepEqual(v.subresources, { status: {} });
    }
    // Every CRD has its list/watch rule (weft reads what it defines).
    assert.ok(calls.some((c) => c.apiGroup === crd.spec.group && c.resource === crd.spec.names.plural && c.verbs.includes('watch')), `${crd.metadata.name} is watched`);
  }
});

// --- the agent container's entry (daemonset/image) ------------------------------------------------

interface CniConfModule {
  ensureEntry(confDir: string, entry: Record<string, unknown>): { file: string; changed: boolean; convertedFrom?: string } | undefined;
  removeEntries(confDir: string, type: string): string[];
  installBinary(binary: string, binDir: string, name: string): string;
  removeBinary(binDir: string, name: string): void;
  confFiles(dir: string): string[];
  CniConfError: new (message: string) => Error;
}
interface WeftNodeModule {
  listeningInode(table: string, port: number): string | undefined;
  checkNode(paths: { bpffs: string; cgroup?: string }, mountinfo: string): string[];
  mountOf(path: string, mountinfo: string): { target: string; fstype: string } | undefined;
  flagValue(args: string[], name: string): string | undefined;
}
const importImage = async <T>(name: string): Promise<T> => (await import(pathToFileURL(join(DAEMONSET, 'image', name)).href)) as T;

test('weft-cni joins the end of the primary network, stays there, and the node is restored on uninstall', async () => {
  const cni = await importImage<CniConfModule>('cni-conf.mjs');
  const dir = mkdtempSync(join(tmpdir(), 'weft-cni-conf-'));
  const bin = mkdtempSync(join(tmpdir(), 'weft-cni-bin-'));
  try {
    const entry = { type: CniDefaults.type, weft: { podSocket: NodePaths.podSocket } };
    assert.equal(cni.ensureEntry(dir, entry), undefined, 'no network yet: nothing written');
    const primary = { cniVersion: '0.3.1', name: 'kindnet', plugins: [{ type: 'ptp', ipam: { type: 'host-local' } }, { type: 'portmap', capabilities: { portMappings: true } }] };
    writeFileSync(join(dir, '10-kindnet.conflist'), JSON.stringify(primary), { mode: 0o644 });
    writeFileSync(join(dir, '99-other.conflist'), JSON.stringify({ ...primary, name: 'other' }));
    const r = cni.ensureEntry(dir, entry);
    assert.deepEqual(r, { file: join(dir, '10-kindnet.conflist'), changed: true });
    const after = JSON.parse(readFileSync(join(dir, '10-kindnet.conflist'), 'utf8'));
    assert.deepEqual(after.plugins.map((p: Doc) => p.type), ['ptp', 'portmap', CniDefaults.type]);
    assert.equal(statSync(join(dir, '10-kindnet.conflist')).mode & 0o777, 0o644);
    assert.deepEqual(JSON.parse(readFileSync(join(dir, '99-other.conflist'), 'utf8')).plugins.length, 2, 'only the first network is chained');
    assert.equal(cni.ensureEntry(dir, entry)?.changed, false, 'idempotent');
    // The primary CNI rewrites its file: the entry is put back.
    writeFileSync(join(dir, '10-kindnet.conflist'), JSON.stringify(primary));
    assert.equal(cni.ensureEntry(dir, entry)?.changed, true);
    // Uninstall: the primary's list as it was.
    cni.removeEntries(dir, CniDefaults.type);
    assert.deepEqual(JSON.parse(readFileSync(join(dir, '10-kindnet.conflist'), 'utf8')), primary);
    assert.deepEqual(readdirSync(dir).sort(), ['10-kindnet.conflist', '99-other.conflist']);

    // A single-plugin .conf becomes a conflist; uninstall puts the .conf back.
    rmSync(join(dir, '10-kindnet.conflist'));
    const conf = { cniVersion: '0.4.0', name: 'bridge-net', type: 'bridge', bridge: 'cni0', ipam: { type: 'host-local', subnet: '10.1.0.0/24' } };
    writeFileSync(join(dir, '05-bridge.conf'), JSON.stringify(conf));
    const c = cni.ensureEntry(dir, entry);
    assert.equal(c?.file, join(dir, '05-bridge.conflist'));
    assert.equal(cni.confFiles(dir)[0], '05-bridge.conflist', 'the converted list is the network the runtime reads');
    const list = JSON.parse(readFileSync(join(dir, '05-bridge.conflist'), 'utf8'));
    assert.deepEqual(list, { cniVersion: '0.4.0', name: 'bridge-net', plugins: [{ type: 'bridge', bridge: 'cni0', ipam: conf.ipam }, entry] });
    cni.removeEntries(dir, CniDefaults.type);
    assert.deepEqual(readdirSync(dir).sort(), ['05-bridge.conf', '99-other.conflist']);
    assert.deepEqual(JSON.parse(readFileSync(join(dir, '05-bridge.conf'), 'utf8')), conf);

    // A broken file is named, not guessed at.
    writeFileSync(join(dir, '00-broken.conflist'), '{"plugins": [');
    assert.throws(() => cni.ensureEntry(dir, entry), (err: Error) => err instanceof cni.CniConfError && err.message.includes('00-broken.conflist'));

    // The binary: copied executable, replaced atomically, removed.
    const src = join(bin, 'src');
    writeFileSync(src, '#!/bin/sh\nexit 0\n');
    const target = cni.installBinary(src, bin, CniDefaults.type);
    assert.equal(statSync(target).mode & 0o777, 0o755);
    cni.installBinary(src, bin, CniDefaults.type);
    assert.deepEqual(readdirSync(bin).sort(), ['src', CniDefaults.type]);
    cni.removeBinary(bin, CniDefaults.type);
    assert.deepEqual(readdirSync(bin), ['src']);
    assert.throws(() => cni.installBinary(join(bin, 'missing'), bin, CniDefaults.type), /not in this image/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(bin, { recursive: true, force: true });
  }
});

test('weft-node: the node checks, the readiness table and flags', async () => {
  const node = await importImage<WeftNodeModule>('weft-node.mjs');
  const mountinfo = [
    '22 1 0:21 / /sys rw,nosuid - sysfs sysfs rw',
    '30 22 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw',
    '31 22 0:27 / /sys/fs/bpf rw - bpf bpf rw,mode=700',
    '40 1 0:28 / /host/sys/fs/cgroup rw - cgroup2 cgroup2 rw',
  ].join('\n');
  assert.deepEqual(node.checkNode({ bpffs: NodePaths.bpffs, cgroup: '/host/sys/fs/cgroup' }, mountinfo), []);
  const noBpf = mountinfo.split('\n').filter((l) => !l.includes(' bpf ')).join('\n');
  assert.match(node.checkNode({ bpffs: NodePaths.bpffs }, noBpf).join(), /not on a BPF filesystem \(found sysfs\)/);
  assert.match(node.checkNode({ bpffs: NodePaths.bpffs, cgroup: '/sys/kernel' }, mountinfo).join(), /not a cgroup v2 hierarchy/);
  assert.equal(node.mountOf('/sys/fs/bpf/weft/maps', mountinfo)?.fstype, 'bpf');
  assert.equal(node.mountOf('/sys/fs/bpfx', mountinfo)?.fstype, 'sysfs', 'a prefix is not a parent');
  const table = [
    '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
    '   0: 00000000:3AAD 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0',
    '   1: 0100007F:3AAD 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 20 4 30 10 -1',
  ].join('\n');
  assert.equal(node.listeningInode(table, Ports.readiness), '4242');
  assert.equal(node.listeningInode(table, Ports.metrics), undefined);
  assert.equal(node.flagValue(['agent', '--bpffs=/x', '--pod-socket', '/y'], 'bpffs'), '/x');
  assert.equal(node.flagValue(['agent', '--bpffs=/x', '--pod-socket', '/y'], 'pod-socket'), '/y');
});

test('weft-node ready: 200 from a socket this process tree holds is ready; 503 or nothing listening is not', async () => {
  let status = 200;
  const server = createServer((req, res) => res.writeHead(req.url === '/healthz/ready' ? status : 404).end(JSON.stringify({ ready: status === 200 })));
  await new Promise<void>((resolve) => server.listen(0, '0.0.0.0', resolve));
  const port = (server.address() as { port: number }).port;
  const probe = (p: number): Promise<{ code: number | null; out: string }> =>
    new Promise((resolve) => {
      const child = spawn(process.execPath, [join(DAEMONSET, 'image', 'weft-node.mjs'), 'ready', `--port=${p}`], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      child.stdout.on('data', (c: Buffer) => (out += c.toString()));
      child.once('exit', (code) => resolve({ code, out }));
    });
  try {
    assert.deepEqual(await probe(port), { code: 0, out: '200 {"ready":true}\n' });
    status = 503;
    assert.equal((await probe(port)).code, 1);
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
  const closed = await probe(port);
  assert.deepEqual(closed, { code: 1, out: `nothing listens on ${port}\n` });
});

interface CaBootstrapModule {
  bootstrap(o: { core: unknown; namespace: string; stateDir: string; trustDomain: string }): Promise<void>;
  relayCredentialGood(data: Record<string, string> | undefined, rootPem: string, now?: number): boolean;
  CaObjects: { caSecret: string; rootConfigMap: string; relaySecret: string };
}

/** The few CoreV1Api calls the bootstrap makes, on an in-memory namespace, with the API's 404 and 409. */
class FakeCore {
  readonly objects = new Map<string, Doc>();
  readonly calls: string[] = [];
  createConflict = false;
  private rv = 1;
  private fail(code: number): never {
    throw Object.assign(new Error(`HTTP ${code}`), { code });
  }
  private read(kind: string, name: string): Doc {
    this.calls.push(`get ${kind}/${name}`);
    const o = this.objects.get(`${kind}/${name}`);
    return o ? structuredClone(o) : this.fail(404);
  }
  private write(kind: string, verb: 'create' | 'update', body: Doc): Doc {
    const key = `${kind}/${body.metadata.name}`;
    this.calls.push(`${verb} ${key}`);
    if (verb === 'create' && this.objects.has(key)) this.fail(409);
    if (verb === 'update' && this.objects.get(key)?.metadata.resourceVersion !== body.metadata.resourceVersion) this.fail(409);
    const stored = { ...structuredClone(body), metadata: { ...body.metadata, resourceVersion: String(this.rv++) } };
    this.objects.set(key, stored);
    return stored;
  }
  readNamespacedSecret = async ({ name }: { name: string }): Promise<Doc> => this.read('secret', name);
  readNamespacedConfigMap = async ({ name }: { name: string }): Promise<Doc> => this.read('configmap', name);
  createNamespacedSecret = async ({ body }: { body: Doc }): Promise<Doc> => {
    if (this.createConflict && body.metadata.name === 'weft-ca') {
      this.createConflict = false;
      // Another controller start won the race with its own root.
      this.objects.set('secret/weft-ca', structuredClone(this.objects.get('other-root')!));
    }
    return this.write('secret', 'create', body);
  };
  createNamespacedConfigMap = async ({ body }: { body: Doc }): Promise<Doc> => this.write('configmap', 'create', body);
  replaceNamespacedSecret = async ({ body }: { body: Doc }): Promise<Doc> => this.write('secret', 'update', body);
  replaceNamespacedConfigMap = async ({ body }: { body: Doc }): Promise<Doc> => this.write('configmap', 'update', body);
}

test('the CA bootstrap: the first start creates the root, later starts load it, a lost race takes the winner', async () => {
  const ca = await importImage<CaBootstrapModule>('ca-bootstrap.mjs');
  const dirs: string[] = [];
  const state = (): string => {
    const d = mkdtempSync(join(tmpdir(), 'weft-ca-state-'));
    dirs.push(d);
    return join(d, 'ca');
  };
  const pem = (core: FakeCore, key: string, field: string): string => Buffer.from(core.objects.get(key)!.data[field], 'base64').toString('utf8');
  try {
    const core = new FakeCore();
    const first = state();
    await ca.bootstrap({ core, namespace: 'weft-system', stateDir: first, trustDomain: 'cluster.local' });
    const root = pem(core, 'secret/weft-ca', 'root-cert.pem');
    assert.match(root, /BEGIN CERTIFICATE/);
    assert.equal(readFileSync(join(first, 'root-cert.pem'), 'utf8'), root);
    assert.equal(statSync(join(first, 'root-key.pem')).mode & 0o777, 0o600);
    assert.equal(core.objects.get('configmap/weft-root-cert')!.data['root-cert.pem'], root);
    assert.equal(pem(core, 'secret/weft-relay-credential', 'root-cert.pem'), root);
    assert.ok(ca.relayCredentialGood(core.objects.get('secret/weft-relay-credential')!.data, root));
    assert.equal(ca.relayCredentialGood(core.objects.get('secret/weft-relay-credential')!.data, 'another root'), false);
    assert.equal(ca.relayCredentialGood(core.objects.get('secret/weft-relay-credential')!.data, root, Date.now() + 400 * 24 * 3600 * 1000), false, 'expiring: issued again');

    // A restart (its state was an emptyDir): the same root, nothing rewritten.
    core.calls.length = 0;
    const second = state();
    await ca.bootstrap({ core, namespace: 'weft-system', stateDir: second, trustDomain: 'cluster.local' });
    assert.equal(readFileSync(join(second, 'root-cert.pem'), 'utf8'), root);
    assert.deepEqual(core.calls.filter((c) => !c.startsWith('get')), []);

    // Two first starts at once: the one whose create lost takes the winner's root.
    const raced = new FakeCore();
    const other = new FakeCore();
    await ca.bootstrap({ core: other, namespace: 'weft-system', stateDir: state(), trustDomain: 'cluster.local' });
    raced.objects.set('other-root', other.objects.get('secret/weft-ca')!);
    raced.createConflict = true;
    const loser = state();
    await ca.bootstrap({ core: raced, namespace: 'weft-system', stateDir: loser, trustDomain: 'cluster.local' });
    const winner = pem(other, 'secret/weft-ca', 'root-cert.pem');
    assert.equal(readFileSync(join(loser, 'root-cert.pem'), 'utf8'), winner);
    assert.equal(raced.objects.get('configmap/weft-root-cert')!.data['root-cert.pem'], winner);
    assert.equal(pem(raced, 'secret/weft-relay-credential', 'root-cert.pem'), winner);
  } finally {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  }
});

test('the image: the Dockerfile builds every piece the manifests run and names the version daemonset/ uses', () => {
  const dockerfile = readFileSync(repoPath('Dockerfile'), 'utf8');
  for (const piece of ['make -s -C bpf', 'make -s -C cni', 'node-gyp rebuild --directory native', 'tsc -p daemonset/image/tsconfig.json', 'libbpf1', 'nodejs']) {
    assert.ok(dockerfile.includes(piece), `the Dockerfile has ${piece}`);
  }
  assert.match(dockerfile, /^FROM \$\{BPF_BASE\} AS bpf$/m, 'the BPF objects in their own stage (clang 14)');
  assert.match(dockerfile, /^FROM \$\{BASE\} AS build$/m);
  assert.match(dockerfile, /^FROM \$\{BASE\}$/m, 'a second, runtime stage');
  assert.ok(dockerfile.includes(`weft:${VERSION}`), 'the tag the manifests use is the one it documents');
  for (const link of ['/usr/local/bin/weft ', '/usr/local/bin/weft-node']) assert.ok(dockerfile.includes(link), `the image has ${link.trim()}`);
  for (const file of [join(DAEMONSET, 'kustomization.yaml'), join(DAEMONSET, 'core', 'kustomization.yaml')]) {
    assert.match(readFileSync(file, 'utf8'), new RegExp(`newTag: ${VERSION.replaceAll('.', '\\.')}\\n`), file);
  }
  const script = JSON.parse(readFileSync(repoPath('package.json'), 'utf8')).scripts.image as string;
  assert.ok(script && existsSync(repoPath(script.split(' ')[1]!)), 'npm run image runs a script of this repository');
});

// --- the agent's capabilities, on this kernel -----------------------------------------------------

/** The capabilities daemonset/core/agent.yaml adds for the agent (read from the source, no kubectl needed). */
function agentCapabilities(): string[] {
  const ds = parseDocs(readFileSync(join(DAEMONSET, 'core', 'agent.yaml'), 'utf8'), 'agent.yaml').find((d) => d.kind === 'DaemonSet')!;
  return ds.spec.template.spec.containers[0].securityContext.capabilities.add as string[];
}

/** Capability numbers (linux/capability.h) of those the DaemonSet may add. */
const CAP_NUMBERS: Record<string, number> = { NET_ADMIN: 12, SYS_PTRACE: 19, SYS_ADMIN: 21, SYS_RESOURCE: 24, PERFMON: 38, BPF: 39 };

/** Whether this process may hand `cap` on (a sandbox may lack some, e.g. SYS_RESOURCE). */
function inBoundingSet(cap: string): boolean {
  const hex = /CapBnd:\s*([0-9a-f]+)/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? '0';
  const n = CAP_NUMBERS[cap];
  assert.ok(n !== undefined, `${cap}: add its number to CAP_NUMBERS`);
  return ((BigInt(`0x${hex}`) >> BigInt(n)) & 1n) === 1n;
}

test('the agent\'s capabilities: each call of the agent works with the DaemonSet\'s set and fails without the one named for it', async (t) => {
  if (!requirePrivileges(t)) return;
  if (spawnSync('setpriv', ['--version']).status !== 0) {
    if (process.env.CI === 'true') throw new Error('setpriv (util-linux) is needed');
    return t.skip('setpriv missing');
  }
  const wanted = agentCapabilities();
  const caps = wanted.filter(inBoundingSet);
  for (const c of wanted.filter((x) => !inBoundingSet(x))) t.diagnostic(`${c} is not in this machine's bounding set: checked without it`);
  const probe = join(repoPath('test', 'fixtures', 'daemonset'), 'caps-probe.mjs');
  const name = `${RUN_PREFIX}-caps`;
  const netns = `/var/run/netns/${name}`;
  const cgroup = join(cgroup2Root(), name);
  const pins = join(BPFFS, name);
  const as = (set: string[], args: string[], roProcSys = false): { ok: boolean; err?: string } => {
    const list = ['-all', ...set.map((c) => `+${c.toLowerCase()}`)].join(',');
    const cmd = ['setpriv', `--bounding-set=${list}`, `--inh-caps=${list}`, '--', process.execPath, probe, ...args];
    // A container's /proc/sys: read-only, in its own mount namespace (the host's is not touched).
    const r = roProcSys
      ? spawnSync('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', 'mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && exec "$@"', 'sh', ...cmd], { encoding: 'utf8' })
      : spawnSync(cmd[0]!, cmd.slice(1), { encoding: 'utf8' });
    const line = r.stdout.trim().split('\n').pop() ?? '';
    assert.ok(line.startsWith('{'), `probe ${args[0]} printed ${r.stdout}${r.stderr}`);
    return JSON.parse(line) as { ok: boolean; err?: string };
  };
  const without = (cap: string): string[] => caps.filter((c) => c !== cap);
  sh('ip', ['netns', 'add', name]);
  try {
    spawnSync('mkdir', ['-p', cgroup]);
    // Capture: programs, maps, pins, cgroup links, the netns's sk_lookup.
    assert.deepEqual(as(caps, ['datapath', pins, cgroup, netns]), { ok: true });
    assert.match(as(without('SYS_ADMIN'), ['datapath', pins, cgroup, netns]).err ?? '', /setns\(2\).*EPERM/);
    // The pod's reply routing: setns, rtnetlink, sysctls through /proc/sys.
    assert.deepEqual(as(caps, ['routing', netns]), { ok: true });
    assert.match(as(without('NET_ADMIN'), ['routing', netns]).err ?? '', /rtnetlink .*EPERM/);
    assert.match(as(without('SYS_ADMIN'), ['routing', netns]).err ?? '', /setns\(2\).*EPERM/);
    // In a container /proc/sys is read-only: the routing fails until weft-node remounts it, which
    // takes SYS_ADMIN.
    assert.match(as(caps, ['routing', netns], true).err ?? '', /EROFS/);
    assert.deepEqual(as(caps, ['procsys'], true), { ok: true });
    assert.match(as(without('SYS_ADMIN'), ['procsys'], true).err ?? '', /could not be remounted/);
    // The start-up scan: the netns of a process holding more capabilities than the agent (this test).
    assert.deepEqual(as(caps, ['netns', String(process.pid)]), { ok: true });
    assert.match(as(without('SYS_PTRACE'), ['netns', String(process.pid)]).err ?? '', /EACCES/);
  } finally {
    shQuiet('ip', ['netns', 'del', name]);
    spawnSync('rmdir', [cgroup]);
    rmSync(pins, { recursive: true, force: true });
  }
});

// --- weft-node run: watching over the agent ---------------------------------------------------------

const WEFT_NODE = join(DAEMONSET, 'image', 'weft-node.mjs');
const FAKE_AGENT = repoPath('test', 'fixtures', 'daemonset', 'fake-agent.mjs');

/** weft-node with the fake agent, its stdout read line by line. */
function startWeftNode(args: string[]): { child: ReturnType<typeof spawn>; lines: string[]; next(re: RegExp, what: string): Promise<string>; exit: Promise<number | null> } {
  const env: NodeJS.ProcessEnv = { ...process.env, WEFT_AGENT_ENTRY: FAKE_AGENT };
  delete env.KUBERNETES_SERVICE_HOST;
  delete env.POD_NAMESPACE;
  const child = spawn(process.execPath, [WEFT_NODE, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  const waiters: Array<{ re: RegExp; resolve: (l: string) => void }> = [];
  let buf = '';
  const onData = (c: Buffer): void => {
    buf += c.toString();
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      lines.push(line);
      for (const w of [...waiters]) if (w.re.test(line)) waiters.splice(waiters.indexOf(w), 1) && w.resolve(line);
    }
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const next = (re: RegExp, what: string): Promise<string> => {
    const seen = lines.find((l) => re.test(l));
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`weft-node: no "${what}" within 10 s; output:\n${lines.join('\n')}`)), 10_000);
      waiters.push({ re, resolve: (l) => (clearTimeout(timer), resolve(l)) });
      void exit.then(() => setImmediate(() => waiters.some((w) => w.re === re) && reject(new Error(`weft-node exited before "${what}"; output:\n${lines.join('\n')}`))));
    });
  };
  return { child, lines, next, exit };
}

test('weft-node run: a stop is passed to the agent; after a hand-over it waits for its pod to go and lets the drain finish', async (t) => {
  if (!requirePrivileges(t)) return;
  const dir = mkdtempSync(join(tmpdir(), 'weft-node-run-'));
  const socket = join(dir, 'pods.sock');
  const args = ['run', '--no-cni', '--', 'agent', `--bpffs=${join(BPFFS, `${RUN_PREFIX}-node`)}`, `--pod-socket=${socket}`, `--state-dir=${join(dir, 'state')}`];
  const newer = createNetServer();
  const procs: Array<ReturnType<typeof spawn>> = [];
  try {
    // A stop with no newer agent: the agent gets SIGTERM; no DaemonSet to ask, so nothing is removed.
    const a = startWeftNode(args);
    procs.push(a.child);
    await a.next(/our agent serves the pod channel/, 'the pod channel spotted');
    a.child.kill('SIGTERM');
    await a.next(/fake-agent: SIGTERM/, 'SIGTERM passed on');
    assert.equal(await a.exit, 0, a.lines.join('\n'));
    assert.ok(!a.lines.some((l) => l.includes('uninstall')), 'a stop is not an uninstall');
    assert.match(a.lines.find((l) => l.includes('pod stopped')) ?? '', /"state":"unknown"/);

    // A newer agent takes the pod channel over; ours drains and exits by itself: weft-node stays.
    const b = startWeftNode(args);
    procs.push(b.child);
    const pidOf = async (run: typeof b): Promise<number> => {
      await run.next(/our agent serves the pod channel/, 'the pod channel spotted');
      const child = spawnSync('pgrep', ['-f', `${FAKE_AGENT} agent`, '-P', String(run.child.pid)], { encoding: 'utf8' });
      return Number(child.stdout.trim().split('\n')[0]);
    };
    const agentB = await pidOf(b);
    rmSync(socket);
    await new Promise<void>((resolve) => newer.listen(socket, resolve));
    process.kill(agentB, 'SIGUSR2');
    await b.next(/handed over to a newer agent; waiting for this pod to be deleted/, 'waiting after the hand-over');
    assert.equal(b.child.exitCode, null, 'weft-node does not exit: the kubelet would start it again');
    b.child.kill('SIGTERM');
    assert.equal(await b.exit, 0, b.lines.join('\n'));
    await new Promise<void>((resolve) => newer.close(() => resolve()));

    // The pod is deleted while its agent drains: weft-node does not cut the drain short.
    const c = startWeftNode(args);
    procs.push(c.child);
    const agentC = await pidOf(c);
    rmSync(socket);
    const newer2 = createNetServer();
    await new Promise<void>((resolve) => newer2.listen(socket, resolve));
    c.child.kill('SIGTERM');
    await c.next(/a newer agent serves this node; letting ours finish draining/, 'the drain left alone');
    process.kill(agentC, 'SIGUSR2');
    assert.equal(await c.exit, 0, c.lines.join('\n'));
    assert.ok(!c.lines.some((l) => l.includes('fake-agent: SIGTERM')), 'the draining agent got no SIGTERM');
    assert.ok(!c.lines.some((l) => l.includes('pod stopped')), 'a handed-over pod never asks about uninstalling');
    await new Promise<void>((resolve) => newer2.close(() => resolve()));
  } finally {
    for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
    newer.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('weft-node refuses a node without a BPF filesystem, and `weft-node uninstall` restores the node', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-node-uninstall-'));
  try {
    const r = spawnSync(process.execPath, [WEFT_NODE, 'run', '--no-cni', '--', 'agent', `--bpffs=${join(dir, 'bpf', 'weft')}`], { encoding: 'utf8', env: { ...process.env, WEFT_AGENT_ENTRY: FAKE_AGENT } });
    assert.equal(r.status, 1);
    assert.match(r.stdout + r.stderr, /is not on a BPF filesystem/);

    const conf = join(dir, 'net.d');
    const bin = join(dir, 'bin');
    const state = join(dir, 'state');
    for (const d of [conf, bin, state]) spawnSync('mkdir', ['-p', d]);
    const primary = { cniVersion: '1.0.0', name: 'net', plugins: [{ type: 'bridge' }] };
    writeFileSync(join(conf, '10-net.conflist'), JSON.stringify({ ...primary, plugins: [...primary.plugins, { type: CniDefaults.type, weft: {} }] }));
    writeFileSync(join(bin, CniDefaults.type), 'x');
    writeFileSync(join(state, 'pod.json'), '{}');
    writeFileSync(join(dir, 'pods.sock'), '');
    const u = spawnSync(process.execPath, [WEFT_NODE, 'uninstall', `--cni-bin-dir=${bin}`, `--cni-conf-dir=${conf}`, '--', 'agent', `--bpffs=${join(dir, 'pins')}`, `--state-dir=${state}`, `--pod-socket=${join(dir, 'pods.sock')}`], {
      encoding: 'utf8',
      env: { ...process.env, WEFT_AGENT_ENTRY: FAKE_AGENT },
    });
    assert.equal(u.status, 0, u.stderr);
    assert.deepEqual(JSON.parse(readFileSync(join(conf, '10-net.conflist'), 'utf8')), primary);
    assert.deepEqual(readdirSync(bin), []);
    assert.equal(existsSync(state), false);
    assert.equal(existsSync(join(dir, 'pods.sock')), false);
    assert.match(u.stderr, /BPF pins removed/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// --- the RBAC, enforced: each program does its work against an API that allows only the rendered rules

interface Rule {
  apiGroups: string[];
  resources: string[];
  verbs: string[];
  resourceNames?: string[];
}

/** Kubernetes' RBAC over daemonset/'s Roles, ClusterRoles and bindings (read from the sources, no kubectl). */
export function rbacOf(docs: Doc[]): (a: AuthorizationAttributes) => boolean {
  const rules = new Map<string, Rule[]>(docs.filter((d) => d.kind === 'Role' || d.kind === 'ClusterRole').map((d) => [`${d.kind}/${d.metadata.namespace ?? ''}/${d.metadata.name}`, d.rules as Rule[]]));
  const bindings = docs.filter((d) => d.kind === 'RoleBinding' || d.kind === 'ClusterRoleBinding');
  return (a) =>
    bindings.some((b) => {
      const subject = (b.subjects as Doc[]).some((s) => s.kind === 'ServiceAccount' && a.user.username === `system:serviceaccount:${s.namespace}:${s.name}`);
      if (!subject) return false;
      if (b.kind === 'RoleBinding' && a.namespace !== b.metadata.namespace) return false;
      const role = rules.get(`${b.roleRef.kind}/${b.roleRef.kind === 'Role' ? b.metadata.namespace : ''}/${b.roleRef.name}`) ?? [];
      const resource = a.subresource ? `${a.resource}/${a.subresource}` : a.resource;
      // resourceNames never match a request without a name (create, list, watch), as in Kubernetes.
      return role.some((r) => r.apiGroups.includes(a.group) && r.resources.includes(resource) && r.verbs.includes(a.verb) && (!r.resourceNames || (a.name !== undefined && r.resourceNames.includes(a.name))));
    });
}

const EXTRA_TYPES: StandinType[] = [
  { group: '', version: 'v1', plural: 'secrets', singular: 'secret', kind: 'Secret', namespaced: true, status: false, strategicMerge: true },
  { group: '', version: 'v1', plural: 'configmaps', singular: 'configmap', kind: 'ConfigMap', namespaced: true, status: false, strategicMerge: true, shortNames: ['cm'] },
  { group: 'apps', version: 'v1', plural: 'daemonsets', singular: 'daemonset', kind: 'DaemonSet', namespaced: true, status: true, strategicMerge: true, shortNames: ['ds'] },
];

const sourceDocs = (): Doc[] => ['controller.yaml', 'agent.yaml', 'relay.yaml'].flatMap((f) => parseDocs(readFileSync(join(DAEMONSET, 'core', f), 'utf8'), f));

test('the RBAC evaluator: what the rules allow and what they do not', () => {
  const allow = rbacOf(sourceDocs());
  const as = (sa: string, verb: string, group: string, resource: string, namespace?: string, name?: string, subresource?: string): boolean =>
    allow({ user: { username: `system:serviceaccount:weft-system:${sa}`, groups: [] }, verb, group, resource, subresource, namespace, name });
  assert.equal(as('weft-controller', 'watch', '', 'pods'), true);
  assert.equal(as('weft-controller', 'get', '', 'pods', 'shop', 'web'), false, 'informers only: no get');
  assert.equal(as('weft-controller', 'patch', 'security.istio.io', 'authorizationpolicies', 'shop', 'p', 'status'), true);
  assert.equal(as('weft-controller', 'patch', 'security.istio.io', 'authorizationpolicies', 'shop', 'p'), false, 'status only');
  assert.equal(as('weft-controller', 'get', '', 'secrets', 'weft-system', 'weft-ca'), true);
  assert.equal(as('weft-controller', 'get', '', 'secrets', 'weft-system', 'anything-else'), false);
  assert.equal(as('weft-controller', 'get', '', 'secrets', 'shop', 'weft-ca'), false, 'weft-system only');
  assert.equal(as('weft-controller', 'list', '', 'secrets', 'weft-system'), false);
  assert.equal(as('weft-controller', 'update', '', 'secrets', 'weft-system', 'weft-ca'), false, 'the root is never rewritten');
  assert.equal(as('weft-agent', 'get', 'apps', 'daemonsets', 'weft-system', 'weft-agent'), true);
  assert.equal(as('weft-agent', 'list', '', 'pods'), false);
  assert.equal(as('weft-agent', 'get', 'apps', 'daemonsets', 'weft-system', 'other'), false);
  assert.equal(as('weft-relay', 'list', '', 'nodes'), false);
});

test('each program works against an API server that grants only daemonset/\'s RBAC (a stand-in, enforcing it)', async () => {
  const docs = sourceDocs();
  const api = await KubeStandin.start({ extraTypes: EXTRA_TYPES, authorize: rbacOf(docs), bookmarkIntervalMs: 3_600_000 });
  const tmp = mkdtempSync(join(tmpdir(), 'weft-rbac-'));
  const controllerToken = 'controller-token';
  const agentToken = 'agent-token';
  api.registerToken(controllerToken, { username: 'system:serviceaccount:weft-system:weft-controller' });
  api.registerToken(agentToken, { username: CaTokenAuth.agentServiceAccount });
  api.registerToken('ca-token', { username: CaTokenAuth.agentServiceAccount, audiences: [CaTokenAuth.audience], extra: { 'authentication.kubernetes.io/pod-name': ['weft-agent-x'] } });
  const kubeconfig = api.writeKubeconfig({ token: controllerToken, dir: tmp });
  let controller: Controller | undefined;
  try {
    // The CA bootstrap, twice (first start, then a restart), through the real client.
    const ca = await importImage<CaBootstrapModule>('ca-bootstrap.mjs');
    const kc = new KubeConfig();
    kc.loadFromFile(kubeconfig);
    for (const state of ['first', 'second']) {
      await ca.bootstrap({ core: kc.makeApiClient(CoreV1Api), namespace: 'weft-system', stateDir: join(tmp, state), trustDomain: 'cluster.local' });
    }
    assert.ok(api.get('v1', 'Secret', 'weft-system', 'weft-ca'));
    assert.ok(api.get('v1', 'ConfigMap', 'weft-system', 'weft-root-cert'));
    assert.ok(api.get('v1', 'Secret', 'weft-system', 'weft-relay-credential'));

    // The controller's source: every kind listed and watched, a rejected policy's status, a rejected
    // Service's Event; and a TokenReview.
    const run = `rbac-${process.pid}`;
    api.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: run }, spec: {}, status: { phase: 'Active' } });
    controller = await Controller.start({ source: 'kubernetes', kubeconfig, stateDir: join(tmp, 'controller'), listen: '127.0.0.1:0', monitoring: '127.0.0.1:0', log: createLogger('rbac-test', { level: 'silent' }), kubeSource: { retryInitialMs: 50, retryMaxMs: 400, batchMs: 10 } });
    api.put({ apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'bad', namespace: run }, spec: { action: 'MAYBE' } });
    api.put({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'two-ports', namespace: run }, spec: { clusterIP: '10.96.0.20', ports: [{ port: 80, protocol: 'TCP' }, { port: 81, protocol: 'TCP' }] } });
    const answered = (method: string, path: RegExp) => (r: StandinRequest): boolean => r.method === method && path.test(r.path) && r.status !== undefined;
    const patch = await api.waitForRequest(answered('PATCH', new RegExp(`/namespaces/${run}/authorizationpolicies/bad/status$`)));
    assert.equal(patch.status, 200);
    const event = await api.waitForRequest(answered('POST', new RegExp(`^/apis/events\\.k8s\\.io/v1/namespaces/${run}/events$`)));
    assert.equal(event.status, 201);
    const review = await new KubernetesTokenReviewer(kc).review('ca-token', [CaTokenAuth.audience]);
    assert.equal(review.authenticated, true);
    for (const k of readableKinds()) {
      await api.waitForRequest((r) => r.method === 'GET' && r.query.watch === 'true' && r.path.endsWith(`/${k.plural}`) && r.status === 200);
    }

    // The agent's one read: its DaemonSet, present, being deleted, gone; another's is forbidden.
    const saDir = join(tmp, 'sa');
    spawnSync('mkdir', ['-p', saDir]);
    writeFileSync(join(saDir, 'token'), agentToken);
    writeFileSync(join(saDir, 'ca.crt'), api.caPem);
    const node = await importImage<WeftNodeModule & { daemonSetState(env: NodeJS.ProcessEnv, saDir: string): Promise<string> }>('weft-node.mjs');
    const url = new URL(api.url);
    const env = { KUBERNETES_SERVICE_HOST: url.hostname, KUBERNETES_SERVICE_PORT: url.port, POD_NAMESPACE: 'weft-system', WEFT_DAEMONSET: 'weft-agent' };
    const ds = { apiVersion: 'apps/v1', kind: 'DaemonSet', metadata: { name: 'weft-agent', namespace: 'weft-system' }, spec: {} };
    api.put(ds);
    assert.equal(await node.daemonSetState(env, saDir), 'present');
    api.put({ ...ds, metadata: { ...ds.metadata, deletionTimestamp: new Date().toISOString() } });
    assert.equal(await node.daemonSetState(env, saDir), 'gone');
    api.remove('apps/v1', 'DaemonSet', 'weft-system', 'weft-agent');
    assert.equal(await node.daemonSetState(env, saDir), 'gone');
    assert.equal(await node.daemonSetState({ ...env, WEFT_DAEMONSET: 'other' }, saDir), 'unknown', 'forbidden: not an uninstall');

    // Nothing any program asked for was refused.
    assert.deepEqual(api.requests.filter((r) => r.status === 403).map((r) => `${r.user} ${r.method} ${r.path}`), [`system:serviceaccount:weft-system:weft-agent GET /apis/apps/v1/namespaces/weft-system/daemonsets/other`]);
  } finally {
    controller?.close();
    await controller?.kube?.close();
    await api.close();
    rmSync(tmp, { recursive: true, force: true });
  }
});
