// The controller process: CA (kept in --state), registry (--source dir:PATH, or --source kubernetes:
// the API server through kube-source.ts), the gRPC server for discovery and certificates, and the
// monitoring endpoint. Node credentials for agents are issued by
// credentials.ts, their revocation is `<state>/revoked-nodes` (revocation.ts).
import { X509Certificate } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { hostname } from 'node:os';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { ControllerDefaults, Mesh } from '../config.js';
import { ErrorCodes, WeftError, formatProblem } from '../errors.js';
import type { Logger } from '../log.js';
import type { ClusterNodeResource, NodeResource } from '../registry/types.js';
import { CertificateAuthority } from './ca.js';
import { ControllerMetrics } from './metrics.js';
import { MonitoringServer, type ControllerStatus } from './monitoring.js';
import { ConfigRegistry } from './registry.js';
import type { RateLimit } from './rate-limit.js';
import { REVOKED_NODES_FILE, RevocationList } from './revocation.js';
import { parseHostPort } from '../system/host-port.js';
import { ControllerServer } from './server.js';
import type { TokenAuthOptions } from './token-auth.js';
import { KubeSource, type KubeSourceOptions } from './kube-source.js';
import { KubernetesTokenReviewer, loadKubeConfig } from './token-review.js';

/** `--source kubernetes`: the API server (kubeconfig from --kubeconfig, $KUBECONFIG, ~/.kube/config or the pod's account). */
export const KUBERNETES_SOURCE = 'kubernetes';

/** The serving certificate is issued anew on every start. */
const SERVING_CERT_TTL_SECONDS = 365 * 24 * 3600;
/** ControllerDefaults.nodeCredentialTtlSeconds, under the name tests and callers know. */
export const DEFAULT_NODE_CREDENTIAL_TTL_SECONDS = ControllerDefaults.nodeCredentialTtlSeconds;

export interface ControllerOptions {
  /** `dir:PATH` or `kubernetes` */
  source: string;
  /** With `kubernetes`: the kubeconfig file (else $KUBECONFIG, ~/.kube/config, or in-cluster in a pod). */
  kubeconfig?: string;
  /** With `kubernetes`: the source's tuning (retries, page size, batching; tests shorten them). */
  kubeSource?: Omit<KubeSourceOptions, 'kubeConfig' | 'registry' | 'log'>;
  /** Where the CA keeps its root (created on first start). */
  stateDir: string;
  listen?: string;
  trustDomain?: string;
  rootNamespace?: string;
  maxCertTtlSeconds?: number;
  monitoring?: string;
  /** Subject alternative names of the serving certificate (besides the --listen address when it is a specific IP). */
  servingIps?: string[];
  servingDns?: string[];
  /** CreateCertificate calls per node (default DEFAULT_CSR_RATE_LIMIT). */
  csrRateLimit?: RateLimit;
  /**
   * Agents may also authenticate with Kubernetes service-account tokens (TokenReview). With the
   * `kubernetes` source this is on by default, reviewing through the same API server.
   */
  tokenAuth?: TokenAuthOptions;
  /** With the `kubernetes` source: the audience and agent service account its token reviews expect (default CaTokenAuth's). */
  tokenReview?: Pick<TokenAuthOptions, 'audience' | 'agentServiceAccount'>;
  log: Logger;
}

/** The serving certificate's names: what agents dial. With none given, the listen IP, loopback and the host name. */
export function servingNames(listen: string, ips: readonly string[], dns: readonly string[]): { ips: string[]; dnsNames: string[] } {
  const { host } = parseHostPort(listen, '--listen');
  const outIps = new Set(ips);
  const outDns = new Set(dns);
  const wildcard = host === '0.0.0.0' || host === '::';
  if (isIP(host) && !wildcard) outIps.add(host);
  else if (!isIP(host)) outDns.add(host);
  if (outIps.size === 0 && outDns.size === 0) {
    outIps.add('127.0.0.1');
    outDns.add('localhost');
    outDns.add(hostname());
  }
  for (const ip of outIps) if (!isIP(ip)) throw new WeftError(ErrorCodes.USAGE, `--serving-ip: "${ip}" is not an IP address`);
  return { ips: [...outIps], dnsNames: [...outDns] };
}

export class Controller {
  private constructor(
    readonly metrics: ControllerMetrics,
    readonly ca: CertificateAuthority,
    readonly registry: ConfigRegistry,
    readonly server: ControllerServer,
    readonly monitoring: MonitoringServer,
    readonly revocations: RevocationList,
    /** The Kubernetes source, when the controller reads the API server. */
    readonly kube: KubeSource | undefined,
    private readonly info: { source: string; listen: string; rootNamespace: string; maxCertTtlSeconds: number },
  ) {}

