// Hostile input for the flow filters: Hubble FlowFilter objects of any shape, `weft observe` command
// lines and `--flow-log-filter` JSON. Compiling either succeeds or throws the typed filter/usage error
// naming the value; a compiled filter never throws on a flow; user regular expressions and globs run
// in time linear in the input (no catastrophic backtracking); prototype keys are refused.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { ErrorCodes, WeftError } from '../agent/errors.js';
import { compileFilters, InvalidFilterError, MAX_PATTERN_LENGTH, parseLabelSelector } from '../agent/flows/filter.js';
import { parseFlowLogFilter } from '../agent/flows/flow-log.js';
import type { Flow, FlowFilter } from '../agent/flows/types.js';
import { parseObserveArgs } from '../agent/cli/observe.js';
import { makeFlow } from './helpers/flow-fixtures.js';
import { PROTO_KEYS, assertPrototypeUntouched, bounded, garbage, snapshotObjectPrototype, withOwnKey } from './helpers/hostile.js';

const RUNS = Number(process.env.WEFT_PROPERTY_RUNS ?? 200);
const PROTO_BEFORE = snapshotObjectPrototype();

/** Flows with every field a filter looks at, some of them long (a 16 KiB path, a 253-character name). */
const LONG_PATH = `/${'a'.repeat(16 * 1024)}!`;
const LONG_NAME = `${'a'.repeat(61)}.${'a'.repeat(63)}.${'a'.repeat(63)}.${'a'.repeat(61)}x`;
const FLOWS: Flow[] = [
  makeFlow({ at: 0 }),
  makeFlow({ at: 1, verdict: 'DROPPED', reply: true, node: 'prod/node-b' }),
  {
    ...makeFlow({ at: 2, src: { ns: 'shop', pod: 'web-1', ip: 'fd00::1', port: 5555 }, dst: { ns: 'shop', pod: 'api-0', ip: 'fd00::2', port: 8080 } }),
    IP: { source: 'fd00::1', destination: 'fd00::2', ipVersion: 'IPv6' },
    l4: { TCP: { source_port: 5555, destination_port: 8080, flags: { SYN: true, ACK: true } } },
    l7: { type: 'REQUEST', http: { code: 503, method: 'GET', url: `http://api.shop${LONG_PATH}?q=1`, protocol: 'HTTP/1.1' } },
    source_names: [LONG_NAME, 'api.example.com'],
    destination_names: ['a'.repeat(253)],
    trace_context: { parent: { trace_id: 'abc' } },
  } as Flow,
  {
    ...makeFlow({ at: 3 }),
    l4: { UDP: { source_port: 53, destination_port: 40000 } },
    l7: { type: 'RESPONSE', dns: { query: `${'a'.repeat(240)}.example.com.` } },
    source: { namespace: 'kube-system', pod_name: 'coredns', labels: ['k8s:app=dns', 'reserved:host', '__proto__=x', 'k8s:constructor'] },
  } as Flow,
];

/** Compiles and runs a filter over every fixture flow; returns how many passed, or the compile error. */
function run(whitelist: unknown, blacklist?: unknown): number | InvalidFilterError {
  let pred: (f: Flow) => boolean;
  try {
    pred = bounded(500, 'compileFilters', () => compileFilters(whitelist as FlowFilter[], blacklist as FlowFilter[]));
  } catch (err) {
    assert.ok(err instanceof InvalidFilterError, `not a filter error: ${String(err)}`);
    assert.ok(err instanceof WeftError);
    assert.equal(err.code, ErrorCodes.USAGE);
    assert.match(err.message, /^invalid flow filter: /);
    assert.ok(err.message.length < 600, err.message.slice(0, 300));
    return err;
  }
  // Worst case per flow: a 256-character pattern over the 16 KiB path (linear engine).
  return bounded(2000, 'filtering the fixture flows', () => FLOWS.filter((f) => pred(f)).length);
}

// ---- arbitraries -------------------------------------------------------------------------------------

