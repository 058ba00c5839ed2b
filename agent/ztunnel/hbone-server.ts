// The HBONE server of one pod (port 15008): HTTP/2 CONNECT over mutual TLS 1.3, hardened against
// peers that misbehave. Everything a peer can make the server hold — a connection, a half-done
// handshake, a session, a stream, header memory, stream resets — has a bound here, and every bound
// that trips is counted, so an operator can tell an attack from an outage.
//
// Admission happens on the raw TCP socket, before any TLS work: a plain net.Server accepts, checks
// the per-source and total caps, arms an absolute handshake deadline, and only then hands the socket
// to the HTTP/2 secure server (which never listens itself). The deadline is absolute rather than
// Node's inactivity timer, so a peer trickling one byte at a time cannot hold a slot either; it
// covers the TLS handshake, the peer check and the client's HTTP/2 preface.
import http2 from 'node:http2';
import net from 'node:net';
import type { TLSSocket } from 'node:tls';
import { ErrorCodes, WeftError, errorMessage } from '../errors.js';
import type { WorkloadCertificate } from '../identity/manager.js';
import { formatSpiffeId, type SpiffeId } from '../identity/spiffe.js';
import type { Logger } from '../log.js';
import { handshakeFailureReason, serverSecureContextOptions, verifyPeer } from '../tls/workload.js';
import { HBONE_CONNECTION_WINDOW, HBONE_SETTINGS, parseAuthority } from './hbone.js';
import { LogBudget, MAX_TIMER_MS, validLimits, type HboneServerLimits, type HboneServerStats } from './hbone-limits.js';

export { HBONE_SERVER_LIMITS, type HboneServerLimits, type HboneServerStats } from './hbone-limits.js';

const { NGHTTP2_NO_ERROR, NGHTTP2_CANCEL, NGHTTP2_REFUSED_STREAM, NGHTTP2_ENHANCE_YOUR_CALM } = http2.constants;

/** The verified peer of an HBONE session. */
export interface HbonePeer {
  id: SpiffeId;
  /** The peer certificate's notAfter: the session is closed then. */
  certNotAfter: Date;
  remoteAddress: string;
  remotePort: number;
}

/** Called for each CONNECT from a verified peer whose `:authority` parsed; the handler answers it. */
export type HboneStreamHandler = (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, peer: HbonePeer, target: { ip: string; port: number }) => void;

export interface HboneServerOptions {
  cert: WorkloadCertificate;
  trustDomain: () => string;
  log: Logger;
  onStream: HboneStreamHandler;
  limits?: Partial<HboneServerLimits>;
}

interface Connection {
  key: string;
  source: string;
  remotePort: number;
  raw: net.Socket;
  /** handshaking → verified (TLS done, peer accepted) → ready (client preface read); or it ends
   * as timedOut or refused (trusted certificate, wrong identity). */
  state: 'handshaking' | 'verified' | 'ready' | 'timedOut' | 'refused';
  deadline?: NodeJS.Timeout;
  session?: http2.Http2Session;
  peer?: HbonePeer;
  streams: number;
  idle?: NodeJS.Timeout;
  expiry?: NodeJS.Timeout;
  grace?: NodeJS.Timeout;
  ping?: NodeJS.Timeout;
  pingDue?: NodeJS.Timeout;
  resetTokens: number;
  resetRefilledAt: number;
}

/** The 4-tuple that names one connection on both the raw and the TLS socket. */
function connectionKey(s: { localAddress?: string | undefined; localPort?: number | undefined; remoteAddress?: string | undefined; remotePort?: number | undefined }): string {
  return `${s.localAddress ?? ''}|${s.localPort ?? 0}|${s.remoteAddress ?? ''}|${s.remotePort ?? 0}`;
}

