// PeerAuthentication precedence: workload selector > namespace-wide > mesh-wide, port-level over the
// policy's own mode, UNSET inheriting, PERMISSIVE by default.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { effectiveMtlsMode, type EffectiveMtls, type WorkloadRef } from '../agent/policy/index.js';
import type { PeerAuthMode, PeerAuthenticationResource } from '../agent/registry/policy-types.js';

const pa = (
  ns: string,
  name: string,
  mode: PeerAuthMode | undefined,
  extra: { selector?: Record<string, string>; ports?: Record<string, PeerAuthMode> } = {},
): PeerAuthenticationResource => ({
  apiVersion: 'security.istio.io/v1',
  kind: 'PeerAuthentication',
  metadata: { name, namespace: ns },
  spec: {
    ...(extra.selector ? { selector: { matchLabels: extra.selector } } : {}),
    ...(mode ? { mtls: { mode } } : {}),
    ...(extra.ports ? { portLevelMtls: Object.fromEntries(Object.entries(extra.ports).map(([p, m]) => [p, { mode: m }])) } : {}),
  },
});
const mesh = (mode: PeerAuthMode | undefined, name = 'default') => pa('istio-system', name, mode);
const ns = (mode: PeerAuthMode | undefined, name = 'default') => pa('shop', name, mode);
const wl = (mode: PeerAuthMode | undefined, ports?: Record<string, PeerAuthMode>, name = 'api', selector: Record<string, string> = { app: 'api' }) =>
  pa('shop', name, mode, { selector, ...(ports ? { ports } : {}) });

const api: WorkloadRef = { namespace: 'shop', labels: { app: 'api', version: 'v1' } };

interface Case {
  name: string;
  policies: PeerAuthenticationResource[];
  port?: number;
  workload?: WorkloadRef;
  rootNamespace?: string;
  want: EffectiveMtls;
}

