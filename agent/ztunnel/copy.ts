// Copying bytes both ways between two duplex streams (TCP sockets, HTTP/2 CONNECT streams), as a
// proxy must: backpressure (pipe pauses the faster side), half-close (one side's end becomes the
// other side's end while the reverse direction goes on), and an error on either side tears down both.
import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';

export interface CopyResult {
  error?: Error;
}

export function copyBidirectional(a: Duplex, b: Duplex): Promise<CopyResult> {
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
    a.pipe(b);
    b.pipe(a);
    a.resume();
    b.resume();
  });
}
