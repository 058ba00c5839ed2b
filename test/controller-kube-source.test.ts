// The controller's Kubernetes source (`weft controller --source kubernetes`) against the Kubernetes API
// stand-in (test/helpers/kube-standin.ts, itself held to kubectl in kube-standin.test.ts): every kind
// added, updated and deleted reaches the registry and an agent's discovery stream; decoding keeps
// what weft reads and drops what it must not take from the API; a rejected policy gets a status
// condition and a rejected Service an Event, naming the field, while the last good version stays in
// force; a watch that expires (410) is followed by a re-list without the state being dropped; an API
// server restart is ridden out; bookmarks move the resourceVersion the watches resume from.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { ControllerClient, type DiscoveryState } from '../agent/controller/client.js';
import { Controller } from '../agent/controller/controller.js';
import { KubeSource, readableKinds } from '../agent/controller/kube-source.js';
import { ConfigRegistry } from '../agent/controller/registry.js';
import { parseDocuments } from '../agent/registry/parse.js';
import { microTime } from '../agent/controller/kube-report.js';
import { createLogger } from '../agent/log.js';
import type { EndpointSliceResource, PodResource, Resource } from '../agent/registry/types.js';
import { ClusterState } from '../agent/state/cluster-state.js';
import { KubeStandin, type KubeObject } from './helpers/kube-standin.js';

const log = createLogger('test', { level: 'silent' });
const run = `kst${process.pid.toString(36)}`;
const tmp = mkdtempSync(join(tmpdir(), 'weft-kube-source-'));
let api: KubeStandin;
let controller: Controller;
let kubeconfig: string;
const clients: ControllerClient[] = [];

const FAST = { retryInitialMs: 50, retryMaxMs: 400, batchMs: 10 };

function ns(name: string, labels: Record<string, string> = {}): KubeObject {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels }, spec: { finalizers: ['kubernetes'] }, status: { phase: 'Active' } };
}

function node(name: string, ip: string): KubeObject {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name, labels: { 'kubernetes.io/hostname': name } },
    spec: { podCIDR: '10.244.1.0/24', podCIDRs: ['10.244.1.0/24', 'fd00:10:244:1::/64'], providerID: `kind://docker/kind/${name}` },
    status: {
      addresses: [
        { type: 'InternalIP', address: ip },
        { type: 'InternalIP', address: 'fc00:f853:ccd:e793::2' },
        { type: 'Hostname', address: name },
      ],
      conditions: [{ type: 'Ready', status: 'True' }],
      nodeInfo: { kubeletVersion: 'v1.32.0' },
    },
  };
}

/** A pod as the API server returns it: far more than weft reads. */
function pod(name: string, o: { node?: string; ip?: string; sa?: string; labels?: Record<string, string>; phase?: string; hostNetwork?: boolean } = {}): KubeObject {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name,
      namespace: run,
      labels: o.labels ?? { app: name },
      // A tenant can write annotations: the netns must never come from here.
      annotations: { 'weft.io/netns': '/proc/1/ns/net', 'kubectl.kubernetes.io/restartedAt': 'x' },
      ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: `${name}-rs`, uid: 'o-1', controller: true }],
    },
    spec: {
      ...(o.node === undefined ? { nodeName: 'node-a' } : o.node ? { nodeName: o.node } : {}),
      serviceAccountName: o.sa ?? 'web',
      ...(o.hostNetwork ? { hostNetwork: true } : {}),
      containers: [
        {
          name: 'app',
          image: 'registry.example/app:1',
          ports: [
            { name: 'http', containerPort: 8080, protocol: 'TCP' },
            { name: 'sctp', containerPort: 9999, protocol: 'SCTP' },
          ],
          env: [{ name: 'PASSWORD', valueFrom: { secretKeyRef: { name: 's', key: 'k' } } }],
          resources: { requests: { cpu: '10m' } },
          volumeMounts: [{ name: 'kube-api-access', mountPath: '/var/run/secrets/kubernetes.io/serviceaccount', readOnly: true }],
        },
      ],
      dnsPolicy: 'ClusterFirst',
      tolerations: [{ key: 'node.kubernetes.io/not-ready', operator: 'Exists', effect: 'NoExecute', tolerationSeconds: 300 }],
    },
    status: {
      phase: o.phase ?? 'Running',
      hostIP: '172.18.0.2',
      hostIPs: [{ ip: '172.18.0.2' }],
      ...(o.ip ? { podIP: 'fd00:10:244:1::5', podIPs: [{ ip: 'fd00:10:244:1::5' }, { ip: o.ip }] } : {}),
      conditions: [{ type: 'Ready', status: 'True' }],
      containerStatuses: [{ name: 'app', ready: true, restartCount: 0 }],
    },
  };
}

