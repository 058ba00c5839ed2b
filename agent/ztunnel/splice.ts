// Same-node splice, the agent's half (the kernel's half is bpf/splice.bpf.c). The proxy holds two
// sockets for a same-node connection: `down` (accepted from the client app) and `up` (connected to
// the server app). It copies bytes between them like any proxy, and for each direction it tells the
// kernel how many bytes it has written onward. As soon as that equals what the sending app has put
// through the proxy, the kernel sends the app's further bytes straight into the other proxy socket's
// send queue: they reach the peer app in order, without entering this process.
//
// Half-close and resets behave as with copyBidirectional: a FIN still arrives through the proxy
// socket (after every byte the app sent, redirected or not), and an error tears down both sides.
import { Socket } from 'node:net';
import { tcpQueuedBytes } from '../../native/index.js';
import type { SockKey, SpliceCount, SpliceCtl } from '../datapath/layout.js';

/** The datapath operations a splice needs (CaptureDatapath implements them). */
export interface SpliceMaps {
  addSpliceTarget(key: SockKey, fd: number): void;
  armSplice(app: SockKey, ctl: SpliceCtl): void;
  spliceCount(app: SockKey): SpliceCount | undefined;
  endSplice(app: SockKey): void;
}

export interface SpliceEnds {
  /** The proxy's socket accepted from the client app, in the client's netns. */
  down: Socket;
  downNetns: bigint;
  /** The proxy's socket connected to the server app, in the server's netns. */
  up: Socket;
  upNetns: bigint;
}

export interface SpliceResult {
  error?: Error;
  /** Bytes the client app sent and the server app sent, through the proxy and around it. */
  clientBytes: number;
  serverBytes: number;
  /** Of those, bytes the kernel carried around the proxy. */
  splicedClientBytes: number;
  splicedServerBytes: number;
}

