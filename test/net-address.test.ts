// The address module: IPv4 and IPv6 parsing (zones, IPv4-mapped addresses, embedded dotted quads),
// prefixes and containment, the lab's IPv4 ranges, and ports. Properties check the parser against
// independent oracles: node:net's isIP for validity, WHATWG URL's IPv6 serialiser for compressed
// forms, and a mask comparison for containment.
import assert from 'node:assert/strict';
import { isIP } from 'node:net';
import { test } from 'node:test';
import fc from 'fast-check';
import {
  cidrContains,
  cidrLast,
  cidrSize,
  cidrsOverlap,
  familyBits,
  formatIPv4,
  indexInCidr,
  ipFamily,
  ipOrCidrProblem,
  isPort,
  mustParseIPv4Cidr,
  netContains,
  nthAddress,
  parseIPv4,
  parseIPv4Cidr,
  parseIp,
  parseIpNet,
  parsePortDigits,
  portTextProblem,
  unmapIPv4,
  type IpFamily,
} from '../agent/net/address.js';

const RUNS = Number(process.env.WEFT_PROPERTY_RUNS ?? 200);

const u32 = fc.integer({ min: 0, max: 0xffffffff });
const hextet = fc.integer({ min: 0, max: 0xffff });
const groups8 = fc.array(hextet, { minLength: 8, maxLength: 8 });
const valueOf = (groups: readonly number[]): bigint => groups.reduce((acc, g) => (acc << 16n) | BigInt(g), 0n);
const mask = (bits: number, prefix: number): bigint => ((1n << BigInt(prefix)) - 1n) << BigInt(bits - prefix);
/** A random value of the family's width. */
const valueFor = (family: IpFamily): fc.Arbitrary<bigint> => fc.bigUintN(familyBits(family));

test('IPv4: dotted quads only, no leading zeros, each part 0-255', () => {
  assert.equal(parseIPv4('0.0.0.0'), 0);
  assert.equal(parseIPv4('255.255.255.255'), 0xffffffff);
  assert.equal(parseIPv4('10.1.2.3'), 0x0a010203);
  for (const bad of ['', '1.2.3', '1.2.3.4.5', '01.2.3.4', '1.2.3.04', '256.0.0.0', '1.2.3.-4', ' 1.2.3.4', '1.2.3.4 ', '1.2.3.4/32', '1.2.3.4%eth0', '١.٢.٣.٤']) {
    assert.equal(parseIPv4(bad), undefined, bad);
    assert.equal(parseIp(bad), undefined, bad);
  }
  assert.deepEqual(parseIp('10.1.2.3'), { family: 4, value: 0x0a010203n });
  assert.equal(formatIPv4(0x0a010203), '10.1.2.3');
  assert.equal(formatIPv4(-1), '255.255.255.255');
});

test('IPv6: compressed, full, upper case, embedded dotted quad; zones refused unless dropped', () => {
  const full = parseIp('2001:0db8:0000:0000:0000:0000:0000:0001');
  assert.deepEqual(full, { family: 6, value: (0x2001n << 112n) | (0xdb8n << 96n) | 1n });
  assert.deepEqual(parseIp('2001:db8::1'), full);
  assert.deepEqual(parseIp('2001:DB8::1'), full);
  assert.deepEqual(parseIp('::'), { family: 6, value: 0n });
  assert.deepEqual(parseIp('::1'), { family: 6, value: 1n });
  assert.deepEqual(parseIp('1::'), { family: 6, value: 1n << 112n });
  assert.deepEqual(parseIp('64:ff9b::192.0.2.1'), { family: 6, value: (0x64n << 112n) | (0xff9bn << 96n) | 0xc0000201n });
  assert.deepEqual(parseIp('1:2:3:4:5:6:10.0.0.1'), { family: 6, value: valueOf([1, 2, 3, 4, 5, 6, 0x0a00, 0x0001]) });
  for (const bad of ['2001:db8::1::2', '1:2:3:4:5:6:7:8:9', ':::', '[::1]', '::1%', 'g::1', '::ffff:01.2.3.4', '12345::']) assert.equal(parseIp(bad), undefined, bad);

  assert.equal(parseIp('fe80::1%eth0'), undefined, 'a zone is refused by default');
  assert.equal(parseIp('fe80::1%eth0', { zone: 'refuse' }), undefined);
  assert.deepEqual(parseIp('fe80::1%eth0', { zone: 'drop' }), { family: 6, value: (0xfe80n << 112n) | 1n });
  assert.equal(ipFamily('fe80::1%eth0'), 6);
  assert.equal(ipFamily('1.2.3.4'), 4);
  assert.equal(ipFamily('nope'), 0);
});

