// PeerAuthentication resolution: which mTLS mode is in force for one port of one workload.
//
// Istio's precedence: a workload-selector policy in the workload's namespace beats the namespace-wide
// policy, which beats the mesh-wide policy in the root namespace; a port-level setting of the selected
// workload policy beats its top-level mode; UNSET at any level inherits from the level above; with
// nothing set the mode is PERMISSIVE. In ambient mode istiod expresses a STRICT result to ztunnel as a
// DENY policy on connections without a principal; PERMISSIVE and DISABLE both mean "plaintext is
// accepted" there, but we return the mode as written so callers can tell them apart.
import type { PeerAuthMode, PeerAuthenticationResource } from '../registry/policy-types.js';
import { Mesh } from '../config.js';
import type { WorkloadRef } from './authz.js';

export type EffectiveMtls = 'STRICT' | 'PERMISSIVE' | 'DISABLE';

/** A selector with no labels selects everything, so istiod treats it like no selector at all. */
function hasSelector(p: PeerAuthenticationResource): boolean {
  return Object.keys(p.spec.selector?.matchLabels ?? {}).length > 0;
}

function selects(p: PeerAuthenticationResource, labels: Record<string, string>): boolean {
  return Object.entries(p.spec.selector?.matchLabels ?? {}).every(([k, v]) => labels[k] === v);
}

/**
 * Istio resolves a conflict between policies at the same level by picking the oldest. Our resources
 * carry no creation timestamp, so the tie-break is the smallest name: deterministic, and the same
 * answer on every node.
 */
function oldest(candidates: PeerAuthenticationResource[]): PeerAuthenticationResource | undefined {
  return candidates.reduce<PeerAuthenticationResource | undefined>(
    (best, p) => (best === undefined || p.metadata.name < best.metadata.name ? p : best),
    undefined,
  );
}

function setMode(mode: PeerAuthMode | undefined): EffectiveMtls | undefined {
  return mode === undefined || mode === 'UNSET' ? undefined : mode;
}

/**
 * The effective mode for connections to `port` (the workload's own port number, as portLevelMtls is
 * keyed) of `workload`.
 *
 * Selector policies in the root namespace are ignored, as istiod does: only a selector-less root
 * policy is mesh-wide. `portLevelMtls` counts only on the selected workload policy; Istio's validation
 * rejects it without a selector, and istiod ignores it on namespace and mesh policies.
 */
export function effectiveMtlsMode(
  peerAuths: readonly PeerAuthenticationResource[],
  workload: WorkloadRef,
  port: number,
  opts: { rootNamespace?: string } = {},
): EffectiveMtls {
  const root = opts.rootNamespace ?? Mesh.rootNamespace;
  const mesh = oldest(peerAuths.filter((p) => p.metadata.namespace === root && !hasSelector(p)));
  const inNs = peerAuths.filter((p) => p.metadata.namespace === workload.namespace && p.metadata.namespace !== root);
  const namespace = oldest(inNs.filter((p) => !hasSelector(p)));
  const forWorkload = oldest(inNs.filter((p) => hasSelector(p) && selects(p, workload.labels)));

  let mode: EffectiveMtls = 'PERMISSIVE';
  for (const level of [mesh, namespace, forWorkload]) {
    mode = setMode(level?.spec.mtls?.mode) ?? mode;
  }
  return setMode(forWorkload?.spec.portLevelMtls?.[String(port)]?.mode) ?? mode;
}
