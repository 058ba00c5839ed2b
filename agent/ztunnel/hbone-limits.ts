// The HBONE server's bounds and what it counts: every default in one place (as ztunnel keeps its
// defaults in one config), checked when a server is made, and the counters an operator reads to tell
// an attack from an outage.
import { ErrorCodes, WeftError } from '../errors.js';
import { MAX_STREAMS_PER_CONNECTION, POOL_IDLE_MS } from './hbone.js';

/** setTimeout's longest delay; longer waits are taken in steps. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * The server's limits, all in one place as ztunnel keeps its defaults in one config. Times in ms.
 */
export const HBONE_SERVER_LIMITS = {
  /** Accept → TLS done, peer verified, client preface read. Node's own default is 120 s. */
  handshakeTimeoutMs: 10_000,
  /** Live connections (any state) from one source IP; beyond it a connection is closed at once. */
  maxConnectionsPerSource: 256,
  /** Live connections in total on this listener. */
  maxConnections: 4096,
  /** A session with no stream for this long is closed (GOAWAY). Twice the client pools' idle
   * release, so a well-behaved pool always lets go first and never races a GOAWAY. */
  sessionIdleMs: 2 * POOL_IDLE_MS,
  /** A tunnel with no byte either way for this long is cancelled. Long: a quiet database
   * connection is legitimate. */
  tunnelIdleMs: 60 * 60_000,
  /** After a graceful GOAWAY (idle, expired peer certificate), open streams get this long. */
  closeGraceMs: 1_000,
  /** Every session is PINGed this often and destroyed when the answer takes longer than
   * keepaliveTimeoutMs. Besides dead peers this catches the sessions nghttp2 ended on a protocol
   * error (an oversized frame, say): it sends GOAWAY and stops reading, but Node neither closes the
   * connection nor tells anyone, so without this such a session would sit until its idle timers. */
  keepaliveIntervalMs: 30_000,
  keepaliveTimeoutMs: 20_000,
  /** SETTINGS_MAX_CONCURRENT_STREAMS; ztunnel allows 100 streams per connection. */
  maxConcurrentStreams: MAX_STREAMS_PER_CONNECTION,
  /** SETTINGS_MAX_HEADER_LIST_SIZE in bytes: a CONNECT's headers are a few hundred bytes. */
  maxHeaderListSize: 16 * 1024,
  /** Header fields per request (Node's maxHeaderListPairs, which adds 4 for pseudo-headers). */
  maxHeaderListPairs: 32,
  /** Node's per-session memory cap in MB (nghttp2 state and queued output). */
  maxSessionMemoryMb: 32,
  /** Malformed or unexpected frames tolerated per session before it is destroyed. */
  maxSessionInvalidFrames: 100,
  /** Rapid reset (CVE-2023-44487): streams a peer may cancel before we answered, as a token
   * bucket per session. nghttp2 alone allows a burst of 1000 and then 33/s, and each of those
   * streams would start an app connection here first; this is tighter. */
  resetBurst: 100,
  resetRatePerSecond: 20,
  /** At most one log line per this interval for refused connections, and one for handshake
   * timeouts (a stranger can cause either at will); the rest are counted. */
  refusalLogIntervalMs: 10_000,
} as const;

export type HboneServerLimits = { -readonly [K in keyof typeof HBONE_SERVER_LIMITS]: number };

export interface HboneServerStats {
  /** Live TCP connections admitted (handshaking or established). */
  connections: number;
  /** Live sessions from verified peers. */
  sessions: number;
  /** Live tunnels (CONNECT streams handed to the handler). */
  streams: number;
  accepted: number;
  refusedPerSource: number;
  refusedTotal: number;
  handshakeTimeouts: number;
  /** TLS failures: not TLS at all, no or untrusted certificate, bad HTTP/2 preface. */
  handshakeFailures: number;
  /** Trusted certificate, but not a workload identity of our trust domain. */
  peersRefused: number;
  sessionIdleCloses: number;
  tunnelIdleCloses: number;
  expiredPeerCloses: number;
  /** Streams the peer cancelled before we answered. */
  resets: number;
  /** Sessions sent away for resetting too fast. */
  rapidResetCloses: number;
  /** Sessions destroyed because a PING went unanswered (dead peer, or ended by a protocol error). */
  keepaliveTimeouts: number;
  /** CONNECTs answered 400: not CONNECT, or `:authority` not exactly ip:port. */
  badRequests: number;
}

export /** At most one log line per interval for events a stranger can cause at will; the rest are counted
 * and the next line says how many were left out. */
class LogBudget {
  private lastAt = -Infinity;
  private suppressed = 0;
  constructor(private readonly intervalMs: number) {}
  /** The number left out since the last line, or undefined when this one must be left out too. */
  take(now = Date.now()): number | undefined {
    if (now - this.lastAt < this.intervalMs) {
      this.suppressed++;
      return undefined;
    }
    const left = this.suppressed;
    this.lastAt = now;
    this.suppressed = 0;
    return left;
  }
}

export function validLimits(overrides: Partial<HboneServerLimits> | undefined): HboneServerLimits {
  const limits: HboneServerLimits = { ...HBONE_SERVER_LIMITS, ...overrides };
  for (const [name, value] of Object.entries(limits)) {
    if (!Number.isSafeInteger(value) || value <= 0) throw new WeftError(ErrorCodes.CONFIG_INVALID, `HBONE server limit ${name} must be a positive integer, got ${String(value)}`);
  }
  if (limits.maxConcurrentStreams > 2 ** 31 - 1) throw new WeftError(ErrorCodes.CONFIG_INVALID, `HBONE server limit maxConcurrentStreams is too large: ${limits.maxConcurrentStreams}`);
  return limits;
}

