// HBONE end to end on loopback inside a scratch netns: the pool's client against a server set up as
// the in-pod HBONE listener is. ztunnel's windows and frame size must be in effect on both ends, and
// bytes must come back intact through the copy, with and without the HBONE fast path.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import http2 from 'node:http2';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { CertificateAuthority } from '../agent/controller/ca.js';
import { createKeyAndCsr } from '../agent/identity/csr.js';
import { workloadCertificateFromChain, type WorkloadCertificate } from '../agent/identity/manager.js';
import { createLogger } from '../agent/log.js';
import { serverSecureContextOptions } from '../agent/tls/workload.js';
import { copyBidirectional } from '../agent/ztunnel/copy.js';
import { HBONE_CONNECTION_WINDOW, HBONE_PORT, HBONE_SETTINGS } from '../agent/ztunnel/hbone.js';
import { HbonePool } from '../agent/ztunnel/hbone-pool.js';
import { listenInNetns } from '../native/index.js';
import { RUN_PREFIX, createNetns, deleteNetns, requirePrivileges } from './helpers/privileged.js';

const TD = 'cluster.local';
const NETNS = `${RUN_PREFIX}-hbone`;
const caDir = mkdtempSync(join(tmpdir(), 'weft-hbone-'));
after(() => {
  deleteNetns(NETNS);
  rmSync(caDir, { recursive: true, force: true });
});

async function issue(ca: CertificateAuthority, namespace: string, serviceAccount: string): Promise<WorkloadCertificate> {
  const id = { trustDomain: TD, namespace, serviceAccount };
  const { keyPem, csrPem } = await createKeyAndCsr(id);
  const { chain } = await ca.signWorkloadCsr(csrPem, 3600);
  return workloadCertificateFromChain(id, keyPem, chain, Date.parse(new X509Certificate(chain[0] as string).validFrom));
}

test('HBONE: windows and frame size in effect on both ends; bytes intact through tuned and untuned copies', async (t) => {
  if (!requirePrivileges(t)) return;
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
