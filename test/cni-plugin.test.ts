// weft-cni, run the way a container runtime runs it (agent/system/cni.ts: CNI_* variables, the
// configuration with prevResult on stdin, a result or an error object on stdout): behind Debian's
// reference plugins (bridge + host-local) in scratch network namespaces, against a stand-in pod
// channel that records what the plugin says and answers as told, and against the real node agent.
// Also every CNI error code the plugin uses, and a fuzz run of its sanitized build.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, rmdirSync, symlinkSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { CniDefaults } from '../agent/config.js';
import { execCniPlugin, pluginStdin, runCniList, weftCniPath, weftCniPluginConf, type CniCommand, type CniConfList, type CniOutcome, type CniRuntimeConf } from '../agent/system/cni.js';
import { createLogger } from '../agent/log.js';
import { NodeAgent, type AgentOptions } from '../agent/node/agent.js';
import { DirSource } from '../agent/node/sources.js';
import type { LocalPod } from '../agent/node/pod-channel.js';
import { uninstallCapture } from '../agent/datapath/capture.js';
import { CertificateAuthority } from '../agent/controller/ca.js';
import { EnrollState } from '../agent/datapath/layout.js';
import { netnsCookie } from '../native/index.js';
import { BPFFS, RUN_PREFIX, cgroup2Root, requirePrivileges } from './helpers/privileged.js';

const REFERENCE_PLUGINS = '/usr/lib/cni';
const SANITIZED = join(dirname(weftCniPath()), 'weft-cni-sanitized');
const EXEC_TIMEOUT_MS = 20_000;

function plugin(): string {
  const p = weftCniPath();
  assert.ok(existsSync(p), `${p} is not built: run "make -C cni" (npm run setup does)`);
  return p;
}