const ipish = fc.oneof(fc.ipV4(), fc.ipV6(), fc.tuple(fc.ipV4(), fc.integer({ min: -1, max: 40 })).map(([a, p]) => `${a}/${p}`), fc.tuple(fc.ipV6(), fc.integer({ min: 0, max: 130 })).map(([a, p]) => `${a}/${p}`), fc.constantFrom('10.0.0.0/8/8', '1.2.3.4/', '/8', '::/0', 'fe80::1%eth0', 'fe80::1%eth0/64', '999.1.1.1', '10.0.0.0/0008'));
const REGEX_TOKENS = ['a', 'b', '.', '*', '+', '?', '(', ')', '(?:', '|', '[', ']', '[^/]', '\\d', '\\w', '\\s', '\\1', '(?=', '(?<=', '(?<n>', '\\k<n>', '{2}', '{3,}', '{1,16}', '{17}', '{1000}', '^', '$', '/', '\\', '-', 'é', '\ud83d\ude00', '(?i)'];
const regexish = fc.array(fc.constantFrom(...REGEX_TOKENS), { maxLength: 20 }).map((t) => t.join(''));
const SELECTOR_TOKENS = ['app', 'k8s:app', 'any:app', 'reserved:host', '=', '==', '!=', '!', ',', ' ', 'in', 'notin', '(', ')', 'x', 'y', '1', '-5', '<', '>', '__proto__', 'constructor', ':', 'é'];
const selectorish = fc.array(fc.constantFrom(...SELECTOR_TOKENS), { maxLength: 12 }).map((t) => t.join(''));
const globish = fc.array(fc.constantFrom('*', '.', 'a', 'example', 'com', '-', '_', '/', 'A', ' ', '..', 'é'), { maxLength: 12 }).map((t) => t.join(''));

/** Plausible values for every field, plus garbage of any type. */
const fieldValues: Record<keyof FlowFilter, fc.Arbitrary<unknown>> = {
  uuid: fc.string(),
  source_ip: ipish,
  destination_ip: ipish,
  source_pod: fc.oneof(fc.constantFrom('', 'shop/', 'shop/web', 'web', '/', 'a/b/c'), fc.string()),
  destination_pod: fc.string(),
  source_fqdn: globish,
  destination_fqdn: globish,
  source_label: selectorish,
  destination_label: selectorish,
  source_service: fc.string(),
  destination_service: fc.string(),
  source_workload: fc.record({ name: fc.string(), kind: fc.constantFrom('Deployment', '', 'Pod') }, { requiredKeys: [] }),
  destination_workload: fc.record({ name: fc.string(), kind: fc.string() }, { requiredKeys: [] }),
  traffic_direction: fc.constantFrom('INGRESS', 'EGRESS', 'TRAFFIC_DIRECTION_UNKNOWN', 'sideways'),
  verdict: fc.constantFrom('FORWARDED', 'DROPPED', 'AUDIT', 'nope'),
  event_type: fc.record({ type: fc.integer({ min: -1, max: 200 }), match_sub_type: fc.boolean(), sub_type: fc.integer({ min: 0, max: 200 }) }, { requiredKeys: [] }),
  http_status_code: fc.oneof(fc.constantFrom('200', '5+', '50+', '5', '600', '+', '2xx', '099'), fc.string({ maxLength: 4 })),
  protocol: fc.constantFrom('tcp', 'UDP', 'http', 'icmp', 'carrier-pigeon', ''),
  source_port: fc.oneof(fc.integer({ min: -5, max: 70000 }).map(String), fc.constantFrom('', '0x50', '80 ', '1e3', '0000000000000000080')),
  destination_port: fc.integer({ min: 0, max: 66000 }).map(String),
  reply: fc.boolean(),
  dns_query: regexish,
  source_identity: fc.integer({ min: 0, max: 2 ** 32 - 1 }),
  destination_identity: fc.integer({ min: 0, max: 100 }),
  http_method: fc.constantFrom('GET', 'get', 'POST', ''),
  http_path: regexish,
  tcp_flags: fc.record({ SYN: fc.boolean(), ACK: fc.boolean(), FIN: fc.boolean(), NS: fc.boolean() }, { requiredKeys: [] }),
  node_name: fc.oneof(globish, fc.constantFrom('prod/', 'prod/node-*', '*/*', 'a/b/c', '')),
  ip_version: fc.constantFrom('IPv4', 'IPv6', 'IP_NOT_USED'),
  trace_id: fc.string(),
};
const FIELDS = Object.keys(fieldValues) as Array<keyof FlowFilter>;

