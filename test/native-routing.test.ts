// SPDX-License-Identifier: Apache-2.0
// The pod's reply routing over rtnetlink (native/src/route.cc through TransparentRouting), checked
// with `ip` from outside: setup adds exactly the two mark rules, the local route of table 100 and
// both sysctls, twice changes nothing, clear removes everything and may run again, the host netns
// is untouched; arguments are refused with typed errors, and kernel refusals name the rtnetlink
// operation. Then what the rules are for: a transparent socket marked APP_MARK, bound to an address
// the netns does not have, gets its SYN-ACK back from a listener in that netns only while the
// routing is in place.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';

import { APP_MARK, PROXY_MARK } from '../agent/datapath/layout.js';
import { ErrorCodes, SyscallError } from '../agent/errors.js';
import { ROUTE_TABLE, TRANSPARENT_ROUTING, TransparentRouting } from '../agent/ztunnel/inpod-routing.js';
import {
  clearTransparentRouting,
  connectInNetns,
  listRoutingRules,
  listenInNetns,
  setupTransparentRouting,
  type TransparentRoutingOptions,
} from '../native/index.js';
import { RUN_PREFIX, createNetns, deleteNetns, requirePrivileges, sh } from './helpers/privileged.js';

const NETNS = `${RUN_PREFIX}-rt`;
const FOREIGN_NETNS = `${RUN_PREFIX}-rtf`;
const APP_NETNS = `${RUN_PREFIX}-rtapp`;
const created: string[] = [];
let scratchDir: string | undefined;

after(() => {
  for (const ns of created) deleteNetns(ns);
  if (scratchDir) rmSync(scratchDir, { recursive: true, force: true });
});

function netns(name: string): string {
  created.push(name);
  return createNetns(name);
}

interface IpRule {
  priority: number;
  fwmark?: string;
  fwmask?: string;
  table?: string;
}

function rules(ns?: string): IpRule[] {
  const out = sh('ip', [...(ns ? ['-n', ns] : []), '-j', 'rule', 'show']).trim();
  return (JSON.parse(out || '[]') as IpRule[]).map((r) => ({ priority: r.priority, ...(r.fwmark ? { fwmark: r.fwmark } : {}), ...(r.fwmask ? { fwmask: r.fwmask } : {}), ...(r.table ? { table: r.table } : {}) }));
}

function routes(ns: string, table: number): Array<Record<string, unknown>> {
  let out: string;
  try {
    out = sh('ip', ['-n', ns, '-j', 'route', 'show', 'table', String(table)]).trim();
  } catch (err) {
    // A table no route was ever added to does not exist (the kernel keeps one once made).
    if (/FIB table does not exist/.test((err as { stderr?: string }).stderr ?? '')) return [];
    throw err;
  }
  return JSON.parse(out || '[]') as Array<Record<string, unknown>>;
}

const SYSCTLS = ['net.ipv4.conf.all.accept_local', 'net.ipv4.tcp_fwmark_accept'] as const;

function sysctls(ns?: string): string[] {
  const argv = ['sysctl', '-n', ...SYSCTLS];
  return (ns ? sh('ip', ['netns', 'exec', ns, ...argv]) : sh(argv[0]!, argv.slice(1))).trim().split('\n');
}

const hex = (n: number): string => `0x${n.toString(16)}`;

