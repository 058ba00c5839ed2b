// A real controller on 127.0.0.1 against hostile or unwelcome callers, over gRPC: node authorization
// for every shape of "someone else's service account", hostile CSRs refused with INVALID_ARGUMENT
// before they cost anything, the per-node CSR rate limit, revoked nodes (by name and by credential
// serial, through `weft controller revoke-node`, re-read when the list changes) and expired node
// credentials.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate, createPublicKey, generateKeyPairSync, randomBytes } from 'node:crypto';
import { appendFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import * as grpc from '@grpc/grpc-js';
import { pino } from 'pino';
import { CertificateAuthority, type IssuedCredential } from '../agent/controller/ca.js';
import { ControllerCallError, ControllerClient } from '../agent/controller/client.js';
import { Controller } from '../agent/controller/controller.js';
import { controllerProtos } from '../agent/controller/proto.js';
import { REVOKED_NODES_FILE, parseRevocations } from '../agent/controller/revocation.js';
import { controllerCommand } from '../agent/controller/command.js';
import { buildCsr, createKeyAndCsr } from '../agent/identity/csr.js';
import { bitString, context, derNull, octetString, oid, seq, set, smallInteger, toPem, unsignedInteger } from '../agent/identity/der.js';

const TD = 'cluster.local';
const BURST = 20;
const tmp = mkdtempSync(join(tmpdir(), 'weft-ctl-hard-'));
const stateDir = join(tmp, 'state');
const logLines: Array<Record<string, unknown>> = [];
const log = pino(
  { level: 'info' },
  new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line) logLines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  }),
);
let controller: Controller;
let address: string;
const clients: ControllerClient[] = [];
const creds = new Map<string, IssuedCredential>();

const pod = (ns: string, name: string, node: string, sa?: string): string =>
  `apiVersion: v1\nkind: Pod\nmetadata: {name: ${name}, namespace: ${ns}}\nspec:\n  nodeName: ${node}\n${sa ? `  serviceAccountName: ${sa}\n` : ''}  containers: [{name: c, command: [sleep, "1"]}]\n`;

before(async () => {
  const resources = join(tmp, 'resources');
  mkdirSync(resources);
  writeFileSync(
    join(resources, 'cluster.yaml'),
    [
      ...['node-a', 'node-b', 'node-c', 'node-d', 'node-r', 'node-s'].map((n, i) => `apiVersion: weft.io/v1alpha1\nkind: Node\nmetadata: {name: ${n}}\nspec: {podCIDR: 10.1.${i + 1}.0/24}\n`),
      pod('shop', 'client', 'node-a', 'client'),
      pod('shop', 'server', 'node-b', 'server'),
      pod('shop', 'web', 'node-b', 'web'),
      pod('shop', 'web-2', 'node-b', 'web'),
      pod('elsewhere', 'x', 'node-b'), // runs as "default"
      pod('burst', 'p', 'node-c', 'p'),
      pod('burst', 'q', 'node-d', 'q'),
      pod('rev', 'r', 'node-r', 'r'),
      pod('rev', 's', 'node-s', 's'),
    ].join('---\n'),
  );
  controller = await Controller.start({
    source: `dir:${resources}`,
    stateDir,
    listen: '127.0.0.1:0',
    monitoring: '127.0.0.1:0',
    maxCertTtlSeconds: 3600,
    // No refill within the test: the burst is all a node gets.
    csrRateLimit: { burst: BURST, perSecond: 0.0001 },
    log,
  });
  address = `127.0.0.1:${controller.server.port}`;
  for (const n of ['node-a', 'node-c', 'node-d', 'node-r', 'node-s']) creds.set(n, await controller.ca.issueNodeCredential(n, 3600));
});

after(() => {
  for (const c of clients) c.close();
  controller?.close();
  rmSync(tmp, { recursive: true, force: true });
});

function clientFor(node: string, cred = creds.get(node)): ControllerClient {
  assert.ok(cred, `no credential for ${node}`);
  const c = new ControllerClient({ address, node, rootCertPem: controller.ca.rootCertPem, certPem: cred.certPem, keyPem: cred.keyPem, log: pino({ level: 'silent' }), backoff: { initialMs: 60_000, maxMs: 60_000 } });
  clients.push(c);
  return c;
}