function service(name: string, clusterIP: string): KubeObject {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: run, labels: { app: name } },
    spec: {
      type: 'ClusterIP',
      clusterIP,
      clusterIPs: [clusterIP],
      ipFamilies: ['IPv4'],
      selector: { app: name },
      sessionAffinity: 'None',
      ports: [{ name: 'http', port: 80, targetPort: 'http', protocol: 'TCP' }],
    },
    status: { loadBalancer: {} },
  };
}

function slice(name: string, svc: string, ip: string, ready = true): KubeObject {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name, namespace: run, labels: { 'kubernetes.io/service-name': svc, 'endpointslice.kubernetes.io/managed-by': 'endpointslice-controller.k8s.io' } },
    addressType: 'IPv4',
    endpoints: [{ addresses: [ip], conditions: { ready, serving: ready, terminating: false }, nodeName: 'node-a', targetRef: { kind: 'Pod', name: 'web-0', namespace: run, uid: 'p-1' }, zone: 'z1' }],
    ports: [{ name: 'http', port: 8080, protocol: 'TCP', appProtocol: 'http' }],
  };
}

function authz(name: string, action: string, namespaces = ['evil']): KubeObject {
  return { apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name, namespace: run }, spec: { action, rules: [{ from: [{ source: { namespaces } }] }] } };
}

function peerAuth(name: string, mode: string): KubeObject {
  return { apiVersion: 'security.istio.io/v1', kind: 'PeerAuthentication', metadata: { name, namespace: run }, spec: { mtls: { mode } } };
}

const key = (o: KubeObject): string => (o.metadata.namespace && o.kind !== 'Namespace' && o.kind !== 'Node' ? `${o.kind}/${o.metadata.namespace}/${o.metadata.name}` : `${o.kind}/${o.metadata.name}`);
const keyOf = (r: Resource): string => (r.metadata.namespace !== undefined ? `${r.kind}/${r.metadata.namespace}/${r.metadata.name}` : `${r.kind}/${r.metadata.name}`);

function find(k: string): Resource | undefined {
  return controller.registry.resources().find((r) => keyOf(r) === k);
}

/**
 * Resolves once `probe` returns something, looking again at every registry change and every request
 * the stand-in answers (no sleeping).
 */
function until<T>(what: string, probe: () => T | undefined | false, timeoutMs = 10_000): Promise<T> {
  return new Promise((resolve, reject) => {
    let unsubscribe = (): void => undefined;
    const done = (): void => {
      clearTimeout(timer);
      unsubscribe();
      api.off('request', check);
      controller.kube?.off('progress', check);
    };
    const check = (): void => {
      let v: T | undefined | false;
      try {
        v = probe();
      } catch (err) {
        done();
        reject(err as Error);
        return;
      }
      if (v !== undefined && v !== false) {
        done();
        resolve(v);
      }
    };
    const timer = setTimeout(() => {
      done();
      reject(new Error(`timed out waiting for ${what}`));
    }, timeoutMs);
    unsubscribe = controller.registry.subscribe(check);
    api.on('request', check);
    controller.kube?.on('progress', check);
    check();
  });
}