/** A FlowFilter of any shape: mostly plausible values, sometimes garbage, wrong containers, unknown and prototype keys. */
const anyFilter: fc.Arbitrary<unknown> = fc
  .array(
    fc.constantFrom(...FIELDS).chain((f) =>
      fc.tuple(
        fc.constant(f as string),
        fc.oneof(
          { weight: 8, arbitrary: fc.array(fieldValues[f], { maxLength: 3 }) },
          { weight: 1, arbitrary: fc.array(garbage(), { maxLength: 2 }) },
          { weight: 1, arbitrary: garbage() },
        ),
      ),
    ),
    { maxLength: 4 },
  )
  .chain((entries) =>
    fc.oneof(
      { weight: 10, arbitrary: fc.constant(Object.fromEntries(entries)) },
      { weight: 1, arbitrary: fc.tuple(fc.constantFrom(...PROTO_KEYS, 'http_url', 'experimental', 'nonsense'), garbage()).map(([k, v]) => withOwnKey(Object.fromEntries(entries), k, v)) },
      { weight: 1, arbitrary: garbage() },
    ),
  );

// ---- properties ------------------------------------------------------------------------------------------

test('any FlowFilter: compiles or is refused with InvalidFilterError; a compiled filter never throws', () => {
  fc.assert(
    fc.property(fc.array(anyFilter, { maxLength: 3 }), fc.option(fc.array(anyFilter, { maxLength: 2 }), { nil: undefined }), (wl, bl) => {
      run(wl, bl);
    }),
    { numRuns: RUNS * 3 },
  );
  assertPrototypeUntouched(PROTO_BEFORE);
});

test('whitelist and blacklist that are not lists are refused, not iterated', () => {
  for (const bad of [{}, 'x', 5, { length: 1e9 }, new Map()]) {
    assert.ok(run(bad) instanceof InvalidFilterError, JSON.stringify(bad));
    assert.ok(run([], bad) instanceof InvalidFilterError);
  }
  assert.equal(run(null), FLOWS.length);
});

test('each field refuses values of the wrong type, naming the field and index', () => {
  const wrong: Array<[keyof FlowFilter, unknown, RegExp]> = [
    ['source_ip', ['10.0.0.1', 7], /source_ip\[1\]: must be a string/],
    ['source_ip', '10.0.0.1', /source_ip: must be a list/],
    ['reply', ['true'], /reply\[0\]: must be a boolean/],
    ['source_identity', [-1], /source_identity\[0\]: must be an integer/],
    ['source_identity', [1.5], /must be an integer/],
    ['event_type', [null], /event_type\[0\]: must be an EventTypeFilter/],
    ['event_type', [{ type: '4' }], /type must be an int32/],
    ['tcp_flags', [{ SYN: 'yes' }], /SYN must be a boolean/],
    ['tcp_flags', [{ BOGUS: true }], /unknown TCP flag "BOGUS"/],
    ['tcp_flags', [['SYN']], /must be a TCPFlags object/],
    ['source_workload', [{ name: 5 }], /name must be a string/],
    ['source_workload', [withOwnKey({}, '__proto__', { polluted: 1 })], /unknown Workload field "__proto__"/],
    ['http_path', [{ toString: () => '(a+)+$' }], /http_path\[0\]: must be a string/],
  ];
  for (const [field, values, why] of wrong) {
    const err = run([{ [field]: values }]);
    assert.ok(err instanceof InvalidFilterError, `${field}: ${JSON.stringify(values)} was accepted`);
    assert.match(err.message, why);
  }
  assertPrototypeUntouched(PROTO_BEFORE);
});

