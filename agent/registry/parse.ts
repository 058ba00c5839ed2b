// Reading Kubernetes-style YAML: the multi-document entry. A file's text becomes its resources and
// its problems, each naming file, line, field path (`spec.containers[0].command`) and reason; nothing
// is thrown per document — callers collect every problem of every file and throw one ConfigError (see
// load.ts). Each document's kind is looked up in the kinds table (kinds.ts); the field checks are in
// validators.ts, the kinds' own checks in core-kinds.ts and policy-kinds.ts.
import { LineCounter, parseAllDocuments, isMap, isScalar, type Document, type YAMLError } from 'yaml';
import type { ConfigProblem } from '../errors.js';
import type { ObjectMeta, Resource, WithSource } from './types.js';
import { kindSpec, knownKinds, type KindSpec } from './kinds.js';
import { quote, safeName } from '../quote.js';
import {
  DocContext,
  checkLabelName,
  checkObject,
  checkString,
  checkStringMap,
  checkSubdomainName,
  describe,
  formatPath,
  isPlainObject,
  type Json,
  type PathSeg,
} from './validators.js';

export { knownKinds } from './kinds.js';

function checkMetadata(ctx: DocContext, raw: Json, spec: KindSpec, kind: string): ObjectMeta | undefined {
  const before = ctx.problems.length;
  const m = checkObject(ctx, ['metadata'], raw, ['name', 'namespace', 'labels', 'annotations'], {
    required: true,
    tolerated: ['uid', 'resourceVersion', 'generation', 'creationTimestamp'],
  });
  if (!m) return undefined;
  // The API server has checked an object's name by its kind's own rule already, and some of those
  // rules are wider than a file's (a cloud's node names are DNS subdomains such as ip-10-0-0-1.ec2.internal).
  const name =
    spec.name === 'dns1123-subdomain' || ctx.fromApi ? checkSubdomainName(ctx, ['metadata', 'name'], m.name) : checkLabelName(ctx, ['metadata', 'name'], m.name);
  let namespace: string | undefined;
  if (spec.namespaced) {
    namespace = m.namespace === undefined ? 'default' : checkLabelName(ctx, ['metadata', 'namespace'], m.namespace);
  } else if (m.namespace !== undefined) {
    ctx.add(['metadata', 'namespace'], `${kind} is not namespaced`, true);
  }
  const labels = checkStringMap(ctx, ['metadata', 'labels'], m.labels, 'labels');
  const annotations = checkStringMap(ctx, ['metadata', 'annotations'], m.annotations, 'annotations');
  const uid = m.uid === undefined ? undefined : checkString(ctx, ['metadata', 'uid'], m.uid, { maxLength: 128 });
  if (ctx.problems.length !== before || name === undefined) return undefined;
  const meta: ObjectMeta = { name };
  if (namespace !== undefined) meta.namespace = namespace;
  if (labels && Object.keys(labels).length) meta.labels = labels;
  if (annotations && Object.keys(annotations).length) meta.annotations = annotations;
  if (uid) meta.uid = uid;
  return meta;
}

// ---------------------------------------------------------------------------------------------

export interface ParseResult {
  resources: Array<WithSource<Resource>>;
  problems: ConfigProblem[];
}

/**
 * Parses one file's text (multi-document YAML). Syntax errors and validation problems are returned,
 * never thrown. Documents with problems are left out of `resources`.
 */
