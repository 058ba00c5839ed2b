// Every default of weft in one place, as ztunnel keeps them in its config.rs: the ports (Istio ambient's
// and Hubble's numbers, so muscle memory works), the paths on a node, the mesh's names, and the socket
// marks. Command-line flags and lab files override them; nothing else spells these values out.

/** The ports of the mesh. In each pod netns: outbound, inbound, hbone. On the node: the rest. */
export const Ports = {
  /** Outbound capture listener, 127.0.0.1 inside each enrolled pod's netns. */
  outbound: 15001,
  /** Inbound plaintext capture listener, inside each enrolled pod's netns (sk_lookup steers to it). */
  inbound: 15006,
  /** HBONE: HTTP/2 CONNECT over mutual TLS, inside each enrolled pod's netns. */
  hbone: 15008,
  /** The agent's admin API (loopback only). */
  admin: 15000,
  /** The agent's Prometheus metrics. */
  metrics: 15020,
  /** The agent's readiness, `/healthz/ready`. */
  readiness: 15021,
  /** The controller: discovery and CA (gRPC over mutual TLS). */
  controller: 15012,
  /** The controller's monitoring: /metrics, /healthz/ready, /debug/status (istiod's number). */
  controllerMonitoring: 15014,
  /** A node's Observer API (Hubble). */
  observer: 4244,
  /** The relay's Observer API (Hubble Relay). */
  relay: 4245,
} as const;

/** Ports an inbound connection may never be forwarded to: the node proxy's own. */
export const PROXY_PORTS: ReadonlySet<number> = new Set([Ports.outbound, Ports.inbound, Ports.hbone, Ports.admin, Ports.metrics, Ports.readiness]);

/** SO_MARK values. `proxy` is on every socket the agent opens in a pod (Istio's value; reply routing
 * keeps it on the main table); `app` on its transparent sockets toward an app, whose replies route
 * back to the proxy (agent/ztunnel/inpod-routing.ts). Capture never trusts a mark. */
export const Marks = { proxy: 0x539, app: 0x53a } as const;

/** The mesh's names. */
export const Mesh = {
  trustDomain: 'cluster.local',
  clusterDomain: 'cluster.local',
  /** Where mesh-wide policies live (Istio's root namespace). */
  rootNamespace: 'istio-system',
} as const;

/** Where the node agent keeps what must outlive it. */
export const NodePaths = {
  /** BPF pins: programs, maps, links (capture survives agent restarts). */
  bpffs: '/sys/fs/bpf/weft',
  /** The agent's own state: this node's pods, as the runtime reported them. */
  agentStateDir: '/var/run/weft/agent',
  /** The pod channel (the CNI plugin's way in). */
  podSocket: '/var/run/weft/pods.sock',
  /** Where runtimes pin pod network namespaces (containerd, CRI-O, `ip netns`): the start-up scan
   * names each pod's netns by its file here (agent/node/pod-scan.ts). */
  netnsDir: '/var/run/netns',
  /** The kernel's view of processes, for the start-up scan. */
  procDir: '/proc',
} as const;

/**
 * weft-cni, the chained CNI plugin (cni/): the `type` runtimes run, and the settings of its entry in
 * the node's conflist (`"weft": {...}`; agent/system/cni.ts writes them). The plugin's fail-closed
 * rule: pods of `excludeNamespaces` pass through without asking the agent; every other pod's ADD
 * fails while no agent answers (the runtime retries).
 */
export const CniDefaults = {
  /** The executable's name, and `type` in the network configuration. */
  type: 'weft-cni',
  /** The spec version the lab (playing the runtime) speaks; the plugin supports 0.3.0 to 1.1.0. */
  cniVersion: '1.0.0',
  /** How long ADD waits for the agent to attach capture (the plugin's own default is the same). */
  addTimeoutMs: 10_000,
  /** Namespaces whose pods never wait for the agent: the cluster's own and weft's (its controller and
   * relay must start without an agent). */
  excludeNamespaces: ['kube-system', 'weft-system'] as readonly string[],
  /** The interface the primary plugin creates in the pod (CNI_IFNAME). */
  ifName: 'eth0',
  /** Where the plugin is installed on a node, and where its conflist lives (Kubernetes' defaults). */
  binDir: '/opt/cni/bin',
  confDir: '/etc/cni/net.d',
} as const;

/** Agent defaults that flags override. */
export const AgentDefaults = {
  /** Workload certificate lifetime asked of the CA (as the flag spells it, and in seconds). */
  certTtl: '24h',
  certTtlSeconds: 24 * 60 * 60,
  /** Flows kept for the Observer API (Hubble's default ring). */
  flowRingSize: 4095,
  /** After handing over to a new agent, how long live connections may take to end. */
  drainSeconds: 30,
  /** The Observer serving certificate asked of the controller (`--observer-tls` with `--ca-token`), renewed at half-life. */
  observerCertTtlSeconds: 24 * 60 * 60,
} as const;

