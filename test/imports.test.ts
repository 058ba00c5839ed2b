// Who may import whom, checked on the source: every `import`, `export … from` and `import()` of every
// .ts file under agent/ and native/ (found by TypeScript's own ts.preProcessFile), as one graph.
//   - no import circles: a circle means neither file can be understood, tested or loaded alone (and
//     ES modules hand one side an uninitialised binding). Type-only imports count too: a circle of
//     types is two modules that are really one.
//   - the floor: native/ (the addon and its codecs) imports nothing from agent/, and neither imports
//     test/, bench/ or scripts/.
// An exception below must name its files and why; the test fails when one no longer occurs, so the
// list only shrinks.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import ts from 'typescript';
import { repoRoot } from './helpers/privileged.js';

const root = repoRoot();
const ROOTS = ['agent', 'native'];
/** Not source: the addon's build output, dependencies. */
const SKIP_DIRS = new Set(['node_modules', 'build']);

/** Circles that are known and being removed, each as its files (sorted) and why it may stay for now. None today. */
const KNOWN_CIRCLES: ReadonlyArray<{ files: string[]; why: string }> = [];
/** native/ → agent/ imports that are known and being removed. None today. */
const KNOWN_FLOOR_BREACHES: ReadonlyArray<{ from: string; to: string; why: string }> = [];

interface Edge {
  to: string;
  /** Every import of `to` in this file is `import type` / `export type` (erased at run time). */
  typeOnly: boolean;
}

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) {
      if (!SKIP_DIRS.has(e.name)) out.push(...sources(p));
    } else if (e.name.endsWith('.ts')) out.push(p);
  }
  return out;
}

/** Specifiers that only types are taken from: `import type`, `export type`, or every named binding `type`. */
function typeOnlySpecifiers(file: string, text: string): Set<string> {
  const sf = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, false, ts.ScriptKind.TS);
  const typeOnly = new Set<string>();
  const valued = new Set<string>();
  for (const st of sf.statements) {
    let spec: string | undefined;
    let onlyTypes = false;
    if (ts.isImportDeclaration(st) && ts.isStringLiteral(st.moduleSpecifier)) {
      spec = st.moduleSpecifier.text;
      const clause = st.importClause;
      const named = clause?.namedBindings;
      onlyTypes =
        clause !== undefined &&
        (clause.isTypeOnly ||
          (clause.name === undefined && named !== undefined && ts.isNamedImports(named) && named.elements.length > 0 && named.elements.every((el) => el.isTypeOnly)));
    } else if (ts.isExportDeclaration(st) && st.moduleSpecifier && ts.isStringLiteral(st.moduleSpecifier)) {
      spec = st.moduleSpecifier.text;
      const named = st.exportClause;
      onlyTypes = st.isTypeOnly || (named !== undefined && ts.isNamedExports(named) && named.elements.length > 0 && named.elements.every((el) => el.isTypeOnly));
    }
    if (spec !== undefined) (onlyTypes ? typeOnly : valued).add(spec);
  }
  for (const v of valued) typeOnly.delete(v);
  return typeOnly;
}

/** The repository-relative .ts file a relative specifier names ('./x.js' is x.ts), or undefined. */
function resolveSpecifier(from: string, spec: string): string | undefined {
  const target = resolve(dirname(from), spec);
  for (const candidate of [target.replace(/\.js$/, '.ts'), target.replace(/\.js$/, '.d.ts'), `${target}.ts`, join(target, 'index.ts')])
    if (existsSync(candidate) && candidate.endsWith('.ts')) return relative(root, candidate);
  return undefined;
}

