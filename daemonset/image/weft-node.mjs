#!/usr/bin/env node
// weft-node: the entry of the agent's container in the DaemonSet (daemonset/core/agent.yaml).
//
//   weft-node run [--cni-bin-dir DIR] [--cni-conf-dir DIR] [--no-cni] -- agent <weft agent flags>
//       checks the node (a BPF filesystem under --bpffs, cgroup v2 at --cgroup), makes /proc/sys
//       writable in this container (the agent writes pod netns sysctls through it), installs weft-cni
//       into the node's CNI chain and keeps it there, then runs `weft agent` and watches over it:
//       - SIGTERM with no newer agent on the node: the agent stops (capture stays pinned, fail-closed);
//         if the DaemonSet itself is gone or being deleted, this is an uninstall: the CNI chain is
//         restored, weft-cni removed, the BPF pins and the agent's state removed;
//       - SIGTERM after a newer agent took over (a surge upgrade): the agent is draining; it is left
//         to finish (terminationGracePeriodSeconds bounds it);
//       - the agent exits by itself after handing over: this container idles until its pod is
//         deleted, so the kubelet does not restart it and take the node back.
//   weft-node ready [--port N]
//       the readiness probe: GET 127.0.0.1:N/healthz/ready answers 200, and the listening socket is
//       held by a process of this container (in a surge upgrade the old agent shares the node's port).
//   weft-node install-cni | uninstall [--cni-bin-dir DIR] [--cni-conf-dir DIR] [-- <weft agent flags>]
//       the install step alone; the whole uninstall (CNI chain, binary, pins, state), by hand.
//
// Why here and not in an init container: the chain must be kept while the agent runs (a primary CNI
// that rewrites its conflist drops weft's entry), and the uninstall must happen when the pod stops —
// both need a process for the pod's whole life, and this one already is; a sidecar would be a second
// container with the same host mounts and nothing else to do.
import { spawn, spawnSync } from 'node:child_process';
import { accessSync, constants, readdirSync, readFileSync, readlinkSync, realpathSync, rmSync, statSync, watch } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { CniDefaults, NodePaths, Ports } from '../../dist/agent/config.js';
import { ErrorCodes, WeftError, errorMessage } from '../../dist/agent/errors.js';
import { createLogger } from '../../dist/agent/log.js';
import { cliEntry } from '../../dist/agent/system/assets.js';
import { requireWeftCni, weftCniPluginConf } from '../../dist/agent/system/cni.js';
import { ensureEntry, installBinary, removeBinary, removeEntries } from './cni-conf.mjs';

/** Where the runtime keeps /proc/sys read-only in a container that is not privileged. */
const PROC_SYS = '/proc/sys';
/** A sysctl the agent writes in each pod's netns (native/src/route.cc). */
const PROC_SYS_PROBE = '/proc/sys/net/ipv4/tcp_fwmark_accept';
/** How often the CNI chain is checked besides the directory watch (a watch can miss a rename). */
const CNI_RECHECK_MS = 10_000;
const API_TIMEOUT_MS = 3_000;
const SERVICE_ACCOUNT = '/var/run/secrets/kubernetes.io/serviceaccount';

const log = createLogger('weft-node');

/** The value of `--name VALUE` or `--name=VALUE` in weft's own arguments. */
export function flagValue(args, name) {
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === `--${name}`) return args[i + 1];
    if (a.startsWith(`--${name}=`)) return a.slice(name.length + 3);
  }
  return undefined;
}

/** The mount that holds `path` (the longest mount point above it), from /proc/self/mountinfo. */
export function mountOf(path, mountinfo = readFileSync('/proc/self/mountinfo', 'utf8')) {
  let best;
  for (const line of mountinfo.split('\n')) {
    if (!line) continue;
    const [left, right = ''] = line.split(' - ');
    const target = (left.split(' ')[4] ?? '').replace(/\\([0-7]{3})/g, (_m, o) => String.fromCharCode(parseInt(o, 8)));
    const fstype = right.split(' ')[0] ?? '';
    const options = left.split(' ')[5] ?? '';
    const inside = path === target || path.startsWith(target.endsWith('/') ? target : `${target}/`);
    if (inside && (!best || target.length >= best.target.length)) best = { target, fstype, readOnly: options.split(',').includes('ro') };
  }
  return best;
}

