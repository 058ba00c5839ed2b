// The mesh, end to end on a two-node lab with a controller and one agent per node: HBONE over mutual
// TLS between nodes (checked on the wire), the app seeing the real client IP, an Istio L4 policy
// matrix judged by real connections, refused peers on 15008, policy changes closing live connections,
// certificate rotation, and bad policy YAML leaving the last good policy in force.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, renameSync, rmSync, unlinkSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import http2 from 'node:http2';
import net from 'node:net';
import tls from 'node:tls';
import { labDown, labUp, type LabHandle } from '../agent/lab/index.js';
import { agentAdminGet, eventually } from '../agent/node/admin-client.js';
import { CertificateAuthority } from '../agent/controller/ca.js';
import { connectInNetns } from '../native/index.js';
import { ControllerClient } from '../agent/controller/client.js';
import { createKeyAndCsr } from '../agent/identity/csr.js';
import { createLogger } from '../agent/log.js';
import { repoRoot, requirePrivileges, requireLab } from './helpers/privileged.js';

const LAB = `m${process.pid.toString(36)}`;
const FIXTURES = join(repoRoot(), 'test', 'fixtures');
const tmp = mkdtempSync(join(tmpdir(), 'weft-mesh-'));
let lab: LabHandle | undefined;

after(async () => {
  rmSync(tmp, { recursive: true, force: true });
  if (lab) await labDown({ name: LAB });
});

const TD = 'cluster.local';
const principal = (ns: string, sa: string): string => `${TD}/ns/${ns}/sa/${sa}`;

async function connects(from: string, target: string): Promise<boolean> {
  const r = await lab!.exec(from, [process.execPath, join(FIXTURES, 'conn-storm.mjs'), '--targets', target, '--count', '1', '--timeout', '5000'], { stdio: 'pipe' });
  return r.code === 0;
}

// --- policies: written to the lab's watched directory, as `weft apply` does -----------------------

const POLICY_FILE = 'zz-test-policies.yaml';
interface Dump {
  policies: { authorization: string[]; peerAuthentication: string[] };
  configProblems: string[];
}
const dumpOf = (node: string): Promise<Dump> => agentAdminGet<Dump>(lab!.node(node).netnsPath, '/config_dump');

function policyDocs(docs: string[]): { yaml: string; keys: { authorization: string[]; peerAuthentication: string[] } } {
  const keys = { authorization: [] as string[], peerAuthentication: [] as string[] };
  for (const d of docs) {
    const kind = /kind: (\w+)/.exec(d)?.[1];
    const name = /name: ([\w.-]+)/.exec(d)?.[1];
    const ns = /namespace: ([\w.-]+)/.exec(d)?.[1];
    (kind === 'PeerAuthentication' ? keys.peerAuthentication : keys.authorization).push(`${ns}/${name}`);
  }
  return { yaml: docs.join('\n---\n'), keys };
}

/** Replace the test's policies and wait until both agents hold exactly them. */
async function setPolicies(docs: string[]): Promise<void> {
  const { yaml, keys } = policyDocs(docs);
  const file = join(lab!.resourcesDir, POLICY_FILE);
  if (docs.length === 0) {
    if (existsSync(file)) unlinkSync(file);
  } else {
    writeFileSync(file + '.tmp', yaml);
    renameSync(file + '.tmp', file);
  }
  for (const node of ['node-a', 'node-b']) {
    await eventually(`policies ${JSON.stringify(keys)} on ${node}`, async () => {
      const d = await dumpOf(node);
      const same = (a: string[], b: string[]) => JSON.stringify([...a].sort()) === JSON.stringify([...b].sort());
      return same(d.policies.authorization, keys.authorization) && same(d.policies.peerAuthentication, keys.peerAuthentication) ? true : undefined;
    });
  }
}

const authz = (name: string, ns: string, spec: string): string =>
  `apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: ${name}, namespace: ${ns}}\nspec:\n${spec}`;