/** The gRPC status a CreateCertificate call ended with (OK when it returned a chain). */
async function ask(client: ControllerClient, csrPem: string): Promise<{ code: grpc.status; details: string; ms: number }> {
  const t = performance.now();
  try {
    await client.createCertificate(csrPem, 600);
    return { code: grpc.status.OK, details: '', ms: performance.now() - t };
  } catch (err) {
    assert.ok(err instanceof ControllerCallError, String(err));
    return { code: err.grpcCode, details: err.details, ms: performance.now() - t };
  }
}

const csrFor = async (namespace: string, serviceAccount: string, trustDomain = TD): Promise<string> => (await createKeyAndCsr({ trustDomain, namespace, serviceAccount })).csrPem;

/** A discovery stream opened by hand; `status` resolves when it ends. */
function openStream(node: string, cred: IssuedCredential): { firstUpdate: Promise<boolean>; status: Promise<grpc.StatusObject>; cancel(): void } {
  const { stream } = controllerProtos();
  const client = new grpc.Client(address, grpc.credentials.createSsl(Buffer.from(controller.ca.rootCertPem), Buffer.from(cred.keyPem), Buffer.from(cred.certPem)));
  const call = client.makeServerStreamRequest(stream.path, stream.requestSerialize, stream.responseDeserialize, { node }, { deadline: Date.now() + 20_000 });
  let gotUpdate: (v: boolean) => void = () => undefined;
  const firstUpdate = new Promise<boolean>((resolve) => (gotUpdate = resolve));
  call.on('data', () => gotUpdate(true));
  call.on('error', () => undefined);
  const status = new Promise<grpc.StatusObject>((resolve) =>
    call.on('status', (s: grpc.StatusObject) => {
      gotUpdate(false);
      client.close();
      resolve(s);
    }),
  );
  return { firstUpdate, status, cancel: () => call.cancel() };
}

async function cli(args: string[]): Promise<{ code: number; out: string }> {
  let out = '';
  const write = process.stdout.write.bind(process.stdout);
  process.stdout.write = ((chunk: string | Uint8Array) => {
    out += chunk.toString();
    return true;
  }) as typeof process.stdout.write;
  try {
    return { code: await controllerCommand(args), out };
  } finally {
    process.stdout.write = write;
  }
}

test('node authorization: a node gets its own service accounts only', async () => {
  const a = clientFor('node-a');
  assert.equal((await ask(a, await csrFor('shop', 'client'))).code, grpc.status.OK);
  const refusals: Array<[string, string, RegExp]> = [
    ['shop', 'server', /node "node-a" may not obtain a certificate for spiffe:\/\/cluster\.local\/ns\/shop\/sa\/server: .*its pods run on node-b/],
    ['shop', 'web', /its pods run on node-b/],
    ['elsewhere', 'default', /ns\/elsewhere\/sa\/default: .*its pods run on node-b/],
    ['shop', 'default', /no pod in namespace shop runs as service account default/],
    ['nowhere', 'client', /no pod in namespace nowhere runs as service account client/],
  ];
  for (const [ns, sa, why] of refusals) {
    const r = await ask(a, await csrFor(ns, sa));
    assert.equal(r.code, grpc.status.PERMISSION_DENIED, `${ns}/${sa}: ${r.details}`);
    assert.match(r.details, why);
  }
  const foreignTd = await ask(a, await csrFor('shop', 'client', 'other.local'));
  assert.equal(foreignTd.code, grpc.status.PERMISSION_DENIED);
  assert.match(foreignTd.details, /not in trust domain cluster\.local/);
});

