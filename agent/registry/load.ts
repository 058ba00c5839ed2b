// Loading YAML files and directories of Kubernetes-style documents: every problem of every file is
// collected, then one ConfigError is thrown (or, for the lenient variants, returned with the good part).
import { closeSync, constants, fstatSync, openSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ConfigError, type ConfigProblem } from '../errors.js';
import type { Resource, WithSource } from './types.js';
import { MAX_FILE_CHARS, parseDocuments, problemAt, resourceKey } from './parse.js';

export interface LoadResult {
  resources: Array<WithSource<Resource>>;
  problems: ConfigProblem[];
}

/** Parses files (in order) and checks for duplicate objects across all of them. Never throws for bad input. */
export function loadFilesLenient(files: readonly string[]): LoadResult {
  const problems: ConfigProblem[] = [];
  const resources: Array<WithSource<Resource>> = [];
  const seen = new Map<string, WithSource<Resource>>();
  for (const f of files) {
    const file = resolve(f);
    let text: string;
    try {
      text = readConfigText(file);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      problems.push({ file, line: 0, field: '', reason: `cannot read file: ${e.code ?? e.message}` });
      continue;
    }
    const r = parseDocuments(text, file);
    problems.push(...r.problems);
    for (const res of r.resources) {
      const key = resourceKey(res);
      const prev = seen.get(key);
      if (prev) {
        problems.push(problemAt(res, ['metadata', 'name'], `duplicate ${key.split('/')[0]} "${key.split('/').slice(1).join('/')}" (first defined at ${prev.source.file}:${prev.source.line})`));
        continue;
      }
      seen.set(key, res);
      resources.push(res);
    }
  }
  return { resources, problems };
}

/**
 * A configuration file's text. Its size is checked on the open file before anything is read: a
 * stray multi-gigabyte file must cost a stat, not the process's memory. Throws the fs error (with
 * its code), or an Error without code whose message says what is wrong (too large, not a file).
 */
export function readConfigText(file: string): string {
  // O_NONBLOCK: a FIFO put in place of the file must not block the open (regular files ignore it).
  const fd = openSync(file, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new Error('not a regular file');
    const size = st.size;
    if (size > MAX_FILE_CHARS) throw new Error(`file is ${size} bytes; a configuration file may have at most ${MAX_FILE_CHARS}`);
    return readFileSync(fd, 'utf8');
  } finally {
    closeSync(fd);
  }
}

/** Parses files; throws one ConfigError listing every problem. */
export function loadFiles(files: readonly string[]): Array<WithSource<Resource>> {
  const r = loadFilesLenient(files);
  if (r.problems.length) throw new ConfigError(r.problems);
  return r.resources;
}

/** The `*.yaml` / `*.yml` files of a directory (not recursive), sorted by name; hidden and temp files skipped. */
export function yamlFilesOf(dir: string): string[] {
  return readdirSync(dir)
    .filter((n) => /\.ya?ml$/.test(n) && !n.startsWith('.'))
    .map((n) => join(dir, n))
    .filter((p) => {
      try {
        return statSync(p).isFile();
      } catch {
        return false;
      }
    })
    .sort();
}

/** Reads every YAML file of a directory (the agent uses this on the lab's resources directory). Throws ConfigError. */
export function loadDir(dir: string): Array<WithSource<Resource>> {
  return loadFiles(yamlFilesOf(dir));
}

/** Like loadDir, but returns the valid documents together with the problems instead of throwing. */
export function loadDirLenient(dir: string): LoadResult {
  return loadFilesLenient(yamlFilesOf(dir));
}
