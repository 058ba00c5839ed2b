// `weft apply -f FILE...` / `weft delete -f FILE...`: policies into (or out of) a lab's watched
// resources directory, which the controller reads. Every file is validated first; on any problem
// nothing is written.
import { parseArgs } from 'node:util';
import { ConfigError, ErrorCodes, WeftError, errorMessage, type ConfigProblem } from '../errors.js';
import { APPLIABLE_KINDS, openLab, removeApplied, writeApplied } from '../lab/index.js';
import { loadFiles } from '../registry/load.js';
import { problemAt, resourceKey } from '../registry/parse.js';
import type { Resource, WithSource } from '../registry/types.js';

const USAGE = `usage: weft apply -f FILE... [--name LAB]     write AuthorizationPolicy, PeerAuthentication, RequestAuthentication,
                                       Gateway, HTTPRoute, DestinationRule, VirtualService documents
       weft delete -f FILE... [--name LAB]    remove the objects named in FILE
The lab name defaults to $WEFT_LAB or "weft". Pods, services, namespaces and nodes go through "weft lab apply".`;

function parse(argv: string[]): { files: string[]; name?: string } {
  let values;
  try {
    ({ values } = parseArgs({ args: argv, options: { filename: { type: 'string', short: 'f', multiple: true }, name: { type: 'string' } } }));
  } catch (err) {
    throw new WeftError(ErrorCodes.USAGE, `${errorMessage(err)}\n${USAGE}`);
  }
  const files = values.filename ?? [];
  if (files.length === 0) throw new WeftError(ErrorCodes.USAGE, `-f FILE is required\n${USAGE}`);
  return { files, ...(values.name ? { name: values.name } : {}) };
}

/** Validates the files (throws ConfigError, nothing written) and keeps to the kinds weft apply handles. */
function validated(files: readonly string[]): Array<WithSource<Resource>> {
  const resources = loadFiles(files);
  const problems: ConfigProblem[] = [];
  for (const r of resources) {
    if (!APPLIABLE_KINDS.has(r.kind)) {
      problems.push(problemAt(r, ['kind'], `weft apply takes ${[...APPLIABLE_KINDS].join(', ')}; a ${r.kind} needs "weft lab apply"`));
    }
  }
  if (problems.length) throw new ConfigError(problems);
  if (resources.length === 0) throw new WeftError(ErrorCodes.USAGE, `no objects in ${files.join(', ')}`);
  return resources;
}

/** Validate FILEs and write their policies into a lab's watched directory; returns their keys. */
export function applyPolicies(files: readonly string[], labName?: string): string[] {
  const resources = validated(files);
  writeApplied(openLab(labName).resourcesDir, resources);
  return resources.map((r) => resourceKey(r));
}

export async function applyCommand(argv: string[]): Promise<number> {
  if (argv.includes('-h') || argv.includes('--help')) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  const { files, name } = parse(argv);
  for (const key of applyPolicies(files, name)) process.stdout.write(`${key} applied\n`);
  return 0;
}

export async function deleteCommand(argv: string[]): Promise<number> {
  if (argv.includes('-h') || argv.includes('--help')) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  const { files, name } = parse(argv);
  const resources = validated(files);
  const lab = openLab(name);
  const existed = removeApplied(lab.resourcesDir, resources);
  let missing = 0;
  resources.forEach((r, i) => {
    if (existed[i]) process.stdout.write(`${resourceKey(r)} deleted\n`);
    else {
      missing++;
      process.stderr.write(`weft: ${resourceKey(r)} not found in lab "${lab.name}"\n`);
    }
  });
  return missing ? 1 : 0;
}
