// The Observer serving certificate from the controller's CA, for agents that hold no files from it (on
// Kubernetes the agent authenticates with a service-account token): a fresh ECDSA P-256 key and a CSR
// for spiffe://<td>/weft/node/<node>, signed over CreateCertificate, renewed at half-life with a new key,
// retried with capped exponential backoff while the last certificate stays served. What comes back is
// checked before it is served: the node's identity and nothing else, serverAuth, our key, the root.
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { AgentDefaults } from '../config.js';
import { ErrorCodes, WeftError, errorMessage } from '../errors.js';
import { buildCsr, generateEcKeyPem } from '../identity/csr.js';
import { uriSansOf } from '../identity/spiffe.js';
import type { Logger } from '../log.js';
import { setLongTimeout, type LongTimer } from '../system/long-timeout.js';
import { nodeObserverIdentity, type TlsCredential } from './observer-tls.js';

/** What signs the CSR: the agent's controller client (ControllerClient.createCertificate). */
export interface ObserverCertificateSigner {
  createCertificate(csrPem: string, ttlSeconds: number): Promise<string[]>;
}

export interface ObserverCertRenewerOptions {
  signer: ObserverCertificateSigner;
  trustDomain: string;
  node: string;
  /** The mesh root: clients must chain to it, and so must what the controller returns. */
  rootCertPem: string;
  /** Lifetime to ask for (the controller may shorten it); default AgentDefaults.observerCertTtlSeconds. */
  ttlSeconds?: number;
  log: Logger;
  /** Retry delays after a failed fetch (default 1 s doubling to 30 s). */
  backoff?: { initialMs: number; maxMs: number };
  now?: () => number;
}

const SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
/** Never renew sooner than this after a success: a certificate shorter than two of these is renewed this often. */
const MIN_RENEW_MS = 1000;

function tlsError(message: string, cause?: unknown): WeftError {
  return new WeftError(ErrorCodes.TLS, message, cause === undefined ? undefined : { cause });
}

/** Why a returned chain is not this node's Observer serving certificate for `keyPem`, or undefined. */
export function observerChainProblem(chain: readonly string[], keyPem: string, identity: string, rootCertPem: string): string | undefined {
  let leaf: X509Certificate;
  let root: X509Certificate;
  try {
    leaf = new X509Certificate(chain[0] ?? '');
    root = new X509Certificate(rootCertPem);
  } catch (err) {
    return `unreadable certificate: ${errorMessage(err)}`;
  }
  const uris = uriSansOf(leaf);
  if (uris.length !== 1 || uris[0] !== identity) return `it names ${uris.join(', ') || 'no URI'}, not ${identity}`;
  if (!leaf.checkPrivateKey(createPrivateKey(keyPem))) return 'it is not for the key the CSR was made with';
  if (!leaf.verify(root.publicKey) || !leaf.checkIssued(root)) return 'it is not signed by the mesh root';
  if (!(leaf.keyUsage ?? []).includes(SERVER_AUTH)) return 'it lacks extended key usage serverAuth';
  return undefined;
}

/** Fetches the node's Observer serving credential once. */
export async function fetchObserverCredential(o: Pick<ObserverCertRenewerOptions, 'signer' | 'trustDomain' | 'node' | 'rootCertPem' | 'ttlSeconds'>): Promise<TlsCredential> {
  const identity = nodeObserverIdentity(o.trustDomain, o.node);
  const keyPem = await generateEcKeyPem();
  const chain = await o.signer.createCertificate(buildCsr(keyPem, [identity]), o.ttlSeconds ?? AgentDefaults.observerCertTtlSeconds);
  const problem = observerChainProblem(chain, keyPem, identity, o.rootCertPem);
  if (problem) throw tlsError(`the controller's Observer certificate for node "${o.node}" is unusable: ${problem}`);
  // Serve the leaf (and any intermediates), never the root itself: clients hold it already.
  const certPem = chain.slice(0, Math.max(1, chain.length - 1)).join('\n');
  return { rootCertPem: o.rootCertPem, certPem, keyPem };
}

/**
 * Keeps the node's Observer serving credential fresh: fetched at start, then again when half of the
 * current one's lifetime has passed; a failure is retried with backoff (never later than the current
 * certificate's expiry would allow), and the certificate in force stays served meanwhile.
 */
export class ObserverCertRenewer extends EventEmitter<{ credential: [TlsCredential] }> {
  private timer: LongTimer | undefined;
  private stopped = false;
  private delayMs: number;
  private notAfter = 0;
  private onCredential: ((c: TlsCredential) => void) | undefined;

  constructor(private readonly o: ObserverCertRenewerOptions) {
    super();
    this.delayMs = o.backoff?.initialMs ?? 1000;
  }

  /** The identity the credential carries. */
  get identity(): string {
    return nodeObserverIdentity(this.o.trustDomain, this.o.node);
  }

  /** Starts fetching; `onCredential` gets every new credential (the first one as soon as it is signed). */
  start(onCredential: (c: TlsCredential) => void): void {
    if (this.onCredential) throw tlsError('ObserverCertRenewer.start was already called');
    this.onCredential = onCredential;
    this.schedule(0);
  }

  /** Fetches now (also what the timer calls); resolves once the new credential was handed over, or the failure handled. */
  async renewNow(): Promise<void> {
    this.timer?.clear();
    this.timer = undefined;
    const now = this.o.now ?? Date.now;
    try {
      // Half-life from when we asked: notBefore is back-dated for clock skew and would renew too soon.
      const askedAt = now();
      const cred = await fetchObserverCredential(this.o);
      if (this.stopped) return;
      const cert = new X509Certificate(cred.certPem);
      this.notAfter = Date.parse(cert.validTo);
      this.onCredential?.(cred);
      this.emit('credential', cred);
      this.delayMs = this.o.backoff?.initialMs ?? 1000;
      const renewAt = Math.max(askedAt + (this.notAfter - askedAt) / 2, now() + MIN_RENEW_MS);
      this.o.log.info({ identity: this.identity, serial: cert.serialNumber, notAfter: cert.validTo, renewInMs: Math.max(0, renewAt - now()) }, 'observer serving certificate in force');
      this.schedule(renewAt - now());
    } catch (err) {
      if (this.stopped) return;
      const delay = this.delayMs;
      this.delayMs = Math.min(this.delayMs * 2, this.o.backoff?.maxMs ?? 30_000);
      const left = this.notAfter - now();
      this.o.log.warn(
        { identity: this.identity, err: errorMessage(err), retryInMs: delay, ...(this.notAfter ? { expiresInMs: left } : {}) },
        this.notAfter ? 'observer certificate renewal failed; the current one stays served' : 'observer certificate not obtained yet; the TLS listener refuses connections until it is',
      );
      this.schedule(delay);
    }
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.timer?.clear();
    this.timer = setLongTimeout(() => void this.renewNow(), ms, this.o.now);
  }

  stop(): void {
    this.stopped = true;
    this.timer?.clear();
    this.timer = undefined;
  }
}
