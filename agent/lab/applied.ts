// Objects applied into a watched resources directory (by `weft apply` and by the lab for the policies
// of its files): one file per object, `applied-<kind>-<namespace>-<name>.yaml`, written atomically
// (a hidden temp file, then rename) so a watcher never reads half a document.
import { existsSync, mkdirSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { stripSource } from '../registry/parse.js';
import type { Resource, WithSource } from '../registry/types.js';

/** Kinds `weft apply` writes; the others need the lab to create something (`weft lab apply`). */
export const APPLIABLE_KINDS: ReadonlySet<string> = new Set([
  'AuthorizationPolicy',
  'PeerAuthentication',
  'RequestAuthentication',
  'Gateway',
  'HTTPRoute',
  'DestinationRule',
  'VirtualService',
]);

export function appliedFileName(r: Resource): string {
  const parts = ['applied', r.kind.toLowerCase(), ...(r.metadata.namespace !== undefined ? [r.metadata.namespace] : []), r.metadata.name];
  return `${parts.join('-')}.yaml`;
}

/** Writes each object into its own file of `dir`; returns the paths. */
export function writeApplied(dir: string, resources: ReadonlyArray<Resource | WithSource<Resource>>): string[] {
  mkdirSync(dir, { recursive: true });
  return resources.map((r) => {
    const path = join(dir, appliedFileName(r));
    const tmp = join(dir, `.${appliedFileName(r)}.tmp-${process.pid}`);
    writeFileSync(tmp, `# Applied by weft.\n${stringify(stripSource(r), { lineWidth: 0 })}`);
    renameSync(tmp, path);
    return path;
  });
}

/** Removes each object's file from `dir`; returns whether each one existed. */
export function removeApplied(dir: string, resources: readonly Resource[]): boolean[] {
  return resources.map((r) => {
    const path = join(dir, appliedFileName(r));
    if (!existsSync(path)) return false;
    unlinkSync(path);
    return true;
  });
}
