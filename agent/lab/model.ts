// Cross-document validation of a lab: one LabConfig at most, pods on existing nodes, no overlapping
// ranges (between node pod CIDRs, the node network, the service CIDR and the host's routes), and
// enough addresses. Every problem names the file and line of the field to fix.
import { AgentDefaults, Mesh } from '../config.js';
import { ConfigError, type ConfigProblem } from '../errors.js';
import { cidrSize, cidrsOverlap, indexInCidr, mustParseIPv4Cidr, parseIPv4Cidr, type Ipv4Cidr } from '../net/address.js';
import { problemAt } from '../registry/parse.js';
import type { PolicyResource } from '../registry/policy-types.js';
import type { LabConfigResource, NamespaceResource, NodeResource, PodResource, Resource, ServiceResource, WithSource } from '../registry/types.js';
import { labNames } from './names.js';

/** Not 172.17/16 (docker), 172.18/16 (kind) or 172.31/16 (AWS default VPCs). */
export const DEFAULT_NODE_NETWORK = '192.168.240.0/24';
export const DEFAULT_SERVICE_CIDR = '10.96.0.0/16';
/** The mesh's defaults (agent/config.ts), under the names the lab's API exports. */
export const DEFAULT_CLUSTER_DOMAIN = Mesh.clusterDomain;
export const DEFAULT_TRUST_DOMAIN = Mesh.trustDomain;
export const DEFAULT_WORKLOAD_CERT_TTL = AgentDefaults.certTtl;

export interface LabModel {
  nodeNetwork: Ipv4Cidr;
  serviceCIDR: Ipv4Cidr;
  clusterDomain: string;
  /** SPIFFE trust domain of the lab's mesh. */
  trustDomain: string;
  /** Workload certificate lifetime (a duration such as 24h). */
  workloadCertTTL: string;
  config?: WithSource<LabConfigResource>;
  nodes: Array<WithSource<NodeResource>>;
  /** Declared namespaces plus implicit ones (referenced by a pod or service but not declared: no labels). */
  namespaces: Map<string, NamespaceResource>;
  pods: Array<WithSource<PodResource>>;
  services: Array<WithSource<ServiceResource>>;
  /** AuthorizationPolicy and PeerAuthentication documents, handed to the controller as they are. */
  policies: Array<WithSource<PolicyResource>>;
}

export interface ModelOptions {
  labName: string;
  /** Host routes to check the lab's ranges against (up only). */
  hostRoutes?: Array<{ dst: string; dev?: string }>;
  /** Apply to a running lab: nodes and lab settings must stay as they are. */
  running?: { nodes: Record<string, { podCIDR: string }>; nodeNetwork: string; serviceCIDR: string; clusterDomain: string; trustDomain?: string };
  requireNodes?: boolean;
}

interface Range {
  what: string;
  cidr: Ipv4Cidr;
  res?: WithSource<Resource>;
  path: string[];
}

