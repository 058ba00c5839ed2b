// User text inside a problem or an error message. Configuration values are hostile input as far as
// messages go: a 5 MB value must not become a 5 MB log line, and control characters echoed raw could
// rewrite an operator's terminal.

/** Longest piece of user text repeated in a message. */
export const MAX_QUOTED = 100;

// eslint-disable-next-line no-control-regex
const UNSAFE_TEXT = /[\u0000-\u001f\u007f-\u009f]/;

/** Double-quoted, control characters escaped (JSON style), cut after MAX_QUOTED characters with the full length said. */
export function quote(s: string): string {
  if (s.length <= MAX_QUOTED) return JSON.stringify(s);
  return `${JSON.stringify(s.slice(0, MAX_QUOTED))}…(${s.length} characters)`;
}

/** A name (a field name, a key) inside a path: as written when it is short and printable, else quoted. */
export function safeName(s: string): string {
  return s.length > MAX_QUOTED || UNSAFE_TEXT.test(s) ? quote(s) : s;
}
