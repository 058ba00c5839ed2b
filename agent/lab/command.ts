// `weft lab ...`: up, down, status, exec, apply, logs [-f], restart-agent. Wired into main.ts as the
// `lab` subcommand; returns the process exit code (exec passes the command's code through).
import { createReadStream, existsSync, readFileSync, statSync, watchFile, unwatchFile } from 'node:fs';
import { ConfigError, ErrorCodes, WeftError, errorMessage, formatProblem } from '../errors.js';
import { labApply, labDown, labExec, labStatus, labUp, openLab, type LabStatus } from './index.js';

const USAGE = `usage: weft lab <command> [--name LAB] ...
  up -f FILE... [--no-agents] [--timeout SECONDS]   create the lab and start one agent per node
  apply -f FILE...                                  add or change pods, labels and services
  down                                              remove everything the lab created (also after a crash)
  status [--json]                                   nodes, pods, services and the state directory
  exec NS/POD -- CMD...                             run a command inside a pod (exit code passed through)
  logs NODE|NS/POD [-f]                             an agent's (or a pod's containers') log
  restart-agent NODE [--graceful]                   SIGTERM the node's agent, start it again, wait until ready;
                                                    --graceful: the new agent takes the sockets over, the old drains
The lab name defaults to $WEFT_LAB or "weft".`;

interface Parsed {
  name?: string;
  files: string[];
  json: boolean;
  follow: boolean;
  agents: boolean;
  /** restart-agent: an upgrade (hand-over) instead of stop and start. */
  graceful: boolean;
  timeoutMs?: number;
  positional: string[];
  rest: string[];
}

function parse(argv: string[]): Parsed {
  const p: Parsed = { files: [], json: false, follow: false, agents: true, graceful: false, positional: [], rest: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = (): string => {
      const eq = a.indexOf('=');
      if (a.startsWith('--') && eq > 0) return a.slice(eq + 1);
      const v = argv[++i];
      if (v === undefined) throw new WeftError(ErrorCodes.USAGE, `${a} needs a value`);
      return v;
    };
    if (a === '--') {
      p.rest = argv.slice(i + 1);
      break;
    } else if (a === '-f' || a === '--file' || a.startsWith('--file=')) {
      // `logs -f` means follow; for up/apply -f takes a file.
      if (a === '-f' && p.positional[0] === 'logs') p.follow = true;
      else p.files.push(value());
    } else if (a === '--follow') p.follow = true;
    else if (a === '--name' || a.startsWith('--name=')) p.name = value();
    else if (a === '--json') p.json = true;
    else if (a === '--no-agents') p.agents = false;
    else if (a === '--graceful') p.graceful = true;
    else if (a === '--timeout' || a.startsWith('--timeout=')) {
      const s = Number(value());
      if (!Number.isFinite(s) || s <= 0) throw new WeftError(ErrorCodes.USAGE, '--timeout needs a positive number of seconds');
      p.timeoutMs = s * 1000;
    } else if (a === '-h' || a === '--help') p.positional.unshift('help');
    else if (a.startsWith('-') && a !== '-') throw new WeftError(ErrorCodes.USAGE, `unknown option ${a}\n${USAGE}`);
    else p.positional.push(a);
  }
  return p;
}

const out = (s: string): void => {
  process.stdout.write(s);
};

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  return rows.map((r) => r.map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]!))).join('  ')).join('\n') + '\n';
}

export function formatStatus(s: LabStatus): string {
  let t = `lab ${s.name}: ${s.status} (since ${s.createdAt})\nstate: ${s.stateDir}\n`;
  t += `node network ${s.nodeNetwork} (host ${s.hostIP}), service CIDR ${s.serviceCIDR}, load balancer ${s.loadBalancer}\n`;
  const c = s.controller;
  t +=
    c.state === 'disabled'
      ? 'controller: none (lab started with --no-agents)\n\n'
      : `controller: ${c.state}${c.pid ? ` (pid ${c.pid})` : ''}, gRPC ${c.listen}, monitoring http://${c.monitoring}, trust domain ${c.trustDomain}, workload certificates ${c.workloadCertTTL}\n`;
  const r = s.relay;
  if (r.state !== 'disabled') t += `relay: ${r.state}${r.pid ? ` (pid ${r.pid})` : ''}, Observer API ${r.listen} (weft observe)\n`;
  if (c.state !== 'disabled') t += '\n';
  t += table([['NODE', 'IP', 'POD CIDR', 'AGENT', 'PID'], ...s.nodes.map((n) => [n.name, n.ip, n.podCIDR, n.agent, n.agentPid ? String(n.agentPid) : '-'])]);
  t += '\n';
  t += table([
    ['POD', 'NODE', 'IP', 'PHASE', 'MESH', 'CONTAINERS'],
    ...s.pods.map((p) => [`${p.namespace}/${p.name}`, p.node, p.ip, p.phase, p.enrolled ? 'ambient' : '-', p.containers.map((c) => `${c.name}${c.running ? '' : '(stopped)'}`).join(',')]),
  ]);
  if (s.services.length) {
    t += '\n';
    t += table([['SERVICE', 'CLUSTER-IP', 'PORTS', 'ENDPOINTS'], ...s.services.map((v) => [`${v.namespace}/${v.name}`, v.clusterIP, v.ports.join(','), v.endpoints.join(',') || '<none>'])]);
  }
  return t;
}

