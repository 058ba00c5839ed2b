// The HBONE server under hostile peers, on loopback (no root, no netns): bytes that are not TLS, a
// handshake that stalls or trickles, TLS without an HTTP/2 preface, a rapid-reset flood, frames and
// header lists over the limits, too many connections from one source or in total, a session whose
// peer certificate expires, idle sessions and tunnels, malformed CONNECTs. Each must be closed within
// its bound and counted, while a well-behaved client on another connection keeps getting its echo.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import http2 from 'node:http2';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import tls from 'node:tls';
import { pino } from 'pino';
import { CertificateAuthority, ROOT_CERT_FILE, ROOT_KEY_FILE } from '../agent/controller/ca.js';
import { WeftError } from '../agent/errors.js';
import { issueWorkloadCertificate } from './helpers/workload-cert.js';
import type { WorkloadCertificate } from '../agent/identity/manager.js';
import { createLogger, type Logger } from '../agent/log.js';
import { connectTls } from '../agent/tls/workload.js';
import { copyBidirectional } from '../agent/ztunnel/copy.js';
import { HBONE_SETTINGS } from '../agent/ztunnel/hbone.js';
import { HBONE_SERVER_LIMITS, HboneServer, type HboneServerLimits, type HbonePeer } from '../agent/ztunnel/hbone-server.js';
import { HbonePool, HboneRefused, type HboneSource } from '../agent/ztunnel/hbone-pool.js';

const TD = 'cluster.local';
const quiet = createLogger('test', { level: 'silent' });
const { NGHTTP2_NO_ERROR, NGHTTP2_FRAME_SIZE_ERROR, NGHTTP2_ENHANCE_YOUR_CALM } = http2.constants;

const caDir = mkdtempSync(join(tmpdir(), 'weft-hbone-server-'));
const otherDir = mkdtempSync(join(tmpdir(), 'weft-hbone-server-other-'));
let echoServer: net.Server | undefined;
after(() => {
  echoServer?.close();
  rmSync(caDir, { recursive: true, force: true });
  rmSync(otherDir, { recursive: true, force: true });
});

const issue = issueWorkloadCertificate;

interface Fixture {
  ca: CertificateAuthority;
  server: WorkloadCertificate;
  client: WorkloadCertificate;
  echoPort: number;
}
let fixture: Promise<Fixture> | undefined;
function setup(): Promise<Fixture> {
  fixture ??= (async () => {
    const ca = await CertificateAuthority.loadOrCreate({ dir: caDir, trustDomain: TD });
    const [server, client] = await Promise.all([issue(ca, 'shop', 'api'), issue(ca, 'default', 'client')]);
    // The app behind the server: an echo.
    const echo = net.createServer({ allowHalfOpen: true }, (s) => {
      s.on('error', () => undefined);
      s.pipe(s);
    });
    echoServer = echo;
    echo.listen(0, '127.0.0.1');
    await once(echo, 'listening');
    return { ca, server, client, echoPort: (echo.address() as net.AddressInfo).port };
  })();
  return fixture;
}

interface Served {
  hbone: HboneServer;
  port: number;
  /** The peers and targets the stream handler was called for. */
  handled: Array<{ peer: HbonePeer; target: { ip: string; port: number } }>;
}

/** An HboneServer on 127.0.0.1:0 whose handler copies each tunnel to the echo. */
async function serve(t: { after: (fn: () => unknown) => void }, limits: Partial<HboneServerLimits> = {}, log: Logger = quiet): Promise<Served> {
  const f = await setup();
  const handled: Served['handled'] = [];
  const hbone = new HboneServer({
    cert: f.server,
    trustDomain: () => TD,
    log,
    limits,
    onStream: (stream, _headers, peer, target) => {
      handled.push({ peer, target });
      const app = net.connect({ host: '127.0.0.1', port: f.echoPort, allowHalfOpen: true });
      app.once('connect', () => {
        if (stream.destroyed) return void app.destroy();
        stream.respond({ ':status': 200 });
        void copyBidirectional(stream, app);
      });
      app.once('error', () => {
        if (!stream.headersSent && !stream.destroyed) stream.respond({ ':status': 503 }, { endStream: true });
      });
    },
  });
  await hbone.listen({ host: '127.0.0.1', port: 0 });
  t.after(() => hbone.close());
  return { hbone, port: hbone.address()!.port, handled };
}

