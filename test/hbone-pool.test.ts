// HBONE end to end on loopback inside a scratch netns: the pool's client against a server set up as
// the in-pod HBONE listener is. ztunnel's windows and frame size must be in effect on both ends, and
// bytes must come back intact through the copy, with and without the HBONE fast path. Then, without
// privileges (the pool dials plain loopback): the client's bounds on a server that stalls.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import http2 from 'node:http2';
import net from 'node:net';
import tls from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { CertificateAuthority } from '../agent/controller/ca.js';
import type { WorkloadCertificate } from '../agent/identity/manager.js';
import { createLogger } from '../agent/log.js';
import { serverSecureContextOptions } from '../agent/tls/workload.js';
import { copyBidirectional } from '../agent/ztunnel/copy.js';
import { HBONE_CONNECTION_WINDOW, HBONE_PORT, HBONE_SETTINGS } from '../agent/ztunnel/hbone.js';
import { HBONE_CLIENT_LIMITS, HbonePool, HboneTimeout, type HboneClientLimits } from '../agent/ztunnel/hbone-pool.js';
import { WeftError } from '../agent/errors.js';
import { issueWorkloadCertificate } from './helpers/workload-cert.js';
import { RUN_PREFIX, createNetns, deleteNetns, requirePrivileges } from './helpers/privileged.js';

const TD = 'cluster.local';
const NETNS = `${RUN_PREFIX}-hbone`;
const caDir = mkdtempSync(join(tmpdir(), 'weft-hbone-'));
after(() => {
  deleteNetns(NETNS);
  rmSync(caDir, { recursive: true, force: true });
});

const issue = issueWorkloadCertificate;

test('HBONE: windows and frame size in effect on both ends; bytes intact through tuned and untuned copies', async (t) => {
  if (!requirePrivileges(t)) return;
  // Loaded here: the tests below run without the native addon.
  const { listenInNetns } = await import('../native/index.js');
  const ca = await CertificateAuthority.loadOrCreate({ dir: caDir, trustDomain: TD });
  const [clientCert, serverCert] = await Promise.all([issue(ca, 'default', 'client'), issue(ca, 'shop', 'api')]);
  const nsPath = createNetns(NETNS);

  // The app: an echo in the test's own netns.
  const echo = net.createServer({ allowHalfOpen: true }, (s) => s.pipe(s));
  echo.listen(0, '127.0.0.1');
  await once(echo, 'listening');
  t.after(() => echo.close());
  const echoPort = (echo.address() as net.AddressInfo).port;

  // The server as the in-pod listener sets it up, copying each stream to the echo.
  let tunedServer = false;
  const serverSessions: http2.ServerHttp2Session[] = [];
  const serverStreams: http2.ServerHttp2Stream[] = [];
  const server = http2.createSecureServer({ ...serverSecureContextOptions(serverCert), settings: { ...HBONE_SETTINGS, enablePush: false }, allowHTTP1: false });
  server.on('session', (session) => {
    session.setLocalWindowSize(HBONE_CONNECTION_WINDOW);
    serverSessions.push(session);
  });
  server.on('stream', (stream) => {
    serverStreams.push(stream);
    const app = net.connect({ host: '127.0.0.1', port: echoPort, allowHalfOpen: true }, () => {
      stream.respond({ ':status': 200 });
      void copyBidirectional(stream, app, { tuned: tunedServer });
    });
  });
  await new Promise<void>((resolve) => server.listen({ fd: listenInNetns(nsPath, { host: '127.0.0.1', port: HBONE_PORT }) }, resolve));
  t.after(() => server.close());

  const pool = new HbonePool(() => TD, createLogger('test', { level: 'silent' }));
  t.after(() => pool.close());
  for (const tuned of [false, true]) {
    tunedServer = tuned;
    const stream = await pool.connect({ netns: nsPath, cert: clientCert }, '127.0.0.1', [serverCert.id], {
      ':method': 'CONNECT',
      ':authority': `127.0.0.1:${echoPort}`,
    });
    const data = randomBytes(8 * 1024 * 1024 + 3);
    // The stream's receive window is the SETTINGS value, not HTTP/2's default 64 KiB.
    assert.equal(stream.state.localWindowSize, HBONE_SETTINGS.initialWindowSize, 'client stream window');
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    const ended = once(stream, 'end');
    stream.end(data);
    await ended;
    assert.ok(Buffer.concat(chunks).equals(data), `echo intact (tuned: ${tuned})`);

    // Our SETTINGS were acknowledged by now, so the windows show what each end really advertises.
    const client = stream.session!;
    assert.equal(client.state.effectiveLocalWindowSize, HBONE_CONNECTION_WINDOW, 'client connection window');
    assert.equal(client.remoteSettings.initialWindowSize, HBONE_SETTINGS.initialWindowSize);
    assert.equal(client.remoteSettings.maxFrameSize, HBONE_SETTINGS.maxFrameSize);
    assert.equal(client.localSettings.initialWindowSize, HBONE_SETTINGS.initialWindowSize);
    const serverSession = serverSessions.at(-1)!;
    assert.equal(serverSession.state.effectiveLocalWindowSize, HBONE_CONNECTION_WINDOW, 'server connection window');
    assert.equal(serverSession.remoteSettings.maxFrameSize, HBONE_SETTINGS.maxFrameSize);
  }
  // Both CONNECTs shared one pooled connection.
  assert.equal(serverSessions.length, 1);
  assert.equal(serverStreams.length, 2);
});

