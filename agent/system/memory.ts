// Giving memory back on request (the admin API's POST /memory/trim, and the housekeeping round): a
// full garbage collection, so what the last burst left unreachable is really freed and V8 can shrink
// its heap, then glibc's free pages go back to the kernel.
import v8 from 'node:v8';
import vm from 'node:vm';
import { mallocTrim } from '../../native/index.js';

let fullGc: (() => void) | undefined;

function gcFunction(): () => void {
  if (!fullGc) {
    // `gc` exists only with --expose-gc; setting the flag at run time and reading it from a fresh
    // context is the documented way to get it without restarting the process.
    v8.setFlagsFromString('--expose-gc');
    fullGc = vm.runInNewContext('gc') as () => void;
  }
  return fullGc;
}

/** Collect everything unreachable, then return free C heap pages to the kernel. */
export function releaseMemory(): { released: boolean; before: NodeJS.MemoryUsage; after: NodeJS.MemoryUsage } {
  const before = process.memoryUsage();
  gcFunction()();
  const released = mallocTrim();
  return { released, before, after: process.memoryUsage() };
}
