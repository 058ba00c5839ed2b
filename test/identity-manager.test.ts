// The node agent's identity manager: first fetch, renewal at half-life, capped exponential backoff,
// keeping the old certificate until it really expires, forgetting identities.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { CertificateAuthority } from '../agent/controller/ca.js';
import { checkCsr } from '../agent/controller/csr.js';
import {
  CertificateTimeoutError,
  IdentityManager,
  MAX_BACKOFF_MS,
  backoffDelayMs,
  type CaClient,
  type Schedule,
  type WorkloadCertificate,
} from '../agent/identity/manager.js';
import { WeftError } from '../agent/errors.js';

const TD = 'cluster.local';
const log = pino({ level: 'silent' });
const dirs: string[] = [];
test.after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
function newCa(now?: () => number): Promise<CertificateAuthority> {
  const dir = mkdtempSync(join(tmpdir(), 'weft-idm-'));
  dirs.push(dir);
  return CertificateAuthority.loadOrCreate(now ? { dir, trustDomain: TD, now } : { dir, trustDomain: TD });
}

/** A CA client over a real CA that can be told to fail, and counts what it was asked. */
class TestCa implements CaClient {
  attempts = 0;
  failuresLeft = 0;
  failing = false;
  constructor(private readonly ca: CertificateAuthority) {}
  async createCertificate(csrPem: string, ttlSeconds: number): Promise<string[]> {
    this.attempts++;
    if (this.failing || this.failuresLeft > 0) {
      this.failuresLeft = Math.max(0, this.failuresLeft - 1);
      throw new Error('controller unavailable');
    }
    return (await this.ca.signWorkloadCsr(csrPem, ttlSeconds)).chain;
  }
}

interface FakeTimer {
  fn: () => void;
  delay: number;
  at: number;
  cancelled: boolean;
}

/** Timers under the test's control: a clock that only moves when a timer is fired. */
class FakeTimers {
  now = Date.now();
  readonly all: FakeTimer[] = [];
  private listeners: Array<(t: FakeTimer) => void> = [];
  readonly schedule: Schedule = (fn, delay) => {
    const t: FakeTimer = { fn, delay, at: this.now + delay, cancelled: false };
    this.all.push(t);
    const ls = this.listeners;
    this.listeners = [];
    for (const l of ls) l(t);
    return { cancel: () => void (t.cancelled = true) };
  };
  /** Resolves with the next timer scheduled from now on. */
  next(): Promise<FakeTimer> {
    return new Promise((resolve) => this.listeners.push(resolve));
  }
  pending(): FakeTimer[] {
    return this.all.filter((t) => !t.cancelled).sort((a, b) => a.at - b.at);
  }
  fire(t: FakeTimer): void {
    assert.ok(!t.cancelled, 'firing a cancelled timer');
    t.cancelled = true;
    this.now = Math.max(this.now, t.at);
    t.fn();
  }
}

test('backoff delays: 1 s doubling, capped at 150 s, jitter within ±10%', () => {
  const mid = (): number => 0.5;
  assert.deepEqual(
    Array.from({ length: 11 }, (_, i) => backoffDelayMs(i + 1, mid)),
    [1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000, 150000, 150000, 150000],
  );
  assert.equal(backoffDelayMs(1, () => 0), 900);
  assert.ok(Math.abs(backoffDelayMs(1, () => 0.999999) - 1100) < 0.01);
  assert.equal(backoffDelayMs(40, () => 0.999999), MAX_BACKOFF_MS);
  assert.equal(backoffDelayMs(40, () => 0), 135000);
});