before(async () => {
  api = await KubeStandin.start({ bookmarkIntervalMs: 3_600_000 });
  kubeconfig = api.writeKubeconfig();
  api.put(ns(run, { 'istio.io/dataplane-mode': 'ambient' }));
  api.put(node('node-a', '172.18.0.2'));
  api.put(pod('web-0', { ip: '10.244.1.5' }));
  api.put(service('web', '10.96.0.10'));
  api.put(slice('web-abcde', 'web', '10.244.1.5'));
  api.put(authz('deny-evil', 'DENY'));
  controller = await Controller.start({
    source: 'kubernetes',
    kubeconfig,
    stateDir: join(tmp, 'state'),
    listen: '127.0.0.1:0',
    monitoring: '127.0.0.1:0',
    log,
    kubeSource: FAST,
  });
});

after(async () => {
  for (const c of clients) c.close();
  controller?.close();
  await controller?.kube?.close();
  await api?.close();
  rmSync(tmp, { recursive: true, force: true });
});

test('the first registry state holds every kind listed, decoded to what weft reads', () => {
  assert.ok(controller.registry.version >= 1);
  const p = find(`Pod/${run}/web-0`) as PodResource | undefined;
  assert.ok(p, 'the pod is in the registry');
  assert.equal(p.status?.podIP, '10.244.1.5', 'the IPv4 of podIPs, though the IPv6 one comes first');
  assert.equal(p.status?.hostIP, '172.18.0.2');
  assert.equal(p.status?.phase, 'Running');
  assert.equal(p.spec.nodeName, 'node-a');
  assert.equal(p.spec.serviceAccountName, 'web');
  assert.deepEqual(p.metadata.labels, { app: 'web-0' });
  assert.equal(p.metadata.annotations, undefined, 'no annotation of a pod is taken from the API (weft.io/netns least of all)');
  assert.match(p.metadata.uid ?? '', /^[0-9a-f-]{36}$/, 'the uid is kept (a bound token names it)');
  assert.deepEqual(p.spec.containers, [{ name: 'app', command: [], ports: [{ containerPort: 8080, name: 'http', protocol: 'TCP' }] }], 'no env (secrets), no SCTP');
  const n = find('Node/node-a');
  assert.deepEqual(n, { apiVersion: 'v1', kind: 'Node', metadata: { name: 'node-a', labels: { 'kubernetes.io/hostname': 'node-a' }, uid: n?.metadata.uid }, spec: { podCIDR: '10.244.1.0/24' }, status: { addresses: [{ type: 'InternalIP', address: '172.18.0.2' }] } });
  const svc = find(`Service/${run}/web`);
  assert.deepEqual((svc as { spec: unknown }).spec, { ports: [{ port: 80, name: 'http', protocol: 'TCP' }], selector: { app: 'web' }, clusterIP: '10.96.0.10' });
  assert.ok(find(`AuthorizationPolicy/${run}/deny-evil`));
  assert.ok(find(`Namespace/${run}`));
  assert.deepEqual(controller.registry.problems(), []);
});

test('EndpointSlices give the service its endpoints and the named target port', () => {
  const state = new ClusterState(controller.registry.resources());
  // The service's targetPort is the name "http"; the slice says 8080.
  const t = state.resolve({ ip: '10.96.0.10', port: 80 });
  assert.deepEqual(t, { addr: { ip: '10.244.1.5', port: 8080 }, service: `${run}/web`, workload: `${run}/web-0` });
  const s = find(`EndpointSlice/${run}/web-abcde`) as EndpointSliceResource;
  assert.deepEqual(s.endpoints, [{ addresses: ['10.244.1.5'], conditions: { ready: true, serving: true, terminating: false }, nodeName: 'node-a', targetRef: { kind: 'Pod', namespace: run, name: 'web-0' } }]);
});

test('a not-ready endpoint gets no traffic; the selector alone would have sent it some', async () => {
  api.put(slice('web-abcde', 'web', '10.244.1.5', false));
  await until('the slice update', () => (find(`EndpointSlice/${run}/web-abcde`) as EndpointSliceResource | undefined)?.endpoints[0]?.conditions?.ready === false);
  const state = new ClusterState(controller.registry.resources());
  assert.equal(state.resolve({ ip: '10.96.0.10', port: 80 }), undefined);
  api.put(slice('web-abcde', 'web', '10.244.1.5', true));
  await until('the slice ready again', () => (find(`EndpointSlice/${run}/web-abcde`) as EndpointSliceResource | undefined)?.endpoints[0]?.conditions?.ready === true);
});

