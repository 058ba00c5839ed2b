// `weft controller` — run the control plane in the foreground (registry, CA, discovery, monitoring);
// `weft controller node-credentials` — write a node agent's credential toward it;
// `weft controller revoke-node` — refuse a node's credential from now on.
import { parseArgs } from 'node:util';
import { CaTokenAuth, ControllerDefaults, Mesh } from '../config.js';
import { Controller, DEFAULT_CSR_RATE_LIMIT, REVOKED_NODES_FILE, appendRevocation, writeNodeCredentials } from './index.js';
import { ErrorCodes, WeftError } from '../errors.js';
import { createLogger } from '../log.js';
import { durationProblem, formatDuration, parseDurationSeconds } from '../registry/duration.js';

const CONTROLLER_USAGE = `usage: weft controller --source (dir:PATH | kubernetes) --state DIR [options]
  --source dir:PATH          directory of Kubernetes-style YAML (workloads, services, policies), watched
  --source kubernetes        the Kubernetes API: list + watch of namespaces, nodes, pods, services,
                             endpoint slices and the policy kinds; rejected objects get a status
                             condition or an Event; agents may authenticate with service-account tokens
  --kubeconfig FILE          with --source kubernetes (default $KUBECONFIG, ~/.kube/config, or the
                             pod's service account in a cluster)
  --token-audience AUD       with --source kubernetes: the audience agents' tokens must be valid for
                             (default ${CaTokenAuth.audience})
  --agent-service-account U  with --source kubernetes: the only user whose tokens act as node agents
                             (default ${CaTokenAuth.agentServiceAccount})
  --state DIR                where the CA keeps its root (created on first start)
  --listen HOST:PORT         gRPC discovery + certificates over mutual TLS (default ${ControllerDefaults.listen})
  --trust-domain TD          SPIFFE trust domain (default ${Mesh.trustDomain})
  --root-namespace NS        namespace whose policies apply mesh-wide (default ${Mesh.rootNamespace})
  --max-cert-ttl DURATION    longest workload certificate issued (default ${formatDuration(ControllerDefaults.maxCertTtlSeconds)})
  --monitoring HOST:PORT     /metrics, /healthz/ready, /debug/status (default ${ControllerDefaults.monitoring})
  --serving-ip IP            an address agents dial (repeatable; the --listen IP is included)
  --serving-dns NAME         a DNS name agents dial (repeatable)
  --csr-burst N              certificate requests one node may send at once (default ${DEFAULT_CSR_RATE_LIMIT.burst})
  --csr-rate N               certificate requests per second per node after the burst (default ${DEFAULT_CSR_RATE_LIMIT.perSecond})
  --log-level LEVEL          trace|debug|info|warn|error (default info)

usage: weft controller node-credentials --state DIR --node NAME --out DIR [--trust-domain TD] [--ttl DURATION]
  writes node-cert.pem, node-key.pem (0600) and root-cert.pem for the node's agent (default ttl ${formatDuration(ControllerDefaults.nodeCredentialTtlSeconds)})

usage: weft controller revoke-node --state DIR (--node NAME | --serial HEX)
  appends to DIR/${REVOKED_NODES_FILE}; a running controller refuses the node (or that one credential)
  from its next call on and closes its discovery stream`;

function duration(text: string, flag: string): number {
  const s = parseDurationSeconds(text);
  if (s === undefined) throw new WeftError(ErrorCodes.USAGE, `${flag}: ${durationProblem(text)}`);
  return s;
}

function required(value: string | undefined, flag: string): string {
  if (!value) throw new WeftError(ErrorCodes.USAGE, `${flag} is required\n${CONTROLLER_USAGE}`);
  return value;
}

function positiveNumber(text: string, flag: string): number {
  const n = Number(text);
  if (text.trim() === '' || !Number.isFinite(n) || n <= 0) throw new WeftError(ErrorCodes.USAGE, `${flag}: "${text}" is not a positive number`);
  return n;
}

