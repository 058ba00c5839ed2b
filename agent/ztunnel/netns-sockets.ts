// Sockets inside a pod's network namespace, made in batches. Entering a netns costs a thread and two
// setns calls; a socket, once made there, stays there wherever it is bound and connected. So the
// proxy takes unconnected sockets from a per-pod pool (refilled a batch at a time, in one visit) and
// lets Node connect them on the event loop like any other socket.
import { closeSync } from 'node:fs';
import net from 'node:net';
import { socketsInNetns } from '../../native/index.js';
import { ErrorCodes, WeftError } from '../errors.js';

const BATCH = 32;

export interface SocketKind {
  family: 'ipv4' | 'ipv6';
  mark: number;
  transparent: boolean;
}

export interface ConnectTarget {
  host: string;
  port: number;
  localAddress?: string;
  localPort?: number;
  timeoutMs: number;
}

export class NetnsSockets {
  private readonly pools = new Map<string, number[]>();
  private closed = false;

  constructor(readonly netnsPath: string) {}

  /** An unconnected socket of that kind, made in this netns. */
  take(kind: SocketKind): number {
    if (this.closed) throw new WeftError(ErrorCodes.UPSTREAM, `the socket pool of ${this.netnsPath} is closed`);
    const key = `${kind.family}/${kind.mark}/${kind.transparent}`;
    let pool = this.pools.get(key);
    if (!pool?.length) {
      pool = socketsInNetns(this.netnsPath, { ...kind, count: BATCH });
      this.pools.set(key, pool);
    }
    return pool.pop()!;
  }

  /** Connect a socket of this netns to `to`, resolving once connected (allowHalfOpen). */
  connect(kind: SocketKind, to: ConnectTarget): Promise<net.Socket> {
    const socket = new net.Socket({ fd: this.take(kind), allowHalfOpen: true });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new WeftError(ErrorCodes.UPSTREAM, `connect to ${to.host}:${to.port} timed out after ${to.timeoutMs} ms`));
      }, to.timeoutMs);
      const fail = (err: Error): void => {
        clearTimeout(timer);
        socket.destroy();
        reject(err);
      };
      socket.once('error', fail);
      socket.connect(
        {
          host: to.host,
          port: to.port,
          ...(to.localAddress !== undefined ? { localAddress: to.localAddress, localPort: to.localPort ?? 0 } : {}),
        },
        () => {
          clearTimeout(timer);
          socket.off('error', fail);
          resolve(socket);
        },
      );
    });
  }

  /** The pod is gone: close what is still pooled. */
  close(): void {
    this.closed = true;
    for (const pool of this.pools.values()) for (const fd of pool.splice(0)) closeSync(fd);
    this.pools.clear();
  }
}