export class HboneServer {
  readonly limits: Readonly<HboneServerLimits>;
  private readonly listener: net.Server;
  private readonly h2: http2.Http2SecureServer;
  private readonly log: Logger;
  private readonly connections = new Map<string, Connection>();
  private readonly perSource = new Map<string, number>();
  private readonly bySession = new WeakMap<http2.Http2Session, Connection>();
  /** Streams this server cancelled itself (idle tunnels): not the peer's resets. */
  private readonly cancelledHere = new WeakSet<http2.ServerHttp2Stream>();
  private readonly counters: Omit<HboneServerStats, 'connections' | 'sessions' | 'streams'> = {
    accepted: 0,
    refusedPerSource: 0,
    refusedTotal: 0,
    handshakeTimeouts: 0,
    handshakeFailures: 0,
    peersRefused: 0,
    sessionIdleCloses: 0,
    tunnelIdleCloses: 0,
    expiredPeerCloses: 0,
    resets: 0,
    rapidResetCloses: 0,
    keepaliveTimeouts: 0,
    badRequests: 0,
  };
  private liveStreams = 0;
  private liveSessions = 0;
  private closed = false;
  private readonly refusalLog: LogBudget;
  private readonly timeoutLog: LogBudget;

  constructor(private readonly options: HboneServerOptions) {
    this.limits = validLimits(options.limits);
    this.log = options.log;
    this.refusalLog = new LogBudget(this.limits.refusalLogIntervalMs);
    this.timeoutLog = new LogBudget(this.limits.refusalLogIntervalMs);
    const l = this.limits;
    this.h2 = http2.createSecureServer({
      ...serverSecureContextOptions(options.cert),
      // Node's own timer is an inactivity timer (a one-byte trickle keeps resetting it) and stops at
      // the end of TLS (a client that then sends no HTTP/2 preface is held forever): the absolute
      // deadline in onConnection is what bounds a handshake; this one is only a second line.
      handshakeTimeout: l.handshakeTimeoutMs,
      settings: { ...HBONE_SETTINGS, maxConcurrentStreams: l.maxConcurrentStreams, maxHeaderListSize: l.maxHeaderListSize, enablePush: false },
      allowHTTP1: false,
      maxSessionMemory: l.maxSessionMemoryMb,
      maxHeaderListPairs: l.maxHeaderListPairs,
      maxSessionInvalidFrames: l.maxSessionInvalidFrames,
      // A client that did not offer h2: closed by us at once (see 'unknownProtocol').
      unknownProtocolTimeout: 1,
    });
    this.h2.on('session', (session) => this.onSession(session));
    this.h2.on('secureConnection', (socket: TLSSocket) => this.onSecureConnection(socket));
    this.h2.on('tlsClientError', (err: Error, socket: TLSSocket) => {
      this.log.debug({ peer: socket.remoteAddress, err: handshakeFailureReason(err, socket) }, 'HBONE handshake failed');
      // Whatever failed, the connection goes (a no-op when Node destroyed it already).
      socket.destroy();
    });
    this.h2.on('unknownProtocol', (socket: TLSSocket) => socket.destroy());
    this.h2.on('stream', (stream, headers) => this.onStream(stream, headers));
    this.listener = net.createServer({ noDelay: true }, (raw) => this.onConnection(raw));
    this.listener.on('error', (err) => this.log.error({ err: errorMessage(err) }, 'HBONE listener error'));
  }

  /** Listen on a socket already bound and listening (made in the pod's netns), or on host:port. */
  listen(target: number | { host: string; port: number }): Promise<void> {
    return new Promise((resolve, reject) => {
      this.listener.once('error', reject);
      const done = (): void => {
        this.listener.off('error', reject);
        resolve();
      };
      if (typeof target === 'number') this.listener.listen({ fd: target }, done);
      else this.listener.listen({ host: target.host, port: target.port }, done);
    });
  }

  address(): net.AddressInfo | undefined {
    const a = this.listener.address();
    return a !== null && typeof a === 'object' ? a : undefined;
  }

  /** Serve a rotated certificate to new connections; open sessions keep theirs. */
  setSecureContext(cert: WorkloadCertificate): void {
    this.h2.setSecureContext(serverSecureContextOptions(cert));
  }

  stats(): HboneServerStats {
    return { ...this.counters, connections: this.connections.size, sessions: this.liveSessions, streams: this.liveStreams };
  }

  /**
   * Stop listening and destroy every connection: peers' pools keep sessions open for minutes, so
   * closing the listener alone would wait for them. Resolves once the listener closed.
   */
  close(): Promise<void> {
    const closed = this.stopListening();
    for (const c of [...this.connections.values()]) {
      c.session?.destroy();
      c.raw.destroy();
    }
    return closed;
  }

