// The capture datapath of one node: loads weft's capture programs, attaches them (or adopts the ones
// a previous agent left pinned), and gives the rest of the agent typed access to the capture maps.
//
// Pin layout under the agent's bpffs directory:
//   maps/<map name>            every capture map (LIBBPF_PIN_BY_NAME), shared by all objects
//   links/<program>            cgroup links (connect4, connect6, sockops) on the node's cgroup
//   links/netns/<netns cookie> one sk_lookup link per enrolled pod netns
import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { BpfLink, BpfMap, BpfObject, type BpfProgram, type SockmapAttachment } from '../../native/index.js';
import { ErrorCodes, WeftError, errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import { bpfBuildDir } from '../system/assets.js';
import { cgroupId, ensureBpffs } from '../system/mounts.js';
import {
  ConfigBits,
  EnrollState,
  ExcludeBits,
  UpstreamBits,
  decodeSpliceCount,
  encodeConfig,
  encodeSockKey,
  encodeSpliceCtl,
  decodeEnrollment,
  decodeOriginalDst,
  decodePort,
  decodeU64,
  encodeEnrollment,
  encodeIpKey,
  encodePort,
  encodeTupleKey,
  encodeU64,
  type OriginalDst,
  type SockAddr,
  type SockKey,
  type SpliceCount,
  type SpliceCtl,
} from './layout.js';

/** weft_proxy_cgroups' max_entries (bpf/lib/maps.h). */
const PROXY_CGROUPS_MAX = 16;

const CGROUP_PROGRAMS = ['weft_connect4', 'weft_connect6', 'weft_sockops'] as const;

export interface CaptureOptions {
  /** Pin directory of this agent, e.g. /sys/fs/bpf/weft. */
  bpffs: string;
  /** The cgroup whose processes are captured (the node's root cgroup on a real node). */
  cgroup: string;
  excludeOutboundPorts?: number[];
  excludeInboundPorts?: number[];
  /** An upgrade: the previous agent still runs (and drains) beside this one. */
  alongsideRunningAgent?: boolean;
  log: Logger;
}

export interface AttachReport {
  attached: string[];
  adopted: string[];
}

export class CaptureDatapath {
  private readonly objects: BpfObject[] = [];
  private readonly cgroupLinks = new Map<string, BpfLink>();
  private readonly netnsLinks = new Map<bigint, BpfLink>();
  private skLookup!: BpfProgram;
  readonly enrolled: BpfMap;
  readonly dstTuple: BpfMap;
  private readonly dstCookie: BpfMap;
  readonly listeners: BpfMap;
  readonly excludedPorts: BpfMap;
  readonly upstreams: BpfMap;
  private readonly proxyCgroups: BpfMap;
  readonly events: BpfMap;
  readonly eventsLost: BpfMap;
  private spliceVerdict: SockmapAttachment | undefined;
  private readonly splice: { socks: BpfMap; ctl: BpfMap; count: BpfMap; dsts: BpfMap; config: BpfMap };
  readonly report: AttachReport = { attached: [], adopted: [] };
  private closed = false;

  private constructor(private readonly options: CaptureOptions) {
    ensureBpffs();
    for (const dir of [this.mapsDir, this.linksDir, this.netnsLinksDir]) mkdirSync(dir, { recursive: true });
    const build = bpfBuildDir();
    const programs = new Map<string, BpfProgram>();
    try {
      for (const file of ['cgroup_connect.bpf.o', 'sockops.bpf.o', 'sk_lookup.bpf.o', 'splice.bpf.o']) {
        const obj = BpfObject.open(join(build, file), { pinRoot: this.mapsDir });
        this.objects.push(obj);
        obj.load();
        for (const name of obj.programNames) programs.set(name, obj.program(name));
      }
    } catch (err) {
      this.closeObjects();
      throw err;
    }
    const first = this.objects[0]!;
    this.enrolled = first.map('weft_enrolled');
    this.dstTuple = first.map('weft_dst_tuple');
    this.dstCookie = first.map('weft_dst_cookie');
    this.listeners = first.map('weft_listeners');
    this.excludedPorts = first.map('weft_excl_ports');
    this.upstreams = first.map('weft_upstreams');
    this.proxyCgroups = first.map('weft_proxy_cgroups');
    this.events = first.map('weft_events');
    this.eventsLost = first.map('weft_ev_lost');
    this.splice = {
      socks: first.map('weft_splice_socks'),
      ctl: first.map('weft_splice_ctl'),
      count: first.map('weft_splice_count'),
      dsts: first.map('weft_splice_dsts'),
      config: first.map('weft_config'),
    };
    const sk = programs.get('weft_sk_lookup');
    if (!sk) throw new WeftError(ErrorCodes.BPF, 'sk_lookup.bpf.o has no weft_sk_lookup program');
    this.skLookup = sk;
    for (const name of CGROUP_PROGRAMS) {
      const prog = programs.get(name);
      if (!prog) throw new WeftError(ErrorCodes.BPF, `capture program ${name} missing from the BPF objects`);
      this.attachCgroupProgram(name, prog);
    }
    this.setExcludedPorts(options.excludeOutboundPorts ?? [], options.excludeInboundPorts ?? []);
    const msg = programs.get('weft_splice_msg');
    if (!msg) throw new WeftError(ErrorCodes.BPF, 'splice.bpf.o has no weft_splice_msg program');
    // The verdict program is attached to the sockhash while this agent runs: the sockets it joins
    // are this agent's anyway, and without it every message simply goes to the proxy.
    this.spliceVerdict = msg.attachSockmap(this.splice.socks);
    // No connection of an earlier agent survives it (its proxy sockets died with it): start clean.
    // Not on an upgrade: the old agent still relays (and splices) its connections while it drains.
    if (!options.alongsideRunningAgent) for (const m of [this.splice.ctl, this.splice.count]) for (const k of m.keys()) m.delete(k);
    this.setSplice(false);
  }

  /** Load the programs and attach them, adopting whatever a previous agent left pinned. */
  static open(options: CaptureOptions): CaptureDatapath {
    return new CaptureDatapath(options);
  }

  get mapsDir(): string {
    return join(this.options.bpffs, 'maps');
  }
  get linksDir(): string {
    return join(this.options.bpffs, 'links');
  }
  get netnsLinksDir(): string {
    return join(this.options.bpffs, 'links', 'netns');
  }

  /**
   * A pinned link from an earlier agent is adopted: its program is replaced atomically by the one we
   * just loaded, so there is never a moment without capture and never two attachments.
   */
  private attachCgroupProgram(name: string, prog: BpfProgram): void {
    const pin = join(this.linksDir, name);
    const wantCgroup = cgroupId(this.options.cgroup);
    if (existsSync(pin)) {
      let link: BpfLink | undefined;
      try {
        link = BpfLink.open(pin);
        if (link.info().cgroupId === wantCgroup) {
          link.updateProgram(prog);
          this.cgroupLinks.set(name, link);
          this.report.adopted.push(name);
          return;
        }
        this.options.log.warn({ program: name, pin }, 'pinned link is on another cgroup; replacing it');
        link.detach();
      } catch (err) {
        this.options.log.warn({ program: name, pin, err: errorMessage(err) }, 'pinned link unusable; replacing it');
      }
      link?.close();
      rmSync(pin, { force: true });
    }
    const link = prog.attachCgroup(this.options.cgroup);
    link.pin(pin);
    this.cgroupLinks.set(name, link);
    this.report.attached.push(name);
  }

  setExcludedPorts(outbound: number[], inbound: number[]): void {
    const want = new Map<number, number>();
    for (const p of outbound) want.set(p, (want.get(p) ?? 0) | ExcludeBits.OUTBOUND);
    for (const p of inbound) want.set(p, (want.get(p) ?? 0) | ExcludeBits.INBOUND);
    for (const key of this.excludedPorts.keys()) {
      if (!want.has(decodePort(key))) this.excludedPorts.delete(key);
    }
    for (const [port, bits] of want) this.excludedPorts.update(encodePort(port), Buffer.from([bits]));
  }

  // --- enrollment ---------------------------------------------------------------------------------

  setEnrollment(netnsCookie: bigint, state: EnrollState): void {
    this.enrolled.update(encodeU64(netnsCookie), encodeEnrollment(state));
  }
  removeEnrollment(netnsCookie: bigint): boolean {
    return this.enrolled.delete(encodeU64(netnsCookie));
  }
  enrolledCookies(): Map<bigint, number> {
    return new Map(this.enrolled.entries().map(([k, v]) => [decodeU64(k), decodeEnrollment(v)]));
  }

  /** Attach inbound capture to a pod's netns, adopting the pinned link of an earlier agent. */
  attachNetns(netnsCookie: bigint, netnsPath: string): 'attached' | 'adopted' {
    if (this.netnsLinks.has(netnsCookie)) return 'adopted';
    const pin = join(this.netnsLinksDir, netnsCookie.toString());
    if (existsSync(pin)) {
      try {
        const link = BpfLink.open(pin);
        link.updateProgram(this.skLookup);
        this.netnsLinks.set(netnsCookie, link);
        return 'adopted';
      } catch (err) {
        this.options.log.warn({ pin, err: errorMessage(err) }, 'pinned sk_lookup link unusable; replacing it');
        rmSync(pin, { force: true });
      }
    }
    const link = this.skLookup.attachNetns(netnsPath);
    link.pin(pin);
    this.netnsLinks.set(netnsCookie, link);
    return 'attached';
  }

  detachNetns(netnsCookie: bigint): void {
    const pin = join(this.netnsLinksDir, netnsCookie.toString());
    let link = this.netnsLinks.get(netnsCookie);
    this.netnsLinks.delete(netnsCookie);
    if (!link && existsSync(pin)) link = BpfLink.open(pin);
    if (link) {
      link.detach();
      link.close();
    }
    rmSync(pin, { force: true });
  }

  /** Netns cookies that have a pinned sk_lookup link (from this agent or an earlier one). */
  pinnedNetnsCookies(): bigint[] {
    return readdirSync(this.netnsLinksDir).filter((n) => /^\d+$/.test(n)).map((n) => BigInt(n));
  }

  registerInboundListener(podIp: string, listenerFd: number): void {
    this.listeners.updateSocket(encodeIpKey(podIp), listenerFd);
  }
  unregisterInboundListener(podIp: string): void {
    this.listeners.delete(encodeIpKey(podIp));
  }

  /**
   * The proxy is about to connect to an app (`conn.local`, a pod IP: it names the pod's netns) from
   * `conn.remote`, the client's address taken transparently: let exactly that connection through
   * inbound capture. sockops removes the entry once the app accepted; the returned function removes
   * it too (idempotent), for a connect that failed.
   */
  allowUpstream(conn: Omit<SockKey, 'netnsCookie'>, opts: { splice?: boolean } = {}): () => void {
    const key = encodeSockKey({ ...conn, netnsCookie: 0n });
    this.upstreams.update(key, Buffer.from([UpstreamBits.PASS | (opts.splice ? UpstreamBits.SPLICE : 0)]));
    return () => void this.upstreams.delete(key);
  }

  /** Entries of the per-connection maps, which must drain when connections end (gauges, leak tests). */
  connectionMapEntries(): { originalDstByCookie: number; originalDstByTuple: number; upstreams: number } {
    return { originalDstByCookie: this.dstCookie.keys().length, originalDstByTuple: this.dstTuple.keys().length, upstreams: this.upstreams.keys().length };
  }

  /**
   * Sockets created by tasks in this cgroup are the proxy's own and never captured. Ids of agents
   * that are gone stay harmless (a cgroup id is never reused); past the map's size, others go.
   */
  registerProxyCgroup(id: bigint): void {
    const key = encodeU64(id);
    if (this.proxyCgroups.lookup(key)) return;
    const others = this.proxyCgroups.keys();
    if (others.length >= PROXY_CGROUPS_MAX) for (const k of others.slice(0, others.length - PROXY_CGROUPS_MAX + 1)) this.proxyCgroups.delete(k);
    this.proxyCgroups.update(key, Buffer.from([1]));
  }

  // --- same-node splice (bpf/splice.bpf.c) --------------------------------------------------------

  /** Whether sockops makes new connections spliceable at all. */
  setSplice(enabled: boolean): void {
    this.splice.config.update(Buffer.alloc(4), encodeConfig(enabled ? ConfigBits.SPLICE : 0));
  }

  /** The destinations that may be on this node: connections to them become spliceable. */
  setSpliceDestinations(ips: Iterable<string>): void {
    const want = new Map([...ips].map((ip) => [encodeIpKey(ip).toString('hex'), ip]));
    for (const key of this.splice.dsts.keys()) if (!want.delete(key.toString('hex'))) this.splice.dsts.delete(key);
    for (const ip of want.values()) this.splice.dsts.update(encodeIpKey(ip), Buffer.from([1]));
  }

  /** Put one of the proxy's own sockets in the sockhash so app bytes can be redirected into it. */
  addSpliceTarget(key: SockKey, fd: number): void {
    this.splice.socks.updateSocket(encodeSockKey(key), fd);
  }

  /** Arm (or re-arm with a new `forwarded`) the splice of one app socket. */
  armSplice(app: SockKey, ctl: SpliceCtl): void {
    this.splice.ctl.update(encodeSockKey(app), encodeSpliceCtl(ctl));
  }

  /** What the kernel counted for an app socket; undefined if it was never spliceable. */
  spliceCount(app: SockKey): SpliceCount | undefined {
    const v = this.splice.count.lookup(encodeSockKey(app));
    return v ? decodeSpliceCount(v) : undefined;
  }

  /** The connection is over: forget the app socket's control and count. */
  endSplice(app: SockKey): void {
    const key = encodeSockKey(app);
    this.splice.ctl.delete(key);
    this.splice.count.delete(key);
  }

  /** The original destination of a connection the outbound listener of netns `netnsCookie` accepted. */
  originalDst(netnsCookie: bigint, peer: SockAddr): OriginalDst | undefined {
    const value = this.dstTuple.lookup(encodeTupleKey(netnsCookie, peer));
    return value ? decodeOriginalDst(value) : undefined;
  }

  /** Events lost because the ring was full, summed over CPUs. */
  lostEvents(): bigint {
    const value = this.eventsLost.lookup(Buffer.alloc(4));
    if (!value) return 0n;
    let total = 0n;
    for (let off = 0; off + 8 <= value.length; off += 8) total += decodeU64(value, off);
    return total;
  }

  /** Release our handles; pinned links and maps stay, so capture goes on while the agent restarts. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.spliceVerdict?.detach();
    this.spliceVerdict = undefined;
    for (const link of [...this.cgroupLinks.values(), ...this.netnsLinks.values()]) link.close();
    this.cgroupLinks.clear();
    this.netnsLinks.clear();
    this.closeObjects();
  }

  private closeObjects(): void {
    for (const obj of this.objects.splice(0)) obj.close();
  }
}

/**
 * Remove everything an agent pinned under `bpffs`: links are detached (even if something else still
 * holds them), then every pin goes. Used by `weft uninstall` and the lab's teardown.
 */
export function uninstallCapture(bpffs: string, log?: Logger): { detached: number } {
  let detached = 0;
  const walk = (dir: string): void => {
    if (!existsSync(dir)) return;
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else {
        try {
          const link = BpfLink.open(path);
          link.detach();
          link.close();
          detached++;
        } catch (err) {
          log?.warn({ pin: path, err: errorMessage(err) }, 'could not detach pinned link');
        }
      }
    }
  };
  walk(join(bpffs, 'links'));
  rmSync(bpffs, { recursive: true, force: true });
  return { detached };
}
