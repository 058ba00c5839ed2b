// The mesh benchmark with smoke sizes, so it cannot rot: the lab comes up, every workload runs on every
// path (direct, stunnel, weft, iptables REDIRECT), the results are written and the lab is gone after.
// No timing is asserted (this machine's speed is not the test's business).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { labNames } from '../agent/lab/index.js';
import { QUICK_OPTIONS, REQUIRED_IDS, runMeshBench, type Row } from '../bench/mesh.js';
import { labLeftovers, requirePrivileges } from './helpers/privileged.js';

const LAB = `bs${process.pid.toString(36)}`;
const dir = mkdtempSync(join(tmpdir(), 'weft-bench-mesh-smoke-'));
after(() => rmSync(dir, { recursive: true, force: true }));

test('the mesh bench runs end to end with smoke sizes and writes latest.json', async (t) => {
  if (!requirePrivileges(t)) return;
  const r = await runMeshBench({ ...QUICK_OPTIONS, labName: LAB, resultsDir: dir, print: false });
  const rows = JSON.parse(readFileSync(join(dir, 'latest.json'), 'utf8')) as Row[];
  assert.deepEqual(rows, r.rows);
  const byId = new Map(rows.map((row) => [row.id, row]));
  for (const id of REQUIRED_IDS) {
    const row = byId.get(id);
    assert.ok(row, `latest.json has ${id}`);
    assert.deepEqual(Object.keys(row).sort(), ['direct', 'higher_is_better', 'id', 'iptables', 'stunnel', 'unit', 'weft']);
    assert.equal(typeof row.weft, 'number', `${id}: weft`);
    assert.ok(Number.isFinite(row.weft), `${id}: weft is ${row.weft}`);
  }
  // Each baseline where it applies.
  for (const id of ['bulk_cross_node_1stream_gbps', 'bulk_same_node_1stream_gbps', 'new_conns_per_s']) {
    assert.ok(byId.get(id)!.direct! > 0 && byId.get(id)!.stunnel! > 0, `${id}: direct and stunnel`);
    assert.ok(byId.get(id)!.weft! > 0, `${id}: weft`);
  }
  assert.equal(byId.get('rr_1k_rps_added_p99_us')!.direct, 0);
  assert.equal(typeof byId.get('rr_1k_rps_added_p99_us')!.stunnel, 'number');
  assert.equal(typeof byId.get('agent_rss_mb_1k_conns')!.stunnel, 'number');
  assert.ok(byId.get('capture_connect_us')!.iptables! > 0 && byId.get('capture_connect_us')!.direct! > 0);
  assert.equal(byId.get('capture_connect_us')!.stunnel, null);
  assert.equal(r.targets.length, 6);
  // weft measured again with its fast paths off, in the same run, for every row they can change.
  assert.ok(r.fastPaths.length >= 6);
  for (const f of r.fastPaths) assert.ok(f.with !== null && f.without !== null && f.with > 0 && f.without > 0, `${f.id}: ${f.with} with, ${f.without} without`);
  assert.match(readFileSync(join(dir, 'latest.md'), 'utf8'), /## What the fast paths buy/);
  assert.ok(existsSync(join(dir, 'latest.md')));
  assert.match(readFileSync(join(dir, 'latest.md'), 'utf8'), /\| `new_conns_per_s` \|/);
  assert.deepEqual(labLeftovers(labNames(LAB)), [], 'the lab is gone');
});
