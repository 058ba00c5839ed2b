// HBONE's mutual TLS over loopback: real TLS 1.3 handshakes between workload certificates, and the
// peers each side must refuse.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate, createPrivateKey, generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import tls from 'node:tls';
import { CertificateAuthority, ROOT_CERT_FILE, ROOT_KEY_FILE } from '../agent/controller/ca.js';
import { bitString, context, derBoolean, octetString, oid, seq, set, smallInteger, toPem, unsignedInteger, utf8, x509Time } from '../agent/identity/der.js';
import type { WorkloadCertificate } from '../agent/identity/manager.js';
import { formatSpiffeId, type SpiffeId } from '../agent/identity/spiffe.js';
import { connectTls, handshakeFailureReason, serverSecureContextOptions, verifyPeer, type PeerVerdict } from '../agent/tls/workload.js';
import { WeftError } from '../agent/errors.js';
import { issueWorkloadCertificate } from './helpers/workload-cert.js';

const TD = 'cluster.local';
const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'weft-tls-'));
  dirs.push(d);
  return d;
}

const issue = issueWorkloadCertificate;

interface Fixture {
  mainCa: CertificateAuthority;
  mainDir: string;
  client: WorkloadCertificate; // default/client
  server: WorkloadCertificate; // shop/api
  foreignCa: WorkloadCertificate; // same trust domain, another root
  otherTdOwnRoot: WorkloadCertificate; // other.local, its own root
  otherTdSharedRoot: WorkloadCertificate; // other.local, signed by our root
  expired: WorkloadCertificate; // our root, notAfter in the past
}

let fixture: Promise<Fixture> | undefined;
function setup(): Promise<Fixture> {
  fixture ??= (async () => {
    const mainDir = tempDir();
    const mainCa = await CertificateAuthority.loadOrCreate({ dir: mainDir, trustDomain: TD });
    const foreign = await CertificateAuthority.loadOrCreate({ dir: tempDir(), trustDomain: TD });
    const otherOwn = await CertificateAuthority.loadOrCreate({ dir: tempDir(), trustDomain: 'other.local' });
    // An operator-provided root may serve several trust domains; the TD check must still hold.
    const otherShared = await CertificateAuthority.loadOrCreate({
      dir: tempDir(),
      trustDomain: 'other.local',
      certFile: join(mainDir, ROOT_CERT_FILE),
      keyFile: join(mainDir, ROOT_KEY_FILE),
    });
    // Same root, a clock two days back: its one-hour leaves expired long ago.
    const past = await CertificateAuthority.loadOrCreate({ dir: mainDir, trustDomain: TD, now: () => Date.now() - 2 * 86_400_000 });
    const [client, server, foreignCa, otherTdOwnRoot, otherTdSharedRoot, expired] = await Promise.all([
      issue(mainCa, 'default', 'client'),
      issue(mainCa, 'shop', 'api'),
      issue(foreign, 'default', 'client'),
      issue(otherOwn, 'default', 'client'),
      issue(otherShared, 'default', 'client'),
      issue(past, 'default', 'client'),
    ]);
    return { mainCa, mainDir, client, server, foreignCa, otherTdOwnRoot, otherTdSharedRoot, expired };
  })();
  return fixture;
}

test.after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

interface ServerSide {
  port: number;
  verdicts: PeerVerdict[];
  /** handshakeFailureReason of each refused client. */
  refusals: string[];
  sni: Array<string | false | null>;
  protocols: Array<string | null>;
  close(): Promise<void>;
}

