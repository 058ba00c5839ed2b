// weft's version, from package.json (found from both the source tree and the build).
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

let cached: string | undefined;

export function weftVersion(): string {
  if (cached) return cached;
  const candidates = ['../../package.json', '../../../package.json'].map((p) => fileURLToPath(new URL(p, import.meta.url)));
  const file = candidates.find((f) => existsSync(f) && (JSON.parse(readFileSync(f, 'utf8')) as { name?: string }).name === 'weft');
  cached = file ? (JSON.parse(readFileSync(file, 'utf8')) as { version: string }).version : '0.0.0';
  return cached;
}
