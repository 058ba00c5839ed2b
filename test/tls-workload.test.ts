// HBONE's mutual TLS over loopback: real TLS 1.3 handshakes between workload certificates, and the
// peers each side must refuse.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import tls from 'node:tls';
import { CertificateAuthority, ROOT_CERT_FILE, ROOT_KEY_FILE } from '../agent/controller/ca.js';
import { createKeyAndCsr } from '../agent/identity/csr.js';
import { workloadCertificateFromChain, type WorkloadCertificate } from '../agent/identity/manager.js';
import { formatSpiffeId, type SpiffeId } from '../agent/identity/spiffe.js';
import { connectTls, handshakeFailureReason, serverSecureContextOptions, verifyPeer, type PeerVerdict } from '../agent/tls/workload.js';
import { WeftError } from '../agent/errors.js';

const TD = 'cluster.local';
const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'weft-tls-'));
  dirs.push(d);
  return d;
}

async function issue(ca: CertificateAuthority, namespace: string, serviceAccount: string, ttlSeconds = 3600): Promise<WorkloadCertificate> {
  const id = { trustDomain: ca.trustDomain, namespace, serviceAccount };
  const { keyPem, csrPem } = await createKeyAndCsr(id);
  const { chain } = await ca.signWorkloadCsr(csrPem, ttlSeconds);
  // Checked at issuance time, so an already expired test certificate still loads.
  return workloadCertificateFromChain(id, keyPem, chain, Date.parse(new X509Certificate(chain[0] as string).validFrom));
}

interface Fixture {
  mainCa: CertificateAuthority;
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
    return { mainCa, client, server, foreignCa, otherTdOwnRoot, otherTdSharedRoot, expired };
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