function agentPaths(weftArgs) {
  return {
    bpffs: flagValue(weftArgs, 'bpffs') ?? NodePaths.bpffs,
    podSocket: flagValue(weftArgs, 'pod-socket') ?? NodePaths.podSocket,
    stateDir: flagValue(weftArgs, 'state-dir') ?? NodePaths.agentStateDir,
    cgroup: flagValue(weftArgs, 'cgroup'),
  };
}

/** What the node must have before an agent can run on it; each problem names its fix. */
export function checkNode(paths, mountinfo) {
  const problems = [];
  const bpf = mountOf(dirname(paths.bpffs), mountinfo);
  if (bpf?.fstype !== 'bpf') {
    problems.push(`${dirname(paths.bpffs)} is not on a BPF filesystem (found ${bpf?.fstype ?? 'nothing'}): mount one on the node (mount -t bpf bpf /sys/fs/bpf; systemd does it at boot)`);
  }
  if (paths.cgroup !== undefined) {
    const cg = mountOf(paths.cgroup, mountinfo);
    if (cg?.fstype !== 'cgroup2') problems.push(`--cgroup ${paths.cgroup} is not a cgroup v2 hierarchy (found ${cg?.fstype ?? 'nothing'}): weft needs a node with cgroup v2`);
  }
  return problems;
}