function buildGraph(): { graph: Map<string, Edge[]>; unresolved: string[] } {
  const graph = new Map<string, Edge[]>();
  const unresolved: string[] = [];
  for (const file of ROOTS.flatMap((r) => sources(join(root, r))).sort()) {
    const text = readFileSync(file, 'utf8');
    const typeOnly = typeOnlySpecifiers(file, text);
    const edges = new Map<string, Edge>();
    // readImportFiles and detectJavaScriptImports: static imports, re-exports and import() calls.
    for (const { fileName: spec } of ts.preProcessFile(text, true, true).importedFiles) {
      if (!spec.startsWith('.')) continue; // packages and node: builtins
      const to = resolveSpecifier(file, spec);
      if (to === undefined) {
        unresolved.push(`${relative(root, file)}: ${spec}`);
        continue;
      }
      const prev = edges.get(to);
      edges.set(to, { to, typeOnly: (prev?.typeOnly ?? true) && typeOnly.has(spec) });
    }
    graph.set(relative(root, file), [...edges.values()]);
  }
  return { graph, unresolved };
}

/** Strongly connected components with more than one file (or a file importing itself): the circles. */
function circles(graph: ReadonlyMap<string, ReadonlyArray<{ to: string }>>): string[][] {
  let next = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const out: string[][] = [];
  // Iterative Tarjan: the graph is small, but recursion depth should not depend on it.
  for (const start of [...graph.keys()].sort()) {
    if (index.has(start)) continue;
    const work: Array<{ v: string; i: number }> = [{ v: start, i: 0 }];
    index.set(start, next);
    low.set(start, next++);
    stack.push(start);
    onStack.add(start);
    while (work.length) {
      const frame = work[work.length - 1]!;
      const edges = graph.get(frame.v) ?? [];
      if (frame.i < edges.length) {
        const w = edges[frame.i++]!.to;
        if (!index.has(w)) {
          index.set(w, next);
          low.set(w, next++);
          stack.push(w);
          onStack.add(w);
          work.push({ v: w, i: 0 });
        } else if (onStack.has(w)) low.set(frame.v, Math.min(low.get(frame.v)!, index.get(w)!));
        continue;
      }
      work.pop();
      if (work.length) {
        const parent = work[work.length - 1]!.v;
        low.set(parent, Math.min(low.get(parent)!, low.get(frame.v)!));
      }
      if (low.get(frame.v) === index.get(frame.v)) {
        const scc: string[] = [];
        let w: string;
        do {
          w = stack.pop()!;
          onStack.delete(w);
          scc.push(w);
        } while (w !== frame.v);
        if (scc.length > 1 || edges.some((e) => e.to === frame.v)) out.push(scc.sort());
      }
    }
  }
  return out.sort((a, b) => a[0]!.localeCompare(b[0]!));
}

/** One concrete circle through the component's first file, as "a.ts → b.ts → a.ts" ("(type)" on
 * type-only edges), for the failure message. */
function describe(graph: ReadonlyMap<string, ReadonlyArray<Edge>>, scc: string[]): string {
  const members = new Set(scc);
  const start = scc[0]!;
  const prev = new Map<string, Edge & { from: string }>();
  const queue = [start];
  let end: (Edge & { from: string }) | undefined;
  while (queue.length && end === undefined) {
    const v = queue.shift()!;
    for (const e of graph.get(v) ?? []) {
      if (!members.has(e.to)) continue;
      if (e.to === start) {
        end = { ...e, from: v };
        break;
      }
      if (!prev.has(e.to)) {
        prev.set(e.to, { ...e, from: v });
        queue.push(e.to);
      }
    }
  }
  const steps: Array<Edge & { from: string }> = [];
  for (let step = end; step !== undefined; step = step.from === start ? undefined : prev.get(step.from)) steps.unshift(step);
  return [start, ...steps.map((s) => `${s.typeOnly ? '(type) ' : ''}${s.to}`)].join(' → ');
}

const { graph, unresolved } = buildGraph();

