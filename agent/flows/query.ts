// Which stored flows a GetFlows request gets, with the semantics of Hubble's local observer:
//  - first (without since): read from the oldest flow forward;
//  - follow with number 0 and no since: no history at all, only what comes next;
//  - otherwise rewind from the newest flow, counting flows that pass the filters, until `number` of
//    them were seen (number 0: the whole store) or, with since, until a flow older than since;
//  - then read forward: flows outside [since, until] (both inclusive) or not passing the filters are
//    skipped, a flow after until ends the read, and without follow at most `number` flows are sent
//    (number 0: no limit).
// So number alone is the newest N matching flows, first+number the oldest N, and since+number the
// first N at or after since. Live flows of a follow request are the server's business.
import { compileFilters, type FlowPredicate } from './filter.js';
import type { Flow, GetFlowsRequest, Timestamp } from './types.js';

const NS_PER_S = 1_000_000_000n;

export function timestampToNs(ts: Timestamp): bigint {
  return BigInt(ts.seconds) * NS_PER_S + BigInt(ts.nanos ?? 0);
}

/** A Timestamp as proto-loader decodes one (seconds as a decimal string, longs: String). */
export function nsToTimestamp(ns: bigint): Timestamp {
  let seconds = ns / NS_PER_S;
  let nanos = ns % NS_PER_S;
  if (nanos < 0n) {
    nanos += NS_PER_S;
    seconds -= 1n;
  }
  return { seconds: seconds.toString(), nanos: Number(nanos) };
}

/** Hubble refuses `first` together with `follow`; returns the reason, or undefined when the request is valid. */
export function validateFlowsRequest(req: GetFlowsRequest): string | undefined {
  if (req.first && req.follow) return 'first cannot be specified with follow';
  return undefined;
}

function flowNs(flow: Flow): bigint {
  return flow.time ? timestampToNs(flow.time) : 0n;
}

/**
 * The stored flows (oldest first) a GetFlows request is answered with before any live flow, in
 * time order. `matches` may be passed when the caller already compiled the request's filters.
 */
export function selectHistory(flows: Flow[], req: GetFlowsRequest, matches?: FlowPredicate): Flow[] {
  const passes = matches ?? compileFilters(req.whitelist, req.blacklist);
  const number = BigInt(req.number ?? 0);
  const since = req.since ? timestampToNs(req.since) : undefined;
  const until = req.until ? timestampToNs(req.until) : undefined;

  let start: number;
  if (req.first && since === undefined) {
    start = 0;
  } else if (req.follow && number === 0n && since === undefined) {
    return [];
  } else {
    start = 0;
    let seen = 0n;
    for (let i = flows.length - 1; i >= 0; i--) {
      const flow = flows[i]!;
      if (!passes(flow)) continue;
      seen++;
      if (since !== undefined) {
        if (flowNs(flow) < since) {
          start = i + 1;
          break;
        }
      } else if (seen === number) {
        start = i;
        break;
      }
    }
  }

  const limit = req.follow ? 0n : number;
  const out: Flow[] = [];
  for (let i = start; i < flows.length; i++) {
    if (limit > 0n && BigInt(out.length) >= limit) break;
    const flow = flows[i]!;
    if (since !== undefined || until !== undefined) {
      const t = flowNs(flow);
      if (until !== undefined && t > until) break;
      if (since !== undefined && t < since) continue;
    }
    if (passes(flow)) out.push(flow);
  }
  return out;
}
