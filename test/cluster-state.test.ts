// Service resolution and enrollment as the node agent computes them from cluster resources.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ClusterState } from '../agent/state/cluster-state.js';
import type { Resource } from '../agent/registry/types.js';

const pod = (ns: string, name: string, node: string, ip: string, labels: Record<string, string> = {}): Resource => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name, namespace: ns, labels },
  spec: { nodeName: node, containers: [{ name: 'main', command: ['x'] }] },
  status: { podIP: ip },
});
const ns = (name: string, labels: Record<string, string> = {}): Resource => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } });

const resources: Resource[] = [
  ns('shop', { 'istio.io/dataplane-mode': 'ambient' }),
  ns('legacy'),
  ns('alias', { 'weft.io/dataplane-mode': 'ambient' }),
  pod('shop', 'api-1', 'a', '10.0.1.2', { app: 'api' }),
  pod('shop', 'api-2', 'b', '10.0.2.2', { app: 'api' }),
  pod('shop', 'opt-out', 'a', '10.0.1.3', { app: 'other', 'istio.io/dataplane-mode': 'none' }),
  pod('legacy', 'client', 'a', '10.0.1.4'),
  pod('legacy', 'opt-in', 'a', '10.0.1.6', { 'istio.io/dataplane-mode': 'ambient' }),
  pod('alias', 'x', 'a', '10.0.1.5'),
  {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'api', namespace: 'shop' },
    spec: { selector: { app: 'api' }, ports: [{ port: 80, targetPort: 8080 }], clusterIP: '10.96.0.10' },
  },
  { apiVersion: 'v1', kind: 'Service', metadata: { name: 'empty', namespace: 'shop' }, spec: { selector: { app: 'none' }, ports: [{ port: 80 }], clusterIP: '10.96.0.11' } },
];

test('enrollment follows the namespace label, its weft alias, and the pod opt-out/opt-in', () => {
  const s = new ClusterState(resources);
  assert.deepEqual(s.enrolledOn('a').map((w) => w.key).sort(), ['alias/x', 'legacy/opt-in', 'shop/api-1']);
  assert.deepEqual(s.enrolledOn('b').map((w) => w.key), ['shop/api-2']);
});

test('a service VIP resolves to its endpoints round robin, on the target port', () => {
  const s = new ClusterState(resources);
  const picks = [1, 2, 3, 4].map(() => s.resolve({ ip: '10.96.0.10', port: 80 }));
  assert.deepEqual(picks.map((p) => p?.addr), [
    { ip: '10.0.1.2', port: 8080 },
    { ip: '10.0.2.2', port: 8080 },
    { ip: '10.0.1.2', port: 8080 },
    { ip: '10.0.2.2', port: 8080 },
  ]);
  assert.equal(picks[0]?.service, 'shop/api');
  assert.equal(picks[1]?.workload, 'shop/api-2');
});

test('unknown ports and services without endpoints do not resolve; other addresses pass through', () => {
  const s = new ClusterState(resources);
  assert.equal(s.resolve({ ip: '10.96.0.10', port: 81 }), undefined);
  assert.equal(s.resolve({ ip: '10.96.0.11', port: 80 }), undefined);
  assert.deepEqual(s.resolve({ ip: '10.0.1.4', port: 9 }), { addr: { ip: '10.0.1.4', port: 9 }, workload: 'legacy/client' });
  assert.deepEqual(s.resolve({ ip: '192.0.2.9', port: 9 }), { addr: { ip: '192.0.2.9', port: 9 } });
});