/** One object of each kind the source reads, created, changed and deleted. */
const fixtures: Record<string, () => KubeObject> = {
  Namespace: () => ns(`${run}-x`),
  Node: () => node('node-x.example.internal', '172.18.0.9'),
  Pod: () => pod('every-kind', { ip: '10.244.1.77' }),
  Service: () => service('every-kind', '10.96.0.77'),
  EndpointSlice: () => slice('every-kind-x1', 'every-kind', '10.244.1.77'),
  AuthorizationPolicy: () => authz('every-kind', 'ALLOW', ['a']),
  PeerAuthentication: () => peerAuth('every-kind', 'STRICT'),
  RequestAuthentication: () => ({
    apiVersion: 'security.istio.io/v1',
    kind: 'RequestAuthentication',
    metadata: { name: 'every-kind', namespace: run },
    spec: { jwtRules: [{ issuer: 'https://issuer.example', jwksUri: 'https://issuer.example/jwks.json' }] },
  }),
  Gateway: () => ({
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'Gateway',
    metadata: { name: 'every-kind', namespace: run, labels: { 'istio.io/waypoint-for': 'service' } },
    spec: { gatewayClassName: 'istio-waypoint', listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }] },
  }),
  HTTPRoute: () => ({
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'HTTPRoute',
    metadata: { name: 'every-kind', namespace: run },
    spec: { parentRefs: [{ group: '', kind: 'Service', name: 'every-kind', port: 80 }], rules: [{ backendRefs: [{ name: 'every-kind', port: 80 }] }] },
  }),
  DestinationRule: () => ({
    apiVersion: 'networking.istio.io/v1',
    kind: 'DestinationRule',
    metadata: { name: 'every-kind', namespace: run },
    spec: { host: 'every-kind', trafficPolicy: { loadBalancer: { simple: 'ROUND_ROBIN' } } },
  }),
  VirtualService: () => ({
    apiVersion: 'networking.istio.io/v1',
    kind: 'VirtualService',
    metadata: { name: 'every-kind', namespace: run },
    spec: { hosts: ['every-kind'], http: [{ route: [{ destination: { host: 'every-kind' } }] }] },
  }),
};

test('add, update and delete of every kind the source reads reach the registry', async () => {
  const kinds = readableKinds().map((k) => k.kind);
  assert.deepEqual(
    kinds.filter((k) => !fixtures[k]),
    [],
    'every kind the source reads needs a fixture here',
  );
  for (const kind of kinds) {
    const o = fixtures[kind]!();
    const k = key(o);
    api.put(o);
    await until(`${kind} added`, () => find(k));
    api.put({ ...o, metadata: { ...o.metadata, labels: { ...o.metadata.labels, rev: '2' } } });
    await until(`${kind} updated`, () => find(k)?.metadata.labels?.rev === '2');
    api.remove(o.apiVersion, o.kind, o.metadata.namespace, o.metadata.name);
    await until(`${kind} deleted`, () => !find(k));
  }
});

test('pods that are no workloads: unscheduled, finished, host network', async () => {
  api.put(pod('pending', { node: '' }));
  api.put(pod('host-net', { ip: '172.18.0.2', hostNetwork: true }));
  api.put(pod('done', { ip: '10.244.1.90' }));
  await until('the host-network pod', () => find(`Pod/${run}/host-net`));
  await until('the running pod', () => find(`Pod/${run}/done`));
  assert.equal(find(`Pod/${run}/pending`), undefined, 'a pod not scheduled yet is no workload');
  assert.equal((find(`Pod/${run}/host-net`) as PodResource).status?.podIP, undefined, "a host-network pod does not claim its node's address");
  api.put(pod('done', { ip: '10.244.1.90', phase: 'Succeeded' }));
  await until('the finished pod gone', () => !find(`Pod/${run}/done`));
  for (const n of ['pending', 'host-net', 'done']) api.remove('v1', 'Pod', run, n);
  await until('cleanup', () => !find(`Pod/${run}/host-net`));
});