function scratchDir(t: { after(fn: () => void): void }, what: string): string {
  const dir = mkdtempSync(join(tmpdir(), `weft-cni-${what}-`));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

// ---------------------------------------------------------------------------------------------
// A stand-in for the agent's pod channel: records each request, answers as the test says.

interface Seen {
  url: string;
  body: Record<string, unknown>;
}
type Answer = { status: number; body: unknown } | Promise<{ status: number; body: unknown }>;

class StubAgent {
  readonly seen: Seen[] = [];
  answer: (s: Seen) => Answer = (s) => ({ status: 200, body: s.url === '/v1/cni/del' ? {} : { state: 'READY' } });
  private waiters: Array<() => void> = [];
  private readonly server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const s: Seen = { url: req.url ?? '', body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown> };
      this.seen.push(s);
      for (const w of this.waiters.splice(0)) w();
      void Promise.resolve(this.answer(s)).then((a) => res.writeHead(a.status, { 'content-type': 'application/json' }).end(JSON.stringify(a.body)));
    });
  });

  private constructor(readonly path: string) {}

  static async start(path: string): Promise<StubAgent> {
    const stub = new StubAgent(path);
    await new Promise<void>((resolve) => stub.server.listen(path, resolve));
    return stub;
  }

  /** Resolves when `n` requests have arrived. */
  async requests(n: number): Promise<Seen[]> {
    while (this.seen.length < n) await new Promise<void>((r) => this.waiters.push(r));
    return this.seen;
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

/** A bridge plugin's result, as the runtime hands it to the next plugin: the host bridge, the host veth, the pod's eth0. */
const PREV = {
  cniVersion: '1.0.0',
  interfaces: [{ name: 'cni0', mac: '0a:58:0a:09:00:01' }, { name: 'veth1234', mac: '9e:11:22:33:44:55' }, { name: 'eth0', mac: '0a:58:0a:09:00:05', sandbox: '/var/run/netns/cni-test' }],
  ips: [
    { address: '10.9.0.5/24', gateway: '10.9.0.1', interface: 2 },
    { address: 'fd00:9::0005/64', interface: 2 },
    // The gateway address on the host's bridge is not the pod's.
    { address: '10.9.0.1/24', interface: 0 },
  ],
  dns: {},
};

const POD_RT: CniRuntimeConf = {
  containerId: 'c0ffee1234',
  netns: '/var/run/netns/cni-test',
  ifName: 'eth0',
  args: [
    ['IgnoreUnknown', '1'],
    ['K8S_POD_NAMESPACE', 'shop'],
    ['K8S_POD_NAME', 'api-0'],
    ['K8S_POD_INFRA_CONTAINER_ID', 'c0ffee1234'],
  ],
  path: [REFERENCE_PLUGINS],
};

const withPod = (ns: string, name = 'api-0', rt: CniRuntimeConf = POD_RT): CniRuntimeConf => ({
  ...rt,
  args: (rt.args ?? []).map(([k, v]) => [k, k === 'K8S_POD_NAMESPACE' ? ns : k === 'K8S_POD_NAME' ? name : v] as const),
});

function conf(podSocket: string, extra: { timeoutMs?: number; prevResult?: unknown; excludeNamespaces?: string[] } = {}): string {
  return pluginStdin(
    { cniVersion: '1.0.0', name: 'wt-net' },
    weftCniPluginConf({ podSocket, timeoutMs: extra.timeoutMs ?? 5000, ...(extra.excludeNamespaces ? { excludeNamespaces: extra.excludeNamespaces } : {}) }),
    'prevResult' in extra ? extra.prevResult : PREV,
  );
}

function weftCni(command: CniCommand, rt: CniRuntimeConf | undefined, stdin: string | Uint8Array, binary = plugin()): Promise<CniOutcome> {
  return execCniPlugin(binary, command, rt, stdin, EXEC_TIMEOUT_MS);
}

function assertCniError(o: CniOutcome, code: number, details?: RegExp): void {
  assert.equal(o.exitCode, 1, `exit code (stdout ${o.stdout}, stderr ${o.stderr})`);
  const e = JSON.parse(o.stdout) as { cniVersion: unknown; code: unknown; msg: unknown; details: unknown };
  assert.equal(typeof e.cniVersion, 'string');
  assert.equal(e.code, code, o.stdout);
  assert.equal(typeof e.msg, 'string');
  if (details) assert.match(String(e.details), details);
}

// ---------------------------------------------------------------------------------------------
// The protocol, against the stand-in agent (no privileges needed).

test('ADD posts the pod to the agent and returns only after its answer; the output is prevResult, byte for byte', async (t) => {
  const dir = scratchDir(t, 'add');
  const stub = await StubAgent.start(join(dir, 'pods.sock'));
  t.after(() => stub.close());
  let release!: () => void;
  let answeredAt = 0;
  stub.answer = () =>
    new Promise((resolve) => {
      release = () => {
        answeredAt = Date.now();
        resolve({ status: 200, body: { state: 'READY' } });
      };
    });
  // Formatting a re-serialising plugin would lose: spacing, key order, escapes, non-ASCII.
  const prevText =
    '{ "ips" : [ {"interface":2, "address":"10.9.0.5/24" }, {"address": "fd00:9::5/64","interface":2} ],\n' +
    '  "interfaces":[{"name":"cni0"},{"name":"v\\u0065th"},{"name":"eth0","sandbox":"/var/run/netns/cni-test"}],\t"cniVersion":"1.0.0",' +
    ' "note":"café \\ud83d\\ude00 \\"q\\"", "n": -1.5e+3 }';
  const stdin = `{"cniVersion":"1.0.0","name":"wt-net","type":"weft-cni","weft":{"podSocket":${JSON.stringify(stub.path)},"timeoutMs":5000},"prevResult":${prevText}}`;
  let settledAt = 0;
  const add = weftCni('ADD', POD_RT, stdin).then((o) => {
    settledAt = Date.now();
    return o;
  });
  const [req] = await stub.requests(1);
  assert.deepEqual(req, {
    url: '/v1/cni/add',
    body: { containerId: 'c0ffee1234', netns: '/var/run/netns/cni-test', podNamespace: 'shop', podName: 'api-0', ips: ['10.9.0.5', 'fd00:9::5'] },
  });
  // Held on purpose: the plugin must still be waiting for the agent.
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(settledAt, 0, 'ADD returned before the agent answered');
  release();
  const o = await add;
  assert.equal(o.exitCode, 0, o.stderr);
  assert.ok(settledAt >= answeredAt);
  assert.equal(o.stdout, prevText, 'prevResult passed through unchanged');
  assert.match(o.stderr, /shop\/api-0: container c0ffee1234 netns \/var\/run\/netns\/cni-test: READY in \d+ ms/);
});

test('ADD: PENDING and NOT_ENROLLED pass too; a refusal is code 100, a failure or a strange answer code 11', async (t) => {
  const dir = scratchDir(t, 'states');
  const stub = await StubAgent.start(join(dir, 'pods.sock'));
  t.after(() => stub.close());
  for (const state of ['PENDING', 'NOT_ENROLLED']) {
    stub.answer = () => ({ status: 200, body: { state } });
    const o = await weftCni('ADD', POD_RT, conf(stub.path));
    assert.equal(o.exitCode, 0, o.stdout);
    assert.deepEqual(JSON.parse(o.stdout), PREV);
  }
  stub.answer = () => ({ status: 400, body: { error: 'podName: a Kubernetes pod name' } });
  assertCniError(await weftCni('ADD', POD_RT, conf(stub.path)), 100, /HTTP 400: podName: a Kubernetes pod name/);
  stub.answer = () => ({ status: 500, body: { error: 'capture could not be attached to /var/run/netns/cni-test: ENOENT' } });
  assertCniError(await weftCni('ADD', POD_RT, conf(stub.path)), 11, /HTTP 500: capture could not be attached/);
  stub.answer = () => ({ status: 200, body: { state: 'MAYBE' } });
  assertCniError(await weftCni('ADD', POD_RT, conf(stub.path)), 11, /MAYBE/);
  stub.answer = () => ({ status: 200, body: 'READY' });
  assertCniError(await weftCni('ADD', POD_RT, conf(stub.path)), 11);
});

test('agent down: an enrolled namespace fails closed (code 11); excluded namespaces and non-Kubernetes containers pass through without asking', async (t) => {
  const dir = scratchDir(t, 'down');
  const missing = join(dir, 'no-agent.sock');
  const down = await weftCni('ADD', POD_RT, conf(missing));
  assertCniError(down, 11, new RegExp(`connect ${missing}: No such file or directory.*fail closed`));
  assert.equal(JSON.parse(down.stdout).cniVersion, '1.0.0', 'the error speaks the configuration\'s version');

  // A path that is there but no listening socket (what an agent killed mid-restart can leave): refused.
  writeFileSync(join(dir, 'stale.sock'), '');
  assertCniError(await weftCni('ADD', POD_RT, conf(join(dir, 'stale.sock'))), 11, /connect .*stale\.sock: Connection refused/);

  // Excluded: no request even when an agent is there to ask.
  const stub = await StubAgent.start(join(dir, 'pods.sock'));
  t.after(() => stub.close());
  for (const [rt, socket] of [
    [withPod('kube-system', 'coredns-0'), missing],
    [withPod('kube-system', 'coredns-0'), stub.path],
    [{ ...POD_RT, args: [['IgnoreUnknown', '1']] as const }, missing], // no pod name: not a Kubernetes pod
  ] as const) {
    const o = await weftCni('ADD', rt, conf(socket));
    assert.equal(o.exitCode, 0, o.stdout);
    assert.equal(o.stdout, JSON.stringify(PREV));
  }
  assert.equal(stub.seen.length, 0, 'the agent was not asked about excluded pods');
  // The exclusion list is the configuration's: without kube-system in it, kube-system fails closed too.
  assertCniError(await weftCni('ADD', withPod('kube-system', 'coredns-0'), conf(missing, { excludeNamespaces: [] })), 11);
});

test('an agent that accepts and never answers: ADD gives up after weft.timeoutMs with code 11', async (t) => {
  const dir = scratchDir(t, 'hang');
  const stub = await StubAgent.start(join(dir, 'pods.sock'));
  t.after(() => stub.close());
  stub.answer = () => new Promise(() => undefined);
  const started = Date.now();
  const o = await weftCni('ADD', POD_RT, conf(stub.path, { timeoutMs: 300 }));
  const took = Date.now() - started;
  assertCniError(o, 11, /no answer within 300 ms/);
  assert.ok(took >= 300 && took < 5000, `gave up after ${took} ms`);
});

test('answers over raw HTTP: chunked and close-delimited bodies are read; garbage, a cut answer or a hang-up are code 11', async (t) => {
  const dir = scratchDir(t, 'raw');
  const path = join(dir, 'raw.sock');
  let reply = '';
  const server = net.createServer((sock) => {
    let got = '';
    sock.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      const head = got.indexOf('\r\n\r\n');
      const len = /content-length: (\d+)/i.exec(got);
      if (head < 0 || !len || got.length < head + 4 + Number(len[1])) return;
      if (reply === 'HANGUP') sock.destroy();
      else sock.end(reply, 'latin1');
    });
    sock.on('error', () => undefined);
  });
  await new Promise<void>((r) => server.listen(path, r));
  t.after(() => new Promise<void>((r) => server.close(() => r())));
  const ok = [
    'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"sta\r\n10\r\nte":"READY"}    \r\n0\r\n\r\n',
    'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{"state":"PENDING"}',
    'HTTP/1.0 200 OK\r\ncontent-length: 24\r\n\r\n{"state":"NOT_ENROLLED"}',
  ];
  for (reply of ok) {
    const o = await weftCni('ADD', POD_RT, conf(path));
    assert.equal(o.exitCode, 0, `${JSON.stringify(reply)}: ${o.stdout}`);
  }
  const bad = [
    'SSH-2.0-OpenSSH\r\n\r\n',
    'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"state":"READY"}', // cut short
    'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n',
    'HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n',
    'HTTP/1.1 200 OK',
    'HANGUP',
  ];
  for (reply of bad) assertCniError(await weftCni('ADD', POD_RT, conf(path)), 11);
});