// --- the client's bounds (no privileges: the pool dials loopback) ------------------------------------

let certs: Promise<{ client: WorkloadCertificate; server: WorkloadCertificate }> | undefined;
function boundCerts(): Promise<{ client: WorkloadCertificate; server: WorkloadCertificate }> {
  certs ??= (async () => {
    const ca = await CertificateAuthority.loadOrCreate({ dir: caDir, trustDomain: TD });
    const [client, server] = await Promise.all([issue(ca, 'default', 'client'), issue(ca, 'shop', 'api')]);
    return { client, server };
  })();
  return certs;
}

function loopbackPool(t: { after: (fn: () => unknown) => void }, port: number, limits: Partial<HboneClientLimits>, onSocket?: (s: net.Socket) => void): HbonePool {
  const pool = new HbonePool(() => TD, createLogger('test', { level: 'silent' }), {
    limits,
    dial: () =>
      new Promise((resolve, reject) => {
        const s = net.connect({ host: '127.0.0.1', port });
        onSocket?.(s);
        s.once('connect', () => {
          s.off('error', reject);
          resolve(s);
        });
        s.once('error', reject);
      }),
  });
  t.after(() => pool.close());
  return pool;
}

async function listening<T extends net.Server>(t: { after: (fn: () => unknown) => void }, server: T): Promise<number> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => server.close());
  return (server.address() as net.AddressInfo).port;
}

function isTimeout(phase: 'handshake' | 'response') {
  return (err: unknown): boolean => err instanceof HboneTimeout && err.phase === phase && err.code === 'WEFT_ERR_HBONE';
}

test('a CONNECT the server never answers: the stream is cancelled at the bound and connect rejects with HboneTimeout; the session serves on', async (t) => {
  const { client, server } = await boundCerts();
  const streams: http2.ServerHttp2Stream[] = [];
  const h2 = http2.createSecureServer({ ...serverSecureContextOptions(server), settings: { ...HBONE_SETTINGS, enablePush: false }, allowHTTP1: false });
  const sessions = new Set<http2.ServerHttp2Session>();
  h2.on('session', (s) => {
    sessions.add(s);
    s.once('close', () => sessions.delete(s));
  });
  t.after(() => sessions.forEach((s) => s.destroy()));
  h2.on('stream', (stream, headers) => {
    streams.push(stream);
    stream.on('error', () => undefined);
    // Only this target is answered; every other CONNECT hangs.
    if (headers[':authority'] === '127.0.0.1:2') stream.respond({ ':status': 200 });
  });
  const port = await listening(t, h2);
  const bound = 300;
  const pool = loopbackPool(t, port, { connectResponseTimeoutMs: bound });
  const source = { netns: 'loopback', cert: client };

  const t0 = performance.now();
  await assert.rejects(pool.connect(source, '127.0.0.1', [server.id], { ':method': 'CONNECT', ':authority': '127.0.0.1:1' }), isTimeout('response'));
  const ms = performance.now() - t0;
  assert.ok(ms >= bound - 20 && ms < bound + 1500, `rejected after ${ms.toFixed(0)} ms`);
  const hung = streams[0]!;
  if (!hung.closed) await once(hung, 'close');
  assert.equal(hung.rstCode, http2.constants.NGHTTP2_CANCEL, 'the server saw the stream cancelled');

  const ok = await pool.connect(source, '127.0.0.1', [server.id], { ':method': 'CONNECT', ':authority': '127.0.0.1:2' });
  assert.equal(pool.stats().connections, 1, 'same session');
  assert.equal(pool.stats().streams, 1, 'the cancelled stream no longer counts');
  ok.close();
});

test('a stream refused by a connection going away (an agent upgrade) is retried once on a fresh connection', async (t) => {
  const { client, server } = await boundCerts();
  const h2 = http2.createSecureServer({ ...serverSecureContextOptions(server), settings: { ...HBONE_SETTINGS, enablePush: false }, allowHTTP1: false });
  const sessions: http2.ServerHttp2Session[] = [];
  h2.on('session', (s) => sessions.push(s));
  t.after(() => sessions.forEach((s) => s.destroy()));
  let answered = 0;
  h2.on('stream', (stream) => {
    stream.on('error', () => undefined);
    if (stream.session === sessions[0]) {
      // The first connection is going away: it refuses the stream it has not processed.
      stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
      stream.session?.goaway(http2.constants.NGHTTP2_NO_ERROR);
      return;
    }
    answered++;
    stream.respond({ ':status': 200 });
  });
  const port = await listening(t, h2);
  const pool = loopbackPool(t, port, {});
  const stream = await pool.connect({ netns: 'loopback', cert: client }, '127.0.0.1', [server.id], { ':method': 'CONNECT', ':authority': '127.0.0.1:1' });
  assert.equal(answered, 1, 'answered on the second connection');
  assert.equal(sessions.length, 2, 'a fresh connection was opened');
  stream.close();
});

