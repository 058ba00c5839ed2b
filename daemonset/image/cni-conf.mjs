// weft-cni in a node's CNI chain: install (the binary into the bin dir, an entry at the end of the
// primary network's plugin list), keep it there when the primary CNI rewrites its file, and restore
// the node on uninstall. Run by weft-node (the agent container's entry) against the host's dirs.
//
// Which file: the runtime (containerd, CRI-O, via libcni) uses the first file of the conf dir, in
// lexical order, whose name ends in .conf, .conflist or .json: that one gets the entry. A single-
// plugin .conf is rewritten as a .conflist of the same network (its original kept beside it as
// `<name>.weft-orig`, an extension libcni ignores) and put back on uninstall.
//
// Every write is to a temporary file in the same directory, then a rename: the runtime never reads a
// half-written file, and replacing the binary never hits "text file busy" while a copy is running.
import { chmodSync, copyFileSync, existsSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const CONF_EXTENSIONS = ['.conf', '.conflist', '.json'];
const ORIGINAL_SUFFIX = '.weft-orig';

export class CniConfError extends Error {
  constructor(message) {
    super(message);
    this.name = 'CniConfError';
  }
}

/** The network configuration files of `dir`, in the order libcni reads them. */
export function confFiles(dir) {
  return readdirSync(dir)
    .filter((n) => CONF_EXTENSIONS.some((e) => n.endsWith(e)) && !n.startsWith('.'))
    .filter((n) => statSync(join(dir, n)).isFile())
    .sort();
}

function parse(path) {
  let doc;
  try {
    doc = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new CniConfError(`${path}: not JSON (${err instanceof Error ? err.message : String(err)})`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new CniConfError(`${path}: not a JSON object`);
  return doc;
}

function writeAtomic(path, text, mode) {
  const tmp = `${path}.weft-tmp`;
  writeFileSync(tmp, text, { mode });
  chmodSync(tmp, mode);
  renameSync(tmp, path);
}

const isWeft = (type) => (p) => typeof p === 'object' && p !== null && p.type === type;

/**
 * The conflist `doc` with `entry` as its last plugin (an older weft entry anywhere in the list is
 * replaced). Pure: the caller writes it.
 */
function withEntry(doc, entry) {
  if (!Array.isArray(doc.plugins)) throw new CniConfError('plugins: not a list (a .conflist needs one)');
  const others = doc.plugins.filter((p) => !isWeft(entry.type)(p));
  if (others.length === 0) throw new CniConfError('plugins: no primary plugin to chain after');
  return { ...doc, plugins: [...others, entry] };
}

/** The conflist `doc` without weft's entries. Pure. */
function withoutEntry(doc, type) {
  if (!Array.isArray(doc.plugins)) return doc;
  return { ...doc, plugins: doc.plugins.filter((p) => !isWeft(type)(p)) };
}

/** A single-plugin network configuration (.conf) as the conflist libcni would make of it. Pure. */
function confToConflist(conf) {
  const { cniVersion, name, ...plugin } = conf;
  if (typeof plugin.type !== 'string') throw new CniConfError('type: missing (not a network configuration)');
  return { cniVersion: cniVersion ?? '0.3.1', name: name ?? plugin.type, plugins: [{ ...plugin }] };
}

const text = (doc) => `${JSON.stringify(doc, null, 2)}\n`;

/**
 * Puts `entry` at the end of the primary network's plugin list in `confDir` (idempotent). Returns the
 * file it wrote, the file it found already right, or undefined when the directory has no network
 * configuration yet (the primary CNI has not written it: call again later).
 */
export function ensureEntry(confDir, entry) {
  const files = confFiles(confDir);
  const first = files[0];
  if (first === undefined) return undefined;
  const path = join(confDir, first);
  const mode = statSync(path).mode & 0o777;
  const doc = parse(path);
  if (Array.isArray(doc.plugins)) {
    const next = withEntry(doc, entry);
    if (JSON.stringify(next) === JSON.stringify(doc)) return { file: path, changed: false };
    writeAtomic(path, text(next), mode);
    return { file: path, changed: true };
  }
  // A single-plugin .conf (or .json): becomes `<name>.conflist`, which sorts right after it, and the
  // .conf is moved aside so the conflist is the first file.
  const base = first.replace(/\.(conf|json)$/, '');
  const target = join(confDir, `${base}.conflist`);
  writeAtomic(target, text(withEntry(confToConflist(doc), entry)), mode);
  renameSync(path, join(confDir, `${first}${ORIGINAL_SUFFIX}`));
  return { file: target, changed: true, convertedFrom: path };
}

/** Removes weft's entries from every configuration in `confDir`, and puts converted .conf files back. */
export function removeEntries(confDir, type) {
  const touched = [];
  for (const name of readdirSync(confDir)) {
    if (!name.endsWith(ORIGINAL_SUFFIX)) continue;
    const original = name.slice(0, -ORIGINAL_SUFFIX.length);
    const converted = join(confDir, `${original.replace(/\.(conf|json)$/, '')}.conflist`);
    rmSync(converted, { force: true });
    renameSync(join(confDir, name), join(confDir, original));
    touched.push(join(confDir, original));
  }
  for (const name of confFiles(confDir)) {
    const path = join(confDir, name);
    let doc;
    try {
      doc = parse(path);
    } catch {
      continue; // not ours to judge
    }
    const next = withoutEntry(doc, type);
    if (JSON.stringify(next) === JSON.stringify(doc)) continue;
    writeAtomic(path, text(next), statSync(path).mode & 0o777);
    touched.push(path);
  }
  return touched;
}

/** Copies the plugin binary into `binDir` as `name` (0755), replacing an older copy atomically. */
export function installBinary(binary, binDir, name) {
  if (!existsSync(binary)) throw new CniConfError(`${binary}: the weft-cni binary is not in this image`);
  const target = join(binDir, name);
  const tmp = join(binDir, `.${name}.weft-tmp`);
  copyFileSync(binary, tmp);
  chmodSync(tmp, 0o755);
  renameSync(tmp, target);
  return target;
}

export function removeBinary(binDir, name) {
  rmSync(join(binDir, name), { force: true });
}
