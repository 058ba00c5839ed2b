// The HBONE client side: a pool of mutual-TLS HTTP/2 connections, keyed by (source identity and
// certificate, source netns, destination address, expected destination identity), each carrying up
// to 100 CONNECT streams. The TCP socket under each connection is opened inside the source pod's
// netns, so the tunnel's source address is the pod's own IP.
import http2 from 'node:http2';
import net from 'node:net';
import { PROXY_MARK } from '../datapath/layout.js';
import { ErrorCodes, WeftError, errorMessage } from '../errors.js';
import type { WorkloadCertificate } from '../identity/manager.js';
import { formatSpiffeId, type SpiffeId } from '../identity/spiffe.js';
import type { Logger } from '../log.js';
import { connectTls } from '../tls/workload.js';
import { HBONE_CONNECTION_WINDOW, HBONE_PORT, HBONE_SETTINGS, MAX_STREAMS_PER_CONNECTION, POOL_IDLE_MS } from './hbone.js';

/** The client's bounds, in ms. */
export const HBONE_CLIENT_LIMITS = {
  /** TCP connect, TLS handshake and the server's HTTP/2 SETTINGS, all together. */
  handshakeTimeoutMs: 10_000,
  /** From sending a CONNECT to its response. Longer than the destination's own 10 s bound on
   * connecting to its app, so a slow app comes back as the server's 503 and not as a cancel. */
  connectResponseTimeoutMs: 15_000,
} as const;

export type HboneClientLimits = { -readonly [K in keyof typeof HBONE_CLIENT_LIMITS]: number };

export interface HboneSource {
  netns: string;
  cert: WorkloadCertificate;
}

export interface HbonePoolOptions {
  limits?: Partial<HboneClientLimits>;
  /** Opens the TCP connection to `endpointIp`'s HBONE port; by default from inside the source's
   * netns (tests on loopback replace it). Must give up by `timeoutMs`. */
  dial?: (source: HboneSource, endpointIp: string, timeoutMs: number) => Promise<net.Socket>;
}

interface PooledSession {
  session: http2.ClientHttp2Session;
  streams: number;
  /** It refused a stream (the peer is going away): no new streams on it. */
  retired?: boolean;
}

/** An HBONE CONNECT that the peer refused: `status` is the HTTP status (401 denied, 503 unreachable). */
export class HboneRefused extends WeftError {
  constructor(readonly status: number) {
    super(ErrorCodes.HBONE, `HBONE CONNECT refused with status ${status}`);
  }
}

/** The peer refused a stream before processing it (REFUSED_STREAM): it may be tried again. */
class StreamRefused extends WeftError {
  constructor(endpoint: string) {
    super(ErrorCodes.HBONE, `HBONE stream refused by ${endpoint} before it was processed`);
  }
}

/** The HBONE peer did not finish its part in time: the connection's handshake, or the answer to a
 * CONNECT (whose stream was then cancelled). */
export class HboneTimeout extends WeftError {
  constructor(
    readonly phase: 'handshake' | 'response',
    readonly endpoint: string,
    readonly timeoutMs: number,
  ) {
    super(ErrorCodes.HBONE, phase === 'handshake' ? `HBONE connection to ${endpoint} not established within ${timeoutMs} ms` : `HBONE CONNECT via ${endpoint} not answered within ${timeoutMs} ms`);
    this.name = 'HboneTimeout';
  }
}

async function dialInNetns(source: HboneSource, endpointIp: string, timeoutMs: number): Promise<net.Socket> {
  // Loaded on first use, so a pool with its own dial (tests on loopback) needs no native addon.
  const { connectInNetns } = await import('../../native/index.js');
  const fd = await connectInNetns(source.netns, { host: endpointIp, port: HBONE_PORT, mark: PROXY_MARK, timeoutMs });
  return new net.Socket({ fd, readable: true, writable: true });
}

export class HbonePool {
  private readonly sessions = new Map<string, PooledSession[]>();
  private readonly pending = new Map<string, Promise<PooledSession>>();
  readonly limits: Readonly<HboneClientLimits>;
  private readonly dialTcp: NonNullable<HbonePoolOptions['dial']>;

