// A node agent's Kubernetes identity, as the controller's CA accepts it (Istio's CA does the same for
// ztunnel): the agent presents its projected service-account token, the API server reviews it
// (TokenReview, audience weft-ca), and the review must say
//   - authenticated, for weft's audience (an audience-unaware answer is not enough),
//   - the weft agent's service account (system:serviceaccount:<ns>:<name>), nobody else's,
//   - bound to a pod (`extra` pod-name and pod-uid: only the API server writes those).
// That pod is then looked up in the controller's registry (which the Kubernetes source fills): it must
// exist with the same uid, run as the agent's service account, be scheduled, and not have finished; its
// `spec.nodeName` is the node the caller speaks for. From there the existing node authorization applies
// (certificates only for service accounts of pods on that node), as do revocation and the CSR rate
// limit, per node.
//
// Reviews are cached briefly under a SHA-256 of the token (never the token: not in the cache keys, not
// in logs): an accepted one for CaTokenAuth.cacheTtlMs but never past the token's own `exp`, a refused
// one for refusalCacheTtlMs. The pod is looked up on every call, uncached, so a deleted or replaced pod
// stops authenticating at once. A review that could not be had (API server down, timeout, too many at
// once) is not cached and fails the call with UNAVAILABLE: nothing is accepted without an answer.
import { createHash } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { CaTokenAuth } from '../config.js';
import { ErrorCodes, WeftError, errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import type { PodResource, Resource } from '../registry/types.js';
import { BoundTokenExtra, type TokenReviewStatus, type TokenReviewer } from './token-review.js';

export interface TokenAuthOptions {
  reviewer: TokenReviewer;
  /** Default CaTokenAuth.audience. */
  audience?: string;
  /** `system:serviceaccount:<namespace>:<name>`; default CaTokenAuth.agentServiceAccount. */
  agentServiceAccount?: string;
  cacheTtlMs?: number;
  refusalCacheTtlMs?: number;
  cacheMaxEntries?: number;
  reviewTimeoutMs?: number;
  maxConcurrentReviews?: number;
  /** Wall clock in ms (tests move it). */
  now?: () => number;
}

/** The agent pod a token is bound to. */
export interface BoundPod {
  namespace: string;
  name: string;
  uid: string;
}

/** A caller the token vouched for. */
export interface TokenCaller {
  node: string;
  pod: BoundPod;
  username: string;
  /** The first hex digits of the token's SHA-256: enough to follow one token through the logs. */
  tokenId: string;
}

export type RefusalReason = 'unauthenticated' | 'unauthorized' | 'unavailable';

/** Why a token was not accepted, as the gRPC status to answer with. */
export interface TokenRefusal {
  code: grpc.status;
  details: string;
  reason: RefusalReason;
}

/** What a review established about a token, before the pod is looked up. */
interface Claims {
  username: string;
  pod: BoundPod;
  /** The node the token names (Kubernetes ≥ 1.30), checked against the pod's. */
  node?: string;
}

type Outcome = { claims: Claims } | { refusal: TokenRefusal };

interface CacheEntry {
  outcome: Outcome;
  expiresAt: number;
}

const SERVICE_ACCOUNT_USER = /^system:serviceaccount:([a-z0-9]([-a-z0-9]*[a-z0-9])?):([a-z0-9]([-.a-z0-9]*[a-z0-9])?)$/;
/** A JWT's three base64url parts (projected tokens are JWTs); anything else is not worth a review. */
const JWT_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

/** The namespace and name of a `system:serviceaccount:<ns>:<name>` user, or undefined. */
export function parseServiceAccountUser(user: string): { namespace: string; name: string } | undefined {
  const m = SERVICE_ACCOUNT_USER.exec(user);
  return m ? { namespace: m[1]!, name: m[3]! } : undefined;
}

function refusal(code: grpc.status, reason: RefusalReason, details: string): { refusal: TokenRefusal } {
  return { refusal: { code, reason, details } };
}

function isRefusal(o: Outcome): o is { refusal: TokenRefusal } {
  return 'refusal' in o;
}

/** The token's own `exp` (seconds), read without verifying: it may only shorten how long a review is reused. */
function unverifiedExpiry(token: string): number | undefined {
  const payload = token.split('.')[1];
  if (!payload) return undefined;
  try {
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as { exp?: unknown };
    return typeof claims.exp === 'number' && Number.isFinite(claims.exp) ? claims.exp : undefined;
  } catch {
    return undefined;
  }
}

/** The single value of a bound token's `extra` key, or undefined when absent or not exactly one. */
function single(extra: Record<string, string[]> | undefined, key: string): string | undefined {
  const v = extra?.[key];
  return Array.isArray(v) && v.length === 1 && typeof v[0] === 'string' && v[0] !== '' ? v[0] : undefined;
}

export class TokenAuthenticator {
  readonly audience: string;
  readonly agentServiceAccount: string;
  private readonly agent: { namespace: string; name: string };
  private readonly cache = new Map<string, CacheEntry>();
  private readonly inFlight = new Map<string, Promise<Outcome>>();
  private readonly now: () => number;
  private readonly o: Required<Omit<TokenAuthOptions, 'reviewer' | 'now' | 'audience' | 'agentServiceAccount'>>;
  /** TokenReviews sent to the reviewer, and answers taken from the cache (or from a review under way). */
  readonly stats = { reviews: 0, cacheHits: 0 };

  constructor(
    private readonly options: TokenAuthOptions,
    private readonly log: Logger,
  ) {
    this.audience = options.audience ?? CaTokenAuth.audience;
    this.agentServiceAccount = options.agentServiceAccount ?? CaTokenAuth.agentServiceAccount;
    const agent = parseServiceAccountUser(this.agentServiceAccount);
    if (!agent) throw new WeftError(ErrorCodes.USAGE, `--agent-service-account: "${this.agentServiceAccount}" is not system:serviceaccount:<namespace>:<name>`);
    if (this.audience === '' || /\s/.test(this.audience)) throw new WeftError(ErrorCodes.USAGE, `--token-audience: "${this.audience}" must be one word`);
    this.agent = agent;
    this.now = options.now ?? Date.now;
    this.o = {
      cacheTtlMs: options.cacheTtlMs ?? CaTokenAuth.cacheTtlMs,
      refusalCacheTtlMs: options.refusalCacheTtlMs ?? CaTokenAuth.refusalCacheTtlMs,
      cacheMaxEntries: options.cacheMaxEntries ?? CaTokenAuth.cacheMaxEntries,
      reviewTimeoutMs: options.reviewTimeoutMs ?? CaTokenAuth.reviewTimeoutMs,
      maxConcurrentReviews: options.maxConcurrentReviews ?? CaTokenAuth.maxConcurrentReviews,
    };
  }

  /** Reviews held in the cache now. */
  get cached(): number {
    return this.cache.size;
  }

  /** Forgets every cached review (tests; an operator's future "re-review now"). */
  clearCache(): void {
    this.cache.clear();
  }

  /** Who `token` speaks for, given the controller's current objects; or the status to refuse it with. */
  async authenticate(token: string, resources: () => readonly Resource[]): Promise<TokenCaller | TokenRefusal> {
    if (token.length > CaTokenAuth.maxTokenBytes || !JWT_SHAPE.test(token)) {
      return { code: grpc.status.UNAUTHENTICATED, reason: 'unauthenticated', details: 'the bearer token is not a Kubernetes service-account token (a JWT)' };
    }
    const key = createHash('sha256').update(token).digest('hex');
    const tokenId = key.slice(0, 12);
    const outcome = await this.outcome(token, key, tokenId);
    if (isRefusal(outcome)) return outcome.refusal;
    const found = this.podCheck(outcome.claims, resources());
    if ('code' in found) {
      this.log.warn({ tokenId, pod: `${outcome.claims.pod.namespace}/${outcome.claims.pod.name}`, reason: found.details }, 'service-account token refused');
      return found;
    }
    return { node: found.node, pod: outcome.claims.pod, username: outcome.claims.username, tokenId };
  }

  /**
   * Whether the pod a caller authenticated as still stands for `node` (its pod is there, the same uid,
   * on that node): undefined when it does, else why not. Open streams are checked on every change.
   */
  podProblem(pod: BoundPod, node: string, resources: readonly Resource[]): string | undefined {
    const found = this.podCheck({ username: this.agentServiceAccount, pod }, resources);
    if ('code' in found) return found.details;
    if (found.node !== node) return `the agent's pod ${pod.namespace}/${pod.name} now runs on node "${found.node}", not "${node}"`;
    return undefined;
  }

  private async outcome(token: string, key: string, tokenId: string): Promise<Outcome> {
    const now = this.now();
    const hit = this.cache.get(key);
    if (hit && hit.expiresAt > now) {
      this.stats.cacheHits++;
      return hit.outcome;
    }
    if (hit) this.cache.delete(key);
    const pending = this.inFlight.get(key);
    if (pending) {
      this.stats.cacheHits++;
      return pending;
    }
    if (this.inFlight.size >= this.o.maxConcurrentReviews) {
      this.log.warn({ tokenId, inFlight: this.inFlight.size }, 'token review refused: too many under way');
      return refusal(grpc.status.UNAVAILABLE, 'unavailable', `too many token reviews under way (${this.o.maxConcurrentReviews}); retry`);
    }
    const review = this.review(token, key, tokenId);
    this.inFlight.set(key, review);
    try {
      return await review;
    } finally {
      this.inFlight.delete(key);
    }
  }

  private async review(token: string, key: string, tokenId: string): Promise<Outcome> {
    this.stats.reviews++;
    let status: TokenReviewStatus;
    let timer: NodeJS.Timeout | undefined;
    try {
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${this.o.reviewTimeoutMs} ms`)), this.o.reviewTimeoutMs);
      });
      status = await Promise.race([this.options.reviewer.review(token, [this.audience]), timeout]);
    } catch (err) {
      // Not cached: the next call asks again. Nothing is accepted without an answer.
      const why = errorMessage(err).split(token).join('[token]');
      this.log.error({ tokenId, err: why }, 'token review failed; refusing the call');
      return refusal(grpc.status.UNAVAILABLE, 'unavailable', `the service-account token could not be reviewed: ${why}`);
    } finally {
      clearTimeout(timer);
    }
    const outcome = this.interpret(status);
    const now = this.now();
    let expiresAt: number;
    if (isRefusal(outcome)) {
      expiresAt = now + this.o.refusalCacheTtlMs;
      this.log.warn({ tokenId, reason: outcome.refusal.details }, 'service-account token refused');
    } else {
      expiresAt = now + this.o.cacheTtlMs;
      const exp = unverifiedExpiry(token);
      if (exp !== undefined) expiresAt = Math.min(expiresAt, exp * 1000);
      this.log.info({ tokenId, user: outcome.claims.username, pod: `${outcome.claims.pod.namespace}/${outcome.claims.pod.name}` }, 'service-account token reviewed');
    }
    if (expiresAt > now) this.remember(key, { outcome, expiresAt });
    return outcome;
  }

  private remember(key: string, entry: CacheEntry): void {
    this.cache.delete(key);
    this.cache.set(key, entry);
    while (this.cache.size > this.o.cacheMaxEntries) {
      const oldest = this.cache.keys().next().value;
      if (oldest === undefined) break;
      this.cache.delete(oldest);
    }
  }

  /** What the API server's answer establishes, or why it is not enough. */
  private interpret(s: TokenReviewStatus): Outcome {
    if (!s.authenticated) {
      return refusal(grpc.status.UNAUTHENTICATED, 'unauthenticated', `the API server did not authenticate the service-account token: ${s.error || 'no reason given'}`);
    }
    if (!s.audiences?.includes(this.audience)) {
      // An authenticator that ignores audiences answers without them: the token may be meant for anyone.
      return refusal(
        grpc.status.UNAUTHENTICATED,
        'unauthenticated',
        `the service-account token is not valid for audience "${this.audience}" (the review confirmed ${s.audiences?.length ? s.audiences.map((a) => `"${a}"`).join(', ') : 'no audience'})`,
      );
    }
    const username = s.user?.username ?? '';
    if (username !== this.agentServiceAccount) {
      return refusal(grpc.status.PERMISSION_DENIED, 'unauthorized', `the token belongs to "${username || 'nobody'}"; only the weft agent's service account "${this.agentServiceAccount}" may call the CA`);
    }
    const name = single(s.user?.extra, BoundTokenExtra.podName);
    const uid = single(s.user?.extra, BoundTokenExtra.podUid);
    if (!name || !uid) {
      return refusal(
        grpc.status.UNAUTHENTICATED,
        'unauthenticated',
        `the service-account token is not bound to a pod (the review has no ${BoundTokenExtra.podName} and ${BoundTokenExtra.podUid}): the agent must present a projected token`,
      );
    }
    const claims: Claims = { username, pod: { namespace: this.agent.namespace, name, uid } };
    const node = single(s.user?.extra, BoundTokenExtra.nodeName);
    if (node) claims.node = node;
    return { claims };
  }

  /** The node of the claims' pod, from the registry, or why the pod does not vouch for one. */
  private podCheck(claims: Claims, resources: readonly Resource[]): { node: string } | TokenRefusal {
    const { namespace, name, uid } = claims.pod;
    const ref = `${namespace}/${name}`;
    const deny = (details: string): TokenRefusal => ({ code: grpc.status.PERMISSION_DENIED, reason: 'unauthorized', details });
    const pod = resources.find((r): r is PodResource => r.kind === 'Pod' && r.metadata.namespace === namespace && r.metadata.name === name);
    if (!pod) {
      return { code: grpc.status.UNAUTHENTICATED, reason: 'unauthenticated', details: `the token's pod ${ref} is not known to the controller (not listed yet, or deleted)` };
    }
    const podUid = (pod.metadata as { uid?: unknown }).uid;
    if (typeof podUid !== 'string' || podUid !== uid) {
      return deny(`the token is bound to pod ${ref} with uid ${uid}, but the pod of that name has ${typeof podUid === 'string' ? `uid ${podUid}` : 'no uid'}: the token's pod is gone`);
    }
    const sa = pod.spec.serviceAccountName ?? 'default';
    if (sa !== this.agent.name) return deny(`pod ${ref} runs as service account "${sa}", not the weft agent's "${this.agent.name}"`);
    const phase: string | undefined = pod.status?.phase;
    if (phase === 'Succeeded' || phase === 'Failed') return deny(`pod ${ref} has finished (phase ${phase})`);
    const node = pod.spec.nodeName;
    if (!node) return deny(`pod ${ref} is not scheduled on a node`);
    if (claims.node !== undefined && claims.node !== node) {
      return deny(`the token names node "${claims.node}" but pod ${ref} runs on node "${node}"`);
    }
    return { node };
  }
}
