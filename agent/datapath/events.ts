// The capture event stream: the ring buffer the eBPF programs write, decoded, counted and handed to
// whoever listens (the flow pipeline, the access log, the admin stats). Losses are counted, never silent.
import { RingBufferConsumer } from '../../native/index.js';
import type { Logger } from '../log.js';
import type { CaptureDatapath } from './capture.js';
import { decodeEvent, type CaptureEvent } from './layout.js';

export interface CaptureStats {
  steered: { outbound: number; inbound: number };
  passed: Record<string, number>;
  refused: Record<string, number>;
  closed: number;
  /** Events the kernel could not put in the ring (it was full). */
  lost: string;
  /** Records that did not decode. */
  malformed: number;
}

/** Offset from CLOCK_MONOTONIC (bpf_ktime_get_ns, process.hrtime) to wall-clock nanoseconds. */
const monotonicToWallNs = BigInt(Date.now()) * 1_000_000n - process.hrtime.bigint();
export function eventTime(e: CaptureEvent): Date {
  return new Date(Number((e.monotonicNs + monotonicToWallNs) / 1_000_000n));
}

export class CaptureEventStream {
  private readonly consumer: RingBufferConsumer;
  private readonly listeners = new Set<(e: CaptureEvent) => void>();
  private readonly stats: Omit<CaptureStats, 'lost'> = {
    steered: { outbound: 0, inbound: 0 },
    passed: {},
    refused: {},
    closed: 0,
    malformed: 0,
  };

  constructor(
    private readonly datapath: CaptureDatapath,
    private readonly log: Logger,
  ) {
    this.consumer = new RingBufferConsumer(datapath.events, (records) => this.onBatch(records));
  }

  subscribe(listener: (e: CaptureEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  snapshot(): CaptureStats {
    return {
      ...structuredClone(this.stats),
      lost: this.datapath.lostEvents().toString(),
    };
  }

  private onBatch(records: Buffer[]): void {
    for (const record of records) {
      let event: CaptureEvent;
      try {
        event = decodeEvent(record);
      } catch (err) {
        this.stats.malformed++;
        this.log.warn({ err: String(err), bytes: record.length }, 'malformed capture event');
        continue;
      }
      this.count(event);
      for (const listener of this.listeners) listener(event);
    }
  }

  private count(e: CaptureEvent): void {
    switch (e.kind) {
      case 'STEERED':
        this.stats.steered[e.direction]++;
        break;
      case 'PASSED':
        this.stats.passed[e.reason] = (this.stats.passed[e.reason] ?? 0) + 1;
        break;
      case 'REFUSED':
        this.stats.refused[e.reason] = (this.stats.refused[e.reason] ?? 0) + 1;
        break;
      case 'CLOSED':
        this.stats.closed++;
        break;
    }
  }

  close(): void {
    this.consumer.close();
    this.listeners.clear();
  }
}