test('the circle finder finds a planted circle and a self-import, and nothing in a tree', () => {
  const g = (edges: Record<string, string[]>): Map<string, Edge[]> => new Map(Object.entries(edges).map(([k, v]) => [k, v.map((to) => ({ to, typeOnly: false }))]));
  const planted = g({ 'a.ts': ['b.ts'], 'b.ts': ['c.ts'], 'c.ts': ['a.ts', 'd.ts'], 'd.ts': [], 'e.ts': ['a.ts'], 'f.ts': ['f.ts'] });
  assert.deepEqual(circles(planted), [['a.ts', 'b.ts', 'c.ts'], ['f.ts']]);
  assert.equal(describe(planted, ['a.ts', 'b.ts', 'c.ts']), 'a.ts → b.ts → c.ts → a.ts');
  assert.deepEqual(circles(g({ 'a.ts': ['b.ts', 'c.ts'], 'b.ts': ['c.ts'], 'c.ts': [] })), []);
});

test('every relative import under agent/ and native/ names a file that exists', () => {
  assert.ok(graph.size > 50, `only ${graph.size} files found`);
  assert.ok([...graph.values()].reduce((n, e) => n + e.length, 0) > graph.size, 'suspiciously few imports found');
  assert.deepEqual(unresolved, []);
});

test('no import circles under agent/ and native/ (type-only imports included)', () => {
  const found = circles(graph);
  const known = (scc: string[]): boolean => KNOWN_CIRCLES.some((k) => k.files.join('\n') === scc.join('\n'));
  assert.deepEqual(
    found.filter((scc) => !known(scc)).map((scc) => describe(graph, scc)),
    [],
    'import circles (break each by moving what both sides need into a module both import)',
  );
  const gone = KNOWN_CIRCLES.filter((k) => !found.some((scc) => scc.join('\n') === k.files.join('\n')));
  assert.deepEqual(gone.map((k) => k.files.join(' ↔ ')), [], 'these known circles are gone: remove them from KNOWN_CIRCLES');
});

test('the floor: native/ imports nothing from agent/; neither imports test/, bench/ or scripts/', () => {
  const breaches: string[] = [];
  const knownLeft = new Set(KNOWN_FLOOR_BREACHES.map((b) => `${b.from} → ${b.to}`));
  for (const [from, edges] of graph) {
    for (const { to } of edges) {
      const edge = `${from} → ${to}`;
      if (from.startsWith('native/') && to.startsWith('agent/')) {
        if (knownLeft.delete(edge)) continue;
        breaches.push(edge);
      }
      if (!ROOTS.some((r) => to.startsWith(`${r}/`))) breaches.push(edge);
    }
  }
  assert.deepEqual(breaches, []);
  assert.deepEqual([...knownLeft], [], 'these known breaches are gone: remove them from KNOWN_FLOOR_BREACHES');
});

/** The programs' rooms: each has a public entry (index.ts) and its command (command.ts, what
 * `weft <program>` runs); everything else inside is its own business. */
const PROGRAMS = ['agent/node', 'agent/controller', 'agent/relay', 'agent/lab'];
const ENTRIES = new Set(['index.ts', 'command.ts']);

/** Imports that reach into a program other than through its entry. */
function reachesIntoPrograms(g: ReadonlyMap<string, ReadonlyArray<{ to: string }>>): string[] {
  const reaches: string[] = [];
  for (const [from, edges] of g) {
    for (const { to } of edges) {
      const program = PROGRAMS.find((p) => to.startsWith(`${p}/`));
      if (!program || from.startsWith(`${program}/`)) continue;
      if (!ENTRIES.has(to.slice(program.length + 1))) reaches.push(`${from} → ${to}`);
    }
  }
  return reaches;
}

test('programs are used only through their public entry: no module reaches into another program', () => {
  assert.deepEqual(reachesIntoPrograms(graph), [], "import the program's index.ts (add what you need to it) instead");
});

test("the entry rule finds a planted reach into a program, and lets entries and a program's own files pass", () => {
  const planted = new Map([
    ['agent/cli/x.ts', [{ to: 'agent/node/agent.ts' }, { to: 'agent/node/index.ts' }, { to: 'agent/relay/command.ts' }]],
    ['agent/node/y.ts', [{ to: 'agent/node/agent.ts' }]],
  ]);
  assert.deepEqual(reachesIntoPrograms(planted), ['agent/cli/x.ts → agent/node/agent.ts']);
});
