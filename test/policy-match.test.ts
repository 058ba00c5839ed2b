// The value parsers behind L4 authorization: addresses (v4, v6, v4-mapped), ranges, ports, identities.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compileString, matchString, netContains, parseIp, parseIpNet, parsePort, parseServiceAccount, peerIdentity } from '../agent/policy/match.js';

const contains = (net: string, ip: string): boolean => {
  const n = parseIpNet(net);
  const a = parseIp(ip);
  assert.ok(n && a, `${net} / ${ip} parse`);
  return netContains(n, a);
};

test('IPv6 textual forms all parse to the same address', () => {
  const full = parseIp('2001:0db8:0000:0000:0000:0000:0000:0001');
  assert.deepEqual(parseIp('2001:db8::1'), full);
  assert.deepEqual(parseIp('2001:db8:0:0::1'), full);
  assert.deepEqual(parseIp('::'), { family: 6, value: 0n });
  assert.deepEqual(parseIp('::1'), { family: 6, value: 1n });
  assert.deepEqual(parseIp('1::'), { family: 6, value: 1n << 112n });
  assert.deepEqual(parseIp('64:ff9b::192.0.2.1'), { family: 6, value: (0x64n << 112n) | (0xff9bn << 96n) | 0xc0000201n });
});

test('v4-mapped IPv6 connection addresses are reduced to IPv4', () => {
  assert.deepEqual(parseIp('::ffff:10.1.2.3'), parseIp('10.1.2.3'));
  assert.deepEqual(parseIp('::ffff:a01:203'), { family: 4, value: 0x0a010203n });
});

test('invalid addresses and ranges are rejected', () => {
  for (const bad of ['', 'x', '10.0.0', '10.0.0.256', '2001:db8::1::2', 'fe80::1%eth0']) assert.equal(parseIp(bad), undefined, bad);
  for (const bad of ['10.0.0.0/33', '10.0.0.0/', '10.0.0.0/08', '::/129', 'nope/8', '10.0.0.0/-1']) assert.equal(parseIpNet(bad), undefined, bad);
});

test('range containment by prefix, across both families', () => {
  assert.equal(contains('10.0.0.0/8', '10.255.255.255'), true);
  assert.equal(contains('10.0.0.0/8', '11.0.0.0'), false);
  assert.equal(contains('10.0.0.7', '10.0.0.7'), true);
  assert.equal(contains('10.0.0.7', '10.0.0.8'), false);
  assert.equal(contains('0.0.0.0/0', '203.0.113.9'), true);
  assert.equal(contains('2001:db8::/32', '2001:db8:ffff::1'), true);
  assert.equal(contains('2001:db8::/32', '2001:db9::1'), false);
  assert.equal(contains('2001:db8::1', '2001:db8::1'), true);
  assert.equal(contains('::/0', '10.0.0.1'), false);
  assert.equal(contains('0.0.0.0/0', '::1'), false);
});

test('ports: decimal up to 65535, anything else dropped', () => {
  assert.equal(parsePort('0'), 0);
  assert.equal(parsePort('65535'), 65535);
  for (const bad of ['65536', '-1', '80a', '', ' 80', 'http']) assert.equal(parsePort(bad), undefined, bad);
});

test('string patterns: *, prefix, suffix, exact', () => {
  assert.deepEqual(compileString('*'), { kind: 'presence' });
  assert.deepEqual(compileString('*.local'), { kind: 'suffix', value: '.local' });
  assert.deepEqual(compileString('ns-*'), { kind: 'prefix', value: 'ns-' });
  assert.deepEqual(compileString('a*b'), { kind: 'exact', value: 'a*b' });
  assert.equal(matchString(compileString('*'), ''), false);
  assert.equal(matchString(compileString('*'), 'x'), true);
  assert.equal(matchString(compileString('ns-*'), 'ns-a'), true);
  assert.equal(matchString(compileString('*-a'), 'ns-a'), true);
});

test('service account entries: ns/sa or a bare name in the policy namespace', () => {
  assert.deepEqual(parseServiceAccount('front/web', 'shop'), { namespace: 'front', serviceAccount: 'web' });
  assert.deepEqual(parseServiceAccount('web', 'shop'), { namespace: 'shop', serviceAccount: 'web' });
});

test('peer identity comes from the principal only', () => {
  assert.deepEqual(peerIdentity('td/ns/front/sa/web', 'ignored'), { principal: 'td/ns/front/sa/web', namespace: 'front', serviceAccount: 'web' });
  assert.deepEqual(peerIdentity('spiffe://td/ns/front/sa/web', undefined), { principal: 'td/ns/front/sa/web', namespace: 'front', serviceAccount: 'web' });
  assert.equal(peerIdentity(undefined, 'front'), undefined);
  assert.equal(peerIdentity('', 'front'), undefined);
  assert.deepEqual(peerIdentity('td/custom-id', 'front'), { principal: 'td/custom-id', namespace: 'front' });
});