test('hostile CSRs over gRPC: INVALID_ARGUMENT, quickly, and nothing signed', async () => {
  const a = clientFor('node-a');
  const issuedBefore = (await controller.status()).certificates.issued;
  // Own identity plus another node's in one CSR: the second must not ride on the first.
  const key = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
  const twoUris = await ask(a, buildCsr(key, [`spiffe://${TD}/ns/shop/sa/client`, `spiffe://${TD}/ns/shop/sa/server`]));
  assert.equal(twoUris.code, grpc.status.INVALID_ARGUMENT);
  assert.match(twoUris.details, /exactly one URI SAN, found 2/);

  // An 8192-bit modulus and a 12288-bit exponent: refused before any arithmetic.
  const fake = (bits: number, e: Buffer): string => {
    const n = randomBytes(bits / 8);
    n[0] = (n[0] as number) | 0x80;
    const spki = seq(seq(oid('1.2.840.113549.1.1.1'), derNull()), bitString(seq(unsignedInteger(n), unsignedInteger(e))));
    const san = seq(oid('1.2.840.113549.1.9.14'), set(seq(seq(oid('2.5.29.17'), octetString(seq(context(6, false, Buffer.from(`spiffe://${TD}/ns/shop/sa/client`))))))));
    const info = seq(smallInteger(0), seq(), spki, context(0, true, san));
    return toPem('CERTIFICATE REQUEST', seq(info, seq(oid('1.2.840.113549.1.1.11'), derNull()), bitString(randomBytes(bits / 8))));
  };
  const bigE = randomBytes(1536);
  bigE[0] = 0xff;
  for (const [csr, why] of [
    [fake(8192, Buffer.from([1, 0, 1])), /modulus has 8192 bits/],
    [fake(4096, bigE), /public exponent must be 65537/],
    [fake(16384, Buffer.from([1, 0, 1])), /more than the 4096 accepted/],
    ['x'.repeat(5000), /more than the 4096 accepted/],
  ] as Array<[string, RegExp]>) {
    const r = await ask(a, csr);
    assert.equal(r.code, grpc.status.INVALID_ARGUMENT, r.details);
    assert.match(r.details, why);
    assert.ok(r.ms < 1000, `answered in ${r.ms.toFixed(0)} ms`);
  }
  // A request far beyond any CSR is cut off by the message size limit, not parsed.
  const huge = await ask(a, 'x'.repeat(200_000));
  assert.equal(huge.code, grpc.status.RESOURCE_EXHAUSTED);
  assert.equal((await controller.status()).certificates.issued, issuedBefore);
});

test('CSR rate limit per node: a burst over it gets RESOURCE_EXHAUSTED while another node is still served', async () => {
  const c = clientFor('node-c');
  const csrs = await Promise.all(Array.from({ length: BURST + 3 }, () => csrFor('burst', 'p')));
  const results = await Promise.all(csrs.map((csr) => ask(c, csr)));
  const codes = results.map((r) => r.code);
  assert.equal(codes.filter((x) => x === grpc.status.OK).length, BURST, `codes ${codes.join(',')}`);
  const exhausted = results.filter((r) => r.code === grpc.status.RESOURCE_EXHAUSTED);
  assert.equal(exhausted.length, 3);
  assert.match(exhausted[0]!.details, new RegExp(`node "node-c" sent more certificate requests than allowed \\(${BURST} at once`));
  // Another node has its own bucket.
  const d = clientFor('node-d');
  assert.equal((await ask(d, await csrFor('burst', 'q'))).code, grpc.status.OK);
  // And node-c stays limited.
  assert.equal((await ask(c, await csrFor('burst', 'p'))).code, grpc.status.RESOURCE_EXHAUSTED);
  assert.ok(logLines.some((l) => l.msg === 'certificate request refused: rate limit' && l.node === 'node-c'));
});