export function parseDocuments(input: string, file: string): ParseResult {
  let text = input;
  const lc = new LineCounter();
  const problems: ConfigProblem[] = [];
  const resources: Array<WithSource<Resource>> = [];
  if (text.length > MAX_FILE_CHARS) {
    problems.push({ file, line: 1, field: '', reason: `file is ${text.length} characters long; a configuration file may have at most ${MAX_FILE_CHARS}` });
    return { resources, problems };
  }
  const nesting = limitFlowNesting(text);
  for (const p of nesting.problems) problems.push({ file, ...p, field: '' });
  text = nesting.text;
  let list: Document.Parsed[];
  try {
    // logLevel error: the library's own warnings (a collection used as a key...) would otherwise go
    // to process.emitWarning; the ones that matter are reported below as problems.
    const docs = parseAllDocuments(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true, logLevel: 'error' });
    list = Array.isArray(docs) ? docs : [];
  } catch (err) {
    // The parser recurses on nesting: a hostile file can exhaust the stack.
    problems.push({ file, line: 1, field: '', reason: `YAML syntax error: ${yamlReason(err)}` });
    return { resources, problems };
  }
  const errorsOf = errorsByDocument(list);
  const readDocument = (doc: Document.Parsed, errors: readonly YAMLError[]): void => {
    if (errors.length) {
      for (const e of errors) {
        const line = e.linePos?.[0]?.line ?? lc.linePos(e.pos[0]).line;
        problems.push({ file, line, field: '', reason: `YAML syntax error: ${yamlReason(e)}` });
      }
      return;
    }
    // Warnings are what the parser could not honour (an unknown tag such as `!foo` or `!!int abc`,
    // an unknown directive): it would carry on with a guess, so the document is refused instead.
    if (doc.warnings.length) {
      for (const w of doc.warnings) {
        const line = w.linePos?.[0]?.line ?? lc.linePos(w.pos[0]).line;
        problems.push({ file, line, field: '', reason: `YAML: ${yamlReason(w)}` });
      }
      return;
    }
    if (doc.contents === null || (isScalar(doc.contents) && doc.contents.value === null)) return; // empty document
    const ctx = new DocContext(file, doc, lc, problems);
    let raw: Json;
    try {
      raw = doc.toJS({ maxAliasCount: 100 });
    } catch (err) {
      ctx.add([], `cannot read document: ${yamlReason(err)}`);
      return;
    }
    try {
      const r = validateDocument(ctx, raw);
      if (r) resources.push(r);
    } catch (err) {
      // A bug of a validator must refuse one document, not take down the loader (and with it the
      // last good configuration). Tests assert this never happens.
      ctx.add([], `internal error while validating the document: ${yamlReason(err)}`);
    }
  };
  list.forEach((doc, i) => {
    const first = problems.length;
    readDocument(doc, errorsOf[i]!);
    const kind = documentKind(doc);
    for (let j = first; j < problems.length; j++) problemKinds.set(problems[j]!, kind);
  });
  // In file order (the nesting check reports before the documents are read).
  problems.sort((a, b) => a.line - b.line);
  if (problems.length > MAX_PROBLEMS_PER_FILE) {
    const more = problems.length - MAX_PROBLEMS_PER_FILE;
    problems.length = MAX_PROBLEMS_PER_FILE;
    problems.push({ file, line: problems[problems.length - 1]!.line, field: '', reason: `${more} more problems in this file are not listed` });
  }
  return { resources, problems };
}

/**
 * Validates one object that is data already — what the Kubernetes source decoded from the API — with
 * the same kinds table and validators as parseDocuments (the DocContext says it came from the API:
 * no lines, and the kinds relax what only a file must say, such as a container's command). `origin`
 * stands for the file in its problems (e.g. `kubernetes:AuthorizationPolicy/default/deny`).
 */
export function parseObject(raw: unknown, origin: string): ParseResult {
  const problems: ConfigProblem[] = [];
  const resources: Array<WithSource<Resource>> = [];
  const ctx = new DocContext(origin, undefined, undefined, problems, true);
  try {
    const r = validateDocument(ctx, raw);
    if (r) resources.push(r);
  } catch (err) {
    ctx.add([], `internal error while validating the object: ${yamlReason(err)}`);
  }
  const kind = isPlainObject(raw) && typeof raw.kind === 'string' && kindSpec(raw.kind) !== undefined ? raw.kind : 'unknown';
  for (const p of problems) problemKinds.set(p, kind);
  return { resources, problems };
}