/** An HBONE-like TLS server: checks the peer, answers "ok <peer>" or closes. */
async function startServer(cert: WorkloadCertificate): Promise<ServerSide> {
  const side: Omit<ServerSide, 'port' | 'close'> = { verdicts: [], refusals: [], sni: [], protocols: [] };
  const server = tls.createServer(serverSecureContextOptions(cert), (socket) => {
    const verdict = verifyPeer(socket, { trustDomain: TD });
    side.verdicts.push(verdict);
    side.sni.push(socket.servername);
    side.protocols.push(socket.getProtocol());
    socket.on('error', () => undefined);
    if (verdict.ok) socket.end(`ok ${formatSpiffeId(verdict.id)}`);
    else socket.destroy();
  });
  server.on('tlsClientError', (err: Error, socket: tls.TLSSocket) => side.refusals.push(handshakeFailureReason(err, socket)));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return { ...side, port, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

async function tcp(port: number): Promise<net.Socket> {
  const socket = net.connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  return socket;
}

/** Everything the client reads until the connection ends; a reset counts as the end. */
function readAll(socket: tls.TLSSocket): Promise<string> {
  return new Promise((resolve) => {
    let data = '';
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => (data += d));
    socket.on('error', () => undefined);
    socket.once('close', () => resolve(data));
  });
}

/** A client that presents `cert` to a server and reports what came back: TLS 1.3 servers reject a
 * client certificate after the client considers the handshake done, so read to the end. */
async function tryClient(server: ServerSide, cert: WorkloadCertificate, expected: SpiffeId[]): Promise<string> {
  // The client trusts the server's root whatever certificate it presents: the server must refuse.
  const trusting = { ...cert, rootPem: (await setup()).server.rootPem };
  const socket = await connectTls({ socket: await tcp(server.port), cert: trusting, expected, trustDomain: TD });
  return readAll(socket);
}

async function clientRefusal(server: ServerSide, cert: WorkloadCertificate, expected: SpiffeId[]): Promise<string> {
  try {
    const socket = await connectTls({ socket: await tcp(server.port), cert, expected, trustDomain: TD });
    socket.destroy();
  } catch (err) {
    assert.ok(err instanceof WeftError, String(err));
    assert.equal(err.code, 'WEFT_ERR_TLS');
    return err.message;
  }
  assert.fail('the client accepted the server');
}

test('a TLS 1.3 h2 handshake between two workloads: both sides see the other SPIFFE ID', async () => {
  const f = await setup();
  const server = await startServer(f.server);
  try {
    const socket = await connectTls({ socket: await tcp(server.port), cert: f.client, expected: [f.server.id], trustDomain: TD });
    assert.equal(socket.getProtocol(), 'TLSv1.3');
    assert.equal(socket.alpnProtocol, 'h2');
    assert.equal(socket.isSessionReused(), false);
    assert.deepEqual(verifyPeer(socket, { trustDomain: TD, expected: [f.server.id] }), { ok: true, id: f.server.id });
    assert.equal(await readAll(socket), 'ok spiffe://cluster.local/ns/default/sa/client');
    assert.deepEqual(server.verdicts, [{ ok: true, id: f.client.id }]);
    assert.deepEqual(server.sni, [false], 'the client sent no SNI');
    assert.deepEqual(server.protocols, ['TLSv1.3']);
  } finally {
    await server.close();
  }
});

test('verifyPeer checks expected identities', async () => {
  const f = await setup();
  const server = await startServer(f.server);
  try {
    const socket = await connectTls({ socket: await tcp(server.port), cert: f.client, expected: [f.client.id, f.server.id], trustDomain: TD });
    const verdict = verifyPeer(socket, { trustDomain: TD, expected: [f.client.id] });
    assert.equal(verdict.ok, false);
    assert.match(verdict.ok ? '' : verdict.reason, /spiffe:\/\/cluster\.local\/ns\/shop\/sa\/api is not the expected identity/);
    socket.destroy();
  } finally {
    await server.close();
  }
});

test('the server refuses a client certificate from another CA', async () => {
  const f = await setup();
  const server = await startServer(f.server);
  try {
    assert.equal(await tryClient(server, f.foreignCa, [f.server.id]), '');
    assert.equal(server.verdicts.length, 0);
    assert.deepEqual(server.refusals, ['peer certificate not trusted: unknown CA (UNABLE_TO_VERIFY_LEAF_SIGNATURE)']);
  } finally {
    await server.close();
  }
});

test('the server refuses a client of another trust domain, with its own root or with ours', async () => {
  const f = await setup();
  const server = await startServer(f.server);
  try {
    assert.equal(await tryClient(server, f.otherTdOwnRoot, [f.server.id]), '');
    assert.equal(server.verdicts.length, 0, 'refused during the handshake');
    assert.deepEqual(server.refusals, ['peer certificate not trusted: unknown CA (UNABLE_TO_VERIFY_LEAF_SIGNATURE)']);

    // Chains to our root, so the handshake completes; verifyPeer refuses the trust domain.
    assert.equal(await tryClient(server, f.otherTdSharedRoot, [f.server.id]), '');
    assert.deepEqual(server.verdicts, [{ ok: false, reason: 'peer spiffe://other.local/ns/default/sa/client is not in trust domain cluster.local' }]);
  } finally {
    await server.close();
  }
});

test('the server refuses an expired client certificate', async () => {
  const f = await setup();
  assert.ok(f.expired.notAfter.getTime() < Date.now());
  const server = await startServer(f.server);
  try {
    assert.equal(await tryClient(server, f.expired, [f.server.id]), '');
    assert.equal(server.verdicts.length, 0);
    assert.deepEqual(server.refusals, ['peer certificate not trusted: certificate expired (CERT_HAS_EXPIRED)']);
  } finally {
    await server.close();
  }
});

test('the server refuses a client without a certificate', async () => {
  const f = await setup();
  const server = await startServer(f.server);
  try {
    const socket = tls.connect({
      socket: await tcp(server.port),
      ca: f.server.rootPem,
      servername: '',
      minVersion: 'TLSv1.3',
      ALPNProtocols: ['h2'],
      checkServerIdentity: () => undefined,
    });
    assert.equal(await readAll(socket), '');
    assert.equal(server.verdicts.length, 0);
    assert.deepEqual(server.refusals, ['peer presented no certificate']);
  } finally {
    await server.close();
  }
});

test('the client refuses a server that is not the expected identity, not of our CA, expired, or of another trust domain', async () => {
  const f = await setup();
  const servers = await Promise.all([f.server, f.foreignCa, f.expired, f.otherTdSharedRoot].map(startServer));
  const [right, foreign, expired, otherTd] = servers as [ServerSide, ServerSide, ServerSide, ServerSide];
  try {
    assert.match(
      await clientRefusal(right, f.client, [{ trustDomain: TD, namespace: 'shop', serviceAccount: 'web' }]),
      /refused: peer spiffe:\/\/cluster\.local\/ns\/shop\/sa\/api is not the expected identity \(spiffe:\/\/cluster\.local\/ns\/shop\/sa\/web\)/,
    );
    assert.match(await clientRefusal(foreign, f.client, [f.foreignCa.id]), /refused: unknown CA/);
    assert.match(await clientRefusal(expired, f.client, [f.expired.id]), /refused: certificate expired/);
    assert.match(await clientRefusal(otherTd, f.client, [f.otherTdSharedRoot.id]), /refused: peer spiffe:\/\/other\.local\/ns\/default\/sa\/client is not in trust domain cluster\.local/);
    for (const s of servers) assert.equal(s.verdicts.length, 0, 'no connection got past the client');
  } finally {
    await Promise.all(servers.map((s) => s.close()));
  }
});

test('no session resumption: a second connection with the first one\'s session does a full handshake', async () => {
  const f = await setup();
  const server = await startServer(f.server);
  try {
    const opts = (socket: net.Socket, session?: Buffer): tls.ConnectionOptions => ({
      socket,
      cert: f.client.certPem,
      key: f.client.keyPem,
      ca: f.client.rootPem,
      servername: '',
      minVersion: 'TLSv1.3',
      ALPNProtocols: ['h2'],
      checkServerIdentity: () => undefined,
      ...(session ? { session } : {}),
    });
    const first = tls.connect(opts(await tcp(server.port)));
    let session: Buffer | undefined;
    first.on('session', (s: Buffer) => (session = s));
    await readAll(first);
    assert.ok(session, 'the client saw a session it could offer');
    const second = tls.connect(opts(await tcp(server.port), session));
    await new Promise((resolve) => second.once('secureConnect', resolve));
    assert.equal(second.isSessionReused(), false);
    await readAll(second);
    assert.equal(server.verdicts.length, 2);
  } finally {
    await server.close();
  }
});

// ---- hostile peers ----

interface Hostile {
  notYetValid: WorkloadCertificate; // our root, notBefore two days ahead
  foreignWithRoot: WorkloadCertificate; // another root with our root's name, sent along in the chain
  leafAsCa: WorkloadCertificate; // shop/admin "issued" by default/client's own leaf key
  node: WorkloadCertificate; // a node credential (clientAuth only, a node SPIFFE ID)
  serving: WorkloadCertificate; // the controller's serving certificate (serverAuth only, no URI SAN)
}

let hostile: Promise<Hostile> | undefined;
function hostileSetup(): Promise<Hostile> {
  hostile ??= (async () => {
    const f = await setup();
    // Our root, with a clock two days ahead: its leaves are not valid yet.
    const ahead = await CertificateAuthority.loadOrCreate({ dir: f.mainDir, trustDomain: TD, now: () => Date.now() + 2 * 86_400_000 });
    const notYetValid = await issue(ahead, 'default', 'client');

    // The foreign leaf plus its root in the chain: both carry our root's subject name.
    const foreignRoot = f.foreignCa.rootPem;
    assert.equal(new X509Certificate(foreignRoot).subject, new X509Certificate(f.client.rootPem).subject);
    const foreignWithRoot: WorkloadCertificate = { ...f.foreignCa, chainPem: [f.foreignCa.certPem, foreignRoot, f.client.rootPem], rootPem: f.client.rootPem };

    // A workload that holds its own (valid) leaf key signs a certificate for another identity.
    const admin = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const adminKeyPem = admin.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
    const tbs = seq(
      context(0, true, smallInteger(2)),
      unsignedInteger(randomBytes(16)),
      seq(oid('1.2.840.10045.4.3.2')),
      seq(), // issuer: the leaf's (empty) subject
      seq(x509Time(new Date(Date.now() - 60_000)), x509Time(new Date(Date.now() + 3_600_000))),
      // A subject of its own, or it would merely look self-signed.
      seq(set(seq(oid('2.5.4.3'), utf8('admin')))),
      admin.publicKey.export({ type: 'spki', format: 'der' }),
      context(3, true, seq(seq(oid('2.5.29.17'), derBoolean(true), octetString(seq(context(6, false, Buffer.from(`spiffe://${TD}/ns/shop/sa/admin`))))))),
    );
    const forgedDer = seq(tbs, seq(oid('1.2.840.10045.4.3.2')), bitString(sign('sha256', tbs, createPrivateKey(f.client.keyPem))));
    const forgedPem = toPem('CERTIFICATE', forgedDer);
    const leafAsCa: WorkloadCertificate = {
      ...f.client,
      id: { trustDomain: TD, namespace: 'shop', serviceAccount: 'admin' },
      certPem: forgedPem,
      keyPem: adminKeyPem,
      chainPem: [forgedPem, f.client.certPem, f.client.rootPem],
    };

    const nodeCred = await f.mainCa.issueNodeCredential('node-1', 3600);
    const node: WorkloadCertificate = { ...f.client, certPem: nodeCred.certPem, keyPem: nodeCred.keyPem, chainPem: [nodeCred.certPem, f.client.rootPem] };
    const servingCred = await f.mainCa.issueServingCert({ dnsNames: ['weft-controller'], ips: ['127.0.0.1'], ttlSeconds: 3600 });
    const serving: WorkloadCertificate = { ...f.server, certPem: servingCred.certPem, keyPem: servingCred.keyPem, chainPem: [servingCred.certPem, f.server.rootPem] };
    return { notYetValid, foreignWithRoot, leafAsCa, node, serving };
  })();
  return hostile;
}

test('the server refuses a client certificate that is not valid yet', async () => {
  const f = await setup();
  const h = await hostileSetup();
  assert.ok(h.notYetValid.notBefore.getTime() > Date.now());
  const server = await startServer(f.server);
  try {
    assert.equal(await tryClient(server, h.notYetValid, [f.server.id]), '');
    assert.equal(server.verdicts.length, 0);
    assert.deepEqual(server.refusals, ['peer certificate not trusted: certificate not yet valid (CERT_NOT_YET_VALID)']);
  } finally {
    await server.close();
  }
});

test('the server refuses a foreign chain that brings its own root under our root\'s name', async () => {
  const f = await setup();
  const h = await hostileSetup();
  const server = await startServer(f.server);
  try {
    assert.equal(await tryClient(server, h.foreignWithRoot, [f.server.id]), '');
    assert.equal(server.verdicts.length, 0);
    assert.equal(server.refusals.length, 1);
    assert.deepEqual(server.refusals, ['peer certificate not trusted: unknown CA (SELF_SIGNED_CERT_IN_CHAIN)']);
  } finally {
    await server.close();
  }
});

test('a workload cannot mint identities with its own leaf: a chain through a non-CA leaf is refused', async () => {
  const f = await setup();
  const h = await hostileSetup();
  const server = await startServer(f.server);
  try {
    assert.equal(await tryClient(server, h.leafAsCa, [f.server.id]), '');
    assert.equal(server.verdicts.length, 0, 'never reached the identity check');
    assert.equal(server.refusals.length, 1);
    assert.equal(server.refusals.length, 1);
    // OpenSSL reports this as INVALID_CA / KEYUSAGE_NO_CERTSIGN or, through Node, its catch-all.
    assert.match(server.refusals[0] ?? '', /^peer certificate not trusted: (issuer is not a CA \((INVALID_CA|KEYUSAGE_NO_CERTSIGN)\)|certificate chain does not verify \(UNSPECIFIED\))$/);
  } finally {
    await server.close();
  }
});

test('credentials of our CA that are not workload SVIDs: a node credential as client, the serving cert as client or server', async () => {
  const f = await setup();
  const h = await hostileSetup();
  const server = await startServer(f.server);
  try {
    // Chains to our root; the handshake may complete, the identity check refuses it.
    assert.equal(await tryClient(server, h.node, [f.server.id]), '');
    assert.deepEqual(server.refusals, []);
    assert.deepEqual(server.verdicts, [
      {
        ok: false,
        reason: 'peer certificate has no usable SPIFFE ID: SPIFFE ID "spiffe://cluster.local/weft/node/node-1" is not a workload identity (expected /ns/<namespace>/sa/<service-account>)',
      },
    ]);
    // The serving certificate is not for client authentication at all.
    assert.equal(await tryClient(server, h.serving, [f.server.id]), '');
    assert.deepEqual(server.refusals, ['peer certificate not trusted: certificate not issued for this use (INVALID_PURPOSE)']);
    assert.equal(server.verdicts.length, 1, 'only the node credential got as far as the identity check');
  } finally {
    await server.close();
  }
  const servers = await Promise.all([h.serving, h.node].map(startServer));
  try {
    assert.match(await clientRefusal(servers[0]!, f.client, [f.server.id]), /refused: peer certificate has no usable SPIFFE ID: certificate has no URI SAN/);
    // A node credential (clientAuth only) as a server certificate.
    assert.match(await clientRefusal(servers[1]!, f.client, [f.server.id]), /refused: certificate not issued for this use \(INVALID_PURPOSE\)$/);
    for (const s of servers) assert.equal(s.verdicts.length, 0);
  } finally {
    await Promise.all(servers.map((s) => s.close()));
  }
});

test('the client refuses a server certificate that is not valid yet', async () => {
  const f = await setup();
  const h = await hostileSetup();
  const server = await startServer(h.notYetValid);
  try {
    assert.match(await clientRefusal(server, f.client, [h.notYetValid.id]), /refused: certificate not yet valid \(CERT_NOT_YET_VALID\)/);
    assert.equal(server.verdicts.length, 0);
  } finally {
    await server.close();
  }
});
