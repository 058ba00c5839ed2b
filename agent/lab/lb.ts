// The lab's kube-proxy: loads bpf/lab_service_lb.bpf.c onto the lab's cgroup root and keeps its
// service map (VIP:port → backends) in sync. The link and the map are pinned, so the load balancer
// outlives `weft lab up` and every later command reaches the map through its pin.
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { BpfMap, BpfObject } from '../../native/index.js';
import { array, encode, ipv4, pad, struct, u16, u32, type StructLayout } from '../../native/codec.js';
import { ErrorCodes, WeftError } from '../errors.js';
import type { Logger } from '../log.js';
import { parseIPv4 } from '../net/address.js';
import { bpfBuildPath } from '../system/assets.js';

export const LB_PROGRAM = 'weft_lab_connect4';
export const LB_MAP = 'weft_lab_svc';
export const MAX_BACKENDS = 32;
const KEY_SIZE = 8;
const BACKEND_SIZE = 8;
const VALUE_SIZE = 8 + MAX_BACKENDS * BACKEND_SIZE;

/** The compiled load balancer; throws (with how to build it) when it is missing. */
export function lbObjectPath(): string {
  const path = process.env.WEFT_LAB_LB_OBJECT ?? join(bpfBuildPath(), 'lab_service_lb.bpf.o');
  if (!existsSync(path)) throw new WeftError(ErrorCodes.BPF, `${path} is missing: build the BPF programs with "make -C bpf"`);
  return path;
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
/** Those structs by their C names: test/datapath-btf-layout.test.ts holds them against the object's BTF. */
export const LbStructLayouts: Readonly<Record<string, StructLayout>> = {
  weft_lab_svc_key: SvcKey,
  weft_lab_backend: BackendC,
  weft_lab_svc_value: SvcValue,
};

export function encodeKey(vip: string, port: number): Buffer {
  if (parseIPv4(vip) === undefined) throw new WeftError(ErrorCodes.LAB, `not an IPv4 address: ${vip}`);
  return encode(SvcKey, { vip, port });
}

export function encodeValue(backends: readonly Backend[]): Buffer {
  const list = backends.slice(0, MAX_BACKENDS).map((b) => ({ ip: b.ip, port: b.port }));
  const padded = [...list, ...Array.from({ length: MAX_BACKENDS - list.length }, () => NO_BACKEND)];
  return encode(SvcValue, { count: list.length, backends: padded });
}

export interface LbPins {
  linkPin: string;
  mapPin: string;
}

/**
 * Loads the program, attaches it to `cgroup` and pins link and map under `pinDir`, in the agents'
 * layout (links/, maps/) so that the lab's teardown detaches every link of the lab the same way.
 */
export function loadLb(cgroup: string, pinDir: string, log: Logger): LbPins {
  const linkPin = join(pinDir, 'links', LB_PROGRAM);
  const mapPin = join(pinDir, 'maps', LB_MAP);
  for (const pin of [linkPin, mapPin]) mkdirSync(dirname(pin), { recursive: true });
  const obj = BpfObject.open(lbObjectPath());
  try {
    obj.load();
    const link = obj.program(LB_PROGRAM).attachCgroup(cgroup);
    try {
      link.pin(linkPin);
    } finally {
      link.close();
    }
    obj.map(LB_MAP).pin(mapPin);
  } finally {
    obj.close();
  }
  log.info({ cgroup, linkPin, mapPin }, 'service load balancer attached');
  return { linkPin, mapPin };
}

/**
 * Makes the pinned map hold exactly `entries`: updates every desired key, deletes `previousKeys`
 * (hex-encoded keys written earlier) that are no longer desired. Returns the hex keys now present.
 */
export function syncLbMap(pins: LbPins, entries: readonly LbEntry[], previousKeys: readonly string[]): string[] {
  const desired = new Map<string, Buffer>();
  for (const e of entries) {
    if (e.backends.length === 0) continue;
    desired.set(encodeKey(e.vip, e.port).toString('hex'), encodeValue(e.backends));
  }
  const map = BpfMap.open(pins.mapPin);
  try {
    for (const [k, v] of desired) map.update(Buffer.from(k, 'hex'), v, 'any');
    for (const k of previousKeys) if (!desired.has(k)) map.delete(Buffer.from(k, 'hex'));
  } finally {
    map.close();
  }
  return [...desired.keys()];
}