async function printStatus(name: string | undefined, json: boolean): Promise<void> {
  const s = await labStatus({ name });
  out(json ? JSON.stringify(s, null, 2) + '\n' : formatStatus(s));
}

async function follow(file: string): Promise<number> {
  let pos = 0;
  const pump = (): Promise<void> =>
    new Promise((resolve) => {
      let size = 0;
      try {
        size = statSync(file).size;
      } catch {
        resolve();
        return;
      }
      if (size < pos) pos = 0; // truncated
      if (size === pos) {
        resolve();
        return;
      }
      const s = createReadStream(file, { start: pos, end: size - 1 });
      s.on('data', (d) => process.stdout.write(d));
      s.on('end', () => {
        pos = size;
        resolve();
      });
      s.on('error', () => resolve());
    });
  await pump();
  return new Promise((resolve) => {
    let busy = false;
    watchFile(file, { interval: 250 }, () => {
      if (busy) return;
      busy = true;
      void pump().then(() => (busy = false));
    });
    const stop = (): void => {
      unwatchFile(file);
      resolve(0);
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}

export async function labCommand(argv: string[]): Promise<number> {
  let p: Parsed;
  try {
    p = parse(argv);
  } catch (err) {
    process.stderr.write(`weft lab: ${errorMessage(err)}\n`);
    return 2;
  }
  const [cmd, ...args] = p.positional;
  try {
    switch (cmd) {
      case 'up': {
        if (!p.files.length) throw new WeftError(ErrorCodes.USAGE, 'lab up needs -f FILE');
        const lab = await labUp(p.files, { name: p.name, agents: p.agents, readyTimeoutMs: p.timeoutMs });
        await printStatus(lab.name, p.json);
        return 0;
      }
      case 'apply': {
        if (!p.files.length) throw new WeftError(ErrorCodes.USAGE, 'lab apply needs -f FILE');
        const lab = await labApply(p.files, { name: p.name });
        await printStatus(lab.name, p.json);
        return 0;
      }
      case 'down': {
        const r = await labDown({ name: p.name });
        out(p.json ? JSON.stringify(r, null, 2) + '\n' : `lab ${r.lab} removed (${r.removed.length} objects)\n`);
        return 0;
      }
      case 'status':
        await printStatus(p.name, p.json);
        return 0;
      case 'exec': {
        const target = args[0];
        if (!target || !p.rest.length) throw new WeftError(ErrorCodes.USAGE, 'usage: weft lab exec NS/POD -- CMD...');
        const r = await labExec(p.name, target, p.rest, { stdio: 'inherit' });
        return r.code;
      }
      case 'logs': {
        const target = args[0];
        if (!target) throw new WeftError(ErrorCodes.USAGE, 'usage: weft lab logs NODE|NS/POD [-f]');
        const lab = openLab(p.name);
        const files = target.includes('/') ? lab.pod(target).containers.map((c) => c.log) : [lab.node(target).agentLog];
        if (p.follow) {
          if (files.length !== 1) throw new WeftError(ErrorCodes.USAGE, 'logs -f follows one file: the pod has several containers');
          return await follow(files[0]!);
        }
        for (const f of files) if (existsSync(f)) out(readFileSync(f, 'utf8'));
        return 0;
      }
      case 'restart-agent': {
        const node = args[0];
        if (!node) throw new WeftError(ErrorCodes.USAGE, 'usage: weft lab restart-agent NODE [--graceful]');
        const { graceful } = p;
        const pid = await openLab(p.name).restartAgent(node, { readyTimeoutMs: p.timeoutMs, graceful });
        out(graceful ? `agent of node ${node} upgraded in place (pid ${pid}); the old one drains its connections\n` : `agent of node ${node} restarted (pid ${pid}) and ready\n`);
        return 0;
      }
      case undefined:
      case 'help':
        out(USAGE + '\n');
        return cmd === 'help' ? 0 : 2;
      default:
        throw new WeftError(ErrorCodes.USAGE, `unknown lab command "${cmd}"\n${USAGE}`);
    }
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`weft lab ${cmd}: invalid configuration (${err.code}):\n${err.problems.map((x) => `  ${formatProblem(x)}`).join('\n')}\n`);
      return 1;
    }
    const code = err instanceof WeftError ? ` (${err.code})` : '';
    process.stderr.write(`weft lab ${cmd}: ${errorMessage(err)}${code}\n`);
    return err instanceof WeftError && err.code === ErrorCodes.USAGE ? 2 : 1;
  }
}
