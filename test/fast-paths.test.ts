// The --fast-paths / WEFT_FAST_PATHS / POST /fast_paths?set= syntax.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatFastPaths, parseFastPaths } from '../agent/ztunnel/fast-paths.js';
import { WeftError } from '../agent/errors.js';

test('fast paths: all, none, a list; unknown names are refused with the known ones', () => {
  assert.deepEqual(parseFastPaths('all'), { splice: true, hbone: true });
  assert.deepEqual(parseFastPaths('none'), { splice: false, hbone: false });
  assert.deepEqual(parseFastPaths('splice'), { splice: true, hbone: false });
  assert.deepEqual(parseFastPaths(' hbone , splice '), { splice: true, hbone: true });
  assert.throws(() => parseFastPaths(' , '), /--fast-paths: empty/);
  assert.equal(formatFastPaths(parseFastPaths('all')), 'splice,hbone');
  assert.equal(formatFastPaths(parseFastPaths('none')), 'none');
  assert.throws(
    () => parseFastPaths('splice,warp', 'WEFT_FAST_PATHS'),
    (e: unknown) => e instanceof WeftError && /WEFT_FAST_PATHS: unknown fast path "warp" \(known: splice, hbone, or all, none\)/.test(e.message),
  );
  assert.throws(() => parseFastPaths('all,splice'), /unknown fast path "all"/);
});
