// SPDX-License-Identifier: Apache-2.0
// Agent handover (receiveFds/sendFds): a listening TCP socket crosses over and keeps serving on its
// port after the original server closed; several fds and several messages arrive intact and in
// order; a receiver nobody connects to times out and removes its socket file; bad arguments are
// TypeErrors naming the argument; a closed fd is refused; a non-root peer is refused while the
// receiver keeps waiting for root; truncated messages (too many fds, too much data, from a raw
// sender) fail and close every fd received; no fd leaks across any of it.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import {
  chmodSync,
  closeSync,
  existsSync,
  linkSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readSync,
  readlinkSync,
  rmSync,
  statSync,
  watch,
  writeFileSync,
} from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test, type TestContext } from 'node:test';

import { SyscallError } from '../agent/errors.js';
import { receiveFds, sendFds, type FdMessage } from '../native/index.js';
import { openFdCount } from './helpers/privileged.js';

const DIR = mkdtempSync(join(tmpdir(), `weft-fdpass-${process.pid}-`));
after(() => rmSync(DIR, { recursive: true, force: true }));

let seq = 0;
/** A fresh socket path per case, inside this run's directory. */
function sockPath(): string {
  return join(DIR, `h${seq++}.sock`);
}

function closeReceived(messages: FdMessage[]): void {
  for (const m of messages) for (const fd of m.fds) closeSync(fd);
}

/** Resolves once `path` exists: watches its directory first, then checks, so no creation is missed. */
async function fileAppears(path: string): Promise<void> {
  const dir = join(path, '..');
  const name = path.slice(dir.length + 1);
  const ac = new AbortController();
  const appeared = new Promise<void>((resolve, reject) => {
    const w = watch(dir, { signal: ac.signal }, (_ev, f) => {
      if (f === name && existsSync(path)) resolve();
    });
    w.on('error', (e: Error) => {
      if (e.name !== 'AbortError') reject(e);
    });
  });
  try {
    if (!existsSync(path)) await appeared;
  } finally {
    ac.abort();
  }
}

