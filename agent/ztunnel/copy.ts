// Copying bytes both ways between two sockets, as a proxy must: backpressure (pipe pauses the faster
// side), half-close (one side's FIN becomes the other side's FIN while the reverse direction goes on),
// and an error or reset on either side tears down both.
import type { Socket } from 'node:net';

export interface CopyResult {
  /** bytes from `downstream` to `upstream` */
  sent: number;
  /** bytes from `upstream` to `downstream` */
  received: number;
  error?: Error;
}

export function copyBidirectional(downstream: Socket, upstream: Socket): Promise<CopyResult> {
  return new Promise((resolve) => {
    let open = 2;
    let error: Error | undefined;
    const done = (): void => {
      if (--open > 0) return;
      resolve({ sent: upstream.bytesWritten, received: downstream.bytesWritten, ...(error ? { error } : {}) });
    };
    const fail = (err: Error): void => {
      error ??= err;
      // A reset on one side is a reset on the other: never leave a half-dead pair behind.
      downstream.destroy();
      upstream.destroy();
    };
    for (const s of [downstream, upstream]) {
      s.setNoDelay(true);
      s.once('error', fail);
      s.once('close', done);
    }
    downstream.pipe(upstream);
    upstream.pipe(downstream);
    downstream.resume();
    upstream.resume();
  });
}
