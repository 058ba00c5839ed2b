// SPDX-License-Identifier: Apache-2.0
// The child process of test/native-hostile.test.ts: runs hostile calls against the native addon so
// that a crash (SIGSEGV, abort) kills this process, not the test runner. Protocol on stdout, one
// line per event, written synchronously so it survives a crash: `start <case>` before each case,
// `done <json>` after it ({ name, ok, detail }). Exit 0 when every case ran; a property failure
// exits 1 with the counterexample on stderr.
//
//   node native-hostile-child.js <group> <pinDir> <netnsPath>
import { closeSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import fc from 'fast-check';

import { ErrorCodes, SyscallError, WeftError } from '../../agent/errors.js';
import { encode, i64, ipv4, ipv6, struct, u16, u32, u64, u8, bytes, cstring, array, decode } from '../../native/codec.js';
import {
  BpfLink,
  BpfMap,
  BpfObject,
  BpfProgram,
  RingBufferConsumer,
  clearTransparentRouting,
  connectInNetns,
  listRoutingRules,
  listenInNetns,
  netnsCookie,
  receiveFds,
  sendFds,
  setupTransparentRouting,
  socketCookie,
  socketsInNetns,
  tcpQueuedBytes,
} from '../../native/index.js';
import { fixture } from './privileged.js';

const [group = 'fixed', pinDir = '/nonexistent', netnsPath = '/proc/self/ns/net'] = process.argv.slice(2);
const RUNS = Number(process.env.WEFT_PROPERTY_RUNS ?? 300);

function emit(line: string): void {
  writeSync(1, `${line}\n`);
}

/** What a hostile call may end in: a usage error, a failed syscall (with its errno) or a TypeError. */
type Outcome = { threw: false; value: unknown } | { threw: true; err: unknown };

function call(fn: () => unknown): Outcome {
  try {
    return { threw: false, value: fn() };
  } catch (err) {
    return { threw: true, err };
  }
}

const isUsage = (e: unknown): boolean => e instanceof WeftError && e.code === ErrorCodes.NATIVE_USAGE;
const isSyscall = (e: unknown): boolean => e instanceof SyscallError && e.code === ErrorCodes.SYSCALL && e.errno > 0 && /^E[A-Z0-9_]+$/.test(e.errnoName) && e.syscall.length > 0;
const isTypeError = (e: unknown): boolean => e instanceof TypeError;
/** Any of the typed errors: the contract of every native call given garbage. */
const isTyped = (e: unknown): boolean => isUsage(e) || isSyscall(e) || isTypeError(e) || (e instanceof WeftError && e.code === ErrorCodes.BPF);

function describeErr(e: unknown): string {
  if (e instanceof SyscallError) return `SyscallError ${e.syscall} ${e.errnoName}: ${e.message.split('\n')[0]}`;
  if (e instanceof WeftError) return `WeftError ${e.code}: ${e.message.split('\n')[0]}`;
  if (e instanceof Error) return `${e.constructor.name}: ${e.message}`;
  return `non-error ${String(e)}`;
}

// ---- fixed cases ----------------------------------------------------------------------------------------

type Expect = { usage: RegExp } | { bpf: RegExp } | { syscall: RegExp } | { typeError: RegExp } | { returns: (v: unknown) => boolean } | { typed: true };

function check(o: Outcome, e: Expect): string | undefined {
  if ('returns' in e) return o.threw ? `threw ${describeErr(o.err)}` : e.returns(o.value) ? undefined : `returned ${String(o.value)}`;
  if (!o.threw) return `returned ${typeof o.value === 'bigint' ? `${o.value}n` : String(o.value)} instead of throwing`;
  const err = o.err;
  if ('usage' in e) return isUsage(err) && e.usage.test((err as Error).message) ? undefined : `got ${describeErr(err)}, expected usage ${e.usage}`;
  if ('bpf' in e) return err instanceof WeftError && err.code === ErrorCodes.BPF && e.bpf.test(err.message) ? undefined : `got ${describeErr(err)}, expected WEFT_ERR_BPF ${e.bpf}`;
  if ('syscall' in e) return isSyscall(err) && e.syscall.test((err as SyscallError).errnoName) ? undefined : `got ${describeErr(err)}, expected syscall ${e.syscall}`;
  if ('typeError' in e) return isTypeError(err) && e.typeError.test((err as Error).message) ? undefined : `got ${describeErr(err)}, expected TypeError ${e.typeError}`;
  return isTyped(err) ? undefined : `got ${describeErr(err)}`;
}

function runCases(cases: Array<[string, () => unknown, Expect]>): void {
  for (const [name, fn, expect] of cases) {
    emit(`start ${name}`);
    const detail = check(call(fn), expect);
    emit(`done ${JSON.stringify({ name, ok: detail === undefined, detail })}`);
  }
}

const getter = (proto: object, name: string): ((this: unknown) => unknown) => Object.getOwnPropertyDescriptor(proto, name)!.get! as (this: unknown) => unknown;

function fixedCases(): void {
  const obj = BpfObject.open(fixture('native_maps'));
  obj.load();
  const kv = obj.map('kv_hash'); // key 16, value 16
  const arr = obj.map('kv_array'); // key 4, value 8
  const events = obj.map('events'); // ringbuf
  const percpu = obj.map('events_lost');
  const prog = obj.program('produce');
  const pin = join(pinDir, 'kv_array');
  arr.pin(pin);
  const owned = BpfMap.open(pin);

  const closedObj = BpfObject.open(fixture('native_maps'));
  closedObj.load();
  const orphan = closedObj.map('kv_hash');
  const orphanProg = closedObj.program('produce');
  closedObj.close();
  const closedMap = BpfMap.open(pin);
  closedMap.close();

  const usage = (re: RegExp): Expect => ({ usage: re });
  const k4 = Buffer.alloc(4);
  const v8 = Buffer.alloc(8);
  const cases: Array<[string, () => unknown, Expect]> = [
    // keys and values of the wrong length or type
    ['lookup: key too short', () => kv.lookup(Buffer.alloc(15)), usage(/key is 15 bytes, expected 16/)],
    ['lookup: key too long', () => kv.lookup(Buffer.alloc(17)), usage(/key is 17 bytes, expected 16/)],
    ['lookup: empty key on a hash', () => kv.lookup(Buffer.alloc(0)), usage(/key is 0 bytes/)],
    ['lookup: no key', () => (kv.lookup as (...a: unknown[]) => unknown)(), usage(/key must be a Buffer/)],
    ['lookup: number key', () => kv.lookup(5 as unknown as Buffer), usage(/key must be a Buffer/)],
    ['lookup: BigInt key', () => kv.lookup(5n as unknown as Buffer), usage(/key must be a Buffer/)],
    ['lookup: string key', () => kv.lookup('0123456789abcdef' as unknown as Buffer), usage(/key must be a Buffer/)],
    ['lookup: object key', () => kv.lookup({ length: 16 } as unknown as Buffer), usage(/key must be a Buffer/)],
    ['lookup: array key', () => kv.lookup(new Array(16).fill(0) as unknown as Buffer), usage(/key must be a Buffer/)],
    ['lookup: Float64Array key', () => kv.lookup(new Float64Array(2) as unknown as Buffer), usage(/key must be a Buffer/)],
    ['lookup: DataView key', () => kv.lookup(new DataView(new ArrayBuffer(16)) as unknown as Buffer), usage(/key must be a Buffer/)],
    ['lookup: Uint8Array key is bytes', () => kv.lookup(new Uint8Array(16) as unknown as Buffer), { returns: (v) => v === undefined }],
    ['lookup: subarray key at an offset', () => arr.lookup(Buffer.from([9, 9, 1, 0, 0, 0]).subarray(2)), { returns: (v) => Buffer.isBuffer(v) && v.length === 8 }],
    ['lookup: detached buffer key', () => {
      const b = new Uint8Array(new ArrayBuffer(4));
      structuredClone(b.buffer, { transfer: [b.buffer] });
      return arr.lookup(b as unknown as Buffer);
    }, usage(/key is 0 bytes, expected 4/)],
    ['lookup: array index out of range', () => arr.lookup(Buffer.from([255, 255, 255, 255])), { returns: (v) => v === undefined }],
    ['update: value too short', () => arr.update(k4, Buffer.alloc(7)), usage(/value is 7 bytes, expected 8/)],
    ['update: per-CPU value of one CPU', () => percpu.update(k4, Buffer.alloc(8)), usage(/value is 8 bytes, expected \d+/)],
    ['update: undefined value', () => arr.update(k4, undefined as unknown as Buffer), usage(/value must be a Buffer/)],
    ['update: flags not a string', () => arr.update(k4, v8, 1 as unknown as 'any'), usage(/flags must be a string/)],
    ['update: unknown flags', () => arr.update(k4, v8, 'sometimes' as 'any'), usage(/flags must be 'any', 'noexist' or 'exist'/)],
    ['update: noexist on an array', () => arr.update(k4, v8, 'noexist'), { syscall: /^EEXIST$/ }],
    ['update: exist on a missing hash key', () => kv.update(Buffer.alloc(16, 7), Buffer.alloc(16), 'exist'), { syscall: /^ENOENT$/ }],
    ['update: array index out of range', () => arr.update(Buffer.from([8, 0, 0, 0]), v8), { syscall: /^E2BIG$/ }],
    ['update: full hash', () => {
      for (let i = 0; i < 65; i++) kv.update(Buffer.from([i, ...new Array(15).fill(0)]), Buffer.alloc(16), 'noexist');
    }, { syscall: /^E2BIG$/ }],
    ['delete: missing key', () => kv.delete(Buffer.alloc(16, 0xee)), { returns: (v) => v === false }],
    ['delete: array element', () => arr.delete(k4), { syscall: /^EINVAL$/ }],
    ['updateSocket: NaN', () => arr.updateSocket(k4, NaN), usage(/socketFd must be an integer/)],
    ['updateSocket: negative', () => arr.updateSocket(k4, -1), usage(/socketFd must be an integer/)],
    ['updateSocket: 2^32 + 1 is not fd 1', () => arr.updateSocket(k4, 2 ** 32 + 1), usage(/socketFd must be an integer/)],
    ['updateSocket: fraction', () => arr.updateSocket(k4, 1.5), usage(/socketFd must be an integer/)],
    ['updateSocket: BigInt', () => arr.updateSocket(k4, 3n as unknown as number), usage(/socketFd must be an integer/)],
    ['updateSocket: value size 16 cannot hold an fd', () => kv.updateSocket(Buffer.alloc(16), 1), usage(/cannot hold a socket fd/)],
    // ring buffers have no keys: the kernel's ENOTSUPP, named
    ['ringbuf lookup', () => events.lookup(Buffer.alloc(0)), { syscall: /^ENOTSUPP$/ }],
    ['ringbuf update', () => events.update(Buffer.alloc(0), Buffer.alloc(0)), { syscall: /^ENOTSUPP$/ }],
    ['ringbuf keys', () => events.keys(), { syscall: /^ENOTSUPP$/ }],
    ['ringbuf entries', () => events.entries(), { syscall: /^ENOTSUPP$/ }],
    ['ringbuf delete', () => events.delete(Buffer.alloc(0)), { syscall: /^ENOTSUPP$/ }],
    // closed handles
    ['close twice', () => {
      const m = BpfMap.open(pin);
      m.close();
      m.close();
    }, { returns: () => true }],
    ['lookup after close', () => closedMap.lookup(k4), usage(/used after close\(\)/)],
    ['update after close', () => closedMap.update(k4, v8), usage(/used after close\(\)/)],
    ['keys after close', () => closedMap.keys(), usage(/used after close\(\)/)],
    ['fd after close', () => closedMap.fd, usage(/used after close\(\)/)],
    ['keySize after close', () => closedMap.keySize, usage(/used after close\(\)/)],
    ['pin after close', () => closedMap.pin(join(pinDir, 'x')), usage(/used after close\(\)/)],
    ['map of a closed object', () => orphan.lookup(Buffer.alloc(16)), usage(/after its BpfObject was closed/)],
    ['program of a closed object', () => orphanProg.testRun({}), usage(/after its BpfObject was closed/)],
    ['program name of a closed object', () => orphanProg.name, { returns: (v) => v === 'produce' }],
    ['closed object: load', () => closedObj.load(), usage(/used after close\(\)/)],
    ['closed object: mapNames', () => closedObj.mapNames, usage(/used after close\(\)/)],
    ['closed object: close again', () => closedObj.close(), { returns: () => true }],
    // wrong receivers: methods and getters called on another class's instance
    ['map method on an object', () => BpfMap.prototype.lookup.call(obj, k4), { typeError: /Illegal invocation/ }],
    ['map getter on an object', () => getter(BpfMap.prototype, 'keySize').call(obj), { typeError: /Illegal invocation/ }],
    ['map getter on a program', () => getter(BpfMap.prototype, 'fd').call(prog), { typeError: /Illegal invocation/ }],
    ['object getter on a map', () => getter(BpfObject.prototype, 'mapNames').call(kv), { typeError: /Illegal invocation/ }],
    ['program getter on a map', () => getter(BpfProgram.prototype, 'sectionName').call(kv), { typeError: /Illegal invocation/ }],
    ['link getter on a map', () => getter(BpfLink.prototype, 'fd').call(kv), { typeError: /Illegal invocation/ }],
    // RingBufferConsumer is a TypeScript class over the native one (#raw): its own TypeError.
    ['consumer getter on a map', () => getter(RingBufferConsumer.prototype, 'delivered').call(kv), { typeError: /private member/ }],
    ['map getter on a plain object', () => getter(BpfMap.prototype, 'name').call({}), { typeError: /Illegal invocation/ }],
    ['map getter on undefined', () => getter(BpfMap.prototype, 'name').call(undefined), { typeError: /Illegal invocation/ }],
    ['map getter on a disguised object', () => getter(BpfMap.prototype, 'valueSize').call(Object.setPrototypeOf(BpfObject.open(fixture('native_maps')), BpfMap.prototype)), { typeError: /Illegal invocation/ }],
    ['getter through a derived object', () => getter(BpfMap.prototype, 'keySize').call(Object.create(kv)), { typeError: /Illegal invocation/ }],
    // wrong handle types as arguments, including one disguised with another prototype
    ['consumer on a program disguised as a map', () => new RingBufferConsumer(Object.setPrototypeOf(obj.program('produce'), BpfMap.prototype) as BpfMap, () => {}), usage(/expected a BpfMap/)],
    ['consumer on a plain object', () => new RingBufferConsumer({} as BpfMap, () => {}), usage(/expected a BpfMap/)],
    ['consumer on a hash map', () => new RingBufferConsumer(kv, () => {}), usage(/is not a ringbuf/)],
    ['consumer: callback not a function', () => new RingBufferConsumer(events, 'x' as unknown as () => void), usage(/onBatch must be a function/)],
    ['consumer: options null', () => new RingBufferConsumer(events, () => {}, null as unknown as object), usage(/options must be an object/)],
    ['consumer: maxBatch -1', () => new RingBufferConsumer(events, () => {}, { maxBatch: -1 }), usage(/maxBatch must be an integer/)],
    ['consumer: maxBatch as a string', () => new RingBufferConsumer(events, () => {}, { maxBatch: '10' as unknown as number }), usage(/maxBatch must be an integer/)],
    ['consumer: pollMs 2^32 + 5', () => new RingBufferConsumer(events, () => {}, { pollMs: 2 ** 32 + 5 }), usage(/pollMs must be an integer/)],
    ['consumer on a closed map', () => new RingBufferConsumer(closedMap, () => {}), usage(/expected a BpfMap|is not a ringbuf|used after close/)],
    ['consumer: close twice', () => {
      const c = new RingBufferConsumer(events, () => {}, { pollMs: 5 });
      c.close();
      c.close();
      return c.delivered;
    }, { returns: (v) => v === 0n }],
    ['sockmap attach with a disguised map', () => prog.attachSockmap(Object.setPrototypeOf(BpfObject.open(fixture('native_maps')), BpfMap.prototype) as BpfMap), usage(/expected a BpfMap/)],
    ['sockmap attach with no map', () => (prog.attachSockmap as (...a: unknown[]) => unknown)(), usage(/attachSockmap\(map\)/)],
    // numbers that used to wrap or be undefined behaviour in C
    ['attachTc: ifindex 2^32 + 1 is not lo', () => prog.attachTc(2 ** 32 + 1, 'ingress'), usage(/ifindex must be an integer/)],
    ['attachTc: ifindex NaN', () => prog.attachTc(NaN, 'ingress'), usage(/ifindex must be an integer/)],
    ['attachTc: ifindex 0', () => prog.attachTc(0, 'ingress'), usage(/ifindex must be an integer/)],
    ['testRun: repeat NaN', () => prog.testRun({ repeat: NaN }), usage(/repeat must be an integer/)],
    ['testRun: repeat 2^40', () => prog.testRun({ repeat: 2 ** 40 }), usage(/repeat must be an integer/)],
    ['testRun: options not an object', () => prog.testRun(5 as unknown as object), usage(/options must be an object/)],
    ['testRun: data as a string', () => prog.testRun({ data: 'x' as unknown as Buffer }), usage(/data must be a Buffer/)],
    ['testRun: empty data', () => prog.testRun({ data: Buffer.alloc(0) }), { syscall: /^EINVAL$/ }],
    ['setMaxEntries: NaN', () => BpfObject.open(fixture('native_maps')).setMaxEntries('kv_hash', NaN), usage(/maxEntries must be an integer/)],
    ['setMaxEntries: 2^32', () => BpfObject.open(fixture('native_maps')).setMaxEntries('kv_hash', 2 ** 32), usage(/maxEntries must be an integer/)],
    ['setMaxEntries: unknown map', () => BpfObject.open(fixture('native_maps')).setMaxEntries('nope', 1), { typed: true }],
    ['setGlobal: wrong size', () => BpfObject.open(fixture('native_maps')).setGlobal('event_tag', Buffer.alloc(3)), usage(/is 4 bytes, got 3/)],
    ['setGlobal: unknown', () => BpfObject.open(fixture('native_maps')).setGlobal('nope', Buffer.alloc(4)), { typed: true }],
    ['setGlobal: after load', () => obj.setGlobal('event_tag', Buffer.alloc(4)), usage(/after load\(\)/)],
    // strings: NUL bytes would cut a path short in C
    ['BpfMap.open: NUL in the path', () => BpfMap.open(`${pin}\0junk`), usage(/must not contain NUL bytes/)],
    ['BpfMap.open: NUL making another path', () => BpfMap.open(`${pinDir}\0/kv_array`), usage(/must not contain NUL bytes/)],
    ['pin: NUL in the path', () => arr.pin(`${join(pinDir, 'y')}\0`), usage(/must not contain NUL bytes/)],
    ['BpfObject.open: NUL in the path', () => BpfObject.open(`${fixture('native_maps')}\0.x`), usage(/must not contain NUL bytes/)],
    ['BpfObject.open: pinRoot with NUL', () => BpfObject.open(fixture('native_maps'), { pinRoot: `${pinDir}\0x` }), usage(/must not contain NUL bytes/)],
    ['BpfObject.open: options not an object', () => BpfObject.open(fixture('native_maps'), 'x' as unknown as object), usage(/options must be an object/)],
    ['BpfObject.open: a directory', () => BpfObject.open(pinDir), { syscall: /^E/ }],
    ['BpfObject.open: not an ELF file', () => BpfObject.open('/etc/hostname'), { syscall: /^E/ }],
    ['BpfMap.open: a very long path', () => BpfMap.open(`/${'x'.repeat(5000)}`), { syscall: /^ENAMETOOLONG$/ }],
    ['BpfLink.open: a map pin is no link', () => BpfLink.open(pin), { bpf: /is not a BPF link \(anon_inode:bpf-map\)/ }],
    ['map(): no name', () => (obj.map as (...a: unknown[]) => unknown)(), usage(/name must be a string/)],
    ['program(): symbol name', () => obj.program(Symbol('x') as unknown as string), usage(/name must be a string/)],
    // owned map (opened from a pin) behaves like the borrowed one
    ['owned map: wrong key length', () => owned.lookup(Buffer.alloc(3)), usage(/key is 3 bytes, expected 4/)],
    ['owned map: unpin a missing path', () => owned.unpin(join(pinDir, 'missing')), { syscall: /^ENOENT$/ }],
    // netns and socket helpers
    ['socketCookie: NaN is not fd 0', () => socketCookie(NaN), usage(/fd must be an integer/)],
    ['socketCookie: 2^32 + 1 is not fd 1', () => socketCookie(2 ** 32 + 1), usage(/fd must be an integer/)],
    ['socketCookie: negative fd', () => socketCookie(-1), usage(/fd must be an integer/)],
    ['socketCookie: BigInt fd', () => socketCookie(1n as unknown as number), usage(/fd must be/)],
    ['socketCookie: a map fd is no socket', () => socketCookie(arr.fd), { syscall: /^ENOTSOCK$/ }],
    ['socketCookie: a closed fd', () => socketCookie(0x7ffffff0), { syscall: /^EBADF$/ }],
    ['tcpQueuedBytes: negative fd', () => tcpQueuedBytes(-5), usage(/fd must be an integer/)],
    ['tcpQueuedBytes: a map fd is no socket', () => tcpQueuedBytes(arr.fd), { syscall: /^ENOTSOCK$/ }],
    ['netnsCookie: not a netns', () => netnsCookie('/etc/hostname'), { syscall: /^EINVAL$/ }],
    ['netnsCookie: missing', () => netnsCookie('/nonexistent/netns'), { syscall: /^ENOENT$/ }],
    ['netnsCookie: NUL', () => netnsCookie(`${netnsPath}\0x`), usage(/must not contain NUL bytes/)],
    ['listenInNetns: port 1e20', () => listenInNetns(netnsPath, { host: '127.0.0.1', port: 1e20 }), usage(/options.port must be an integer/)],
    ['listenInNetns: port NaN', () => listenInNetns(netnsPath, { host: '127.0.0.1', port: NaN }), usage(/options.port must be an integer/)],
    ['listenInNetns: port -1', () => listenInNetns(netnsPath, { host: '127.0.0.1', port: -1 }), usage(/options.port must be an integer/)],
    ['listenInNetns: backlog 1e20', () => listenInNetns(netnsPath, { host: '127.0.0.1', port: 0, backlog: 1e20 }), usage(/options.backlog must be an integer/)],
    ['listenInNetns: mark NaN', () => listenInNetns(netnsPath, { host: '127.0.0.1', port: 0, mark: NaN }), usage(/options.mark must be an integer/)],
    ['listenInNetns: mark 2^32', () => listenInNetns(netnsPath, { host: '127.0.0.1', port: 0, mark: 2 ** 32 }), usage(/options.mark must be an integer/)],
    ['listenInNetns: host not an address', () => listenInNetns(netnsPath, { host: 'localhost', port: 0 }), usage(/invalid address/)],
    ['listenInNetns: options missing', () => (listenInNetns as (...a: unknown[]) => unknown)(netnsPath), usage(/options must be an object/)],
    ['listenInNetns: transparent as a string', () => listenInNetns(netnsPath, { host: '127.0.0.1', port: 0, transparent: 'yes' as unknown as boolean }), usage(/transparent must be a boolean/)],
    ['socketsInNetns: count NaN', () => socketsInNetns(netnsPath, { family: 'ipv4', count: NaN }), usage(/count must be an integer/)],
    ['socketsInNetns: count 1025', () => socketsInNetns(netnsPath, { family: 'ipv4', count: 1025 }), usage(/count must be an integer/)],
    ['socketsInNetns: family', () => socketsInNetns(netnsPath, { family: 'ipx' as 'ipv4', count: 1 }), usage(/family/)],
    ['socketsInNetns: mark -1', () => socketsInNetns(netnsPath, { family: 'ipv6', count: 1, mark: -1 }), usage(/mark must be an integer/)],
    // fd handover: argument checks are synchronous TypeErrors naming the argument
    ['sendFds: DataView data', () => sendFds(join(pinDir, 'no.sock'), [{ data: new DataView(new ArrayBuffer(4)) as unknown as Buffer, fds: [] }], { timeoutMs: 10 }), { typeError: /messages\[0\]\.data must be a Buffer/ }],
    ['sendFds: Float64Array data', () => sendFds(join(pinDir, 'no.sock'), [{ data: new Float64Array(1) as unknown as Buffer, fds: [] }], { timeoutMs: 10 }), { typeError: /data must be a Buffer/ }],
    ['sendFds: fd 2^32 + 1', () => sendFds(join(pinDir, 'no.sock'), [{ data: Buffer.from('x'), fds: [2 ** 32 + 1] }], { timeoutMs: 10 }), { typeError: /fds\[0\] must be a non-negative integer fd/ }],
    ['receiveFds: NUL in the path', () => receiveFds(`${join(pinDir, 'r.sock')}\0x`, { timeoutMs: 10 }), { typeError: /must not contain NUL bytes/ }],
    ['receiveFds: timeout NaN', () => receiveFds(join(pinDir, 'r.sock'), { timeoutMs: NaN }), { typeError: /timeoutMs must be an integer/ }],
    // policy routing: argument errors are synchronous TypeErrors naming the field (nothing is queued)
    ['setupTransparentRouting: relative path', () => setupTransparentRouting('run/netns/x', { table: 100, rules: [{ priority: 100, fwmark: 1, table: 100 }] }), { typeError: /netnsPath must be an absolute path/ }],
    ['setupTransparentRouting: NUL in the path', () => setupTransparentRouting(`${netnsPath}\0x`, { table: 100, rules: [{ priority: 100, fwmark: 1, table: 100 }] }), { typeError: /must not contain NUL bytes/ }],
    ['setupTransparentRouting: table main', () => setupTransparentRouting(netnsPath, { table: 254, rules: [{ priority: 100, fwmark: 1, table: 100 }] }), { typeError: /options\.table must not be 253, 254 or 255/ }],
    ['setupTransparentRouting: table 2^32 + 100 is not 100', () => setupTransparentRouting(netnsPath, { table: 2 ** 32 + 100, rules: [{ priority: 100, fwmark: 1, table: 100 }] }), { typeError: /options\.table must be an integer/ }],
    ['setupTransparentRouting: priority NaN', () => setupTransparentRouting(netnsPath, { table: 100, rules: [{ priority: NaN, fwmark: 1, table: 100 }] }), { typeError: /options\.rules\[0\]\.priority must be an integer/ }],
    ['setupTransparentRouting: fwmark 0 would match everything', () => setupTransparentRouting(netnsPath, { table: 100, rules: [{ priority: 100, fwmark: 0, table: 100 }] }), { typeError: /options\.rules\[0\]\.fwmark must be an integer in 1\.\./ }],
    ['setupTransparentRouting: rules a string', () => setupTransparentRouting(netnsPath, { table: 100, rules: 'x' as unknown as [] }), { typeError: /options\.rules must be an array/ }],
    ['clearTransparentRouting: options missing', () => (clearTransparentRouting as (...a: unknown[]) => unknown)(netnsPath), { typeError: /options must be an object/ }],
    ['clearTransparentRouting: rule a number', () => clearTransparentRouting(netnsPath, { table: 100, rules: [5 as unknown as { priority: number; fwmark: number; table: number }] }), { typeError: /options\.rules\[0\] must be an object/ }],
    ['listRoutingRules: path a BigInt', () => listRoutingRules(1n as unknown as string, { table: 100, rules: [{ priority: 100, fwmark: 1, table: 100 }] }), { typeError: /netnsPath must be a string/ }],
    ['listRoutingRules: duplicate priority', () => listRoutingRules(netnsPath, { table: 100, rules: [{ priority: 7, fwmark: 1, table: 100 }, { priority: 7, fwmark: 2, table: 100 }] }), { typeError: /priority 7 appears twice/ }],
    // codecs: values of the wrong type or range name the type and the field
    ['codec u16: 65536', () => encode(u16, 65536), usage(/65536 is not a u16 \(an integer in 0\.\.65535\)/)],
    ['codec u8: -1', () => encode(u8, -1), usage(/-1 is not a u8/)],
    ['codec u32: NaN', () => encode(u32, NaN), usage(/NaN is not a u32/)],
    ['codec u32: a string', () => encode(u32, '5' as unknown as number), usage(/"5" is not a u32/)],
    ['codec u64: 2^64', () => encode(u64, 2n ** 64n), usage(/18446744073709551616n is not a u64/)],
    ['codec u64: negative', () => encode(u64, -1n), usage(/-1n is not a u64/)],
    ['codec u64: a number', () => encode(u64, 5 as unknown as bigint), usage(/5 is not a u64/)],
    ['codec i64: 2^63', () => encode(i64, 2n ** 63n), usage(/is not an i64/)],
    ['codec ipv4: a number', () => encode(ipv4, 167772161 as unknown as string), usage(/not an IPv4 address: 167772161/)],
    ['codec ipv6: undefined', () => encode(ipv6, undefined as unknown as string), usage(/not an IPv6 address/)],
    ['codec bytes: a string', () => encode(bytes(4), 'abcd' as unknown as Buffer), usage(/is not a Buffer/)],
    ['codec cstring: a number', () => encode(cstring(8), 5 as unknown as string), usage(/5 is not a string/)],
    ['codec array: not an array', () => encode(array(u8, 2), 'ab' as unknown as number[]), usage(/is not an array/)],
    ['codec array: a bad element', () => encode(array(u8, 2), [1, 300]), usage(/\[1\]: 300 is not a u8/)],
    ['codec struct: null', () => encode(struct({ a: u8 }), null as unknown as { a: number }), usage(/null is not a struct value/)],
    ['codec struct: field out of range', () => encode(struct({ port: u16, cookie: u64 }), { port: 70000, cookie: 1n }), usage(/struct field 'port': 70000 is not a u16/)],
    ['codec struct: nested', () => encode(struct({ inner: struct({ x: u32 }) }), { inner: { x: -3 } }), usage(/struct field 'inner': struct field 'x': -3 is not a u32/)],
    ['codec struct: field named constructor', () => encode(struct({ constructor: u8 }), {} as { constructor: number }), usage(/struct field 'constructor' is missing/)],
    ['codec decode: not a Buffer', () => decode(u32, new Uint16Array(2) as unknown as Buffer), usage(/is not a Buffer/)],
  ];
  runCases(cases);
  owned.close();
  arr.unpin(pin);
  obj.close();
}

// ---- properties: garbage arguments to every entry point ------------------------------------------------------

/** Any argument a caller could pass by mistake. */
function anyArg(): fc.Arbitrary<unknown> {
  return fc.oneof(
    fc.constantFrom(undefined, null, true, 0, -1, 1.5, NaN, Infinity, -0, 2 ** 31, 2 ** 32 + 1, 2 ** 53, Number.MAX_VALUE),
    fc.integer({ min: -5, max: 70000 }),
    fc.bigInt({ min: -(2n ** 70n), max: 2n ** 70n }),
    fc.string({ maxLength: 20 }),
    fc.constantFrom('any', 'noexist', 'exist', 'ingress', 'egress', 'ipv4', 'ipv6', '127.0.0.1', '::1', '\0', 'x\0y', '/'),
    fc.integer({ min: 0, max: 40 }).map((n) => Buffer.alloc(n, 0xab)),
    fc.integer({ min: 0, max: 40 }).map((n) => new Uint8Array(n)),
    fc.constantFrom(new Float64Array(2), new DataView(new ArrayBuffer(8)), new Uint16Array(8), new ArrayBuffer(16), new SharedArrayBuffer(4)),
    fc.constantFrom(Symbol('s'), () => 1, [], [1, 2], {}, { length: 16 }, new Map(), new Date(0), /x/, Object.create(null)),
    fc.record({ host: fc.constantFrom('127.0.0.1', '::1', '0.0.0.0', 'x', ''), port: fc.oneof(fc.integer({ min: -1, max: 70000 }), fc.constant(NaN)), mark: fc.oneof(fc.integer(), fc.double()), backlog: fc.integer(), family: fc.constantFrom('ipv4', 'ipv6', 'x'), count: fc.integer({ min: -1, max: 5 }), timeoutMs: fc.integer({ min: -1, max: 50 }), data: fc.constantFrom(Buffer.alloc(64), 'x', undefined), repeat: fc.integer({ min: -1, max: 10 }), maxBatch: fc.integer({ min: -1, max: 10 }), pollMs: fc.integer({ min: -1, max: 10 }), pinRoot: fc.constantFrom(pinDir, 1) }, { requiredKeys: [] }),
  );
}

function fuzz(): void {
  const obj = BpfObject.open(fixture('native_maps'));
  obj.load();
  const maps = ['kv_hash', 'kv_array', 'kv_lru', 'events', 'events_lost'].map((n) => obj.map(n));
  const prog = obj.program('produce');
  const closedObj = BpfObject.open(fixture('native_maps'));
  const unloadedMap = closedObj.map('kv_hash');
  const unloadedProg = closedObj.program('produce');
  const dead = BpfObject.open(fixture('native_maps'));
  dead.load();
  const deadMap = dead.map('kv_array');
  dead.close();
  const handles: unknown[] = [obj, ...maps, prog, closedObj, unloadedMap, unloadedProg, dead, deadMap, {}, null, Object.create(BpfMap.prototype)];
  const MAP_METHODS = ['lookup', 'update', 'updateSocket', 'delete', 'keys', 'entries', 'pin', 'unpin'] as const;
  // Not attachTc: it creates a clsact qdisc on the interface before the attach fails, and ifindex
  // values are host interfaces; its argument checks are fixed cases.
  const PROG_METHODS = ['attachCgroup', 'attachNetns', 'attachSockmap', 'testRun', 'pin', 'unpin'] as const;
  const OBJ_METHODS = ['setGlobal', 'setMaxEntries', 'program', 'map'] as const;
  /** A path argument: mostly garbage, sometimes inside the run's own pin directory (cleaned afterwards). */
  const pathArg = fc.oneof(anyArg(), fc.string({ maxLength: 8 }).map((s) => join(pinDir, `f-${s.replaceAll('/', '_')}`)));
  const argsOf = fc.array(fc.oneof(anyArg(), pathArg, fc.constantFrom(...handles)), { maxLength: 4 });

  const target = fc.oneof(
    fc.tuple(fc.constantFrom(...maps, unloadedMap, deadMap), fc.constantFrom(...MAP_METHODS)),
    fc.tuple(fc.constantFrom(prog, unloadedProg), fc.constantFrom(...PROG_METHODS)),
    fc.tuple(fc.constantFrom(obj, closedObj, dead), fc.constantFrom(...OBJ_METHODS)),
  );
  const opened: Array<{ close(): void }> = [];
  const closeIfHandle = (v: unknown): void => {
    if (v && typeof v === 'object' && 'close' in v && typeof (v as { close: unknown }).close === 'function') opened.push(v as { close(): void });
  };
  fc.assert(
    fc.property(target, argsOf, ([self, method], rawArgs) => {
      const fn = (self as unknown as Record<string, (...a: unknown[]) => unknown>)[method]!;
      // pin and unpin unlink(2) their path: every string given to them names a file of the run's own
      // pin directory (NUL bytes kept, slashes not), never one elsewhere (the child runs in an empty
      // scratch directory too).
      const args = method === 'pin' || method === 'unpin' ? rawArgs.map((a) => (typeof a === 'string' ? join(pinDir, `f-${a.replaceAll('/', '_')}`) : a)) : rawArgs;
      emit(`start ${method}(${args.map((a) => (typeof a === 'bigint' ? `${a}n` : typeof a === 'symbol' ? 'symbol' : typeof a)).join(', ')})`);
      const o = call(() => fn.apply(self, args));
      if (o.threw && !isTyped(o.err)) throw new Error(`${method} threw an untyped error: ${describeErr(o.err)}`);
      if (!o.threw) closeIfHandle(o.value);
    }),
    { numRuns: RUNS * 2 },
  );
  // Getters on every receiver: the right class answers (or says closed), any other is an Illegal invocation.
  const GETTERS: Array<[object, string]> = [
    [BpfMap.prototype, 'name'],
    [BpfMap.prototype, 'type'],
    [BpfMap.prototype, 'keySize'],
    [BpfMap.prototype, 'valueSize'],
    [BpfMap.prototype, 'maxEntries'],
    [BpfMap.prototype, 'fd'],
    [BpfObject.prototype, 'programNames'],
    [BpfObject.prototype, 'mapNames'],
    [BpfProgram.prototype, 'name'],
    [BpfProgram.prototype, 'fd'],
    [BpfProgram.prototype, 'sectionName'],
    [BpfLink.prototype, 'fd'],
    [RingBufferConsumer.prototype, 'delivered'],
    [RingBufferConsumer.prototype, 'dropped'],
  ];
  fc.assert(
    fc.property(fc.constantFrom(...GETTERS), fc.constantFrom(...handles, undefined, 5, 'x', Object.setPrototypeOf({}, BpfMap.prototype)), ([proto, name], receiver) => {
      emit(`start getter ${name}`);
      const o = call(() => getter(proto, name).call(receiver));
      if (o.threw && !isTyped(o.err)) throw new Error(`getter ${name} threw an untyped error: ${describeErr(o.err)}`);
    }),
    { numRuns: RUNS },
  );
  // The module functions and the consumer constructor.
  const FUNCS: Array<[string, (...a: unknown[]) => unknown]> = [
    ['socketCookie', socketCookie as (...a: unknown[]) => unknown],
    ['tcpQueuedBytes', tcpQueuedBytes as (...a: unknown[]) => unknown],
    ['netnsCookie', netnsCookie as (...a: unknown[]) => unknown],
    ['listenInNetns', listenInNetns as (...a: unknown[]) => unknown],
    ['socketsInNetns', socketsInNetns as (...a: unknown[]) => unknown],
    ['BpfMap.open', BpfMap.open as (...a: unknown[]) => unknown],
    ['BpfLink.open', BpfLink.open as (...a: unknown[]) => unknown],
    ['BpfObject.open', BpfObject.open as (...a: unknown[]) => unknown],
    ['RingBufferConsumer', (...a: unknown[]) => new RingBufferConsumer(...(a as ConstructorParameters<typeof RingBufferConsumer>))],
  ];
  const fdArg = fc.oneof(anyArg(), fc.constantFrom(0, 1, 2, maps[0]!.fd, prog.fd));
  const nsArg = fc.oneof(fc.constant(netnsPath), anyArg());
  fc.assert(
    fc.property(fc.constantFrom(...FUNCS), fc.oneof(nsArg, fdArg, fc.constantFrom(...maps)), fc.oneof(anyArg(), fc.constant(() => {})), anyArg(), ([name, fn], a, b, c) => {
      emit(`start ${name}`);
      const o = call(() => fn(a, b, c));
      if (o.threw && !isTyped(o.err)) throw new Error(`${name} threw an untyped error: ${describeErr(o.err)}`);
      if (o.threw) return;
      const v = o.value;
      // Sockets and listeners made in the scratch netns: closed again.
      if (typeof v === 'number' && name === 'listenInNetns') closeFd(v);
      if (Array.isArray(v)) for (const fd of v) if (typeof fd === 'number') closeFd(fd);
      if (v instanceof RingBufferConsumer) v.close();
      else closeIfHandle(v);
    }),
    { numRuns: RUNS },
  );
  for (const h of opened) call(() => h.close());
  obj.close();
  closedObj.close();
  emit(`done ${JSON.stringify({ name: 'fuzz', ok: true })}`);
}

function closeFd(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    /* already closed */
  }
}