test('prototype keys and Hubble fields weft does not evaluate are refused, never ignored', () => {
  for (const key of PROTO_KEYS) {
    const err = run([withOwnKey({ verdict: ['DROPPED'] }, key, ['x'])]);
    assert.ok(err instanceof InvalidFilterError, key);
    assert.match(err.message, new RegExp(`unknown FlowFilter field "${key.replace(/[$_]/g, '\\$&')}"`));
  }
  for (const key of ['http_url', 'http_header', 'source_cluster_name', 'encrypted', 'experimental']) {
    const value = key === 'experimental' ? { cel_expression: ['true'] } : key === 'encrypted' ? [true] : ['x'];
    const err = run([{ [key]: value }]);
    assert.ok(err instanceof InvalidFilterError, key);
    assert.match(err.message, new RegExp(`${key}: not supported by weft`));
    // Unset (as gRPC sends absent fields) is no filter at all.
    assert.equal(run([{ [key]: key === 'experimental' ? {} : [] }]), FLOWS.length);
  }
  assertPrototypeUntouched(PROTO_BEFORE);
});

test('malformed addresses are refused, including extra slashes', () => {
  for (const v of ['10.0.0.0/8/8', '10.0.0.0/', '/8', '10.0.0.0/33', '::/129', '10.0.0.0/0x8', '10.0.0.0/00000000000000000000000008', 'x', '']) {
    assert.ok(run([{ source_ip: [v] }]) instanceof InvalidFilterError, v);
  }
  assert.equal(run([{ source_ip: ['fd00::/16'] }]), 1);
  assert.equal(run([{ source_ip: ['10.0.0.0/8'] }]), 3);
});

// ---- regular expressions: linear time ---------------------------------------------------------------------

/** Patterns that take exponential (or high polynomial) time in a backtracking engine. */
const EVIL = ['(a+)+$', '(a|a)*!$', '(a|aa)+$', '(.*a){16}$', '^(a+)+b', '(a*)*b', '([a-z]+)*[0-9]', '(\\w+\\s?)*$', '(x+x+)+y', 'a*a*a*a*a*a*a*a*a*a*a*b'];

test('catastrophic-backtracking patterns run in linear time over a 16 KiB path', () => {
  for (const p of EVIL) {
    const n = bounded(1500, `http_path ${p}`, () => run([{ http_path: [p] }]));
    assert.equal(typeof n, 'number', `${p} was refused: ${String(n)}`);
    const d = bounded(1500, `dns_query ${p}`, () => run([{ dns_query: [p] }]));
    assert.equal(typeof d, 'number');
  }
  // Matching still means what it meant: a pattern that matches the long path.
  assert.equal(run([{ http_path: ['^/a+!$'] }]), 1);
  assert.equal(run([{ http_path: ['^/b'] }]), 0);
});

test('patterns a linear engine cannot run are refused, saying why', () => {
  for (const p of ['(a)\\1', '(?=a)a', '(?<=a)b', '(?<n>a)\\k<n>', 'a{17}', '(a{10}){10}']) {
    const err = run([{ http_path: [p] }]);
    assert.ok(err instanceof InvalidFilterError, p);
    assert.match(err.message, /cannot be matched in linear time/);
  }
  const syntax = run([{ http_path: ['(unclosed'] }]);
  assert.ok(syntax instanceof InvalidFilterError);
  assert.match(syntax.message, /HTTP path "\(unclosed": .*(Unterminated group|Invalid)/i);
  const long = run([{ http_path: ['a'.repeat(MAX_PATTERN_LENGTH + 1)] }]);
  assert.ok(long instanceof InvalidFilterError);
  assert.match(long.message, /longer than 256 characters/);
  assert.ok(long.message.length < 300, 'the pattern is not repeated whole');
});

test('random regular expressions: compiled or refused, never slow', () => {
  fc.assert(
    fc.property(regexish, (p) => {
      run([{ http_path: [p] }]);
      run([{ dns_query: [p, p] }]);
    }),
    { numRuns: RUNS * 2 },
  );
});

