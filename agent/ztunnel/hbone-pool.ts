// The HBONE client side: a pool of mutual-TLS HTTP/2 connections, keyed by (source identity and
// certificate, source netns, destination address, expected destination identity), each carrying up
// to 100 CONNECT streams. The TCP socket under each connection is opened inside the source pod's
// netns, so the tunnel's source address is the pod's own IP.
import http2 from 'node:http2';
import net from 'node:net';
import { connectInNetns } from '../../native/index.js';
import { PROXY_MARK } from '../datapath/layout.js';
import { ErrorCodes, WeftError, errorMessage } from '../errors.js';
import type { WorkloadCertificate } from '../identity/manager.js';
import { formatSpiffeId, type SpiffeId } from '../identity/spiffe.js';
import type { Logger } from '../log.js';
import { connectTls } from '../tls/workload.js';
import { HBONE_CONNECTION_WINDOW, HBONE_PORT, HBONE_SETTINGS, MAX_STREAMS_PER_CONNECTION, POOL_IDLE_MS } from './hbone.js';

const CONNECT_TIMEOUT_MS = 10_000;

export interface HboneSource {
  netns: string;
  cert: WorkloadCertificate;
}

interface PooledSession {
  session: http2.ClientHttp2Session;
  streams: number;
}

/** An HBONE CONNECT that the peer refused: `status` is the HTTP status (401 denied, 503 unreachable). */
export class HboneRefused extends WeftError {
  constructor(readonly status: number) {
    super(ErrorCodes.HBONE, `HBONE CONNECT refused with status ${status}`);
  }
}

export class HbonePool {
  private readonly sessions = new Map<string, PooledSession[]>();
  private readonly pending = new Map<string, Promise<PooledSession>>();

  constructor(
    private readonly trustDomain: () => string,
    private readonly log: Logger,
  ) {}

  /**
   * Open a CONNECT stream to `authority` through the HBONE endpoint `endpointIp`:15008, which must
   * present one of the `expected` identities. Resolves once the peer answered 200.
   */
  async connect(source: HboneSource, endpointIp: string, expected: SpiffeId[], headers: Record<string, string>): Promise<http2.ClientHttp2Stream> {
    const key = [formatSpiffeId(source.cert.id), source.cert.serial, source.netns, endpointIp, expected.map(formatSpiffeId).sort().join(',')].join('|');
    const pooled = await this.session(key, source, endpointIp, expected);
    pooled.streams++;
    const stream = pooled.session.request(headers, { endStream: false });
    stream.once('close', () => {
      pooled.streams--;
    });
    const status = await new Promise<number>((resolve, reject) => {
      stream.once('response', (h) => resolve(Number(h[':status'])));
      stream.once('error', reject);
      stream.once('close', () => reject(new WeftError(ErrorCodes.HBONE, `HBONE stream closed before a response (code ${stream.rstCode})`)));
    });
    if (status !== 200) {
      stream.close();
      throw new HboneRefused(status);
    }
    return stream;
  }

  private async session(key: string, source: HboneSource, endpointIp: string, expected: SpiffeId[]): Promise<PooledSession> {
    const live = (this.sessions.get(key) ?? []).find((p) => !p.session.closed && !p.session.destroyed && p.streams < MAX_STREAMS_PER_CONNECTION);
    if (live) return live;
    let pending = this.pending.get(key);
    if (!pending) {
      pending = this.dial(key, source, endpointIp, expected).finally(() => this.pending.delete(key));
      this.pending.set(key, pending);
    }
    const pooled = await pending;
    // Another caller may have filled it while we waited: open one more when it is full.
    return pooled.streams < MAX_STREAMS_PER_CONNECTION ? pooled : this.dial(key, source, endpointIp, expected);
  }

  private async dial(key: string, source: HboneSource, endpointIp: string, expected: SpiffeId[]): Promise<PooledSession> {
    const fd = await connectInNetns(source.netns, { host: endpointIp, port: HBONE_PORT, mark: PROXY_MARK, timeoutMs: CONNECT_TIMEOUT_MS });
    const tcp = new net.Socket({ fd, readable: true, writable: true });
    tcp.setNoDelay(true);
    const tls = await connectTls({ socket: tcp, cert: source.cert, expected, trustDomain: this.trustDomain() });
    const session = http2.connect(`https://${endpointIp}:${HBONE_PORT}`, {
      createConnection: () => tls,
      settings: { ...HBONE_SETTINGS, enablePush: false },
      peerMaxConcurrentStreams: MAX_STREAMS_PER_CONNECTION,
    });
    await new Promise<void>((resolve, reject) => {
      session.once('connect', () => resolve());
      session.once('error', reject);
    });
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