  /**
   * Stop listening and send every session away gracefully (GOAWAY: no new streams, and a pool opens
   * a new connection elsewhere), while the tunnels already open run to their end. Connections still
   * in their handshake are dropped. Resolves once the listener closed.
   */
  drain(): Promise<void> {
    const closed = this.stopListening();
    for (const c of [...this.connections.values()]) {
      if (c.state === 'ready' && c.session && !c.session.destroyed) {
        if (c.idle) clearTimeout(c.idle);
        c.idle = undefined;
        c.session.close();
      } else {
        c.session?.destroy();
        c.raw.destroy();
      }
    }
    return closed;
  }

  private stopListening(): Promise<void> {
    this.closed = true;
    if (!this.listener.listening) return Promise.resolve();
    return new Promise<void>((resolve) => this.listener.close(() => resolve()));
  }

  // --- admission ----------------------------------------------------------------------------------

  private onConnection(raw: net.Socket): void {
    const source = raw.remoteAddress;
    if (this.closed || source === undefined) {
      raw.destroy();
      return;
    }
    const fromSource = this.perSource.get(source) ?? 0;
    if (this.connections.size >= this.limits.maxConnections) return this.refuse(raw, source, 'total');
    if (fromSource >= this.limits.maxConnectionsPerSource) return this.refuse(raw, source, 'source');
    const c: Connection = {
      key: connectionKey(raw),
      source,
      remotePort: raw.remotePort ?? 0,
      raw,
      state: 'handshaking',
      streams: 0,
      resetTokens: this.limits.resetBurst,
      resetRefilledAt: Date.now(),
    };
    this.connections.set(c.key, c);
    this.perSource.set(source, fromSource + 1);
    this.counters.accepted++;
    raw.on('error', (err) => this.log.debug({ peer: source, err: errorMessage(err) }, 'HBONE connection error'));
    raw.once('close', () => this.release(c));
    c.deadline = setTimeout(() => {
      if (c.state !== 'handshaking' && c.state !== 'verified') return;
      this.counters.handshakeTimeouts++;
      const suppressed = this.timeoutLog.take();
      if (suppressed !== undefined) {
        this.log.info({ peer: source, port: c.remotePort, timeoutMs: this.limits.handshakeTimeoutMs, tlsDone: c.state === 'verified', suppressed, handshakeTimeouts: this.counters.handshakeTimeouts }, 'HBONE handshake timed out');
      }
      c.state = 'timedOut';
      c.session?.destroy();
      raw.destroy();
    }, this.limits.handshakeTimeoutMs);
    this.h2.emit('connection', raw);
  }

  private refuse(raw: net.Socket, source: string, cap: 'source' | 'total'): void {
    if (cap === 'source') this.counters.refusedPerSource++;
    else this.counters.refusedTotal++;
    // RST rather than FIN: nothing is owed to a peer over its cap, and no TIME_WAIT is kept for it.
    raw.on('error', () => undefined);
    raw.resetAndDestroy();
    const suppressed = this.refusalLog.take();
    if (suppressed === undefined) return;
    this.log.warn(
      {
        peer: source,
        cap,
        limit: cap === 'source' ? this.limits.maxConnectionsPerSource : this.limits.maxConnections,
        suppressed,
        refusedPerSource: this.counters.refusedPerSource,
        refusedTotal: this.counters.refusedTotal,
      },
      'HBONE connection refused: over the connection cap',
    );
  }

  private release(c: Connection): void {
    if (this.connections.get(c.key) === c) this.connections.delete(c.key);
    const n = (this.perSource.get(c.source) ?? 1) - 1;
    if (n > 0) this.perSource.set(c.source, n);
    else this.perSource.delete(c.source);
    // Closed before it was ready: the handshake failed (timeouts and refused peers counted apart).
    if (c.state === 'handshaking' || c.state === 'verified') this.counters.handshakeFailures++;
    this.clearTimers(c);
  }

  private clearTimers(c: Connection): void {
    for (const t of [c.deadline, c.idle, c.expiry, c.grace, c.ping, c.pingDue]) if (t) clearTimeout(t);
    c.deadline = c.idle = c.expiry = c.grace = c.ping = c.pingDue = undefined;
  }

  // --- sessions -----------------------------------------------------------------------------------