/** A logger whose lines the test can read. */
function recordingLogger(): { log: Logger; messages: () => string[] } {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(...chunk.toString().split('\n').filter(Boolean));
      done();
    },
  });
  return { log: pino({ level: 'info' }, sink), messages: () => lines.map((l) => (JSON.parse(l) as { msg: string }).msg) };
}

/** TCP to the server from `localAddress` (any 127/8 address is ours on loopback). */
function tcp(port: number, localAddress = '127.0.0.1'): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port, localAddress });
    s.once('connect', () => {
      s.off('error', reject);
      resolve(s);
    });
    s.once('error', reject);
  });
}

function tlsTo(port: number, cert: WorkloadCertificate, localAddress = '127.0.0.1'): Promise<tls.TLSSocket> {
  return setup().then(async (f) => connectTls({ socket: await tcp(port, localAddress), cert, expected: [f.server.id], trustDomain: TD }));
}

/** A pool (the real client) that dials the test server over loopback instead of a pod netns. */
function poolTo(t: { after: (fn: () => unknown) => void }, port: number, localAddress = '127.0.0.1'): HbonePool {
  const pool = new HbonePool(() => TD, quiet, {
    dial: (_source, _ip, timeoutMs) =>
      new Promise((resolve, reject) => {
        const s = net.connect({ host: '127.0.0.1', port, localAddress, timeout: timeoutMs });
        s.once('connect', () => {
          s.setTimeout(0);
          s.off('error', reject);
          resolve(s);
        });
        s.once('error', reject);
        s.once('timeout', () => s.destroy(new Error('connect timed out')));
      }),
  });
  t.after(() => pool.close());
  return pool;
}

async function tunnel(pool: HbonePool, cert: WorkloadCertificate, authority?: string): Promise<http2.ClientHttp2Stream> {
  const f = await setup();
  const source: HboneSource = { netns: `test-${cert.serial}`, cert };
  return pool.connect(source, '127.0.0.1', [f.server.id], { ':method': 'CONNECT', ':authority': authority ?? `127.0.0.1:${f.echoPort}` });
}

/** Writes `data` and reads the same number of bytes back; the tunnel stays open. */
function roundTrip(stream: http2.ClientHttp2Stream, data: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let got = 0;
    const onData = (c: Buffer): void => {
      chunks.push(c);
      got += c.length;
      if (got >= data.length) {
        stream.off('data', onData);
        stream.off('close', onClose);
        resolve(Buffer.concat(chunks));
      }
    };
    const onClose = (): void => reject(new Error(`tunnel closed after ${got} of ${data.length} bytes`));
    stream.on('data', onData);
    stream.once('close', onClose);
    stream.write(data);
  });
}

/** The well-behaved client: a fresh tunnel on its pooled session, 64 KiB echoed intact. */
async function assertEcho(pool: HbonePool, what: string): Promise<void> {
  const f = await setup();
  const stream = await tunnel(pool, f.client);
  const data = randomBytes(64 * 1024);
  const back = await roundTrip(stream, data);
  assert.ok(back.equals(data), `echo intact (${what})`);
  stream.close();
}

/** `p`, or a failure naming what did not happen within `ms`: a server that never acts fails the
 * test with a reason instead of hanging it. */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new assert.AssertionError({ message: `not within ${ms} ms: ${what}` })), ms);
  });
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Resolves with the ms from `since` to the socket's close (failing after `ms`). */
async function closedAfter(socket: net.Socket, since: number, ms = 5000): Promise<number> {
  socket.on('error', () => undefined);
  // Read whatever the server sends (its SETTINGS, an alert): an unread socket never reports its close.
  socket.resume();
  if (!socket.destroyed) await within(once(socket, 'close'), ms, 'the server closed the connection');
  return performance.now() - since;
}

/** A connection the server refuses at once: resolves with the ms until it was closed (the reset may
 * come before the client saw its connect complete). Fails if the server sent anything. */
function refused(port: number, localAddress: string): Promise<number> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port, localAddress });
    s.on('error', () => undefined);
    s.on('data', () => reject(new Error('the server spoke to a refused connection')));
    s.once('close', () => resolve(performance.now() - t0));
  });
}

