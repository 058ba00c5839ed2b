#!/usr/bin/env node
// The `weft` command line.
import { SyscallError, WeftError, ConfigError } from '../errors.js';

const USAGE = `weft — a sidecarless service mesh

usage: weft <command> [options]

commands:
  lab up|down|status|exec|apply|logs|restart-agent   a local cluster of network namespaces (weft lab --help)
  agent                                              run the node agent (weft agent --help)
  controller [node-credentials|revoke-node]          run the control plane, write or revoke a node's credential (weft controller --help)
  apply|delete -f FILE... [--name LAB]               add or remove policies (AuthorizationPolicy, PeerAuthentication) in a lab
  status [--name LAB] [--controller-monitoring URL]  nodes, agents, enrolled pods and configuration errors, from the controller
  observe [flags]                                    flows of the whole cluster (or a node), hubble observe's flags (weft observe --help)
  relay [--listen HOST:PORT] ...                     the cluster-wide Observer API over every node's (weft relay --help)
  demo [--keep] [--duration S]                       the example lab: mTLS, policies and live flows, then torn down
  uninstall [--bpffs DIR]                            detach and remove every program, map and pin of an agent
  version                                            print the version
`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'lab':
      return (await import('../lab/command.js')).labCommand(rest);
    case 'agent':
      return (await import('../node/command.js')).agentCommand(rest);
    case 'controller':
      return (await import('../controller/command.js')).controllerCommand(rest);
    case 'apply':
      return (await import('./apply.js')).applyCommand(rest);
    case 'delete':
      return (await import('./apply.js')).deleteCommand(rest);
    case 'status':
      return (await import('./status.js')).statusCommand(rest);
    case 'uninstall':
      return (await import('../node/command.js')).uninstallCommand(rest);
    case 'demo':
      // The demo prints its own progress; the lab's JSON log is for the lab's log files.
      process.env.WEFT_LAB_LOG_LEVEL ??= 'warn';
      return (await import('./demo.js')).demoCommand(rest);
    case 'observe':
      return (await import('./observe.js')).observeCommand(rest);
    case 'relay':
      return (await import('../relay/command.js')).relayCommand(rest);
    case 'version':
    case '--version':
      process.stdout.write(`weft ${(await import('../system/version.js')).weftVersion()}\n`);
      return 0;
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE);
      return command === undefined ? 2 : 0;
    default:
      process.stderr.write(`weft: unknown command "${command}"\n\n${USAGE}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof ConfigError) process.stderr.write(`weft: invalid configuration:\n${err.message}\n`);
    else if (err instanceof SyscallError) process.stderr.write(`weft: ${err.message}\n`);
    else if (err instanceof WeftError) process.stderr.write(`weft: ${err.message} [${err.code}]\n`);
    else process.stderr.write(`weft: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  },
);