test('FQDN and node-name globs with many stars stay linear over 253-character names', () => {
  const stars = `${'*a'.repeat(30)}*b`;
  assert.equal(bounded(500, 'fqdn glob', () => run([{ source_fqdn: [stars] }])), 0);
  assert.equal(bounded(500, 'fqdn glob', () => run([{ destination_fqdn: [stars, `${'a*'.repeat(40)}`] }])), 1);
  assert.equal(bounded(500, 'node glob', () => run([{ node_name: [`${'*n'.repeat(30)}*x`, `${'*-'.repeat(20)}*/${'*n'.repeat(20)}`] }])), 0);
  // A glob can never match more than a DNS name holds.
  const err = run([{ source_fqdn: ['a'.repeat(254)] }]);
  assert.ok(err instanceof InvalidFilterError);
  assert.match(err.message, /longer than a DNS name/);
  fc.assert(
    fc.property(fc.array(globish, { minLength: 1, maxLength: 3 }), (gs) => {
      run([{ source_fqdn: gs }]);
      run([{ node_name: gs }]);
    }),
    { numRuns: RUNS },
  );
});

// ---- label selectors ---------------------------------------------------------------------------------------

test('label selectors: token soup parses or is refused with InvalidFilterError', () => {
  fc.assert(
    fc.property(selectorish, (s) => {
      try {
        const reqs = parseLabelSelector(s);
        for (const r of reqs) assert.notEqual(r.key, '');
      } catch (err) {
        assert.ok(err instanceof InvalidFilterError, String(err));
      }
      run([{ source_label: [s] }]);
    }),
    { numRuns: RUNS * 2 },
  );
});

test('label selectors with valid keys and values match exactly the flows carrying the label', () => {
  const key = fc.stringMatching(/^[a-z][a-z0-9.-]{0,10}$/);
  const value = fc.stringMatching(/^[a-z0-9]{1,8}$/);
  fc.assert(
    fc.property(key, value, fc.boolean(), (k, v, carry) => {
      const flow = makeFlow({ at: 9 });
      flow.source!.labels = carry ? [`k8s:${k}=${v}`, 'k8s:other=1'] : ['k8s:other=1', `k8s:${k}=${v}x`];
      const pred = compileFilters([{ source_label: [`${k}=${v}`] }], []);
      assert.equal(pred(flow), carry);
      assert.equal(compileFilters([{ source_label: [`k8s:${k} in (${v}, zz)`] }], [])(flow), carry);
      // The key is there either way (with another value when not carried): `!k` never matches.
      assert.equal(compileFilters([{ source_label: [`!${k}`] }], [])(flow), false);
    }),
    { numRuns: RUNS },
  );
});

// ---- weft observe: the command line -------------------------------------------------------------------------

const OBSERVE_FLAGS = ['--from-pod', '--to-pod', '--pod', '--from-namespace', '--to-namespace', '-n', '--namespace', '--from-ip', '--to-ip', '--ip', '--from-label', '--to-label', '-l', '--label', '--from-port', '--to-port', '--port', '--from-service', '--to-service', '--service', '--verdict', '--protocol', '--http-status', '--http-method', '--http-path', '-t', '--type', '--traffic-direction', '--node-name', '--tcp-flags', '--uuid', '--not', '-f', '--follow', '--last', '--first', '--all', '--since', '--until', '-o', '--output', '--color', '--print-node-name', '--server', '--tls'];
const observeValue = fc.oneof(
  fc.string({ maxLength: 12 }),
  ipish,
  regexish,
  selectorish,
  globish,
  fc.constantFrom('DROPPED', 'trace:to-endpoint', 'drop', '4:1', 'ingress', 'syn,ack', 'json', '5m', '2024-05-04T13:23:47Z', '9'.repeat(400) + 'h', '99999999999999999999999', '-1', '1e3', ...EVIL),
  fc.constantFrom(...PROTO_KEYS),
);
const observeArgv = fc.array(fc.oneof({ weight: 2, arbitrary: fc.constantFrom(...OBSERVE_FLAGS) }, { weight: 2, arbitrary: observeValue }, { weight: 1, arbitrary: fc.constantFrom(...PROTO_KEYS.map((k) => `--${k}`), '--constructor=x', '--', '-', '--=', '---x') }), { maxLength: 8 });

