// Hubble's flow filters and history queries over a recorded set of 240 varied flows
// (test/fixtures/flows/recorded.json, from generate.mjs). Every expectation is computed here with a
// plain predicate over the fixture, not with the code under test.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { compileFilters, InvalidFilterError } from '../agent/flows/filter.js';
import { nsToTimestamp, selectHistory, timestampToNs, validateFlowsRequest } from '../agent/flows/query.js';
import type { Flow, FlowFilter, GetFlowsRequest } from '../agent/flows/types.js';
import { repoRoot } from './helpers/privileged.js';

const flows = JSON.parse(readFileSync(join(repoRoot(), 'test', 'fixtures', 'flows', 'recorded.json'), 'utf8')) as Flow[];

const ids = (fs: Flow[]): string[] => fs.map((f) => f.uuid);
const ns = (f: Flow): bigint => BigInt(f.time.seconds) * 1_000_000_000n + BigInt(f.time.nanos);
const labelsOf = (labels: string[] | undefined): Map<string, string> => new Map((labels ?? []).map((l) => [l.slice(l.indexOf(':') + 1).split('=')[0]!, l.split('=')[1] ?? '']));
const port = (f: Flow, side: 'source_port' | 'destination_port'): number | undefined => f.l4?.TCP?.[side] ?? f.l4?.UDP?.[side];
const ipv4Num = (ip: string): number => ip.split('.').reduce((a, p) => a * 256 + Number(p), 0);

/** Asserts that the filters select exactly the flows `expected` selects, and that this is a real subset. */
function check(whitelist: FlowFilter[] | undefined, blacklist: FlowFilter[] | undefined, expected: (f: Flow) => boolean): void {
  const want = flows.filter(expected);
  assert.ok(want.length > 0 && want.length < flows.length, `the fixture must hold both matching and other flows (${want.length})`);
  const pass = compileFilters(whitelist, blacklist);
  assert.deepEqual(ids(flows.filter(pass)), ids(want));
}

test('fixture: at least 200 varied flows, oldest first over about an hour', () => {
  assert.ok(flows.length >= 200);
  for (let i = 1; i < flows.length; i++) assert.ok(ns(flows[i]!) >= ns(flows[i - 1]!));
  const span = Number(ns(flows.at(-1)!) - ns(flows[0]!)) / 1e9;
  assert.ok(span > 3000 && span <= 3600, `span ${span}s`);
  for (const v of ['FORWARDED', 'DROPPED', 'AUDIT', 'ERROR']) assert.ok(flows.some((f) => f.verdict === v), v);
  assert.ok(flows.some((f) => f.IP?.ipVersion === 'IPv6') && flows.some((f) => f.IP?.ipVersion === 'IPv4'));
  assert.ok(flows.filter((f) => f.l7?.http).length >= 30);
});

test('no filters: everything passes', () => {
  assert.equal(flows.filter(compileFilters(undefined, undefined)).length, flows.length);
  assert.equal(flows.filter(compileFilters([], [])).length, flows.length);
  assert.equal(flows.filter(compileFilters([{}], undefined)).length, flows.length);
});

test('source_ip / destination_ip: exact and CIDR, v4 and v6', () => {
  check([{ source_ip: ['10.0.1.11'] }], undefined, (f) => f.IP?.source === '10.0.1.11');
  check([{ source_ip: ['10.0.3.0/24'] }], undefined, (f) => /^10\.0\.3\.\d+$/.test(f.IP!.source));
  check([{ destination_ip: ['10.0.0.0/22'] }], undefined, (f) => !f.IP!.destination.includes(':') && ipv4Num(f.IP!.destination) >= ipv4Num('10.0.0.0') && ipv4Num(f.IP!.destination) < ipv4Num('10.0.4.0'));
  check([{ destination_ip: ['fd00:10:3::/48'] }], undefined, (f) => f.IP!.destination.startsWith('fd00:10:3:'));
  check([{ source_ip: ['fd00:10::/32'] }], undefined, (f) => f.IP!.source.startsWith('fd00:10:'));
  check([{ destination_ip: ['2001:db8::7', '93.184.216.34'] }], undefined, (f) => ['2001:db8::7', '93.184.216.34'].includes(f.IP!.destination));
  assert.throws(() => compileFilters([{ source_ip: ['10.0.0.300'] }], undefined), InvalidFilterError);
  assert.throws(() => compileFilters([{ source_ip: ['10.0.0.0/33'] }], undefined), InvalidFilterError);
});

