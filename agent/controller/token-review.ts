// Verifying a node agent's Kubernetes service-account token: the TokenReviewer interface (what the
// controller asks of the API server) and its real implementation, a `TokenReview`
// (authentication.k8s.io/v1) through @kubernetes/client-node. What the answer must say for the agent
// to be trusted is decided in token-auth.ts; this file only carries the question and the answer.
// The token never appears in a message: errors are rebuilt from the HTTP status and the API's Status.
import { AuthenticationV1Api, KubeConfig, type V1TokenReview } from '@kubernetes/client-node';
import { ErrorCodes, WeftError, errorMessage } from '../errors.js';

/** Keys of a bound service-account token's `user.extra` (set by the API server, not by the token's holder). */
export const BoundTokenExtra = {
  podName: 'authentication.kubernetes.io/pod-name',
  podUid: 'authentication.kubernetes.io/pod-uid',
  /** Kubernetes ≥ 1.30 (ServiceAccountTokenPodNodeInfo): the node the pod was bound to when the token was minted. */
  nodeName: 'authentication.kubernetes.io/node-name',
} as const;

/** The part of a TokenReview's `status` weft reads. */
export interface TokenReviewStatus {
  authenticated: boolean;
  user?: {
    username?: string;
    uid?: string;
    groups?: string[];
    extra?: Record<string, string[]>;
  };
  /** The audiences the token is valid for among those asked (an audience-aware authenticator sets it). */
  audiences?: string[];
  /** Why the token was not authenticated, in the API server's words. */
  error?: string;
}

/** Asks whoever can tell (the API server) whether `token` is valid for one of `audiences`. */
export interface TokenReviewer {
  /** Resolves with the review's status; rejects when no answer could be had (network, RBAC, timeout). */
  review(token: string, audiences: readonly string[]): Promise<TokenReviewStatus>;
}

/** A KubeConfig from `--kubeconfig FILE`, else $KUBECONFIG, ~/.kube/config or the pod's in-cluster account. */
export function loadKubeConfig(file?: string): KubeConfig {
  const kc = new KubeConfig();
  try {
    if (file) kc.loadFromFile(file);
    else kc.loadFromDefault();
  } catch (err) {
    throw new WeftError(ErrorCodes.USAGE, `${file ? `--kubeconfig ${file}` : 'kubeconfig'}: ${errorMessage(err)}`, { cause: err });
  }
  if (!kc.getCurrentCluster()) throw new WeftError(ErrorCodes.USAGE, `${file ? `--kubeconfig ${file}` : 'kubeconfig'}: no current cluster (set KUBECONFIG, --kubeconfig, or run in a pod)`);
  return kc;
}

/** TokenReview against the Kubernetes API server (needs RBAC: `create` on `tokenreviews.authentication.k8s.io`). */
export class KubernetesTokenReviewer implements TokenReviewer {
  private readonly api: AuthenticationV1Api;

  constructor(kc: KubeConfig) {
    this.api = kc.makeApiClient(AuthenticationV1Api);
  }

  async review(token: string, audiences: readonly string[]): Promise<TokenReviewStatus> {
    const body: V1TokenReview = { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token, audiences: [...audiences] } };
    let answer: V1TokenReview;
    try {
      answer = await this.api.createTokenReview({ body });
    } catch (err) {
      throw new WeftError(ErrorCodes.CONTROLLER, `TokenReview failed: ${describeApiError(err, token)}`);
    }
    const s = answer.status;
    const out: TokenReviewStatus = { authenticated: s?.authenticated === true };
    if (s?.audiences) out.audiences = [...s.audiences];
    if (s?.error) out.error = s.error;
    if (s?.user) {
      const user: NonNullable<TokenReviewStatus['user']> = {};
      if (s.user.username !== undefined) user.username = s.user.username;
      if (s.user.uid !== undefined) user.uid = s.user.uid;
      if (s.user.groups) user.groups = [...s.user.groups];
      if (s.user.extra) user.extra = Object.fromEntries(Object.entries(s.user.extra).map(([k, v]) => [k, [...v]]));
      out.user = user;
    }
    return out;
  }
}

/**
 * An API error in a few words: the HTTP code and the Status's message (client-node's own message
 * carries the whole response, headers included). The token is scrubbed from whatever is left.
 */
function describeApiError(err: unknown, token: string): string {
  const e = err as { code?: unknown; body?: unknown };
  let text: string;
  if (typeof e?.code === 'number') {
    let message = '';
    const body = typeof e.body === 'string' ? safeJson(e.body) : e.body;
    if (body && typeof body === 'object') {
      const b = body as { message?: unknown; reason?: unknown };
      message = typeof b.message === 'string' ? b.message : typeof b.reason === 'string' ? b.reason : '';
    }
    text = `HTTP ${e.code}${message ? `: ${message}` : ''}`;
  } else {
    text = errorMessage(err);
  }
  return token ? text.split(token).join('[token]') : text;
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}
