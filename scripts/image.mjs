#!/usr/bin/env node
// `npm run image`: builds weft's container image from the Dockerfile on this machine, without a Docker
// engine: buildah (Debian's package) runs the Dockerfile with chroot isolation. The base is Debian 13
// slim from a registry when one answers; otherwise it is made here with debootstrap from Debian's
// package mirror (minbase, without docs, man pages, locales or apt lists) and kept as
// localhost/weft-base:trixie for the next build. Then the image is started once to check that the
// programs, the native addon (libbpf) and weft-cni are all there, and saved as a docker-archive that
// `docker load` or `kind load image-archive` takes.
//
//   node scripts/image.mjs [--tag weft:VERSION] [--base IMAGE] [--archive FILE | --no-archive] [--no-check]
//
// Needs root (buildah's storage, debootstrap's chroot); installs buildah and debootstrap with apt-get
// when they are missing.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const version = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).version;
const REGISTRY_BASE = 'docker.io/library/debian:trixie-slim';
const LOCAL_BASE = 'localhost/weft-base:trixie';
const SUITE = 'trixie';
const MIRROR = 'http://deb.debian.org/debian';

const { values } = parseArgs({
  options: {
    tag: { type: 'string', default: `weft:${version}` },
    base: { type: 'string' },
    archive: { type: 'string', default: join(root, 'dist', 'image', `weft-${version}.tar`) },
    'no-archive': { type: 'boolean', default: false },
    'no-check': { type: 'boolean', default: false },
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
let base = values.base;
if (!base) {
  if (quiet('buildah', ['pull', '--quiet', REGISTRY_BASE], { timeout: 60_000 }).status === 0) {
    base = REGISTRY_BASE;
    say(`base: ${REGISTRY_BASE} from its registry`);
  } else if (quiet('buildah', ['inspect', '--type', 'image', LOCAL_BASE]).status === 0) {
    base = LOCAL_BASE;
    say(`base: ${LOCAL_BASE} (made earlier with debootstrap)`);
  } else {
    say(`no registry answers for ${REGISTRY_BASE}: making the base with debootstrap (${SUITE}, minbase) from ${MIRROR}`);
    const work = mkdtempSync('/var/tmp/weft-base-');
    const rootfs = join(work, 'rootfs');
    try {
      run('debootstrap', ['--variant=minbase', SUITE, rootfs, MIRROR]);
      const ctr = quiet('buildah', ['from', 'scratch']).stdout.trim();
      const mnt = quiet('buildah', ['mount', ctr]).stdout.trim();
      if (!ctr || !mnt) fail('buildah from scratch / mount failed');
      // What a slim image leaves out: documentation, man pages, translations, package lists, the
      // downloaded .debs (apt-get update fetches the lists again in the Dockerfile).
      run('sh', ['-c', `tar -C "$1" --exclude=./usr/share/doc --exclude=./usr/share/man --exclude=./usr/share/locale --exclude=./usr/share/info --exclude=./var/lib/apt/lists --exclude=./var/cache/apt -cf - . | tar -C "$2" -xf -`, 'copy', rootfs, mnt]);
      run('sh', ['-c', `mkdir -p "$1/var/lib/apt/lists/partial" "$1/var/cache/apt/archives/partial"`, 'dirs', mnt]);
      run('buildah', ['umount', ctr]);
      run('buildah', ['config', '--env', 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', '--cmd', '/bin/bash', ctr]);
      run('buildah', ['commit', '--quiet', '--rm', ctr, LOCAL_BASE]);
      base = LOCAL_BASE;
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  }
}

// A registry reached through a TLS-inspecting proxy needs the host's CA bundle for npm: mounted for
// the build only (the Dockerfile's NPM_CAFILE), never part of a layer.
const buildArgs = ['--build-arg', `BASE=${base}`];
const caBundle = [process.env.npm_config_cafile, process.env.NODE_EXTRA_CA_CERTS, '/etc/ssl/certs/ca-certificates.crt'].find((f) => f && existsSync(f));
if (caBundle) buildArgs.push('--build-arg', 'NPM_CAFILE=/run/weft-build/ca.crt', '--volume', `${caBundle}:/run/weft-build/ca.crt:ro`);

say(`building ${values.tag} from the Dockerfile (buildah, chroot isolation)`);
const t1 = Date.now();
run('buildah', ['bud', '--isolation', 'chroot', '--layers', ...buildArgs, '--tag', values.tag, '--file', 'Dockerfile', '.']);
say(`built ${values.tag} in ${elapsed(t1)}`);

if (!values['no-check']) {
  // The image's programs start, the addon loads against the image's libbpf, weft-cni is there.
  const ctr = quiet('buildah', ['from', '--quiet', values.tag]).stdout.trim();
  if (!ctr) fail(`cannot start ${values.tag}`);
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
      if (!ok) fail(`in the image, ${cmd} ${args.join(' ')}: exit ${r.status}\n${r.stdout}${r.stderr}`);
      say(`check: ${cmd} ${args.join(' ').slice(0, 60)} … ok`);
    }
  } finally {
    quiet('buildah', ['rm', ctr]);
  }
}

const size = quiet('buildah', ['images', '--format', '{{.Size}}', values.tag]).stdout.trim();
if (!values['no-archive']) {
  mkdirSync(dirname(values.archive), { recursive: true });
  rmSync(values.archive, { force: true });
  run('buildah', ['push', '--quiet', values.tag, `docker-archive:${values.archive}:${values.tag}`]);
  say(`saved ${values.archive} (${(statSync(values.archive).size / 1e6).toFixed(0)} MB): docker load -i it, or kind load image-archive it`);
}
say(`${values.tag}: ${size}, ${elapsed(t0)} in all`);