test('source_pod / destination_pod: namespace, namespace/prefix, bare name in default', () => {
  check([{ source_pod: ['shop/'] }], undefined, (f) => f.source?.namespace === 'shop');
  check([{ source_pod: ['shop/frontend-'] }], undefined, (f) => f.source?.namespace === 'shop' && f.source.pod_name!.startsWith('frontend-'));
  check([{ destination_pod: ['deathstar'] }], undefined, (f) => f.destination?.namespace === 'default' && (f.destination.pod_name ?? '').startsWith('deathstar'));
  // A bare name is a pod of the default namespace: cart lives in shop, so nothing matches.
  assert.equal(flows.filter(compileFilters([{ destination_pod: ['cart'] }], undefined)).length, 0);
  assert.ok(flows.some((f) => f.destination?.pod_name === 'cart-0'));
  check([{ source_pod: ['xwing', 'kube-system/'] }], undefined, (f) => (f.source?.namespace === 'default' && f.source.pod_name!.startsWith('xwing')) || f.source?.namespace === 'kube-system');
  assert.throws(() => compileFilters([{ source_pod: [''] }], undefined), InvalidFilterError);
});

test('source_label / destination_label: Kubernetes selectors over Cilium labels', () => {
  check([{ source_label: ['app=frontend'] }], undefined, (f) => labelsOf(f.source?.labels).get('app') === 'frontend');
  check([{ source_label: ['k8s:app=frontend'] }], undefined, (f) => (f.source?.labels ?? []).includes('k8s:app=frontend'));
  check([{ source_label: ['tier'] }], undefined, (f) => labelsOf(f.source?.labels).has('tier'));
  check([{ source_label: ['!tier'] }], undefined, (f) => !labelsOf(f.source?.labels).has('tier'));
  check([{ destination_label: ['tier in (backend, db)'] }], undefined, (f) => ['backend', 'db'].includes(labelsOf(f.destination?.labels).get('tier') ?? ''));
  check([{ destination_label: ['tier notin (backend)'] }], undefined, (f) => labelsOf(f.destination?.labels).get('tier') !== 'backend');
  check([{ source_label: ['tier=backend,version=v2'] }], undefined, (f) => labelsOf(f.source?.labels).get('tier') === 'backend' && labelsOf(f.source?.labels).get('version') === 'v2');
  check([{ source_label: ['org!=empire'] }], undefined, (f) => labelsOf(f.source?.labels).get('org') !== 'empire');
  check([{ source_label: ['org=alliance', 'app=ledger'] }], undefined, (f) => ['xwing', 'ledger'].includes(labelsOf(f.source?.labels).get('app') ?? ''));
  check([{ destination_label: ['reserved:world'] }], undefined, (f) => (f.destination?.labels ?? []).includes('reserved:world'));
  // A source prefix must match the label's source: no flow has container-sourced labels.
  assert.equal(flows.filter(compileFilters([{ destination_label: ['container:app'] }], undefined)).length, 0);
  assert.throws(() => compileFilters([{ source_label: ['app in (a'] }], undefined), InvalidFilterError);
});

test('source_service / destination_service: ns/name prefixes', () => {
  check([{ destination_service: ['shop/'] }], undefined, (f) => f.destination_service?.namespace === 'shop');
  check([{ destination_service: ['shop/ca'] }], undefined, (f) => f.destination_service?.namespace === 'shop' && f.destination_service.name.startsWith('ca'));
  check([{ destination_service: ['deathstar'] }], undefined, (f) => f.destination_service?.namespace === 'default' && f.destination_service.name.startsWith('deathstar'));
  check([{ source_service: ['shop/'] }], undefined, (f) => f.source_service?.namespace === 'shop');
});

test('source_workload / destination_workload: name and kind, either may be empty', () => {
  check([{ source_workload: [{ name: 'frontend', kind: '' }] }], undefined, (f) => f.source?.workloads?.[0]?.name === 'frontend');
  check([{ destination_workload: [{ name: '', kind: 'StatefulSet' }] }], undefined, (f) => f.destination?.workloads?.[0]?.kind === 'StatefulSet');
  check([{ destination_workload: [{ name: 'cart', kind: 'StatefulSet' }, { name: 'deathstar', kind: 'Deployment' }] }], undefined, (f) => ['cart', 'deathstar'].includes(f.destination?.workloads?.[0]?.name ?? ''));
  assert.equal(flows.filter(compileFilters([{ destination_workload: [{ name: 'cart', kind: 'Deployment' }] }], undefined)).length, 0);
});

test('source_identity / destination_identity', () => {
  check([{ source_identity: [5201] }], undefined, (f) => f.source?.identity === 5201);
  check([{ destination_identity: [2, 102] }], undefined, (f) => [2, 102].includes(f.destination?.identity ?? -1));
});

