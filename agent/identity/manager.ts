// The node agent's workload certificates: one per (namespace, service account) that a local
// workload needs, fetched ahead of need, renewed at half-life, retried with capped exponential
// backoff, and kept in use until it really expires when the CA cannot be reached. Callers may bound
// how long they wait for a first certificate (the fetch goes on in the background), and the trust
// domain follows the controller's: a change re-issues every certificate for the new domain.
import { AgentDefaults } from '../config.js';
import { EventEmitter } from 'node:events';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import type { Logger } from '../log.js';
import { ErrorCodes, WeftError, errorMessage } from '../errors.js';
import { createKeyAndCsr } from './csr.js';
import { formatSpiffeId, isValidTrustDomain, sameSpiffeId, spiffeIdOfCert, validateSpiffeId, type SpiffeId } from './spiffe.js';

/** What the manager needs of the CA: Istio's CreateCertificate (CSR and lifetime in, chain out). */
export interface CaClient {
  /** Resolves to the PEM chain, leaf first, root last. */
  createCertificate(csrPem: string, ttlSeconds: number): Promise<string[]>;
}

export interface WorkloadCertificate {
  id: SpiffeId;
  certPem: string;
  keyPem: string;
  /** Leaf first, root last. */
  chainPem: string[];
  rootPem: string;
  /** Hex, as Node's X509Certificate prints it. Changes on every rotation. */
  serial: string;
  notBefore: Date;
  notAfter: Date;
}

/** A cancellable timer; the default runs on setTimeout and never keeps the process alive. */
export interface Timer {
  cancel(): void;
}
export type Schedule = (fn: () => void, delayMs: number) => Timer;

export interface IdentityManagerOptions {
  ca: CaClient;
  trustDomain: string;
  /** Requested certificate lifetime; default 24 h. */
  ttlSeconds?: number;
  log: Logger;
  /** The clock, ms since the epoch. */
  now?: () => number;
  /** Tests replace the timers to observe and drive retries without waiting. */
  schedule?: Schedule;
  /** In [0, 1); spreads retries of many nodes so they do not hit a recovering CA together. */
  random?: () => number;
}

export type CertState = 'initializing' | 'valid' | 'renewing' | 'expired';

export interface CertSnapshot {
  /** The identity wanted (in the manager's current trust domain). */
  identity: string;
  state: CertState;
  /** The identity of the certificate held, when it differs from `identity` (a trust domain change in progress). */
  certIdentity?: string;
  serial?: string;
  notBefore?: string;
  notAfter?: string;
  secondsToExpiry?: number;
  /** Failed fetches since the last success. */
  failures: number;
  lastError?: string;
  /** When the last failure happened (ISO). */
  lastErrorAt?: string;
  /** When the next attempt after a failure is due (ISO); absent when none is pending. */
  nextRetryAt?: string;
  /** When the certificate held will be renewed (ISO); absent while retrying or fetching. */
  renewAt?: string;
}

/** `get` gave up waiting: no certificate arrived within `timeoutMs` (fetching goes on). */
export class CertificateTimeoutError extends WeftError {
  readonly timeoutMs: number;
  constructor(message: string, timeoutMs: number) {
    super(ErrorCodes.IDENTITY, message);
    this.name = 'CertificateTimeoutError';
    this.timeoutMs = timeoutMs;
  }
}

export const INITIAL_BACKOFF_MS = 1_000;
export const MAX_BACKOFF_MS = 150_000;
const JITTER = 0.1;
// setTimeout fires at once for delays above 2^31-1 ms; longer waits re-arm when they fire.
const MAX_TIMER_MS = 2 ** 31 - 1;
// Never renew in a tight loop, even if the CA hands out nearly expired certificates.
const MIN_RENEW_DELAY_MS = 100;

const defaultSchedule: Schedule = (fn, delayMs) => {
  const t = setTimeout(fn, Math.min(Math.max(0, delayMs), MAX_TIMER_MS));
  t.unref();
  return { cancel: () => clearTimeout(t) };
};