test('revoke-node: the revoked node is refused on both services and its open stream ends; others are not', async () => {
  const r = clientFor('node-r');
  assert.equal((await ask(r, await csrFor('rev', 'r'))).code, grpc.status.OK);
  const open = openStream('node-r', creds.get('node-r')!);
  assert.equal(await open.firstUpdate, true, 'the stream works before revocation');

  const res = await cli(['revoke-node', '--state', stateDir, '--node', 'node-r']);
  assert.equal(res.code, 0);
  assert.match(res.out, /revoked node node-r/);
  assert.deepEqual([...parseRevocations(readFileSync(join(stateDir, REVOKED_NODES_FILE), 'utf8')).nodes], ['node-r']);

  // The very next call is refused (the list is re-read before each decision).
  const refused = await ask(r, await csrFor('rev', 'r'));
  assert.equal(refused.code, grpc.status.PERMISSION_DENIED);
  assert.match(refused.details, /node "node-r" is revoked/);
  const stream = openStream('node-r', creds.get('node-r')!);
  const s = await stream.status;
  assert.equal(s.code, grpc.status.PERMISSION_DENIED);
  assert.equal(await stream.firstUpdate, false);
  // The stream that was open when the node was revoked is closed by the controller.
  const ended = await open.status;
  assert.equal(ended.code, grpc.status.PERMISSION_DENIED);
  assert.match(ended.details, /node "node-r" is revoked/);
  assert.ok(!controller.server.connectedAgents().some((x) => x.node === 'node-r'));
  assert.ok(logLines.some((l) => l.msg === 'revoked node refused' && l.node === 'node-r' && l.method === 'CreateCertificate'));
  assert.ok(logLines.some((l) => l.msg === 'revoked node refused' && l.node === 'node-r' && l.method === 'Stream'));

  // A new credential does not help a revoked node name.
  const fresh = await controller.ca.issueNodeCredential('node-r', 3600);
  assert.equal((await ask(clientFor('node-r', fresh), await csrFor('rev', 'r'))).code, grpc.status.PERMISSION_DENIED);
  // Other nodes are untouched.
  assert.equal((await ask(clientFor('node-a'), await csrFor('shop', 'client'))).code, grpc.status.OK);
});

test('revocation by credential serial: that credential is refused, a newer one for the node is not; editing the list is honoured', async () => {
  const old = creds.get('node-s')!;
  const replacement = await controller.ca.issueNodeCredential('node-s', 3600);
  const serial = new X509Certificate(old.certPem).serialNumber;
  const res = await cli(['revoke-node', '--state', stateDir, '--serial', serial.match(/../g)!.join(':').toLowerCase()]);
  assert.equal(res.code, 0);
  const refused = await ask(clientFor('node-s', old), await csrFor('rev', 's'));
  assert.equal(refused.code, grpc.status.PERMISSION_DENIED);
  assert.equal((await ask(clientFor('node-s', replacement), await csrFor('rev', 's'))).code, grpc.status.OK);

  // The operator takes node-r off the list by rewriting the file: it is served again.
  const file = join(stateDir, REVOKED_NODES_FILE);
  writeFileSync(file, readFileSync(file, 'utf8').replace(/^node-r$/m, '# node-r (reinstated)'));
  assert.equal((await ask(clientFor('node-r'), await csrFor('rev', 'r'))).code, grpc.status.OK);
  // A line that is neither a node name nor a serial is logged with its line number, and ignored.
  appendFileSync(file, 'not a node/\n');
  assert.equal((await ask(clientFor('node-a'), await csrFor('shop', 'client'))).code, grpc.status.OK);
  assert.ok(logLines.some((l) => l.msg === 'revocation list: line is neither a node name nor a hex serial; ignored' && l.entry === 'not a node/'));
});

test('revoke-node refuses bad input', async () => {
  await assert.rejects(cli(['revoke-node', '--state', stateDir, '--node', 'a/b']), /--node: invalid node name/);
  await assert.rejects(cli(['revoke-node', '--state', stateDir, '--serial', 'xyz']), /--serial: "xyz" is not a hex serial/);
  await assert.rejects(cli(['revoke-node', '--state', stateDir]), /--node or --serial is required/);
  await assert.rejects(cli(['revoke-node', '--node', 'n']), /--state is required/);
});

test('an expired node credential cannot reach the controller', async () => {
  const pastCa = await CertificateAuthority.loadOrCreate({ dir: stateDir, trustDomain: TD, now: () => Date.now() - 2 * 86_400_000 });
  const expired = await pastCa.issueNodeCredential('node-a', 3600);
  assert.ok(Date.parse(new X509Certificate(expired.certPem).validTo) < Date.now());
  assert.equal(createPublicKey(expired.keyPem).asymmetricKeyType, 'ec');
  const r = await ask(clientFor('node-a', expired), await csrFor('shop', 'client'));
  assert.notEqual(r.code, grpc.status.OK);
  const s = openStream('node-a', expired);
  assert.notEqual((await s.status).code, grpc.status.OK);
  assert.equal(await s.firstUpdate, false);
});