test('first fetch: get waits for it, rotated is emitted, current and snapshot report it', async () => {
  const ca = new TestCa(await newCa());
  const m = new IdentityManager({ ca, trustDomain: TD, log });
  try {
    assert.equal(m.current('shop', 'api'), undefined);
    const rotated = once(m, 'rotated');
    const cert = await m.get('shop', 'api');
    const [key, emitted] = (await rotated) as [string, WorkloadCertificate];
    assert.equal(key, 'shop/api');
    assert.equal(emitted, cert);
    assert.deepEqual(cert.id, { trustDomain: TD, namespace: 'shop', serviceAccount: 'api' });
    assert.equal(cert.chainPem.length, 2);
    assert.equal(cert.chainPem[0], cert.certPem);
    assert.equal(cert.chainPem[1], cert.rootPem);
    assert.ok(cert.notAfter.getTime() - Date.now() > 86_000_000, 'default TTL is a day');
    assert.equal(m.current('shop', 'api'), cert);
    assert.equal(await m.get('shop', 'api'), cert, 'a second get does not fetch again');
    assert.equal(ca.attempts, 1);
    const [snap] = m.snapshot();
    assert.equal(snap?.identity, 'spiffe://cluster.local/ns/shop/sa/api');
    assert.equal(snap?.state, 'valid');
    assert.equal(snap?.serial, cert.serial);
    assert.ok((snap?.secondsToExpiry ?? 0) > 86_000);
  } finally {
    m.close();
  }
});

test('renewal at half-life with a real 2 s certificate', async () => {
  const ca = new TestCa(await newCa());
  const m = new IdentityManager({ ca, trustDomain: TD, ttlSeconds: 2, log });
  // The manager's timers are unref'd (they must not keep an agent alive); this test has nothing
  // else to keep the event loop running while it waits.
  const keepAlive = setInterval(() => undefined, 1000);
  try {
    let expired = false;
    m.on('expired', () => (expired = true));
    m.ensure('shop', 'api');
    const [, first] = (await once(m, 'rotated')) as [string, WorkloadCertificate];
    const t1 = Date.now();
    const [, second] = (await once(m, 'rotated')) as [string, WorkloadCertificate];
    const t2 = Date.now();
    // Half of the life left when it arrived (notAfter is whole seconds, so 0.5 to 1 s here), plus key
    // generation and signing; and before the first one expires.
    const halfLife = t1 + (first.notAfter.getTime() - t1) / 2;
    assert.ok(t2 >= halfLife - 20, `renewed ${halfLife - t2} ms before half-life`);
    assert.ok(t2 < first.notAfter.getTime(), `renewed ${t2 - first.notAfter.getTime()} ms after expiry`);
    assert.notEqual(second.serial, first.serial);
    assert.notEqual(second.keyPem, first.keyPem, 'a fresh key on each rotation');
    assert.ok(second.notAfter > first.notAfter);
    assert.equal(m.current('shop', 'api'), second);
    assert.equal(expired, false);
  } finally {
    clearInterval(keepAlive);
    m.close();
  }
});

test('failures are retried with growing, capped delays, then the certificate arrives', async () => {
  const ca = new TestCa(await newCa());
  ca.failuresLeft = 10;
  const timers = new FakeTimers();
  const m = new IdentityManager({ ca, trustDomain: TD, ttlSeconds: 3600, log, now: () => timers.now, schedule: timers.schedule, random: () => 0.5 });
  try {
    const got = m.get('shop', 'api');
    const delays: number[] = [];
    for (let i = 0; i < 10; i++) {
      const retry = await timers.next();
      delays.push(retry.delay);
      const snap = m.snapshot()[0];
      assert.equal(snap?.state, 'initializing');
      assert.equal(snap?.failures, i + 1);
      assert.equal(snap?.lastError, 'controller unavailable');
      timers.fire(retry);
    }
    const cert = await got;
    assert.deepEqual(delays, [1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000, 150000, 150000]);
    assert.equal(ca.attempts, 11);
    assert.equal(m.snapshot()[0]?.failures, 0);
    // After success the next timer is the renewal at half of the remaining life, not a retry.
    const renew = timers.pending()[0];
    const half = (cert.notAfter.getTime() - timers.now) / 2;
    assert.ok(renew && Math.abs(renew.delay - half) < 1000, `renewal in ${renew?.delay} ms, half-life ${half} ms`);
  } finally {
    m.close();
  }
});