/**
 * Each document's syntax errors, by where they are. The parser can hand an error that sits in one
 * document to the one before it (a stray `]` at the start of a document goes to the previous
 * document), which would refuse a valid document for its neighbour's mistake.
 */
function errorsByDocument(list: readonly Document.Parsed[]): YAMLError[][] {
  const out = list.map((): YAMLError[] => []);
  for (const [i, doc] of list.entries()) {
    for (const e of doc.errors) {
      const at = e.pos[0];
      let owner = i;
      const [start, , end] = doc.range;
      if (at < start || at >= end) {
        // The last document that starts at or before the error; else this one.
        for (let j = list.length - 1; j >= 0; j--) {
          if (list[j]!.range[0] <= at) {
            owner = j;
            break;
          }
        }
      }
      out[owner]!.push(e);
    }
  }
  return out;
}

const problemKinds = new WeakMap<ConfigProblem, string>();

/**
 * The kind of the document a problem of parseDocuments is about (for metrics labels): a kind of
 * the table, or 'unknown' (no kind, one not in the table, a syntax error before it). Never user text, so
 * hostile documents cannot mint label values.
 */
export function problemKind(p: ConfigProblem): string {
  return problemKinds.get(p) ?? 'unknown';
}

function documentKind(doc: Document.Parsed): string {
  const c = doc.contents;
  if (!isMap(c)) return 'unknown';
  const pair = c.items.find((it) => isScalar(it.key) && it.key.value === 'kind');
  const v = pair && isScalar(pair.value) ? pair.value.value : undefined;
  return typeof v === 'string' && kindSpec(v) !== undefined ? v : 'unknown';
}

/** Largest file parseDocuments reads (characters): far above any real configuration, bounds parse time and memory. */
export const MAX_FILE_CHARS = 4 * 1024 * 1024;
/** Deepest `[`/`{` nesting parseDocuments hands to the YAML parser. */
export const MAX_FLOW_DEPTH = 1000;
/** Problems listed per file; past that one summary line says how many more there were. */
export const MAX_PROBLEMS_PER_FILE = 200;

/**
 * The YAML parser's time grows steeply with flow nesting (`[[[[...`: seconds for a few hundred KB)
 * before it gives up with a stack overflow, so nesting is measured first, by counting brackets, one
 * document at a time (a `---` or `...` line always ends a document, whatever it is in). A document
 * that nests too deeply is blanked out, its lines kept so the other documents keep their line
 * numbers. Brackets inside quoted or block scalars count too: a real document never has a thousand
 * unclosed ones, and the worst outcome is a clear refusal of that document.
 */
function limitFlowNesting(text: string): { text: string; problems: Array<{ line: number; reason: string }> } {
  const problems: Array<{ line: number; reason: string }> = [];
  const blank: Array<[number, number]> = [];
  let depth = 0;
  let line = 1;
  let docStart = 0;
  let tooDeep = false;
  let atLineStart = true;
  const endDocument = (end: number): void => {
    if (tooDeep) blank.push([docStart, end]);
    docStart = end;
    depth = 0;
    tooDeep = false;
  };
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (atLineStart && (c === 45 || c === 46) && isDocumentMarker(text, i)) endDocument(i);
    atLineStart = c === 10;
    if (c === 10) line++;
    else if (tooDeep) continue;
    else if (c === 91 || c === 123) {
      if (++depth > MAX_FLOW_DEPTH) {
        tooDeep = true;
        problems.push({ line, reason: `YAML syntax error: the document nests deeper than ${MAX_FLOW_DEPTH} levels` });
      }
    } else if ((c === 93 || c === 125) && depth > 0) depth--;
  }
  endDocument(text.length);
  if (blank.length === 0) return { text, problems };
  let out = '';
  let from = 0;
  for (const [start, end] of blank) {
    out += text.slice(from, start) + text.slice(start, end).replace(/[^\n]+/g, '');
    from = end;
  }
  return { text: out + text.slice(from), problems };
}