/** The fd under a net.Socket (Node keeps it on the private handle). */
function socketFd(s: Socket): number | undefined {
  const fd = (s as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}

/** A connected socket's key, and its peer's: the app socket at the other end, same netns. */
function keysOf(s: Socket, netnsCookie: bigint): { own: SockKey; peer: SockKey } | undefined {
  if (!s.localAddress || !s.localPort || !s.remoteAddress || !s.remotePort) return undefined;
  const local = { ip: s.localAddress, port: s.localPort };
  const remote = { ip: s.remoteAddress, port: s.remotePort };
  return { own: { netnsCookie, local, remote }, peer: { netnsCookie, local: remote, remote: local } };
}

/** One side of the splice: the proxy socket, the app socket behind it, and the byte total of the
 * other app's direction, which this socket carries (taken from TCP_INFO before the fd closes). */
interface Side {
  socket: Socket;
  fd: number;
  own: SockKey;
  app: SockKey;
  carried?: number;
}

function sideOf(socket: Socket, netns: bigint): Side | undefined {
  const fd = socketFd(socket);
  const keys = keysOf(socket, netns);
  return fd === undefined || !keys ? undefined : { socket, fd, own: keys.own, app: keys.peer };
}

/**
 * Everything the kernel queued on the proxy socket: what we wrote plus what was redirected into it
 * by the app on the other side (`from`). When nothing was, our own count is the whole story and
 * TCP_INFO (not cheap) is not asked.
 */
function sample(maps: SpliceMaps, side: Side, from: Side): void {
  try {
    if (maps.spliceCount(from.app)?.redirected) side.carried = Number(tcpQueuedBytes(side.fd));
  } catch {
    // the fd is already gone: the agent-side count stands in
  }
}

/**
 * Copy both ways and splice each direction as soon as that is safe. Resolves when both sides are
 * closed, with byte counts from the kernel (through the proxy and around it).
 */
export function spliceBidirectional(maps: SpliceMaps, ends: SpliceEnds): Promise<SpliceResult> {
  const down = sideOf(ends.down, ends.downNetns);
  const up = sideOf(ends.up, ends.upNetns);
  // Without both proxy sockets in the sockhash there is nothing to redirect into: plain copying.
  // (The kernel takes only established sockets: a client that already half-closed is copied.)
  let sides = down && up ? { down, up } : undefined;
  try {
    if (sides) for (const s of [sides.down, sides.up]) maps.addSpliceTarget(s.own, s.fd);
  } catch {
    sides = undefined;
  }

  // Best effort: when the control map is full a direction simply stays with the proxy.
  const arm = (app: SockKey, ctl: SpliceCtl): void => {
    try {
      maps.armSplice(app, ctl);
    } catch {
      /* not armed: every message still goes to the proxy */
    }
  };

  return new Promise((resolve) => {
    let open = 2;
    let error: Error | undefined;
    const fail = (err: Error): void => {
      if (!error && sides) {
        // Nothing more may go around a connection being torn down; count what did first.
        for (const s of [sides.down, sides.up]) {
          arm(s.app, { target: s === sides.down ? sides.up.own : sides.down.own, forwarded: 0n, armed: false });
          if (s.carried === undefined) sample(maps, s, s === sides.down ? sides.up : sides.down);
        }
      }
      error ??= err;
      ends.down.destroy();
      ends.up.destroy();
    };
    const done = (): void => {
      if (--open > 0) return;
      try {
        if (sides) for (const s of [sides.down, sides.up]) maps.endSplice(s.app);
      } catch {
        // entries left behind go when their socket closes (sockops) or the next agent starts
      }
      // What the client sent is what `up` carried to the server, and the other way round.
      const clientBytes = sides?.up.carried ?? ends.down.bytesRead;
      const serverBytes = sides?.down.carried ?? ends.up.bytesRead;
      resolve({
        ...(error ? { error } : {}),
        clientBytes,
        serverBytes,
        splicedClientBytes: Math.max(0, clientBytes - ends.up.bytesWritten),
        splicedServerBytes: Math.max(0, serverBytes - ends.down.bytesWritten),
      });
    };
    for (const s of [ends.down, ends.up]) {
      s.setNoDelay(true);
      s.once('error', fail);
      s.once('close', done);
    }
    const forward = (from: Socket, to: Side | undefined, fromSide: Side | undefined): void => {
      const target = to?.own;
      const app = fromSide?.app;
      new Pump(
        from,
        to?.socket ?? (from === ends.down ? ends.up : ends.down),
        (forwarded) => {
          if (!error && app && target) arm(app, { target, forwarded: BigInt(forwarded), armed: true });
        },
        // The sending app is done and everything is queued on `to`: its total, before our FIN
        // takes a sequence number of its own.
        () => to && fromSide && sample(maps, to, fromSide),
      ).start();
    };
    forward(ends.down, sides?.up, sides?.down);
    forward(ends.up, sides?.down, sides?.up);
  });
}

/**
 * One direction: read, write, pause on backpressure, pass the end on. `onCaughtUp(n)` is called
 * whenever every byte read so far (n in all) has been taken by the kernel on the other side: that
 * is the moment the app's next bytes may go around us.
 */
class Pump {
  private forwarded = 0;
  private pending = 0;
  private ended = false;

  constructor(
    private readonly from: Socket,
    private readonly to: Socket,
    private readonly onCaughtUp: (forwarded: number) => void,
    private readonly beforeEnd: () => void,
  ) {}

  start(): void {
    const { from, to } = this;
    from.on('data', (chunk: Buffer) => {
      this.pending++;
      const more = to.write(chunk, (err) => {
        this.pending--;
        if (err) return;
        this.forwarded += chunk.length;
        if (this.pending > 0 || to.destroyed) return;
        if (this.ended) this.end();
        else this.onCaughtUp(this.forwarded);
      });
      if (!more) {
        from.pause();
        to.once('drain', () => from.resume());
      }
    });
    from.once('end', () => {
      this.ended = true;
      if (this.pending === 0) this.end();
    });
    // Armed before the first byte: an app that has not sent anything yet is already caught up.
    this.onCaughtUp(0);
    from.resume();
  }

  private end(): void {
    this.beforeEnd();
    this.to.end();
  }
}