/** The retry delay after `failures` consecutive failures (1-based): 1 s doubling, ±10%, at most 150 s. */
export function backoffDelayMs(failures: number, random: () => number = Math.random): number {
  const base = Math.min(INITIAL_BACKOFF_MS * 2 ** Math.max(0, failures - 1), MAX_BACKOFF_MS);
  return Math.min(base * (1 + JITTER * (2 * random() - 1)), MAX_BACKOFF_MS);
}

/**
 * Checks that a chain from the CA is ours to use: the leaf names the identity we asked for and
 * matches our key, each certificate is signed by the next, the last is a self-signed root, and the
 * leaf has not expired at `now` (ms).
 */
export function workloadCertificateFromChain(id: SpiffeId, keyPem: string, chainPem: string[], now: number = Date.now()): WorkloadCertificate {
  const bad = (why: string): WeftError => new WeftError(ErrorCodes.IDENTITY, `CA returned an unusable chain for ${formatSpiffeId(id)}: ${why}`);
  if (chainPem.length < 2) throw bad(`expected leaf..root, got ${chainPem.length} certificate(s)`);
  let chain: X509Certificate[];
  try {
    chain = chainPem.map((pem) => new X509Certificate(pem));
  } catch (err) {
    throw bad(`unparseable certificate (${errorMessage(err)})`);
  }
  const leaf = chain[0] as X509Certificate;
  const root = chain[chain.length - 1] as X509Certificate;
  const leafId = spiffeIdOfCert(leaf);
  if (!sameSpiffeId(leafId, id)) throw bad(`leaf is for ${formatSpiffeId(leafId)}`);
  if (!leaf.checkPrivateKey(createPrivateKey(keyPem))) throw bad('leaf does not match the requested key');
  for (let i = 0; i + 1 < chain.length; i++) {
    const child = chain[i] as X509Certificate;
    const parent = chain[i + 1] as X509Certificate;
    if (!child.checkIssued(parent) || !child.verify(parent.publicKey)) throw bad(`certificate ${i} is not signed by certificate ${i + 1}`);
  }
  if (!root.checkIssued(root) || !root.verify(root.publicKey)) throw bad('the last certificate is not a self-signed root');
  const notBefore = new Date(leaf.validFrom);
  const notAfter = new Date(leaf.validTo);
  if (notAfter.getTime() <= now) throw bad(`leaf already expired at ${notAfter.toISOString()}`);
  return {
    id,
    certPem: chainPem[0] as string,
    keyPem,
    chainPem: [...chainPem],
    rootPem: chainPem[chainPem.length - 1] as string,
    serial: leaf.serialNumber,
    notBefore,
    notAfter,
  };
}

interface Waiter {
  resolve(cert: WorkloadCertificate): void;
  reject(err: Error): void;
}

interface Entry {
  key: string;
  id: SpiffeId;
  cert?: WorkloadCertificate;
  fetching: boolean;
  failures: number;
  lastError?: string;
  lastErrorAt?: number;
  /** The next renewal or retry. */
  timer?: Timer;
  /** When `timer` fires (ms) and what for. */
  nextAt?: number;
  nextKind?: 'renewal' | 'retry';
  /** Fires when the current certificate lapses, unless a new one arrives first. */
  expiryTimer?: Timer;
  expired: boolean;
  waiters: Waiter[];
}

/** A certificate and its key as one agent hands them to the next. */
export interface HandedCertificate {
  namespace: string;
  serviceAccount: string;
  keyPem: string;
  chainPem: string[];
}

export function identityKey(namespace: string, serviceAccount: string): string {
  return `${namespace}/${serviceAccount}`;
}

/**
 * Events: `'rotated'(key, cert)` on every new certificate (the first one included);
 * `'expired'(key, cert)` when a certificate lapsed and no replacement could be fetched.
 * Keys are `<namespace>/<serviceAccount>`.
 */
