#!/usr/bin/env node
// `npm run image`: builds weft's container image from the Dockerfile on this machine, without a Docker
// engine: buildah (Debian's package) runs the Dockerfile with chroot isolation. The base is Debian 13
// slim from a registry when one answers; otherwise it is made here with debootstrap from Debian's
// package mirror (minbase, without docs, man pages, locales or apt lists) and kept as
// localhost/weft-base:trixie for the next build. Then the image is started once to check that the
// programs, the native addon (libbpf) and weft-cni are all there and that its capture datapath loads
// into this kernel under the DaemonSet's capabilities, and saved as a docker-archive that `docker load`
// or `kind load image-archive` takes. The build stages' layers are removed afterwards (--keep-cache
// keeps them for a quick rebuild).
//
//   node scripts/image.mjs [--tag weft:VERSION] [--base IMAGE] [--bpf-base IMAGE] [--archive FILE | --no-archive] [--no-check] [--keep-cache]
//
// Needs root (buildah's storage, debootstrap's chroot); installs buildah and debootstrap with apt-get
// when they are missing.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { parseAllDocuments } from 'yaml';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const version = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).version;
const REGISTRY_BASE = 'docker.io/library/debian:trixie-slim';
const SUITE = 'trixie';
/** The BPF objects are built on Debian 12 (clang 14): see the Dockerfile's bpf stage. */
const REGISTRY_BPF_BASE = 'docker.io/library/debian:bookworm-slim';
const BPF_SUITE = 'bookworm';
const MIRROR = 'http://deb.debian.org/debian';

const { values } = parseArgs({
  options: {
    tag: { type: 'string', default: `weft:${version}` },
    base: { type: 'string' },
    'bpf-base': { type: 'string' },
    archive: { type: 'string', default: join(root, 'dist', 'image', `weft-${version}.tar`) },
    'no-archive': { type: 'boolean', default: false },
    'no-check': { type: 'boolean', default: false },
    'keep-cache': { type: 'boolean', default: false },
  },
});

function say(msg) {
  process.stderr.write(`[image] ${msg}\n`);
}
function fail(msg) {
  process.stderr.write(`[image] ERROR: ${msg}\n`);
  process.exit(1);
}
function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { cwd: root, stdio: ['ignore', 'inherit', 'inherit'], ...opts });
  if (r.error) fail(`${cmd}: ${r.error.message}`);
  if (r.status !== 0) fail(`${cmd} ${args.join(' ')} exited with ${r.status}`);
}
function quiet(cmd, args, opts = {}) {
  return spawnSync(cmd, args, { cwd: root, encoding: 'utf8', ...opts });
}
const elapsed = (t0) => `${((Date.now() - t0) / 1000).toFixed(0)} s`;

