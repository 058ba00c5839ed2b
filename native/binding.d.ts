// SPDX-License-Identifier: Apache-2.0
// The raw shape of weft_native.node. Internal: only native/index.ts loads and uses it; everything
// else imports native/index.ts.

export interface RawOpenOptions {
  pinRoot?: string;
}

export declare class RawBpfObject {
  private constructor();
  static open(path: string, options?: RawOpenOptions): RawBpfObject;
  setGlobal(name: string, value: Buffer): void;
  setMaxEntries(map: string, maxEntries: number): void;
  load(): void;
  readonly programNames: string[];
  readonly mapNames: string[];
  program(name: string): RawBpfProgram;
  map(name: string): RawBpfMap;
  close(): void;
}

export declare class RawBpfProgram {
  private constructor();
  readonly name: string;
  readonly fd: number;
  readonly sectionName: string;
  attachCgroup(cgroupPath: string): RawBpfLink;
  attachNetns(netnsPath: string): RawBpfLink;
  attachTc(ifindex: number, direction: 'ingress' | 'egress', netnsPath?: string): RawTcAttachment;
  attachSockmap(map: RawBpfMap): RawSockmapAttachment;
  pin(path: string): void;
  unpin(path: string): void;
  testRun(options: { data?: Buffer; repeat?: number }): { retval: number; durationNs: number };
}

export interface RawLinkInfo {
  id: number;
  progId: number;
  type: string;
  cgroupId?: bigint;
  netnsIno?: number;
  attachType?: number;
}

export declare class RawBpfLink {
  private constructor();
  static open(pinPath: string): RawBpfLink;
  readonly fd: number;
  info(): RawLinkInfo;
  pin(path: string): void;
  unpin(): void;
  updateProgram(program: RawBpfProgram): void;
  detach(): void;
  close(): void;
}

export declare class RawTcAttachment {
  private constructor();
  detach(): void;
  close(): void;
}

export declare class RawSockmapAttachment {
  private constructor();
  detach(): void;
  close(): void;
}

export declare class RawBpfMap {
  private constructor();
  static open(pinPath: string): RawBpfMap;
  readonly name: string;
  readonly type: string;
  readonly keySize: number;
  readonly valueSize: number;
  readonly maxEntries: number;
  readonly fd: number;
  lookup(key: Buffer): Buffer | undefined;
  update(key: Buffer, value: Buffer, flags?: 'any' | 'noexist' | 'exist'): void;
  updateSocket(key: Buffer, socketFd: number): void;
  delete(key: Buffer): boolean;
  keys(): Buffer[];
  entries(): Array<[Buffer, Buffer]>;
  pin(path: string): void;
  unpin(path: string): void;
  close(): void;
}

/** Native consumer: batches arrive as one Buffer plus record offsets (length n+1). */
export declare class RawRingBufferConsumer {
  constructor(map: RawBpfMap, onBatch: (data: Buffer, offsets: Uint32Array) => void, maxBatch?: number, pollMs?: number);
  readonly delivered: bigint;
  readonly dropped: bigint;
  close(): void;
}

export interface RawListenOptions {
  host: string;
  port: number;
  backlog?: number;
  mark?: number;
  reuseAddr?: boolean;
  freebind?: boolean;
  transparent?: boolean;
  ipv6Only?: boolean;
}

export interface RawConnectOptions {
  host: string;
  port: number;
  mark?: number;
  localAddress?: string;
  localPort?: number;
  transparent?: boolean;
  freebind?: boolean;
  timeoutMs?: number;
}

export interface RawSocketOptions {
  family: 'ipv4' | 'ipv6';
  count: number;
  mark?: number;
  transparent?: boolean;
  freebind?: boolean;
}

/** One handover message: 1..64 KiB of data (sending; receiving may see 0 with fds) and 0..250 fds. */
export interface RawFdMessage {
  data: Buffer;
  fds: number[];
}

export interface RawReceiveFdsOptions {
  timeoutMs: number;
  maxMessages?: number;
}

export interface RawSendFdsOptions {
  timeoutMs: number;
}

/** One policy-routing rule: `pref <priority> fwmark <fwmark> lookup <table>` (IPv4). */
export interface RawRoutingRule {
  priority: number;
  fwmark: number;
  table: number;
}

/** What setupTransparentRouting adds, and clear/list look at: the local route's table and the rules. */
export interface RawTransparentRoutingOptions {
  table: number;
  rules: readonly RawRoutingRule[];
}

/** A rule as the netns has it (a foreign rule with one of the priorities may lack a mark or a table). */
export interface RawRoutingRuleState {
  priority: number;
  fwmark?: number;
  fwmask?: number;
  table?: number;
}

export interface Binding {
  setErrorClasses(classes: { SyscallError: Function; WeftError: Function }): void;
  libbpfVersion(): string;
  mallocTrim(): boolean;
  BpfObject: typeof RawBpfObject;
  BpfProgram: typeof RawBpfProgram;
  BpfLink: typeof RawBpfLink;
  TcAttachment: typeof RawTcAttachment;
  SockmapAttachment: typeof RawSockmapAttachment;
  BpfMap: typeof RawBpfMap;
  RingBufferConsumer: typeof RawRingBufferConsumer;
  netnsCookie(netnsPath: string): bigint;
  currentNetnsCookie(): bigint;
  listenInNetns(netnsPath: string, options: RawListenOptions): number;
  connectInNetns(netnsPath: string, options: RawConnectOptions): Promise<number>;
  socketCookie(fd: number): bigint;
  socketsInNetns(netnsPath: string, options: RawSocketOptions): number[];
  tcpQueuedBytes(fd: number): bigint;
  receiveFds(path: string, options: RawReceiveFdsOptions): Promise<RawFdMessage[]>;
  sendFds(path: string, messages: readonly RawFdMessage[], options: RawSendFdsOptions): Promise<void>;
  setupTransparentRouting(netnsPath: string, options: RawTransparentRoutingOptions): Promise<void>;
  clearTransparentRouting(netnsPath: string, options: RawTransparentRoutingOptions): Promise<void>;
  listRoutingRules(netnsPath: string, options: RawTransparentRoutingOptions): Promise<RawRoutingRuleState[]>;
}