test('IPv4-mapped IPv6 stays IPv6 unless unmapped; other IPv6 is never unmapped', () => {
  assert.deepEqual(parseIp('::ffff:10.1.2.3'), { family: 6, value: (0xffffn << 32n) | 0x0a010203n });
  assert.deepEqual(parseIp('::ffff:10.1.2.3', { mapped: 'unmap' }), { family: 4, value: 0x0a010203n });
  assert.deepEqual(parseIp('::ffff:a01:203', { mapped: 'unmap' }), { family: 4, value: 0x0a010203n });
  // IPv4-compatible (::a.b.c.d) and NAT64 (64:ff9b::/96) addresses are not IPv4-mapped.
  assert.equal(parseIp('::10.1.2.3', { mapped: 'unmap' })!.family, 6);
  assert.equal(parseIp('64:ff9b::10.1.2.3', { mapped: 'unmap' })!.family, 6);
  assert.equal(parseIp('1::ffff:10.1.2.3', { mapped: 'unmap' })!.family, 6);
  assert.deepEqual(parseIp('::ffff:10.1.2.3%eth0', { zone: 'drop', mapped: 'unmap' }), { family: 4, value: 0x0a010203n });
});

test('prefixes: bare addresses, host bits, lengths, zones and leading zeros as each caller asks', () => {
  assert.deepEqual(parseIpNet('10.0.0.0/8'), { family: 4, base: 0x0a000000n, prefix: 8 });
  assert.deepEqual(parseIpNet('10.1.2.3/8'), { family: 4, base: 0x0a010203n, prefix: 8 }, 'host bits are kept as written');
  assert.deepEqual(parseIpNet('10.1.2.3'), { family: 4, base: 0x0a010203n, prefix: 32 }, 'a bare address is a host prefix');
  assert.deepEqual(parseIpNet('fd00::/8'), { family: 6, base: 0xfdn << 120n, prefix: 8 });
  assert.deepEqual(parseIpNet('::/0'), { family: 6, base: 0n, prefix: 0 });
  assert.deepEqual(parseIpNet('::ffff:10.0.0.0/104'), { family: 6, base: (0xffffn << 32n) | 0x0a000000n, prefix: 104 }, 'a mapped prefix stays IPv6');
  for (const bad of ['10.0.0.0/33', '10.0.0.0/', '10.0.0.0/08', '::/129', 'nope/8', '10.0.0.0/-1', '10.0.0.0/8/8', '/8', '10.0.0.0/ 8', 'fe80::%eth0/64', '10.0.0.0/0x8']) {
    assert.equal(parseIpNet(bad), undefined, bad);
  }
  assert.equal(parseIpNet('10.0.0.1', { bare: 'refuse' }), undefined);
  assert.deepEqual(parseIpNet('10.0.0.0/08', { leadingZeros: true }), { family: 4, base: 0x0a000000n, prefix: 8 });
  assert.equal(parseIpNet('10.0.0.0/0032', { leadingZeros: true }), undefined, 'at most three digits');
  assert.deepEqual(parseIpNet('fe80::%eth0/64', { zone: 'drop' }), { family: 6, base: 0xfe80n << 112n, prefix: 64 });
});