test('DEL tells the agent and always succeeds: agent down, refusing, or the pod unknown; twice is fine', async (t) => {
  const dir = scratchDir(t, 'del');
  const stub = await StubAgent.start(join(dir, 'pods.sock'));
  t.after(() => stub.close());
  const noNetns: CniRuntimeConf = { containerId: POD_RT.containerId, ifName: 'eth0', args: POD_RT.args!, path: POD_RT.path };
  for (const [rt, stdin] of [
    [POD_RT, conf(stub.path)],
    [noNetns, conf(stub.path, { prevResult: undefined })], // no netns, no prevResult: still a DEL
  ] as const) {
    const o = await weftCni('DEL', rt, stdin);
    assert.equal(o.exitCode, 0, o.stdout);
    assert.equal(o.stdout, '');
  }
  assert.deepEqual(
    stub.seen.map((s) => s),
    [
      { url: '/v1/cni/del', body: { containerId: 'c0ffee1234', podNamespace: 'shop', podName: 'api-0' } },
      { url: '/v1/cni/del', body: { containerId: 'c0ffee1234', podNamespace: 'shop', podName: 'api-0' } },
    ],
  );
  stub.answer = () => ({ status: 500, body: { error: 'boom' } });
  const refused = await weftCni('DEL', POD_RT, conf(stub.path));
  assert.equal(refused.exitCode, 0);
  assert.match(refused.stderr, /HTTP 500/);
  const down = await weftCni('DEL', POD_RT, conf(join(dir, 'gone.sock')));
  assert.equal(down.exitCode, 0);
  assert.match(down.stderr, /agent not told .*No such file or directory.*reconciles/);
});

test('CHECK asks the agent: held is fine, UNKNOWN is code 101, an agent restarting is not the pod\'s failure', async (t) => {
  const dir = scratchDir(t, 'check');
  const stub = await StubAgent.start(join(dir, 'pods.sock'));
  t.after(() => stub.close());
  for (const state of ['READY', 'PENDING', 'NOT_ENROLLED']) {
    stub.answer = () => ({ status: 200, body: { state } });
    const o = await weftCni('CHECK', POD_RT, conf(stub.path));
    assert.equal(o.exitCode, 0, o.stdout);
    assert.equal(o.stdout, '');
  }
  assert.deepEqual(stub.seen[0], { url: '/v1/cni/check', body: { containerId: 'c0ffee1234', podNamespace: 'shop', podName: 'api-0' } });
  stub.answer = () => ({ status: 200, body: { state: 'UNKNOWN' } });
  assertCniError(await weftCni('CHECK', POD_RT, conf(stub.path)), 101, /shop\/api-0 \(container c0ffee1234\)/);
  const down = await weftCni('CHECK', POD_RT, conf(join(dir, 'gone.sock')));
  assert.equal(down.exitCode, 0);
  assertCniError(await weftCni('CHECK', POD_RT, conf(stub.path, { prevResult: undefined })), 7, /prevResult/);
});

