// Where the node agent learns about the cluster: the controller's discovery stream, or (as ztunnel's
// local config) a directory of YAML documents. Either way the agent gets the full current set of
// resources on every change, plus the problems of documents that were rejected.
import { watch, type FSWatcher } from 'node:fs';
import { ControllerClient } from '../controller/index.js';
import { errorMessage, formatProblem, type ConfigProblem } from '../errors.js';
import type { Logger } from '../log.js';
import { loadDirLenient } from '../registry/load.js';
import { stripSource } from '../registry/parse.js';
import type { Resource } from '../registry/types.js';

export interface SourceUpdate {
  resources: Resource[];
  problems: string[];
  trustDomain?: string;
}

export interface ResourceSource {
  start(onUpdate: (u: SourceUpdate) => void): void;
  close(): void;
}

const RELOAD_DEBOUNCE_MS = 50;

/**
 * A directory of documents, watched. A file with an invalid document keeps its last good contents
 * in force (a typo must not un-enroll a pod); the problems are reported.
 */
export class DirSource implements ResourceSource {
  private lastGood = new Map<string, Resource[]>();
  private watcher: FSWatcher | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly dir: string,
    private readonly log: Logger,
  ) {}

  start(onUpdate: (u: SourceUpdate) => void): void {
    const reload = (): void => {
      const u = this.read();
      if (u) onUpdate(u);
    };
    reload();
    this.watcher = watch(this.dir, () => {
      clearTimeout(this.timer);
      this.timer = setTimeout(reload, RELOAD_DEBOUNCE_MS);
    });
  }

  private read(): SourceUpdate | undefined {
    let result;
    try {
      result = loadDirLenient(this.dir);
    } catch (err) {
      this.log.error({ err: errorMessage(err), source: this.dir }, 'cannot read the source; keeping the last configuration');
      return undefined;
    }
    const badFiles = new Set(result.problems.map((p) => p.file));
    const byFile = new Map<string, Resource[]>();
    for (const r of result.resources) {
      if (badFiles.has(r.source.file)) continue;
      byFile.set(r.source.file, [...(byFile.get(r.source.file) ?? []), stripSource<Resource>(r)]);
    }
    for (const file of badFiles) {
      const lastGood = this.lastGood.get(file);
      if (lastGood) byFile.set(file, lastGood);
    }
    this.lastGood = byFile;
    logProblems(this.log, result.problems);
    return { resources: [...byFile.values()].flat(), problems: result.problems.map(formatProblem) };
  }

  close(): void {
    this.watcher?.close();
    clearTimeout(this.timer);
  }
}

function logProblems(log: Logger, problems: readonly ConfigProblem[]): void {
  for (const p of problems) log.error({ problem: formatProblem(p) }, 'invalid configuration document rejected; last good version stays');
}

/** The controller's discovery stream (snapshot, then deltas; reconnects and keeps the last state). */
export class ControllerSource implements ResourceSource {
  constructor(
    private readonly client: ControllerClient,
    private readonly log: Logger,
  ) {}

  start(onUpdate: (u: SourceUpdate) => void): void {
    this.client.watch((u) => {
      logProblems(this.log, u.problems);
      onUpdate({ resources: u.resources, problems: u.problems.map(formatProblem), trustDomain: u.trustDomain });
    });
  }

  close(): void {
    this.client.close();
  }
}
