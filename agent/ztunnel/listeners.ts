// A pod proxy's three listening sockets, made *inside* the pod's network namespace (Istio's in-pod
// mode): 127.0.0.1:15001 (outbound capture), 0.0.0.0:15006 (inbound plaintext, where sk_lookup steers),
// 0.0.0.0:15008 (HBONE). The addon creates each socket in the netns and Node serves it; on an upgrade
// the sockets come from the previous agent instead and are served as they are.
import type http2 from 'node:http2';
import { closeSync } from 'node:fs';
import net from 'node:net';
import { listenInNetns } from '../../native/index.js';
import { Ports, Marks } from '../config.js';
import { ErrorCodes, WeftError, errorMessage } from '../errors.js';
import type { WorkloadCertificate } from '../identity/manager.js';
import type { Logger } from '../log.js';
import { HboneServer, type HbonePeer } from './hbone-server.js';

/** The three listening sockets' descriptors. */
export interface ListenerFds {
  outbound: number;
  inbound: number;
  hbone: number;
}

export interface ListenerHandlers {
  outbound(s: net.Socket): void;
  plaintext(s: net.Socket): void;
  hbone(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, peer: HbonePeer, target: { ip: string; port: number }): void;
}

export class PodListeners {
  private readonly servers: net.Server[] = [];
  private hboneServer: HboneServer | undefined;
  private readonly fds: Partial<ListenerFds> = {};

  private constructor(
    private readonly netns: string,
    private readonly log: Logger,
  ) {}

  /** Listen (or serve `inherited` sockets) with the pod's certificate on HBONE. */
  static async open(o: { netns: string; cert: WorkloadCertificate; trustDomain: () => string; log: Logger; handlers: ListenerHandlers; inherited?: ListenerFds }): Promise<PodListeners> {
    const l = new PodListeners(o.netns, o.log);
    // A socket made here but not yet served by a server is closed here if anything fails.
    let unserved: number | undefined;
    try {
      const hbone = o.inherited?.hbone ?? (unserved = l.make(Ports.hbone, '0.0.0.0'));
      const server = new HboneServer({ cert: o.cert, trustDomain: o.trustDomain, log: o.log, onStream: o.handlers.hbone });
      l.hboneServer = server;
      await server.listen(hbone);
      l.fds.hbone = hbone;
      unserved = undefined;
      const outbound = o.inherited?.outbound ?? (unserved = l.make(Ports.outbound, '127.0.0.1'));
      l.fds.outbound = await l.serve(outbound, o.handlers.outbound);
      unserved = undefined;
      const inbound = o.inherited?.inbound ?? (unserved = l.make(Ports.inbound, '0.0.0.0'));
      l.fds.inbound = await l.serve(inbound, o.handlers.plaintext);
      unserved = undefined;
    } catch (err) {
      if (unserved !== undefined) closeQuietly(unserved);
      l.close('close');
      throw err;
    }
    return l;
  }

  private make(port: number, host: string): number {
    return listenInNetns(this.netns, { host, port, mark: Marks.proxy, reuseAddr: true, backlog: 4096 });
  }

  private async serve(fd: number, onConnection: (s: net.Socket) => void): Promise<number> {
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, onConnection);
    this.servers.push(server);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ fd }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (err) => this.log.error({ err: errorMessage(err), fd }, 'listener error'));
    return fd;
  }

  /** The inbound plaintext listener, for sk_lookup's listener map. */
  get inboundFd(): number {
    return this.all().inbound;
  }

  /** All three, for the next agent (upgrade hand-over). */
  all(): ListenerFds {
    const { outbound, inbound, hbone } = this.fds;
    if (outbound === undefined || inbound === undefined || hbone === undefined) throw new WeftError(ErrorCodes.UPSTREAM, 'the pod proxy is not listening');
    return { outbound, inbound, hbone };
  }

  /** A rotated certificate, for new HBONE connections. */
  setCertificate(cert: WorkloadCertificate): void {
    this.hboneServer?.setSecureContext(cert);
  }

  hboneStats(): ReturnType<HboneServer['stats']> | undefined {
    return this.hboneServer?.stats();
  }

  /** Stop accepting. Peers' HBONE sessions get a GOAWAY ('drain': their open tunnels run to their
   * end) or are cut ('close'). */
  close(hbone: 'drain' | 'close'): void {
    for (const s of this.servers.splice(0)) s.close();
    const server = this.hboneServer;
    this.hboneServer = undefined;
    if (server) void (hbone === 'drain' ? server.drain() : server.close());
  }
}

function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // already closed
  }
}