export function buildModel(resources: ReadonlyArray<WithSource<Resource>>, opts: ModelOptions): LabModel {
  const problems: ConfigProblem[] = [];
  const configs = resources.filter((r): r is WithSource<LabConfigResource> => r.kind === 'LabConfig');
  const nodes = resources.filter((r): r is WithSource<NodeResource> => r.kind === 'Node');
  const pods = resources.filter((r): r is WithSource<PodResource> => r.kind === 'Pod');
  const services = resources.filter((r): r is WithSource<ServiceResource> => r.kind === 'Service');
  const declaredNs = resources.filter((r): r is WithSource<NamespaceResource> => r.kind === 'Namespace');
  const policies = resources.filter((r): r is WithSource<PolicyResource> => r.kind === 'AuthorizationPolicy' || r.kind === 'PeerAuthentication');

  for (const extra of configs.slice(1)) {
    problems.push(problemAt(extra, ['kind'], `only one LabConfig is allowed per lab (first at ${configs[0]!.source.file}:${configs[0]!.source.line})`));
  }
  const config = configs[0];
  const nodeNetwork = mustParseIPv4Cidr(config?.spec.nodeNetwork ?? opts.running?.nodeNetwork ?? DEFAULT_NODE_NETWORK);
  const serviceCIDR = mustParseIPv4Cidr(config?.spec.serviceCIDR ?? opts.running?.serviceCIDR ?? DEFAULT_SERVICE_CIDR);
  const clusterDomain = config?.spec.clusterDomain ?? opts.running?.clusterDomain ?? DEFAULT_CLUSTER_DOMAIN;
  const trustDomain = config?.spec.trustDomain ?? opts.running?.trustDomain ?? DEFAULT_TRUST_DOMAIN;
  const workloadCertTTL = config?.spec.workloadCertTTL ?? DEFAULT_WORKLOAD_CERT_TTL;

  if (opts.running) {
    const run = opts.running;
    if (config) {
      if (nodeNetwork.text !== run.nodeNetwork) problems.push(problemAt(config, ['spec', 'nodeNetwork'], `cannot change the node network of a running lab (it is ${run.nodeNetwork}); run "weft lab down" first`));
      if (serviceCIDR.text !== run.serviceCIDR) problems.push(problemAt(config, ['spec', 'serviceCIDR'], `cannot change the service CIDR of a running lab (it is ${run.serviceCIDR}); run "weft lab down" first`));
      if (clusterDomain !== run.clusterDomain) problems.push(problemAt(config, ['spec', 'clusterDomain'], `cannot change the cluster domain of a running lab (it is ${run.clusterDomain})`));
      if (run.trustDomain !== undefined && trustDomain !== run.trustDomain) problems.push(problemAt(config, ['spec', 'trustDomain'], `cannot change the trust domain of a running lab (it is ${run.trustDomain})`));
    }
    for (const n of nodes) {
      // Own entries only: a node named "constructor" must not find Object.prototype's.
      const cur = Object.hasOwn(run.nodes, n.metadata.name) ? run.nodes[n.metadata.name] : undefined;
      if (!cur) problems.push(problemAt(n, ['metadata', 'name'], `cannot add node "${n.metadata.name}" to a running lab; run "weft lab down" and "weft lab up" with it`));
      else if (cur.podCIDR !== n.spec.podCIDR) problems.push(problemAt(n, ['spec', 'podCIDR'], `cannot change the pod CIDR of node "${n.metadata.name}" on a running lab (it is ${cur.podCIDR})`));
    }
  } else if (opts.requireNodes && nodes.length === 0) {
    const first = resources[0];
    problems.push({ file: first?.source.file ?? '(no files)', line: first?.source.line ?? 0, field: '', reason: 'a lab needs at least one Node (apiVersion weft.io/v1alpha1, kind Node)' });
  }

  // Ranges must not overlap each other (nor the host's routes, when creating).
  if (!opts.running) {
    const ranges: Range[] = [
      { what: `node network ${nodeNetwork.text}${config?.spec.nodeNetwork ? '' : ' (default)'}`, cidr: nodeNetwork, res: config?.spec.nodeNetwork ? config : undefined, path: ['spec', 'nodeNetwork'] },
      { what: `service CIDR ${serviceCIDR.text}${config?.spec.serviceCIDR ? '' : ' (default)'}`, cidr: serviceCIDR, res: config?.spec.serviceCIDR ? config : undefined, path: ['spec', 'serviceCIDR'] },
      ...nodes.map((n) => ({ what: `pod CIDR ${n.spec.podCIDR} of node ${n.metadata.name}`, cidr: mustParseIPv4Cidr(n.spec.podCIDR), res: n, path: ['spec', 'podCIDR'] })),
    ];
    for (let i = 0; i < ranges.length; i++) {
      for (let j = i + 1; j < ranges.length; j++) {
        const a = ranges[i]!;
        const b = ranges[j]!;
        if (!cidrsOverlap(a.cidr, b.cidr)) continue;
        // Report at the later document (a default range has no document: report at the other one).
        const [at, other] = b.res ? [b, a] : [a, b];
        const where = other.res ? ` (${other.res.source.file}:${other.res.source.line})` : '';
        const reason = `${at.what} overlaps the ${other.what}${where}`;
        if (at.res) problems.push(problemAt(at.res, at.path, reason));
        else problems.push({ file: resources[0]?.source.file ?? '(no files)', line: 1, field: at.path.join('.'), reason });
      }
    }
    for (const route of opts.hostRoutes ?? []) {
      const rc = parseIPv4Cidr(route.dst);
      if (typeof rc === 'string') continue;
      for (const r of ranges) {
        if (!cidrsOverlap(r.cidr, rc)) continue;
        const reason = `${r.what} overlaps the host's route ${route.dst}${route.dev ? ` dev ${route.dev}` : ''}; choose another range${r.res ? '' : ' with a LabConfig document (spec.nodeNetwork / spec.serviceCIDR)'}`;
        if (r.res) problems.push(problemAt(r.res, r.path, reason));
        else problems.push({ file: resources[0]?.source.file ?? '(no files)', line: 1, field: r.path.join('.'), reason });
      }
    }
    // Node i gets address i+2 of the node network (.1 is the host); the broadcast address is not used.
    if (nodes.length + 2 > cidrSize(nodeNetwork) - 1) {
      const reason = `the node network ${nodeNetwork.text} has room for ${cidrSize(nodeNetwork) - 3} nodes, the lab has ${nodes.length}`;
      if (config?.spec.nodeNetwork) problems.push(problemAt(config, ['spec', 'nodeNetwork'], reason));
      else problems.push({ file: nodes[0]!.source.file, line: nodes[0]!.source.line, field: '', reason });
    }
  }

  const nodeByName = new Map(nodes.map((n) => [n.metadata.name, n]));
  const knownNodes = opts.running ? new Set(Object.keys(opts.running.nodes)) : new Set(nodeByName.keys());
  const perNode = new Map<string, number>();
  const names = labNames(opts.labName);
  for (const p of pods) {
    if (!knownNodes.has(p.spec.nodeName)) {
      problems.push(problemAt(p, ['spec', 'nodeName'], `pod ${p.metadata.namespace}/${p.metadata.name} is on node "${p.spec.nodeName}", which is not defined (nodes: ${[...knownNodes].join(', ') || 'none'})`));
      continue;
    }
    perNode.set(p.spec.nodeName, (perNode.get(p.spec.nodeName) ?? 0) + 1);
    if (names.podNetns(p.metadata.namespace, p.metadata.name).length > 255) {
      problems.push(problemAt(p, ['metadata', 'name'], 'namespace and pod name together are too long for a network namespace name'));
    }
  }
  for (const [node, count] of perNode) {
    const cidr = mustParseIPv4Cidr(nodeByName.get(node)?.spec.podCIDR ?? opts.running!.nodes[node]!.podCIDR);
    const room = cidrSize(cidr) - 3; // network, gateway (.1), broadcast
    if (count > room) {
      const n = nodeByName.get(node);
      const reason = `node ${node}'s pod CIDR ${cidr.text} has room for ${room} pods, ${count} are scheduled on it`;
      if (n) problems.push(problemAt(n, ['spec', 'podCIDR'], reason));
      else problems.push({ file: pods[0]!.source.file, line: pods[0]!.source.line, field: '', reason });
    }
  }

  const vips = new Map<string, WithSource<ServiceResource>>();
  for (const s of services) {
    const ip = s.spec.clusterIP;
    if (ip === undefined) continue;
    const idx = indexInCidr(serviceCIDR, ip);
    if (idx <= 0 || idx >= cidrSize(serviceCIDR) - 1) {
      problems.push(problemAt(s, ['spec', 'clusterIP'], `${ip} is not a usable address of the service CIDR ${serviceCIDR.text}`));
      continue;
    }
    const prev = vips.get(ip);
    if (prev) problems.push(problemAt(s, ['spec', 'clusterIP'], `${ip} is already the clusterIP of service ${prev.metadata.namespace}/${prev.metadata.name}`));
    vips.set(ip, s);
  }

  if (problems.length) {
    const fileOrder = new Map<string, number>();
    for (const r of resources) if (!fileOrder.has(r.source.file)) fileOrder.set(r.source.file, fileOrder.size);
    problems.sort((a, b) => (fileOrder.get(a.file) ?? 0) - (fileOrder.get(b.file) ?? 0) || a.line - b.line);
    throw new ConfigError(problems);
  }

  const namespaces = new Map<string, NamespaceResource>();
  for (const ns of declaredNs) namespaces.set(ns.metadata.name, ns);
  for (const r of [...pods, ...services]) {
    const ns = r.metadata.namespace;
    if (!namespaces.has(ns)) namespaces.set(ns, { apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns } });
  }
  return { nodeNetwork, serviceCIDR, clusterDomain, trustDomain, workloadCertTTL, config, nodes, namespaces, pods, services, policies };
}
