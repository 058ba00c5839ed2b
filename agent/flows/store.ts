// The agent's flow store: a bounded ring of the most recent flows (Hubble's ring buffer), with live
// subscribers. A flow pushed out of a full ring is history, not a loss; a flow a slow subscriber
// could not take, or one the producers could not hand over, is a loss, and every loss is counted
// and reported (LostEvent in the stream, hubble_lost_events_total), never silent.
import type { Flow, LostEventSource } from './types.js';

export interface StoreStatus {
  numFlows: number;
  maxFlows: number;
  seenFlows: number;
  uptimeNs: bigint;
}

export type StoreEvent = { flow: Flow } | { lost: { source: LostEventSource; count: number } };

export class FlowStore {
  private readonly ring: Array<Flow | undefined>;
  private next = 0;
  private size = 0;
  private seen = 0;
  private readonly started = process.hrtime.bigint();
  private readonly subscribers = new Set<(e: StoreEvent) => void>();
  readonly lost = new Map<LostEventSource, number>();

  constructor(
    readonly capacity: number,
    readonly nodeName: string,
  ) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`flow store capacity must be a positive integer, got ${capacity}`);
    this.ring = new Array<Flow | undefined>(capacity);
  }

  add(flow: Flow): void {
    this.ring[this.next] = flow;
    this.next = (this.next + 1) % this.capacity;
    if (this.size < this.capacity) this.size++;
    this.seen++;
    for (const s of this.subscribers) s({ flow });
  }

  /** Flows that never made it into the store (e.g. the kernel's ring overflowed). */
  reportLost(source: LostEventSource, count: number): void {
    if (count <= 0) return;
    this.lost.set(source, (this.lost.get(source) ?? 0) + count);
    for (const s of this.subscribers) s({ lost: { source, count } });
  }

  /** The flows held, oldest first. */
  flows(): Flow[] {
    const out: Flow[] = [];
    const start = this.size < this.capacity ? 0 : this.next;
    for (let i = 0; i < this.size; i++) out.push(this.ring[(start + i) % this.capacity]!);
    return out;
  }

  /** Live subscribers now (a follower is owed every flow added from its subscription on). */
  get followers(): number {
    return this.subscribers.size;
  }

  subscribe(listener: (e: StoreEvent) => void): () => void {
    this.subscribers.add(listener);
    return () => this.subscribers.delete(listener);
  }

  status(): StoreStatus {
    return { numFlows: this.size, maxFlows: this.capacity, seenFlows: this.seen, uptimeNs: process.hrtime.bigint() - this.started };
  }
}