/** The node proxy's own bounds, in ms. */
export const ProxyTimeouts = {
  /** Connecting to an app, a passthrough destination, or waiting for the certificate to dial with. */
  connectMs: 10_000,
  /** Enrollment waits this long for the pod's certificate (the pod stays PENDING and is retried). */
  certificateMs: 15_000,
} as const;

/** Controller defaults that flags override. */
export const ControllerDefaults = {
  /** Discovery and certificates: every interface, agents dial it from their nodes. */
  listen: `0.0.0.0:${Ports.controller}`,
  /** Monitoring stays on loopback unless asked: /debug/status names every node and workload. */
  monitoring: `127.0.0.1:${Ports.controllerMonitoring}`,
  /** The longest workload certificate the CA issues, whatever an agent asks for (AgentDefaults.certTtl's 24h). */
  maxCertTtlSeconds: 24 * 3600,
  /** Node credentials are re-issued by the operator (or the DaemonSet's init step); a month bounds
   * what a stolen one is worth even when nobody revokes it. */
  nodeCredentialTtlSeconds: 30 * 24 * 3600,
  /** The longest Observer serving certificate signed for a node agent over gRPC: renewed, not kept. */
  maxObserverCertTtlSeconds: 24 * 3600,
} as const;

/**
 * How a node agent on Kubernetes proves who it is to the controller's CA: a projected service-account
 * token with weft's own audience (as ztunnel's with `istio-ca`), verified by a TokenReview. The lab keeps
 * file-based node credentials.
 */
export const CaTokenAuth = {
  /** The audience the agent's projected token is minted for, and the only one the controller accepts. */
  audience: 'weft-ca',
  /** The weft agent's service account, as the API server names it in a TokenReview. */
  agentServiceAccount: 'system:serviceaccount:weft-system:weft-agent',
  /** Where the DaemonSet projects the token into the agent's pod (`weft agent --ca-token`). */
  tokenFile: '/var/run/secrets/tokens/weft-ca',
  /** A token the API server accepted is not reviewed again for this long (never past its `exp`). */
  cacheTtlMs: 60_000,
  /** A token it refused is refused from the cache for this long: a flood of bad tokens costs one review each per window. */
  refusalCacheTtlMs: 10_000,
  /** Reviews remembered at once (keyed by a hash of the token); the oldest go first. */
  cacheMaxEntries: 4096,
  /** A TokenReview that takes longer fails the call with UNAVAILABLE (the agent retries with backoff). */
  reviewTimeoutMs: 5_000,
  /** Reviews under way at once; more fail with UNAVAILABLE (anyone who can reach 15012 can send a token). */
  maxConcurrentReviews: 64,
  /** Projected tokens are 1-2 KiB; anything far larger is not one. */
  maxTokenBytes: 16 * 1024,
} as const;

/**
 * The controller's Kubernetes source (`weft controller --source kubernetes`): list + watch of every
 * kind the registry knows, decoded and validated like the files of `--source dir:PATH`.
 */
export const KubeSourceDefaults = {
  /** Objects per list page (`limit` + `continue`), as client-go's reflector asks. */
  listPageSize: 500,
  /** After a failed list or watch: the first wait, doubled per failure up to the cap. */
  retryInitialMs: 1_000,
  retryMaxMs: 30_000,
  /** A watch asks the server to end it after this long, stretched by up to as much again at random
   * (client-go: 5 to 10 minutes), so a connection that died silently cannot hold a kind forever. */
  watchTimeoutSeconds: 300,
  /** Changes that arrive together become one registry version after this quiet time. */
  batchMs: 50,
  /** Who writes weft's Events (`reportingController`) and status conditions. */
  reportingController: 'weft.io/controller',
  /** The status condition weft keeps on the Istio-kind objects it rejected (status False) or took back (True). */
  conditionType: 'weft.io/Accepted',
  /** The field manager of weft's status patches. */
  fieldManager: 'weft-controller',
  /** Longest Event note the API server takes (bytes). */
  maxEventNoteBytes: 1024,
} as const;

/** Relay defaults that flags override. */
export const RelayDefaults = {
  /** Where the relay serves the cluster-wide Observer API: loopback, as Hubble Relay's port-forward. */
  listen: `127.0.0.1:${Ports.relay}`,
  /** Where `weft observe` and `weft demo` find it. */
  address: `localhost:${Ports.relay}`,
} as const;