test('setup adds exactly the two rules, the local route and the sysctls; again changes nothing; clear removes it all, twice; the host is untouched', async (t) => {
  if (!requirePrivileges(t)) return;
  const hostRules = sh('ip', ['-j', 'rule', 'show']);
  const hostSysctls = sysctls();
  const path = netns(NETNS);
  const baseline = rules(NETNS);
  assert.deepEqual(routes(NETNS, ROUTE_TABLE), []);
  assert.deepEqual(sysctls(NETNS), ['0', '0']);

  const routing = new TransparentRouting(path);
  const first = routing.setup();
  assert.equal(routing.setup(), first, 'cached while pending');
  await first;
  const added = rules(NETNS).filter((r) => !baseline.some((b) => b.priority === r.priority));
  assert.deepEqual(added, [
    { priority: 100, fwmark: hex(PROXY_MARK), table: 'main' },
    { priority: 101, fwmark: hex(APP_MARK), table: String(ROUTE_TABLE) },
  ]);
  assert.equal(rules(NETNS).length, baseline.length + 2, 'nothing else added or removed');
  const table = routes(NETNS, ROUTE_TABLE);
  assert.equal(table.length, 1, JSON.stringify(table));
  assert.equal(table[0]!.type, 'local');
  assert.equal(table[0]!.dst, 'default');
  assert.equal(table[0]!.dev, 'lo');
  assert.equal(table[0]!.scope, 'host');
  assert.deepEqual(sysctls(NETNS), ['1', '1']);
  assert.deepEqual(await routing.list(), [
    { priority: 100, fwmark: hex(PROXY_MARK), table: 254 },
    { priority: 101, fwmark: hex(APP_MARK), table: ROUTE_TABLE },
  ]);

  // Again: through a fresh instance (nothing cached) and through the addon directly.
  const afterFirst = { rules: rules(NETNS), routes: routes(NETNS, ROUTE_TABLE) };
  await new TransparentRouting(path).setup();
  await setupTransparentRouting(path, TRANSPARENT_ROUTING);
  assert.deepEqual({ rules: rules(NETNS), routes: routes(NETNS, ROUTE_TABLE) }, afterFirst);
  assert.deepEqual(sysctls(NETNS), ['1', '1']);

  await routing.clear();
  assert.deepEqual(rules(NETNS), baseline);
  assert.deepEqual(routes(NETNS, ROUTE_TABLE), []);
  assert.deepEqual(sysctls(NETNS), ['0', '0']);
  assert.deepEqual(await routing.list(), []);
  await routing.clear();
  await clearTransparentRouting(path, TRANSPARENT_ROUTING);
  assert.deepEqual(rules(NETNS), baseline);

  // After a clear, setup is not served from the cache: the routing comes back.
  await routing.setup();
  assert.equal(rules(NETNS).length, baseline.length + 2);
  await routing.clear();
  assert.deepEqual(rules(NETNS), baseline);

  assert.equal(sh('ip', ['-j', 'rule', 'show']), hostRules, 'host rules untouched');
  assert.deepEqual(sysctls(), hostSysctls, 'host sysctls untouched');
  assert.deepEqual(routes(NETNS, ROUTE_TABLE), []);
});

test('rules already holding the priorities are left alone by setup, reported by list and deleted by clear; clear flushes every route of the table', async (t) => {
  if (!requirePrivileges(t)) return;
  const path = netns(FOREIGN_NETNS);
  const baseline = rules(FOREIGN_NETNS);
  sh('ip', ['-n', FOREIGN_NETNS, 'rule', 'add', 'pref', '101', 'fwmark', '0x7/0xff', 'lookup', '7']);
  sh('ip', ['-n', FOREIGN_NETNS, 'rule', 'add', 'pref', '100', 'unreachable']);
  sh('ip', ['-n', FOREIGN_NETNS, 'rule', 'add', 'pref', '100', 'fwmark', '0x9', 'lookup', '9']);
  sh('ip', ['-n', FOREIGN_NETNS, 'route', 'add', 'unreachable', '192.0.2.0/24', 'table', String(ROUTE_TABLE)]);
  sh('ip', ['-n', FOREIGN_NETNS, 'route', 'add', 'blackhole', '198.51.100.7/32', 'table', String(ROUTE_TABLE)]);
  await new TransparentRouting(path).setup();
  const mine = rules(FOREIGN_NETNS).filter((r) => r.priority === 100 || r.priority === 101);
  assert.deepEqual(mine, [
    { priority: 100 },
    { priority: 100, fwmark: '0x9', table: '9' },
    { priority: 101, fwmark: '0x7', fwmask: '0xff', table: '7' },
  ]);
  assert.deepEqual(await listRoutingRules(path, TRANSPARENT_ROUTING), [
    { priority: 100 },
    { priority: 100, fwmark: 9, fwmask: 0xffffffff, table: 9 },
    { priority: 101, fwmark: 7, fwmask: 0xff, table: 7 },
  ]);
  assert.equal(routes(FOREIGN_NETNS, ROUTE_TABLE).length, 3, 'the local route was added beside the others');
  await new TransparentRouting(path).clear();
  assert.deepEqual(rules(FOREIGN_NETNS), baseline, 'every rule with the two priorities deleted');
  assert.deepEqual(routes(FOREIGN_NETNS, ROUTE_TABLE), []);
  assert.notEqual(routes(FOREIGN_NETNS, 255).length, 0, 'the local table was not touched');
});