test('a server that accepts TCP and says nothing: the dial gives up at the handshake bound and closes its socket', async (t) => {
  const { client, server } = await boundCerts();
  const accepted: net.Socket[] = [];
  const silent = net.createServer((s) => {
    s.on('error', () => undefined);
    accepted.push(s);
  });
  t.after(() => accepted.forEach((s) => s.destroy()));
  const port = await listening(t, silent);
  const bound = 300;
  const pool = loopbackPool(t, port, { handshakeTimeoutMs: bound });
  const t0 = performance.now();
  await assert.rejects(pool.connect({ netns: 'loopback', cert: client }, '127.0.0.1', [server.id], { ':method': 'CONNECT', ':authority': '127.0.0.1:1' }), isTimeout('handshake'));
  const ms = performance.now() - t0;
  assert.ok(ms >= bound - 20 && ms < bound + 1500, `rejected after ${ms.toFixed(0)} ms`);
  const s = accepted[0]!;
  s.resume();
  if (!s.destroyed) await once(s, 'close');
  assert.equal(pool.stats().connections, 0);
});

test('TLS completes but no HTTP/2 SETTINGS come: HboneTimeout at the handshake bound, connection closed', async (t) => {
  const { client, server } = await boundCerts();
  const accepted: tls.TLSSocket[] = [];
  const mute = tls.createServer(serverSecureContextOptions(server), (s) => {
    s.on('error', () => undefined);
    accepted.push(s);
  });
  t.after(() => accepted.forEach((s) => s.destroy()));
  const port = await listening(t, mute);
  const bound = 400;
  const pool = loopbackPool(t, port, { handshakeTimeoutMs: bound });
  const t0 = performance.now();
  await assert.rejects(pool.connect({ netns: 'loopback', cert: client }, '127.0.0.1', [server.id], { ':method': 'CONNECT', ':authority': '127.0.0.1:1' }), isTimeout('handshake'));
  const ms = performance.now() - t0;
  assert.ok(ms >= bound - 20 && ms < bound + 1500, `rejected after ${ms.toFixed(0)} ms`);
  assert.equal(accepted.length, 1, 'the TLS handshake itself completed');
  const s = accepted[0]!;
  s.resume();
  if (!s.destroyed) await once(s, 'close');
});

test('a socket that arrives after the deadline is closed, not leaked', async (t) => {
  const { client, server } = await boundCerts();
  const silent = net.createServer((s) => s.on('error', () => undefined));
  const port = await listening(t, silent);
  let late: net.Socket | undefined;
  const pool = new HbonePool(() => TD, createLogger('test', { level: 'silent' }), {
    limits: { handshakeTimeoutMs: 200 },
    // Connects at once but hands the socket over only after three times the bound.
    dial: () =>
      new Promise((resolve) => {
        const s = net.connect({ host: '127.0.0.1', port });
        s.on('error', () => undefined);
        late = s;
        setTimeout(() => resolve(s), 600);
      }),
  });
  t.after(() => pool.close());
  t.after(() => late?.destroy());
  await assert.rejects(pool.connect({ netns: 'loopback', cert: client }, '127.0.0.1', [server.id], { ':method': 'CONNECT', ':authority': '127.0.0.1:1' }), isTimeout('handshake'));
  assert.ok(late);
  if (!late.destroyed) await once(late, 'close');
  assert.ok(late.destroyed, 'the late socket was closed by the pool');
});

test('pool limits are checked: a bad value is refused naming the field', () => {
  for (const limits of [{ handshakeTimeoutMs: 0 }, { connectResponseTimeoutMs: -5 }, { connectResponseTimeoutMs: Number.POSITIVE_INFINITY }] as Array<Partial<HboneClientLimits>>) {
    const field = Object.keys(limits)[0]!;
    assert.throws(
      () => new HbonePool(() => TD, createLogger('test', { level: 'silent' }), { limits }),
      (err: unknown) => err instanceof WeftError && err.code === 'WEFT_ERR_CONFIG_INVALID' && err.message.includes(field),
    );
  }
  // The client waits longer for an answer than the server's own 10 s bound on reaching its app.
  assert.ok(HBONE_CLIENT_LIMITS.connectResponseTimeoutMs > 10_000);
  assert.ok(HBONE_CLIENT_LIMITS.handshakeTimeoutMs <= 10_000);
});
