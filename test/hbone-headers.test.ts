// The HBONE CONNECT headers as ztunnel sends them, and reading them back at the destination.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isIP, isIPv4 } from 'node:net';
import fc from 'fast-check';
import { connectHeaders, forwardedFor, parseAuthority } from '../agent/ztunnel/hbone.js';
import { formatAuthority } from '../agent/system/host-port.js';

test('CONNECT headers carry the authority, forwarded for="ip:port" with the service host, and baggage', () => {
  const h = connectHeaders('10.0.2.2:8080', { namespace: 'shop', pod: 'frontend', ip: '10.0.1.2', port: 40123 }, 'api.shop.svc.cluster.local');
  assert.equal(h[':method'], 'CONNECT');
  assert.equal(h[':authority'], '10.0.2.2:8080');
  assert.equal(h.forwarded, 'for="10.0.1.2:40123";host=api.shop.svc.cluster.local');
  assert.equal(h.baggage, 'k8s.namespace.name=shop,k8s.pod.name=frontend');
  assert.equal(connectHeaders('[fd00::2]:80', { namespace: 'a', pod: 'b', ip: 'fd00::1', port: 5 }).forwarded, 'for="[fd00::1]:5"');
});

test('forwarded and authority parsing accepts the forms in use and refuses the rest', () => {
  assert.deepEqual(forwardedFor('for="10.0.1.2:40123";host=api.shop'), { ip: '10.0.1.2', port: 40123 });
  assert.deepEqual(forwardedFor(['for="[fd00::1]:5"']), { ip: 'fd00::1', port: 5 });
  assert.equal(forwardedFor('for=10.0.1.2'), undefined, 'no port: the tunnel port is used instead');
  assert.equal(forwardedFor(undefined), undefined);
  assert.deepEqual(parseAuthority('10.0.2.2:8080'), { ip: '10.0.2.2', port: 8080 });
  assert.equal(parseAuthority('10.0.2.2'), undefined);
  assert.equal(parseAuthority('10.0.2.2:70000'), undefined);
  assert.equal(parseAuthority('example.com:80'), undefined);
});

// --- :authority, strictly ----------------------------------------------------------------------------
// The destination authorizes and connects to what parseAuthority returns, so anything that another
// parser could read as a different target (or as two) must be refused.

/** IPv6 text → its eight 16-bit groups, written independently of the code under test. */
function ipv6Groups(text: string): number[] {
  const [head, tail] = text.includes('::') ? text.split('::') : [text, undefined];
  const parse = (part: string | undefined): number[] => (part ? part.split(':').map((g) => parseInt(g, 16)) : []);
  const h = parse(head);
  const t = parse(tail);
  return tail === undefined ? h : [...h, ...Array<number>(8 - h.length - t.length).fill(0), ...t];
}

const port = fc.integer({ min: 1, max: 65535 });
/** IPv6 in hex groups (fast-check also writes IPv4-embedded forms, which are refused on purpose). */
const ipv6Hex = fc.ipV6().filter((ip) => !ip.includes('.'));
const validAuthority = fc.oneof(
  fc.tuple(fc.ipV4(), port).map(([ip, p]) => `${ip}:${p}`),
  fc.tuple(ipv6Hex, port).map(([ip, p]) => `[${ip}]:${p}`),
);

test('parseAuthority accepts exactly ip:port and [ipv6]:port, IPv6 in canonical form', () => {
  assert.deepEqual(parseAuthority('10.0.2.2:8080'), { ip: '10.0.2.2', port: 8080 });
  assert.deepEqual(parseAuthority('0.0.0.0:1'), { ip: '0.0.0.0', port: 1 });
  assert.deepEqual(parseAuthority('255.255.255.255:65535'), { ip: '255.255.255.255', port: 65535 });
  assert.deepEqual(parseAuthority('[fd00::1]:80'), { ip: 'fd00::1', port: 80 });
  assert.deepEqual(parseAuthority('[FD00:0:0:0:0:0:0:1]:80'), { ip: 'fd00::1', port: 80 });
  assert.deepEqual(parseAuthority('[::]:1'), { ip: '::', port: 1 });
  assert.deepEqual(parseAuthority('[2001:db8:0:0:1:0:0:1]:443'), { ip: '2001:db8::1:0:0:1', port: 443 });
});