export class IdentityManager extends EventEmitter {
  private readonly ca: CaClient;
  private td: string;
  readonly ttlSeconds: number;
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly schedule: Schedule;
  private readonly random: () => number;
  private readonly entries = new Map<string, Entry>();
  private closed = false;

  constructor(options: IdentityManagerOptions) {
    super();
    if (!isValidTrustDomain(options.trustDomain)) throw new WeftError(ErrorCodes.IDENTITY, `invalid trust domain ${JSON.stringify(options.trustDomain)}`);
    const ttl = options.ttlSeconds ?? AgentDefaults.certTtlSeconds;
    if (!Number.isFinite(ttl) || ttl <= 0) throw new WeftError(ErrorCodes.IDENTITY, `ttlSeconds must be positive, got ${ttl}`);
    this.ca = options.ca;
    this.td = options.trustDomain;
    this.ttlSeconds = ttl;
    this.log = options.log;
    this.now = options.now ?? Date.now;
    this.schedule = options.schedule ?? defaultSchedule;
    this.random = options.random ?? Math.random;
  }

  /** The trust domain certificates are requested in. */
  get trustDomain(): string {
    return this.td;
  }

  /**
   * Follows the controller's trust domain: every identity is requested again in `trustDomain`, at
   * once and with a fresh backoff. The certificate held stays in use until its replacement arrives
   * (peers not yet switched still accept it) or it expires. Returns false when nothing changed.
   */
  setTrustDomain(trustDomain: string): boolean {
    if (!isValidTrustDomain(trustDomain)) throw new WeftError(ErrorCodes.IDENTITY, `invalid trust domain ${JSON.stringify(trustDomain)}`);
    if (this.closed || trustDomain === this.td) return false;
    const from = this.td;
    this.td = trustDomain;
    this.log.info({ from, to: trustDomain, identities: this.entries.size }, 'trust domain changed; re-issuing certificates');
    for (const entry of this.entries.values()) {
      entry.id = { ...entry.id, trustDomain };
      entry.failures = 0;
      entry.lastError = undefined;
      entry.lastErrorAt = undefined;
      // A fetch in flight asks for the old domain: fetch() sees that when it returns and asks again.
      if (!entry.fetching) void this.fetch(entry);
    }
    return true;
  }

  /**
   * Take over a certificate another agent holds (the upgrade hand-over), so the pods it serves need
   * no round trip to the CA: checked like one from the CA (the chain, the identity, still valid), then
   * renewed on the usual schedule. Returns false (and fetches as usual) when it cannot be used.
   */
  adopt(handed: HandedCertificate): boolean {
    if (this.closed) return false;
    const key = identityKey(handed.namespace, handed.serviceAccount);
    if (this.entries.get(key)?.cert) return false;
    let cert: WorkloadCertificate;
    try {
      const id = validateSpiffeId({ trustDomain: this.td, namespace: handed.namespace, serviceAccount: handed.serviceAccount });
      cert = workloadCertificateFromChain(id, handed.keyPem, handed.chainPem, this.now());
      if (this.now() >= cert.notAfter.getTime()) throw new WeftError(ErrorCodes.IDENTITY, 'expired');
    } catch (err) {
      this.log.warn({ identity: key, err: errorMessage(err) }, 'handed-over certificate not usable; fetching a new one');
      return false;
    }
    let entry = this.entries.get(key);
    if (!entry) {
      entry = { key, id: cert.id, fetching: false, failures: 0, expired: false, waiters: [] };
      this.entries.set(key, entry);
    }
    entry.cert = cert;
    if (!entry.fetching) this.armTimers(entry, cert);
    const waiters = entry.waiters;
    entry.waiters = [];
    for (const w of waiters) w.resolve(cert);
    return true;
  }