/** connectInNetns is asynchronous: garbage options reject (or resolve to an fd), never crash. */
async function fuzzConnect(): Promise<void> {
  const samples = fc.sample(fc.tuple(fc.oneof(fc.constant(netnsPath), anyArg()), anyArg()), { numRuns: Math.ceil(RUNS / 3) });
  for (const [path, opts] of samples) {
    emit('start connectInNetns');
    let p: Promise<number>;
    try {
      p = connectInNetns(path as string, opts as { host: string; port: number });
    } catch (err) {
      if (!isTyped(err)) throw new Error(`connectInNetns threw an untyped error: ${describeErr(err)}`);
      continue;
    }
    try {
      closeSync(await p);
    } catch (err) {
      if (!isTyped(err)) throw new Error(`connectInNetns rejected with an untyped error: ${describeErr(err)}`);
    }
  }
  emit(`done ${JSON.stringify({ name: 'connect', ok: true })}`);
}

/**
 * The policy-routing calls are asynchronous: garbage throws a typed error at once, anything that
 * passes the checks settles (resolves, or rejects with a SyscallError), never crashes. They change
 * routing only inside the run's scratch netns: without one, a path that names no netns stands in.
 */
async function fuzzRouting(): Promise<void> {
  const scratchNs = netnsPath.startsWith('/run/netns/') ? netnsPath : '/nonexistent/netns';
  const ruleArg = fc.oneof(
    fc.record({ priority: fc.oneof(fc.integer({ min: -1, max: 33000 }), anyArg()), fwmark: fc.oneof(fc.integer({ min: -1, max: 2 ** 32 }), anyArg()), table: fc.oneof(fc.integer({ min: 0, max: 300 }), anyArg()) }, { requiredKeys: [] }),
    anyArg(),
  );
  // Mostly well-formed too, so that calls get past the checks and run in the netns.
  const wellFormed = fc.record({
    table: fc.constantFrom(1, 100, 252, 253, 256, 2 ** 32 - 1),
    rules: fc.array(fc.record({ priority: fc.integer({ min: 0, max: 32767 }), fwmark: fc.oneof(fc.integer({ min: 0, max: 16 }), fc.constant(2 ** 32 - 1)), table: fc.constantFrom(1, 100, 254, 255, 2 ** 32 - 1) }), { maxLength: 9 }),
  });
  const optsArg = fc.oneof(wellFormed, fc.record({ table: fc.oneof(fc.integer({ min: -1, max: 300 }), anyArg()), rules: fc.oneof(fc.array(ruleArg, { maxLength: 10 }), anyArg()) }, { requiredKeys: [] }), anyArg());
  const pathArg = fc.oneof(fc.constant(scratchNs), fc.constant('/nonexistent/netns'), fc.constant('/etc/hostname'), anyArg());
  const FNS: Array<[string, (...a: unknown[]) => Promise<unknown>]> = [
    ['setupTransparentRouting', setupTransparentRouting as (...a: unknown[]) => Promise<unknown>],
    ['clearTransparentRouting', clearTransparentRouting as (...a: unknown[]) => Promise<unknown>],
    ['listRoutingRules', listRoutingRules as (...a: unknown[]) => Promise<unknown>],
  ];
  const samples = fc.sample(fc.tuple(fc.constantFrom(...FNS), pathArg, optsArg, anyArg()), { numRuns: RUNS });
  let settled = 0;
  for (const [[name, fn], path, opts, extra] of samples) {
    emit(`start ${name}`);
    let p: Promise<unknown>;
    try {
      p = fn(path, opts, extra);
    } catch (err) {
      if (!isTyped(err)) throw new Error(`${name} threw an untyped error: ${describeErr(err)}`);
      continue;
    }
    try {
      await p;
      settled++;
    } catch (err) {
      if (!isSyscall(err)) throw new Error(`${name} rejected with something other than a SyscallError: ${describeErr(err)}`);
    }
  }
  emit(`done ${JSON.stringify({ name: 'routing', ok: true, detail: `${settled} calls resolved` })}`);
}