test('a rejected policy: a status condition names the field, the last good version stays in force', async () => {
  const good = authz('flaky', 'DENY', ['first']);
  api.put(good);
  await until('the good policy', () => find(`AuthorizationPolicy/${run}/flaky`));
  api.put(authz('flaky', 'MAYBE', ['second']));
  const cond = await until('the status condition', () => {
    const c = (api.get('security.istio.io/v1', 'AuthorizationPolicy', run, 'flaky')?.status as { conditions?: Array<Record<string, unknown>> } | undefined)?.conditions?.find((x) => x.type === 'weft.io/Accepted');
    return c?.status === 'False' ? c : undefined;
  });
  assert.equal(cond.reason, 'Invalid');
  assert.match(String(cond.message), /spec\.action: "MAYBE" is not one of ALLOW, DENY, AUDIT, CUSTOM/);
  assert.match(String(cond.message), /last good version in force/);
  assert.equal(cond.observedGeneration, 2);
  const patch = api.requests.find((r) => r.method === 'PATCH' && r.path === `/apis/security.istio.io/v1/namespaces/${run}/authorizationpolicies/flaky/status`);
  assert.equal(patch?.contentType, 'application/merge-patch+json', "Istio's kinds take a JSON merge patch");
  // In force: the first version.
  const inForce = find(`AuthorizationPolicy/${run}/flaky`) as { spec: { action: string; rules: unknown } };
  assert.equal(inForce.spec.action, 'DENY');
  assert.deepEqual(inForce.spec.rules, [{ from: [{ source: { namespaces: ['first'] } }] }]);
  const problem = await until('the registry problem', () => controller.registry.problems().find((p) => p.file === `kubernetes:AuthorizationPolicy/${run}/flaky`));
  assert.equal(problem.field, 'spec.action');
  const metrics = await controller.metrics.registry.getSingleMetricAsString('weft_config_rejections_total');
  assert.match(metrics, /weft_config_rejections_total\{kind="AuthorizationPolicy"\} 1/);

  // Fixed: in force again, and the condition turns True.
  api.put(authz('flaky', 'ALLOW', ['third']));
  await until('the fixed version in force', () => (find(`AuthorizationPolicy/${run}/flaky`) as { spec: { action: string } } | undefined)?.spec.action === 'ALLOW');
  await until('the condition back to True', () => {
    const c = (api.get('security.istio.io/v1', 'AuthorizationPolicy', run, 'flaky')?.status as { conditions?: Array<Record<string, unknown>> } | undefined)?.conditions?.find((x) => x.type === 'weft.io/Accepted');
    return c?.status === 'True';
  });
  assert.deepEqual(controller.registry.problems().filter((p) => p.file.includes('flaky')), []);
  api.remove('security.istio.io/v1', 'AuthorizationPolicy', run, 'flaky');
  await until('removed', () => !find(`AuthorizationPolicy/${run}/flaky`));
});

test('a rejected Service gets an Event regarding it, naming the field', async () => {
  const bad = service('two-ports', '10.96.0.20');
  (bad.spec as { ports: unknown[] }).ports.push({ port: 81, targetPort: 8081, protocol: 'TCP' });
  api.put(bad);
  const event = await until('an Event', () => api.list('events.k8s.io/v1', 'Event', run).find((e) => (e.regarding as { name?: string } | undefined)?.name === 'two-ports'));
  assert.equal(event.type, 'Warning');
  assert.equal(event.reason, 'Rejected');
  assert.equal(event.reportingController, 'weft.io/controller');
  assert.match(String(event.note), /spec\.ports\[1\]: ports must be named when a service has more than one/);
  assert.match(String(event.note), /weft does not use this object/);
  assert.deepEqual({ ...(event.regarding as object), uid: undefined, resourceVersion: undefined }, { apiVersion: 'v1', kind: 'Service', name: 'two-ports', namespace: run, uid: undefined, resourceVersion: undefined });
  assert.match(String(event.eventTime), /\.\d{6}Z$/);
  assert.equal(find(`Service/${run}/two-ports`), undefined);
  // The same problem is reported once, however often the object comes back through the watch.
  api.put({ ...bad, metadata: { ...bad.metadata, labels: { touched: 'yes' } } });
  await until('the touched service seen', () => controller.registry.problems().length > 0 && api.resourceVersion === (controller.kube?.resourceVersion('Service') ?? ''));
  await controller.kube?.reporter?.idle();
  assert.equal(api.list('events.k8s.io/v1', 'Event', run).filter((e) => (e.regarding as { name?: string }).name === 'two-ports').length, 1);
  api.remove('v1', 'Service', run, 'two-ports');
  await until('no problem left', () => !controller.registry.problems().some((p) => p.file.includes('two-ports')));
});

