// SPDX-License-Identifier: Apache-2.0
// Sockets made inside another netns: cookies, listen + connect with a mark, byte exchange through
// Node sockets wrapping the fds, isolation from the host netns, and the JS thread never moves; the
// proxy's pool of pre-made sockets, connected by Node; TCP_INFO's byte count.
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, test } from 'node:test';

import { SyscallError } from '../agent/errors.js';
import { connectInNetns, currentNetnsCookie, listenInNetns, netnsCookie, socketCookie, socketsInNetns, tcpQueuedBytes } from '../native/index.js';
import { NetnsSockets } from '../agent/ztunnel/netns-sockets.js';
import { RUN_PREFIX, createNetns, deleteNetns, requirePrivileges, sh } from './helpers/privileged.js';

const NETNS = `${RUN_PREFIX}-ns`;
const POOL_NETNS = `${RUN_PREFIX}-pool`;
const PORT = 18080;
after(() => {
  deleteNetns(NETNS);
  deleteNetns(POOL_NETNS);
});

function hostConnect(port: number): Promise<'connected' | string> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve('connected');
    });
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
  });
}

test('netns helpers: cookies, listen/connect with a mark, isolation, thread netns untouched', async (t) => {
  if (!requirePrivileges(t)) return;
  const hostCookie = currentNetnsCookie();
  assert.equal(typeof hostCookie, 'bigint');
  const nsPath = createNetns(NETNS);

  const cookie = netnsCookie(nsPath);
  assert.notEqual(cookie, hostCookie);
  assert.equal(netnsCookie(nsPath), cookie, 'stable');
  assert.equal(netnsCookie('/proc/self/ns/net'), hostCookie);

  const lfd = listenInNetns(nsPath, { host: '127.0.0.1', port: PORT, backlog: 16 });
  const server = net.createServer();
  t.after(() => server.close());
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  await new Promise<void>((resolve) => server.listen({ fd: lfd }, resolve));

  const cfd = await connectInNetns(nsPath, { host: '127.0.0.1', port: PORT, mark: 0x539, timeoutMs: 5000 });
  assert.ok(cfd > 2);
  const sc = socketCookie(cfd);
  assert.equal(typeof sc, 'bigint');
  assert.ok(sc > 0n);
  const client = new net.Socket({ fd: cfd, readable: true, writable: true });
  t.after(() => client.destroy());
  const peer = await accepted;
  t.after(() => peer.destroy());

  const toServer = new Promise<string>((r) => peer.once('data', (d) => r(d.toString())));
  client.write('ping from client');
  assert.equal(await toServer, 'ping from client');
  const toClient = new Promise<string>((r) => client.once('data', (d) => r(d.toString())));
  peer.write('pong from server');
  assert.equal(await toClient, 'pong from server');

  // SO_MARK reached the socket: ss in that netns shows the client side with fwmark 0x539.
  const ss = sh('ss', ['-N', NETNS, '-tnHe', 'state', 'established']);
  assert.match(ss, new RegExp(`127\\.0\\.0\\.1:${PORT} .*fwmark:0x539`), ss);

  // The listener lives in the other netns: from the host, nobody is there.
  assert.notEqual(await hostConnect(PORT), 'connected');

  await assert.rejects(connectInNetns(nsPath, { host: '127.0.0.1', port: PORT + 1, timeoutMs: 2000 }), (e: unknown) => {
    assert.ok(e instanceof SyscallError, String(e));
    assert.equal(e.errnoName, 'ECONNREFUSED');
    assert.equal(e.syscall, 'connect(2)');
    return true;
  });
  await assert.rejects(connectInNetns('/run/netns/does-not-exist', { host: '127.0.0.1', port: PORT }), (e: unknown) => {
    return e instanceof SyscallError && e.errnoName === 'ENOENT';
  });

  // IPv6 loopback in the netns too.
  const l6 = listenInNetns(nsPath, { host: '::1', port: 0, ipv6Only: true });
  const server6 = net.createServer((s) => s.end('v6'));
  t.after(() => server6.close());
  await new Promise<void>((resolve) => server6.listen({ fd: l6 }, resolve));
  const port6 = (server6.address() as net.AddressInfo).port;
  const c6 = new net.Socket({ fd: await connectInNetns(nsPath, { host: '::1', port: port6 }), readable: true, writable: true });
  const got6 = await new Promise<string>((r) => {
    let s = '';
    c6.on('data', (d) => (s += d.toString()));
    c6.on('end', () => r(s));
  });
  c6.destroy();
  assert.equal(got6, 'v6');

  // Many concurrent connects on the libuv pool: every pool thread must come back to the host netns.
  const fds = await Promise.all(
    Array.from({ length: 32 }, () => connectInNetns(nsPath, { host: '127.0.0.1', port: PORT })),
  );
  for (const fd of fds) new net.Socket({ fd }).destroy();
  const hostLfd = listenInNetns('/proc/self/ns/net', { host: '127.0.0.1', port: 0 });
  const hostServer = net.createServer((s) => s.end());
  t.after(() => hostServer.close());
  await new Promise<void>((resolve) => hostServer.listen({ fd: hostLfd }, resolve));
  const hostPort = (hostServer.address() as net.AddressInfo).port;
  assert.equal(await hostConnect(hostPort), 'connected', 'host-netns listener reachable from the JS thread');

  assert.equal(currentNetnsCookie(), hostCookie, 'the JS thread never left its netns');
});