const peerAuth = (name: string, ns: string, mode: string): string =>
  `apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: ${name}, namespace: ${ns}}\nspec:\n  mtls: {mode: ${mode}}\n`;

test('lab up: controller, agents, certificates', async (t) => {
  if (!requirePrivileges(t)) return;
  lab = await labUp([join(FIXTURES, 'mesh-lab.yaml')], { name: LAB });
  const certs = await agentAdminGet<Array<{ identity: string }>>(lab.node('node-a').netnsPath, '/certs');
  const ids = certs.map((c) => c.identity).sort();
  assert.deepEqual(ids, [`spiffe://${principal('mesh', 'client')}`, `spiffe://${principal('mesh', 'other')}`, `spiffe://${principal('other-ns', 'client')}`]);
});

test('cross-node: 100 MB through a Service arrive intact, the wire carries only TLS to 15008', async (t) => {
  if (!requireLab(t, lab)) return;
  const capture = join(tmp, 'link.pcap');
  // The link between the nodes: node-a's uplink into the fabric.
  const dump = spawn('nsenter', [`--net=${lab.node('node-a').netnsPath}`, 'tcpdump', '-i', 'eth0', '-s', '200', '-U', '-w', capture, 'tcp'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let dumpErr = '';
  dump.stderr.on('data', (d: Buffer) => (dumpErr += d.toString()));
  await eventually('tcpdump to listen', async () => (/listening on/.test(dumpErr) ? true : undefined));
  const marker = 'WEFT-PLAINTEXT-MARKER';
  const r = await lab.exec('mesh/client', [process.execPath, join(FIXTURES, 'bulk-send.mjs'), '--target', 'server.mesh:9000', '--bytes', String(100 * 1024 * 1024), '--marker', marker], { stdio: 'pipe' });
  dump.kill('SIGINT');
  await new Promise((resolve) => dump.once('exit', resolve));
  const result = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as { ok: boolean; received: number; peer: string; mbps: number };
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.equal(result.ok, true);
  assert.equal(result.received, 100 * 1024 * 1024);
  // The app on the receiving pod saw the sending pod's IP.
  assert.equal(result.peer, lab.pod('mesh/client').ip);
  t.diagnostic(`100 MB cross-node through HBONE: ${result.mbps.toFixed(0)} Mbit/s`);

  const raw = readFileSync(capture);
  assert.ok(raw.length > 1000, 'the capture saw traffic');
  assert.equal(raw.includes(Buffer.from(marker)), false, 'no plaintext marker on the wire');
  const lines = execFileSync('tcpdump', ['-r', capture, '-nn', '-q'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim().split('\n');
  const client = lab.pod('mesh/client').ip;
  const server = lab.pod('mesh/server').ip;
  const flows = lines.filter((l) => l.includes(` ${client}.`) || l.includes(` ${server}.`));
  assert.ok(flows.length > 100);
  for (const l of flows) assert.match(l, new RegExp(`(${server.replace(/\./g, '\\.')}\\.15008[ :])|(> ${server.replace(/\./g, '\\.')}\\.15008:)`), `not HBONE: ${l}`);
});

interface Case {
  name: string;
  policies: string[];
  from: string;
  port: 80 | 90;
  allowed: boolean;
}

const SEL = '  selector: {matchLabels: {app: server}}\n';
const CASES: Case[] = [
  { name: 'no policy: allowed', policies: [], from: 'mesh/client', port: 80, allowed: true },
  ...(() => {
    const p = [authz('by-principal', 'mesh', `${SEL}  action: ALLOW\n  rules:\n  - from: [{source: {principals: ["${principal('mesh', 'client')}"]}}]\n`)];
    return [
      { name: 'ALLOW by principal: that principal', policies: p, from: 'mesh/client', port: 80 as const, allowed: true },
      { name: 'ALLOW by principal: another principal', policies: p, from: 'mesh/other', port: 80 as const, allowed: false },
    ];
  })(),
  ...(() => {
    const p = [authz('by-ns', 'mesh', `${SEL}  rules:\n  - from: [{source: {namespaces: ["other-ns"]}}]\n`)];
    return [
      { name: 'ALLOW by namespace: that namespace', policies: p, from: 'other-ns/client', port: 80 as const, allowed: true },
      { name: 'ALLOW by namespace: another namespace', policies: p, from: 'mesh/client', port: 80 as const, allowed: false },
    ];
  })(),
  ...(() => {
    const p = [authz('by-sa', 'mesh', `${SEL}  rules:\n  - from: [{source: {serviceAccounts: ["mesh/other"]}}]\n`)];
    return [
      { name: 'ALLOW by service account: that account', policies: p, from: 'mesh/other', port: 80 as const, allowed: true },
      { name: 'ALLOW by service account: another account', policies: p, from: 'mesh/client', port: 80 as const, allowed: false },
    ];
  })(),
  ...(() => {
    const p = [authz('by-port', 'mesh', `${SEL}  rules:\n  - to: [{operation: {ports: ["9090"]}}]\n`)];
    return [
      { name: 'ALLOW by port: that port', policies: p, from: 'mesh/client', port: 90 as const, allowed: true },
      { name: 'ALLOW by port: another port', policies: p, from: 'mesh/client', port: 80 as const, allowed: false },
    ];
  })(),
  ...(() => {
    const p = (ip: string) => [authz('by-ip', 'mesh', `${SEL}  rules:\n  - from: [{source: {ipBlocks: ["${ip}/32"]}}]\n`)];
    return [
      { name: 'ALLOW by ipBlock: that IP', policies: p('@mesh/client'), from: 'mesh/client', port: 80 as const, allowed: true },
      { name: 'ALLOW by ipBlock: another IP', policies: p('@mesh/client'), from: 'mesh/other', port: 80 as const, allowed: false },
    ];
  })(),
  ...(() => {
    const p = [authz('not-principal', 'mesh', `${SEL}  rules:\n  - from: [{source: {notPrincipals: ["${principal('mesh', 'client')}"]}}]\n`)];
    return [
      { name: 'ALLOW notPrincipals: the excluded principal', policies: p, from: 'mesh/client', port: 80 as const, allowed: false },
      { name: 'ALLOW notPrincipals: any other', policies: p, from: 'mesh/other', port: 80 as const, allowed: true },
    ];
  })(),
  ...(() => {
    const p = [authz('not-port', 'mesh', `${SEL}  rules:\n  - to: [{operation: {notPorts: ["8080"]}}]\n`)];
    return [
      { name: 'ALLOW notPorts: the excluded port', policies: p, from: 'mesh/client', port: 80 as const, allowed: false },
      { name: 'ALLOW notPorts: another port', policies: p, from: 'mesh/client', port: 90 as const, allowed: true },
    ];
  })(),
  ...(() => {
    const p = [authz('when-ns', 'mesh', `${SEL}  rules:\n  - when: [{key: source.namespace, values: ["other-ns"]}]\n`)];
    return [
      { name: 'when source.namespace: matching', policies: p, from: 'other-ns/client', port: 80 as const, allowed: true },
      { name: 'when source.namespace: not matching', policies: p, from: 'mesh/client', port: 80 as const, allowed: false },
    ];
  })(),
  ...(() => {
    const p = [authz('when-port', 'mesh', `${SEL}  rules:\n  - when: [{key: destination.port, notValues: ["8080"]}]\n`)];
    return [
      { name: 'when destination.port notValues: excluded', policies: p, from: 'mesh/client', port: 80 as const, allowed: false },
      { name: 'when destination.port notValues: other', policies: p, from: 'mesh/client', port: 90 as const, allowed: true },
    ];
  })(),
  ...(() => {
    const p = [authz('when-principal', 'mesh', `${SEL}  rules:\n  - when: [{key: source.principal, values: ["${principal('mesh', 'other')}"]}]\n`)];
    return [{ name: 'when source.principal: not matching', policies: p, from: 'mesh/client', port: 80 as const, allowed: false }];
  })(),
  ...(() => {
    const p = [authz('allow-all', 'mesh', `${SEL}  rules:\n  - {}\n`), authz('deny-client', 'mesh', `${SEL}  action: DENY\n  rules:\n  - from: [{source: {principals: ["${principal('mesh', 'client')}"]}}]\n`)];
    return [
      { name: 'DENY beats ALLOW: denied principal', policies: p, from: 'mesh/client', port: 80 as const, allowed: false },
      { name: 'DENY beats ALLOW: others allowed', policies: p, from: 'mesh/other', port: 80 as const, allowed: true },
    ];
  })(),
  ...(() => {
    const p = [authz('mesh-wide', 'istio-system', `  rules:\n  - from: [{source: {namespaces: ["other-ns"]}}]\n`)];
    return [
      { name: 'root-namespace policy applies mesh-wide: not matching', policies: p, from: 'mesh/client', port: 80 as const, allowed: false },
      { name: 'root-namespace policy applies mesh-wide: matching', policies: p, from: 'other-ns/client', port: 80 as const, allowed: true },
    ];
  })(),
  {
    name: 'selector that selects another workload does not apply',
    policies: [authz('other-app', 'mesh', `  selector: {matchLabels: {app: nothing-here}}\n  rules:\n  - from: [{source: {namespaces: ["other-ns"]}}]\n`)],
    from: 'mesh/client',
    port: 80,
    allowed: true,
  },
  {
    name: 'namespace-wide policy (no selector) applies: default deny once an ALLOW exists',
    policies: [authz('ns-wide', 'mesh', `  rules:\n  - from: [{source: {namespaces: ["other-ns"]}}]\n`)],
    from: 'mesh/client',
    port: 80,
    allowed: false,
  },
  {
    name: 'ALLOW with no rules allows nothing',
    policies: [authz('allow-nothing', 'mesh', `${SEL}  action: ALLOW\n`)],
    from: 'mesh/client',
    port: 80,
    allowed: false,
  },
  {
    name: 'L7-only rule in an ALLOW never matches at L4: denied',
    policies: [authz('l7-allow', 'mesh', `${SEL}  rules:\n  - to: [{operation: {methods: ["GET"]}}]\n`)],
    from: 'mesh/client',
    port: 80,
    allowed: false,
  },
  ...(() => {
    // As istiod translates for ztunnel: the L7 field (methods) beside an L4 one (ports) in the same
    // entry is dropped, so the DENY covers every connection to that port, not only POSTs.
    const p = [authz('l7-deny', 'mesh', `${SEL}  action: DENY\n  rules:\n  - from: [{source: {principals: ["${principal('mesh', 'client')}"]}}]\n    to: [{operation: {ports: ["8080"], methods: ["POST"]}}]\n`)];
    return [
      { name: 'L7 part of a DENY is ignored at L4: denies more', policies: p, from: 'mesh/client', port: 80 as const, allowed: false },
      { name: 'L7 part of a DENY is ignored at L4: other ports unaffected', policies: p, from: 'mesh/client', port: 90 as const, allowed: true },
      { name: 'L7 part of a DENY is ignored at L4: other principals unaffected', policies: p, from: 'mesh/other', port: 80 as const, allowed: true },
    ];
  })(),
  { name: 'PeerAuthentication STRICT: plaintext from an un-enrolled pod refused', policies: [peerAuth('strict', 'mesh', 'STRICT')], from: 'plain/client', port: 80, allowed: false },
  { name: 'PeerAuthentication STRICT: mTLS from an enrolled pod allowed', policies: [peerAuth('strict', 'mesh', 'STRICT')], from: 'mesh/client', port: 80, allowed: true },
  { name: 'PeerAuthentication PERMISSIVE: plaintext allowed', policies: [peerAuth('permissive', 'mesh', 'PERMISSIVE')], from: 'plain/client', port: 80, allowed: true },
  {
    name: 'mesh-wide STRICT in the root namespace refuses plaintext',
    policies: [peerAuth('default', 'istio-system', 'STRICT')],
    from: 'plain/client',
    port: 80,
    allowed: false,
  },
  {
    name: 'plaintext has no principal: ALLOW by principal refuses it',
    policies: [authz('by-principal', 'mesh', `${SEL}  rules:\n  - from: [{source: {principals: ["*"]}}]\n`)],
    from: 'plain/client',
    port: 80,
    allowed: false,
  },
];

test(`L4 policy matrix: ${CASES.length} cases, each a real connection`, async (t) => {
  if (!requireLab(t, lab)) return;
  const failures: string[] = [];
  for (const c of CASES) {
    const docs = c.policies.map((d) => d.replace(/@([\w-]+\/[\w-]+)/g, (_m, pod: string) => lab!.pod(pod).ip));
    await setPolicies(docs);
    const got = await connects(c.from, `server.mesh:${c.port}`);
    if (got !== c.allowed) failures.push(`${c.name}: expected ${c.allowed ? 'connected' : 'refused'}, got ${got ? 'connected' : 'refused'}`);
  }
  await setPolicies([]);
  assert.deepEqual(failures, []);
  assert.ok(CASES.length >= 24);
});

// --- peers on 15008 -------------------------------------------------------------------------------

interface Cred {
  certPem: string;
  keyPem: string;
}

async function workloadCred(ca: CertificateAuthority, ns: string, sa: string, ttlSeconds: number): Promise<Cred> {
  const { keyPem, csrPem } = await createKeyAndCsr({ trustDomain: ca.trustDomain, namespace: ns, serviceAccount: sa });
  const { chain } = await ca.signWorkloadCsr(csrPem, ttlSeconds);
  return { certPem: chain.slice(0, -1).join(''), keyPem };
}

/** Speak HBONE to the server's 15008 from an un-enrolled pod; the status the server answered, or why not. */
async function hboneProbe(cred: Cred | undefined): Promise<string> {
  const server = lab!.pod('mesh/server').ip;
  const fd = await connectInNetns(lab!.pod('plain/client').netnsPath, { host: server, port: 15008, timeoutMs: 5000 });
  const socket = new net.Socket({ fd, readable: true, writable: true });
  const meshRoot = readFileSync(join(lab!.stateDir, 'controller', 'root-cert.pem'), 'utf8');
  return new Promise<string>((resolve) => {
    const t = tls.connect({
      socket,
      ...(cred ? { cert: cred.certPem, key: cred.keyPem } : {}),
      ca: meshRoot,
      ALPNProtocols: ['h2'],
      minVersion: 'TLSv1.3',
      servername: '',
      checkServerIdentity: () => undefined,
    });
    t.once('error', (err) => resolve(`tls: ${err.message}`));
    t.once('secureConnect', () => {
      const session = http2.connect(`https://${server}:15008`, { createConnection: () => t });
      session.on('error', (err) => resolve(`h2: ${err.message}`));
      const req = session.request({ ':method': 'CONNECT', ':authority': `${server}:8080` });
      req.on('response', (h) => {
        resolve(String(h[':status']));
        session.destroy();
      });
      req.on('error', (err) => resolve(`stream: ${err.message}`));
      req.on('close', () => resolve('closed'));
    });
    setTimeout(() => resolve('timeout'), 5000).unref();
  });
}

test('15008 refuses peers from another CA, another trust domain, with an expired certificate or none', async (t) => {
  if (!requireLab(t, lab)) return;
  const meshCa = await CertificateAuthority.loadOrCreate({ dir: join(lab.stateDir, 'controller'), trustDomain: TD });
  const foreignCa = await CertificateAuthority.loadOrCreate({ dir: join(tmp, 'foreign-ca'), trustDomain: TD });
  const otherTdCa = await CertificateAuthority.loadOrCreate({ dir: join(tmp, 'other-td-ca'), trustDomain: 'other.local' });
  const pastCa = await CertificateAuthority.loadOrCreate({ dir: join(lab.stateDir, 'controller'), trustDomain: TD, now: () => Date.now() - 7200_000 });

  assert.equal(await hboneProbe(await workloadCred(meshCa, 'mesh', 'client', 3600)), '200', 'control: a valid mesh certificate is accepted');
  for (const [what, cred] of [
    ['another CA', await workloadCred(foreignCa, 'mesh', 'client', 3600)],
    ['another trust domain', await workloadCred(otherTdCa, 'mesh', 'client', 3600)],
    ['an expired certificate', await workloadCred(pastCa, 'mesh', 'client', 3600)],
    ['no certificate', undefined],
  ] as const) {
    const outcome = await hboneProbe(cred);
    assert.notEqual(outcome, '200', `${what} must be refused`);
    t.diagnostic(`${what}: ${outcome}`);
  }
});

test('the CA refuses a certificate for a service account not on the asking node', async (t) => {
  if (!requireLab(t, lab)) return;
  const creds = join(lab.stateDir, 'nodes', 'node-a');
  const client = new ControllerClient({
    address: `${lab.state.hostIP}:15012`,
    node: 'node-a',
    rootCertPem: readFileSync(join(creds, 'root-cert.pem'), 'utf8'),
    certPem: readFileSync(join(creds, 'node-cert.pem'), 'utf8'),
    keyPem: readFileSync(join(creds, 'node-key.pem'), 'utf8'),
    log: createLogger('test', { level: 'silent' }),
  });
  try {
    const own = await createKeyAndCsr({ trustDomain: TD, namespace: 'mesh', serviceAccount: 'client' });
    const chain = await client.createCertificate(own.csrPem, 600);
    assert.equal(chain.length, 2, 'an account on node-a is issued');
    const foreign = await createKeyAndCsr({ trustDomain: TD, namespace: 'mesh', serviceAccount: 'server' });
    await assert.rejects(client.createCertificate(foreign.csrPem, 600), /PERMISSION_DENIED|not.*node/i);
  } finally {
    client.close();
  }
});

test('a policy change applies within a second and closes the live connections it denies', async (t) => {
  if (!requireLab(t, lab)) return;
  await setPolicies([]);
  const held = lab.exec('mesh/client', [process.execPath, join(FIXTURES, 'hold-conn.mjs'), '--target', 'server.mesh:80', '--timeout', '15000'], { stdio: 'pipe' });
  await eventually('the connection to be admitted', async () => {
    const s = await agentAdminGet<{ proxies: Record<string, { inbound: { forwarded: number }; active: number }> }>(lab!.node('node-b').netnsPath, '/stats/capture');
    return (s.proxies['mesh/server']?.active ?? 0) >= 2 ? true : undefined;
  });
  const changedAt = Date.now();
  const file = join(lab.resourcesDir, POLICY_FILE);
  writeFileSync(file + '.tmp', authz('deny-client', 'mesh', `${SEL}  action: DENY\n  rules:\n  - from: [{source: {principals: ["${principal('mesh', 'client')}"]}}]\n`));
  renameSync(file + '.tmp', file);
  const r = await held;
  const closedAt = Number(/closed (\d+)/.exec(r.stdout)?.[1]);
  assert.match(r.stdout, /open \d+/);
  assert.ok(closedAt > 0, `the live connection was not closed: ${r.stdout}`);
  const ms = closedAt - changedAt;
  t.diagnostic(`policy change to closed connection: ${ms} ms`);
  assert.ok(ms < 1000, `closed after ${ms} ms`);
  assert.equal(await connects('mesh/client', 'server.mesh:80'), false, 'new connections are denied');
  await setPolicies([]);
});

test('bad policy YAML is refused with file, line and reason; the previous policy stays in force', async (t) => {
  if (!requireLab(t, lab)) return;
  const deny = authz('deny-client', 'mesh', `${SEL}  action: DENY\n  rules:\n  - from: [{source: {principals: ["${principal('mesh', 'client')}"]}}]\n`);
  await setPolicies([deny]);
  assert.equal(await connects('mesh/client', 'server.mesh:80'), false);
  const file = join(lab.resourcesDir, POLICY_FILE);
  const broken: Array<[string, string, RegExp]> = [
    ['syntax error', deny.replace('rules:', 'rules: [\n'), /YAML|syntax/i],
    ['unknown field', deny.replace('action: DENY', 'action: DENY\n  actoin: ALLOW'), /actoin/],
    ['bad selector', deny.replace('matchLabels: {app: server}', 'matchLabels: {app: [server]}'), /matchLabels/],
    ['bad CIDR', deny.replace('principals: [', 'ipBlocks: ["10.0.0.0/33"], principals: ['), /ipBlocks/],
  ];
  for (const [what, text, reason] of broken) {
    writeFileSync(file + '.tmp', text);
    renameSync(file + '.tmp', file);
    const problems = await eventually(`the ${what} to be reported`, async () => {
      const d = await dumpOf('node-b');
      return reason.test(d.configProblems.join('\n')) ? d.configProblems : undefined;
    });
    assert.match(problems.join('\n'), new RegExp(`${POLICY_FILE}:\\d+:`), `${what}: names file and line`);
    assert.match(problems.join('\n'), reason, `${what}: names the reason`);
    assert.equal(await connects('mesh/client', 'server.mesh:80'), false, `${what}: the last good DENY still holds`);
    assert.equal(await connects('mesh/other', 'server.mesh:80'), true, `${what}: and nothing more`);
  }
  await setPolicies([]);
  assert.equal(await connects('mesh/client', 'server.mesh:80'), true);
});

test('certificate rotation: connections keep working across several rotations', async (t) => {
  if (!requireLab(t, lab)) return;
  const serials = new Set<string>();
  const certOf = async () => {
    const certs = await agentAdminGet<Array<{ identity: string; serial: string }>>(lab!.node('node-a').netnsPath, '/certs');
    return certs.find((c) => c.identity.endsWith('/ns/mesh/sa/client'))?.serial;
  };
  let attempts = 0;
  const deadline = Date.now() + 30_000;
  while (serials.size < 3 && Date.now() < deadline) {
    const s = await certOf();
    if (s) serials.add(s);
    assert.equal(await connects('mesh/client', 'server.mesh:80'), true, `connection ${attempts} across rotations`);
    attempts++;
  }
  t.diagnostic(`${attempts} connections over ${serials.size} certificates`);
  assert.ok(serials.size >= 3, `saw ${serials.size} certificates in 30 s`);
});

test('an agent asked to stop while peers hold HBONE connections to it exits by itself', async (t) => {
  if (!requireLab(t, lab)) return;
  // Pooled tunnels from node-a's proxies into node-b stay open for minutes after their streams end.
  assert.equal(await connects('mesh/client', 'server.mesh:80'), true);
  const log = lab.node('node-b').agentLog;
  const before = readFileSync(log, 'utf8').split('\n').filter((l) => l.includes('"agent exited"')).length;
  await lab.stopAgent('node-b', 'SIGTERM');
  const after = readFileSync(log, 'utf8').split('\n').filter((l) => l.includes('"agent exited"')).length;
  assert.equal(after, before + 1, 'the agent reached exit on its own (a killed process never logs it)');
  await lab.startAgent('node-b');
  assert.equal(await connects('mesh/client', 'server.mesh:80'), true, 'and the next agent serves again');
});