function procSysWritable() {
  try {
    accessSync(PROC_SYS_PROBE, constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/** The runtime mounts /proc/sys read-only in a container that is not privileged; the agent writes two
 * sysctls of each pod's netns through it. This container's own mount namespace gets it read-write
 * (CAP_SYS_ADMIN); the host's /proc/sys is not touched by this remount. */
export function ensureProcSysWritable() {
  if (procSysWritable()) return;
  const r = spawnSync('mount', ['-o', 'remount,bind,rw', PROC_SYS], { encoding: 'utf8' });
  if (r.status !== 0 || !procSysWritable()) {
    throw new WeftError(ErrorCodes.PRIVILEGE, `${PROC_SYS} is read-only and could not be remounted read-write (${(r.stderr || r.error?.message || '').trim()}): the agent needs CAP_SYS_ADMIN and an AppArmor profile that allows mount`);
  }
  log.info({ path: PROC_SYS }, 'remounted read-write in this container');
}

function cniEntry(podSocket) {
  // The agent's own namespace passes through too: the controller's pods must start while no agent
  // answers (the agent needs the controller to decide anything).
  const own = process.env.POD_NAMESPACE;
  const exclude = [...new Set([...CniDefaults.excludeNamespaces, ...(own ? [own] : [])])];
  return weftCniPluginConf({ podSocket, excludeNamespaces: exclude });
}

/** Installs weft-cni and keeps its entry in the chain until stopped. */
function keepCniInstalled(dirs, podSocket) {
  const binary = installBinary(requireWeftCni(), dirs.bin, CniDefaults.type);
  log.info({ binary }, 'weft-cni installed');
  const entry = cniEntry(podSocket);
  let waiting = false;
  const check = () => {
    try {
      const r = ensureEntry(dirs.conf, entry);
      if (r === undefined) {
        if (!waiting) log.warn({ confDir: dirs.conf }, 'no CNI network configuration yet; weft-cni joins the chain once the primary CNI writes one');
        waiting = true;
      } else {
        waiting = false;
        if (r.changed) log.info({ file: r.file, ...(r.convertedFrom ? { convertedFrom: r.convertedFrom } : {}) }, 'weft-cni added to the CNI chain');
      }
    } catch (err) {
      log.error({ confDir: dirs.conf, err: errorMessage(err) }, 'cannot add weft-cni to the CNI chain');
    }
  };
  check();
  let watcher;
  try {
    watcher = watch(dirs.conf, () => check());
  } catch (err) {
    log.warn({ confDir: dirs.conf, err: errorMessage(err) }, 'cannot watch the CNI conf dir; checking it periodically only');
  }
  const timer = setInterval(check, CNI_RECHECK_MS);
  return () => {
    clearInterval(timer);
    watcher?.close();
  };
}

function uninstallNode(dirs, paths) {
  const restored = removeEntries(dirs.conf, CniDefaults.type);
  removeBinary(dirs.bin, CniDefaults.type);
  log.info({ restored }, 'weft-cni removed from the CNI chain');
  const r = spawnSync(process.execPath, [cliEntry(), 'uninstall', `--bpffs=${paths.bpffs}`], { encoding: 'utf8' });
  if (r.status !== 0) log.error({ bpffs: paths.bpffs, err: (r.stderr || '').trim() }, 'cannot remove the BPF pins');
  else log.info({ bpffs: paths.bpffs }, 'BPF pins removed');
  rmSync(paths.stateDir, { recursive: true, force: true });
  rmSync(paths.podSocket, { force: true });
}

/** Whether this pod's DaemonSet is still installed: 'present', 'gone' (404 or being deleted) or 'unknown'. */
export function daemonSetState(env = process.env, saDir = SERVICE_ACCOUNT) {
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT ?? '443';
  const namespace = env.POD_NAMESPACE;
  const name = env.WEFT_DAEMONSET;
  if (!host || !namespace || !name) return Promise.resolve('unknown');
  let token, ca;
  try {
    token = readFileSync(join(saDir, 'token'), 'utf8').trim();
    ca = readFileSync(join(saDir, 'ca.crt'));
  } catch {
    return Promise.resolve('unknown');
  }
  return new Promise((resolve) => {
    const req = httpsRequest(
      { host, port, path: `/apis/apps/v1/namespaces/${encodeURIComponent(namespace)}/daemonsets/${encodeURIComponent(name)}`, ca, headers: { authorization: `Bearer ${token}`, accept: 'application/json' }, timeout: API_TIMEOUT_MS },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c) => (body += c));
        res.on('end', () => {
          if (res.statusCode === 404) return resolve('gone');
          if (res.statusCode !== 200) return resolve('unknown');
          try {
            resolve(JSON.parse(body)?.metadata?.deletionTimestamp ? 'gone' : 'present');
          } catch {
            resolve('unknown');
          }
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => resolve('unknown'));
    req.end();
  });
}

function inodeOf(path) {
  try {
    return statSync(path, { bigint: true }).ino;
  } catch {
    return undefined;
  }
}

async function run(argv) {
  const sep = argv.indexOf('--');
  const own = sep < 0 ? argv : argv.slice(0, sep);
  const weftArgs = sep < 0 ? [] : argv.slice(sep + 1);
  const { values } = parseArgs({
    args: own,
    options: {
      'cni-bin-dir': { type: 'string', default: CniDefaults.binDir },
      'cni-conf-dir': { type: 'string', default: CniDefaults.confDir },
      'no-cni': { type: 'boolean', default: false },
    },
  });
  if (weftArgs[0] !== 'agent') throw new WeftError(ErrorCodes.USAGE, 'usage: weft-node run [--cni-bin-dir DIR] [--cni-conf-dir DIR] [--no-cni] -- agent <flags>');
  const paths = agentPaths(weftArgs);
  const dirs = { bin: values['cni-bin-dir'], conf: values['cni-conf-dir'] };
  const problems = checkNode(paths);
  if (problems.length) throw new WeftError(ErrorCodes.PRIVILEGE, `this node cannot run weft's agent:\n  ${problems.join('\n  ')}`);
  ensureProcSysWritable();
  const stopCni = values['no-cni'] ? () => undefined : keepCniInstalled(dirs, paths.podSocket);

  const started = Date.now();
  const child = spawn(process.execPath, [cliEntry(), ...weftArgs], { stdio: 'inherit' });
  // The pod channel socket our agent made: a later one at the same path is a newer agent's.
  let ownSocket;
  const spot = setInterval(() => {
    try {
      const st = statSync(paths.podSocket, { bigint: true });
      if (Number(st.ctimeMs) >= started) {
        ownSocket = st.ino;
        clearInterval(spot);
        log.info({ podSocket: paths.podSocket }, 'our agent serves the pod channel');
      }
    } catch {
      /* not yet */
    }
  }, 500);
  // Replaced, not merely removed (an agent that stops may unlink its socket): a newer agent's.
  const handedOver = () => {
    const now = inodeOf(paths.podSocket);
    return ownSocket !== undefined && now !== undefined && now !== ownSocket;
  };

  let stopping;
  const stopped = new Promise((resolve) => {
    for (const sig of ['SIGTERM', 'SIGINT']) {
      process.on(sig, () => {
        if (stopping) return;
        stopping = sig;
        resolve(sig);
        if (child.exitCode === null && child.signalCode === null) {
          if (handedOver()) log.info('a newer agent serves this node; letting ours finish draining');
          else child.kill(sig);
        }
      });
    }
  });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const { code, signal } = await exited;
  clearInterval(spot);
  stopCni();
  log.info({ code, signal, stopping: stopping ?? null, handedOver: handedOver() }, 'agent exited');
  if (!stopping && code === 0 && handedOver()) {
    // Exiting now would make the kubelet start this container again, and it would take the node back.
    log.info('handed over to a newer agent; waiting for this pod to be deleted');
    const alive = setInterval(() => undefined, 1 << 30); // a pending promise alone keeps no process up
    await stopped;
    clearInterval(alive);
    return 0;
  }
  if (stopping && !handedOver()) {
    const state = await daemonSetState();
    log.info({ daemonSet: process.env.WEFT_DAEMONSET, state }, 'pod stopped');
    if (state === 'gone') uninstallNode(dirs, paths);
  }
  if (code !== null) return code;
  return stopping ? 0 : 1;
}

/** The inode of the socket listening on 127.0.0.1 or 0.0.0.0 `port` in a /proc/net/tcp table. */
export function listeningInode(table, port) {
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  for (const line of table.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10) continue;
    const [, localPort] = (f[1] ?? '').split(':');
    if (localPort === hexPort && f[3] === '0A') return f[9];
  }
  return undefined;
}

/** Whether a process visible here (this container's PID namespace) holds socket `inode`. */
function heldHere(inode) {
  const want = `socket:[${inode}]`;
  for (const pid of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    let fds;
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        if (readlinkSync(`/proc/${pid}/fd/${fd}`) === want) return true;
      } catch {
        /* closed meanwhile */
      }
    }
  }
  return false;
}