  static async start(o: ControllerOptions): Promise<Controller> {
    const fromKubernetes = o.source === KUBERNETES_SOURCE;
    if (!fromKubernetes && (!o.source.startsWith('dir:') || o.source.length <= 'dir:'.length)) {
      throw new WeftError(ErrorCodes.USAGE, `unsupported --source "${o.source}" (the controller reads dir:PATH or ${KUBERNETES_SOURCE})`);
    }
    if (!fromKubernetes && o.kubeconfig !== undefined) throw new WeftError(ErrorCodes.USAGE, `--kubeconfig goes with --source ${KUBERNETES_SOURCE}`);
    // Read before anything is created: a bad kubeconfig is a usage error, not a half-started controller.
    const kubeConfig = fromKubernetes ? loadKubeConfig(o.kubeconfig) : undefined;
    const listen = o.listen ?? ControllerDefaults.listen;
    const trustDomain = o.trustDomain ?? Mesh.trustDomain;
    const rootNamespace = o.rootNamespace ?? Mesh.rootNamespace;
    const maxCertTtlSeconds = o.maxCertTtlSeconds ?? ControllerDefaults.maxCertTtlSeconds;
    const names = servingNames(listen, o.servingIps ?? [], o.servingDns ?? []);

    mkdirSync(o.stateDir, { recursive: true, mode: 0o700 });
    const ca = await CertificateAuthority.loadOrCreate({ dir: o.stateDir, trustDomain });
    const serving = await ca.issueServingCert({ ...names, ttlSeconds: SERVING_CERT_TTL_SECONDS });
    o.log.info({ trustDomain, servingIps: names.ips, servingDns: names.dnsNames }, 'certificate authority ready');

    const metrics = new ControllerMetrics();
    const registry = new ConfigRegistry({ ...(fromKubernetes ? {} : { dir: o.source.slice('dir:'.length) }), log: o.log, metrics });
    registry.start();
    // The first state of the cluster, whole, before any agent can ask: a snapshot without the
    // policies would let traffic through that they deny.
    const kube = kubeConfig ? await KubeSource.start({ ...o.kubeSource, kubeConfig, registry, log: o.log }) : undefined;
    const tokenAuth = o.tokenAuth ?? (kubeConfig ? { reviewer: new KubernetesTokenReviewer(kubeConfig), ...o.tokenReview } : undefined);
    let server: ControllerServer | undefined;
    const revocations = new RevocationList(join(o.stateDir, REVOKED_NODES_FILE), o.log, () => server?.enforceRevocations());
    revocations.start();
    try {
      server = await ControllerServer.start({
        ca,
        registry,
        listen,
        serving,
        maxCertTtlSeconds,
        rootNamespace,
        metrics,
        log: o.log,
        revocations,
        ...(o.csrRateLimit ? { csrRateLimit: o.csrRateLimit } : {}),
        ...(tokenAuth ? { tokenAuth } : {}),
      });
      let controller: Controller | undefined;
      const monitoring = await MonitoringServer.start({
        listen: o.monitoring ?? ControllerDefaults.monitoring,
        metrics,
        status: () => controller!.status(),
        ready: () => controller !== undefined,
        log: o.log,
      });
      controller = new Controller(metrics, ca, registry, server, monitoring, revocations, kube, { source: o.source, listen, rootNamespace, maxCertTtlSeconds });
      return controller;
    } catch (err) {
      server?.close();
      revocations.close();
      registry.close();
      await kube?.close();
      throw err;
    }
  }

  async status(): Promise<ControllerStatus> {
    const resources = this.registry.resources();
    const byKind: Record<string, number> = {};
    for (const r of resources) byKind[r.kind] = (byKind[r.kind] ?? 0) + 1;
    const root = new X509Certificate(this.ca.rootCertPem);
    return {
      trustDomain: this.ca.trustDomain,
      rootNamespace: this.info.rootNamespace,
      source: this.info.source,
      listen: this.info.listen,
      registry: { version: this.registry.version, objects: resources.length, byKind },
      connectedAgents: this.server.connectedAgents(),
      nodes: resources
        .filter((r): r is NodeResource | ClusterNodeResource => r.kind === 'Node')
        .map((n) => ({ name: n.metadata.name, internalIP: n.status?.addresses?.find((a) => a.type === 'InternalIP')?.address }))
        .sort((a, b) => a.name.localeCompare(b.name)),
      configProblems: this.registry.problems().map((p) => ({ ...p, message: formatProblem(p) })),
      ca: { rootSubject: root.subject.replace(/\n/g, ', '), rootNotAfter: new Date(root.validTo).toISOString(), maxCertTtlSeconds: this.info.maxCertTtlSeconds },
      certificates: { issued: await sumOf(this.metrics.certificatesIssued), denied: await sumOf(this.metrics.certificatesDenied) },
    };
  }

  close(): void {
    this.monitoring.close();
    this.server.close();
    this.revocations.close();
    this.registry.close();
    void this.kube?.close();
  }
}

/** Sum of a counter over all its label sets. */
async function sumOf(c: { get(): Promise<{ values: Array<{ value: number }> }> }): Promise<number> {
  return (await c.get()).values.reduce((n, v) => n + v.value, 0);
}