test('MicroTime has exactly six fractional digits', () => {
  assert.equal(microTime(Date.UTC(2026, 11, 1, 5, 0, 0, 123) + 0.456), '2026-12-01T05:00:00.123456Z');
  assert.equal(microTime(Date.UTC(2026, 11, 1, 5, 0, 0, 0)), '2026-12-01T05:00:00.000000Z');
});

test('a watch that expires (410) is followed by a re-list; the state stays meanwhile', async () => {
  api.put(pod('stays', { ip: '10.244.1.30' }));
  api.put(pod('goes', { ip: '10.244.1.31' }));
  await until('both pods', () => find(`Pod/${run}/stays`) && find(`Pod/${run}/goes`));
  const removals: string[] = [];
  const unsubscribe = controller.registry.subscribe((c) => removals.push(...c.removals));
  try {
    // Every watch expires; changes made then reach no watch, and history is compacted past them.
    const before = api.requests.length;
    api.expireWatches();
    api.remove('v1', 'Pod', run, 'goes');
    api.put(pod('arrives', { ip: '10.244.1.32' }));
    api.compact();
    await api.waitForRequest((r) => api.requests.indexOf(r) >= before && r.method === 'GET' && r.path === '/api/v1/pods' && r.query.watch === undefined);
    await until('the new pod after the re-list', () => find(`Pod/${run}/arrives`));
    await until('the deleted pod gone after the re-list', () => !find(`Pod/${run}/goes`));
    assert.deepEqual(removals, [`Pod/${run}/goes`], 'nothing else left the registry');
    assert.ok(find(`Pod/${run}/web-0`) && find(`AuthorizationPolicy/${run}/deny-evil`) && find(`Service/${run}/web`));
  } finally {
    unsubscribe();
    api.remove('v1', 'Pod', run, 'stays');
    api.remove('v1', 'Pod', run, 'arrives');
  }
  await until('cleanup', () => !find(`Pod/${run}/arrives`));
});

test('an API server restart: the state stays while it is down, the watches resume from their versions', async () => {
  await api.stop();
  const objects = controller.registry.resources().length;
  const lastPodRv = controller.kube!.resourceVersion('Pod');
  const version = controller.registry.version;
  // While it is down: the registry keeps everything, and the source keeps retrying.
  await until('a failed reconnect', () => controller.kube!.status().some((k) => k.failures > 0) || undefined);
  assert.equal(controller.registry.resources().length, objects);
  assert.equal(controller.registry.version, version);
  api.put(pod('while-down', { ip: '10.244.1.40' }));
  const from = api.requests.length;
  await api.resume();
  await until('the pod written while the server was down', () => find(`Pod/${run}/while-down`));
  const podWatch = api.requests.slice(from).find((r) => r.path === '/api/v1/pods' && r.query.watch === 'true');
  assert.equal(podWatch?.query.resourceVersion, lastPodRv, 'resumed from the last version seen, not re-listed');
  assert.equal(
    api.requests.slice(from).some((r) => r.path === '/api/v1/pods' && r.query.watch === undefined),
    false,
  );
  api.remove('v1', 'Pod', run, 'while-down');
  await until('cleanup', () => !find(`Pod/${run}/while-down`));
});