test('verdict, event_type, traffic_direction, ip_version, uuid', () => {
  check([{ verdict: ['DROPPED'] }], undefined, (f) => f.verdict === 'DROPPED');
  check([{ verdict: ['AUDIT', 'ERROR'] }], undefined, (f) => f.verdict === 'AUDIT' || f.verdict === 'ERROR');
  check([{ event_type: [{ type: 129 }] }], undefined, (f) => f.event_type?.type === 129);
  check([{ event_type: [{ type: 4, match_sub_type: true, sub_type: 0 }] }], undefined, (f) => f.event_type?.type === 4 && (f.event_type.sub_type ?? 0) === 0);
  check([{ event_type: [{ type: 1, match_sub_type: true, sub_type: 189 }] }], undefined, (f) => f.event_type?.type === 1 && f.event_type.sub_type === 189);
  check([{ traffic_direction: ['INGRESS'] }], undefined, (f) => f.traffic_direction === 'INGRESS');
  check([{ traffic_direction: ['EGRESS', 'TRAFFIC_DIRECTION_UNKNOWN'] }], undefined, (f) => f.traffic_direction !== 'INGRESS');
  check([{ ip_version: ['IPv6'] }], undefined, (f) => f.IP?.ipVersion === 'IPv6');
  const some = [flows[3]!.uuid, flows[150]!.uuid];
  check([{ uuid: some }], undefined, (f) => some.includes(f.uuid));
});

test('protocol: l4 and l7 names, case-insensitive', () => {
  check([{ protocol: ['tcp'] }], undefined, (f) => f.l4?.TCP !== undefined);
  check([{ protocol: ['UDP'] }], undefined, (f) => f.l4?.UDP !== undefined);
  check([{ protocol: ['icmp'] }], undefined, (f) => f.l4?.ICMPv4 !== undefined || f.l4?.ICMPv6 !== undefined);
  check([{ protocol: ['http'] }], undefined, (f) => f.l7?.http !== undefined);
  check([{ protocol: ['http', 'udp'] }], undefined, (f) => f.l7?.http !== undefined || f.l4?.UDP !== undefined);
  assert.throws(() => compileFilters([{ protocol: ['carrier-pigeon'] }], undefined), InvalidFilterError);
});

test('source_port / destination_port: strings, TCP and UDP', () => {
  check([{ destination_port: ['53'] }], undefined, (f) => port(f, 'destination_port') === 53);
  check([{ destination_port: ['80', '8080'] }], undefined, (f) => [80, 8080].includes(port(f, 'destination_port') ?? -1));
  const sp = port(flows[7]!, 'source_port') ?? port(flows[8]!, 'source_port')!;
  check([{ source_port: [String(sp)] }], undefined, (f) => port(f, 'source_port') === sp);
  assert.throws(() => compileFilters([{ destination_port: ['http'] }], undefined), InvalidFilterError);
  assert.throws(() => compileFilters([{ destination_port: ['70000'] }], undefined), InvalidFilterError);
});

test('reply: against is_reply; unknown direction only counts as non-reply for drops', () => {
  check([{ reply: [true] }], undefined, (f) => f.is_reply?.value === true);
  check([{ reply: [false] }], undefined, (f) => f.is_reply?.value === false || (f.is_reply === undefined && f.verdict === 'DROPPED'));
  check([{ reply: [true, false] }], undefined, (f) => f.is_reply !== undefined || f.verdict === 'DROPPED');
});

test('node_name: globs, cluster/node, cluster/', () => {
  check([{ node_name: ['node-a'] }], undefined, (f) => f.node_name === 'node-a');
  // Without a cluster part the pattern matches the node in any cluster; bare node names are in "default".
  assert.equal(flows.filter(compileFilters([{ node_name: ['node-*'] }], undefined)).length, flows.length);
  check([{ node_name: ['default/node-*'] }], undefined, (f) => f.node_name === 'node-a' || f.node_name === 'node-b');
  check([{ node_name: ['default/node-b'] }], undefined, (f) => f.node_name === 'node-b');
  check([{ node_name: ['east/'] }], undefined, (f) => f.node_name.startsWith('east/'));
  check([{ node_name: ['*/node-c'] }], undefined, (f) => f.node_name === 'east/node-c');
  check([{ node_name: ['NODE-A', 'east/*'] }], undefined, (f) => f.node_name === 'node-a' || f.node_name === 'east/node-c');
  assert.throws(() => compileFilters([{ node_name: ['a/b/c'] }], undefined), InvalidFilterError);
});