test('containment: prefix bits only, never across families, /0 holds its whole family', () => {
  const net = parseIpNet('10.1.0.0/16')!;
  assert.equal(netContains(net, parseIp('10.1.255.255')!), true);
  assert.equal(netContains(net, parseIp('10.2.0.0')!), false);
  assert.equal(netContains(parseIpNet('10.1.2.3/16')!, parseIp('10.1.9.9')!), true, 'host bits of the prefix do not matter');
  assert.equal(netContains(parseIpNet('0.0.0.0/0')!, parseIp('255.255.255.255')!), true);
  assert.equal(netContains(parseIpNet('0.0.0.0/0')!, parseIp('::')!), false);
  assert.equal(netContains(parseIpNet('::/0')!, parseIp('10.0.0.1')!), false);
  assert.equal(netContains(parseIpNet('10.0.0.0/8')!, parseIp('::ffff:10.0.0.1')!), false, 'a mapped address kept as IPv6 is not in an IPv4 prefix');
  assert.equal(netContains(parseIpNet('10.0.0.0/8')!, parseIp('::ffff:10.0.0.1', { mapped: 'unmap' })!), true);
  assert.equal(netContains(parseIpNet('2001:db8::/32')!, parseIp('2001:db8:ffff::1')!), true);
  assert.equal(netContains(parseIpNet('2001:db8::/32')!, parseIp('2001:db9::1')!), false);
  assert.equal(netContains(parseIpNet('2001:db8::1')!, parseIp('2001:db8::1')!), true);
  assert.equal(netContains(parseIpNet('2001:db8::1')!, parseIp('2001:db8::2')!), false);
});

test('reasons for policy values: address or prefix, lenient on host bits and leading zeros', () => {
  for (const ok of ['1.2.3.4', '1.2.3.0/24', '1.2.3.4/24', 'fd00::1', 'fd00::/8', '10.0.0.0/08', '0.0.0.0/0', '::/128']) assert.equal(ipOrCidrProblem(ok), undefined, ok);
  assert.equal(ipOrCidrProblem('nope'), '"nope" is not an IP address or CIDR');
  assert.equal(ipOrCidrProblem('10.0.0.0/33'), '"10.0.0.0/33" has an invalid prefix length (0-32 for IPv4)');
  assert.equal(ipOrCidrProblem('::/129'), '"::/129" has an invalid prefix length (0-128 for IPv6)');
  assert.equal(ipOrCidrProblem('1.2.3.4/'), '"1.2.3.4/" has an invalid prefix length (0-32 for IPv4)');
  assert.equal(ipOrCidrProblem('\u001b[2J/8'), '"\\u001b[2J/8" is not an IP address or CIDR', 'user text is quoted with controls escaped');
});

test('IPv4 ranges: strict parsing with reasons, sizes, n-th addresses and overlaps', () => {
  assert.deepEqual(parseIPv4Cidr('10.96.0.0/16'), { base: 0x0a600000, prefix: 16, text: '10.96.0.0/16' });
  assert.deepEqual(parseIPv4Cidr('0.0.0.0/0'), { base: 0, prefix: 0, text: '0.0.0.0/0' });
  assert.equal(parseIPv4Cidr('10.0.0.1'), '"10.0.0.1" is not a CIDR (expected a.b.c.d/prefix)');
  assert.equal(parseIPv4Cidr('fd00::/8'), '"fd00::/8" is not an IPv4 CIDR');
  assert.equal(parseIPv4Cidr('10.0.0.0/33'), '"10.0.0.0/33" has an invalid prefix length');
  assert.equal(parseIPv4Cidr('10.0.0.0/'), '"10.0.0.0/" has an invalid prefix length');
  assert.equal(parseIPv4Cidr('10.0.0.1/24'), '"10.0.0.1/24" has host bits set (did you mean 10.0.0.0/24?)');
  assert.throws(() => mustParseIPv4Cidr('10.0.0.1/24'), /host bits set/);
  const c = mustParseIPv4Cidr('192.168.240.0/30');
  assert.equal(cidrSize(c), 4);
  assert.equal(formatIPv4(cidrLast(c)), '192.168.240.3');
  assert.equal(nthAddress(c, 1), '192.168.240.1');
  assert.throws(() => nthAddress(c, 4), RangeError);
  assert.throws(() => nthAddress(c, -1), RangeError);
  assert.equal(indexInCidr(c, '192.168.240.3'), 3);
  assert.equal(indexInCidr(c, '192.168.240.4'), -1);
  assert.equal(indexInCidr(c, 'nope'), -1);
  assert.equal(cidrContains(c, parseIPv4('192.168.240.2')!), true);
  assert.equal(cidrsOverlap(c, mustParseIPv4Cidr('192.168.240.0/24')), true);
  assert.equal(cidrsOverlap(c, mustParseIPv4Cidr('192.168.240.4/30')), false);
  assert.equal(cidrSize(mustParseIPv4Cidr('0.0.0.0/0')), 2 ** 32);
  assert.equal(formatIPv4(cidrLast(mustParseIPv4Cidr('0.0.0.0/0'))), '255.255.255.255');
});