test('retryNow: an identity waiting out a long backoff asks the CA at once when it is back', async () => {
  const ca = new TestCa(await newCa());
  ca.failing = true;
  const timers = new FakeTimers();
  const m = new IdentityManager({ ca, trustDomain: TD, ttlSeconds: 3600, log, now: () => timers.now, schedule: timers.schedule, random: () => 0.5 });
  try {
    const got = m.get('shop', 'api');
    for (let i = 0; i < 8; i++) timers.fire(await timers.next());
    const waiting = await timers.next();
    assert.ok(waiting.delay >= 128_000, `backoff grew to ${waiting.delay} ms`);
    const attempts = ca.attempts;
    ca.failing = false;
    assert.equal(m.retryNow(), 1);
    const cert = await got;
    assert.equal(ca.attempts, attempts + 1, 'asked once, without the timer firing');
    assert.ok(waiting.cancelled, 'the long retry timer is gone');
    assert.equal(m.snapshot()[0]?.failures, 0);
    assert.ok(cert.notAfter.getTime() > timers.now);
    assert.equal(m.retryNow(), 0, 'nothing is waiting any more');
  } finally {
    m.close();
  }
});

test('when renewal keeps failing the old certificate stays in use until it expires, then expired is emitted', async () => {
  const timers = new FakeTimers();
  // The CA shares the fake clock, so "expired" means the same thing to both.
  const ca = new TestCa(await newCa(() => timers.now));
  const m = new IdentityManager({ ca, trustDomain: TD, ttlSeconds: 3600, log, now: () => timers.now, schedule: timers.schedule, random: () => 0.5 });
  try {
    const first = await m.get('shop', 'api');
    ca.failing = true;

    const renewal = timers.pending()[0] as FakeTimer;
    assert.ok(renewal.at < first.notAfter.getTime());
    let retry = timers.next();
    timers.fire(renewal);
    let scheduled = await retry;
    assert.equal(scheduled.delay, 1000, 'first retry after a second');
    assert.equal(m.current('shop', 'api'), first, 'still in use while renewal fails');
    assert.equal(m.snapshot()[0]?.state, 'renewing');

    // A few more failures, still before expiry.
    for (let i = 0; i < 3; i++) {
      retry = timers.next();
      timers.fire(scheduled);
      scheduled = await retry;
      assert.equal(m.current('shop', 'api'), first);
    }
    assert.equal(scheduled.delay, 8000);

    // Just before notAfter it is still served; at notAfter it lapses and 'expired' fires.
    timers.now = first.notAfter.getTime() - 1000;
    assert.equal(m.current('shop', 'api'), first);
    const expiry = timers.pending().find((t) => t.at === first.notAfter.getTime());
    assert.ok(expiry, 'an expiry timer is armed at notAfter');
    const expired = once(m, 'expired');
    timers.fire(expiry);
    const [key, lapsed] = (await expired) as [string, WorkloadCertificate];
    assert.equal(key, 'shop/api');
    assert.equal(lapsed, first);
    assert.equal(m.current('shop', 'api'), undefined);
    assert.equal(m.snapshot()[0]?.state, 'expired');
    assert.equal(m.snapshot()[0]?.secondsToExpiry, 0);

    // The CA comes back: the pending retry brings a new certificate.
    ca.failing = false;
    const rotated = once(m, 'rotated');
    timers.fire(scheduled);
    const [, fresh] = (await rotated) as [string, WorkloadCertificate];
    assert.notEqual(fresh.serial, first.serial);
    assert.equal(m.current('shop', 'api'), fresh);
    assert.equal(m.snapshot()[0]?.state, 'valid');
  } finally {
    m.close();
  }
});