/** `---` or `...` at offset i (the start of a line), followed by a space, a tab, a line break or the end. */
function isDocumentMarker(text: string, i: number): boolean {
  const m = text.charCodeAt(i);
  if (text.charCodeAt(i + 1) !== m || text.charCodeAt(i + 2) !== m) return false;
  const next = text.charCodeAt(i + 3);
  return Number.isNaN(next) || next === 32 || next === 9 || next === 10 || next === 13;
}

/** The first line of a parser error, bounded and printable (it may repeat the user's text). */
function yamlReason(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  // The parser reports its own stack overflow as a syntax error carrying V8's message.
  if (/Maximum call stack size exceeded/.test(msg)) return 'the document nests too deeply';
  const line = firstLine(msg);
  return safeName(line) === line ? line : quote(line);
}

function firstLine(s: string): string {
  const i = s.indexOf('\n');
  return (i < 0 ? s : s.slice(0, i)).trim();
}

function validateDocument(ctx: DocContext, raw: Json): WithSource<Resource> | undefined {
  if (!isPlainObject(raw)) {
    ctx.add([], `a document must be a mapping with apiVersion and kind, got ${describe(raw)}`);
    return undefined;
  }
  const kind = checkString(ctx, ['kind'], raw.kind, { required: true });
  const apiVersion = checkString(ctx, ['apiVersion'], raw.apiVersion, { required: true });
  if (kind === undefined || apiVersion === undefined) return undefined;
  const spec = kindSpec(kind);
  if (!spec) {
    ctx.add(['kind'], `unknown kind ${quote(kind)} (known kinds: ${knownKinds().join(', ')})`);
    return undefined;
  }
  if (!spec.apiVersions.includes(apiVersion)) {
    ctx.add(['apiVersion'], `apiVersion ${quote(apiVersion)} is not valid for kind ${kind} (expected ${spec.apiVersions.join(' or ')})`);
    return undefined;
  }
  const meta = checkMetadata(ctx, raw.metadata, spec, kind);
  const before = ctx.problems.length;
  // Validate the body even if metadata failed, so one run reports every problem.
  const r = spec.validate(ctx, raw, meta ?? { name: '' });
  if (!meta || r === undefined || ctx.problems.length !== before) return undefined;
  const out = Object.assign(r, { source: { file: ctx.file, line: ctx.startLine } }) as WithSource<Resource>;
  contexts.set(out, ctx);
  return out;
}

const contexts = new WeakMap<object, DocContext>();

/**
 * The line of a field of a parsed resource (for cross-document checks such as "pod on a missing
 * node"), falling back to the document's first line when the resource was not produced by this parser.
 */
export function sourceLine(r: WithSource<Resource>, path: readonly PathSeg[], atKey = false): number {
  const ctx = contexts.get(r);
  return ctx ? ctx.line(path, atKey) : r.source.line;
}

/** A ConfigProblem located at a field of a parsed resource. */
export function problemAt(r: WithSource<Resource>, path: readonly PathSeg[], reason: string, atKey = false): ConfigProblem {
  return { file: r.source.file, line: sourceLine(r, path, atKey), field: formatPath(path), reason };
}

/** `Kind/namespace/name` (or `Kind/name`), the identity used for duplicate detection and apply. */
export function resourceKey(r: Resource): string {
  return r.metadata.namespace !== undefined ? `${r.kind}/${r.metadata.namespace}/${r.metadata.name}` : `${r.kind}/${r.metadata.name}`;
}

/** Removes the `source` added by the loader (for writing resources back out). */
export function stripSource<T extends Resource>(r: WithSource<T> | T): T {
  const { source: _source, ...rest } = r as WithSource<T>;
  void _source;
  return rest as unknown as T;
}
