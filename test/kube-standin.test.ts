// The Kubernetes API stand-in (test/helpers/kube-standin.ts) held to a real client: Debian's
// `kubectl` lists, chunks, watches, applies, patches status, creates Events and TokenReviews against
// it. If the stand-in drifted from the wire protocol a real API server speaks, kubectl would fail
// here first, before the Kubernetes source's tests could pass against a fiction.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KubeStandin, type KubeObject } from './helpers/kube-standin.js';

const KUBECTL = 'kubectl';
const haveKubectl = spawnSync(KUBECTL, ['version', '--client'], { encoding: 'utf8' }).status === 0;
// CI installs kubernetes-client (scripts/setup.mjs): there a missing kubectl is a failure, not a skip.
const skip = !haveKubectl && process.env.CI !== 'true' ? 'kubectl (Debian kubernetes-client) is not installed' : false;

let api: KubeStandin;
let dir: string;
let kubeconfig: string;
const run = `ks${process.pid.toString(36)}`;

before(async () => {
  if (skip) return;
  api = await KubeStandin.start();
  dir = mkdtempSync(join(tmpdir(), 'kube-standin-test-'));
  kubeconfig = api.writeKubeconfig({ dir });
  api.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: run } });
});

after(async () => {
  await api?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

interface Ran {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs kubectl to its end against the stand-in (its own discovery cache per run). */
function kubectl(args: string[], opts: { input?: string; kubeconfig?: string } = {}): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const child = spawn(KUBECTL, ['--kubeconfig', opts.kubeconfig ?? kubeconfig, '--cache-dir', join(dir, 'cache'), '--request-timeout', '20s', ...args], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('error', reject);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
    child.stdin.end(opts.input ?? '');
  });
}

function pod(name: string, extra: Partial<KubeObject> = {}): KubeObject {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: run, labels: { app: name } },
    spec: { nodeName: 'node-a', containers: [{ name: 'c', image: 'registry.example/app:1' }] },
    status: { phase: 'Running', podIP: '10.1.0.9' },
    ...extra,
  };
}

/** Splits kubectl's stream of pretty-printed JSON documents into objects as they complete. */
class JsonStream {
  private buf = '';
  readonly docs: Array<Record<string, unknown>> = [];
  private waiters: Array<() => void> = [];

  push(text: string): void {
    this.buf += text;
    for (;;) {
      const end = completeDocumentEnd(this.buf);
      if (end < 0) break;
      this.docs.push(JSON.parse(this.buf.slice(0, end)) as Record<string, unknown>);
      this.buf = this.buf.slice(end);
    }
    for (const w of this.waiters.splice(0)) w();
  }

