// `weft agent` — run the node agent in the foreground; `weft uninstall` — remove its BPF state.
import { parseArgs } from 'node:util';
import { AgentDefaults, CaTokenAuth, Mesh, NodePaths, Ports } from '../config.js';
import { uninstallCapture } from '../datapath/capture.js';
import { ErrorCodes, WeftError } from '../errors.js';
import { createLogger } from '../log.js';
import { isPort } from '../net/address.js';
import { NodeAgent } from './agent.js';
import { ControllerClient, TokenFile } from '../controller/index.js';
import { ControllerSource, DirSource } from './sources.js';
import { FlowLog, parseFlowLogFilter } from '../flows/flow-log.js';
import { weftVersion } from '../system/version.js';
import { durationProblem, parseDurationSeconds } from '../registry/duration.js';
import { readFileSync } from 'node:fs';
import { DEFAULT_MAX_STREAMS } from '../flows/observer-server.js';
import { observerServing } from './observer-flags.js';
import { cgroup2Root } from '../system/mounts.js';
import { hostname } from 'node:os';
import { parseFastPaths } from '../ztunnel/fast-paths.js';

export const AGENT_USAGE = `usage: weft agent [options]
  --node NAME                   this node's name (default: the host name)
  --controller HOST:PORT        the controller: discovery and certificates (gRPC over TLS)
  --root-cert FILE              the mesh root: the controller's certificate must chain to it
  --node-cert FILE, --node-key FILE
                                this node's credential toward the controller (the lab's way)
  --ca-token FILE               or, on Kubernetes: this agent pod's projected service-account token
                                (audience ${CaTokenAuth.audience}, e.g. ${CaTokenAuth.tokenFile}), re-read when it rotates
  --source dir:PATH             read resources from a YAML directory instead of the controller's discovery
  --cert-ttl DURATION           workload certificate lifetime to ask for (default ${AgentDefaults.certTtl})
  --trust-domain TD             until the controller says otherwise (default ${Mesh.trustDomain})
  --root-namespace NS           where mesh-wide policies live (default ${Mesh.rootNamespace})
  --cgroup PATH                 cgroup v2 directory whose processes are captured (default: the cgroup2 root)
  --bpffs DIR                   pin directory (default ${NodePaths.bpffs})
  --state-dir DIR               the agent's own state: this node's pods, kept across restarts (default ${NodePaths.agentStateDir})
  --pod-socket PATH             the pod channel the CNI plugin calls (default ${NodePaths.podSocket})
  --proc-dir DIR                the host's /proc, where the start-up scan finds running pods (default ${NodePaths.procDir})
  --netns-dir DIR               where runtimes pin pod network namespaces (default ${NodePaths.netnsDir})
  --takeover                    upgrade: take the listening sockets over from the running agent, which drains
  --drain-seconds N             after handing over, wait this long for live connections to end (default ${AgentDefaults.drainSeconds})
  --readiness-port N            default ${Ports.readiness} (GET /healthz/ready)
  --admin-port N                loopback admin API, default ${Ports.admin}
  --exclude-outbound-ports L    comma-separated ports never captured outbound
  --exclude-inbound-ports L     comma-separated ports never captured inbound
  --observer-port N             Hubble Observer gRPC, default ${Ports.observer}: plaintext on 127.0.0.1 only
  --observer-tls                also serve it on the node address with mutual TLS (or WEFT_OBSERVER_TLS=1)
  --observer-address IP         the node address for --observer-tls (default $WEFT_NODE_IP)
  --observer-cert FILE, --observer-key FILE
                                its serving credential (default observer-cert.pem, observer-key.pem beside
                                --node-cert; with --ca-token and neither flag, the controller signs one for
                                spiffe://<td>/weft/node/<node>, renewed at half-life)
  --observer-allow SPIFFE-ID    a client identity that may read flows over TLS, repeatable
                                (default the relay's, spiffe://<trust domain of --node-cert>/weft/relay)
  --observer-max-streams N      flow streams served at once; the next is refused (default ${DEFAULT_MAX_STREAMS})
  --metrics-port N              Prometheus /metrics, default ${Ports.metrics}
  --flow-ring-size N            flows kept for the Observer API, default ${AgentDefaults.flowRingSize}
  --flow-log FILE               every flow as one Hubble JSON line, rotated by size
  --flow-log-max-size BYTES     rotate after this many bytes (default 100 MiB)
  --flow-log-filter JSON        {"whitelist":[FlowFilter...],"blacklist":[...]} for the flow log
  --fast-paths LIST             splice,hbone | all | none (default all; also WEFT_FAST_PATHS)
  --log-level LEVEL             trace|debug|info|warn|error (default info)`;