  /** Emitted by Node just before 'secureConnection' for the same socket, in the same turn. */
  private onSession(session: http2.ServerHttp2Session): void {
    const c = this.connections.get(connectionKey(session.socket));
    if (!c) {
      session.destroy();
      return;
    }
    c.session = session;
    this.bySession.set(session, c);
    session.on('error', (err) => this.log.debug({ peer: c.source, err: errorMessage(err) }, 'HBONE session error'));
    session.once('close', () => {
      if (c.state === 'ready') this.liveSessions--;
      this.clearTimers(c);
      c.session = undefined;
      c.raw.destroy();
    });
  }

  private onSecureConnection(socket: TLSSocket): void {
    const c = this.connections.get(connectionKey(socket));
    if (!c || socket.destroyed) {
      socket.destroy();
      return;
    }
    const verdict = verifyPeer(socket, { trustDomain: this.options.trustDomain() });
    const cert = socket.getPeerX509Certificate();
    if (!verdict.ok || !cert) {
      this.counters.peersRefused++;
      this.log.info({ peer: c.source, reason: verdict.ok ? 'no peer certificate' : verdict.reason }, 'HBONE peer refused');
      c.state = 'refused';
      socket.destroy();
      return;
    }
    const session = c.session;
    if (!session) {
      socket.destroy();
      return;
    }
    c.peer = { id: verdict.id, certNotAfter: new Date(cert.validTo), remoteAddress: c.source, remotePort: c.remotePort };
    c.state = 'verified';
    session.setLocalWindowSize(HBONE_CONNECTION_WINDOW);
    // Ready once the client's preface (its SETTINGS) is in: until then the handshake deadline holds.
    session.once('remoteSettings', () => {
      if (session.destroyed || c.state !== 'verified') return;
      c.state = 'ready';
      this.liveSessions++;
      if (c.deadline) clearTimeout(c.deadline);
      c.deadline = undefined;
      this.scheduleExpiry(c, session);
      this.schedulePing(c, session);
      if (c.streams === 0) this.armIdle(c, session);
    });
  }

  private schedulePing(c: Connection, session: http2.Http2Session): void {
    c.ping = setTimeout(() => {
      c.ping = undefined;
      if (session.destroyed) return;
      const unanswered = (): void => {
        c.pingDue = undefined;
        this.counters.keepaliveTimeouts++;
        this.log.info({ peer: c.source, timeoutMs: this.limits.keepaliveTimeoutMs, streams: c.streams }, 'HBONE session destroyed: PING unanswered');
        session.destroy();
      };
      c.pingDue = setTimeout(unanswered, this.limits.keepaliveTimeoutMs);
      try {
        session.ping((err) => {
          if (c.pingDue) clearTimeout(c.pingDue);
          c.pingDue = undefined;
          if (!err && !session.destroyed) this.schedulePing(c, session);
        });
      } catch {
        // The session is going away already (or has too many PINGs out): let the timer decide.
      }
    }, this.limits.keepaliveIntervalMs);
  }

  /** An expired peer certificate must not keep working on an open session: away at its notAfter. */
  private scheduleExpiry(c: Connection, session: http2.Http2Session): void {
    const left = (c.peer?.certNotAfter.getTime() ?? 0) - Date.now();
    if (left > 0) {
      c.expiry = setTimeout(() => this.scheduleExpiry(c, session), Math.min(left, MAX_TIMER_MS));
      return;
    }
    this.counters.expiredPeerCloses++;
    this.log.info({ peer: c.source, identity: c.peer ? formatSpiffeId(c.peer.id) : undefined, notAfter: c.peer?.certNotAfter.toISOString(), streams: c.streams }, 'HBONE session closed: peer certificate expired');
    this.closeGracefully(c, session);
  }

  private armIdle(c: Connection, session: http2.Http2Session): void {
    if (c.idle) clearTimeout(c.idle);
    c.idle = setTimeout(() => {
      c.idle = undefined;
      if (c.streams > 0 || session.closed) return;
      this.counters.sessionIdleCloses++;
      this.log.debug({ peer: c.source, idleMs: this.limits.sessionIdleMs }, 'HBONE session closed: idle');
      this.closeGracefully(c, session);
    }, this.limits.sessionIdleMs);
  }

