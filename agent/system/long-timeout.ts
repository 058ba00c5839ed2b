// A timer for any delay. Node's setTimeout takes at most 2^31-1 ms (~24.8 days): a longer delay
// fires after 1 ms instead (with a TimeoutOverflowWarning), so a GetFlows `until` a year ahead would
// end the stream at once. This one waits in steps no longer than the maximum, against a deadline.

/** The longest delay setTimeout honours. */
export const MAX_TIMEOUT_MS = 2 ** 31 - 1;

export interface LongTimer {
  /** Cancels the timer (idempotent). */
  clear(): void;
}

/** Calls `fn` once, `ms` milliseconds from now (≤ 0, NaN: on the next timer turn; Infinity: never). */
export function setLongTimeout(fn: () => void, ms: number, now: () => number = Date.now): LongTimer {
  let timer: NodeJS.Timeout | undefined;
  let cleared = false;
  if (ms === Infinity) return { clear: () => undefined };
  const deadline = now() + (Number.isFinite(ms) ? Math.max(0, ms) : 0);
  const arm = (): void => {
    const left = deadline - now();
    if (left <= 0) {
      timer = undefined;
      fn();
      return;
    }
    timer = setTimeout(arm, Math.min(left, MAX_TIMEOUT_MS));
  };
  timer = setTimeout(arm, Math.min(Math.max(0, deadline - now()), MAX_TIMEOUT_MS));
  return {
    clear: () => {
      if (cleared) return;
      cleared = true;
      clearTimeout(timer);
    },
  };
}