test('ports: sockets take 1-65535; policy strings are digits; istiod keeps 0', () => {
  for (const ok of [1, 80, 65535]) assert.equal(isPort(ok), true, String(ok));
  for (const bad of [0, -1, 65536, 1.5, NaN, Infinity, '80', null, undefined, 80n]) assert.equal(isPort(bad), false, String(bad));
  assert.equal(parsePortDigits('0'), 0);
  assert.equal(parsePortDigits('080'), 80);
  assert.equal(parsePortDigits('65535'), 65535);
  for (const bad of ['65536', '-1', '80a', '', ' 80', 'http', '8e1', '0x50']) assert.equal(parsePortDigits(bad), undefined, bad);
  assert.equal(portTextProblem('8080'), undefined);
  assert.equal(portTextProblem('0'), 'port 0 is outside 1-65535');
  assert.equal(portTextProblem('65536'), 'port 65536 is outside 1-65535');
  assert.equal(portTextProblem('123456'), '"123456" is not a port number');
  assert.equal(portTextProblem('http'), '"http" is not a port number');
});

test('property: an address parses exactly when node:net says it is one', () => {
  const part = fc.oneof(fc.integer({ min: 0, max: 999 }).map(String), fc.stringMatching(/^0\d{1,2}$/), fc.constantFrom('', '-1', ' 1', 'a'));
  const quad = fc.array(part, { minLength: 3, maxLength: 5 }).map((ps) => ps.join('.'));
  const v6ish = fc.array(fc.oneof(hextet.map((h) => h.toString(16)), fc.constantFrom('', 'ffff', '1.2.3.4', 'g', '10000', '%eth0')), { minLength: 1, maxLength: 10 }).map((ps) => ps.join(':'));
  fc.assert(
    fc.property(fc.oneof(quad, v6ish, fc.string({ maxLength: 20 })), (text) => {
      const family = isIP(text);
      assert.equal(parseIPv4(text) !== undefined, family === 4, text);
      const zoned = text.includes('%');
      assert.equal(parseIp(text) !== undefined, family !== 0 && !zoned, text);
      assert.equal(parseIp(text, { zone: 'drop' }) !== undefined, family !== 0, text);
      assert.equal(ipFamily(text), family);
    }),
    { numRuns: RUNS * 5 },
  );
});

test('property: IPv4 values survive formatting and parsing, as IPv4 and as IPv4-mapped IPv6', () => {
  fc.assert(
    fc.property(u32, (n) => {
      const text = formatIPv4(n);
      assert.equal(parseIPv4(text), n);
      assert.deepEqual(parseIp(text), { family: 4, value: BigInt(n) });
      const mapped = parseIp(`::ffff:${text}`);
      assert.deepEqual(mapped, { family: 6, value: (0xffffn << 32n) | BigInt(n) });
      assert.deepEqual(unmapIPv4(mapped!), { family: 4, value: BigInt(n) });
      assert.deepEqual(parseIp(`::ffff:${(n >>> 16).toString(16)}:${(n & 0xffff).toString(16)}`, { mapped: 'unmap' }), { family: 4, value: BigInt(n) });
    }),
    { numRuns: RUNS },
  );
});

test('property: IPv6 in full, padded, upper-case, compressed (as WHATWG URL writes it) and dotted-quad forms has one value', () => {
  fc.assert(
    fc.property(groups8, fc.boolean(), fc.boolean(), (gs, pad, upper) => {
      const value = valueOf(gs);
      let full = gs.map((g) => (pad ? g.toString(16).padStart(4, '0') : g.toString(16))).join(':');
      if (upper) full = full.toUpperCase();
      assert.deepEqual(parseIp(full), { family: 6, value }, full);
      const compressed = new URL(`http://[${full}]/`).hostname.slice(1, -1);
      assert.deepEqual(parseIp(compressed), { family: 6, value }, compressed);
      const dotted = `${gs.slice(0, 6).map((g) => g.toString(16)).join(':')}:${gs[6]! >> 8}.${gs[6]! & 255}.${gs[7]! >> 8}.${gs[7]! & 255}`;
      assert.deepEqual(parseIp(dotted), { family: 6, value }, dotted);
      const unmapped = unmapIPv4({ family: 6, value });
      if (value >> 32n === 0xffffn) assert.deepEqual(unmapped, { family: 4, value: value & 0xffffffffn });
      else assert.deepEqual(unmapped, { family: 6, value });
    }),
    { numRuns: RUNS },
  );
});