test('VERSION, STATUS and GC', async (t) => {
  const dir = scratchDir(t, 'version');
  const supported = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'];
  const asked = await weftCni('VERSION', undefined, '{"cniVersion":"0.4.0"}');
  assert.equal(asked.exitCode, 0);
  assert.deepEqual(JSON.parse(asked.stdout), { cniVersion: '0.4.0', supportedVersions: supported });
  const bare = await weftCni('VERSION', undefined, '');
  assert.deepEqual(JSON.parse(bare.stdout), { cniVersion: '1.1.0', supportedVersions: supported });
  assertCniError(await weftCni('VERSION', undefined, '{"cniVersion":'), 6);

  const stub = await StubAgent.start(join(dir, 'pods.sock'));
  t.after(() => stub.close());
  const up = await weftCni('STATUS', undefined, conf(stub.path, { prevResult: undefined }));
  assert.equal(up.exitCode, 0, up.stdout);
  assertCniError(await weftCni('STATUS', undefined, conf(join(dir, 'gone.sock'), { prevResult: undefined })), 50, /gone\.sock/);
  const gc = await weftCni('GC', undefined, conf(stub.path, { prevResult: undefined }));
  assert.equal(gc.exitCode, 0);
  assert.equal(gc.stdout, '');
  assert.equal(stub.seen.length, 0, 'STATUS only connects; GC has nothing to ask');
});