  /** Starts fetching the identity's certificate if nobody asked for it yet (prefetch). */
  ensure(namespace: string, serviceAccount: string): void {
    this.entry(namespace, serviceAccount);
  }

  /**
   * The valid certificate, waiting for the first fetch if needed. Retries go on until one succeeds;
   * `timeoutMs` bounds the wait (a CertificateTimeoutError, WEFT_ERR_IDENTITY, naming the last error)
   * and `signal` abandons it, neither stopping the fetch. `forget` and `close` reject waiters.
   */
  async get(namespace: string, serviceAccount: string, options: { signal?: AbortSignal; timeoutMs?: number } = {}): Promise<WorkloadCertificate> {
    const { signal, timeoutMs } = options;
    if (timeoutMs !== undefined && !(timeoutMs >= 0 && Number.isFinite(timeoutMs))) {
      throw new WeftError(ErrorCodes.IDENTITY, `timeoutMs must be a non-negative number, got ${timeoutMs}`);
    }
    const entry = this.entry(namespace, serviceAccount);
    const valid = this.validCert(entry);
    if (valid) return valid;
    if (signal?.aborted) throw this.abortError(entry, signal);
    if (timeoutMs === 0) throw this.timeoutError(entry, 0);
    return new Promise<WorkloadCertificate>((resolve, reject) => {
      let deadline: Timer | undefined;
      const leave = (): void => {
        entry.waiters = entry.waiters.filter((w) => w !== waiter);
        signal?.removeEventListener('abort', onAbort);
        deadline?.cancel();
      };
      const onAbort = (): void => {
        leave();
        reject(this.abortError(entry, signal as AbortSignal));
      };
      const waiter: Waiter = {
        resolve: (cert) => {
          leave();
          resolve(cert);
        },
        reject: (err) => {
          leave();
          reject(err);
        },
      };
      entry.waiters.push(waiter);
      signal?.addEventListener('abort', onAbort, { once: true });
      if (timeoutMs !== undefined) {
        deadline = this.schedule(() => {
          leave();
          reject(this.timeoutError(entry, timeoutMs));
        }, timeoutMs);
      }
    });
  }

  /** The certificate to use now, or undefined if there is none or it has expired. */
  current(namespace: string, serviceAccount: string): WorkloadCertificate | undefined {
    const entry = this.entries.get(identityKey(namespace, serviceAccount));
    return entry ? this.validCert(entry) : undefined;
  }

  /** No local workload needs this identity any more: stop renewing it and drop the key. */
  forget(namespace: string, serviceAccount: string): void {
    const key = identityKey(namespace, serviceAccount);
    const entry = this.entries.get(key);
    if (!entry) return;
    this.entries.delete(key);
    this.stopTimers(entry);
    this.rejectWaiters(entry, new WeftError(ErrorCodes.IDENTITY, `identity ${formatSpiffeId(entry.id)} is no longer needed on this node`));
    this.log.debug({ identity: formatSpiffeId(entry.id) }, 'identity forgotten');
  }

  /** The identities this node holds certificates for (or is fetching). */
  keys(): string[] {
    return [...this.entries.keys()];
  }

  close(): void {
    this.closed = true;
    for (const entry of [...this.entries.values()]) {
      this.entries.delete(entry.key);
      this.stopTimers(entry);
      this.rejectWaiters(entry, new WeftError(ErrorCodes.IDENTITY, 'identity manager closed'));
    }
  }

  /** For the admin cert dump. */
/** The valid certificates with their keys, for the next agent (upgrade hand-over; never logged). */
  exportCertificates(): HandedCertificate[] {
    const out: HandedCertificate[] = [];
    for (const e of this.entries.values()) {
      const cert = this.validCert(e);
      if (cert) out.push({ namespace: cert.id.namespace, serviceAccount: cert.id.serviceAccount, keyPem: cert.keyPem, chainPem: cert.chainPem });
    }
    return out;
  }

