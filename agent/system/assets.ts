// Where weft's own files are: the repository, the compiled BPF objects, the proto files and the CLI
// entry. The one place that knows the tree's layout, so every program finds them the same way whether
// it runs from the source tree (agent/system/assets.ts, under a TypeScript loader) or from the build
// (dist/agent/system/assets.js). native/index.ts finds its addon itself: native/ imports nothing from
// the agent.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ErrorCodes, WeftError } from '../errors.js';

const HERE = dirname(fileURLToPath(import.meta.url));
/** The repository is at most this many levels above this module (agent/system: 2, dist/agent/system: 3). */
const MAX_LEVELS = 5;

let root: string | undefined;

/** Whether `dir` holds weft's package.json (dist/ has none; another project's does not count). */
function isWeftRoot(dir: string): boolean {
  const file = join(dir, 'package.json');
  if (!existsSync(file)) return false;
  try {
    return (JSON.parse(readFileSync(file, 'utf8')) as { name?: unknown }).name === 'weft';
  } catch {
    return false;
  }
}

/** The repository's root: the nearest directory above this module holding weft's package.json. */
export function repoRoot(): string {
  if (root !== undefined) return root;
  const tried: string[] = [];
  let dir = HERE;
  for (let i = 0; i <= MAX_LEVELS; i++) {
    dir = dirname(dir);
    tried.push(dir);
    if (isWeftRoot(dir)) return (root = dir);
  }
  throw new WeftError(ErrorCodes.SETUP, `cannot find weft's repository (a package.json named "weft") above ${HERE}; looked in ${tried.join(', ')}`);
}

/** A path inside the repository: repoPath('examples', 'lab.yaml'). */
export function repoPath(...parts: string[]): string {
  return join(repoRoot(), ...parts);
}

/** weft's package.json. */
export function packageJsonPath(): string {
  return repoPath('package.json');
}

/** Where `make -C bpf` writes the compiled programs, whether or not it has run. */
export function bpfBuildPath(): string {
  return repoPath('bpf', 'build');
}

/** The object `make -C bpf` always writes: its presence says the programs are built. */
const BPF_BUILT_MARKER = 'cgroup_connect.bpf.o';

/** bpf/build, checked: throws WEFT_ERR_BPF (with how to build) when the programs are not built. */
export function bpfBuildDir(): string {
  const dir = bpfBuildPath();
  if (!existsSync(join(dir, BPF_BUILT_MARKER))) throw new WeftError(ErrorCodes.BPF, `BPF objects not built (run \`make -C bpf\`); looked in ${dir}`);
  return dir;
}

/** One compiled program, bpf/build/<file>; throws WEFT_ERR_BPF (with how to build) when it is missing. */
export function bpfObjectPath(file: string): string {
  const path = join(bpfBuildPath(), file);
  if (!existsSync(path)) throw new WeftError(ErrorCodes.BPF, `${path} is missing: build the BPF programs with "make -C bpf"`);
  return path;
}

/** The .proto files (controller discovery and CA, Hubble's flow/observer/relay). */
export function protoDir(): string {
  return repoPath('proto');
}

/**
 * The `weft` CLI's entry, `<repo>/dist/agent/cli/main.js`, which other processes are started from (the
 * lab's controller, agents and relay). $WEFT_AGENT_ENTRY overrides it (an installed or patched build).
 */
export function cliEntry(): string {
  return process.env.WEFT_AGENT_ENTRY ?? repoPath('dist', 'agent', 'cli', 'main.js');
}