function isCloexec(fd: number): boolean {
  const flags = /^flags:\s+([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
  assert.ok(flags, `fdinfo of ${fd} has flags`);
  return (parseInt(flags[1]!, 8) & 0o2000000) !== 0;
}

/** The receiver accepts root peers only: a handover between two of this process's calls needs root. */
function requireRoot(t: TestContext): boolean {
  if (process.getuid?.() === 0) return true;
  if (process.env.CI === 'true') throw new Error('native-fdpass needs root in CI');
  console.log(`# skipping ${t.name}: not running as root (the receiver accepts root peers only)`);
  t.skip('not running as root');
  return false;
}

test('a listening TCP socket crosses over and keeps serving its port after the original closed', async (t) => {
  if (!requireRoot(t)) return;
  const original = net.createServer();
  await new Promise<void>((resolve) => original.listen({ host: '127.0.0.1', port: 0 }, resolve));
  const { port } = original.address() as net.AddressInfo;
  const fd = (original as unknown as { _handle: { fd: number } })._handle.fd;
  assert.ok(Number.isInteger(fd) && fd > 2, `server fd ${fd}`);
  let originalOpen = true;
  t.after(() => {
    if (originalOpen) original.close();
  });

  const path = sockPath();
  const appeared = fileAppears(path);
  const received = receiveFds(path, { timeoutMs: 5000 });
  await appeared;
  assert.equal(statSync(path).mode & 0o777, 0o600, 'socket file is 0600');
  assert.ok(statSync(path).isSocket());

  await sendFds(path, [{ data: Buffer.from('listener 127.0.0.1'), fds: [fd] }], { timeoutMs: 5000 });
  const messages = await received;
  assert.equal(existsSync(path), false, 'socket file removed');
  assert.equal(messages.length, 1);
  const m = messages[0]!;
  assert.equal(m.data.toString(), 'listener 127.0.0.1');
  assert.equal(m.fds.length, 1);
  const got = m.fds[0]!;
  assert.notEqual(got, fd, 'a new fd number in this process');
  assert.equal(readlinkSync(`/proc/self/fd/${got}`), readlinkSync(`/proc/self/fd/${fd}`), 'same socket inode');
  assert.ok(isCloexec(got), 'received fd is close-on-exec');

  // The sender's fd stays open: the server is still listening on it until we close it.
  await new Promise<void>((resolve) => original.close(() => resolve()));
  originalOpen = false;

  const echo = net.createServer((s) => s.pipe(s));
  t.after(() => echo.close());
  await new Promise<void>((resolve) => echo.listen({ fd: got }, resolve));
  const client = net.connect({ host: '127.0.0.1', port });
  t.after(() => client.destroy());
  await once(client, 'connect');
  client.end('ping through the handed-over socket');
  const chunks: Buffer[] = [];
  for await (const c of client) chunks.push(c as Buffer);
  assert.equal(Buffer.concat(chunks).toString(), 'ping through the handed-over socket');
});

test('several fds in one message, several messages in order, data intact, 250 fds at once', async (t) => {
  if (!requireRoot(t)) return;
  const files: number[] = [];
  t.after(() => files.forEach((f) => closeSync(f)));
  for (let i = 0; i < 3; i++) {
    const p = join(DIR, `file${i}`);
    writeFileSync(p, `contents of file ${i}`);
    files.push(openSync(p, 'r'));
  }
  const big = Buffer.alloc(64 * 1024);
  for (let i = 0; i < big.length; i++) big[i] = (i * 131 + 7) & 0xff;

  const sent: FdMessage[] = [
    { data: big, fds: files },
    { data: Buffer.from('second, no fds'), fds: [] },
    { data: Buffer.from('third, one fd'), fds: [files[2]!] },
    { data: Buffer.from('fourth, 250 copies'), fds: new Array<number>(250).fill(files[1]!) },
    { data: Buffer.from([0]), fds: [files[0]!, files[0]!] },
  ];
  const path = sockPath();
  const [messages] = await Promise.all([receiveFds(path, { timeoutMs: 5000 }), sendFds(path, sent, { timeoutMs: 5000 })]);
  t.after(() => closeReceived(messages));

  assert.equal(messages.length, sent.length);
  assert.deepEqual(
    messages.map((m) => m.fds.length),
    sent.map((m) => m.fds.length),
  );
  for (let i = 0; i < sent.length; i++) assert.ok(messages[i]!.data.equals(sent[i]!.data), `message ${i} data`);
  const readAt0 = (fd: number): string => {
    const b = Buffer.alloc(64);
    return b.subarray(0, readSync(fd, b, 0, b.length, 0)).toString();
  };
  assert.deepEqual(messages[0]!.fds.map(readAt0), ['contents of file 0', 'contents of file 1', 'contents of file 2']);
  assert.equal(readAt0(messages[2]!.fds[0]!), 'contents of file 2');
  assert.ok(messages[3]!.fds.every((fd) => readAt0(fd) === 'contents of file 1'));
  const all = messages.flatMap((m) => m.fds);
  assert.equal(new Set(all).size, all.length, 'every received fd is distinct');
  assert.ok(all.every(isCloexec));
  // The caller's fds are untouched.
  assert.deepEqual(files.map(readAt0), ['contents of file 0', 'contents of file 1', 'contents of file 2']);
});

test('nobody connects: timeout error, socket file removed; a stale socket is replaced, a regular file is not', async (t) => {
  if (!requireRoot(t)) return;
  const path = sockPath();
  const started = Date.now();
  await assert.rejects(receiveFds(path, { timeoutMs: 200 }), (e: unknown) => {
    assert.ok(e instanceof SyscallError);
    assert.equal(e.syscall, 'accept(2)');
    assert.equal(e.errnoName, 'ETIMEDOUT');
    assert.match(e.message, /no connection within 200ms/);
    assert.ok(e.message.includes(path), e.message);
    return true;
  });
  assert.ok(Date.now() - started >= 190, 'waited the timeout out');
  assert.equal(existsSync(path), false, 'socket file removed after the timeout');

  // A stale socket left by a dead listener is replaced. (Node unlinks its own socket file on close;
  // a hard link keeps one behind, as a crashed receiver would.)
  const stale = net.createServer();
  const live = sockPath();
  await new Promise<void>((resolve) => stale.listen(live, resolve));
  linkSync(live, path);
  await new Promise<void>((resolve) => stale.close(() => resolve()));
  assert.ok(statSync(path).isSocket(), 'stale socket file in place');
  const [messages] = await Promise.all([
    receiveFds(path, { timeoutMs: 5000 }),
    sendFds(path, [{ data: Buffer.from('after stale'), fds: [] }], { timeoutMs: 5000 }),
  ]);
  assert.deepEqual(
    messages.map((m) => m.data.toString()),
    ['after stale'],
  );
  assert.equal(existsSync(path), false);

  // Anything that is not a socket is somebody's file: refused, left in place.
  const file = sockPath();
  writeFileSync(file, 'keep me');
  await assert.rejects(receiveFds(file, { timeoutMs: 1000 }), (e: unknown) => {
    assert.ok(e instanceof SyscallError);
    assert.equal(e.errnoName, 'EEXIST');
    return true;
  });
  assert.equal(readFileSync(file, 'utf8'), 'keep me');
});

test('invalid arguments are TypeErrors naming the argument', () => {
  const bad = (v: unknown): never => v as never;
  const ok = join(DIR, 'never.sock');
  const cases: Array<[() => unknown, RegExp]> = [
    [() => receiveFds(bad(42), { timeoutMs: 10 }), /^path must be a string/],
    [() => receiveFds('relative.sock', { timeoutMs: 10 }), /^path must be an absolute path/],
    [() => receiveFds('/' + 'x'.repeat(120), { timeoutMs: 10 }), /^path must be shorter than 108 bytes/],
    [() => receiveFds('/tmp/a\0b', { timeoutMs: 10 }), /^path must not contain NUL/],
    [() => receiveFds(ok, bad(undefined)), /^options must be an object/],
    [() => receiveFds(ok, bad({})), /^options\.timeoutMs must be an integer/],
    [() => receiveFds(ok, { timeoutMs: 0 }), /^options\.timeoutMs must be an integer in 1\.\./],
    [() => receiveFds(ok, { timeoutMs: 1.5 }), /^options\.timeoutMs/],
    [() => receiveFds(ok, { timeoutMs: bad('100') }), /^options\.timeoutMs/],
    [() => receiveFds(ok, { timeoutMs: 10, maxMessages: 0 }), /^options\.maxMessages must be an integer in 1\.\.1024/],
    [() => receiveFds(ok, { timeoutMs: 10, maxMessages: 1025 }), /^options\.maxMessages/],
    [() => sendFds(ok, bad('x'), { timeoutMs: 10 }), /^messages must be an array/],
    [() => sendFds(ok, [], bad(null)), /^options must be an object/],
    [() => sendFds(ok, [], { timeoutMs: -1 }), /^options\.timeoutMs/],
    [() => sendFds(ok, [bad(null)], { timeoutMs: 10 }), /^messages\[0\] must be an object/],
    [() => sendFds(ok, [{ data: bad('str'), fds: [] }], { timeoutMs: 10 }), /^messages\[0\]\.data must be a Buffer/],
    [() => sendFds(ok, [{ data: Buffer.alloc(0), fds: [] }], { timeoutMs: 10 }), /^messages\[0\]\.data must be 1\.\.65536 bytes/],
    [() => sendFds(ok, [{ data: Buffer.alloc(65537), fds: [] }], { timeoutMs: 10 }), /^messages\[0\]\.data must be 1\.\.65536 bytes \(got 65537\)/],
    [() => sendFds(ok, [{ data: Buffer.from('a'), fds: bad(3) }], { timeoutMs: 10 }), /^messages\[0\]\.fds must be an array/],
    [() => sendFds(ok, [{ data: Buffer.from('a'), fds: new Array<number>(251).fill(0) }], { timeoutMs: 10 }), /^messages\[0\]\.fds must hold at most 250/],
    [() => sendFds(ok, [{ data: Buffer.from('a'), fds: [] }, { data: Buffer.from('b'), fds: [0, -1] }], { timeoutMs: 10 }), /^messages\[1\]\.fds\[1\] must be a non-negative integer/],
    [() => sendFds(ok, [{ data: Buffer.from('a'), fds: [0.5] }], { timeoutMs: 10 }), /^messages\[0\]\.fds\[0\]/],
    [() => sendFds(ok, [{ data: Buffer.from('a'), fds: [bad('0')] }], { timeoutMs: 10 }), /^messages\[0\]\.fds\[0\]/],
  ];
  for (const [call, message] of cases) {
    assert.throws(call, (e: unknown) => {
      assert.ok(e instanceof TypeError, `TypeError for ${String(message)}: ${String(e)}`);
      assert.match(e.message, message);
      assert.equal((e as TypeError & { code?: string }).code, 'WEFT_ERR_NATIVE_USAGE');
      return true;
    });
  }
  assert.equal(existsSync(ok), false, 'nothing was created');
});

test('a closed fd is refused before anything is sent', async () => {
  const p = join(DIR, 'closed-file');
  writeFileSync(p, 'x');
  const open = openSync(p, 'r');
  const before = openFdCount();
  try {
    const path = sockPath();
    // Closed right before the call, with nothing in between that could reuse the number.
    const closed = openSync(p, 'r');
    closeSync(closed);
    const sending = sendFds(path, [{ data: Buffer.from('a'), fds: [open, closed] }], { timeoutMs: 1000 });
    await assert.rejects(
      sending,
      (e: unknown) => {
        assert.ok(e instanceof SyscallError);
        assert.equal(e.syscall, 'fcntl(2)');
        assert.equal(e.errnoName, 'EBADF');
        assert.ok(e.message.includes(`messages[0].fds[1] = ${closed}`), e.message);
        return true;
      },
    );
    assert.equal(openFdCount(), before, 'the duplicate of the open fd was closed again');
  } finally {
    closeSync(open);
  }
});

test('a non-root peer is refused and the receiver keeps waiting for root', async (t) => {
  if (!requireRoot(t)) return;
  // Let the unprivileged child reach the socket: only the peer check may stop it.
  chmodSync(DIR, 0o711);
  const dir = mkdtempSync(join(DIR, 'uid-'));
  chmodSync(dir, 0o711);
  const path = join(dir, 'handover.sock');
  const appeared = fileAppears(path);
  const received = receiveFds(path, { timeoutMs: 20_000 });
  let settled = false;
  const outcome = received.then(
    () => (settled = true),
    () => (settled = true),
  );
  t.after(async () => {
    // On a failure below, end the receiver now (an empty batch from root) instead of at its timeout.
    if (!settled) await sendFds(path, [], { timeoutMs: 2000 }).catch(() => undefined);
    await outcome;
  });
  await appeared;
  assert.equal(statSync(path).mode & 0o777, 0o600);
  chmodSync(path, 0o666);

  const mod = new URL('../native/index.js', import.meta.url).href;
  const script = `
    import { sendFds } from ${JSON.stringify(mod)};
    process.setuid(65534);
    try {
      await sendFds(${JSON.stringify(path)}, [{ data: Buffer.from('from nobody'), fds: [0] }], { timeoutMs: 5000 });
      process.stdout.write(JSON.stringify({ sent: true }));
    } catch (e) {
      process.stdout.write(JSON.stringify({ sent: false, syscall: e.syscall, errnoName: e.errnoName, message: e.message }));
    }`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { cwd: '/', stdio: ['ignore', 'pipe', 'pipe'] });
  t.after(() => child.kill());
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const [code] = (await once(child, 'close')) as [number | null];
  assert.equal(code, 0, `child failed: ${err}`);
  const r = JSON.parse(out) as { sent: boolean; syscall?: string; errnoName?: string; message?: string };
  assert.equal(r.sent, false, 'the unprivileged sender must not succeed');
  // Refused by the receiver after connecting (not by file permissions, which would be EACCES on connect).
  assert.ok(['ECONNRESET', 'EPIPE'].includes(r.errnoName ?? ''), `child error: ${r.message}`);

  assert.ok(existsSync(path), 'receiver still listening');
  await sendFds(path, [{ data: Buffer.from('from root'), fds: [] }], { timeoutMs: 5000 });
  const messages = await received;
  assert.deepEqual(
    messages.map((m) => m.data.toString()),
    ['from root'],
  );
  assert.equal(existsSync(path), false);
});

// A raw sender (python's socket module) can put more on the wire than sendFds allows.
const RAW_SENDER = `
import array, os, socket, sys
path, mode = sys.argv[1], sys.argv[2]
null = os.open('/dev/null', os.O_RDONLY)
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect(path)
def send(data, n):
    s.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array('i', [null] * n))] if n else [])
send(b'good', 3)
if mode == 'fds':
    send(b'too many fds', 252)
elif mode == 'data':
    send(b'x' * 70000, 2)
elif mode == 'count':
    send(b'second', 1)
    send(b'third', 1)
s.shutdown(socket.SHUT_WR)
print(len(s.recv(1)))
`;

test('truncated or too many messages fail and close every fd received so far', async (t) => {
  if (!requireRoot(t)) return;
  if (spawnSync('python3', ['-c', 'pass']).status !== 0) {
    if (process.env.CI === 'true') throw new Error('python3 missing');
    t.skip('python3 missing');
    return;
  }
  const cases: Array<[string, RegExp, number | undefined]> = [
    ['fds', /message 1: fds truncated \(MSG_CTRUNC/, undefined],
    ['data', /message 1: data truncated \(MSG_TRUNC: more than 65536 bytes/, undefined],
    ['count', /more than maxMessages \(2\) messages/, 2],
  ];
  const before = openFdCount();
  for (const [mode, message, maxMessages] of cases) {
    const path = sockPath();
    const appeared = fileAppears(path);
    const received = receiveFds(path, { timeoutMs: 5000, ...(maxMessages ? { maxMessages } : {}) });
    const rejected = assert.rejects(received, (e: unknown) => {
      assert.ok(e instanceof SyscallError, String(e));
      assert.equal(e.syscall, 'recvmsg(2)');
      assert.equal(e.errnoName, mode === 'count' ? 'ENOBUFS' : 'EMSGSIZE');
      assert.match(e.message, message);
      return true;
    });
    await appeared;
    const py = spawnSync('python3', ['-c', RAW_SENDER, path, mode], { encoding: 'utf8', timeout: 10_000 });
    assert.equal(py.status, 0, `${mode}: ${py.stderr}`);
    assert.equal(py.stdout.trim(), '0', `${mode}: no acknowledgement for a refused batch`);
    await rejected;
    assert.equal(existsSync(path), false, `${mode}: socket file removed`);
    assert.equal(openFdCount(), before, `${mode}: every received fd closed`);
  }
});

test('no fd leak across handovers, timeouts and refusals', async (t) => {
  if (!requireRoot(t)) return;
  const p = join(DIR, 'leak-file');
  writeFileSync(p, 'x');
  const fds = [openSync(p, 'r'), openSync(p, 'r'), openSync(p, 'r')];
  try {
    const round = async (): Promise<void> => {
      const path = sockPath();
      const msgs: FdMessage[] = [
        { data: Buffer.from('a'), fds },
        { data: Buffer.from('b'), fds: [fds[0]!] },
      ];
      const [got] = await Promise.all([receiveFds(path, { timeoutMs: 5000 }), sendFds(path, msgs, { timeoutMs: 5000 })]);
      assert.equal(got.length, 2);
      closeReceived(got);
      await assert.rejects(receiveFds(sockPath(), { timeoutMs: 20 }), SyscallError);
      // A sender with nobody listening gives up after its timeout.
      await assert.rejects(sendFds(sockPath(), msgs, { timeoutMs: 50 }), (e: unknown) => {
        assert.ok(e instanceof SyscallError);
        assert.equal(e.syscall, 'connect(2)');
        assert.equal(e.errnoName, 'ETIMEDOUT');
        assert.match(e.message, /last error ENOENT/);
        return true;
      });
    };
    await round(); // warm-up: lazily created process fds (libuv pool, watchers) are not leaks
    const before = openFdCount();
    for (let i = 0; i < 20; i++) await round();
    assert.equal(openFdCount(), before);
  } finally {
    fds.forEach((f) => closeSync(f));
  }
});