test('parseAuthority refuses everything else: names, userinfo, paths, lists, encodings, zones, leading zeros, junk', () => {
  const refused = [
    '',
    ':80',
    '10.0.2.2',
    '10.0.2.2:',
    '10.0.2.2:0',
    '10.0.2.2:65536',
    '10.0.2.2:99999',
    '10.0.2.2:080',
    '10.0.2.2:+80',
    '10.0.2.2:-80',
    '10.0.2.2:8_0',
    '10.0.2.2:8e1',
    '10.0.2.2:0x50',
    '256.0.0.1:80',
    '010.0.0.1:80',
    '10.00.0.1:80',
    '1.2.3:80',
    '1.2.3.4.5:80',
    '0x0a.0.0.1:80',
    '167772161:80',
    'example.com:80',
    'localhost:80',
    'user@10.0.0.1:80',
    'user:pass@10.0.0.1:80',
    '10.0.0.1:80@10.0.0.2:80',
    '10.0.0.1:80,10.0.0.2:80',
    '10.0.0.1:80;10.0.0.2:80',
    '10.0.0.1:80 10.0.0.2:80',
    ' 10.0.0.1:80',
    '10.0.0.1:80 ',
    '10.0.0.1 :80',
    '10.0.0.1:80\t',
    '10.0.0.1:80\n',
    '10.0.0.1:80\r\nx: y',
    '10.0.0.1:80\0',
    '10.0.0.1:80/',
    '10.0.0.1:80/admin',
    '10.0.0.1:80?x=1',
    '10.0.0.1:80#frag',
    'http://10.0.0.1:80',
    '10.0.0.1%3A80',
    '10.0.0.1:8%30',
    '%31%30.0.0.1:80',
    '１０.0.0.1:80',
    '10.0.0.1:٨٠',
    '[fe80::1%eth0]:80',
    '[fe80::1%25eth0]:80',
    '[::ffff:10.0.0.1]:80',
    '[10.0.0.1]:80',
    'fd00::1:80',
    '[fd00::1]',
    '[fd00::1]80',
    '[fd00::1]:',
    '[[fd00::1]]:80',
    '[fd00::1]:80:80',
    '[fd00::1]:80]',
    '[1::2::3]:80',
    '[fd00::g]:80',
    '[fd00::1 ]:80',
    '[]:80',
    '[:]:80',
    `[${'0:'.repeat(8)}0]:80`,
    `${'1'.repeat(5000)}.0.0.1:80`,
  ];
  for (const a of refused) assert.equal(parseAuthority(a), undefined, JSON.stringify(a));
  assert.equal(parseAuthority(undefined), undefined);
});

test('property: every IPv4 and IPv6 target survives formatAuthority → parseAuthority', () => {
  fc.assert(
    fc.property(fc.ipV4(), port, (ip, p) => {
      assert.deepEqual(parseAuthority(formatAuthority(ip, p)), { ip, port: p });
    }),
  );
  fc.assert(
    fc.property(ipv6Hex, port, (ip, p) => {
      const parsed = parseAuthority(formatAuthority(ip, p));
      assert.ok(parsed, ip);
      assert.equal(parsed.port, p);
      assert.deepEqual(ipv6Groups(parsed.ip), ipv6Groups(ip), `${ip} → ${parsed.ip}: same address`);
      // Canonical: lower case, and a fixed point.
      assert.equal(parsed.ip, parsed.ip.toLowerCase());
      assert.deepEqual(parseAuthority(formatAuthority(parsed.ip, p)), parsed);
    }),
  );
});

test('property: no second target and no extra character can be smuggled into a valid authority', () => {
  const smuggle = fc.constantFrom(',', ' ', '\t', '\n', '\r', '\0', '@', '%', '/', '\\', '?', '#', ';', '&', '=', '+', '"', "'", '(', ')', '*', '!', '$', '~', '\u00a0', '\u200b', '|', '<', '>', '{', '}', '^', '`', 'x', 'g', '-', '_');
  fc.assert(
    fc.property(validAuthority, fc.nat(), smuggle, (a, at, c) => {
      const i = at % (a.length + 1);
      assert.equal(parseAuthority(a.slice(0, i) + c + a.slice(i)), undefined, JSON.stringify(a.slice(0, i) + c + a.slice(i)));
    }),
  );
  fc.assert(
    fc.property(validAuthority, validAuthority, fc.constantFrom('', ',', ', ', ' ', ';', '@', '/', '\t', '%2C'), (a, b, sep) => {
      assert.equal(parseAuthority(a + sep + b), undefined, JSON.stringify(a + sep + b));
    }),
  );
});

test('property: whatever parseAuthority accepts is a well-formed target, and it never throws', () => {
  const alphabet = fc.constantFrom(...'0123456789abcdefABCDEF:.[]%@,/ x'.split(''));
  fc.assert(
    fc.property(fc.stringOf(alphabet, { maxLength: 48 }), (s) => {
      const parsed = parseAuthority(s);
      if (!parsed) return;
      assert.match(s, /^[0-9a-fA-F:.[\]]+$/, 'only address characters');
      assert.ok(Number.isInteger(parsed.port) && parsed.port >= 1 && parsed.port <= 65535);
      assert.ok(isIP(parsed.ip) !== 0, parsed.ip);
      // IPv4 is taken only in its one canonical spelling; IPv6 comes back as the same address.
      if (isIPv4(parsed.ip)) assert.equal(formatAuthority(parsed.ip, parsed.port), s);
      else assert.deepEqual(ipv6Groups(parsed.ip), ipv6Groups(s.slice(1, s.lastIndexOf(']'))));
    }),
    { numRuns: 5000 },
  );
  fc.assert(
    fc.property(fc.fullUnicodeString({ maxLength: 80 }), (s) => {
      const parsed = parseAuthority(s);
      assert.ok(parsed === undefined || (typeof parsed.ip === 'string' && typeof parsed.port === 'number'));
    }),
  );
});