    snapshot(): CertSnapshot[] {
    const now = this.now();
    return [...this.entries.values()]
      .sort((a, b) => a.key.localeCompare(b.key))
      .map((e) => {
        const out: CertSnapshot = { identity: formatSpiffeId(e.id), state: this.stateOf(e), failures: e.failures };
        if (e.cert) {
          if (!sameSpiffeId(e.cert.id, e.id)) out.certIdentity = formatSpiffeId(e.cert.id);
          out.serial = e.cert.serial;
          out.notBefore = e.cert.notBefore.toISOString();
          out.notAfter = e.cert.notAfter.toISOString();
          out.secondsToExpiry = Math.max(0, Math.floor((e.cert.notAfter.getTime() - now) / 1000));
        }
        if (e.lastError !== undefined) out.lastError = e.lastError;
        if (e.lastErrorAt !== undefined) out.lastErrorAt = new Date(e.lastErrorAt).toISOString();
        if (e.nextAt !== undefined && e.timer !== undefined) {
          if (e.nextKind === 'retry') out.nextRetryAt = new Date(e.nextAt).toISOString();
          else out.renewAt = new Date(e.nextAt).toISOString();
        }
        return out;
      });
  }

  /**
   * The CA is reachable again (the control-plane stream is back): every identity waiting out a retry
   * backoff asks now, instead of a timer that may be minutes away while its certificate expires.
   * Returns how many were retried.
   */
  retryNow(): number {
    let n = 0;
    for (const e of this.entries.values()) {
      if (e.fetching || e.nextKind !== 'retry' || e.timer === undefined) continue;
      n++;
      void this.fetch(e);
    }
    return n;
  }

  private stateOf(e: Entry): CertState {
    if (!e.cert) return 'initializing';
    if (!this.validCert(e)) return 'expired';
    return e.fetching || e.failures > 0 || !sameSpiffeId(e.cert.id, e.id) ? 'renewing' : 'valid';
  }

  private entry(namespace: string, serviceAccount: string): Entry {
    if (this.closed) throw new WeftError(ErrorCodes.IDENTITY, 'identity manager closed');
    const key = identityKey(namespace, serviceAccount);
    let entry = this.entries.get(key);
    if (!entry) {
      const id = validateSpiffeId({ trustDomain: this.td, namespace, serviceAccount });
      entry = { key, id, fetching: false, failures: 0, expired: false, waiters: [] };
      this.entries.set(key, entry);
      void this.fetch(entry);
    }
    return entry;
  }

  private validCert(entry: Entry): WorkloadCertificate | undefined {
    const cert = entry.cert;
    return cert && this.now() < cert.notAfter.getTime() ? cert : undefined;
  }

  private async fetch(entry: Entry): Promise<void> {
    if (entry.fetching) return;
    entry.fetching = true;
    entry.timer?.cancel();
    entry.timer = undefined;
    entry.nextAt = undefined;
    const id = entry.id;
    const identity = formatSpiffeId(id);
    let cert: WorkloadCertificate;
    try {
      const { keyPem, csrPem } = await createKeyAndCsr(id);
      const chain = await this.ca.createCertificate(csrPem, this.ttlSeconds);
      cert = workloadCertificateFromChain(id, keyPem, chain, this.now());
    } catch (err) {
      entry.fetching = false;
      if (this.entries.get(entry.key) !== entry) return; // forgotten meanwhile
      if (!sameSpiffeId(id, entry.id)) return void this.fetch(entry); // the trust domain changed meanwhile
      entry.failures += 1;
      entry.lastError = errorMessage(err);
      entry.lastErrorAt = this.now();
      const delay = backoffDelayMs(entry.failures, this.random);
      this.log.warn({ identity, failures: entry.failures, retryInMs: Math.round(delay), err: entry.lastError, certValid: this.validCert(entry) !== undefined }, 'certificate fetch failed');
      entry.timer = this.schedule(() => void this.fetch(entry), delay);
      entry.nextAt = this.now() + delay;
      entry.nextKind = 'retry';
      return;
    }
    entry.fetching = false;
    if (this.entries.get(entry.key) !== entry) return;
    if (!sameSpiffeId(id, entry.id)) return void this.fetch(entry);
    entry.cert = cert;
    entry.failures = 0;
    entry.lastError = undefined;
    entry.lastErrorAt = undefined;
    entry.expired = false;
    this.armTimers(entry, cert);
    this.log.info({ identity, serial: cert.serial, notAfter: cert.notAfter.toISOString() }, 'certificate rotated');
    const waiters = entry.waiters;
    entry.waiters = [];
    for (const w of waiters) w.resolve(cert);
    this.emit('rotated', entry.key, cert);
  }

