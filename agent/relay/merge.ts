// The relay's history: every node answers the same request with its own flows, oldest first; a
// k-way merge by time makes one stream of them, and number/first then apply to the merged stream
// (the last N, or the first N, of the whole cluster). Lost-event responses keep their place in time
// and are never cut away: a loss is reported even when the flows around it fall outside the window.
import { timestampToNs } from '../flows/query.js';
import type { GetFlowsResponse } from '../flows/types.js';

function timeOf(resp: GetFlowsResponse): bigint {
  const ts = resp.time ?? resp.flow?.time;
  return ts ? timestampToNs(ts) : 0n;
}

/**
 * Merges N time-ordered streams: a response is emitted once every stream still open has one waiting
 * (or has ended), always the oldest of the heads; ties keep the order of the sources.
 */
export class KWayMerge {
  private readonly queues = new Map<string, GetFlowsResponse[]>();
  private readonly open = new Set<string>();

  constructor(
    sources: readonly string[],
    private readonly emit: (resp: GetFlowsResponse) => void,
  ) {
    for (const s of sources) {
      this.queues.set(s, []);
      this.open.add(s);
    }
  }

  /** How many responses wait for `source`'s peers (to pause a stream that runs far ahead). */
  buffered(source: string): number {
    return this.queues.get(source)?.length ?? 0;
  }

  push(source: string, resp: GetFlowsResponse): void {
    this.queues.get(source)!.push(resp);
    this.drain();
  }

  end(source: string): void {
    this.open.delete(source);
    this.drain();
  }

  get done(): boolean {
    return this.open.size === 0 && [...this.queues.values()].every((q) => q.length === 0);
  }

  private drain(): void {
    for (;;) {
      let best: string | undefined;
      let bestTime = 0n;
      for (const [source, q] of this.queues) {
        if (q.length === 0) {
          if (this.open.has(source)) return; // must wait for this stream's next response
          continue;
        }
        const t = timeOf(q[0]!);
        if (best === undefined || t < bestTime) {
          best = source;
          bestTime = t;
        }
      }
      if (best === undefined) return;
      this.emit(this.queues.get(best)!.shift()!);
    }
  }
}

/**
 * number/first over the merged history. `first`: the first N flows, then `onFull` (the rest is not
 * needed). Otherwise with N > 0: the last N flows, released by `finish()`. N = 0: everything, as it comes.
 */
export class HistoryWindow {
  private readonly window: GetFlowsResponse[] = [];
  private readonly earlierLosses: GetFlowsResponse[] = [];
  private flows = 0;
  private full = false;

  constructor(
    private readonly number: number,
    private readonly first: boolean,
    private readonly emit: (resp: GetFlowsResponse) => void,
    private readonly onFull: () => void = () => undefined,
  ) {}

  add(resp: GetFlowsResponse): void {
    if (this.full) return;
    if (this.number === 0) return this.emit(resp);
    if (this.first) {
      this.emit(resp);
      if (resp.flow && ++this.flows >= this.number) {
        this.full = true;
        this.onFull();
      }
      return;
    }
    this.window.push(resp);
    if (resp.flow) this.flows++;
    while (this.flows > this.number) {
      const out = this.window.shift()!;
      if (out.flow) this.flows--;
      else this.earlierLosses.push(out);
    }
  }

  finish(): void {
    for (const r of this.earlierLosses) this.emit(r);
    for (const r of this.window) this.emit(r);
    this.earlierLosses.length = 0;
    this.window.length = 0;
  }
}