test('bookmarks move the resourceVersion a watch resumes from', async () => {
  assert.ok(api.requests.some((r) => r.query.watch === 'true' && r.query.allowWatchBookmarks === 'true'), 'watches ask for bookmarks');
  // A change of another kind moves the server's version past every pod event.
  api.put(ns(`${run}-bm`));
  await until('the namespace', () => find(`Namespace/${run}-bm`));
  const target = api.resourceVersion;
  assert.notEqual(controller.kube!.resourceVersion('Pod'), target);
  api.sendBookmarks();
  await until('the bookmark seen', () => controller.kube!.resourceVersion('Pod') === target);
  const from = api.requests.length;
  api.dropWatches();
  const next = await api.waitForRequest((r) => api.requests.indexOf(r) >= from && r.path === '/api/v1/pods' && r.query.watch === 'true');
  assert.equal(next.query.resourceVersion, target);
  api.remove('v1', 'Namespace', undefined, `${run}-bm`);
});

test('an agent receives what the API holds through its discovery stream', async () => {
  const cred = await controller.ca.issueNodeCredential('node-a', 3600);
  const client = new ControllerClient({ address: `127.0.0.1:${controller.server.port}`, node: 'node-a', rootCertPem: controller.ca.rootCertPem, ...cred, log, backoff: { initialMs: 100, maxMs: 200 } });
  clients.push(client);
  let latest: DiscoveryState | undefined;
  let wake: (() => void) | undefined;
  client.watch((u) => {
    latest = u;
    wake?.();
  });
  const agentHas = async (what: string, pred: (s: DiscoveryState) => boolean): Promise<void> => {
    const deadline = Date.now() + 10_000;
    while (!latest || !pred(latest)) {
      if (Date.now() > deadline) throw new Error(`the agent never got ${what}`);
      await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, 500);
      });
    }
  };
  const has = (k: string) => (s: DiscoveryState) => s.resources.some((r) => keyOf(r) === k);
  await agentHas('the listed objects', (s) => has(`Pod/${run}/web-0`)(s) && has(`EndpointSlice/${run}/web-abcde`)(s) && has(`AuthorizationPolicy/${run}/deny-evil`)(s));
  api.put(peerAuth('strict', 'STRICT'));
  await agentHas('the new PeerAuthentication', has(`PeerAuthentication/${run}/strict`));
  api.remove('security.istio.io/v1', 'PeerAuthentication', run, 'strict');
  await agentHas('its removal', (s) => !has(`PeerAuthentication/${run}/strict`)(s));
});

test('with --source kubernetes the controller reviews agent tokens through the same API server', () => {
  assert.ok(controller.server.tokenAuthenticator, 'token authentication is on');
});

test('a cluster without the policy CRDs: those kinds read as empty, the controller starts', async () => {
  const bare = await KubeStandin.start({ omitKinds: ['AuthorizationPolicy', 'PeerAuthentication'] });
  let c: Controller | undefined;
  try {
    bare.put(ns('plain'));
    c = await Controller.start({ source: 'kubernetes', kubeconfig: bare.writeKubeconfig(), stateDir: join(tmp, 'state-bare'), listen: '127.0.0.1:0', monitoring: '127.0.0.1:0', log, kubeSource: FAST });
    assert.ok(c.registry.resources().some((r) => r.kind === 'Namespace' && r.metadata.name === 'plain'));
    const missing = c.kube!.status().filter((k) => k.missing).map((k) => k.kind).sort();
    assert.deepEqual(missing, ['AuthorizationPolicy', 'PeerAuthentication']);
  } finally {
    c?.close();
    await c?.kube?.close();
    await bare.close();
  }
});

test('KUBECONFIG is read when --kubeconfig is not given; --kubeconfig with a dir: source is a usage error', async () => {
  const saved = process.env.KUBECONFIG;
  process.env.KUBECONFIG = kubeconfig;
  let c: Controller | undefined;
  try {
    c = await Controller.start({ source: 'kubernetes', stateDir: join(tmp, 'state-env'), listen: '127.0.0.1:0', monitoring: '127.0.0.1:0', log, kubeSource: { ...FAST, reportRejections: false } });
    assert.ok(c.registry.resources().some((r) => keyOf(r) === `Pod/${run}/web-0`));
  } finally {
    if (saved === undefined) delete process.env.KUBECONFIG;
    else process.env.KUBECONFIG = saved;
    c?.close();
    await c?.kube?.close();
  }
  await assert.rejects(
    Controller.start({ source: `dir:${tmp}`, kubeconfig, stateDir: join(tmp, 'state-x'), listen: '127.0.0.1:0', monitoring: '127.0.0.1:0', log }),
    /--kubeconfig goes with --source kubernetes/,
  );
  await assert.rejects(
    Controller.start({ source: 'kubernetes', kubeconfig: join(tmp, 'no-such-kubeconfig'), stateDir: join(tmp, 'state-y'), listen: '127.0.0.1:0', monitoring: '127.0.0.1:0', log }),
    (err: Error & { code?: string }) => err.code === 'WEFT_ERR_USAGE' && /--kubeconfig/.test(err.message),
  );
});

