// SPDX-License-Identifier: Apache-2.0
// The one module that loads weft_native.node. It hands the addon weft's error classes (native/errors.ts,
// so native failures are real SyscallError/WeftError instances) and re-exports the contract of native/API.md.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { NativeErrorCodes as ErrorCodes, SyscallError, WeftError } from './errors.js';
import type {
  Binding,
  RawBpfLink,
  RawBpfMap,
  RawBpfObject,
  RawBpfProgram,
  RawConnectOptions,
  RawFdMessage,
  RawLinkInfo,
  RawListenOptions,
  RawOpenOptions,
  RawReceiveFdsOptions,
  RawRoutingRule,
  RawRoutingRuleState,
  RawRingBufferConsumer,
  RawSendFdsOptions,
  RawSocketOptions,
  RawSockmapAttachment,
  RawTcAttachment,
  RawTransparentRoutingOptions,
} from './binding.js';

const ADDON = join('native', 'build', 'Release', 'weft_native.node');

/** Finds the addon from either dist/native/index.js or native/index.ts (walks up to the repo root). */
function addonPath(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  const tried: string[] = [];
  for (let i = 0; i < 4; i++) {
    const candidate = join(dir, ADDON);
    tried.push(candidate);
    if (existsSync(candidate)) return candidate;
    const parent = dirname(dir);
    if (parent === dir) break;
    dir = parent;
  }
  throw new WeftError(
    ErrorCodes.SETUP,
    `native addon not built (looked for ${tried.join(', ')}); run: npm run build:native`,
  );
}

const binding = createRequire(import.meta.url)(addonPath()) as Binding;
binding.setErrorClasses({ SyscallError, WeftError });

export type OpenOptions = RawOpenOptions;
export type ListenOptions = RawListenOptions;
export { NativeErrorCodes, SyscallError, WeftError, type NativeErrorCode } from './errors.js';
export type ConnectOptions = RawConnectOptions;
export type SocketOptions = RawSocketOptions;
export type LinkInfo = RawLinkInfo;
export type FdMessage = RawFdMessage;
export type ReceiveFdsOptions = RawReceiveFdsOptions;
export type SendFdsOptions = RawSendFdsOptions;
export type RoutingRule = RawRoutingRule;
export type RoutingRuleState = RawRoutingRuleState;
export type TransparentRoutingOptions = RawTransparentRoutingOptions;

export const BpfObject = binding.BpfObject;
export type BpfObject = RawBpfObject;
export const BpfProgram = binding.BpfProgram;
export type BpfProgram = RawBpfProgram;
export const BpfLink = binding.BpfLink;
export type BpfLink = RawBpfLink;
export const TcAttachment = binding.TcAttachment;
export type TcAttachment = RawTcAttachment;
export const SockmapAttachment = binding.SockmapAttachment;
export type SockmapAttachment = RawSockmapAttachment;
export const BpfMap = binding.BpfMap;
export type BpfMap = RawBpfMap;

export interface RingBufferOptions {
  /** Hand a batch to JS once this many records accumulated (default 4096). */
  maxBatch?: number;
  /** Upper bound of one wait of the consumer thread, in ms (default 100). */
  pollMs?: number;
}

/**
 * Drains a BPF ring buffer on a native thread and delivers records in batches. Each record is a
 * Buffer view into the batch's single allocation (copy it if you keep it for long).
 */
export class RingBufferConsumer {
  readonly #raw: RawRingBufferConsumer;

  constructor(map: BpfMap, onBatch: (records: Buffer[]) => void, options: RingBufferOptions = {}) {
    // Checked here: the native side only ever sees `split`, so a non-function would surface as a
    // TypeError thrown from the consumer's callback, an uncaught exception that ends the process.
    if (typeof onBatch !== 'function') throw new WeftError(ErrorCodes.NATIVE_USAGE, 'onBatch must be a function');
    if (typeof options !== 'object' || options === null) throw new WeftError(ErrorCodes.NATIVE_USAGE, 'options must be an object');
    const split = (data: Buffer, offsets: Uint32Array): void => {
      const n = offsets.length - 1;
      const records = new Array<Buffer>(n);
      for (let i = 0; i < n; i++) records[i] = data.subarray(offsets[i], offsets[i + 1]);
      onBatch(records);
    };
    this.#raw = new binding.RingBufferConsumer(map, split, options.maxBatch ?? 4096, options.pollMs ?? 100);
  }