  constructor(
    private readonly trustDomain: () => string,
    private readonly log: Logger,
    options: HbonePoolOptions = {},
  ) {
    const limits: HboneClientLimits = { ...HBONE_CLIENT_LIMITS, ...options.limits };
    for (const [name, value] of Object.entries(limits)) {
      if (!Number.isSafeInteger(value) || value <= 0) throw new WeftError(ErrorCodes.CONFIG_INVALID, `HBONE client limit ${name} must be a positive integer, got ${String(value)}`);
    }
    this.limits = limits;
    this.dialTcp = options.dial ?? dialInNetns;
  }

  /**
   * Open a CONNECT stream to `authority` through the HBONE endpoint `endpointIp`:15008, which must
   * present one of the `expected` identities. Resolves once the peer answered 200; rejects with
   * HboneRefused for another status, HboneTimeout when the connection or the answer takes too long.
   */
  async connect(source: HboneSource, endpointIp: string, expected: SpiffeId[], headers: Record<string, string>): Promise<http2.ClientHttp2Stream> {
    const key = [formatSpiffeId(source.cert.id), source.cert.serial, source.netns, endpointIp, expected.map(formatSpiffeId).sort().join(',')].join('|');
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.open(key, source, endpointIp, expected, headers);
      } catch (err) {
        // REFUSED_STREAM means the peer never processed the stream (HTTP/2 guarantees it), e.g. it
        // sent GOAWAY as we opened it because its agent is being upgraded: safe to try once more,
        // on a fresh connection (the one that refused is closing).
        if (!(err instanceof StreamRefused) || attempt >= 2) throw err;
        this.log.debug({ endpoint: endpointIp }, 'HBONE stream refused by a closing connection; retrying');
      }
    }
  }

  private async open(key: string, source: HboneSource, endpointIp: string, expected: SpiffeId[], headers: Record<string, string>): Promise<http2.ClientHttp2Stream> {
    const pooled = await this.reserve(key, source, endpointIp, expected);
    let stream: http2.ClientHttp2Stream;
    try {
      stream = pooled.session.request(headers, { endStream: false });
    } catch (err) {
      pooled.streams--;
      throw err;
    }
    stream.once('close', () => {
      pooled.streams--;
    });
    const timeoutMs = this.limits.connectResponseTimeoutMs;
    const status = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => {
        // Cancelled, so the server stops working on it and the slot is free again.
        stream.close(http2.constants.NGHTTP2_CANCEL);
        reject(new HboneTimeout('response', endpointIp, timeoutMs));
      }, timeoutMs);
      const settle = (): void => clearTimeout(timer);
      const refused = (): boolean => stream.rstCode === http2.constants.NGHTTP2_REFUSED_STREAM;
      stream.once('response', (h) => {
        settle();
        resolve(Number(h[':status']));
      });
      const fail = (err: Error): void => {
        settle();
        if (refused()) pooled.retired = true;
        reject(refused() ? new StreamRefused(endpointIp) : err);
      };
      stream.once('error', fail);
      stream.once('close', () => fail(new WeftError(ErrorCodes.HBONE, `HBONE stream closed before a response (code ${stream.rstCode})`)));
    });
    if (status !== 200) {
      stream.close();
      throw new HboneRefused(status);
    }
    return stream;
  }

  /**
   * A stream slot on a pooled connection to the endpoint, counted before anything else can run: a
   * burst of callers must not all pick the same connection and push it past the peer's 100
   * concurrent streams (the excess would wait for a slot that held tunnels never free).
   */
  private async reserve(key: string, source: HboneSource, endpointIp: string, expected: SpiffeId[]): Promise<PooledSession> {
    for (;;) {
      const live = (this.sessions.get(key) ?? []).find((p) => !p.retired && !p.session.closed && !p.session.destroyed && p.streams < MAX_STREAMS_PER_CONNECTION);
      if (live) {
        live.streams++;
        return live;
      }
      let pending = this.pending.get(key);
      if (!pending) {
        pending = this.dial(key, source, endpointIp, expected).finally(() => this.pending.delete(key));
        this.pending.set(key, pending);
      }
      // The new connection joins the pool; look again (others may have taken its slots meanwhile).
      await pending;
    }
  }

  /** TCP, TLS and HTTP/2 SETTINGS within one deadline; whatever was opened is closed on failure. */
  private async handshake(source: HboneSource, endpointIp: string, expected: SpiffeId[]): Promise<http2.ClientHttp2Session> {
    const timeoutMs = this.limits.handshakeTimeoutMs;
    let expired = false;
    let tcp: net.Socket | undefined;
    let session: http2.ClientHttp2Session | undefined;
    const abandon = (): void => {
      session?.destroy();
      tcp?.destroy();
    };
    const work = (async (): Promise<http2.ClientHttp2Session> => {
      tcp = await this.dialTcp(source, endpointIp, timeoutMs);
      // The deadline may have passed while the socket was being made: nobody waits for it now.
      if (expired) throw new HboneTimeout('handshake', endpointIp, timeoutMs);
      tcp.setNoDelay(true);
      // connectTls's own timer starts later than ours, so the deadline below always speaks first.
      const tls = await connectTls({ socket: tcp, cert: source.cert, expected, trustDomain: this.trustDomain(), handshakeTimeoutMs: timeoutMs });
      if (expired) {
        tls.destroy();
        throw new HboneTimeout('handshake', endpointIp, timeoutMs);
      }
      const s = http2.connect(`https://${endpointIp}:${HBONE_PORT}`, {
        createConnection: () => tls,
        settings: { ...HBONE_SETTINGS, enablePush: false },
        peerMaxConcurrentStreams: MAX_STREAMS_PER_CONNECTION,
      });
      session = s;
      // Node reports 'connect' once our preface is out; the server's SETTINGS ('remoteSettings')
      // show that an HTTP/2 server is really there.
      await new Promise<void>((resolve, reject) => {
        let pending = 2;
        const onError = (err: Error): void => reject(err);
        const onClose = (): void => reject(new WeftError(ErrorCodes.HBONE, `HBONE connection to ${endpointIp} closed before its SETTINGS`));
        const step = (): void => {
          if (--pending > 0) return;
          s.off('error', onError);
          s.off('close', onClose);
          resolve();
        };
        s.once('error', onError);
        s.once('close', onClose);
        s.once('connect', step);
        s.once('remoteSettings', step);
      });
      return s;
    })();
    return new Promise<http2.ClientHttp2Session>((resolve, reject) => {
      const timer = setTimeout(() => {
        expired = true;
        abandon();
        reject(new HboneTimeout('handshake', endpointIp, timeoutMs));
      }, timeoutMs);
      work.then(
        (s) => {
          clearTimeout(timer);
          if (expired) s.destroy();
          else resolve(s);
        },
        (err: unknown) => {
          clearTimeout(timer);
          abandon();
          reject(err);
        },
      );
    });
  }

  private async dial(key: string, source: HboneSource, endpointIp: string, expected: SpiffeId[]): Promise<PooledSession> {
    const session = await this.handshake(source, endpointIp, expected);
    session.setLocalWindowSize(HBONE_CONNECTION_WINDOW);
    session.setTimeout(POOL_IDLE_MS, () => {
      // ztunnel releases idle connections after five minutes; streams still open keep it alive.
      if (pooled.streams === 0) session.close();
    });
    const pooled: PooledSession = { session, streams: 0 };
    const list = this.sessions.get(key) ?? [];
    list.push(pooled);
    this.sessions.set(key, list);
    session.on('error', (err) => this.log.debug({ endpoint: endpointIp, err: errorMessage(err) }, 'HBONE connection error'));
    session.once('close', () => {
      const rest = (this.sessions.get(key) ?? []).filter((p) => p !== pooled);
      if (rest.length) this.sessions.set(key, rest);
      else this.sessions.delete(key);
    });
    this.log.debug({ endpoint: endpointIp, identity: formatSpiffeId(source.cert.id) }, 'HBONE connection opened');
    return pooled;
  }

  stats(): { connections: number; streams: number } {
    let connections = 0;
    let streams = 0;
    for (const list of this.sessions.values()) for (const p of list) (connections++, (streams += p.streams));
    return { connections, streams };
  }

  close(): void {
    for (const list of this.sessions.values()) for (const p of list) p.session.destroy();
    this.sessions.clear();
  }
}
