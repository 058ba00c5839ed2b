// The data path's optional fast paths. Each can be switched off (`--fast-paths`, or the admin API at
// run time) so the benchmark can show what it buys and an operator can rule it out.
//   splice: same-node connections skip HBONE, and once authorized the two application sockets are
//           joined in the kernel (sockhash + sk_msg redirect): bytes no longer pass through the proxy.
//   hbone:  HBONE tuned for throughput: the copy into and out of a tunnel batches the chunks of one
//           event-loop turn into one write (HTTP/2 hands them over a DATA frame at a time).
import { ErrorCodes, WeftError } from '../errors.js';

export interface FastPaths {
  splice: boolean;
  hbone: boolean;
}

export const FAST_PATH_NAMES = ['splice', 'hbone'] as const satisfies readonly (keyof FastPaths)[];

const ALL_FAST_PATHS: Readonly<FastPaths> = { splice: true, hbone: true };
const NO_FAST_PATHS: Readonly<FastPaths> = { splice: false, hbone: false };

/** `all`, `none`, or a comma-separated list of fast path names. */
export function parseFastPaths(text: string, what = '--fast-paths'): FastPaths {
  const words = text
    .split(',')
    .map((w) => w.trim())
    .filter(Boolean);
  if (words.length === 0) throw new WeftError(ErrorCodes.USAGE, `${what}: empty (say all, none, or some of ${FAST_PATH_NAMES.join(', ')})`);
  if (words.length === 1 && words[0] === 'all') return { ...ALL_FAST_PATHS };
  if (words.length === 1 && words[0] === 'none') return { ...NO_FAST_PATHS };
  const out: FastPaths = { ...NO_FAST_PATHS };
  for (const w of words) {
    if (!(FAST_PATH_NAMES as readonly string[]).includes(w)) {
      throw new WeftError(ErrorCodes.USAGE, `${what}: unknown fast path "${w}" (known: ${FAST_PATH_NAMES.join(', ')}, or all, none)`);
    }
    out[w as keyof FastPaths] = true;
  }
  return out;
}

export function formatFastPaths(f: FastPaths): string {
  const on = FAST_PATH_NAMES.filter((n) => f[n]);
  return on.length ? on.join(',') : 'none';
}