test('a pool of sockets made in a netns: connected by Node from there, marked, counted in TCP_INFO; the pool refuses once closed', async (t) => {
  if (!requirePrivileges(t)) return;
  const nsPath = createNetns(POOL_NETNS);
  const lfd = listenInNetns(nsPath, { host: '127.0.0.1', port: 0 });
  const received: string[] = [];
  const server = net.createServer((s) => s.on('data', (d) => received.push(d.toString())).on('end', () => s.end('bye')));
  t.after(() => server.close());
  await new Promise<void>((resolve) => server.listen({ fd: lfd }, resolve));
  const port = (server.address() as net.AddressInfo).port;

  const fds = socketsInNetns(nsPath, { family: 'ipv4', count: 3, mark: 0x539 });
  assert.equal(fds.length, 3);
  assert.equal(new Set(fds).size, 3);

  const pool = new NetnsSockets(nsPath);
  const kind = { family: 'ipv4', mark: 0x539, transparent: false } as const;
  const sock = await pool.connect(kind, { host: '127.0.0.1', port, timeoutMs: 5000 });
  t.after(() => sock.destroy());
  // Reachable only inside the netns: the pooled socket was made there.
  assert.notEqual(await hostConnect(port), 'connected');
  const ss = sh('ss', ['-N', POOL_NETNS, '-tnHe', 'state', 'established', 'dport', `= :${port}`]);
  assert.match(ss, /fwmark:0x539/, ss);
  await new Promise<void>((r, j) => sock.write('hello through the pool', (err) => (err ? j(err) : r())));
  assert.equal(tcpQueuedBytes(socketFdOf(sock)), BigInt('hello through the pool'.length), 'TCP_INFO: every byte queued');
  sock.end();
  const reply = await new Promise<string>((r) => {
    let s = '';
    sock.on('data', (d) => (s += d.toString()));
    sock.on('end', () => r(s));
  });
  assert.equal(reply, 'bye');
  assert.deepEqual(received, ['hello through the pool']);

  await assert.rejects(pool.connect(kind, { host: '127.0.0.1', port: port === 1 ? 2 : port - 1, timeoutMs: 5000 }), /ECONNREFUSED/);
  assert.throws(() => socketsInNetns(nsPath, { family: 'ipv4', count: 0 }), /count/);
  pool.close();
  assert.throws(() => pool.take(kind), /closed/);
  for (const fd of fds) new net.Socket({ fd }).destroy();
});

function socketFdOf(s: net.Socket): number {
  return (s as unknown as { _handle: { fd: number } })._handle.fd;
}