function get(port, path) {
  return new Promise((resolve) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, timeout: 3000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (err) => resolve({ status: 0, body: errorMessage(err) }));
    req.end();
  });
}

async function ready(argv) {
  const { values } = parseArgs({ args: argv, options: { port: { type: 'string', default: String(Ports.readiness) } } });
  const port = Number(values.port);
  const table = (name) => {
    try {
      return readFileSync(`/proc/net/${name}`, 'utf8');
    } catch {
      return ''; // no IPv6 on this node
    }
  };
  const inode = listeningInode(table('tcp'), port) ?? listeningInode(table('tcp6'), port);
  if (inode === undefined) {
    process.stdout.write(`nothing listens on ${port}\n`);
    return 1;
  }
  if (!heldHere(inode)) {
    process.stdout.write(`port ${port} is held by another agent on this node (an upgrade under way)\n`);
    return 1;
  }
  const r = await get(port, '/healthz/ready');
  process.stdout.write(`${r.status} ${r.body.trim()}\n`);
  return r.status === 200 ? 0 : 1;
}

function dirsFrom(argv) {
  const sep = argv.indexOf('--');
  const { values } = parseArgs({
    args: sep < 0 ? argv : argv.slice(0, sep),
    options: { 'cni-bin-dir': { type: 'string', default: CniDefaults.binDir }, 'cni-conf-dir': { type: 'string', default: CniDefaults.confDir } },
  });
  return { dirs: { bin: values['cni-bin-dir'], conf: values['cni-conf-dir'] }, paths: agentPaths(sep < 0 ? [] : argv.slice(sep + 1)) };
}

async function main(argv) {
  const [command, ...rest] = argv;
  switch (command) {
    case 'run':
      return run(rest);
    case 'ready':
      return ready(rest);
    case 'install-cni': {
      const { dirs, paths } = dirsFrom(rest);
      installBinary(requireWeftCni(), dirs.bin, CniDefaults.type);
      const r = ensureEntry(dirs.conf, cniEntry(paths.podSocket));
      process.stdout.write(r ? `${r.file}${r.changed ? '' : ' (already there)'}\n` : `no network configuration in ${dirs.conf} yet\n`);
      return r ? 0 : 1;
    }
    case 'uninstall': {
      const { dirs, paths } = dirsFrom(rest);
      uninstallNode(dirs, paths);
      return 0;
    }
    default:
      throw new WeftError(ErrorCodes.USAGE, 'usage: weft-node run|ready|install-cni|uninstall (see the top of daemonset/image/weft-node.mjs)');
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === realpathSync(process.argv[1])) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err) => {
      log.error({ code: err instanceof WeftError ? err.code : undefined, err: errorMessage(err) }, 'weft-node failed');
      process.exit(1);
    },
  );
}