test('a chain the manager cannot use is a failure, retried like any other', async () => {
  const real = await newCa();
  let calls = 0;
  const ca: CaClient = {
    async createCertificate(csrPem, ttl) {
      calls++;
      const { chain } = await real.signWorkloadCsr(csrPem, ttl);
      return calls === 1 ? [chain[0] as string] : chain; // first answer lacks the root
    },
  };
  const timers = new FakeTimers();
  const m = new IdentityManager({ ca, trustDomain: TD, log, now: () => timers.now, schedule: timers.schedule, random: () => 0.5 });
  try {
    const got = m.get('shop', 'api');
    const retry = await timers.next();
    assert.match(m.snapshot()[0]?.lastError ?? '', /unusable chain.*expected leaf\.\.root/);
    timers.fire(retry);
    assert.equal((await got).chainPem.length, 2);
  } finally {
    m.close();
  }
});

test('forget stops renewing and rejects waiters; get can be aborted; close clears everything', async () => {
  const ca = new TestCa(await newCa());
  ca.failing = true;
  const timers = new FakeTimers();
  const m = new IdentityManager({ ca, trustDomain: TD, log, now: () => timers.now, schedule: timers.schedule });
  const waiting = m.get('shop', 'api');
  await timers.next();
  m.forget('shop', 'api');
  await assert.rejects(waiting, (err: unknown) => err instanceof WeftError && err.code === 'WEFT_ERR_IDENTITY' && /no longer needed/.test(err.message));
  assert.equal(timers.pending().length, 0, 'no timer left for a forgotten identity');
  assert.deepEqual(m.snapshot(), []);

  const ac = new AbortController();
  const aborted = m.get('shop', 'web', { signal: ac.signal });
  await timers.next();
  ac.abort();
  await assert.rejects(aborted, /no certificate for spiffe:\/\/cluster\.local\/ns\/shop\/sa\/web yet \(last error: controller unavailable\)/);

  m.ensure('a', 'b');
  m.close();
  assert.equal(timers.pending().length, 0);
  assert.throws(() => m.ensure('a', 'b'), /closed/);
});

test('get with a deadline: rejects with WEFT_ERR_IDENTITY naming the last error, while the fetch goes on', async () => {
  const ca = new TestCa(await newCa());
  ca.failing = true;
  const timers = new FakeTimers();
  const m = new IdentityManager({ ca, trustDomain: TD, log, now: () => timers.now, schedule: timers.schedule, random: () => 0.5 });
  try {
    const waiting = m.get('shop', 'api', { timeoutMs: 500 });
    const deadline = timers.pending().find((t) => t.delay === 500);
    assert.ok(deadline, 'a deadline timer is armed');
    const retry = await timers.next(); // the first fetch failed
    assert.equal(retry.delay, 1000);
    timers.fire(deadline); // half a second in: the retry is due in another half

    await assert.rejects(waiting, (err: unknown) => {
      assert.ok(err instanceof CertificateTimeoutError, String(err));
      assert.ok(err instanceof WeftError);
      assert.equal(err.code, 'WEFT_ERR_IDENTITY');
      assert.equal(err.timeoutMs, 500);
      assert.match(err.message, /no certificate for spiffe:\/\/cluster\.local\/ns\/shop\/sa\/api within 500 ms \(last error: controller unavailable; next attempt in 1 s\)/);
      return true;
    });
    // The background fetch was not abandoned: its retry brings the certificate.
    ca.failing = false;
    const rotated = once(m, 'rotated');
    timers.fire(retry);
    await rotated;
    assert.ok(m.current('shop', 'api'));

    // A certificate that arrives in time wins, and its deadline timer is cancelled.
    const second = m.get('shop', 'web', { timeoutMs: 5000 });
    const cert = await second;
    assert.equal(cert.id.serviceAccount, 'web');
    assert.ok(!timers.pending().some((t) => t.delay === 5000), 'no deadline left armed');
    // With a certificate at hand the deadline does not matter; a zero deadline without one fails at once.
    assert.equal(await m.get('shop', 'web', { timeoutMs: 0 }), cert);
    ca.failing = true;
    await assert.rejects(m.get('shop', 'db', { timeoutMs: 0 }), /no certificate for spiffe:\/\/cluster\.local\/ns\/shop\/sa\/db within 0 ms/);
    await assert.rejects(m.get('shop', 'db', { timeoutMs: -1 }), /timeoutMs must be a non-negative number/);
  } finally {
    m.close();
  }
});

