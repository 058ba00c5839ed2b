// The controller's registry: every object of a directory of Kubernetes-style YAML (`--source dir:PATH`),
// kept by key `Kind/namespace/name`, watched for changes. A document that fails validation is rejected
// (logged with file:line: field: reason, counted, listed by problems()) and the last good version of
// what its file contributed stays in force: a typo never removes a pod, a service or a policy.
// Another source (the Kubernetes API, kube-source.ts) validates with the same parser and hands its
// whole good state and its problems to replace(); from there the path is the same: diff, version,
// problems logged and counted once, listeners.
import { watch, type FSWatcher } from 'node:fs';
import { resolve } from 'node:path';
import { formatProblem, errorMessage, type ConfigProblem } from '../errors.js';
import type { Logger } from '../log.js';
import { readConfigText, yamlFilesOf } from '../registry/load.js';
import { parseDocuments, problemAt, problemKind, resourceKey, stripSource } from '../registry/parse.js';
import type { Resource, WithSource } from '../registry/types.js';
import type { ControllerMetrics } from './metrics.js';

export interface RegistryChange {
  version: number;
  upserts: Resource[];
  /** Keys of objects that are gone. */
  removals: string[];
  /** Every current problem (not only new ones). */
  problems: ConfigProblem[];
}

export interface RegistrySnapshot {
  version: number;
  resources: Resource[];
  problems: ConfigProblem[];
}

export interface RegistryOptions {
  /** The directory source; without one the registry holds what its source hands to replace(). */
  dir?: string;
  log: Logger;
  metrics?: ControllerMetrics;
  /** Quiet time after the last file event before re-reading (default 100 ms). */
  debounceMs?: number;
}

type Listener = (change: RegistryChange) => void;

export class ConfigRegistry {
  readonly dir: string | undefined;
  private readonly log: Logger;
  private readonly metrics: ControllerMetrics | undefined;
  private readonly debounceMs: number;
  /** Per file: the objects it last contributed (its last good documents). */
  private contributions = new Map<string, Map<string, WithSource<Resource>>>();
  private objects = new Map<string, WithSource<Resource>>();
  private currentProblems: ConfigProblem[] = [];
  private versionNumber = 0;
  private readonly listeners = new Set<Listener>();
  private watcher: FSWatcher | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(options: RegistryOptions) {
    this.dir = options.dir === undefined ? undefined : resolve(options.dir);
    this.log = options.log;
    this.metrics = options.metrics;
    this.debounceMs = options.debounceMs ?? 100;
  }

  /** Reads the directory once, then watches it (nothing to do without a directory). */
  start(): void {
    if (this.dir === undefined) return;
    this.reload();
    this.watcher = watch(this.dir, () => this.scheduleReload());
    this.watcher.on('error', (err) => this.log.error({ dir: this.dir, err: errorMessage(err) }, 'watching the source directory failed'));
  }

  close(): void {
    this.watcher?.close();
    this.watcher = undefined;
    clearTimeout(this.timer);
    this.listeners.clear();
  }

  get version(): number {
    return this.versionNumber;
  }

  problems(): ConfigProblem[] {
    return [...this.currentProblems];
  }

  resources(): Resource[] {
    return [...this.objects.values()].map((r) => stripSource<Resource>(r));
  }

  snapshot(): RegistrySnapshot {
    return { version: this.versionNumber, resources: this.resources(), problems: this.problems() };
  }

