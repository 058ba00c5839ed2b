// The flow log: Hubble JSON lines, the filter, size rotation with maxFiles kept, backpressure drops
// counted, flush on close, and --flow-log-filter parsing with errors that name the field.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FlowLog, parseFlowLogFilter } from '../agent/flows/flow-log.js';
import { flowResponseToJson } from '../agent/flows/json.js';
import { packConnectionInfo } from '../agent/flows/proto.js';
import { WeftError } from '../agent/errors.js';
import type { Flow, GetFlowsResponse } from '../agent/flows/types.js';

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'weft-flowlog-'));
  dirs.push(d);
  return d;
}

let n = 0;
function resp(over: Partial<Flow> = {}): GetFlowsResponse {
  const i = n++;
  const flow: Flow = {
    time: { seconds: String(1_700_000_000 + i), nanos: 5_000_000 },
    uuid: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`,
    verdict: 'FORWARDED',
    IP: { source: '10.1.0.5', destination: '10.1.0.9', ipVersion: 'IPv4' },
    l4: { TCP: { source_port: 40000 + (i % 20000), destination_port: 8080 } },
    source: { namespace: 'shop', pod_name: 'frontend-1', labels: ['k8s:app=frontend'] },
    destination: { namespace: 'shop', pod_name: 'cart-0', labels: ['k8s:app=cart'] },
    Type: 'L3_L4',
    node_name: 'node-a',
    traffic_direction: 'EGRESS',
    extensions: packConnectionInfo({ source_principal: 'spiffe://cluster.local/ns/shop/sa/frontend', bytes_sent: 10, bytes_received: 20, security: 'mutual_tls' }),
    ...over,
  };
  return { flow, node_name: flow.node_name, time: flow.time };
}

function lines(path: string): Array<Record<string, unknown>> {
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

test('each flow is one line of Hubble JSON, flushed by close()', async () => {
  const path = join(tempDir(), 'flows.log');
  const log = new FlowLog({ path });
  const written = [resp(), resp({ verdict: 'DROPPED', drop_reason_desc: 'POLICY_DENIED' }), resp()];
  for (const r of written) log.write(r);
  await log.close();
  const got = lines(path);
  assert.equal(got.length, 3);
  got.forEach((line, i) => assert.deepEqual(line, JSON.parse(JSON.stringify(flowResponseToJson(written[i]!)))));
  const first = got[0] as { flow: { verdict: string; time: string; extensions?: { '@type'?: string } }; node_name: string };
  assert.equal(first.flow.verdict, 'FORWARDED');
  assert.equal(first.node_name, 'node-a');
  assert.equal(typeof first.flow.time, 'string', 'time in RFC 3339, as Hubble prints it');
  assert.equal((got[1] as { flow: { drop_reason_desc: string } }).flow.drop_reason_desc, 'POLICY_DENIED');
  assert.equal(log.written, 3);
  assert.equal(log.dropped, 0);
  // Writes after close are ignored, not errors.
  log.write(resp());
  assert.equal(lines(path).length, 3);
});

test('the whitelist and blacklist choose which flows are logged', async () => {
  const path = join(tempDir(), 'flows.log');
  const log = new FlowLog({
    path,
    whitelist: [{ verdict: ['DROPPED'] }, { destination_port: ['9090'] }],
    blacklist: [{ source_pod: ['shop/noisy'] }],
  });
  log.write(resp());
  log.write(resp({ verdict: 'DROPPED', drop_reason_desc: 'POLICY_DENIED' }));
  log.write(resp({ l4: { TCP: { source_port: 1, destination_port: 9090 } } }));
  log.write(resp({ verdict: 'DROPPED', source: { namespace: 'shop', pod_name: 'noisy' } }));
  await log.close();
  const got = lines(path) as Array<{ flow: { verdict: string; l4: { TCP: { destination_port: number } } } }>;
  assert.deepEqual(
    got.map((l) => [l.flow.verdict, l.flow.l4.TCP.destination_port]),
    [
      ['DROPPED', 8080],
      ['FORWARDED', 9090],
    ],
  );
});

test('rotation at the size limit keeps maxFiles rotated files, the oldest dropped', async () => {
  const dir = tempDir();
  const path = join(dir, 'flows.log');
  const lineBytes = Buffer.byteLength(JSON.stringify(flowResponseToJson(resp())) + '\n');
  // Room for three lines per file; 20 lines make 7 files, of which the live one and 3 rotated stay.
  const log = new FlowLog({ path, maxBytes: lineBytes * 3 + 10, maxFiles: 3 });
  const uuids: string[] = [];
  for (let i = 0; i < 20; i++) {
    const r = resp();
    uuids.push(r.flow!.uuid);
    log.write(r);
    await new Promise((resolve) => setImmediate(resolve));
  }
  await log.close();
  assert.equal(log.rotations, 6);
  const files = [path, `${path}.1`, `${path}.2`, `${path}.3`];
  for (const f of files) assert.ok(statSync(f).size <= lineBytes * 3 + 10, `${f} within the limit`);
  assert.equal(existsSync(`${path}.4`), false, 'no more than maxFiles rotated files');
  // Newest in path, older in .1, .2, .3: together the last 11 flows in order, nothing lost in between.
  const kept = [...files].reverse().flatMap((f) => lines(f).map((l) => (l as { flow: { uuid: string } }).flow.uuid));
  assert.deepEqual(kept, uuids.slice(20 - kept.length));
  assert.equal(kept.length, 11);
  assert.equal(lines(path).length, 2);
});

test('an existing file is appended to, and counts toward the size limit', async () => {
  const path = join(tempDir(), 'flows.log');
  writeFileSync(path, 'x'.repeat(1000) + '\n');
  const log = new FlowLog({ path, maxBytes: 1200, maxFiles: 1 });
  log.write(resp());
  await log.close();
  assert.equal(readFileSync(`${path}.1`, 'utf8'), 'x'.repeat(1000) + '\n');
  assert.equal(lines(path).length, 1);
});

test('backpressure: beyond the buffer bound lines are dropped and counted, never blocking', async () => {
  const path = join(tempDir(), 'flows.log');
  const drops: number[] = [];
  const lineBytes = Buffer.byteLength(JSON.stringify(flowResponseToJson(resp())) + '\n');
  const log = new FlowLog({ path, maxBufferedBytes: lineBytes * 10, onDrop: (k) => drops.push(k) });
  // One synchronous burst: the stream cannot write anything until the loop yields.
  for (let i = 0; i < 100; i++) log.write(resp());
  assert.ok(log.dropped >= 80, `dropped ${log.dropped}`);
  assert.equal(log.written + log.dropped, 100);
  assert.equal(drops.reduce((a, b) => a + b, 0), log.dropped, 'the metric hook saw every drop');
  await log.close();
  assert.equal(lines(path).length, log.written, 'everything accepted reached the file');
});

test('parseFlowLogFilter: whitelist/blacklist objects, errors name the field', () => {
  assert.deepEqual(parseFlowLogFilter('{"whitelist":[{"verdict":["DROPPED"]}]}'), { whitelist: [{ verdict: ['DROPPED'] }] });
  assert.deepEqual(parseFlowLogFilter('{"blacklist":[{"source_pod":["kube-system/"]},{"destination_port":["53"]}]}'), {
    blacklist: [{ source_pod: ['kube-system/'] }, { destination_port: ['53'] }],
  });
  assert.deepEqual(parseFlowLogFilter('{}'), {});
  const fails = (text: string, message: RegExp): void => {
    assert.throws(
      () => parseFlowLogFilter(text),
      (err: unknown) => err instanceof WeftError && err.code === 'WEFT_ERR_USAGE' && message.test(err.message),
      `${text} should fail with ${message}`,
    );
  };
  fails('{whitelist', /^--flow-log-filter: not valid JSON/);
  fails('[]', /expected an object/);
  fails('{"allow":[]}', /^--flow-log-filter: allow: unknown field \(expected whitelist or blacklist\)/);
  fails('{"whitelist":{"verdict":["DROPPED"]}}', /^--flow-log-filter: whitelist: expected a list of FlowFilter objects/);
  fails('{"whitelist":["DROPPED"]}', /whitelist\[0\]: expected a FlowFilter object/);
  fails('{"whitelist":[{"verdicts":["DROPPED"]}]}', /whitelist\[0\]\.verdicts: unknown FlowFilter field/);
  fails('{"whitelist":[{"verdict":"DROPPED"}]}', /whitelist\[0\]\.verdict: expected a list/);
  fails('{"blacklist":[{},{"verdict":["DROP"]}]}', /blacklist\[1\]\.verdict\[0\]: expected one of VERDICT_UNKNOWN, FORWARDED, DROPPED/);
  fails('{"whitelist":[{"source_identity":["12"]}]}', /whitelist\[0\]\.source_identity\[0\]: expected an integer/);
  fails('{"whitelist":[{"event_type":[{"sub_type":1}]}]}', /whitelist\[0\]\.event_type\[0\]: type is required/);
  fails('{"whitelist":[{"destination_port":["http"]}]}', /whitelist\[0\]: .*invalid port/);
});
