// The agent's struct layouts and constants, held against what the compiler actually built: the BTF of
// bpf/build/*.bpf.o (as cilium's alignchecker does), read with `bpftool btf dump -j`. A member that
// moves, grows or is renamed on either side, a struct whose size changes, an enum value or a #define
// that drifts, fails here with the struct, member and object named. Needs the BPF objects
// (`make -C bpf`) and bpftool; no root.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Marks, Ports } from '../agent/config.js';
import {
  ConfigBits,
  Direction,
  EnrollState,
  EventKind,
  ExcludeBits,
  HBONE_PORT,
  INBOUND_PORT,
  OUTBOUND_PORT,
  PROXY_MARK,
  Reason,
  StructLayouts,
  UpstreamBits,
  encodeSockAddr,
} from '../agent/datapath/layout.js';
import { LbStructLayouts } from '../agent/lab/lb.js';
import type { Codec, StructLayout } from '../native/codec.js';
import { repoRoot } from './helpers/privileged.js';

const root = repoRoot();
const buildDir = join(root, 'bpf', 'build');
/** The fixture that puts the types no program's map names (struct weft_event, the enums) into BTF. */
const typesFixture = join(buildDir, 'test', 'weft_layout.bpf.o');

/** Each table of TypeScript layouts, with the C source its structs come from. */
const TABLES: ReadonlyArray<{ source: string; layouts: Readonly<Record<string, StructLayout>> }> = [
  { source: 'agent/datapath/layout.ts (bpf/include/weft.h)', layouts: StructLayouts },
  { source: 'agent/lab/lb.ts (bpf/lab_service_lb.bpf.c)', layouts: LbStructLayouts },
];

/** weft_* structs in the objects that the agent never reads or writes, each with why. None today. */
const C_ONLY_STRUCTS: ReadonlyMap<string, string> = new Map();

interface BtfMember {
  name: string;
  type_id: number;
  bits_offset: number;
  bitfield_size?: number;
}
interface BtfType {
  id: number;
  kind: string;
  name: string;
  size?: number;
  type_id?: number;
  nr_elems?: number;
  members?: BtfMember[];
  values?: Array<{ name: string; val: number }>;
}

function bpftool(): string | undefined {
  for (const candidate of [process.env.BPFTOOL, 'bpftool', '/usr/sbin/bpftool', '/sbin/bpftool']) {
    if (candidate === undefined) continue;
    try {
      execFileSync(candidate, ['version'], { stdio: 'ignore' });
      return candidate;
    } catch {
      /* try the next: an unprivileged PATH often lacks /usr/sbin */
    }
  }
  return undefined;
}

/** The objects to read: every program in bpf/build, and the types fixture. */
function objects(): string[] {
  const programs = existsSync(buildDir) ? readdirSync(buildDir).filter((n) => n.endsWith('.bpf.o')).sort().map((n) => join(buildDir, n)) : [];
  return [...programs, typesFixture];
}

function why(): string | undefined {
  if (bpftool() === undefined) return 'bpftool not found (Debian package bpftool; setup installs it)';
  const missing = objects().filter((o) => !existsSync(o));
  if (!existsSync(buildDir) || objects().length < 2 || missing.length) return `BPF objects not built (${missing.join(', ') || buildDir}); run make -C bpf`;
  return undefined;
}

/** Like requirePrivileges: without the objects or bpftool, skip saying why; under CI=true, fail. */
function requireBtf(t: TestContext): boolean {
  const reason = why();
  if (reason === undefined) return true;
  if (process.env.CI === 'true') throw new Error(`BTF layout test cannot run in CI: ${reason}`);
  console.log(`# skipping ${t.name}: ${reason}`);
  t.skip(reason);
  return false;
}

const btfCache = new Map<string, Map<number, BtfType>>();
function btf(object: string): Map<number, BtfType> {
  let types = btfCache.get(object);
  if (types === undefined) {
    const out = execFileSync(bpftool()!, ['-j', 'btf', 'dump', 'file', object], { encoding: 'utf8', maxBuffer: 64 << 20 });
    const parsed = JSON.parse(out) as { types: BtfType[] };
    types = new Map(parsed.types.map((ty) => [ty.id, ty]));
    btfCache.set(object, types);
  }
  return types;
}

function rel(path: string): string {
  return path.startsWith(root) ? path.slice(root.length + 1) : path;
}

/** Through typedefs and qualifiers to the type that has a size. */
function resolve(types: Map<number, BtfType>, id: number): BtfType {
  let ty = types.get(id);
  for (let i = 0; ty && ['TYPEDEF', 'CONST', 'VOLATILE', 'RESTRICT', 'TYPE_TAG'].includes(ty.kind) && i < 32; i++) ty = types.get(ty.type_id!);
  if (ty === undefined) throw new Error(`BTF type ${id} does not resolve`);
  return ty;
}