  /** Calls `fn` after every change; returns the unsubscribe function. */
  subscribe(fn: Listener): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private scheduleReload(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.reload(), this.debounceMs);
  }

  /** Re-reads every file now (the watcher calls this after a quiet period). */
  reload(): void {
    if (this.dir === undefined) return;
    let files: string[];
    try {
      files = yamlFilesOf(this.dir);
    } catch (err) {
      this.log.error({ dir: this.dir, err: errorMessage(err) }, 'cannot list the source directory; keeping the last configuration');
      return;
    }
    const problems: ConfigProblem[] = [];
    const kinds = new Map<ConfigProblem, string>();
    const contributions = new Map<string, Map<string, WithSource<Resource>>>();
    for (const file of files) {
      const previous = this.contributions.get(file) ?? new Map<string, WithSource<Resource>>();
      let text: string;
      try {
        text = readConfigText(file);
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        // Gone between listing and reading (an editor's rename): the next event settles it.
        if (e.code !== 'ENOENT') problems.push({ file, line: 0, field: '', reason: `cannot read file: ${e.code ?? e.message}` });
        if (previous.size) contributions.set(file, previous);
        continue;
      }
      const parsed = parseDocuments(text, file);
      const fresh = new Map<string, WithSource<Resource>>();
      for (const r of parsed.resources) {
        const key = resourceKey(r);
        const first = fresh.get(key);
        if (first) {
          const p = problemAt(r, ['metadata', 'name'], `duplicate ${r.kind} "${key.split('/').slice(1).join('/')}" (first defined at ${first.source.file}:${first.source.line})`);
          problems.push(p);
          kinds.set(p, r.kind);
          continue;
        }
        fresh.set(key, r);
      }
      for (const p of parsed.problems) {
        problems.push(p);
        // The parser knows each problem's document: re-parsing the file per problem was quadratic.
        kinds.set(p, problemKind(p));
      }
      // A file with problems keeps what it contributed before; its valid documents still update.
      const contributed = parsed.problems.length ? new Map([...previous, ...fresh]) : fresh;
      if (contributed.size) contributions.set(file, contributed);
    }

    // Merge the files in name order; an object defined by two files keeps the first definition.
    const objects = new Map<string, WithSource<Resource>>();
    for (const [, contributed] of contributions) {
      for (const [key, r] of contributed) {
        const first = objects.get(key);
        if (first) {
          const p = problemAt(r, ['metadata', 'name'], `duplicate ${r.kind} "${key.split('/').slice(1).join('/')}" (first defined at ${first.source.file}:${first.source.line})`);
          problems.push(p);
          kinds.set(p, r.kind);
          continue;
        }
        objects.set(key, r);
      }
    }

    this.contributions = contributions;
    this.commit(objects, problems, kinds);
  }

  /**
   * Replaces everything with a source's current good objects (by resourceKey) and its current
   * problems (`kinds`: each problem's kind, for the rejection counter). What the Kubernetes source
   * calls after each batch of changes; a problem's object keeps its last good version in `objects`.
   */
  replace(objects: ReadonlyMap<string, WithSource<Resource>>, problems: readonly ConfigProblem[], kinds: ReadonlyMap<ConfigProblem, string> = new Map()): void {
    this.commit(new Map(objects), [...problems], kinds);
  }

  private commit(objects: Map<string, WithSource<Resource>>, problems: ConfigProblem[], kinds: ReadonlyMap<ConfigProblem, string>): void {
    const upserts: Resource[] = [];
    const removals: string[] = [];
    for (const [key, r] of objects) {
      const old = this.objects.get(key);
      if (!old || JSON.stringify(stripSource<Resource>(old)) !== JSON.stringify(stripSource<Resource>(r))) upserts.push(stripSource<Resource>(r));
    }
    for (const key of this.objects.keys()) if (!objects.has(key)) removals.push(key);

    const before = new Set(this.currentProblems.map(formatProblem));
    const after = new Set(problems.map(formatProblem));
    for (const p of problems) {
      const text = formatProblem(p);
      if (before.has(text)) continue;
      this.metrics?.rejections.inc({ kind: kinds.get(p) ?? 'unknown' });
      this.log.error({ problem: text, file: p.file, line: p.line, field: p.field }, 'invalid configuration document rejected; the last good version stays in force');
    }
    const problemsChanged = before.size !== after.size || [...after].some((t) => !before.has(t));

    this.objects = objects;
    this.currentProblems = problems;
    const initial = this.versionNumber === 0;
    if (!initial && !upserts.length && !removals.length && !problemsChanged) return;
    this.versionNumber++;
    this.metrics?.registryVersion.set(this.versionNumber);
    this.log.info({ version: this.versionNumber, objects: objects.size, upserts: upserts.length, removals: removals.length, problems: problems.length }, 'registry updated');
    const change: RegistryChange = { version: this.versionNumber, upserts, removals, problems: this.problems() };
    for (const fn of [...this.listeners]) {
      try {
        fn(change);
      } catch (err) {
        this.log.error({ err: errorMessage(err) }, 'registry listener failed');
      }
    }
  }
}