test('get with a deadline on real timers: a CA that never answers is given up on in time', async () => {
  const hung: CaClient = { createCertificate: () => new Promise<string[]>(() => undefined) };
  const m = new IdentityManager({ ca: hung, trustDomain: TD, log });
  const keepAlive = setInterval(() => undefined, 1000);
  try {
    const t = performance.now();
    await assert.rejects(m.get('shop', 'api', { timeoutMs: 100 }), /within 100 ms \(the CA has not answered yet\)/);
    const took = performance.now() - t;
    assert.ok(took >= 95 && took < 1000, `gave up after ${took.toFixed(0)} ms`);
    assert.equal(m.snapshot()[0]?.state, 'initializing');
  } finally {
    clearInterval(keepAlive);
    m.close();
  }
});

/** A CA client over one real CA per trust domain, picking by the identity the CSR asks for. */
class TwoDomainCa implements CaClient {
  attempts = 0;
  gate: Promise<void> | undefined;
  private asked: () => void = () => undefined;
  /** Resolves when the first request reaches the CA. */
  readonly firstRequest = new Promise<void>((resolve) => (this.asked = resolve));
  constructor(private readonly cas: Map<string, CertificateAuthority>) {}
  async createCertificate(csrPem: string, ttlSeconds: number): Promise<string[]> {
    this.attempts++;
    this.asked();
    const gate = this.gate;
    if (gate) await gate;
    const ca = this.cas.get(checkCsr(csrPem).identity.trustDomain);
    if (!ca) throw new Error('no CA for that trust domain');
    return (await ca.signWorkloadCsr(csrPem, ttlSeconds)).chain;
  }
}

async function twoDomainCa(): Promise<TwoDomainCa> {
  const other = mkdtempSync(join(tmpdir(), 'weft-idm-'));
  dirs.push(other);
  return new TwoDomainCa(new Map([
    [TD, await newCa()],
    ['new.local', await CertificateAuthority.loadOrCreate({ dir: other, trustDomain: 'new.local' })],
  ]));
}

test('setTrustDomain re-issues every certificate in the new domain; the old one serves until then', async () => {
  const ca = await twoDomainCa();
  const timers = new FakeTimers();
  const m = new IdentityManager({ ca, trustDomain: TD, log, now: () => timers.now, schedule: timers.schedule, random: () => 0.5 });
  try {
    const oldApi = await m.get('shop', 'api');
    const oldWeb = await m.get('shop', 'web');
    assert.equal(m.setTrustDomain(TD), false, 'same domain: nothing to do');
    assert.equal(ca.attempts, 2);
    assert.throws(() => m.setTrustDomain('Bad Domain'), (err: unknown) => err instanceof WeftError && err.code === 'WEFT_ERR_IDENTITY');

    const rotations: WorkloadCertificate[] = [];
    const both = new Promise<void>((resolve) =>
      m.on('rotated', (_key: string, cert: WorkloadCertificate) => {
        rotations.push(cert);
        if (rotations.length === 2) resolve();
      }),
    );
    assert.equal(m.setTrustDomain('new.local'), true);
    assert.equal(m.trustDomain, 'new.local');
    // Until the new certificates arrive the old ones stay in use, and the snapshot says so.
    assert.equal(m.current('shop', 'api'), oldApi);
    const during = m.snapshot().find((s) => s.identity.endsWith('/sa/api'));
    assert.equal(during?.identity, 'spiffe://new.local/ns/shop/sa/api');
    assert.equal(during?.certIdentity, 'spiffe://cluster.local/ns/shop/sa/api');
    assert.equal(during?.state, 'renewing');
    await both;
    assert.deepEqual(rotations.map((c) => c.id.trustDomain), ['new.local', 'new.local']);
    const newApi = m.current('shop', 'api');
    assert.equal(newApi?.id.trustDomain, 'new.local');
    assert.notEqual(newApi?.serial, oldApi.serial);
    assert.equal(m.current('shop', 'web')?.id.trustDomain, 'new.local');
    assert.notEqual(m.current('shop', 'web')?.rootPem, oldWeb.rootPem);
    const after = m.snapshot().find((s) => s.identity.endsWith('/sa/api'));
    assert.equal(after?.state, 'valid');
    assert.equal(after?.certIdentity, undefined);
    // The renewals armed for the old certificates were replaced: one renewal per identity, for the new ones.
    // (Renewals are due at about half of the 24 h lifetime; expiry timers at its end.)
    const renewals = timers.pending().filter((t) => t.delay > 60_000 && t.delay < 13 * 3_600_000);
    assert.equal(renewals.length, 2);
    // Identities asked for from now on are in the new domain.
    assert.equal((await m.get('shop', 'db')).id.trustDomain, 'new.local');
  } finally {
    m.close();
  }
});