test('property: containment is "equal under the prefix mask", for both families', () => {
  const case_ = fc.constantFrom<IpFamily>(4, 6).chain((family) =>
    fc.record({
      family: fc.constant(family),
      base: valueFor(family),
      prefix: fc.integer({ min: 0, max: familyBits(family) }),
      ip: valueFor(family),
      host: valueFor(family),
    }),
  );
  fc.assert(
    fc.property(case_, ({ family, base, prefix, ip, host }) => {
      const bits = familyBits(family);
      const m = mask(bits, prefix);
      const net = { family, base, prefix };
      assert.equal(netContains(net, { family, value: ip }), ((base ^ ip) & m) === 0n);
      // Any host bits under the prefix are inside; the same address in the other family is not.
      const inside = (base & m) | (host & ~m & mask(bits, bits));
      assert.equal(netContains(net, { family, value: inside }), true);
      assert.equal(netContains(net, { family: family === 4 ? 6 : 4, value: inside }), false);
      if (prefix > 0) {
        const flipped = inside ^ (1n << BigInt(bits - prefix));
        assert.equal(netContains(net, { family, value: flipped }), false);
      }
      // The text form parses back to the same prefix.
      const text = family === 4 ? `${formatIPv4(Number(base))}/${prefix}` : `${new URL(`http://[${base.toString(16).padStart(32, '0').match(/.{4}/g)!.join(':')}]/`).hostname.slice(1, -1)}/${prefix}`;
      assert.deepEqual(parseIpNet(text), net, text);
      assert.equal(ipOrCidrProblem(text), undefined, text);
    }),
    { numRuns: RUNS * 2 },
  );
});

test('property: IPv4 ranges — normalised text round-trips, host bits are refused with the fix, overlap is interval overlap', () => {
  const range = fc.record({ ip: u32, prefix: fc.integer({ min: 0, max: 32 }) });
  fc.assert(
    fc.property(range, range, fc.nat(), ({ ip, prefix }, other, n) => {
      const base = prefix === 0 ? 0 : (ip & ((0xffffffff << (32 - prefix)) >>> 0)) >>> 0;
      const text = `${formatIPv4(base)}/${prefix}`;
      const c = parseIPv4Cidr(text);
      assert.deepEqual(c, { base, prefix, text });
      if (typeof c === 'string') return;
      if (ip !== base) assert.equal(parseIPv4Cidr(`${formatIPv4(ip)}/${prefix}`), `"${formatIPv4(ip)}/${prefix}" has host bits set (did you mean ${text}?)`);
      const i = n % cidrSize(c);
      assert.equal(indexInCidr(c, nthAddress(c, i)), i);
      // The same range as a matching prefix holds the same addresses.
      assert.equal(netContains(parseIpNet(text)!, parseIp(nthAddress(c, i))!), true);
      const obase = other.prefix === 0 ? 0 : (other.ip & ((0xffffffff << (32 - other.prefix)) >>> 0)) >>> 0;
      const o = mustParseIPv4Cidr(`${formatIPv4(obase)}/${other.prefix}`);
      const expected = Math.max(c.base, o.base) <= Math.min(cidrLast(c), cidrLast(o));
      assert.equal(cidrsOverlap(c, o), expected);
      assert.equal(cidrsOverlap(o, c), expected);
    }),
    { numRuns: RUNS * 2 },
  );
});

test('property: a port string is accepted exactly when its number is a socket port', () => {
  fc.assert(
    fc.property(fc.integer({ min: -10, max: 70_000 }), (n) => {
      assert.equal(portTextProblem(String(n)) === undefined, isPort(n), String(n));
      assert.equal(parsePortDigits(String(n)), n >= 0 && n <= 65535 ? n : undefined);
    }),
    { numRuns: RUNS },
  );
});