test('bad arguments throw typed errors at once; a missing netns, a file that is no netns and a refused request reject with SyscallError naming the call', async (t) => {
  if (!requirePrivileges(t)) return;
  const path = netns(`${RUN_PREFIX}-rtargs`);
  const before = rules(`${RUN_PREFIX}-rtargs`);
  const usage = (re: RegExp) => (e: unknown): boolean => {
    assert.ok(e instanceof TypeError, String(e));
    assert.equal((e as TypeError & { code?: string }).code, ErrorCodes.NATIVE_USAGE);
    assert.match(e.message, re);
    return true;
  };
  const rule = { priority: 100, fwmark: 1, table: 100 };
  const opts = (o: Record<string, unknown>): TransparentRoutingOptions => ({ table: 100, rules: [rule], ...o }) as unknown as TransparentRoutingOptions;
  const cases: Array<[unknown, unknown, RegExp]> = [
    [5, TRANSPARENT_ROUTING, /netnsPath must be a string/],
    ['run/netns/x', TRANSPARENT_ROUTING, /netnsPath must be an absolute path/],
    ['', TRANSPARENT_ROUTING, /netnsPath must be an absolute path/],
    [`${path}\0x`, TRANSPARENT_ROUTING, /netnsPath must not contain NUL bytes/],
    [path, undefined, /options must be an object/],
    [path, [], /options must be an object/],
    [path, opts({ table: 254 }), /options\.table must not be 253, 254 or 255/],
    [path, opts({ table: 255 }), /options\.table must not be/],
    [path, opts({ table: 0 }), /options\.table must be an integer in 1\.\.4294967295/],
    [path, opts({ table: NaN }), /options\.table must be an integer/],
    [path, opts({ table: 2 ** 32 }), /options\.table must be an integer/],
    [path, opts({ table: '100' }), /options\.table must be an integer/],
    [path, opts({ rules: undefined }), /options\.rules must be an array/],
    [path, opts({ rules: [] }), /options\.rules must hold 1\.\.8 rules/],
    [path, opts({ rules: Array.from({ length: 9 }, (_, i) => ({ ...rule, priority: i + 1 })) }), /options\.rules must hold 1\.\.8 rules/],
    [path, opts({ rules: [null] }), /options\.rules\[0\] must be an object/],
    [path, opts({ rules: [{ ...rule, priority: 0 }] }), /options\.rules\[0\]\.priority must be an integer in 1\.\.32765/],
    [path, opts({ rules: [{ ...rule, priority: 32766 }] }), /options\.rules\[0\]\.priority must be an integer in 1\.\.32765/],
    [path, opts({ rules: [rule, { ...rule, fwmark: 0 }] }), /options\.rules\[1\]\.fwmark must be an integer in 1\.\.4294967295/],
    [path, opts({ rules: [{ ...rule, fwmark: 1.5 }] }), /options\.rules\[0\]\.fwmark must be an integer/],
    [path, opts({ rules: [{ ...rule, table: 2 ** 32 + 1 }] }), /options\.rules\[0\]\.table must be an integer/],
    [path, opts({ rules: [rule, rule] }), /options\.rules\[1\]\.priority 100 appears twice/],
  ];
  for (const fn of [setupTransparentRouting, clearTransparentRouting, listRoutingRules] as Array<(p: unknown, o: unknown) => Promise<unknown>>) {
    for (const [p, o, re] of cases) assert.throws(() => fn(p, o), usage(re), `${fn.name}(${String(p)}, ${JSON.stringify(o)})`);
  }
  assert.deepEqual(rules(`${RUN_PREFIX}-rtargs`), before, 'nothing was done for a refused call');

  for (const fn of [setupTransparentRouting, clearTransparentRouting, listRoutingRules] as Array<(p: string, o: TransparentRoutingOptions) => Promise<unknown>>) {
    await assert.rejects(fn(`/run/netns/${RUN_PREFIX}-does-not-exist`, TRANSPARENT_ROUTING), (e: unknown) => {
      assert.ok(e instanceof SyscallError, String(e));
      assert.equal(e.syscall, 'open(2)');
      assert.equal(e.errnoName, 'ENOENT');
      assert.match(e.message, new RegExp(`netns /run/netns/${RUN_PREFIX}-does-not-exist`));
      return true;
    });
  }
  scratchDir = mkdtempSync(join(tmpdir(), 'weft-routing-'));
  const notNetns = join(scratchDir, 'not-a-netns');
  writeFileSync(notNetns, 'x');
  await assert.rejects(new TransparentRouting(notNetns).setup(), (e: unknown) => {
    assert.ok(e instanceof SyscallError, String(e));
    assert.equal(e.syscall, 'setns(2)');
    assert.equal(e.errnoName, 'EINVAL');
    return true;
  });

  // A refusal by the kernel: the same call from a process without CAP_NET_ADMIN (it keeps
  // CAP_SYS_ADMIN, so it does enter the netns) is refused at the first change it asks for.
  if (!existsSync('/usr/bin/setpriv')) return t.diagnostic('setpriv missing: kernel refusal not checked');
  const index = pathToFileURL(join(dirname(fileURLToPath(import.meta.url)), '..', 'native', 'index.js')).href;
  const script = `import { setupTransparentRouting } from ${JSON.stringify(index)};
    try { await setupTransparentRouting(${JSON.stringify(path)}, { table: 100, rules: [{ priority: 101, fwmark: 1, table: 100 }] }); console.log('resolved'); }
    catch (e) { console.log(JSON.stringify({ name: e.name, syscall: e.syscall, errnoName: e.errnoName, message: e.message })); }`;
  const r = spawnSync('setpriv', ['--bounding-set=-net_admin', '--inh-caps=-net_admin', process.execPath, '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 0, r.stderr);
  const got = JSON.parse(r.stdout) as { name: string; syscall: string; errnoName: string; message: string };
  assert.equal(got.name, 'SyscallError');
  assert.equal(got.syscall, 'rtnetlink RTM_NEWROUTE');
  assert.equal(got.errnoName, 'EPERM');
  assert.match(got.message, new RegExp(`rtnetlink RTM_NEWROUTE: .*\\(EPERM\\) \\[local 0\\.0\\.0\\.0/0 dev lo table 100, netns ${path}\\]`));
  assert.deepEqual(rules(`${RUN_PREFIX}-rtargs`), before);
  assert.deepEqual(routes(`${RUN_PREFIX}-rtargs`, ROUTE_TABLE), []);
});

test("with the routing, a transparent APP_MARK socket bound to a foreign address gets the app's replies; without it, it does not", async (t) => {
  if (!requirePrivileges(t)) return;
  // A pod: lo, eth0 with the pod's address and the default route through it (its veth peer stays in
  // the netns and forwards nothing: what leaves through eth0 is gone).
  const path = netns(APP_NETNS);
  sh('ip', ['-n', APP_NETNS, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0p']);
  sh('ip', ['-n', APP_NETNS, 'link', 'set', 'eth0p', 'up']);
  sh('ip', ['-n', APP_NETNS, 'link', 'set', 'eth0', 'up']);
  sh('ip', ['-n', APP_NETNS, 'addr', 'add', '10.77.0.2/24', 'dev', 'eth0']);
  sh('ip', ['-n', APP_NETNS, 'route', 'add', 'default', 'dev', 'eth0']);

  const peers: string[] = [];
  const server = net.createServer((s) => {
    peers.push(`${s.remoteAddress}:${s.remotePort}`);
    s.on('data', (d) => s.write(`app saw ${d.toString()}`));
    s.on('error', () => {});
  });
  t.after(() => server.close());
  await new Promise<void>((resolve) => server.listen({ fd: listenInNetns(path, { host: '10.77.0.2', port: 0 }) }, resolve));
  const port = (server.address() as net.AddressInfo).port;
  // The proxy's side: a client's address the netns does not have.
  const asClient = (localPort: number): Promise<number> =>
    connectInNetns(path, { host: '10.77.0.2', port, mark: APP_MARK, transparent: true, localAddress: '10.9.9.9', localPort, timeoutMs: 1500 });
  const timesOut = (e: unknown): boolean => {
    assert.ok(e instanceof SyscallError, String(e));
    assert.equal(e.syscall, 'connect(2)');
    assert.equal(e.errnoName, 'ETIMEDOUT', e.message);
    return true;
  };

  // Without the routing the SYN reaches the app but its SYN-ACK leaves through eth0.
  await assert.rejects(asClient(40000), timesOut);
  assert.deepEqual(peers, []);

  const routing = new TransparentRouting(path);
  await routing.setup();
  const sock = new net.Socket({ fd: await asClient(40001), readable: true, writable: true });
  t.after(() => sock.destroy());
  const reply = new Promise<string>((resolve) => sock.once('data', (d) => resolve(d.toString())));
  sock.write('hello');
  assert.equal(await reply, 'app saw hello');
  assert.deepEqual(peers, ['10.9.9.9:40001'], "the app sees the client's address");
  sock.destroy();

  await routing.clear();
  await assert.rejects(asClient(40002), timesOut);
  assert.deepEqual(peers, ['10.9.9.9:40001']);
});
