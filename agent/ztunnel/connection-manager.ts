// The live connections of one pod proxy, as ztunnel's connection manager keeps them: every socket it
// relays (so shutdown can end them and an upgrade can wait for them), and every connection the
// destination side admitted with what it was admitted on (so a policy change can judge it again and
// close what the new policy denies — ztunnel#311's complaint).
import type { Duplex } from 'node:stream';
import type { Logger } from '../log.js';
import type { ConnectionAttrs } from '../policy/index.js';
import type { ProxyStats } from './connection-record.js';

/** A connection the destination side admitted. */
export interface Admitted {
  attrs: ConnectionAttrs;
  close(): void;
}

export class ConnectionManager {
  private readonly sockets = new Set<Duplex>();
  private readonly admitted = new Set<Admitted>();
  /** Waiting for `sockets` to empty (the drain after a hand-over). */
  private readonly idle = new Set<() => void>();

  constructor(
    private readonly stats: ProxyStats,
    private readonly log: Logger,
  ) {}

  /** Count a socket as live until it closes (once, however often it is handed in). */
  track(s: Duplex): void {
    if (this.sockets.has(s)) return;
    this.sockets.add(s);
    this.stats.active = this.sockets.size;
    s.once('close', () => {
      this.sockets.delete(s);
      this.stats.active = this.sockets.size;
      if (this.sockets.size === 0) for (const f of [...this.idle]) f();
    });
  }

  /** Keep an admitted connection for re-authorization; the returned function forgets it. */
  admit(c: Admitted): () => void {
    this.admitted.add(c);
    return () => void this.admitted.delete(c);
  }

  /** Policy changed: close every admitted connection `allowed` now refuses. Returns how many. */
  reauthorize(allowed: (attrs: ConnectionAttrs) => { allowed: boolean; reason?: string }): number {
    let closed = 0;
    for (const c of this.admitted) {
      const decision = allowed(c.attrs);
      if (decision.allowed) continue;
      this.admitted.delete(c);
      c.close();
      closed++;
      this.stats.inbound.closedByPolicy++;
      this.log.info({ src: c.attrs.sourceIp, dstPort: c.attrs.destinationPort, reason: decision.reason }, 'connection closed by a policy change');
    }
    return closed;
  }

  /** Resolves once every live socket has closed. */
  drained(): Promise<void> {
    if (this.sockets.size === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const check = (): void => {
        if (this.sockets.size > 0) return;
        this.idle.delete(check);
        resolve();
      };
      this.idle.add(check);
    });
  }

  get active(): number {
    return this.sockets.size;
  }

  /** End everything at once (agent shutdown). */
  destroyAll(): void {
    for (const s of this.sockets) s.destroy();
  }
}
