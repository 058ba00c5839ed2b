// The lab's kube-proxy: loads bpf/lab_service_lb.bpf.c onto the lab's cgroup root and keeps its
// service map (VIP:port → backends) in sync. Loaded through the native addon (pinned link + pinned map,
// so it outlives `weft lab up`); if the addon is not built, falls back to bpftool (pinned program,
// cgroup prog-attach) so the lab still works — the map layout is the same either way.
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ErrorCodes, WeftError, errorMessage } from '../errors.js';
import { parseIPv4 } from '../registry/cidr.js';
import type { Logger } from '../log.js';
import { run } from './sys.js';
import { array, encode, ipv4, pad, struct, u16, u32 } from '../../native/codec.js';

export const LB_PROGRAM = 'weft_lab_connect4';
export const LB_MAP = 'weft_lab_svc';
export const MAX_BACKENDS = 32;
const KEY_SIZE = 8;
const BACKEND_SIZE = 8;
const VALUE_SIZE = 8 + MAX_BACKENDS * BACKEND_SIZE;

/** Repository root, from dist/agent/lab/lb.js (or agent/lab/lb.ts). */
export const REPO_ROOT = fileURLToPath(new URL(import.meta.url.includes('/dist/') ? '../../../' : '../../', import.meta.url));

export function lbObjectPath(): string {
  return process.env.WEFT_LAB_LB_OBJECT ?? join(REPO_ROOT, 'bpf', 'build', 'lab_service_lb.bpf.o');
}

export interface Backend {
  ip: string;
  port: number;
}

export interface LbEntry {
  vip: string;
  port: number;
  backends: Backend[];
}

// The C structs of bpf/lab_service_lb.bpf.c, with the native addon's typed codecs (sizes asserted).
const SvcKey = struct({ vip: ipv4, port: u16, pad: pad(2) }, { size: KEY_SIZE });
const BackendC = struct({ ip: ipv4, port: u16, pad: pad(2) }, { size: BACKEND_SIZE });
const SvcValue = struct({ count: u32, pad: pad(4), backends: array(BackendC, MAX_BACKENDS) }, { size: VALUE_SIZE });
const NO_BACKEND = { ip: '0.0.0.0', port: 0 };

export function encodeKey(vip: string, port: number): Buffer {
  if (parseIPv4(vip) === undefined) throw new WeftError(ErrorCodes.LAB, `not an IPv4 address: ${vip}`);
  return encode(SvcKey, { vip, port });
}

export function encodeValue(backends: readonly Backend[]): Buffer {
  const list = backends.slice(0, MAX_BACKENDS).map((b) => ({ ip: b.ip, port: b.port }));
  const padded = [...list, ...Array.from({ length: MAX_BACKENDS - list.length }, () => NO_BACKEND)];
  return encode(SvcValue, { count: list.length, backends: padded });
}

// The subset of native/index.ts (see native/API.md) the lab uses; imported lazily so the lab works
// (through bpftool) on a machine where the addon is not built.
interface NativeMap {
  update(key: Buffer, value: Buffer, flags?: 'any' | 'noexist' | 'exist'): void;
  delete(key: Buffer): boolean;
  pin(path: string): void;
  close(): void;
}
interface NativeLink {
  pin(path: string): void;
  close(): void;
}
interface NativeProgram {
  attachCgroup(cgroupPath: string): NativeLink;
}
interface NativeObject {
  load(): void;
  program(name: string): NativeProgram;
  map(name: string): NativeMap;
  close(): void;
}
interface NativeModule {
  BpfObject: { open(path: string, options?: { pinRoot?: string }): NativeObject };
  BpfMap: { open(pinPath: string): NativeMap };
}

let nativeCache: Promise<NativeModule | undefined> | undefined;
let nativeError = '';

/** The native addon, or undefined (with the reason in `nativeUnavailableReason()`). */
export function loadNative(): Promise<NativeModule | undefined> {
  if (process.env.WEFT_LAB_LB === 'bpftool') {
    nativeError = 'WEFT_LAB_LB=bpftool';
    return Promise.resolve(undefined);
  }
  nativeCache ??= (async () => {
    const url = new URL('../../native/index.js', import.meta.url).href;
    try {
      const mod = (await import(url)) as Partial<NativeModule>;
      if (!mod.BpfObject || !mod.BpfMap) throw new Error('native/index.js does not export BpfObject and BpfMap');
      return mod as NativeModule;
    } catch (err) {
      nativeError = errorMessage(err);
      if (process.env.WEFT_LAB_LB === 'native') throw new WeftError(ErrorCodes.BPF, `native addon unavailable: ${nativeError}`, { cause: err });
      return undefined;
    }
  })();
  return nativeCache;
}

