// The flow benchmark with tiny sizes, so it cannot rot: every stage runs end to end and reports
// sane figures. No timing is asserted (this machine's speed is not the test's business).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runFlowBench, type FlowBenchResults } from '../bench/flows.js';

const dir = mkdtempSync(join(tmpdir(), 'weft-bench-smoke-'));
after(() => rmSync(dir, { recursive: true, force: true }));

test('the flow bench runs end to end with tiny sizes and writes its results', async () => {
  const r = await runFlowBench({ ingestFlows: 2_000, repetitions: 1, rings: [64, 256], followRate: 2_000, followSeconds: 0.25, resultsDir: dir, print: false });
  assert.deepEqual(
    r.ingest.map((i) => i.stage),
    ['generate', 'store', 'store+metrics', 'store+metrics+pack', 'pipeline (+flow log)'],
  );
  for (const i of r.ingest) assert.ok(i.flowsPerSecond > 0 && Number.isFinite(i.flowsPerSecond), `${i.stage}: ${i.flowsPerSecond}`);
  assert.deepEqual(
    r.history.map((h) => [h.ring, h.received]),
    [
      [64, 64],
      [256, 256],
    ],
  );
  assert.equal(r.follow.sent, 500);
  assert.equal(r.follow.received + r.follow.missing, r.follow.sent);
  assert.deepEqual(
    r.memory.map((m) => m.ring),
    [64, 256],
  );
  for (const m of r.memory) assert.ok(m.rssMiB > 0 && m.heapUsedMiB > 0);
  const saved = JSON.parse(readFileSync(join(dir, 'flows.json'), 'utf8')) as FlowBenchResults;
  assert.equal(saved.follow.sent, 500);
  assert.ok(existsSync(join(dir, 'flows.md')));
  assert.match(readFileSync(join(dir, 'flows.md'), 'utf8'), /\| pipeline \(\+flow log\) \|/);
});
