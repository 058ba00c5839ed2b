// gRPC servers' common chores: stopping one (let calls finish for a moment, then end the ones that
// would not: follow streams never end by themselves), and capping concurrent streams.
import type { Server } from '@grpc/grpc-js';

export function shutdownGrpcServer(server: Server, graceMs = 1000): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, graceMs);
    server.tryShutdown(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/**
 * A cap on concurrent streaming calls (a follower holds a stream for as long as it likes): a slot is
 * taken when a call starts and given back however it ends.
 */
export class StreamSlots {
  private active = 0;

  constructor(public max: number) {
    StreamSlots.check(max);
  }

  static check(max: number): void {
    if (!Number.isInteger(max) || max < 1) throw new RangeError(`maxStreams must be a positive integer, got ${max}`);
  }

  /** False when none is left; otherwise the slot comes back when `call` closes or is cancelled. */
  take(call: { once(event: 'close' | 'cancelled', listener: () => void): unknown }): boolean {
    if (this.active >= this.max) return false;
    this.active++;
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      this.active--;
    };
    call.once('close', release);
    call.once('cancelled', release);
    return true;
  }

  get inUse(): number {
    return this.active;
  }
}
