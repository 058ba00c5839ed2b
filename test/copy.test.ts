// copyBidirectional over loopback TCP, with and without the HBONE fast path's pump: bytes intact
// both ways, half-close carried across, an error on one side tears down both, memory bounded under
// backpressure, and byte counts right.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { once } from 'node:events';
import { copyBidirectional, type CopyResult } from '../agent/ztunnel/copy.js';

interface Proxied {
  /** The client's socket, connected through the proxy to the backend. */
  client: net.Socket;
  /** The backend's end of the connection. */
  backend: net.Socket;
  /** The proxy's two sockets: downstream (from the client) and upstream (to the backend). */
  down: net.Socket;
  up: net.Socket;
  result: Promise<CopyResult>;
  close(): void;
}

async function proxied(tuned: boolean): Promise<Proxied> {
  const backendServer = net.createServer({ allowHalfOpen: true });
  const proxyServer = net.createServer({ allowHalfOpen: true, pauseOnConnect: true });
  backendServer.listen(0, '127.0.0.1');
  proxyServer.listen(0, '127.0.0.1');
  await Promise.all([once(backendServer, 'listening'), once(proxyServer, 'listening')]);
  const backendPort = (backendServer.address() as net.AddressInfo).port;
  const proxyPort = (proxyServer.address() as net.AddressInfo).port;
  const backendConn = once(backendServer, 'connection') as Promise<[net.Socket]>;
  const proxySide = new Promise<{ down: net.Socket; up: net.Socket; result: Promise<CopyResult> }>((resolve) => {
    proxyServer.once('connection', (down: net.Socket) => {
      const up = net.connect({ host: '127.0.0.1', port: backendPort, allowHalfOpen: true });
      up.once('connect', () => resolve({ down, up, result: copyBidirectional(down, up, { tuned }) }));
    });
  });
  const client = net.connect({ host: '127.0.0.1', port: proxyPort, allowHalfOpen: true });
  const [{ down, up, result }, [backend]] = await Promise.all([proxySide, backendConn]);
  return {
    client,
    backend,
    down,
    up,
    result,
    close: () => {
      client.destroy();
      backend.destroy();
      backendServer.close();
      proxyServer.close();
    },
  };
}

function readAll(s: net.Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  s.on('data', (c: Buffer) => chunks.push(c));
  return once(s, 'end').then(() => Buffer.concat(chunks));
}

for (const tuned of [false, true]) {
  const mode = tuned ? 'tuned' : 'untuned';

  test(`copyBidirectional (${mode}): bytes intact both ways, half-close carried, byte counts right`, async () => {
    const p = await proxied(tuned);
    try {
      const up = randomBytes(5 * 1024 * 1024 + 17);
      const downData = randomBytes(3 * 1024 * 1024 + 5);
      const atBackend = readAll(p.backend);
      const atClient = readAll(p.client);
      p.client.end(up);
      // The backend sees the client's FIN while its own direction is still open, then answers.
      assert.ok((await atBackend).equals(up));
      assert.ok(!p.backend.writableEnded);
      p.backend.end(downData);
      assert.ok((await atClient).equals(downData));
      assert.deepEqual(await p.result, {});
      assert.equal(p.down.bytesRead, up.length);
      assert.equal(p.up.bytesWritten, up.length);
      assert.equal(p.up.bytesRead, downData.length);
      assert.equal(p.down.bytesWritten, downData.length);
    } finally {
      p.close();
    }
  });

  test(`copyBidirectional (${mode}): an error on one side tears down both`, async () => {
    const p = await proxied(tuned);
    try {
      p.client.write('hello');
      await once(p.backend, 'data');
      // The client sees its connection go (a FIN or a reset), not a half-dead tunnel.
      const clientGone = new Promise((resolve) => {
        p.client.once('end', resolve);
        p.client.once('error', resolve);
      });
      p.up.destroy(new Error('boom'));
      const result = await p.result;
      assert.equal(result.error?.message, 'boom');
      assert.ok(p.down.destroyed);
      await clientGone;
    } finally {
      p.close();
    }
  });

  test(`copyBidirectional (${mode}): a stalled reader bounds what the proxy buffers`, async () => {
    const p = await proxied(tuned);
    try {
      p.backend.pause();
      const chunk = Buffer.alloc(256 * 1024, 1);
      let sent = 0;
      let maxBuffered = 0;
      // Write until the client's own socket pushes back for a while: the proxy must have paused.
      const deadline = Date.now() + 1500;
      while (Date.now() < deadline) {
        if (p.client.write(chunk)) sent += chunk.length;
        else {
          sent += chunk.length;
          await once(p.client, 'drain', { signal: AbortSignal.timeout(100) }).catch(() => undefined);
        }
        maxBuffered = Math.max(maxBuffered, p.up.writableLength + p.down.readableLength);
      }
      // Kernel buffers absorb some; the proxy itself must hold no more than a few hundred KiB.
      assert.ok(sent > 4 * 1024 * 1024, `sent ${sent}`);
      assert.ok(maxBuffered < 2 * 1024 * 1024, `proxy buffered ${maxBuffered} bytes`);
      // Everything still arrives once the reader resumes.
      const got = readAll(p.backend);
      p.backend.resume();
      p.client.end();
      assert.equal((await got).length, sent);
    } finally {
      p.close();
    }
  });
}