  /** Resolves once `pred` holds for a document seen so far. */
  async waitFor(pred: (d: Record<string, unknown>) => boolean, what: string, timeoutMs = 15_000): Promise<Record<string, unknown>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const d = this.docs.find(pred);
      if (d) return d;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`kubectl printed no ${what}; got ${JSON.stringify(this.docs.map((x) => x.type))}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }
}

function completeDocumentEnd(s: string): number {
  let depth = 0;
  let inString = false;
  let started = false;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (inString) {
      if (c === '\\') i++;
      else if (c === '"') inString = false;
      continue;
    }
    if (c === '"') inString = true;
    else if (c === '{') {
      depth++;
      started = true;
    } else if (c === '}') {
      depth--;
      if (started && depth === 0) return i + 1;
    }
  }
  return -1;
}

test('kubectl get -w sees ADDED, MODIFIED and DELETED as objects change', { skip }, async () => {
  api.put(pod('watched-0'));
  const args = ['--kubeconfig', kubeconfig, '--cache-dir', join(dir, 'cache'), 'get', 'pods', '-n', run, '-w', '--output-watch-events', '-o', 'json'];
  const child: ChildProcessWithoutNullStreams = spawn(KUBECTL, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  const out = new JsonStream();
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => out.push(d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  try {
    // kubectl lists, then watches from the list's resourceVersion: wait for that watch to be open.
    const watch = await api.waitForRequest((r) => r.query.watch === 'true' && r.path === `/api/v1/namespaces/${run}/pods`);
    assert.ok(Number(watch.query.resourceVersion) > 0, 'kubectl watches from the list resourceVersion');
    await out.waitFor((d) => d.type === 'ADDED' && (d.object as KubeObject).metadata.name === 'watched-0', 'ADDED for the listed pod');

    api.put(pod('watched-1'));
    await out.waitFor((d) => d.type === 'ADDED' && (d.object as KubeObject).metadata.name === 'watched-1', 'ADDED for the new pod');
    api.put(pod('watched-1', { status: { phase: 'Running', podIP: '10.1.0.10' } }));
    const modified = await out.waitFor((d) => d.type === 'MODIFIED' && (d.object as KubeObject).metadata.name === 'watched-1', 'MODIFIED');
    assert.equal(((modified.object as KubeObject).status as { podIP: string }).podIP, '10.1.0.10');
    api.remove('v1', 'Pod', run, 'watched-1');
    await out.waitFor((d) => d.type === 'DELETED' && (d.object as KubeObject).metadata.name === 'watched-1', 'DELETED');
    assert.equal(stderr, '');
  } finally {
    child.kill('SIGTERM');
    api.remove('v1', 'Pod', run, 'watched-0');
  }
});

test('kubectl get lists in chunks with limit and continue', { skip }, async () => {
  const names = ['chunk-a', 'chunk-b', 'chunk-c', 'chunk-d', 'chunk-e'];
  for (const n of names) api.put(pod(n));
  try {
    const from = api.requests.length;
    const r = await kubectl(['get', 'pods', '-n', run, '--chunk-size=2', '-o', 'name']);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(r.stdout.trim().split('\n'), names.map((n) => `pod/${n}`));
    const lists = api.requests.slice(from).filter((q) => q.method === 'GET' && q.path === `/api/v1/namespaces/${run}/pods`);
    assert.equal(lists.length, 3, 'three pages of two, two and one');
    assert.deepEqual(
      lists.map((q) => [q.query.limit, q.query.continue !== undefined]),
      [
        ['2', false],
        ['2', true],
        ['2', true],
      ],
    );
  } finally {
    for (const n of names) api.remove('v1', 'Pod', run, n);
  }
});

test('a continue token from before a compaction is refused with 410 Expired', { skip }, async () => {
  for (const n of ['old-a', 'old-b', 'old-c']) api.put(pod(n));
  try {
    const first = await kubectl(['get', '--raw', `/api/v1/namespaces/${run}/pods?limit=1`]);
    assert.equal(first.status, 0, first.stderr);
    const token = (JSON.parse(first.stdout) as { metadata: { continue: string } }).metadata.continue;
    assert.ok(token);
    api.put(pod('old-d'));
    api.compact();
    const second = await kubectl(['get', '--raw', `/api/v1/namespaces/${run}/pods?limit=1&continue=${encodeURIComponent(token)}`]);
    assert.notEqual(second.status, 0);
    assert.match(second.stderr, /continue parameter is too old|410|Gone|Expired/i);
  } finally {
    for (const n of ['old-a', 'old-b', 'old-c', 'old-d']) api.remove('v1', 'Pod', run, n);
  }
});

test('a watch from a compacted resourceVersion gets an ERROR event with a 410 Status', { skip }, async () => {
  api.put(pod('compacted'));
  const oldRv = Number(api.resourceVersion) - 1;
  api.compact();
  try {
    const r = await kubectl(['get', '--raw', `/api/v1/namespaces/${run}/pods?watch=true&resourceVersion=${oldRv}`]);
    assert.equal(r.status, 0, r.stderr);
    const ev = JSON.parse(r.stdout.trim().split('\n')[0]!) as { type: string; object: { kind: string; code: number; reason: string } };
    assert.deepEqual([ev.type, ev.object.kind, ev.object.code, ev.object.reason], ['ERROR', 'Status', 410, 'Expired']);
  } finally {
    api.remove('v1', 'Pod', run, 'compacted');
  }
});

test('kubectl apply of an AuthorizationPolicy lands in the stand-in, and a second apply patches it', { skip }, async () => {
  const file = join(dir, 'policy.yaml');
  const doc = (ns: string): string =>
    [
      'apiVersion: security.istio.io/v1',
      'kind: AuthorizationPolicy',
      'metadata:',
      '  name: deny-evil',
      `  namespace: ${run}`,
      'spec:',
      '  action: DENY',
      '  rules:',
      '  - from:',
      '    - source:',
      `        namespaces: ["${ns}"]`,
      '',
    ].join('\n');
  writeFileSync(file, doc('evil'));
  const created = await kubectl(['apply', '-f', file]);
  assert.equal(created.status, 0, created.stderr);
  assert.match(created.stdout, /authorizationpolicy\.security\.istio\.io\/deny-evil created/);
  const stored = api.get('security.istio.io/v1', 'AuthorizationPolicy', run, 'deny-evil');
  assert.ok(stored);
  assert.deepEqual((stored.spec as { rules: unknown }).rules, [{ from: [{ source: { namespaces: ['evil'] } }] }]);
  assert.equal(stored.metadata.generation, 1);

  writeFileSync(file, doc('worse'));
  const from = api.requests.length;
  const patched = await kubectl(['apply', '-f', file]);
  assert.equal(patched.status, 0, patched.stderr);
  assert.match(patched.stdout, /configured/);
  const patch = api.requests.slice(from).find((q) => q.method === 'PATCH');
  assert.equal(patch?.contentType, 'application/merge-patch+json', 'a custom resource is patched with a JSON merge patch');
  const after = api.get('security.istio.io/v1', 'AuthorizationPolicy', run, 'deny-evil')!;
  assert.deepEqual((after.spec as { rules: unknown }).rules, [{ from: [{ source: { namespaces: ['worse'] } }] }]);
  assert.equal(after.metadata.generation, 2);

  const deleted = await kubectl(['delete', '-f', file]);
  assert.equal(deleted.status, 0, deleted.stderr);
  assert.equal(api.get('security.istio.io/v1', 'AuthorizationPolicy', run, 'deny-evil'), undefined);
});

test('the status subresource takes a merge patch and refuses a strategic one on an Istio kind (415)', { skip }, async () => {
  api.put({ apiVersion: 'security.istio.io/v1', kind: 'PeerAuthentication', metadata: { name: 'strict', namespace: run }, spec: { mtls: { mode: 'STRICT' } } });
  try {
    const status = JSON.stringify({ status: { conditions: [{ type: 'Accepted', status: 'True', reason: 'Accepted', message: 'ok' }] }, spec: { mtls: { mode: 'DISABLE' } } });
    const merged = await kubectl(['patch', 'peerauthentications', 'strict', '-n', run, '--subresource=status', '--type=merge', '-p', status]);
    assert.equal(merged.status, 0, merged.stderr);
    const got = api.get('security.istio.io/v1', 'PeerAuthentication', run, 'strict')!;
    assert.equal((got.status as { conditions: Array<{ type: string }> }).conditions[0]!.type, 'Accepted');
    assert.deepEqual(got.spec, { mtls: { mode: 'STRICT' } }, 'the status subresource changes nothing but status');

    const strategic = await kubectl(['patch', 'peerauthentications', 'strict', '-n', run, '--subresource=status', '--type=strategic', '-p', status]);
    assert.notEqual(strategic.status, 0);
    assert.match(strategic.stderr, /unknown format|UnsupportedMediaType|415/i);

    // Status written through the main resource is ignored, as on a kind with a status subresource.
    const main = await kubectl(['patch', 'peerauthentications', 'strict', '-n', run, '--type=merge', '-p', JSON.stringify({ status: { conditions: [] } })]);
    assert.equal(main.status, 0, main.stderr);
    assert.equal((api.get('security.istio.io/v1', 'PeerAuthentication', run, 'strict')!.status as { conditions: unknown[] }).conditions.length, 1);
  } finally {
    api.remove('security.istio.io/v1', 'PeerAuthentication', run, 'strict');
  }
});

test('events.k8s.io Events: six fractional digits accepted, milliseconds refused with 422', { skip }, async () => {
  const event = (name: string, eventTime: string): string =>
    JSON.stringify({
      apiVersion: 'events.k8s.io/v1',
      kind: 'Event',
      metadata: { name, namespace: run },
      eventTime,
      reportingController: 'weft.io/controller',
      reportingInstance: 'controller-0',
      action: 'Validate',
      reason: 'Rejected',
      type: 'Warning',
      note: 'spec.action: "MAYBE" is not one of ALLOW, DENY, AUDIT, CUSTOM',
      regarding: { apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', name: 'p', namespace: run },
    });
  const good = await kubectl(['create', '-f', '-'], { input: event('micro', '2026-12-01T05:00:00.123456Z') });
  assert.equal(good.status, 0, good.stderr);
  assert.equal(api.list('events.k8s.io/v1', 'Event', run).length, 1);
  const bad = await kubectl(['create', '-f', '-'], { input: event('milli', new Date().toISOString()) });
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /is invalid: eventTime/);
  assert.equal(api.requests.filter((q) => q.method === 'POST' && q.path.endsWith('/events')).at(-1)?.status, 422);
  api.remove('events.k8s.io/v1', 'Event', run, 'micro');
});

test('TokenReview answers for registered tokens: audiences, extra, expiry', { skip }, async () => {
  const extra = { 'authentication.kubernetes.io/pod-name': ['weft-agent-abcde'], 'authentication.kubernetes.io/pod-uid': ['0f0e'] };
  api.registerToken('agent-token', { username: 'system:serviceaccount:weft-system:weft-agent', uid: 'u-1', groups: ['system:serviceaccounts'], audiences: ['weft-ca'], extra });
  api.registerToken('expired-token', { username: 'system:serviceaccount:weft-system:weft-agent', audiences: ['weft-ca'], expiresAt: new Date(Date.now() - 1000) });
  const review = (token: string, audiences: string[]): string =>
    JSON.stringify({ apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token, audiences } });
  const ask = async (token: string, audiences: string[]): Promise<{ authenticated?: boolean; user?: { username?: string; extra?: unknown }; audiences?: string[]; error?: string }> => {
    // TokenReview has no PATCH, so kubectl cannot learn of server-side field validation from the
    // OpenAPI v3 index and would want the v2 document, which the stand-in does not serve.
    const r = await kubectl(['create', '--validate=false', '-o', 'json', '-f', '-'], { input: review(token, audiences) });
    assert.equal(r.status, 0, r.stderr);
    return (JSON.parse(r.stdout) as { status: { authenticated?: boolean; user?: { username?: string; extra?: unknown }; audiences?: string[]; error?: string } }).status;
  };
  const ok = await ask('agent-token', ['weft-ca']);
  assert.equal(ok.authenticated, true);
  assert.equal(ok.user?.username, 'system:serviceaccount:weft-system:weft-agent');
  assert.deepEqual(ok.user?.extra, extra);
  assert.deepEqual(ok.audiences, ['weft-ca']);
  const wrongAudience = await ask('agent-token', ['istio-ca']);
  assert.equal(wrongAudience.authenticated, false);
  assert.match(wrongAudience.error ?? '', /audience/);
  const expired = await ask('expired-token', ['weft-ca']);
  assert.equal(expired.authenticated, false);
  assert.match(expired.error ?? '', /expired/);
  const unknown = await ask('no-such-token', ['weft-ca']);
  assert.equal(unknown.authenticated, false);

  // A token bound to another audience may not call the API itself.
  const asAgent = await kubectl(['get', 'pods', '-n', run], { kubeconfig: api.writeKubeconfig({ dir, token: 'agent-token' }) });
  assert.notEqual(asAgent.status, 0);
  assert.match(asAgent.stderr, /Unauthorized|provide credentials/i);
});

test('client certificates authenticate as their CN', { skip }, async () => {
  const cert = api.issueClientCert('weft-controller', ['weft:controllers']);
  const from = api.requests.length;
  const r = await kubectl(['get', 'namespaces', '-o', 'name'], { kubeconfig: api.writeKubeconfig({ dir, clientCert: cert }) });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`namespace/${run}`));
  const listed = api.requests.slice(from).find((q) => q.path === '/api/v1/namespaces');
  assert.equal(listed?.user, 'weft-controller');
});