export async function controllerCommand(argv: string[]): Promise<number> {
  if (argv[0] === 'node-credentials') return nodeCredentialsCommand(argv.slice(1));
  if (argv[0] === 'revoke-node') return revokeNodeCommand(argv.slice(1));
  const { values } = parseArgs({
    args: argv,
    options: {
      source: { type: 'string' },
      kubeconfig: { type: 'string' },
      'token-audience': { type: 'string' },
      'agent-service-account': { type: 'string' },
      state: { type: 'string' },
      listen: { type: 'string', default: ControllerDefaults.listen },
      'trust-domain': { type: 'string', default: Mesh.trustDomain },
      'root-namespace': { type: 'string', default: Mesh.rootNamespace },
      'max-cert-ttl': { type: 'string', default: formatDuration(ControllerDefaults.maxCertTtlSeconds) },
      monitoring: { type: 'string', default: ControllerDefaults.monitoring },
      'serving-ip': { type: 'string', multiple: true, default: [] },
      'serving-dns': { type: 'string', multiple: true, default: [] },
      'csr-burst': { type: 'string', default: String(DEFAULT_CSR_RATE_LIMIT.burst) },
      'csr-rate': { type: 'string', default: String(DEFAULT_CSR_RATE_LIMIT.perSecond) },
      'log-level': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(CONTROLLER_USAGE + '\n');
    return 0;
  }
  const csrRateLimit = { burst: positiveNumber(values['csr-burst'], '--csr-burst'), perSecond: positiveNumber(values['csr-rate'], '--csr-rate') };
  if (csrRateLimit.burst < 1) throw new WeftError(ErrorCodes.USAGE, '--csr-burst: must be at least 1');
  const tokenReview = {
    ...(values['token-audience'] !== undefined ? { audience: values['token-audience'] } : {}),
    ...(values['agent-service-account'] !== undefined ? { agentServiceAccount: values['agent-service-account'] } : {}),
  };
  if (Object.keys(tokenReview).length && values.source !== 'kubernetes') {
    throw new WeftError(ErrorCodes.USAGE, '--token-audience and --agent-service-account go with --source kubernetes (agents elsewhere use node credentials)');
  }
  const log = createLogger('controller', { ...(values['log-level'] ? { level: values['log-level'] } : {}) });
  const controller = await Controller.start({
    source: required(values.source, '--source'),
    ...(values.kubeconfig !== undefined ? { kubeconfig: values.kubeconfig } : {}),
    stateDir: required(values.state, '--state'),
    listen: values.listen,
    trustDomain: values['trust-domain'],
    rootNamespace: values['root-namespace'],
    maxCertTtlSeconds: duration(values['max-cert-ttl'], '--max-cert-ttl'),
    monitoring: values.monitoring,
    servingIps: values['serving-ip'],
    servingDns: values['serving-dns'],
    csrRateLimit,
    tokenReview,
    log,
  });
  log.info({ source: values.source, listen: values.listen, port: controller.server.port, monitoring: values.monitoring }, 'controller ready');
  await new Promise<void>((resolve) => {
    for (const sig of ['SIGTERM', 'SIGINT'] as const) process.once(sig, () => resolve());
  });
  log.info('shutting down; agents keep their last configuration and certificates');
  controller.close();
  return 0;
}

async function nodeCredentialsCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      state: { type: 'string' },
      node: { type: 'string' },
      out: { type: 'string' },
      'trust-domain': { type: 'string', default: Mesh.trustDomain },
      ttl: { type: 'string', default: formatDuration(ControllerDefaults.nodeCredentialTtlSeconds) },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(CONTROLLER_USAGE + '\n');
    return 0;
  }
  const files = await writeNodeCredentials({
    stateDir: required(values.state, '--state'),
    node: required(values.node, '--node'),
    outDir: required(values.out, '--out'),
    trustDomain: values['trust-domain'],
    ttlSeconds: duration(values.ttl, '--ttl'),
  });
  process.stdout.write(`wrote ${files.certFile}, ${files.keyFile}, ${files.rootFile} (serial ${files.serial}, valid until ${files.notAfter})\n`);
  return 0;
}

async function revokeNodeCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      state: { type: 'string' },
      node: { type: 'string' },
      serial: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(CONTROLLER_USAGE + '\n');
    return 0;
  }
  const stateDir = required(values.state, '--state');
  if (!values.node && !values.serial) throw new WeftError(ErrorCodes.USAGE, `--node or --serial is required\n${CONTROLLER_USAGE}`);
  const file = appendRevocation(stateDir, { ...(values.node ? { node: values.node } : {}), ...(values.serial ? { serial: values.serial } : {}) });
  process.stdout.write(`revoked ${values.node ? `node ${values.node}` : `serial ${values.serial}`} (${file})\n`);
  return 0;
}