export function nativeUnavailableReason(): string {
  return nativeError;
}

export interface LbPins {
  mode: 'native' | 'bpftool';
  mapPin: string;
  linkPin?: string;
  progPin?: string;
}

/**
 * Loads the program, attaches it to `cgroup` and pins it under `pinDir`. `beforeCreate(path)` is
 * called with every pin path before it is created (the lab journals it).
 */
export async function loadLb(cgroup: string, pinDir: string, log: Logger, beforeCreate: (pinPath: string) => void): Promise<LbPins> {
  const obj = lbObjectPath();
  if (!existsSync(obj)) throw new WeftError(ErrorCodes.BPF, `${obj} is missing: build the BPF programs with "make -C bpf"`);
  mkdirSync(pinDir, { recursive: true });
  const native = await loadNative();
  if (native) {
    const linkPin = join(pinDir, 'connect4_link');
    const mapPin = join(pinDir, LB_MAP);
    const o = native.BpfObject.open(obj);
    try {
      o.load();
      beforeCreate(linkPin);
      const link = o.program(LB_PROGRAM).attachCgroup(cgroup);
      try {
        link.pin(linkPin);
      } finally {
        link.close();
      }
      beforeCreate(mapPin);
      o.map(LB_MAP).pin(mapPin);
    } finally {
      o.close();
    }
    log.info({ mode: 'native', cgroup, linkPin, mapPin }, 'service load balancer attached');
    return { mode: 'native', mapPin, linkPin };
  }
  log.warn({ reason: nativeUnavailableReason() }, 'native addon unavailable; loading the service load balancer with bpftool');
  const progPin = join(pinDir, 'connect4_prog');
  const mapDir = join(pinDir, 'maps');
  const mapPin = join(mapDir, LB_MAP);
  beforeCreate(progPin);
  beforeCreate(mapDir);
  await run('bpftool', ['prog', 'load', obj, progPin, 'type', 'cgroup/connect4', 'pinmaps', mapDir]);
  await run('bpftool', ['cgroup', 'attach', cgroup, 'connect4', 'pinned', progPin, 'multi']);
  log.info({ mode: 'bpftool', cgroup, progPin, mapPin }, 'service load balancer attached');
  return { mode: 'bpftool', mapPin, progPin };
}

function hexArgs(b: Buffer): string[] {
  return [...b].map((x) => x.toString(16).padStart(2, '0'));
}

/**
 * Makes the pinned map hold exactly `entries`: updates every desired key, deletes `staleKeys`
 * (hex-encoded keys written earlier that are no longer desired). Returns the hex keys now present.
 */
export async function syncLbMap(pins: LbPins, entries: readonly LbEntry[], previousKeys: readonly string[]): Promise<string[]> {
  const desired = new Map<string, Buffer>();
  for (const e of entries) {
    if (e.backends.length === 0) continue;
    desired.set(encodeKey(e.vip, e.port).toString('hex'), encodeValue(e.backends));
  }
  const stale = previousKeys.filter((k) => !desired.has(k));
  const native = pins.mode === 'native' ? await loadNative() : undefined;
  if (pins.mode === 'native') {
    if (!native) throw new WeftError(ErrorCodes.BPF, `the lab's load balancer was loaded by the native addon, which is unavailable now: ${nativeUnavailableReason()}`);
    const map = native.BpfMap.open(pins.mapPin);
    try {
      for (const [k, v] of desired) map.update(Buffer.from(k, 'hex'), v, 'any');
      for (const k of stale) map.delete(Buffer.from(k, 'hex'));
    } finally {
      map.close();
    }
  } else {
    for (const [k, v] of desired) {
      await run('bpftool', ['map', 'update', 'pinned', pins.mapPin, 'key', 'hex', ...hexArgs(Buffer.from(k, 'hex')), 'value', 'hex', ...hexArgs(v), 'any']);
    }
    for (const k of stale) {
      await run('bpftool', ['map', 'delete', 'pinned', pins.mapPin, 'key', 'hex', ...hexArgs(Buffer.from(k, 'hex'))], { allowFail: true });
    }
  }
  return [...desired.keys()];
}