  /** Records handed to JS so far. */
  get delivered(): bigint {
    return this.#raw.delivered;
  }

  /** Records read from the ring but dropped because the consumer was closing or the env tearing down. */
  get dropped(): bigint {
    return this.#raw.dropped;
  }

  /** Stops and joins the thread; idempotent. Batches already queued are still delivered. */
  close(): void {
    this.#raw.close();
  }
}

export function netnsCookie(netnsPath: string): bigint {
  return binding.netnsCookie(netnsPath);
}
export function currentNetnsCookie(): bigint {
  return binding.currentNetnsCookie();
}
export function listenInNetns(netnsPath: string, options: ListenOptions): number {
  return binding.listenInNetns(netnsPath, options);
}
export function connectInNetns(netnsPath: string, options: ConnectOptions): Promise<number> {
  return binding.connectInNetns(netnsPath, options);
}
export function socketCookie(fd: number): bigint {
  return binding.socketCookie(fd);
}
export function socketsInNetns(netnsPath: string, options: SocketOptions): number[] {
  return binding.socketsInNetns(netnsPath, options);
}
export function tcpQueuedBytes(fd: number): bigint {
  return binding.tcpQueuedBytes(fd);
}
/**
 * Agent handover, receiving side: binds a SOCK_SEQPACKET unix socket at `path` (0600; a stale socket
 * there is replaced), accepts one root peer within timeoutMs, reads its messages until it is done
 * and resolves with them in order. The received fds are CLOEXEC and owned by the caller.
 */
export function receiveFds(path: string, options: ReceiveFdsOptions): Promise<FdMessage[]> {
  return binding.receiveFds(path, options);
}
/**
 * Agent handover, sending side: connects to a receiveFds socket (retrying until timeoutMs), sends
 * each message with its fds (SCM_RIGHTS) and resolves once the receiver acknowledged all of them.
 * The fds are duplicated at call time; the caller's own fds stay open and are the caller's to close.
 */
export function sendFds(path: string, messages: readonly FdMessage[], options: SendFdsOptions): Promise<void> {
  return binding.sendFds(path, messages, options);
}
/**
 * Policy routing for transparent sockets inside a netns, over rtnetlink on a libuv pool thread that
 * enters it: route `local 0.0.0.0/0 dev lo table <table>` (replaced), each rule `pref <priority>
 * fwmark <fwmark> lookup <table>` unless a rule with that priority exists, and the netns's sysctls
 * net.ipv4.conf.all.accept_local = 1 and net.ipv4.tcp_fwmark_accept = 1. Idempotent. Argument errors
 * throw a TypeError (code WEFT_ERR_NATIVE_USAGE); everything else rejects with SyscallError.
 */
export function setupTransparentRouting(netnsPath: string, options: TransparentRoutingOptions): Promise<void> {
  return binding.setupTransparentRouting(netnsPath, options);
}
/**
 * Undoes setupTransparentRouting: deletes every rule with one of the priorities, flushes the table
 * (IPv4), sets both sysctls back to 0. Idempotent (missing pieces are no error); every step is tried,
 * the first failure rejects.
 */
export function clearTransparentRouting(netnsPath: string, options: TransparentRoutingOptions): Promise<void> {
  return binding.clearTransparentRouting(netnsPath, options);
}
/** The IPv4 rules of the netns whose priority is one of options.rules' priorities, in kernel order. */
export function listRoutingRules(netnsPath: string, options: TransparentRoutingOptions): Promise<RoutingRuleState[]> {
  return binding.listRoutingRules(netnsPath, options);
}
/** glibc malloc_trim(0): free C-heap pages go back to the kernel. */
export function mallocTrim(): boolean {
  return binding.mallocTrim();
}
export function libbpfVersion(): string {
  return binding.libbpfVersion();
}