test('weft observe: any command line gives a request or a usage error; the request compiles or is refused', () => {
  fc.assert(
    fc.property(observeArgv, (argv) => {
      let opts;
      try {
        opts = bounded(500, 'parseObserveArgs', () => parseObserveArgs(argv, Date.UTC(2024, 4, 4)));
      } catch (err) {
        assert.ok(err instanceof WeftError, `${JSON.stringify(argv)}: ${String(err)}`);
        assert.equal(err.code, ErrorCodes.USAGE);
        return;
      }
      const n = opts.request.number;
      if (n !== undefined) assert.match(String(n), /^\d+$/, 'number is a uint64');
      run(opts.request.whitelist, opts.request.blacklist);
    }),
    { numRuns: RUNS * 3 },
  );
  assertPrototypeUntouched(PROTO_BEFORE);
});

test('weft observe: prototype names are unknown flags, not filters that match everything', () => {
  for (const k of PROTO_KEYS) {
    assert.throws(() => parseObserveArgs([`--${k}`, 'x']), (e: unknown) => e instanceof WeftError && e.code === ErrorCodes.USAGE && e.message.startsWith(`unknown flag: --${k}`), k);
    assert.throws(() => parseObserveArgs([k, 'x']), (e: unknown) => e instanceof WeftError && e.message.startsWith(`unknown argument "${k}"`), k);
  }
  // A time too far back to represent is a usage error, not a RangeError.
  assert.throws(() => parseObserveArgs(['--since', `${'9'.repeat(400)}h`]), (e: unknown) => e instanceof WeftError && e.code === ErrorCodes.USAGE);
  assert.throws(() => parseObserveArgs(['--last', '99999999999999999999999']), (e: unknown) => e instanceof WeftError && e.code === ErrorCodes.USAGE);
});

// ---- --flow-log-filter JSON -------------------------------------------------------------------------------

test('--flow-log-filter: any JSON is parsed or refused with a usage error naming where', () => {
  const json = fc.oneof(
    fc.json(),
    fc.record({ whitelist: fc.array(anyFilter, { maxLength: 2 }), blacklist: fc.array(anyFilter, { maxLength: 2 }) }, { requiredKeys: [] }).map((o) => JSON.stringify(o) ?? ''),
    fc.constantFrom(...PROTO_KEYS).map((k) => `{"whitelist":[{"${k}":["x"]}]}`),
    fc.constantFrom(...PROTO_KEYS).map((k) => `{"${k}":[{"verdict":["DROPPED"]}]}`),
  );
  fc.assert(
    fc.property(json, (text) => {
      try {
        const f = bounded(500, 'parseFlowLogFilter', () => parseFlowLogFilter(text));
        run(f.whitelist, f.blacklist);
      } catch (err) {
        assert.ok(err instanceof WeftError, `${text}: ${String(err)}`);
        assert.equal(err.code, ErrorCodes.USAGE);
        assert.match(err.message, /^--flow-log-filter: /);
      }
    }),
    { numRuns: RUNS * 2 },
  );
  for (const k of ['hasOwnProperty', '__proto__', 'constructor', 'toString']) {
    assert.throws(() => parseFlowLogFilter(`{"whitelist":[{"${k}":[1]}]}`), (e: unknown) => e instanceof WeftError && /unknown FlowFilter field/.test(e.message), k);
    // And inside the object-valued fields (a workload, an event type, TCP flags).
    for (const field of ['source_workload', 'event_type', 'tcp_flags']) {
      assert.throws(() => parseFlowLogFilter(`{"whitelist":[{"${field}":[{"${k}":""}]}]}`), (e: unknown) => e instanceof WeftError && e.code === ErrorCodes.USAGE && /unknown field/.test(e.message), `${field}.${k}`);
    }
  }
  assertPrototypeUntouched(PROTO_BEFORE);
});