/** Handles left open at exit and a worker terminated while it holds handles: teardown must not crash. */
async function teardown(): Promise<void> {
  emit('start worker terminated mid-use');
  const worker = new Worker(new URL(import.meta.url), { argv: ['worker-body', pinDir, netnsPath] });
  await new Promise<void>((resolve, reject) => {
    worker.once('message', () => resolve());
    worker.once('error', reject);
  });
  await worker.terminate();
  emit(`done ${JSON.stringify({ name: 'worker terminated mid-use', ok: true })}`);
  emit('start exit with open handles');
  const obj = BpfObject.open(fixture('native_maps'));
  obj.load();
  const c = new RingBufferConsumer(obj.map('events'), () => {}, { pollMs: 1 });
  obj.program('produce').testRun({ repeat: 100 });
  void c;
  emit(`done ${JSON.stringify({ name: 'exit with open handles', ok: true })}`);
  // No close(): the env cleanup hooks release everything while the consumer thread still runs.
  process.exit(0);
}

async function workerBody(): Promise<void> {
  const { parentPort } = await import('node:worker_threads');
  const obj = BpfObject.open(fixture('native_maps'));
  obj.load();
  const events = obj.map('events');
  new RingBufferConsumer(events, () => {}, { maxBatch: 1, pollMs: 1 });
  const prog = obj.program('produce');
  parentPort!.postMessage('ready');
  // Keep producing until terminated: records are in flight when the env goes away.
  for (;;) {
    prog.testRun({ repeat: 50 });
    await new Promise((r) => setImmediate(r));
  }
}

switch (group) {
  case 'fixed':
    fixedCases();
    break;
  case 'fuzz':
    fuzz();
    await fuzzConnect();
    await fuzzRouting();
    break;
  case 'teardown':
    await teardown();
    break;
  case 'worker-body':
    await workerBody();
    break;
  default:
    throw new Error(`unknown group ${group}`);
}