test('bad input: the CNI error object with the right code, naming what is wrong', async (t) => {
  const dir = scratchDir(t, 'bad');
  const sock = join(dir, 'pods.sock');
  const good = JSON.parse(conf(sock)) as Record<string, unknown>;
  const weft = good.weft as Record<string, unknown>;
  const stdinCases: Array<[string, string | Uint8Array, number, RegExp]> = [
    ['not JSON', 'ADD me', 6, /unexpected character at byte 0/],
    ['empty', '', 6, /end of input/],
    ['an array', '[1]', 6, /not a JSON object/],
    ['trailing comma', '{"cniVersion":"1.0.0",}', 6, /expected a string key/],
    ['two documents', '{}{}', 6, /trailing characters/],
    ['invalid UTF-8', Buffer.concat([Buffer.from('{"cniVersion":"1.0.0","name":"'), Buffer.from([0xc3, 0x28]), Buffer.from('"}')]), 6, /invalid UTF-8/],
    ['a raw control character', '{"name":"a\u0001b"}', 6, /control character/],
    ['nesting 100 deep', `${'['.repeat(100)}${']'.repeat(100)}`, 6, /nesting deeper than 64/],
    ['a number with no digits', '{"cniVersion":-}', 6, /bad number/],
    ['unsupported version', JSON.stringify({ ...good, cniVersion: '0.2.0' }), 1, /0\.2\.0/],
    ['version not a string', JSON.stringify({ ...good, cniVersion: 1 }), 1, /cniVersion 1 /],
    ['no version', JSON.stringify({ ...good, cniVersion: undefined }), 7, /cniVersion: missing/],
    ['no name', JSON.stringify({ ...good, name: undefined }), 7, /^name:/],
    ['no weft settings', JSON.stringify({ ...good, weft: undefined }), 7, /weft: the plugin's settings/],
    ['no pod socket', JSON.stringify({ ...good, weft: { ...weft, podSocket: undefined } }), 7, /weft\.podSocket: missing/],
    ['relative pod socket', JSON.stringify({ ...good, weft: { ...weft, podSocket: 'pods.sock' } }), 7, /weft\.podSocket/],
    ['pod socket too long for sun_path', JSON.stringify({ ...good, weft: { ...weft, podSocket: `/${'x'.repeat(120)}` } }), 7, /weft\.podSocket/],
    ['fractional timeout', JSON.stringify({ ...good, weft: { ...weft, timeoutMs: 1.5 } }), 7, /weft\.timeoutMs/],
    ['timeout too long', JSON.stringify({ ...good, weft: { ...weft, timeoutMs: 3_600_000 } }), 7, /weft\.timeoutMs/],
    ['bad excluded namespace', JSON.stringify({ ...good, weft: { ...weft, excludeNamespaces: ['Kube_System'] } }), 7, /weft\.excludeNamespaces\[0\]/],
    ['misspelt setting', JSON.stringify({ ...good, weft: { ...weft, podsocket: '/x' } }), 2, /weft\.podsocket = "\/x"/],
    ['no prevResult on ADD', JSON.stringify({ ...good, prevResult: undefined }), 7, /prevResult: missing; weft-cni is a chained plugin/],
    ['prevResult not an object', JSON.stringify({ ...good, prevResult: [1] }), 7, /prevResult/],
    ['an address without prefix', JSON.stringify({ ...good, prevResult: { ips: [{ address: '10.9.0.5' }] } }), 7, /prevResult\.ips\[0\]\.address: "10\.9\.0\.5" is not in CIDR form/],
    ['a bad address', JSON.stringify({ ...good, prevResult: { ips: [{ address: '10.9.0.300/24' }] } }), 7, /prevResult\.ips\[0\]\.address/],
    ['no address for the pod', JSON.stringify({ ...good, prevResult: { ips: [] } }), 7, /no address on the pod's interface/],
  ];
  for (const [what, stdin, code, details] of stdinCases) {
    await t.test(what, async () => assertCniError(await weftCni('ADD', POD_RT, stdin), code, details));
  }
  const envCases: Array<[string, CniRuntimeConf, number, RegExp]> = [
    ['container id with a slash', { ...POD_RT, containerId: '../etc' }, 4, /CNI_CONTAINERID/],
    ['netns path with ..', { ...POD_RT, netns: '/var/run/netns/../../etc/passwd' }, 4, /CNI_NETNS/],
    ['netns path relative', { ...POD_RT, netns: 'cni-test' }, 4, /CNI_NETNS/],
    ['no netns on ADD', { containerId: 'c1', ifName: 'eth0', args: POD_RT.args!, path: [] }, 4, /CNI_NETNS is required for ADD/],
    ['interface name too long', { ...POD_RT, ifName: 'eth0123456789abcdef' }, 4, /CNI_IFNAME/],
    ['pod name not a name', withPod('shop', 'Bad_Name'), 4, /K8S_POD_NAME/],
    ['namespace not a name', withPod('-shop'), 4, /K8S_POD_NAMESPACE/],
  ];
  for (const [what, rt, code, details] of envCases) {
    await t.test(what, async () => assertCniError(await weftCni('ADD', rt, conf(sock)), code, details));
  }
  // Environment the runtime spells by hand.
  const raw = (env: Record<string, string | undefined>, stdin = conf(sock)): Promise<{ code: number | null; stdout: string }> =>
    new Promise((resolve) => {
      const child = spawn(plugin(), [], { env: { PATH: process.env.PATH, ...env } as NodeJS.ProcessEnv });
      let stdout = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stdin.on('error', () => undefined);
      child.on('close', (code) => resolve({ code, stdout }));
      child.stdin.end(stdin);
    });
  const base = { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c1', CNI_NETNS: '/var/run/netns/x', CNI_IFNAME: 'eth0', CNI_ARGS: 'K8S_POD_NAMESPACE=shop;K8S_POD_NAME=a' };
  for (const [what, env, code, details] of [
    ['no CNI_COMMAND', { ...base, CNI_COMMAND: undefined }, 4, /CNI_COMMAND is required/],
    ['unknown command', { ...base, CNI_COMMAND: 'RESET' }, 4, /CNI_COMMAND: "RESET"/],
    ['no container id', { ...base, CNI_CONTAINERID: undefined }, 4, /CNI_CONTAINERID is required/],
    ['no interface name', { ...base, CNI_IFNAME: undefined }, 4, /CNI_IFNAME is required/],
    ['CNI_ARGS pair without =', { ...base, CNI_ARGS: 'K8S_POD_NAMESPACE=shop;junk' }, 4, /CNI_ARGS: "junk" is not KEY=VALUE/],
  ] as const) {
    await t.test(what, async () => {
      const r = await raw(env);
      assert.equal(r.code, 1);
      const e = JSON.parse(r.stdout) as { code: number; details: string };
      assert.equal(e.code, code);
      assert.match(e.details, details);
    });
  }
});

// ---------------------------------------------------------------------------------------------
// Hostile bytes, against the AddressSanitizer + UBSan build.

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function mutate(input: Buffer, rnd: () => number): Buffer {
  let b = Buffer.from(input);
  const tokens = ['{', '}', '[', ']', '"', '\\', '\\u', '\\ud800', '\\udc00"', ':', ',', '1e999', '-0', 'null', '\u00ff', '\u0000', '"prevResult":', '"ips":[{"address":"::/129"}]', '"interface":99999999999'];
  const n = 1 + Math.floor(rnd() * 3);
  for (let i = 0; i < n; i++) {
    const at = Math.floor(rnd() * (b.length + 1));
    const op = Math.floor(rnd() * 4);
    if (op === 0 && b.length) b[Math.min(at, b.length - 1)] = Math.floor(rnd() * 256);
    else if (op === 1) b = Buffer.concat([b.subarray(0, at), b.subarray(Math.min(b.length, at + 1 + Math.floor(rnd() * 16)))]);
    else if (op === 2) b = Buffer.concat([b.subarray(0, at), Buffer.from(tokens[Math.floor(rnd() * tokens.length)]!), b.subarray(at)]);
    else b = Buffer.concat([b.subarray(0, at), b.subarray(at, at + Math.floor(rnd() * 64)), b.subarray(at)]);
  }
  return b;
}

function assertNoCrash(o: CniOutcome, input: Buffer | string): void {
  const shown = JSON.stringify(input.toString('latin1').slice(0, 300));
  assert.ok(o.exitCode === 0 || o.exitCode === 1, `exit ${o.exitCode} on ${shown}: ${o.stderr.slice(-1500)}`);
  assert.doesNotMatch(o.stderr, /AddressSanitizer|runtime error:|LeakSanitizer/, shown);
  if (o.exitCode === 1) {
    const e = JSON.parse(o.stdout) as { code: unknown; msg: unknown };
    assert.equal(typeof e.code, 'number', shown);
    assert.equal(typeof e.msg, 'string', shown);
  }
}

test('fuzz: mutated configurations and agent answers never crash the sanitized build', async (t) => {
  if (!existsSync(SANITIZED)) {
    if (process.env.CI === 'true') assert.fail(`${SANITIZED} is not built (make -C cni check-build)`);
    t.skip('sanitized build missing (make -C cni check-build)');
    return;
  }
  const saved = { asan: process.env.ASAN_OPTIONS, ubsan: process.env.UBSAN_OPTIONS };
  // Exit paths leave the parse buffers to the kernel on purpose: leaks are not what is looked for.
  process.env.ASAN_OPTIONS = 'detect_leaks=0:exitcode=86';
  process.env.UBSAN_OPTIONS = 'halt_on_error=1:exitcode=87:print_stacktrace=1';
  t.after(() => {
    for (const [k, v] of [['ASAN_OPTIONS', saved.asan], ['UBSAN_OPTIONS', saved.ubsan]] as const) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });
  const dir = scratchDir(t, 'fuzz');
  const stub = await StubAgent.start(join(dir, 'pods.sock'));
  t.after(() => stub.close());
  const rnd = mulberry32(0x5eed);
  const seed = Buffer.from(conf(stub.path, { excludeNamespaces: ['kube-system'] }));
  const commands: CniCommand[] = ['ADD', 'DEL', 'CHECK', 'VERSION', 'STATUS'];
  const codes = new Map<string, number>();
  for (let i = 0; i < 160; i++) {
    const input = mutate(seed, rnd);
    const o = await weftCni(commands[i % commands.length]!, POD_RT, input, SANITIZED);
    assertNoCrash(o, input);
    const code = o.exitCode === 0 ? 'ok' : String((JSON.parse(o.stdout) as { code: number }).code);
    codes.set(code, (codes.get(code) ?? 0) + 1);
  }
  t.diagnostic(`outcomes: ${JSON.stringify(Object.fromEntries(codes))}; ${stub.seen.length} reached the agent`);
  // Not all refused at the door: some mutations still parse and go all the way to the agent.
  assert.ok(stub.seen.length > 0 && (codes.get('6') ?? 0) > 0, JSON.stringify(Object.fromEntries(codes)));
  // The other input from outside: the agent's answer.
  const path = join(dir, 'raw.sock');
  const good = Buffer.from('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 18\r\n\r\n12\r\n{"state":"READY"}\n\r\n0\r\n\r\n');
  let answer = good;
  const server = net.createServer((sock) => {
    sock.once('data', () => sock.end(answer));
    sock.on('error', () => undefined);
  });
  await new Promise<void>((r) => server.listen(path, r));
  t.after(() => new Promise<void>((r) => server.close(() => r())));
  for (let i = 0; i < 80; i++) {
    answer = mutate(good, rnd);
    const o = await weftCni('ADD', POD_RT, conf(path, { timeoutMs: 2000 }), SANITIZED);
    assertNoCrash(o, answer);
    if (o.exitCode === 1) assert.ok([11, 100].includes((JSON.parse(o.stdout) as { code: number }).code), `${o.stdout} for ${JSON.stringify(answer.toString('latin1'))}`);
  }
});

// ---------------------------------------------------------------------------------------------
// Behind the real reference plugins, in scratch network namespaces.

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8' });
}

/** A scratch netns, removed when the test ends. */
function netns(t: { after(fn: () => void): void }, name: string): string {
  ip('netns', 'add', name);
  t.after(() => {
    try {
      ip('netns', 'delete', name);
    } catch {
      // already gone
    }
  });
  return `/var/run/netns/${name}`;
}

/**
 * CNI_PATH for this run: the bridge plugin wrapped to run inside the scratch "node" netns (the
 * runtime's network domain — its bridge and host veths never touch the machine's), host-local and
 * weft-cni as they are.
 */
function pluginDir(dir: string, nodeNetns: string): string {
  const bin = join(dir, 'bin');
  mkdirSync(bin);
  writeFileSync(join(bin, 'bridge'), `#!/bin/sh\nexec nsenter --net=${nodeNetns} ${REFERENCE_PLUGINS}/bridge "$@"\n`, { mode: 0o755 });
  symlinkSync(join(REFERENCE_PLUGINS, 'host-local'), join(bin, 'host-local'));
  symlinkSync(plugin(), join(bin, CniDefaults.type));
  return bin;
}

function addrsOf(netnsName: string, dev: string): string[] {
  try {
    const [link] = JSON.parse(ip('-n', netnsName, '-j', 'addr', 'show', 'dev', dev)) as Array<{ addr_info: Array<{ local: string; family: string }> }>;
    return (link?.addr_info ?? []).filter((a) => a.family === 'inet').map((a) => a.local);
  } catch {
    return [];
  }
}

test('a runtime runs bridge, host-local, then weft-cni: ADD enrols with the address bridge gave, CHECK, DEL un-enrols; agent down fails closed and the runtime cleans up', async (t) => {
  if (!requirePrivileges(t)) return;
  for (const p of ['bridge', 'host-local']) assert.ok(existsSync(join(REFERENCE_PLUGINS, p)), `${REFERENCE_PLUGINS}/${p} missing: apt-get install containernetworking-plugins`);
  const dir = scratchDir(t, 'chain');
  const nodeNs = `${RUN_PREFIX}-cninode`;
  const podNs = `${RUN_PREFIX}-cnipod`;
  const nodePath = netns(t, nodeNs);
  const podPath = netns(t, podNs);
  const ipam = join(dir, 'ipam');
  const network = `${RUN_PREFIX}-net`;
  const stub = await StubAgent.start(join(dir, 'pods.sock'));
  t.after(() => stub.close());
  const list: CniConfList = {
    cniVersion: '1.0.0',
    name: network,
    plugins: [
      { type: 'bridge', bridge: `${RUN_PREFIX}br`.slice(0, 15), isGateway: true, ipam: { type: 'host-local', subnet: '10.250.7.0/24', dataDir: ipam } },
      weftCniPluginConf({ podSocket: stub.path, timeoutMs: 5000 }),
    ],
  };
  const rt: CniRuntimeConf = { ...withPod('shop', 'api-0'), containerId: `${RUN_PREFIX}-sandbox1`, netns: podPath, path: [pluginDir(dir, nodePath)] };
  // Whatever happens, the IPAM reservation and the interface go (as a runtime's DEL would).
  t.after(async () => {
    await runCniList(list, 'DEL', rt, { timeoutMs: EXEC_TIMEOUT_MS }).catch(() => undefined);
  });

  const add = await runCniList(list, 'ADD', rt, { timeoutMs: EXEC_TIMEOUT_MS });
  assert.equal(add.outcomes.length, 2);
  const [bridge, weft] = add.outcomes as [CniOutcome, CniOutcome];
  assert.equal(bridge.exitCode, 0, bridge.stdout + bridge.stderr);
  assert.equal(weft.exitCode, 0, weft.stdout + weft.stderr);
  // weft-cni's output is the prevResult it was given (the runtime's serialisation of bridge's result), byte for byte.
  assert.equal(weft.stdout, JSON.stringify(bridge.json));
  assert.deepEqual(add.result, bridge.json);
  const podIp = addrsOf(podNs, 'eth0');
  assert.equal(podIp.length, 1, 'bridge gave eth0 one IPv4 address');
  assert.deepEqual(stub.seen, [
    { url: '/v1/cni/add', body: { containerId: rt.containerId, netns: podPath, podNamespace: 'shop', podName: 'api-0', ips: podIp } },
  ]);
  assert.ok(readdirSync(join(ipam, network)).includes(podIp[0]!), 'host-local holds the address');

  const check = await runCniList(list, 'CHECK', rt, { prevResult: add.result, timeoutMs: EXEC_TIMEOUT_MS });
  assert.deepEqual(check.outcomes.map((o) => [o.exitCode, o.stdout]), [[0, ''], [0, '']], JSON.stringify(check.outcomes.map((o) => o.stderr)));
  assert.equal(stub.seen.at(-1)?.url, '/v1/cni/check');

  const del = await runCniList(list, 'DEL', rt, { prevResult: add.result, timeoutMs: EXEC_TIMEOUT_MS });
  assert.deepEqual(del.outcomes.map((o) => o.exitCode), [0, 0]);
  assert.deepEqual(stub.seen.at(-1), { url: '/v1/cni/del', body: { containerId: rt.containerId, podNamespace: 'shop', podName: 'api-0' } });
  assert.deepEqual(addrsOf(podNs, 'eth0'), [], 'eth0 gone');
  assert.ok(!readdirSync(join(ipam, network)).includes(podIp[0]!), 'address released');
  const again = await runCniList(list, 'DEL', rt, { prevResult: add.result, timeoutMs: EXEC_TIMEOUT_MS });
  assert.deepEqual(again.outcomes.map((o) => o.exitCode), [0, 0], 'DEL twice');

  // The agent goes away: the pod's ADD fails at weft-cni, after bridge set it up — so the runtime
  // runs DEL for the list, which succeeds and releases everything.
  await stub.close();
  const seen = stub.seen.length;
  const down = await runCniList(list, 'ADD', rt, { timeoutMs: EXEC_TIMEOUT_MS });
  assert.equal(down.outcomes.length, 2);
  assertCniError(down.outcomes[1]!, 11, /fail closed/);
  const cleanup = await runCniList(list, 'DEL', rt, { prevResult: down.outcomes[0]!.json, timeoutMs: EXEC_TIMEOUT_MS });
  assert.deepEqual(cleanup.outcomes.map((o) => o.exitCode), [0, 0]);
  assert.deepEqual(addrsOf(podNs, 'eth0'), []);
  // A kube-system pod starts without the agent.
  const system = withPod('kube-system', 'coredns-0', rt);
  const sys = await runCniList(list, 'ADD', system, { timeoutMs: EXEC_TIMEOUT_MS });
  assert.deepEqual(sys.outcomes.map((o) => o.exitCode), [0, 0]);
  assert.equal(addrsOf(podNs, 'eth0').length, 1);
  await runCniList(list, 'DEL', system, { prevResult: sys.result, timeoutMs: EXEC_TIMEOUT_MS });
  assert.equal(stub.seen.length, seen, 'nobody answered, nobody was asked');
  assert.deepEqual(readdirSync(join(ipam, network)).filter((f) => /^\d/.test(f)), [], 'no address left reserved');
});

// ---------------------------------------------------------------------------------------------
// The real node agent.

function writeResources(dir: string, node: string): void {
  const pod = (ns: string, name: string, podIP: string): string =>
    `apiVersion: v1\nkind: Pod\nmetadata: {name: ${name}, namespace: ${ns}}\nspec:\n  nodeName: ${node}\n  containers: [{name: main, command: [sleep, "1"]}]\nstatus: {podIP: ${podIP}}\n`;
  writeFileSync(
    join(dir, 'cluster.yaml'),
    [
      'apiVersion: v1\nkind: Namespace\nmetadata: {name: meshed, labels: {istio.io/dataplane-mode: ambient}}\n',
      'apiVersion: v1\nkind: Namespace\nmetadata: {name: plain}\n',
      pod('meshed', 'early', '10.251.0.5'),
      pod('plain', 'p1', '10.251.0.6'),
    ].join('---\n'),
  );
}

interface AgentInside {
  localPods: Map<string, LocalPod>;
  datapath: { enrolledCookies(): Map<bigint, number>; pinnedNetnsCookies(): bigint[] };
}

test('the real agent: ADD returns with capture attached (PENDING), a pod outside the mesh is left alone, DEL removes capture, a vanished pod is forgotten; a pod running before the agent is found from the kernel', async (t) => {
  if (!requirePrivileges(t)) return;
  const dir = scratchDir(t, 'agent');
  const node = 'cni-node';
  const cg = join(cgroup2Root(), `${RUN_PREFIX}-cniagent`);
  const podsCg = join(cg, 'pods');
  const earlyCg = join(podsCg, 'meshed_early');
  mkdirSync(earlyCg, { recursive: true });
  const bpffs = join(BPFFS, `${RUN_PREFIX}-cni`);
  const resources = join(dir, 'resources');
  mkdirSync(resources);
  writeResources(resources, node);

  // A pod that runs before any agent: its process in its pod cgroup, inside its pinned netns.
  const earlyNs = `${RUN_PREFIX}-early`;
  const earlyPath = netns(t, earlyNs);
  ip('-n', earlyNs, 'link', 'set', 'lo', 'up');
  // nsenter enters the netns, then the shell moves itself into the pod's cgroup and says so.
  const early: ChildProcess = spawn('nsenter', [`--net=${earlyPath}`, 'sh', '-c', `echo $$ > ${earlyCg}/cgroup.procs && echo ready && exec sleep 600`], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.after(() => {
    early.kill('SIGKILL');
  });
  await new Promise<void>((resolve, reject) => {
    early.stdout!.on('data', (d: Buffer) => (d.toString().includes('ready') ? resolve() : undefined));
    early.once('exit', (code) => reject(new Error(`the early pod's process exited (${code})`)));
  });

  const log = createLogger('test', { level: 'silent' });
  const ca = await CertificateAuthority.loadOrCreate({ dir: join(dir, 'ca'), trustDomain: 'cluster.local' });
  const options: AgentOptions = {
    node,
    source: new DirSource(resources, log),
    ca: { createCertificate: async (csr, ttl) => (await ca.signWorkloadCsr(csr, ttl)).chain },
    certTtlSeconds: 3600,
    trustDomain: 'cluster.local',
    rootNamespace: 'istio-system',
    cgroup: cg,
    bpffs,
    readinessPort: 0,
    adminPort: 0,
    excludeOutboundPorts: [],
    excludeInboundPorts: [],
    observerPort: 0,
    metricsPort: 0,
    flowRingSize: 16,
    fastPaths: { splice: false, hbone: false },
    stateDir: join(dir, 'state'),
    podSocket: join(dir, 'pods.sock'),
    version: 'weft/test',
    log,
  };
  const agent = await NodeAgent.start(options);
  t.after(async () => {
    await agent.stop();
    uninstallCapture(bpffs);
    rmSync(bpffs, { recursive: true, force: true });
    early.kill('SIGKILL');
    await new Promise<void>((r) => (early.exitCode !== null || early.signalCode !== null ? r() : early.once('exit', () => r())));
    for (const d of [earlyCg, podsCg, cg]) {
      try {
        rmdirSync(d);
      } catch {
        // still populated or gone
      }
    }
  });
  const inside = agent as unknown as AgentInside;
  const state = (path: string): number | undefined => inside.datapath.enrolledCookies().get(netnsCookie(path));

  // Found from the kernel: the cluster state puts meshed/early on this node, its process is in its pod cgroup.
  const found = inside.localPods.get('meshed/early');
  assert.ok(found, 'the running pod was adopted');
  assert.equal(found.netns, earlyPath);
  assert.deepEqual(found.ips, ['10.251.0.5']);
  assert.equal(state(earlyPath), EnrollState.READY, 'captured, and its proxy serves');
  assert.ok(inside.datapath.pinnedNetnsCookies().includes(netnsCookie(earlyPath)), 'inbound capture attached');

  // A new pod through weft-cni: capture is there the moment ADD returns.
  const newNs = `${RUN_PREFIX}-m1`;
  const newPath = netns(t, newNs);
  const rt: CniRuntimeConf = { ...withPod('meshed', 'm1'), containerId: `${RUN_PREFIX}-m1`, netns: newPath };
  const prev = { cniVersion: '1.0.0', interfaces: [{ name: 'eth0', sandbox: newPath }], ips: [{ address: '10.251.0.7/24', interface: 0 }] };
  const stdin = conf(options.podSocket, { prevResult: prev });
  const add = await weftCni('ADD', rt, stdin);
  assert.equal(add.exitCode, 0, add.stdout + add.stderr);
  assert.equal(add.stdout, JSON.stringify(prev));
  assert.match(add.stderr, /meshed\/m1: .*: PENDING in \d+ ms/, 'not in the cluster state yet: held');
  assert.equal(state(newPath), EnrollState.PENDING, 'enrolled before ADD returned');
  assert.ok(inside.datapath.pinnedNetnsCookies().includes(netnsCookie(newPath)));
  const check = await weftCni('CHECK', rt, stdin);
  assert.equal(check.exitCode, 0, check.stdout);
  // Another sandbox's CHECK and DEL are not this one's.
  assertCniError(await weftCni('CHECK', { ...rt, containerId: 'old-sandbox' }, stdin), 101);
  assert.equal((await weftCni('DEL', { ...rt, containerId: 'old-sandbox' }, stdin)).exitCode, 0);
  assert.equal(state(newPath), EnrollState.PENDING, 'a stale sandbox\'s DEL leaves the pod alone');

  // A pod that ends while its DEL reaches no agent: its netns goes, and the agent forgets it at its next
  // reconcile (here: the next ADD).
  const goneNs = `${RUN_PREFIX}-gone`;
  const gonePath = netns(t, goneNs);
  const goneRt: CniRuntimeConf = { ...withPod('meshed', 'gone'), containerId: `${RUN_PREFIX}-gone`, netns: gonePath };
  const gone = await weftCni('ADD', goneRt, conf(options.podSocket, { prevResult: { ...prev, interfaces: [{ name: 'eth0', sandbox: gonePath }] } }));
  assert.equal(gone.exitCode, 0, gone.stdout);
  const goneCookie = netnsCookie(gonePath);
  ip('netns', 'delete', goneNs);

  // A pod of a namespace outside the mesh: NOT_ENROLLED, nothing attached.
  const plainNs = `${RUN_PREFIX}-p1`;
  const plainPath = netns(t, plainNs);
  const plainRt: CniRuntimeConf = { ...withPod('plain', 'p1'), containerId: `${RUN_PREFIX}-p1`, netns: plainPath };
  const plain = await weftCni('ADD', plainRt, conf(options.podSocket, { prevResult: { ...prev, interfaces: [{ name: 'eth0', sandbox: plainPath }] } }));
  assert.equal(plain.exitCode, 0, plain.stdout);
  assert.match(plain.stderr, /plain\/p1: .*: NOT_ENROLLED/);
  assert.equal(state(plainPath), undefined);
  assert.equal(inside.localPods.has('meshed/gone'), false, 'the pod whose netns vanished is forgotten');
  assert.equal(inside.datapath.enrolledCookies().has(goneCookie), false, 'and its capture removed');

  const del = await weftCni('DEL', rt, stdin);
  assert.equal(del.exitCode, 0);
  assert.equal(state(newPath), undefined, 'DEL removed the enrollment');
  assert.ok(!inside.datapath.pinnedNetnsCookies().includes(netnsCookie(newPath)), 'and the inbound link');
  assertCniError(await weftCni('CHECK', rt, stdin), 101);
  assert.equal(state(earlyPath), EnrollState.READY, 'the other pods keep theirs');
});
