// Copying bytes both ways between two duplex streams (TCP sockets, HTTP/2 CONNECT streams), as a
// proxy must: backpressure (the faster side is paused), half-close (one side's end becomes the
// other side's end while the reverse direction goes on), and an error on either side tears down both.
import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';

export interface CopyResult {
  error?: Error;
}

export interface CopyOptions {
  /**
   * The HBONE fast path: a lean pump that corks the destination while a burst of chunks arrives, so
   * the chunks HTTP/2 hands over one DATA piece at a time leave in one write(v) call instead of many.
   * Off: `pipe()`, as before.
   */
  tuned?: boolean;
}

export function copyBidirectional(a: Duplex, b: Duplex, options: CopyOptions = {}): Promise<CopyResult> {
  return new Promise((resolve) => {
    let open = 2;
    let error: Error | undefined;
    const done = (): void => {
      if (--open === 0) resolve(error ? { error } : {});
    };
    const fail = (err: Error): void => {
      error ??= err;
      // A reset on one side is a reset on the other: never leave a half-dead pair behind.
      a.destroy();
      b.destroy();
    };
    for (const s of [a, b]) {
      if (s instanceof Socket) s.setNoDelay(true);
      s.once('error', fail);
      s.once('close', done);
    }
    if (options.tuned) {
      pump(a, b);
      pump(b, a);
    } else {
      a.pipe(b);
      b.pipe(a);
    }
    a.resume();
    b.resume();
  });
}

// While corked, a burst may overshoot the destination's high-water mark up to this before the source
// is paused: enough to gather one event-loop turn of HTTP/2 DATA pieces, and still bounded.
const CORKED_LIMIT = 256 * 1024;
// Smaller chunks (a request, a response) go straight out: corking them would only add a turn's delay
// and the cost of scheduling the uncork, with nothing to gather.
const CORK_MIN_CHUNK = 4 * 1024;

/**
 * One direction of the copy: src's chunks into dst. From a large chunk on, dst stays corked until the
 * end of the event-loop turn (setImmediate: HTTP/2 hands each DATA piece over in its own callback, so
 * a nextTick would uncork after every one), then the turn's chunks go out in one writev. src is paused while dst is over its
 * high-water mark after the flush, or over CORKED_LIMIT during the burst, and resumed on 'drain'.
 */
function pump(src: Duplex, dst: Duplex): void {
  let corked = false;
  const uncork = (): void => {
    corked = false;
    dst.uncork();
    if (dst.writableNeedDrain) src.pause();
  };
  src.on('data', (chunk: Buffer) => {
    if (!corked && chunk.length >= CORK_MIN_CHUNK) {
      corked = true;
      dst.cork();
      setImmediate(uncork);
    }
    if (!dst.write(chunk) && dst.writableLength >= CORKED_LIMIT) src.pause();
  });
  dst.on('drain', () => src.resume());
  src.once('end', () => dst.end());
}