  private armTimers(entry: Entry, cert: WorkloadCertificate): void {
    const now = this.now();
    // Half of the lifetime that is left, measured from when we got it: the CA backdates notBefore
    // for clock skew, which must not pull renewal earlier (with a short TTL, into the past).
    const from = Math.max(cert.notBefore.getTime(), now);
    const renewAt = from + (cert.notAfter.getTime() - from) / 2;
    entry.timer?.cancel();
    entry.timer = this.scheduleAt(renewAt, MIN_RENEW_DELAY_MS, () => void this.fetch(entry));
    entry.nextAt = Math.max(renewAt, now + MIN_RENEW_DELAY_MS);
    entry.nextKind = 'renewal';
    entry.expiryTimer?.cancel();
    entry.expiryTimer = this.scheduleAt(cert.notAfter.getTime(), 0, () => {
      entry.expiryTimer = undefined;
      if (entry.cert !== cert || entry.expired) return;
      entry.expired = true;
      this.log.error({ identity: formatSpiffeId(entry.id), serial: cert.serial, failures: entry.failures, err: entry.lastError }, 'certificate expired without a replacement');
      this.emit('expired', entry.key, cert);
    });
  }

  /** Runs fn at time `at` (ms), re-arming when a long wait is cut short by the timer limit. */
  private scheduleAt(at: number, minDelay: number, fn: () => void): Timer {
    let timer: Timer;
    const arm = (): void => {
      const delay = Math.max(minDelay, at - this.now());
      timer = this.schedule(() => {
        if (at - this.now() > MIN_RENEW_DELAY_MS && delay >= MAX_TIMER_MS) arm();
        else fn();
      }, delay);
    };
    arm();
    return { cancel: () => timer.cancel() };
  }

  private stopTimers(entry: Entry): void {
    entry.timer?.cancel();
    entry.expiryTimer?.cancel();
    entry.timer = undefined;
    entry.expiryTimer = undefined;
    entry.nextAt = undefined;
  }

  private rejectWaiters(entry: Entry, err: Error): void {
    const waiters = entry.waiters;
    entry.waiters = [];
    for (const w of waiters) w.reject(err);
  }

  private timeoutError(entry: Entry, timeoutMs: number): CertificateTimeoutError {
    const retry = entry.timer !== undefined && entry.nextKind === 'retry' && entry.nextAt !== undefined ? `; next attempt in ${Math.max(0, Math.ceil((entry.nextAt - this.now()) / 1000))} s` : '';
    const why = entry.lastError ? ` (last error: ${entry.lastError}${retry})` : entry.fetching ? ' (the CA has not answered yet)' : '';
    return new CertificateTimeoutError(`no certificate for ${formatSpiffeId(entry.id)} within ${timeoutMs} ms${why}`, timeoutMs);
  }

  private abortError(entry: Entry, signal: AbortSignal): WeftError {
    return new WeftError(ErrorCodes.IDENTITY, `no certificate for ${formatSpiffeId(entry.id)} yet${entry.lastError ? ` (last error: ${entry.lastError})` : ''}`, { cause: signal.reason });
  }
}
