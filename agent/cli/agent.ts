// `weft agent` — run the node agent in the foreground; `weft uninstall` — remove its BPF state.
import { parseArgs } from 'node:util';
import { uninstallCapture } from '../datapath/capture.js';
import { ErrorCodes, WeftError } from '../errors.js';
import { createLogger } from '../log.js';
import { NodeAgent } from '../node/agent.js';
import { cgroup2Root } from '../system/mounts.js';
import { hostname } from 'node:os';

export const AGENT_USAGE = `usage: weft agent [options]
  --node NAME                   this node's name (default: the host name)
  --source dir:PATH             Kubernetes-style YAML directory to read and watch
  --cgroup PATH                 cgroup v2 directory whose processes are captured (default: the cgroup2 root)
  --bpffs DIR                   pin directory (default /sys/fs/bpf/weft)
  --readiness-port N            default 15021 (GET /healthz/ready)
  --admin-port N                loopback admin API, default 15000
  --exclude-outbound-ports L    comma-separated ports never captured outbound
  --exclude-inbound-ports L     comma-separated ports never captured inbound
  --log-level LEVEL             trace|debug|info|warn|error (default info)`;

function ports(value: string | undefined, flag: string): number[] {
  if (!value) return [];
  return value.split(',').map((p) => {
    const n = Number(p.trim());
    if (!Number.isInteger(n) || n < 1 || n > 65535) throw new WeftError(ErrorCodes.USAGE, `${flag}: "${p}" is not a port`);
    return n;
  });
}

function port(value: string | undefined, fallback: number, flag: string): number {
  return value === undefined ? fallback : (ports(value, flag)[0] ?? fallback);
}

export async function agentCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      node: { type: 'string' },
      source: { type: 'string' },
      cgroup: { type: 'string' },
      bpffs: { type: 'string', default: '/sys/fs/bpf/weft' },
      'readiness-port': { type: 'string' },
      'admin-port': { type: 'string' },
      'exclude-outbound-ports': { type: 'string' },
      'exclude-inbound-ports': { type: 'string' },
      'log-level': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(AGENT_USAGE + '\n');
    return 0;
  }
  if (!values.source) throw new WeftError(ErrorCodes.USAGE, `--source is required\n${AGENT_USAGE}`);
  const log = createLogger('agent', { ...(values['log-level'] ? { level: values['log-level'] } : {}) });
  const agent = await NodeAgent.start({
    node: values.node ?? hostname(),
    source: values.source,
    cgroup: values.cgroup ?? cgroup2Root(),
    bpffs: values.bpffs,
    readinessPort: port(values['readiness-port'], 15021, '--readiness-port'),
    adminPort: port(values['admin-port'], 15000, '--admin-port'),
    excludeOutboundPorts: ports(values['exclude-outbound-ports'], '--exclude-outbound-ports'),
    excludeInboundPorts: ports(values['exclude-inbound-ports'], '--exclude-inbound-ports'),
    log,
  });
  await new Promise<void>((resolve) => {
    for (const sig of ['SIGTERM', 'SIGINT'] as const) process.once(sig, () => resolve());
  });
  log.info('shutting down; capture stays pinned and fails closed until the next agent is ready');
  await agent.stop();
  return 0;
}

export async function uninstallCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { bpffs: { type: 'string', default: '/sys/fs/bpf/weft' } } });
  const { detached } = uninstallCapture(values.bpffs);
  process.stdout.write(`removed ${values.bpffs} (${detached} links detached)\n`);
  return 0;
}