function ports(value: string | undefined, flag: string): number[] {
  if (!value) return [];
  return value.split(',').map((p) => {
    const n = Number(p.trim());
    if (!isPort(n)) throw new WeftError(ErrorCodes.USAGE, `${flag}: "${p}" is not a port`);
    return n;
  });
}

function positiveInt(text: string, flag: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new WeftError(ErrorCodes.USAGE, `${flag}: "${text}" is not a positive integer`);
  return n;
}

function certTtl(text: string): number {
  const seconds = parseDurationSeconds(text);
  if (seconds === undefined) throw new WeftError(ErrorCodes.USAGE, `--cert-ttl: ${durationProblem(text)}`);
  return seconds;
}

function port(value: string | undefined, fallback: number, flag: string): number {
  return value === undefined ? fallback : (ports(value, flag)[0] ?? fallback);
}

export async function agentCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      node: { type: 'string' },
      controller: { type: 'string' },
      'node-cert': { type: 'string' },
      'node-key': { type: 'string' },
      'root-cert': { type: 'string' },
      'ca-token': { type: 'string' },
      source: { type: 'string' },
      'cert-ttl': { type: 'string', default: AgentDefaults.certTtl },
      'trust-domain': { type: 'string', default: Mesh.trustDomain },
      'root-namespace': { type: 'string', default: Mesh.rootNamespace },
      cgroup: { type: 'string' },
      bpffs: { type: 'string', default: NodePaths.bpffs },
      'state-dir': { type: 'string', default: NodePaths.agentStateDir },
      'pod-socket': { type: 'string', default: NodePaths.podSocket },
      'proc-dir': { type: 'string', default: NodePaths.procDir },
      'netns-dir': { type: 'string', default: NodePaths.netnsDir },
      takeover: { type: 'boolean', default: false },
      'drain-seconds': { type: 'string', default: String(AgentDefaults.drainSeconds) },
      'readiness-port': { type: 'string' },
      'admin-port': { type: 'string' },
      'exclude-outbound-ports': { type: 'string' },
      'exclude-inbound-ports': { type: 'string' },
      'observer-port': { type: 'string' },
      'observer-tls': { type: 'boolean' },
      'observer-address': { type: 'string' },
      'observer-cert': { type: 'string' },
      'observer-key': { type: 'string' },
      'observer-allow': { type: 'string', multiple: true },
      'observer-max-streams': { type: 'string' },
      'metrics-port': { type: 'string' },
      'flow-ring-size': { type: 'string', default: String(AgentDefaults.flowRingSize) },
      'flow-log': { type: 'string' },
      'flow-log-max-size': { type: 'string' },
      'flow-log-filter': { type: 'string' },
      'log-level': { type: 'string' },
      'fast-paths': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(AGENT_USAGE + '\n');
    return 0;
  }
  const { controller: address, 'node-cert': certFile, 'node-key': keyFile, 'root-cert': rootFile, 'ca-token': tokenFile } = values;
  if (!address || !rootFile) {
    throw new WeftError(ErrorCodes.USAGE, `--controller and --root-cert are required\n${AGENT_USAGE}`);
  }
  if ((certFile === undefined) !== (keyFile === undefined)) {
    throw new WeftError(ErrorCodes.USAGE, `--node-cert and --node-key go together\n${AGENT_USAGE}`);
  }
  if (!certFile && !tokenFile) {
    throw new WeftError(ErrorCodes.USAGE, `the agent authenticates with --node-cert and --node-key, or with --ca-token\n${AGENT_USAGE}`);
  }
  const log = createLogger('agent', { ...(values['log-level'] ? { level: values['log-level'] } : {}) });
  const node = values.node ?? hostname();
  const drainSeconds = positiveInt(values['drain-seconds'], '--drain-seconds');
  const rootCertPem = readFileSync(rootFile, 'utf8');
  const controller = new ControllerClient({
    address,
    node,
    rootCertPem,
    ...(certFile && keyFile ? { certPem: readFileSync(certFile, 'utf8'), keyPem: readFileSync(keyFile, 'utf8') } : {}),
    ...(tokenFile ? { tokenFile } : {}),
    log,
  });
  // Fail at start, naming the file, rather than on the first call: the token must be readable now.
  if (tokenFile) new TokenFile(tokenFile).read();
  let source;
  if (values.source === undefined) source = new ControllerSource(controller, log);
  else if (values.source.startsWith('dir:')) source = new DirSource(values.source.slice('dir:'.length), log);
  else throw new WeftError(ErrorCodes.USAGE, `unsupported --source "${values.source}" (dir:PATH)`);
  const agent = await NodeAgent.start({
    node,
    source,
    ca: controller,
    certTtlSeconds: certTtl(values['cert-ttl']),
    trustDomain: values['trust-domain'],
    rootNamespace: values['root-namespace'],
    cgroup: values.cgroup ?? cgroup2Root(),
    bpffs: values.bpffs,
    stateDir: values['state-dir'],
    podSocket: values['pod-socket'],
    procDir: values['proc-dir'],
    netnsDir: values['netns-dir'],
    takeover: values.takeover,
    readinessPort: port(values['readiness-port'], Ports.readiness, '--readiness-port'),
    adminPort: port(values['admin-port'], Ports.admin, '--admin-port'),
    excludeOutboundPorts: ports(values['exclude-outbound-ports'], '--exclude-outbound-ports'),
    excludeInboundPorts: ports(values['exclude-inbound-ports'], '--exclude-inbound-ports'),
    observerPort: port(values['observer-port'], Ports.observer, '--observer-port'),
    // With a token the agent holds no files from the CA: its Observer certificate comes from the controller.
    observer: observerServing(
      values,
      certFile ?? rootFile,
      rootFile,
      process.env,
      tokenFile ? { signer: controller, node, rootCertPem, trustDomain: values['trust-domain'], log } : undefined,
    ),
    metricsPort: port(values['metrics-port'], Ports.metrics, '--metrics-port'),
    flowRingSize: positiveInt(values['flow-ring-size'], '--flow-ring-size'),
    ...(values['flow-log']
      ? {
          flowLog: new FlowLog({
            path: values['flow-log'],
            ...(values['flow-log-max-size'] ? { maxBytes: positiveInt(values['flow-log-max-size'], '--flow-log-max-size') } : {}),
            ...(values['flow-log-filter'] ? parseFlowLogFilter(values['flow-log-filter']) : {}),
          }),
        }
      : {}),
    fastPaths: parseFastPaths(values['fast-paths'] ?? process.env.WEFT_FAST_PATHS ?? 'all', values['fast-paths'] ? '--fast-paths' : 'WEFT_FAST_PATHS'),
    version: `weft/${weftVersion()}`,
    log,
  });
  // Only a process that let go of everything reaches 'exit' by itself: the line proves a clean stop.
  process.once('exit', (code) => log.info({ code }, 'agent exited'));
  const signalled = new Promise<string>((resolve) => {
    for (const sig of ['SIGTERM', 'SIGINT'] as const) process.once(sig, () => resolve(sig));
  });
  const why = await Promise.race([signalled, agent.handedOverPromise.then(() => 'handed over')]);
  if (why === 'handed over') {
    // A new agent serves the node: what we still relay runs to its end (or the grace period).
    const drainMs = drainSeconds * 1000;
    const { drained } = await Promise.race([agent.drain(drainMs), signalled.then(() => ({ drained: false }))]);
    log.info({ drained, drainSeconds }, drained ? 'drained; exiting' : 'drain cut short; exiting');
  } else {
    log.info('shutting down; capture stays pinned and fails closed until the next agent is ready');
  }
  await agent.stop();
  controller.close();
  return 0;
}

export async function uninstallCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { bpffs: { type: 'string', default: NodePaths.bpffs } } });
  const { detached } = uninstallCapture(values.bpffs);
  process.stdout.write(`removed ${values.bpffs} (${detached} links detached)\n`);
  return 0;
}