/** Server-side counters trail the client's view of a close by a turn or two: wait for them. */
async function until(cond: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!cond()) {
    if (performance.now() > deadline) assert.fail(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

// --- a raw HTTP/2 client, to send what a correct client never would ---------------------------------

const FRAME = { DATA: 0, HEADERS: 1, RST_STREAM: 3, SETTINGS: 4, PING: 6, GOAWAY: 7, CONTINUATION: 9 } as const;
const FLAG = { END_STREAM: 1, ACK: 1, END_HEADERS: 4 } as const;

function frame(type: number, flags: number, streamId: number, payload: Buffer, claimedLength = payload.length): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(claimedLength, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(streamId, 5);
  return Buffer.concat([head, payload]);
}

/** HPACK integer with an n-bit prefix (RFC 7541 5.1). */
function hpackInt(value: number, prefixBits: number, firstByte: number): Buffer {
  const max = (1 << prefixBits) - 1;
  if (value < max) return Buffer.from([firstByte | value]);
  const out = [firstByte | max];
  let v = value - max;
  while (v >= 128) {
    out.push((v % 128) + 128);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return Buffer.from(out);
}

/** A header block of literal fields without indexing, new names, no Huffman. */
function headerBlock(fields: Array<[string, string]>): Buffer {
  const parts: Buffer[] = [];
  for (const [name, value] of fields) {
    const n = Buffer.from(name);
    const v = Buffer.from(value);
    parts.push(Buffer.from([0x00]), hpackInt(n.length, 7, 0), n, hpackInt(v.length, 7, 0), v);
  }
  return Buffer.concat(parts);
}

class RawH2 {
  readonly goaways: Array<{ lastStreamId: number; code: number }> = [];
  get goaway(): { lastStreamId: number; code: number } | undefined {
    return this.goaways[0];
  }
  readonly resets = new Map<number, number>();
  readonly closed: Promise<void>;
  private buf = Buffer.alloc(0);

  constructor(readonly socket: tls.TLSSocket) {
    socket.on('error', () => undefined);
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('data', (d: Buffer) => this.read(d));
    socket.write('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
    socket.write(frame(FRAME.SETTINGS, 0, 0, Buffer.alloc(0)));
  }

  private read(d: Buffer): void {
    this.buf = Buffer.concat([this.buf, d]);
    while (this.buf.length >= 9) {
      const len = this.buf.readUIntBE(0, 3);
      if (this.buf.length < 9 + len) return;
      const type = this.buf[3];
      const flags = this.buf[4]!;
      const sid = this.buf.readUInt32BE(5) & 0x7fffffff;
      const payload = this.buf.subarray(9, 9 + len);
      this.buf = this.buf.subarray(9 + len);
      // The first GOAWAY says why; a later one (NO_ERROR as the session is torn down) does not.
      if (type === FRAME.GOAWAY) this.goaways.push({ lastStreamId: payload.readUInt32BE(0) & 0x7fffffff, code: payload.readUInt32BE(4) });
      if (type === FRAME.RST_STREAM) this.resets.set(sid, payload.readUInt32BE(0));
      if (type === FRAME.SETTINGS && !(flags & FLAG.ACK)) void this.send(frame(FRAME.SETTINGS, FLAG.ACK, 0, Buffer.alloc(0)));
      if (type === FRAME.PING && !(flags & FLAG.ACK)) void this.send(frame(FRAME.PING, FLAG.ACK, 0, Buffer.from(payload)));
    }
  }

  /** False once the socket is gone; waits for drain under backpressure. */
  async send(bytes: Buffer): Promise<boolean> {
    if (this.socket.destroyed) return false;
    if (!this.socket.write(bytes)) await Promise.race([once(this.socket, 'drain'), this.closed]);
    return !this.socket.destroyed;
  }

  connectHeaders(streamId: number, authority: string, extra: Array<[string, string]> = [], flags: number = FLAG.END_HEADERS): Buffer {
    return frame(FRAME.HEADERS, flags, streamId, headerBlock([[':method', 'CONNECT'], [':authority', authority], ...extra]));
  }

  /** The PING round trip: everything sent before it was processed by the server. */
  async ping(): Promise<boolean> {
    const data = randomBytes(8);
    if (!(await this.send(frame(FRAME.PING, 0, 0, data)))) return false;
    return new Promise((resolve) => {
      const onData = (d: Buffer): void => {
        if (d.includes(data)) done(true);
      };
      const done = (ok: boolean): void => {
        this.socket.off('data', onData);
        resolve(ok);
      };
      this.socket.on('data', onData);
      void this.closed.then(() => done(false));
    });
  }
}

/** The first flight of a TLS client: a real ClientHello, captured from a throwaway listener. */
async function captureClientHello(): Promise<Buffer> {
  const f = await setup();
  const sink = net.createServer();
  sink.listen(0, '127.0.0.1');
  await once(sink, 'listening');
  try {
    const got = once(sink, 'connection') as Promise<[net.Socket]>;
    const client = tls.connect({ host: '127.0.0.1', port: (sink.address() as net.AddressInfo).port, ca: f.server.rootPem, ALPNProtocols: ['h2'], servername: '' });
    client.on('error', () => undefined);
    const [s] = await got;
    const [hello] = (await once(s, 'data')) as [Buffer];
    client.destroy();
    s.destroy();
    return hello;
  } finally {
    sink.close();
  }
}

// --- the tests ------------------------------------------------------------------------------------------

test('bytes before the handshake: random bytes, half a ClientHello, a one-byte trickle and TLS without a preface are each cut within the handshake bound', async (t) => {
  const f = await setup();
  const bound = 600;
  const logged = recordingLogger();
  const { hbone, port } = await serve(t, { handshakeTimeoutMs: bound }, logged.log);
  const pool = poolTo(t, port);
  await assertEcho(pool, 'before');
  // A tunnel that lives through all of it.
  const longLived = await tunnel(pool, f.client);
  const hello = await captureClientHello();
  assert.equal(hello[0], 0x16, 'a TLS handshake record');

  // Not TLS at all: refused as soon as the server reads it.
  let t0 = performance.now();
  const junk = await tcp(port);
  junk.write(randomBytes(4096));
  const junkMs = await closedAfter(junk, t0);
  assert.ok(junkMs < bound, `random bytes closed after ${junkMs.toFixed(0)} ms`);

  // Half a ClientHello, then silence.
  t0 = performance.now();
  const half = await tcp(port);
  half.write(hello.subarray(0, Math.floor(hello.length / 2)));
  const halfMs = await closedAfter(half, t0);

  // The whole ClientHello one byte per 100 ms: never idle for long, so only an absolute deadline
  // (not Node's inactivity timer) cuts it.
  t0 = performance.now();
  const trickle = await tcp(port);
  let sent = 0;
  const timer = setInterval(() => {
    if (sent < hello.length && !trickle.destroyed) trickle.write(hello.subarray(sent, ++sent));
  }, 100);
  t.after(() => clearInterval(timer));
  const trickleMs = await closedAfter(trickle, t0);
  clearInterval(timer);

  // A full TLS handshake, then no HTTP/2 preface.
  t0 = performance.now();
  const mute = await tlsTo(port, f.client);
  const muteMs = await closedAfter(mute, t0);

  for (const [what, ms] of [
    ['half a ClientHello', halfMs],
    ['trickle', trickleMs],
    ['TLS without a preface', muteMs],
  ] as const) {
    assert.ok(ms >= bound - 50 && ms < bound + 1500, `${what} closed after ${ms.toFixed(0)} ms (bound ${bound} ms)`);
  }
  await until(() => hbone.stats().handshakeTimeouts === 3 && hbone.stats().connections === 1, 'three handshake timeouts counted, only the good connection left');
  assert.ok(hbone.stats().handshakeFailures >= 1, 'the random bytes counted as a failed handshake');
  // A stranger can cause timeouts at will: one log line per interval, the rest counted.
  assert.equal(logged.messages().filter((m) => m === 'HBONE handshake timed out').length, 1, 'handshake timeouts logged at a bounded rate');

  const data = randomBytes(32 * 1024);
  assert.ok((await roundTrip(longLived, data)).equals(data), 'the long-lived tunnel still echoes');
  longLived.close();
  await assertEcho(pool, 'after');
  assert.equal(hbone.stats().accepted, 5);
});

test('HTTP/2 rapid reset: a CONNECT + RST_STREAM flood is sent away (GOAWAY ENHANCE_YOUR_CALM) long before nghttp2 would, and reaches the handler at most a burst of times', async (t) => {
  const f = await setup();
  const { hbone, port, handled } = await serve(t);
  const pool = poolTo(t, port);
  await assertEcho(pool, 'before');
  const goodCalls = handled.length;

  const raw = new RawH2(await tlsTo(port, f.client));
  const rst = Buffer.alloc(4);
  rst.writeUInt32BE(http2.constants.NGHTTP2_CANCEL);
  let pairs = 0;
  // 50 pairs per write, as fast as the socket takes them, never waiting for an answer.
  for (let sid = 1; pairs < 5000; ) {
    const batch: Buffer[] = [];
    for (let i = 0; i < 50; i++, sid += 2, pairs++) batch.push(raw.connectHeaders(sid, `127.0.0.1:${f.echoPort}`), frame(FRAME.RST_STREAM, 0, sid, rst));
    if (!(await raw.send(Buffer.concat(batch)))) break;
    if (raw.goaway) break;
  }
  await within(raw.closed, 5000, 'the flooding connection closed');
  assert.deepEqual(raw.goaways.map((g) => g.code), [NGHTTP2_ENHANCE_YOUR_CALM], `GOAWAY after ${pairs} pairs`);
  const s = hbone.stats();
  assert.equal(s.rapidResetCloses, 1);
  assert.ok(s.resets > HBONE_SERVER_LIMITS.resetBurst && s.resets < 1000, `resets counted: ${s.resets}`);
  // Each stream the handler sees costs an app connection: the flood buys about one burst of them.
  assert.ok(handled.length - goodCalls <= HBONE_SERVER_LIMITS.resetBurst + 5, `handler ran ${handled.length - goodCalls} times for the flood`);
  await assertEcho(pool, 'after the flood');
});

test('oversized frames, header lists and CONTINUATION floods are refused; a session nghttp2 ended is closed by the keepalive', async (t) => {
  const f = await setup();
  const keepalive = { keepaliveIntervalMs: 200, keepaliveTimeoutMs: 300 };
  const { hbone, port, handled } = await serve(t, keepalive);
  const pool = poolTo(t, port);
  await assertEcho(pool, 'before');
  const authority = `127.0.0.1:${f.echoPort}`;

  // A frame one byte over our SETTINGS_MAX_FRAME_SIZE (after the SETTINGS exchange, so ours is in
  // force): nghttp2 sends GOAWAY FRAME_SIZE_ERROR and stops reading, and Node leaves the connection
  // open; the unanswered PING closes it.
  const big = new RawH2(await tlsTo(port, f.client));
  assert.ok(await big.ping(), 'SETTINGS exchanged');
  const before = handled.length;
  await big.send(big.connectHeaders(1, authority));
  const t0 = performance.now();
  await big.send(frame(FRAME.DATA, 0, 1, randomBytes(1024), HBONE_SETTINGS.maxFrameSize + 1));
  await within(big.closed, 5000, 'the connection with the oversized frame closed');
  const bigMs = performance.now() - t0;
  assert.deepEqual(big.goaways.map((g) => g.code), [NGHTTP2_FRAME_SIZE_ERROR], 'GOAWAY FRAME_SIZE_ERROR');
  assert.ok(bigMs < keepalive.keepaliveIntervalMs + keepalive.keepaliveTimeoutMs + 1500, `closed after ${bigMs.toFixed(0)} ms`);
  assert.ok(hbone.stats().keepaliveTimeouts >= 1);
  assert.equal(handled.length, before + 1, 'only its one well-formed CONNECT reached the handler');

  // A header list over SETTINGS_MAX_HEADER_LIST_SIZE (16 KiB) in one frame, and more header fields
  // than allowed: that stream is reset (ENHANCE_YOUR_CALM), the session goes on.
  for (const extra of [[['x-pad', 'a'.repeat(20 * 1024)]], Array.from({ length: 200 }, (_, i) => [`x-h${i}`, 'v'])] as Array<Array<[string, string]>>) {
    const raw = new RawH2(await tlsTo(port, f.client));
    assert.ok(await raw.ping(), 'SETTINGS exchanged');
    await raw.send(raw.connectHeaders(1, authority, extra));
    assert.ok(await raw.ping(), 'the session is still served');
    assert.equal(raw.resets.get(1), NGHTTP2_ENHANCE_YOUR_CALM, `stream refused (${extra.length} field(s))`);
    raw.socket.destroy();
  }

  // CONTINUATION flood (CVE-2024-27983): a header block that never ends is cut after a bounded amount.
  const flood = new RawH2(await tlsTo(port, f.client));
  assert.ok(await flood.ping(), 'SETTINGS exchanged');
  await flood.send(flood.connectHeaders(1, authority, [], 0));
  let continuations = 0;
  for (; continuations < 4000; continuations++) {
    if (!(await flood.send(frame(FRAME.CONTINUATION, 0, 1, headerBlock([[`x-c${continuations}`, 'b'.repeat(1000)]]))))) break;
  }
  await within(flood.closed, 5000, 'the CONTINUATION flood closed');
  assert.ok(continuations < 1000, `cut after ${continuations} CONTINUATION frames of 1 KB`);
  assert.ok(flood.goaway !== undefined, 'GOAWAY before the close');

  assert.equal(handled.length, before + 1, 'the handler saw nothing of the header attacks');
  await until(() => hbone.stats().connections === 1, 'only the good connection left');
  await assertEcho(pool, 'after');
});

test('connection caps: per source and in total, refused at once and counted; the good client is unaffected', async (t) => {
  const logged = recordingLogger();
  const { hbone, port } = await serve(t, { maxConnectionsPerSource: 3, maxConnections: 6 }, logged.log);
  const pool = poolTo(t, port);
  await assertEcho(pool, 'before');
  const held: net.Socket[] = [];
  t.after(() => held.forEach((s) => s.destroy()));
  // Three from 127.0.0.2 are admitted (they sit in the handshake), the fourth is not.
  for (let i = 0; i < 3; i++) held.push(await tcp(port, '127.0.0.2'));
  await until(() => hbone.stats().connections === 4, 'four admitted');
  const overMs = await refused(port, '127.0.0.2');
  assert.ok(overMs < 1000, `over the per-source cap: closed after ${overMs.toFixed(0)} ms`);
  assert.equal(hbone.stats().refusedPerSource, 1);

  // Two more from 127.0.0.3 fill the total of six; one from 127.0.0.4 is then refused.
  for (let i = 0; i < 2; i++) held.push(await tcp(port, '127.0.0.3'));
  await until(() => hbone.stats().connections === 6, 'six admitted');
  await refused(port, '127.0.0.4');
  assert.equal(hbone.stats().refusedTotal, 1);
  assert.equal(logged.messages().filter((m) => m === 'HBONE connection refused: over the connection cap').length, 1, 'refusals logged at a bounded rate');
  await assertEcho(pool, 'at the cap');

  // Slots come back when connections go.
  for (const s of held.splice(0)) s.destroy();
  await until(() => hbone.stats().connections === 1, 'held connections released');
  const again = await tlsTo(port, (await setup()).client, '127.0.0.2');
  assert.equal(again.alpnProtocol, 'h2', 'admitted again after release');
  again.destroy();
});

test('a session whose peer certificate expires is sent away at its notAfter, its tunnels closed', async (t) => {
  const f = await setup();
  const { hbone, port } = await serve(t, { closeGraceMs: 300 });
  const good = poolTo(t, port);
  await assertEcho(good, 'before');
  // Its own pool (and so its own session): a client certificate that lives three seconds.
  const shortLived = await issue(f.ca, 'default', 'brief', 3);
  const pool = poolTo(t, port);
  const stream = await tunnel(pool, shortLived);
  const data = randomBytes(1024);
  assert.ok((await roundTrip(stream, data)).equals(data), 'works while the certificate is valid');
  const session = stream.session!;
  const sessionClosed = once(session, 'close');
  const goaway = once(session, 'goaway') as Promise<[number]>;
  stream.on('error', () => undefined);
  const streamClosed = once(stream, 'close');
  const [code] = await within(goaway, 10_000, 'GOAWAY at the certificate expiry');
  const goawayAt = Date.now();
  assert.equal(code, NGHTTP2_NO_ERROR, 'graceful GOAWAY');
  const notAfter = shortLived.notAfter.getTime();
  assert.ok(goawayAt >= notAfter - 50 && goawayAt < notAfter + 1500, `GOAWAY ${goawayAt - notAfter} ms after notAfter`);
  await within(streamClosed, 5000, 'tunnel closed');
  await within(sessionClosed, 5000, 'session closed');
  assert.ok(Date.now() < notAfter + 300 + 1500, 'destroyed after the grace period');
  assert.equal(hbone.stats().expiredPeerCloses, 1);
  await assertEcho(good, 'after');
});

/** Characters nghttp2 does not allow in :authority (RFC 3986 reg-name, IP-literal and port chars). */
const NOT_AUTHORITY_CHARS = /[^A-Za-z0-9\-._~!$&'()*+,;=:%@[\]]/;

test('a CONNECT whose :authority is not exactly ip:port, or a request that is not CONNECT, gets 400 and never reaches the handler', async (t) => {
  const { hbone, port, handled } = await serve(t);
  const f = await setup();
  const pool = poolTo(t, port);
  await assertEcho(pool, 'before');
  const goodCalls = handled.length;
  const bad = [
    `127.0.0.1:${f.echoPort},10.0.0.2:80`,
    `127.0.0.1:${f.echoPort} 10.0.0.2:80`,
    `user@127.0.0.1:${f.echoPort}`,
    `127.0.0.1:${f.echoPort}/admin`,
    `127.0.0.1%3a${f.echoPort}`,
    `[fe80::1%25eth0]:${f.echoPort}`,
    `127.0.0.1:${f.echoPort}x`,
    '127.0.0.1:0',
    '127.0.0.1:65536',
    `localhost:${f.echoPort}`,
    `0127.0.0.1:${f.echoPort}`,
    '127.0.0.1',
  ];
  for (const authority of bad) {
    // nghttp2 itself refuses characters an authority cannot hold (a space, a slash): the stream is
    // reset with PROTOCOL_ERROR before Node sees it. The rest pass HTTP/2 and are ours to refuse.
    const byNghttp2 = NOT_AUTHORITY_CHARS.test(authority);
    await assert.rejects(
      tunnel(pool, f.client, authority),
      (err: unknown) =>
        byNghttp2 ? (err as NodeJS.ErrnoException).code === 'ERR_HTTP2_STREAM_ERROR' && /PROTOCOL_ERROR/.test((err as Error).message) : err instanceof HboneRefused && err.status === 400,
      authority,
    );
  }
  const ours = bad.filter((a) => !NOT_AUTHORITY_CHARS.test(a)).length;
  assert.ok(ours >= bad.length - 2, 'most of them pass nghttp2 and are refused by the server itself');
  // Not CONNECT.
  const tlsSocket = await tlsTo(port, f.client);
  const session = http2.connect(`https://127.0.0.1:${port}`, { createConnection: () => tlsSocket });
  t.after(() => session.destroy());
  const get = session.request({ ':method': 'GET', ':path': '/', ':authority': `127.0.0.1:${f.echoPort}` }, { endStream: true });
  const [headers] = (await within(once(get, 'response'), 5000, 'a response to GET')) as [http2.IncomingHttpHeaders];
  assert.equal(headers[':status'], 400);
  assert.equal(handled.length, goodCalls, 'the handler saw none of them');
  assert.equal(hbone.stats().badRequests, ours + 1);
  await assertEcho(pool, 'after');
});

test('idle: a session with no stream and a tunnel with no bytes are closed after their bounds; a busy tunnel is not', async (t) => {
  const f = await setup();
  const idle = 500;
  const { hbone, port } = await serve(t, { sessionIdleMs: idle, tunnelIdleMs: idle });
  // A session that never opens a stream: GOAWAY NO_ERROR once idle, then the connection ends.
  let t0 = performance.now();
  const raw = new RawH2(await tlsTo(port, f.client));
  await within(raw.closed, 5000, 'the idle session closed');
  const rawMs = performance.now() - t0;
  assert.equal(raw.goaway?.code, NGHTTP2_NO_ERROR);
  assert.ok(rawMs >= idle - 50 && rawMs < idle + 1500, `idle session closed after ${rawMs.toFixed(0)} ms`);

  const pool = poolTo(t, port);
  const still = await tunnel(pool, f.client);
  // The server's timer started a little earlier (before its answer reached us): hence the slack below.
  t0 = performance.now();
  still.on('error', () => undefined);
  const busy = await tunnel(pool, f.client);
  // The busy tunnel exchanges a byte every 100 ms for three idle periods.
  let exchanges = 0;
  while (performance.now() - t0 < 3 * idle) {
    const b = randomBytes(1);
    assert.ok((await roundTrip(busy, b)).equals(b));
    exchanges++;
    await new Promise((r) => setTimeout(r, 100));
    if (still.closed) break;
  }
  if (!still.closed) await within(once(still, 'close'), 5000, 'the still tunnel closed');
  const stillMs = performance.now() - t0;
  assert.ok(stillMs >= idle - 200 && stillMs < idle + 1500, `still tunnel closed after ${stillMs.toFixed(0)} ms`);
  assert.equal(still.rstCode, http2.constants.NGHTTP2_CANCEL);
  // Keep the busy one going past the still one's bound too.
  const until2 = performance.now() + idle + 200;
  while (performance.now() < until2) {
    const b = randomBytes(1);
    assert.ok((await roundTrip(busy, b)).equals(b), 'busy tunnel still echoes');
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.ok(!busy.closed && exchanges > 3);
  // Once the busy one ends too, the session has no stream and goes idle.
  const session = busy.session!;
  const sessionClosed = once(session, 'close');
  busy.close();
  await within(sessionClosed, 5000, 'the idle session closed');
  const s = hbone.stats();
  assert.equal(s.tunnelIdleCloses, 1);
  assert.equal(s.sessionIdleCloses, 2);
  assert.equal(s.resets, 0, 'our own cancels are not counted as the peer resetting');
});

test('the trust domain is checked: a certificate from our root for another trust domain is refused before any stream', async (t) => {
  const { hbone, port, handled } = await serve(t);
  const other = await CertificateAuthority.loadOrCreate({ dir: otherDir, trustDomain: 'other.local', certFile: join(caDir, ROOT_CERT_FILE), keyFile: join(caDir, ROOT_KEY_FILE) });
  const stranger = await issue(other, 'default', 'client');
  const pool = poolTo(t, port);
  await assert.rejects(tunnel(pool, stranger), (err: unknown) => err instanceof WeftError && err.code === 'WEFT_ERR_HBONE', 'refused');
  assert.equal(handled.length, 0);
  await until(() => hbone.stats().peersRefused === 1, 'counted as a refused peer');
  assert.equal(hbone.stats().handshakeFailures, 0);
  await assertEcho(poolTo(t, port), 'a peer of our trust domain');
});

test('close() destroys live sessions at once (peers keep theirs open), and setSecureContext serves a rotated certificate to new connections', async (t) => {
  const f = await setup();
  const { hbone, port } = await serve(t);
  const pool = poolTo(t, port);
  const stream = await tunnel(pool, f.client);
  stream.on('error', () => undefined);

  const rotated = await issue(f.ca, 'shop', 'api');
  hbone.setSecureContext(rotated);
  const fresh = await tlsTo(port, f.client);
  assert.equal(fresh.getPeerX509Certificate()?.serialNumber, rotated.serial, 'new connections see the rotated certificate');
  fresh.destroy();
  const data = randomBytes(4096);
  assert.ok((await roundTrip(stream, data)).equals(data), 'the open session goes on');

  const streamClosed = once(stream, 'close');
  const t0 = performance.now();
  await within(hbone.close(), 5000, 'close() resolved');
  await within(streamClosed, 5000, 'the tunnel closed');
  assert.ok(performance.now() - t0 < 1000, 'close did not wait for the peer');
  await assert.rejects(tcp(port), /ECONNREFUSED/);
});

test('drain(): GOAWAY to every session, open tunnels run to their end, nothing new is accepted', async (t) => {
  const f = await setup();
  const { hbone, port, handled } = await serve(t);
  const pool = poolTo(t, port);
  const stream = await tunnel(pool, f.client);
  const session = stream.session!;
  const goaway = once(session, 'goaway') as Promise<[number]>;
  const drained = hbone.drain();
  const [code] = await within(goaway, 5000, 'GOAWAY on drain');
  assert.equal(code, NGHTTP2_NO_ERROR);
  const data = randomBytes(64 * 1024);
  assert.ok((await roundTrip(stream, data)).equals(data), 'the open tunnel goes on after the GOAWAY');
  // The pool does not reuse a session that was sent away, and the listener is gone.
  await assert.rejects(tunnel(pool, f.client), /ECONNREFUSED/);
  assert.equal(handled.length, 1);
  stream.end();
  await within(drained, 5000, 'drain resolved once the last tunnel ended');
  await until(() => hbone.stats().connections === 0, 'no connection left');
});

test('limits are checked: a bad value is refused naming the field', async () => {
  const f = await setup();
  for (const limits of [{ handshakeTimeoutMs: 0 }, { maxConnectionsPerSource: -1 }, { resetRatePerSecond: Number.NaN }, { tunnelIdleMs: 1.5 }] as Array<Partial<HboneServerLimits>>) {
    const field = Object.keys(limits)[0]!;
    assert.throws(
      () => new HboneServer({ cert: f.server, trustDomain: () => TD, log: quiet, limits, onStream: () => undefined }),
      (err: unknown) => err instanceof WeftError && err.code === 'WEFT_ERR_CONFIG_INVALID' && err.message.includes(field),
    );
  }
  assert.ok(HBONE_SERVER_LIMITS.handshakeTimeoutMs <= 10_000, 'default handshake bound at most 10 s');
});
