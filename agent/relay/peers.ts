// Where the relay finds every node's Observer API: a fixed list (`--peer NAME=HOST:PORT`), or the
// controller's /debug/status, whose `nodes` carry each Node's InternalIP (then `<ip>:4244`). The
// pool keeps one client per peer and re-discovers periodically; a failed discovery keeps the last list.
// With a client credential, every peer is dialled over mutual TLS and must prove it is the node of
// that name (spiffe://<td>/weft/node/<name>, td from our own credential).
import { fetchControllerStatus } from '../controller/index.js';
import { ErrorCodes, WeftError, errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import { OBSERVER_PORT } from '../flows/observer-server.js';
import { nodeObserverIdentity, trustDomainOfCert, type TlsCredential } from '../flows/observer-tls.js';
import { ObserverClient, observerAddress } from './client.js';

export interface PeerAddress {
  name: string;
  /** host:port of the node's Observer API. */
  address: string;
}

export type Discover = () => Promise<PeerAddress[]>;

/** `NAME=HOST[:PORT]` → a peer (port defaults to 4244). */
export function parsePeer(text: string): PeerAddress {
  const eq = text.indexOf('=');
  if (eq <= 0 || eq === text.length - 1) throw new WeftError(ErrorCodes.USAGE, `--peer "${text}": expected NAME=HOST:PORT`);
  return { name: text.slice(0, eq), address: observerAddress(text.slice(eq + 1), OBSERVER_PORT) };
}

export function staticPeers(peers: readonly PeerAddress[]): Discover {
  return () => Promise.resolve([...peers]);
}

/** Every registry Node with an InternalIP, from the controller's monitoring endpoint. */
export function controllerPeers(monitoringUrl: string, port = OBSERVER_PORT, timeoutMs = 3000): Discover {
  return async () => {
    const status = (await fetchControllerStatus(monitoringUrl, timeoutMs)) as { nodes?: Array<{ name?: unknown; internalIP?: unknown }> };
    if (!Array.isArray(status.nodes)) throw new WeftError(ErrorCodes.CONTROLLER, `${monitoringUrl} lists no nodes (a controller older than the relay?)`);
    return status.nodes
      .filter((n): n is { name: string; internalIP: string } => typeof n.name === 'string' && typeof n.internalIP === 'string' && n.internalIP !== '')
      .map((n) => ({ name: n.name, address: observerAddress(n.internalIP, port) }));
  };
}

export interface Peer extends PeerAddress {
  client: ObserverClient;
}

/** One client per discovered peer, kept across refreshes while its address stays the same. */
export class PeerPool {
  private peers = new Map<string, Peer>();
  private timer: NodeJS.Timeout | undefined;
  private refreshing: Promise<void> | undefined;
  private readonly listeners = new Set<() => void>();
  private readonly trustDomain: string | undefined;

  constructor(
    private readonly discover: Discover,
    private readonly log: Logger,
    private readonly refreshMs = 10_000,
    /** The relay's client credential: peers are then dialled over mutual TLS. */
    private readonly tls?: TlsCredential,
  ) {
    this.trustDomain = tls ? trustDomainOfCert(tls.certPem) : undefined;
  }

  /** Whether peers are dialled over mutual TLS. */
  get tlsEnabled(): boolean {
    return this.tls !== undefined;
  }

  private clientFor(p: PeerAddress): ObserverClient {
    if (!this.tls || this.trustDomain === undefined) return new ObserverClient(p.address);
    return new ObserverClient(p.address, { ...this.tls, serverIdentity: nodeObserverIdentity(this.trustDomain, p.name) });
  }

  /** First discovery (errors are logged, not thrown: the relay serves with what it knows), then periodic ones. */
  async start(): Promise<void> {
    await this.refresh();
    this.timer = setInterval(() => void this.refresh(), this.refreshMs);
    this.timer.unref();
  }

  refresh(): Promise<void> {
    this.refreshing ??= this.doRefresh().finally(() => (this.refreshing = undefined));
    return this.refreshing;
  }

  private async doRefresh(): Promise<void> {
    let found: PeerAddress[];
    try {
      found = await this.discover();
    } catch (err) {
      this.log.warn({ err: errorMessage(err) }, 'peer discovery failed; keeping the last list');
      return;
    }
    const next = new Map<string, Peer>();
    for (const p of found) {
      const cur = this.peers.get(p.name);
      if (cur && cur.address === p.address) next.set(p.name, cur);
      else {
        let client: ObserverClient;
        try {
          client = this.clientFor(p);
        } catch (err) {
          this.log.warn({ node: p.name, address: p.address, err: errorMessage(err) }, 'observer peer skipped');
          continue;
        }
        cur?.client.close();
        next.set(p.name, { ...p, client });
        this.log.info({ node: p.name, address: p.address, tls: this.tlsEnabled }, 'observer peer added');
      }
    }
    for (const [name, p] of this.peers) {
      if (!next.has(name)) {
        p.client.close();
        this.log.info({ node: name, address: p.address }, 'observer peer removed');
      }
    }
    this.peers = next;
    for (const l of this.listeners) l();
  }

  list(): Peer[] {
    return [...this.peers.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  /** Called after every successful discovery (follow streams pick up new and removed peers). */
  onRefresh(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  close(): void {
    clearInterval(this.timer);
    for (const p of this.peers.values()) p.client.close();
    this.peers.clear();
  }
}