test('http_status_code, http_method, http_path', () => {
  check([{ http_status_code: ['200'] }], undefined, (f) => f.l7?.http?.code === 200);
  check([{ http_status_code: ['5+'] }], undefined, (f) => (f.l7?.http?.code ?? 0) >= 500 && (f.l7?.http?.code ?? 0) < 600);
  check([{ http_status_code: ['4+', '301'] }], undefined, (f) => { const c = f.l7?.http?.code ?? 0; return (c >= 400 && c < 500) || c === 301; });
  check([{ http_status_code: ['20+'] }], undefined, (f) => { const c = f.l7?.http?.code ?? 0; return c >= 200 && c < 210; });
  check([{ http_method: ['post'] }], undefined, (f) => f.l7?.http?.method === 'POST');
  check([{ http_method: ['GET', 'DELETE'] }], undefined, (f) => ['GET', 'DELETE'].includes(f.l7?.http?.method ?? ''));
  check([{ http_path: ['^/v1/'] }], undefined, (f) => /^http:\/\/[^/]+\/v1\//.test(f.l7?.http?.url ?? ''));
  check([{ http_path: ['^/api/cart/items$'] }], undefined, (f) => (f.l7?.http?.url ?? '').includes('/api/cart/items?'));
  assert.throws(() => compileFilters([{ http_status_code: ['6+'] }], undefined), InvalidFilterError);
  assert.throws(() => compileFilters([{ http_path: ['(unclosed'] }], undefined), InvalidFilterError);
});

test('tcp_flags: each set needs all its flags', () => {
  check([{ tcp_flags: [{ SYN: true }] }], undefined, (f) => f.l4?.TCP?.flags?.SYN === true);
  check([{ tcp_flags: [{ SYN: true, ACK: true }] }], undefined, (f) => f.l4?.TCP?.flags?.SYN === true && f.l4.TCP.flags.ACK === true);
  check([{ tcp_flags: [{ RST: true }, { FIN: true }] }], undefined, (f) => f.l4?.TCP?.flags?.RST === true || f.l4?.TCP?.flags?.FIN === true);
});

test('source_fqdn / destination_fqdn: globs over the names', () => {
  check([{ destination_fqdn: ['example.com'] }], undefined, (f) => (f.destination_names ?? []).includes('example.com'));
  check([{ destination_fqdn: ['*.example.org'] }], undefined, (f) => (f.destination_names ?? []).some((n) => n.endsWith('.example.org')));
  check([{ destination_fqdn: ['*.github.com', 'example.org.'] }], undefined, (f) => (f.destination_names ?? []).some((n) => n === 'api.github.com' || n === 'example.org'));
  assert.equal(flows.filter(compileFilters([{ source_fqdn: ['*'] }], undefined)).length, 0);
});

test('within a filter all fields must match; filters in a list are alternatives', () => {
  check([{ source_pod: ['shop/'], verdict: ['DROPPED'] }], undefined, (f) => f.source?.namespace === 'shop' && f.verdict === 'DROPPED');
  check([{ source_pod: ['shop/'], verdict: ['DROPPED'], protocol: ['tcp'], traffic_direction: ['EGRESS'] }], undefined, (f) => f.source?.namespace === 'shop' && f.verdict === 'DROPPED' && f.l4?.TCP !== undefined && f.traffic_direction === 'EGRESS');
  check([{ source_pod: ['shop/'] }, { verdict: ['DROPPED'] }], undefined, (f) => f.source?.namespace === 'shop' || f.verdict === 'DROPPED');
});

test('blacklist (--not): removes what it matches, alone or with a whitelist', () => {
  check(undefined, [{ verdict: ['FORWARDED'] }], (f) => f.verdict !== 'FORWARDED');
  check(undefined, [{ source_pod: ['kube-system/'] }, { destination_pod: ['kube-system/'] }], (f) => f.source?.namespace !== 'kube-system' && f.destination?.namespace !== 'kube-system');
  check([{ source_pod: ['shop/'] }], [{ destination_port: ['53'] }], (f) => f.source?.namespace === 'shop' && port(f, 'destination_port') !== 53);
  check([{ protocol: ['http'] }], [{ http_status_code: ['2+'] }, { http_method: ['GET'] }], (f) => f.l7?.http !== undefined && !((f.l7.http.code ?? 0) >= 200 && (f.l7.http.code ?? 0) < 300) && f.l7.http.method !== 'GET');
  assert.equal(flows.filter(compileFilters([{ verdict: ['DROPPED'] }], [{ verdict: ['DROPPED'] }])).length, 0);
});

// ---- History ----

const timeOf = (i: number) => flows[i]!.time;

test('timestampToNs / nsToTimestamp', () => {
  assert.equal(timestampToNs({ seconds: '1700000000', nanos: 5 }), 1_700_000_000_000_000_005n);
  assert.deepEqual(nsToTimestamp(1_700_000_000_000_000_005n), { seconds: '1700000000', nanos: 5 });
  assert.deepEqual(nsToTimestamp(-1n), { seconds: '-1', nanos: 999_999_999 });
  for (const f of flows.slice(0, 20)) assert.deepEqual(nsToTimestamp(timestampToNs(f.time)), { seconds: String(f.time.seconds), nanos: f.time.nanos });
});

test('number: the newest N matching flows, in time order', () => {
  assert.deepEqual(ids(selectHistory(flows, { number: 20 })), ids(flows.slice(-20)));
  const dropped = flows.filter((f) => f.verdict === 'DROPPED');
  assert.deepEqual(ids(selectHistory(flows, { number: '5', whitelist: [{ verdict: ['DROPPED'] }] })), ids(dropped.slice(-5)));
  assert.deepEqual(ids(selectHistory(flows, { number: 10000, whitelist: [{ verdict: ['DROPPED'] }] })), ids(dropped));
});

test('first: the oldest N matching flows', () => {
  assert.deepEqual(ids(selectHistory(flows, { number: 7, first: true })), ids(flows.slice(0, 7)));
  const http = flows.filter((f) => f.l7?.http !== undefined);
  assert.deepEqual(ids(selectHistory(flows, { number: 4, first: true, whitelist: [{ protocol: ['http'] }] })), ids(http.slice(0, 4)));
});

test('number 0 without since or follow: every matching flow', () => {
  assert.equal(selectHistory(flows, {}).length, flows.length);
  assert.deepEqual(ids(selectHistory(flows, { blacklist: [{ verdict: ['FORWARDED'] }] })), ids(flows.filter((f) => f.verdict !== 'FORWARDED')));
});

test('follow: no history unless number or since asks for it', () => {
  assert.deepEqual(selectHistory(flows, { follow: true }), []);
  assert.deepEqual(ids(selectHistory(flows, { follow: true, number: 3 })), ids(flows.slice(-3)));
  assert.equal(validateFlowsRequest({ follow: true, first: true }), 'first cannot be specified with follow');
  assert.equal(validateFlowsRequest({ follow: true, number: 3 }), undefined);
});

test('since / until: inclusive bounds', () => {
  const since = timeOf(100);
  const until = timeOf(140);
  const inRange = (f: Flow) => ns(f) >= ns(flows[100]!) && ns(f) <= ns(flows[140]!);
  assert.deepEqual(ids(selectHistory(flows, { since, until })), ids(flows.filter(inRange)));
  assert.equal(selectHistory(flows, { since, until })[0]!.uuid, flows[100]!.uuid);
  assert.equal(selectHistory(flows, { since, until }).at(-1)!.uuid, flows[140]!.uuid);
  assert.deepEqual(ids(selectHistory(flows, { since })), ids(flows.slice(100)));
  assert.deepEqual(ids(selectHistory(flows, { until })), ids(flows.slice(0, 141)));
  // One nanosecond later excludes the bound flow.
  const after = nsToTimestamp(timestampToNs(since) + 1n);
  assert.equal(selectHistory(flows, { since: after })[0]!.uuid, flows[101]!.uuid);
  const tcpInRange = flows.filter((f) => inRange(f) && f.l4?.TCP !== undefined);
  assert.deepEqual(ids(selectHistory(flows, { since, until, whitelist: [{ protocol: ['tcp'] }] })), ids(tcpInRange));
});

test('since with number: the first N at or after since (Hubble: since wins over the newest-N rewind)', () => {
  assert.deepEqual(ids(selectHistory(flows, { since: timeOf(50), number: 5 })), ids(flows.slice(50, 55)));
  assert.deepEqual(ids(selectHistory(flows, { since: timeOf(50), number: 5, first: true })), ids(flows.slice(50, 55)));
});

test('number with until: rewinds N from the newest, then stops at until (as Hubble)', () => {
  // The newest 30 are all after flow 100, so nothing is left before until.
  assert.deepEqual(selectHistory(flows, { number: 30, until: timeOf(100) }), []);
  assert.deepEqual(ids(selectHistory(flows, { number: 30, until: timeOf(225) })), ids(flows.slice(-30).filter((f) => ns(f) <= ns(flows[225]!))));
  const req: GetFlowsRequest = { number: 3, first: true, until: timeOf(1) };
  assert.deepEqual(ids(selectHistory(flows, req)), ids(flows.slice(0, 2)));
});