if (process.getuid?.() !== 0) fail('building an image with buildah and debootstrap needs root here (sudo npm run image)');
const missing = ['buildah', 'debootstrap'].filter((p) => quiet('sh', ['-c', `command -v ${p}`]).status !== 0);
if (missing.length) {
  say(`installing ${missing.join(' ')}`);
  run('apt-get', ['update', '-qq']);
  run('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...missing], { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
}

const t0 = Date.now();

/** A Debian base: `ref` from its registry when one answers, else made here with debootstrap and kept. */
function debianBase(ref, suite) {
  const local = `localhost/weft-base:${suite}`;
  if (quiet('buildah', ['pull', '--quiet', ref], { timeout: 60_000 }).status === 0) {
    say(`base: ${ref} from its registry`);
    return ref;
  }
  if (quiet('buildah', ['inspect', '--type', 'image', local]).status === 0) {
    say(`base: ${local} (made earlier with debootstrap)`);
    return local;
  }
  say(`no registry answers for ${ref}: making ${local} with debootstrap (${suite}, minbase) from ${MIRROR}`);
  const work = mkdtempSync('/var/tmp/weft-base-');
  const rootfs = join(work, 'rootfs');
  try {
    run('debootstrap', ['--variant=minbase', suite, rootfs, MIRROR]);
    const ctr = quiet('buildah', ['from', 'scratch']).stdout.trim();
    const mnt = quiet('buildah', ['mount', ctr]).stdout.trim();
    if (!ctr || !mnt) fail('buildah from scratch / mount failed');
    // What a slim image leaves out: documentation, man pages, translations, package lists, the
    // downloaded .debs (apt-get update fetches the lists again in the Dockerfile).
    run('sh', ['-c', 'tar -C "$1" --exclude=./usr/share/doc --exclude=./usr/share/man --exclude=./usr/share/locale --exclude=./usr/share/info --exclude=./var/lib/apt/lists --exclude=./var/cache/apt -cf - . | tar -C "$2" -xf -', 'copy', rootfs, mnt]);
    run('sh', ['-c', 'mkdir -p "$1/var/lib/apt/lists/partial" "$1/var/cache/apt/archives/partial"', 'dirs', mnt]);
    run('buildah', ['umount', ctr]);
    run('buildah', ['config', '--env', 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', '--cmd', '/bin/bash', ctr]);
    run('buildah', ['commit', '--quiet', '--rm', ctr, local]);
    return local;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

const base = values.base ?? debianBase(REGISTRY_BASE, SUITE);
const bpfBase = values['bpf-base'] ?? debianBase(REGISTRY_BPF_BASE, BPF_SUITE);

// A registry reached through a TLS-inspecting proxy needs the host's CA bundle for npm: mounted for
// the build only (the Dockerfile's NPM_CAFILE), never part of a layer.
const buildArgs = ['--build-arg', `BASE=${base}`, '--build-arg', `BPF_BASE=${bpfBase}`];
const caBundle = [process.env.npm_config_cafile, process.env.NODE_EXTRA_CA_CERTS, '/etc/ssl/certs/ca-certificates.crt'].find((f) => f && existsSync(f));
if (caBundle) buildArgs.push('--build-arg', 'NPM_CAFILE=/run/weft-build/ca.crt', '--volume', `${caBundle}:/run/weft-build/ca.crt:ro`);

say(`building ${values.tag} from the Dockerfile (buildah, chroot isolation)`);
const t1 = Date.now();
run('buildah', ['bud', '--isolation', 'chroot', '--layers', ...buildArgs, '--tag', values.tag, '--file', 'Dockerfile', '.']);
say(`built ${values.tag} in ${elapsed(t1)}`);

/**
 * The image's capture datapath loads into this kernel: its BPF objects, libbpf and the addon together,
 * under the DaemonSet's capabilities (those this machine can grant), against a scratch pin directory,
 * cgroup and netns that are removed afterwards.
 */
function captureCheck(ctr) {
  const agent = parseAllDocuments(readFileSync(join(root, 'daemonset', 'core', 'agent.yaml'), 'utf8')).map((d) => d.toJS()).find((d) => d?.kind === 'DaemonSet');
  const bounding = BigInt(`0x${/CapBnd:\s*([0-9a-f]+)/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? '0'}`);
  const numbers = { NET_ADMIN: 12, SYS_PTRACE: 19, SYS_ADMIN: 21, SYS_RESOURCE: 24, BPF: 39 };
  const caps = agent.spec.template.spec.containers[0].securityContext.capabilities.add.filter((c) => numbers[c] !== undefined && ((bounding >> BigInt(numbers[c])) & 1n) === 1n);
  const cgroupRoot = readFileSync('/proc/mounts', 'utf8').split('\n').map((l) => l.split(' ')).filter((f) => f[2] === 'cgroup2').map((f) => f[1]).sort((a, b) => (a === '/sys/fs/cgroup' ? -1 : b === '/sys/fs/cgroup' ? 1 : 0))[0];
  if (!cgroupRoot || !existsSync('/sys/kernel/btf/vmlinux')) {
    say('check: capture datapath skipped (no cgroup v2 or no BTF here)');
    return undefined;
  }
  const name = `weft-image-check-${process.pid}`;
  const script = join(mkdtempSync('/var/tmp/weft-image-check-'), 'check.mjs');
  writeFileSync(script, [
    "import { CaptureDatapath, uninstallCapture } from '/opt/weft/dist/agent/datapath/capture.js';",
    "import { createLogger } from '/opt/weft/dist/agent/log.js';",
    "import { netnsCookie } from '/opt/weft/dist/native/index.js';",
    `const dp = CaptureDatapath.open({ bpffs: '/hostbpf/${name}', cgroup: '/hostcg/${name}', log: createLogger('image-check', { level: 'warn' }) });`,
    `try { dp.attachNetns(netnsCookie('/hostnetns/${name}'), '/hostnetns/${name}'); } finally { dp.close(); uninstallCapture('/hostbpf/${name}'); }`,
    "console.log('capture datapath loaded, attached and removed');",
  ].join('\n'));
  run('ip', ['netns', 'add', name]);
  mkdirSync(join(cgroupRoot, name));
  let r;
  try {
    r = quiet('buildah', ['run', '--isolation', 'chroot', ...caps.flatMap((c) => ['--cap-add', `CAP_${c}`]), '-v', `${script}:/check.mjs:ro`, '-v', '/sys/fs/bpf:/hostbpf', '-v', `${cgroupRoot}:/hostcg`, '-v', '/var/run/netns:/hostnetns:rbind', ctr, '--', 'node', '/check.mjs']);
  } finally {
    quiet('ip', ['netns', 'del', name]);
    quiet('rmdir', [join(cgroupRoot, name)]);
    rmSync(join('/sys/fs/bpf', name), { recursive: true, force: true });
    rmSync(dirname(script), { recursive: true, force: true });
  }
  if (r.status !== 0) return `in the image, the capture datapath does not load (capabilities ${caps.join(', ')}):\n${(r.stdout + r.stderr).split('\n').filter((l) => !l.startsWith(';')).slice(-25).join('\n')}`;
  say(`check: capture datapath loads in the image with ${caps.join(', ')} … ok`);
  return undefined;
}

if (!values['no-check']) {
  // The image's programs start, the addon loads against the image's libbpf, weft-cni is there.
  const ctr = quiet('buildah', ['from', '--quiet', values.tag]).stdout.trim();
  if (!ctr) fail(`cannot start ${values.tag}`);
  let problem;
  try {
    const checks = [
      ['weft', '--help'],
      ['node', '-e', "import('/opt/weft/dist/native/index.js').then(() => console.log('native addon loaded'))"],
      ['weft-node', 'ready', '--port=1'],
      ['test', '-x', '/opt/weft/cni/build/weft-cni'],
    ];
    for (const [cmd, ...args] of checks) {
      const r = quiet('buildah', ['run', '--isolation', 'chroot', ctr, '--', cmd, ...args]);
      // `weft-node ready` on a port nothing listens on must answer "not ready", not crash.
      const ok = cmd === 'weft-node' ? r.status === 1 && /nothing listens/.test(r.stdout) : r.status === 0;
      if (!ok) {
        problem = `in the image, ${cmd} ${args.join(' ')}: exit ${r.status}\n${r.stdout}${r.stderr}`;
        break;
      }
      say(`check: ${cmd} ${args.join(' ').slice(0, 60)} … ok`);
    }
    if (!problem) problem = captureCheck(ctr);
  } finally {
    quiet('buildah', ['rm', ctr]);
  }
  if (problem) fail(problem);
}

const size = quiet('buildah', ['images', '--format', '{{.Size}}', values.tag]).stdout.trim();
if (!values['no-archive']) {
  mkdirSync(dirname(values.archive), { recursive: true });
  rmSync(values.archive, { force: true });
  run('buildah', ['push', '--quiet', values.tag, `docker-archive:${values.archive}:${values.tag}`]);
  say(`saved ${values.archive} (${(statSync(values.archive).size / 1e6).toFixed(0)} MB): docker load -i it, or kind load image-archive it`);
}
if (!values['keep-cache']) {
  // The build stages' layers (over a GB with the compilers): kept only when asked, for a quick rebuild.
  quiet('buildah', ['rmi', '--prune']);
}
say(`${values.tag}: ${size}, ${elapsed(t0)} in all`);