const cases: Case[] = [
  { name: 'nothing set: PERMISSIVE', policies: [], want: 'PERMISSIVE' },
  { name: 'mesh STRICT', policies: [mesh('STRICT')], want: 'STRICT' },
  { name: 'mesh UNSET: PERMISSIVE', policies: [mesh('UNSET')], want: 'PERMISSIVE' },
  { name: 'mesh without mtls: PERMISSIVE', policies: [mesh(undefined)], want: 'PERMISSIVE' },
  { name: 'mesh DISABLE', policies: [mesh('DISABLE')], want: 'DISABLE' },
  { name: 'namespace PERMISSIVE overrides mesh STRICT', policies: [mesh('STRICT'), ns('PERMISSIVE')], want: 'PERMISSIVE' },
  { name: 'namespace UNSET inherits mesh STRICT', policies: [mesh('STRICT'), ns('UNSET')], want: 'STRICT' },
  { name: 'namespace STRICT overrides mesh PERMISSIVE', policies: [mesh('PERMISSIVE'), ns('STRICT')], want: 'STRICT' },
  { name: 'workload PERMISSIVE overrides namespace STRICT', policies: [ns('STRICT'), wl('PERMISSIVE')], want: 'PERMISSIVE' },
  { name: 'workload STRICT overrides namespace PERMISSIVE', policies: [ns('PERMISSIVE'), wl('STRICT')], want: 'STRICT' },
  { name: 'workload UNSET inherits namespace STRICT', policies: [ns('STRICT'), wl('UNSET')], want: 'STRICT' },
  { name: 'workload and namespace UNSET inherit mesh STRICT', policies: [mesh('STRICT'), ns('UNSET'), wl(undefined)], want: 'STRICT' },
  { name: 'workload DISABLE', policies: [mesh('STRICT'), wl('DISABLE')], want: 'DISABLE' },
  { name: 'port-level PERMISSIVE on a STRICT workload: that port', policies: [wl('STRICT', { '8080': 'PERMISSIVE' })], port: 8080, want: 'PERMISSIVE' },
  { name: 'port-level PERMISSIVE on a STRICT workload: other ports', policies: [wl('STRICT', { '8080': 'PERMISSIVE' })], port: 9090, want: 'STRICT' },
  { name: 'port-level STRICT on a PERMISSIVE workload', policies: [wl('PERMISSIVE', { '8080': 'STRICT' })], port: 8080, want: 'STRICT' },
  { name: 'port-level DISABLE', policies: [mesh('STRICT'), wl(undefined, { '8080': 'DISABLE' })], port: 8080, want: 'DISABLE' },
  { name: 'port-level PERMISSIVE with workload UNSET under mesh STRICT: that port', policies: [mesh('STRICT'), wl('UNSET', { '8080': 'PERMISSIVE' })], port: 8080, want: 'PERMISSIVE' },
  { name: 'port-level PERMISSIVE with workload UNSET under mesh STRICT: other ports', policies: [mesh('STRICT'), wl('UNSET', { '8080': 'PERMISSIVE' })], port: 9090, want: 'STRICT' },
  { name: 'port-level UNSET inherits the workload mode', policies: [wl('STRICT', { '8080': 'UNSET' })], port: 8080, want: 'STRICT' },
  { name: 'port-level UNSET on a workload UNSET inherits the namespace', policies: [ns('STRICT'), wl('UNSET', { '8080': 'UNSET' })], port: 8080, want: 'STRICT' },
  { name: 'port-level on a namespace-wide policy is ignored', policies: [pa('shop', 'ns-ports', 'STRICT', { ports: { '8080': 'PERMISSIVE' } })], port: 8080, want: 'STRICT' },
  { name: 'workload selector that does not match is ignored', policies: [ns('STRICT'), wl('PERMISSIVE', undefined, 'db', { app: 'db' })], want: 'STRICT' },
  { name: 'selector policy of another namespace is ignored', policies: [ns('STRICT'), pa('back', 'api', 'PERMISSIVE', { selector: { app: 'api' } })], want: 'STRICT' },
  { name: 'namespace-wide policy of another namespace is ignored', policies: [pa('back', 'default', 'STRICT')], want: 'PERMISSIVE' },
  { name: 'root-namespace selector policy is ignored', policies: [pa('istio-system', 'api', 'STRICT', { selector: { app: 'api' } })], want: 'PERMISSIVE' },
  { name: 'empty matchLabels is namespace-wide, so a real selector beats it', policies: [pa('shop', 'a-all', 'STRICT', { selector: {} }), wl('PERMISSIVE', undefined, 'z-api')], want: 'PERMISSIVE' },
  { name: 'two matching selector policies: smallest name wins', policies: [wl('PERMISSIVE', undefined, 'b-api'), wl('STRICT', undefined, 'a-api', { version: 'v1' })], want: 'STRICT' },
  { name: 'the losing selector policy\'s ports do not apply', policies: [wl('STRICT', undefined, 'a-api'), wl('STRICT', { '8080': 'PERMISSIVE' }, 'b-api')], port: 8080, want: 'STRICT' },
  { name: 'two namespace-wide policies: smallest name wins', policies: [ns('PERMISSIVE', 'b'), ns('STRICT', 'a')], want: 'STRICT' },
  { name: 'two mesh-wide policies: smallest name wins', policies: [mesh('STRICT', 'z'), mesh('DISABLE', 'a')], want: 'DISABLE' },
  { name: 'custom root namespace is mesh-wide', policies: [pa('mesh-root', 'default', 'STRICT')], rootNamespace: 'mesh-root', want: 'STRICT' },
  { name: 'istio-system is an ordinary namespace under a custom root', policies: [mesh('STRICT')], rootNamespace: 'mesh-root', want: 'PERMISSIVE' },
  { name: 'workload in the root namespace: its selector-less policy is the mesh policy', policies: [mesh('STRICT'), pa('istio-system', 'gw', 'PERMISSIVE', { selector: { app: 'gw' } })], workload: { namespace: 'istio-system', labels: { app: 'gw' } }, want: 'STRICT' },
];

for (const c of cases) {
  test(`peer-authn: ${c.name}`, () => {
    const got = effectiveMtlsMode(c.policies, c.workload ?? api, c.port ?? 8080, c.rootNamespace ? { rootNamespace: c.rootNamespace } : {});
    assert.equal(got, c.want);
  });
}
