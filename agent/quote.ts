// User text inside a problem or an error message. Configuration values are hostile input as far as
// messages go: a 5 MB value must not become a 5 MB log line, and control characters echoed raw could
// rewrite an operator's terminal.

/** Longest piece of user text repeated in a message. */
export const MAX_QUOTED = 100;

/**
 * C0 and C1 controls, DEL, line and paragraph separators, bidirectional overrides and isolates
 * (text that reads differently from what it is).
 */
// eslint-disable-next-line no-control-regex
const UNSAFE_TEXT = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;
// eslint-disable-next-line no-control-regex
const UNSAFE_AFTER_JSON = /[\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

/** Double-quoted, control characters escaped (JSON style), cut after MAX_QUOTED characters with the full length said. */
export function quote(s: string): string {
  const escape = (t: string): string => JSON.stringify(t).replace(UNSAFE_AFTER_JSON, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  if (s.length <= MAX_QUOTED) return escape(s);
  return `${escape(s.slice(0, MAX_QUOTED))}…(${s.length} characters)`;
}

/** A name (a field name, a key) inside a path: as written when it is short and printable, else quoted. */
export function safeName(s: string): string {
  return s.length > MAX_QUOTED || UNSAFE_TEXT.test(s) ? quote(s) : s;
}
