// Revoked node credentials: a `revoked-nodes` file in the controller's state directory, one node name
// or certificate serial (hex, colons allowed) per line, `#` starts a comment. The controller re-reads
// it when it changes (a directory watch, and a cheap stat before each decision so a change is in force
// for the very next call even where watches do not fire) and refuses a revoked node's calls.
// Node credentials carry no CRL or OCSP pointer: the controller is their only relying party.
import { appendFileSync, mkdirSync, readFileSync, statSync, watch, type FSWatcher } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { ErrorCodes, WeftError, errorMessage } from '../errors.js';
import { isValidNodeName } from '../identity/spiffe.js';
import type { Logger } from '../log.js';

export const REVOKED_NODES_FILE = 'revoked-nodes';
/** A list this long is a mistake (or an attack on the controller's memory), not a revocation list. */
const MAX_FILE_BYTES = 1 << 20;

export interface Revocations {
  nodes: Set<string>;
  serials: Set<string>;
  /** Lines that are neither a node name nor a serial, with their line numbers. */
  invalid: Array<{ line: number; text: string }>;
}

/** Serial numbers compare as hex without colons, upper case, without leading zeros. */
export function normalizeSerial(serial: string): string {
  return serial.replace(/:/g, '').toUpperCase().replace(/^0+(?=.)/, '');
}

const SERIAL = /^[0-9A-Fa-f]{2}(:?[0-9A-Fa-f]{2})*$/;

export function parseRevocations(text: string): Revocations {
  const out: Revocations = { nodes: new Set(), serials: new Set(), invalid: [] };
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/#.*/, '').trim();
    if (line === '') return;
    // A line may be either: a node named "beef" and a serial 0xBEEF are both revoked by "beef".
    let known = false;
    if (isValidNodeName(line)) {
      out.nodes.add(line);
      known = true;
    }
    if (SERIAL.test(line)) {
      out.serials.add(normalizeSerial(line));
      known = true;
    }
    if (!known) out.invalid.push({ line: i + 1, text: line });
  });
  return out;
}

/** Appends one entry (a node name or a serial) to the state directory's revocation list; returns the file. */
export function appendRevocation(stateDir: string, entry: { node?: string; serial?: string }): string {
  const { node, serial } = entry;
  if ((node === undefined) === (serial === undefined)) throw new WeftError(ErrorCodes.USAGE, 'give exactly one of --node and --serial');
  if (node !== undefined && !isValidNodeName(node)) throw new WeftError(ErrorCodes.USAGE, `--node: invalid node name ${JSON.stringify(node)}`);
  if (serial !== undefined && !SERIAL.test(serial)) throw new WeftError(ErrorCodes.USAGE, `--serial: ${JSON.stringify(serial)} is not a hex serial number`);
  const path = join(stateDir, REVOKED_NODES_FILE);
  try {
    mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    // Append, never rewrite: a controller reading the file concurrently sees the old or the new list.
    appendFileSync(path, `${node ?? normalizeSerial(serial as string)}\n`, { mode: 0o600 });
  } catch (err) {
    throw new WeftError(ErrorCodes.CONTROLLER, `cannot write ${path}: ${errorMessage(err)}`, { cause: err });
  }
  return path;
}

export class RevocationList {
  private current: Revocations = { nodes: new Set(), serials: new Set(), invalid: [] };
  /** dev:ino:size:mtime of what `current` was read from; '' when the file is absent. */
  private seen: string | undefined;
  private watcher: FSWatcher | undefined;

  constructor(
    readonly path: string,
    private readonly log: Logger,
    /** Called after a re-read changed the list (to end open streams of newly revoked nodes). */
    private readonly onChange: () => void = () => undefined,
  ) {
    this.refresh();
  }

  /** Watches the file's directory (the file may not exist yet, and editors replace it by renaming). */
  start(): void {
    if (this.watcher) return;
    try {
      this.watcher = watch(dirname(this.path), { persistent: false }, (_event, file) => {
        if (file === null || file === basename(this.path)) this.refresh();
      });
      this.watcher.on('error', (err) => this.log.warn({ file: this.path, err: errorMessage(err) }, 'revocation list watch failed; it is still re-read before each call'));
    } catch (err) {
      this.log.warn({ file: this.path, err: errorMessage(err) }, 'revocation list cannot be watched; it is still re-read before each call');
    }
  }

  close(): void {
    this.watcher?.close();
    this.watcher = undefined;
  }

  size(): number {
    return this.current.nodes.size + this.current.serials.size;
  }

  /** The entry that revokes this node credential, or undefined. */
  revoked(node: string, serial: string | undefined): string | undefined {
    this.refresh();
    if (this.current.nodes.has(node)) return node;
    const s = serial === undefined ? undefined : normalizeSerial(serial);
    return s !== undefined && this.current.serials.has(s) ? s : undefined;
  }

  /** Re-reads the file if it changed since the last read; true when the list changed. */
  refresh(): boolean {
    let key: string;
    try {
      const st = statSync(this.path, { bigint: true });
      key = `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}`;
      if (st.size > BigInt(MAX_FILE_BYTES)) {
        if (key !== this.seen) this.log.error({ file: this.path, bytes: Number(st.size) }, 'revocation list too large; the last one read stays in force');
        this.seen = key;
        return false;
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        this.log.error({ file: this.path, err: errorMessage(err) }, 'cannot read the revocation list; the last one read stays in force');
        return false;
      }
      key = '';
    }
    if (key === this.seen) return false;
    let next: Revocations;
    if (key === '') {
      next = { nodes: new Set(), serials: new Set(), invalid: [] };
    } else {
      try {
        next = parseRevocations(readFileSync(this.path, 'utf8'));
      } catch (err) {
        this.log.error({ file: this.path, err: errorMessage(err) }, 'cannot read the revocation list; the last one read stays in force');
        return false;
      }
    }
    const first = this.seen === undefined;
    this.seen = key;
    for (const bad of next.invalid) {
      this.log.warn({ file: this.path, line: bad.line, entry: bad.text }, 'revocation list: line is neither a node name nor a hex serial; ignored');
    }
    const changed = !sameSet(next.nodes, this.current.nodes) || !sameSet(next.serials, this.current.serials);
    this.current = next;
    if (changed || first) {
      this.log.info({ file: this.path, nodes: [...next.nodes].sort(), serials: next.serials.size }, 'revocation list loaded');
    }
    if (changed && !first) this.onChange();
    return changed;
  }
}

function sameSet(a: Set<string>, b: Set<string>): boolean {
  return a.size === b.size && [...a].every((x) => b.has(x));
}
