// Durations as operators write them (`24h`, `90m`, `1h30m`, `5s`), in whole seconds.
import { quote } from '../quote.js';

const DURATION = /^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$/;

/** Seconds in `text`, or undefined when it is not a positive duration of hours, minutes and seconds. */
export function parseDurationSeconds(text: string): number | undefined {
  const m = DURATION.exec(text);
  if (!m || text === '') return undefined;
  const seconds = Number(m[1] ?? 0) * 3600 + Number(m[2] ?? 0) * 60 + Number(m[3] ?? 0);
  return seconds > 0 && Number.isSafeInteger(seconds) ? seconds : undefined;
}

/** Why `text` is not a duration (for ConfigProblem reasons and usage errors), or undefined. */
export function durationProblem(text: string): string | undefined {
  return parseDurationSeconds(text) === undefined ? `${quote(text)} is not a positive duration (such as 24h, 90m, 1h30m, 5s)` : undefined;
}

/** `86400` → `24h`, `90` → `1m30s`. */
export function formatDuration(seconds: number): string {
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  return `${h ? `${h}h` : ''}${m ? `${m}m` : ''}${s || (!h && !m) ? `${s}s` : ''}`;
}
