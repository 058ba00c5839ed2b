#!/usr/bin/env node
// Installs whatever this checkout still needs, then builds it: Debian packages (when root), npm
// dependencies, the BPF objects, the native addon and the TypeScript. Every step is skipped when its
// output is already up to date, so `npm test` and `npm run demo` can both start with it.
//
//   node scripts/setup.mjs                 set up; without root, say what the privileged parts need
//   node scripts/setup.mjs --privileged    the caller needs root (the demo): fail clearly without it
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const privileged = process.argv.includes('--privileged');
const isRoot = process.getuid?.() === 0;

/** Debian packages: the BPF toolchain, the addon's libraries, the lab's tools, and the mesh bench's baselines;
 * vagrant and shellcheck check vagrant/ (test/vagrant-files); the reference CNI plugins (bridge,
 * host-local) weft-cni is tested behind (test/cni-plugin). */
const PACKAGES = ['clang', 'llvm', 'libbpf-dev', 'libelf-dev', 'zlib1g-dev', 'pkg-config', 'bpftool', 'iproute2', 'util-linux', 'procps', 'tcpdump', 'make', 'g++', 'python3', 'stunnel4', 'iptables', 'kubernetes-client', 'vagrant', 'shellcheck', 'containernetworking-plugins'];

function say(msg) {
  process.stderr.write(`[setup] ${msg}\n`);
}

function fail(msg) {
  process.stderr.write(`[setup] ERROR: ${msg}\n`);
  process.exit(1);
}

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { cwd: root, stdio: ['ignore', 'inherit', 'inherit'], ...opts });
  if (r.error) fail(`${cmd} ${args.join(' ')}: ${r.error.message}`);
  if (r.status !== 0) fail(`${cmd} ${args.join(' ')} exited with ${r.status}`);
}

function newestMtime(paths) {
  let newest = 0;
  for (const p of paths) {
    if (!existsSync(p)) continue;
    const st = statSync(p);
    if (st.isDirectory()) newest = Math.max(newest, newestMtime(readdirSync(p).map((n) => join(p, n))));
    else newest = Math.max(newest, st.mtimeMs);
  }
  return newest;
}

function mtime(p) {
  return existsSync(p) ? statSync(p).mtimeMs : 0;
}

// 1. Node itself.
const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 20 || (major === 20 && minor < 19)) fail(`Node.js >= 20.19 is required (this is ${process.version})`);

if (privileged && !isRoot) {
  fail('this needs root: eBPF programs, network namespaces and cgroups are privileged.\n' +
    '        run it as root, e.g. `sudo npm run demo`.');
}

// 2. Debian packages.
// kubectl from Kubernetes' own repository (package `kubectl`) owns /usr/bin/kubectl, so Debian's
// kubernetes-client cannot be installed beside it (dpkg: "trying to overwrite"): either one will do.
const COMMAND_OF = { 'kubernetes-client': 'kubectl' };
const missing = PACKAGES.filter((p) => {
  if (COMMAND_OF[p] && spawnSync('sh', ['-c', `command -v ${COMMAND_OF[p]}`]).status === 0) return false;
  const r = spawnSync('dpkg-query', ['-W', '-f=${Status}', p], { encoding: 'utf8' });
  return r.status !== 0 || !r.stdout.includes('install ok installed');
});
if (missing.length) {
  if (!existsSync('/usr/bin/apt-get')) {
    fail(`missing system packages (${missing.join(', ')}) and no apt-get here: install their equivalents by hand`);
  }
  if (!isRoot) {
    fail(`missing system packages: ${missing.join(' ')}\n        as root: apt-get update && apt-get install -y ${missing.join(' ')}`);
  }
  say(`installing ${missing.join(' ')}`);
  run('apt-get', ['update', '-qq']);
  run('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...missing], {
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
  });
}

// 3. npm dependencies (again whenever package-lock.json changed).
const lock = join(root, 'package-lock.json');
const installedLock = join(root, 'node_modules', '.package-lock.json');
if (!existsSync(installedLock) || mtime(lock) > mtime(installedLock)) {
  say('installing npm dependencies');
  run('npm', existsSync(lock) ? ['ci', '--no-audit', '--no-fund'] : ['install', '--no-audit', '--no-fund']);
}

// 4. bpffs, where the agent pins its programs (root only; the agent mounts it too).
if (isRoot) {
  const mounted = readFileSync('/proc/mounts', 'utf8').split('\n').some((l) => l.split(' ')[1] === '/sys/fs/bpf' && l.split(' ')[2] === 'bpf');
  if (!mounted) {
    say('mounting bpffs at /sys/fs/bpf');
    execFileSync('mount', ['-t', 'bpf', 'bpf', '/sys/fs/bpf']);
  }
}

// 5. BPF objects (make knows what is stale).
run('make', ['-s', '-C', 'bpf']);

// 5b. weft-cni, the chained CNI plugin (static C; the sanitized build is for its tests).
run('make', ['-s', '-C', 'cni', 'check-build']);

// 6. The native addon.
const addon = join(root, 'native', 'build', 'Release', 'weft_native.node');
if (mtime(addon) < newestMtime([join(root, 'native', 'src'), join(root, 'native', 'binding.gyp')])) {
  say('building the native addon');
  // Headers of the running node, when its installation has them (distribution packages do):
  // nothing to download then.
  const prefix = dirname(dirname(process.execPath));
  const nodedir = !process.env.npm_config_nodedir && existsSync(join(prefix, 'include', 'node', 'node.h')) ? [`--nodedir=${prefix}`] : [];
  run(join(root, 'node_modules', '.bin', 'node-gyp'), ['rebuild', '--directory', 'native', ...nodedir]);
}

// 7. TypeScript (incremental).
run(join(root, 'node_modules', '.bin', 'tsc'), ['-p', 'tsconfig.json']);
say('ready');