  /** GOAWAY (no new streams), then destroy after the grace period whatever is still open. */
  private closeGracefully(c: Connection, session: http2.Http2Session): void {
    if (session.destroyed) return;
    session.close();
    if (!c.grace) c.grace = setTimeout(() => session.destroy(), this.limits.closeGraceMs);
  }

  // --- streams ------------------------------------------------------------------------------------

  private onStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
    stream.on('error', (err) => this.log.debug({ err: errorMessage(err) }, 'HBONE stream error'));
    const session = stream.session;
    const c = session ? this.bySession.get(session) : undefined;
    if (!c?.peer || c.state !== 'ready' || !session) {
      // Unreachable by construction (the peer is verified before any frame is read): fail closed.
      stream.close(NGHTTP2_REFUSED_STREAM);
      return;
    }
    const peer = c.peer;
    c.streams++;
    this.liveStreams++;
    if (c.idle) clearTimeout(c.idle);
    c.idle = undefined;
    stream.once('close', () => {
      c.streams--;
      this.liveStreams--;
      if (stream.rstCode !== NGHTTP2_NO_ERROR && !stream.headersSent && !this.cancelledHere.has(stream)) this.onPeerReset(c, session);
      if (c.streams === 0 && !session.closed && !session.destroyed) this.armIdle(c, session);
    });
    // Already reset by the time Node hands it over: nothing to answer, no app connection to make.
    if (stream.closed || stream.destroyed) return;
    if (headers[':method'] !== 'CONNECT') return this.badRequest(stream, c, headers, 'not CONNECT');
    const target = parseAuthority(headers[':authority']);
    if (!target) return this.badRequest(stream, c, headers, 'authority is not exactly ip:port');
    stream.setTimeout(this.limits.tunnelIdleMs, () => {
      this.counters.tunnelIdleCloses++;
      this.cancelledHere.add(stream);
      this.log.debug({ peer: c.source, target: headers[':authority'], idleMs: this.limits.tunnelIdleMs }, 'HBONE tunnel closed: idle');
      stream.close(NGHTTP2_CANCEL);
    });
    try {
      this.options.onStream(stream, headers, peer, target);
    } catch (err) {
      // One tunnel's failure must not take the session (or the agent) with it.
      this.log.error({ peer: c.source, err: errorMessage(err) }, 'HBONE stream handler failed');
      if (!stream.headersSent && !stream.destroyed) stream.respond({ ':status': 500 }, { endStream: true });
      else stream.close(NGHTTP2_CANCEL);
    }
  }

  private badRequest(stream: http2.ServerHttp2Stream, c: Connection, headers: http2.IncomingHttpHeaders, reason: string): void {
    this.counters.badRequests++;
    // The authority is the peer's text: logged only as far as a sane one could reach.
    const authority = String(headers[':authority'] ?? '').slice(0, 64);
    this.log.info({ peer: c.source, identity: c.peer ? formatSpiffeId(c.peer.id) : undefined, method: String(headers[':method'] ?? '').slice(0, 16), authority, reason }, 'HBONE request refused');
    stream.respond({ ':status': 400 }, { endStream: true });
  }

  private onPeerReset(c: Connection, session: http2.Http2Session): void {
    this.counters.resets++;
    const now = Date.now();
    const l = this.limits;
    c.resetTokens = Math.min(l.resetBurst, c.resetTokens + ((now - c.resetRefilledAt) / 1000) * l.resetRatePerSecond);
    c.resetRefilledAt = now;
    c.resetTokens -= 1;
    if (c.resetTokens >= 0 || session.destroyed) return;
    this.counters.rapidResetCloses++;
    this.log.warn({ peer: c.source, identity: c.peer ? formatSpiffeId(c.peer.id) : undefined, burst: l.resetBurst, ratePerSecond: l.resetRatePerSecond }, 'HBONE session closed: stream resets too fast');
    // GOAWAY ENHANCE_YOUR_CALM and drop the session with everything on it. (Node takes a missing
    // error as NO_ERROR and ignores the code, so the error is given.)
    session.destroy(new WeftError(ErrorCodes.HBONE, 'HBONE peer reset streams too fast'), NGHTTP2_ENHANCE_YOUR_CALM);
  }
}