test('nothing reaches the registry before every kind is listed: pods never arrive without their policies', async () => {
  let allowPolicies = false;
  const guarded = await KubeStandin.start({ authorize: (a) => allowPolicies || a.resource !== 'authorizationpolicies' });
  const registry = new ConfigRegistry({ log });
  let source: KubeSource | undefined;
  try {
    guarded.put(ns('guarded'));
    guarded.put({ ...pod('p'), metadata: { ...pod('p').metadata, namespace: 'guarded' } });
    guarded.put({ ...authz('deny', 'DENY'), metadata: { name: 'deny', namespace: 'guarded' } });
    const kc = new KubeConfig();
    kc.loadFromFile(guarded.writeKubeconfig());
    const started = KubeSource.start({ kubeConfig: kc, registry, log, ...FAST });
    // The policies are refused twice (403), while every other kind has been listed.
    let refusals = 0;
    await guarded.waitForRequest((r) => r.path === '/apis/security.istio.io/v1/authorizationpolicies' && r.status === 403 && ++refusals >= 2);
    await guarded.waitForRequest((r) => r.path === '/api/v1/pods' && r.status === 200);
    assert.equal(registry.version, 0, 'nothing published yet');
    assert.deepEqual(registry.resources(), []);
    allowPolicies = true;
    source = await started;
    const keys = registry.resources().map(keyOf).sort();
    assert.deepEqual(keys, ['AuthorizationPolicy/guarded/deny', 'Namespace/guarded', 'Pod/guarded/p']);
    assert.equal(registry.version, 1, 'one first version, whole');
  } finally {
    await source?.close();
    registry.close();
    await guarded.close();
  }
});

test('files take the same kinds: an EndpointSlice and a v1 Node from a directory, checked by the same validators', () => {
  const ok = parseDocuments(
    [
      'apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}\naddressType: IPv4\nendpoints: [{addresses: [10.1.0.5], conditions: {ready: true}}]\nports: [{name: http, port: 8080, protocol: TCP}]\n',
      'apiVersion: v1\nkind: Node\nmetadata: {name: worker}\nspec: {}\nstatus: {addresses: [{type: InternalIP, address: 172.18.0.3}]}\n',
    ].join('---\n'),
    'cluster.yaml',
  );
  assert.deepEqual(ok.problems, []);
  assert.deepEqual(ok.resources.map((r) => r.kind), ['EndpointSlice', 'Node']);
  const bad = parseDocuments(
    'apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: web-2, namespace: shop}\naddressType: IPv6\nendpoints: [{addresses: [not-an-ip], conditions: {ready: "yes"}}]\n',
    'bad.yaml',
  );
  assert.deepEqual(
    bad.problems.map((p) => `${p.line}: ${p.field}: ${p.reason}`),
    [
      '3: metadata.labels: an EndpointSlice needs the label kubernetes.io/service-name naming its Service',
      '4: addressType: "IPv6" is not one of IPv4',
      '5: endpoints[0].addresses[0]: "not-an-ip" is not an IPv4 address',
      '5: endpoints[0].conditions.ready: must be true or false, got the string "yes"',
    ],
  );
  // The lab's own Node still needs its pod CIDR.
  const lab = parseDocuments('apiVersion: weft.io/v1alpha1\nkind: Node\nmetadata: {name: n}\nspec: {}\n', 'lab.yaml');
  assert.equal(lab.problems[0]?.field, 'spec.podCIDR');
});