function sizeOf(types: Map<number, BtfType>, id: number): number {
  const ty = resolve(types, id);
  if (ty.kind === 'ARRAY') return ty.nr_elems! * sizeOf(types, ty.type_id!);
  if (ty.kind === 'PTR') return 8;
  if (ty.size === undefined) throw new Error(`BTF type ${id} (${ty.kind} ${ty.name}) has no size`);
  return ty.size;
}

/** One struct as both sides can describe it: sizeof, and per member its offset, size and (for an
 * embedded struct) the struct's name. */
interface Shape {
  size: number;
  members: Array<{ name: string; offset: number; size: number; struct?: string }>;
}

function btfShape(types: Map<number, BtfType>, st: BtfType): Shape {
  return {
    size: st.size!,
    members: st.members!.map((m) => {
      // The agent's codecs have no bitfields; a C bitfield would need one.
      assert.ok(m.bitfield_size === undefined || m.bitfield_size === 0, `${st.name}.${m.name} is a bitfield`);
      assert.equal(m.bits_offset % 8, 0, `${st.name}.${m.name} does not start on a byte`);
      const ty = resolve(types, m.type_id);
      return { name: m.name, offset: m.bits_offset / 8, size: sizeOf(types, m.type_id), ...(ty.kind === 'STRUCT' ? { struct: ty.name } : {}) };
    }),
  };
}

/** The C name of a codec that is one of the tables' structs. */
function structName(codec: Codec<unknown>): string | undefined {
  const wanted: unknown = codec; // the same object, seen as a codec or as a layout
  for (const { layouts } of TABLES) for (const [name, layout] of Object.entries(layouts)) if (layout === wanted) return name;
  return undefined;
}

function tsShape(layout: StructLayout): Shape {
  return {
    size: layout.size,
    members: Object.entries(layout.fields).map(([name, codec]) => {
      const struct = structName(codec);
      return { name, offset: layout.offsets[name]!, size: codec.size, ...(struct !== undefined ? { struct } : {}) };
    }),
  };
}

/** Every difference between the C struct and its TypeScript layout, one line each. */
function differences(name: string, c: Shape, ts: Shape): string[] {
  const out: string[] = [];
  if (c.size !== ts.size) out.push(`sizeof(struct ${name}) is ${c.size} in C, ${ts.size} in TypeScript`);
  const cNames = c.members.map((m) => m.name).join(', ');
  const tsNames = ts.members.map((m) => m.name).join(', ');
  if (cNames !== tsNames) out.push(`struct ${name} members are (${cNames}) in C, (${tsNames}) in TypeScript`);
  for (const cm of c.members) {
    const tm = ts.members.find((m) => m.name === cm.name);
    if (tm === undefined) continue;
    if (cm.offset !== tm.offset) out.push(`${name}.${cm.name} is at offset ${cm.offset} in C, ${tm.offset} in TypeScript`);
    if (cm.size !== tm.size) out.push(`${name}.${cm.name} is ${cm.size} bytes in C, ${tm.size} in TypeScript`);
    if (cm.struct !== tm.struct) out.push(`${name}.${cm.name} is ${cm.struct ? `struct ${cm.struct}` : 'no struct'} in C, ${tm.struct ? `struct ${tm.struct}` : 'no table struct'} in TypeScript`);
  }
  return out;
}

/** Every definition of a named struct (or enum) across the objects, with the object it is in. */
function definitions(kind: 'STRUCT' | 'ENUM', name: string): Array<{ object: string; types: Map<number, BtfType>; ty: BtfType }> {
  const out = [];
  for (const object of objects()) {
    const types = btf(object);
    for (const ty of types.values()) if (ty.kind === kind && ty.name === name) out.push({ object, types, ty });
  }
  return out;
}

