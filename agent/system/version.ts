// weft's version, from package.json (found by the asset locator, from the source tree and the build).
import { readFileSync } from 'node:fs';
import { packageJsonPath } from './assets.js';

let cached: string | undefined;

export function weftVersion(): string {
  if (cached) return cached;
  try {
    cached = (JSON.parse(readFileSync(packageJsonPath(), 'utf8')) as { version: string }).version;
  } catch {
    cached = '0.0.0'; // no repository around this build: the version is unknown, not an error
  }
  return cached;
}