test('setTrustDomain while a fetch is in flight: the answer for the old domain is dropped and the new one asked for', async () => {
  const ca = await twoDomainCa();
  let open: () => void = () => undefined;
  ca.gate = new Promise<void>((resolve) => (open = resolve));
  const m = new IdentityManager({ ca, trustDomain: TD, log });
  try {
    const rotated: WorkloadCertificate[] = [];
    m.on('rotated', (_k: string, c: WorkloadCertificate) => rotated.push(c));
    const waiting = m.get('shop', 'api');
    await ca.firstRequest; // the CSR for the old domain is with the CA
    m.setTrustDomain('new.local');
    ca.gate = undefined;
    open();
    const cert = await waiting;
    assert.equal(cert.id.trustDomain, 'new.local');
    assert.equal(ca.attempts, 2);
    assert.deepEqual(rotated.map((c) => c.id.trustDomain), ['new.local'], 'the old-domain answer was never installed');
  } finally {
    m.close();
  }
});

test('snapshot: last error with its time and the next retry while failing; the renewal time once valid', async () => {
  const timers = new FakeTimers();
  const ca = new TestCa(await newCa(() => timers.now));
  ca.failuresLeft = 2;
  const m = new IdentityManager({ ca, trustDomain: TD, ttlSeconds: 3600, log, now: () => timers.now, schedule: timers.schedule, random: () => 0.5 });
  try {
    const got = m.get('shop', 'api');
    let retry = await timers.next();
    let snap = m.snapshot()[0];
    assert.equal(snap?.lastError, 'controller unavailable');
    assert.equal(snap?.lastErrorAt, new Date(timers.now).toISOString());
    assert.equal(snap?.nextRetryAt, new Date(timers.now + 1000).toISOString());
    assert.equal(snap?.renewAt, undefined);
    const next = timers.next();
    timers.fire(retry);
    retry = await next;
    snap = m.snapshot()[0];
    assert.equal(snap?.failures, 2);
    assert.equal(snap?.nextRetryAt, new Date(timers.now + 2000).toISOString());
    timers.fire(retry);
    const cert = await got;
    snap = m.snapshot()[0];
    assert.equal(snap?.state, 'valid');
    assert.equal(snap?.nextRetryAt, undefined);
    assert.equal(snap?.lastError, undefined);
    assert.equal(snap?.lastErrorAt, undefined);
    assert.equal(snap?.notAfter, cert.notAfter.toISOString());
    const renewAt = Date.parse(snap?.renewAt ?? '');
    assert.ok(renewAt > timers.now && renewAt < cert.notAfter.getTime(), `renewal at ${snap?.renewAt}`);
    assert.ok(Math.abs(renewAt - (timers.pending()[0]?.at ?? 0)) < 1, 'the renewal timer fires at renewAt');
  } finally {
    m.close();
  }
});