test('the objects carry BTF, and the types fixture has every struct and enum of weft.h', (t) => {
  if (!requireBtf(t)) return;
  for (const object of objects()) assert.ok(btf(object).size > 0, `${rel(object)} has no BTF (built without -g?)`);
  const header = readFileSync(join(root, 'bpf', 'include', 'weft.h'), 'utf8');
  const declared = [...header.matchAll(/^(struct|enum)\s+(weft_\w+)\s*\{/gm)].map((m) => ({ kind: m[1] === 'struct' ? 'STRUCT' : 'ENUM', name: m[2]! }));
  assert.ok(declared.length >= 10, `found only ${declared.length} declarations in weft.h`);
  const fixture = btf(typesFixture);
  const missing = declared.filter((d) => ![...fixture.values()].some((ty) => ty.kind === d.kind && ty.name === d.name));
  assert.deepEqual(missing, [], `add these to test/fixtures/bpf/weft_layout.bpf.c: ${missing.map((d) => d.name).join(', ')}`);
});

test('every struct the agent reads or writes has the size and member offsets the compiler gave it', (t) => {
  if (!requireBtf(t)) return;
  const problems: string[] = [];
  let checked = 0;
  for (const { source, layouts } of TABLES) {
    for (const [name, layout] of Object.entries(layouts)) {
      const defs = definitions('STRUCT', name);
      if (defs.length === 0) {
        problems.push(`struct ${name} (${source}) is in no object's BTF`);
        continue;
      }
      const ts = tsShape(layout);
      for (const { object, types, ty } of defs) {
        for (const d of differences(name, btfShape(types, ty), ts)) problems.push(`${d} [${rel(object)}; ${source}]`);
        checked++;
      }
    }
  }
  assert.deepEqual(problems, []);
  assert.ok(checked >= 30, `only ${checked} struct definitions checked`);
});

test('every weft_* struct in the objects has a TypeScript layout (or is named C-only, with why)', (t) => {
  if (!requireBtf(t)) return;
  const known = new Set([...TABLES.flatMap(({ layouts }) => Object.keys(layouts)), ...C_ONLY_STRUCTS.keys()]);
  const unknown = new Set<string>();
  for (const object of objects())
    for (const ty of btf(object).values()) if (ty.kind === 'STRUCT' && ty.name.startsWith('weft_') && !known.has(ty.name)) unknown.add(`${ty.name} (${rel(object)})`);
  assert.deepEqual([...unknown], []);
});

/** The enums of weft.h and their TypeScript mirrors, as NAME → value (names without the C prefix, upper case). */
const ENUMS: ReadonlyArray<{ name: string; prefix: string; ts: Record<string, number> }> = [
  { name: 'weft_enroll_state', prefix: 'WEFT_ENROLL_', ts: { ...EnrollState } },
  { name: 'weft_event_kind', prefix: 'WEFT_EV_', ts: Object.fromEntries(Object.entries(EventKind).map(([v, n]) => [n, Number(v)])) },
  { name: 'weft_direction', prefix: 'WEFT_DIR_', ts: Object.fromEntries(Object.entries(Direction).map(([v, n]) => [n.toUpperCase(), Number(v)])) },
  { name: 'weft_reason', prefix: 'WEFT_REASON_', ts: Object.fromEntries(Object.entries(Reason).map(([v, n]) => [n, Number(v)])) },
];

test('enum values in BTF match the TypeScript mirrors, both ways', (t) => {
  if (!requireBtf(t)) return;
  const header = readFileSync(join(root, 'bpf', 'include', 'weft.h'), 'utf8');
  const declared = [...header.matchAll(/^enum\s+(weft_\w+)\s*\{/gm)].map((m) => m[1]!).sort();
  assert.deepEqual(declared, ENUMS.map((e) => e.name).sort(), 'an enum of weft.h has no entry in this test');
  for (const e of ENUMS) {
    const defs = definitions('ENUM', e.name);
    assert.ok(defs.length > 0, `enum ${e.name} is in no object's BTF`);
    for (const { object, ty } of defs) {
      const c = Object.fromEntries(ty.values!.map((v) => [v.name.startsWith(e.prefix) ? v.name.slice(e.prefix.length) : v.name, v.val]));
      assert.deepEqual(c, e.ts, `enum ${e.name} in ${rel(object)} against its TypeScript mirror`);
    }
  }
});

test('#define constants of weft.h match agent/config.ts and agent/datapath/layout.ts', () => {
  // #defines are not in BTF: read them from the header the objects were compiled from.
  const header = readFileSync(join(root, 'bpf', 'include', 'weft.h'), 'utf8');
  const defines = new Map<string, number>();
  for (const m of header.matchAll(/^#define\s+(WEFT_\w+)\s+(0x[0-9a-fA-F]+|\d+)\b/gm)) defines.set(m[1]!, Number(m[2]!));
  const familyOf = (ip: string): number => encodeSockAddr({ ip, port: 0 })[StructLayouts.weft_sockaddr!.offsets.family!]!;
  // Each C constant with every TypeScript value that must equal it.
  const mirrors: Record<string, number[]> = {
    WEFT_PROXY_MARK: [Marks.proxy, PROXY_MARK],
    WEFT_OUTBOUND_PORT: [Ports.outbound, OUTBOUND_PORT],
    WEFT_INBOUND_PORT: [Ports.inbound, INBOUND_PORT],
    WEFT_HBONE_PORT: [Ports.hbone, HBONE_PORT],
    WEFT_AF_INET: [familyOf('10.0.0.1')],
    WEFT_AF_INET6: [familyOf('fd00::1')],
    WEFT_UPSTREAM_PASS: [UpstreamBits.PASS],
    WEFT_UPSTREAM_SPLICE: [UpstreamBits.SPLICE],
    WEFT_CFG_SPLICE: [ConfigBits.SPLICE],
    WEFT_EXCLUDE_OUTBOUND: [ExcludeBits.OUTBOUND],
    WEFT_EXCLUDE_INBOUND: [ExcludeBits.INBOUND],
  };
  assert.deepEqual([...defines.keys()].sort(), Object.keys(mirrors).sort(), 'a #define of weft.h has no mirror in this test (or a mirror lost its #define)');
  for (const [name, values] of Object.entries(mirrors))
    for (const v of values) assert.equal(v, defines.get(name), `${name} is ${defines.get(name)} in weft.h, ${v} in TypeScript`);
});
