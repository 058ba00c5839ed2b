// `weft observe`: hubble's flags turned into GetFlows requests (whitelist/blacklist, --not, the
// either-direction flags, defaults), hubble's compact/dict/table/json output of known flows, and a
// clear error with exit code 1 when the server cannot be reached.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FlowPrinter, flowType, formatTime, type OutputFormat } from '../agent/cli/observe-printer.js';
import { observe, parseObserveArgs, parseTime } from '../agent/cli/observe.js';
import { ObserverServer } from '../agent/flows/observer-server.js';
import { flowResponseToJson } from '../agent/flows/json.js';
import { FlowStore } from '../agent/flows/store.js';
import type { GetFlowsResponse } from '../agent/flows/types.js';
import { createLogger } from '../agent/log.js';
import { T0_MS, makeFlow } from './helpers/flow-fixtures.js';

const NOW = Date.UTC(2024, 4, 4, 14, 0, 0);
const req = (...argv: string[]): ReturnType<typeof parseObserveArgs>['request'] => parseObserveArgs(argv, NOW).request;

test('defaults as hubble: --last 20 unless following, first, since or until is given', () => {
  assert.deepEqual(req(), { follow: false, number: 20 });
  assert.deepEqual(req('-f'), { follow: true });
  assert.deepEqual(req('--last', '5', '--follow'), { follow: true, number: 5 });
  assert.deepEqual(req('--first', '3'), { follow: false, number: 3, first: true });
  assert.deepEqual(req('--since', '5m'), { follow: false, since: { seconds: String((NOW - 300_000) / 1000), nanos: 0 } });
  assert.deepEqual(req('--since', '2024-05-04T13:00:00Z', '--until', '2024-05-04T13:30:00.5Z'), {
    follow: false,
    since: { seconds: String(Date.UTC(2024, 4, 4, 13) / 1000), nanos: 0 },
    until: { seconds: String(Date.UTC(2024, 4, 4, 13, 30) / 1000), nanos: 500_000_000 },
  });
  assert.equal(req('-f', '--until', '1m').until, undefined, '--until is not sent with --follow');
  assert.equal(req('--all').number, '18446744073709551615');
  assert.equal(parseObserveArgs([]).server, 'localhost:4245');
  assert.equal(parseObserveArgs(['--server', '10.0.0.2:4244']).server, '10.0.0.2:4244');
  assert.equal(parseTime('1h30m', NOW), NOW - 5_400_000);
});

test('filters: same flag ORs, different flags AND, --not builds the blacklist', () => {
  assert.deepEqual(req('--verdict', 'DROPPED', '--verdict', 'AUDIT', '--from-pod', 'shop/web').whitelist, [{ verdict: ['DROPPED', 'AUDIT'], source_pod: ['shop/web'] }]);
  const r = req('--to-port', '80', '--not', '--from-ip', '10.0.0.1', '--not', '--http-method', 'GET', '--protocol', 'tcp');
  assert.deepEqual(r.whitelist, [{ destination_port: ['80'], protocol: ['tcp'] }]);
  assert.deepEqual(r.blacklist, [{ source_ip: ['10.0.0.1'], http_method: ['GET'] }]);
  assert.deepEqual(req('-t', 'drop', '-t', 'trace:to-endpoint', '--traffic-direction', 'ingress', '--node-name', 'node-a', '--http-status', '5+', '--http-path', '/api/.*', '--to-label', 'app=db').whitelist, [
    {
      event_type: [{ type: 1 }, { type: 4, match_sub_type: true, sub_type: 0 }],
      traffic_direction: ['INGRESS'],
      node_name: ['node-a'],
      http_status_code: ['5+'],
      http_path: ['/api/.*'],
      destination_label: ['app=db'],
    },
  ]);
});

test('either-direction flags make two filters (source OR destination), as hubble', () => {
  assert.deepEqual(req('--pod', 'shop/web').whitelist, [{ source_pod: ['shop/web'] }, { destination_pod: ['shop/web'] }]);
  assert.deepEqual(req('--ip', '10.1.1.2', '--verdict', 'DROPPED').whitelist, [
    { source_ip: ['10.1.1.2'], verdict: ['DROPPED'] },
    { destination_ip: ['10.1.1.2'], verdict: ['DROPPED'] },
  ]);
  assert.deepEqual(req('--port', '80').whitelist, [{ source_port: ['80'] }, { destination_port: ['80'] }]);
  assert.deepEqual(req('-l', 'app=web').whitelist, [{ source_label: ['app=web'] }, { destination_label: ['app=web'] }]);
  assert.deepEqual(req('-n', 'shop').whitelist, [{ source_pod: ['shop/'] }, { destination_pod: ['shop/'] }]);
  assert.deepEqual(req('--pod', 'web', '-n', 'shop').whitelist, [{ source_pod: ['shop/web'] }, { destination_pod: ['shop/web'] }]);
  assert.deepEqual(req('--not', '--pod', 'kube-system/dns').blacklist, [{ source_pod: ['kube-system/dns'] }, { destination_pod: ['kube-system/dns'] }]);
  assert.deepEqual(req('--to-namespace', 'shop').whitelist, [{ destination_pod: ['shop/'] }]);
});

test('bad flag combinations are refused as hubble refuses them', () => {
  const refused = (argv: string[], re: RegExp): void => assert.throws(() => parseObserveArgs(argv, NOW), re);
  refused(['--not'], /trailing --not/);
  refused(['--not', '--not', '--pod', 'x'], /consecutive --not/);
  refused(['--port', '80', '--to-port', '80'], /--to-port and --port cannot be combined/);
  refused(['--from-pod', 'x', '-n', 'y'], /cannot be combined/);
  refused(['--first', '1', '--last', '1'], /--first and --last/);
  refused(['--first', '1', '-f'], /--first and --follow/);
  refused(['-o', 'table', '-f'], /not compatible with follow/);
  refused(['-o', 'yaml'], /invalid output format/);
  refused(['--verdict', 'MAYBE'], /invalid --verdict/);
  refused(['--traffic-direction', 'up'], /invalid traffic direction/);
  refused(['--since', 'yesterday'], /failed to parse the time/);
  refused(['--bogus'], /unknown flag/);
});

const forwarded = makeFlow({ at: 852, uuid: 'a', reply: false });
const dropped = makeFlow({ at: 1000, uuid: 'b', verdict: 'DROPPED', src: { ns: 'default', pod: 'xwing', ip: '10.1.1.5', port: 42818 }, dst: { ns: 'default', pod: 'deathstar', ip: '10.1.2.9', port: 80 } });
const reply = makeFlow({ at: 2000, uuid: 'c', reply: true });
const responses: GetFlowsResponse[] = [
  { flow: forwarded, node_name: 'node-a', time: forwarded.time },
  { flow: dropped, node_name: 'node-a', time: dropped.time },
  { flow: reply, node_name: 'node-a', time: reply.time },
  { lost_events: { source: 'OBSERVER_EVENTS_QUEUE', num_events_lost: '12' }, node_name: 'node-a', time: reply.time },
  { node_status: { state_change: 'NODE_UNAVAILABLE', node_names: ['node-b'] }, node_name: 'relay', time: reply.time },
];

function render(output: OutputFormat, color = false): { out: string; err: string } {
  let out = '';
  let err = '';
  const p = new FlowPrinter({ output, color, toJson: flowResponseToJson, out: (s) => (out += s), err: (s) => (err += s) });
  for (const r of responses) p.write(r);
  p.close();
  return { out, err };
}

test('compact: TIME: SRC -> DST TYPE VERDICT (SUMMARY), as hubble prints it', () => {
  assert.equal(formatTime(forwarded.time), 'May  4 13:23:47.852');
  assert.equal(flowType(dropped), 'Policy denied');
  const { out, err } = render('compact');
  assert.equal(
    out,
    [
      'May  4 13:23:47.852: default/client:43210 -> default/server:80 to-endpoint FORWARDED (TCP)',
      'May  4 13:23:48.000: default/xwing:42818 <> default/deathstar:80 Policy denied DROPPED (TCP)',
      'May  4 13:23:49.000: default/server:80 <- default/client:43210 to-endpoint FORWARDED (TCP)',
      'EVENTS LOST: OBSERVER_EVENTS_QUEUE CPU(0) 12',
      '',
    ].join('\n'),
  );
  assert.equal(err, 'May  4 13:23:49.000 [relay]: 1 nodes are unavailable: node-b\n');
  const colored = render('compact', true).out.split('\n')[1]!;
  assert.equal(colored, 'May  4 13:23:48.000: \x1b[36mdefault/xwing:\x1b[33m42818\x1b[0m\x1b[0m <> \x1b[36mdefault/deathstar:\x1b[33m80\x1b[0m\x1b[0m Policy denied \x1b[31mDROPPED\x1b[0m (TCP)');
});

test('table and dict as hubble renders them', () => {
  assert.equal(
    render('table').out,
    [
      'TIMESTAMP             SOURCE                  DESTINATION            TYPE            VERDICT     SUMMARY',
      'May  4 13:23:47.852   default/client:43210    default/server:80      to-endpoint     FORWARDED   TCP',
      'May  4 13:23:48.000   default/xwing:42818     default/deathstar:80   Policy denied   DROPPED     TCP',
      'May  4 13:23:49.000   default/client:43210    default/server:80      to-endpoint     FORWARDED   TCP',
      '                      OBSERVER_EVENTS_QUEUE                          EVENTS LOST                 CPU(0) - 12',
      '',
    ].join('\n'),
  );
  const dict = render('dict').out.split('------------\n');
  assert.equal(dict.length, 4);
  assert.equal(dict[1], '  TIMESTAMP: May  4 13:23:48.000\n     SOURCE: default/xwing:42818\nDESTINATION: default/deathstar:80\n       TYPE: Policy denied\n    VERDICT: DROPPED\n    SUMMARY: TCP\n');
});

test('json: one line per response, Hubble JSON', () => {
  const lines = render('json').out.trim().split('\n');
  assert.equal(lines.length, 4, 'flows and the lost event on stdout (node status goes to stderr)');
  const first = JSON.parse(lines[0]!) as { flow: { uuid: string; verdict: string; time: string }; node_name: string };
  assert.equal(first.flow.uuid, 'a');
  assert.equal(first.flow.verdict, 'FORWARDED');
  assert.equal(first.flow.time, new Date(T0_MS + 852).toISOString());
  assert.equal(first.node_name, 'node-a');
});

test('observe against a server: prints its flows; exit code 1 and a clear message when it is down', async () => {
  const store = new FlowStore(10, 'node-a');
  store.add(forwarded);
  store.add(dropped);
  const server = new ObserverServer({ store, nodeName: 'node-a', version: 't', log: createLogger('test', { level: 'silent' }) });
  const port = await server.listen('127.0.0.1', 0);
  let out = '';
  let err = '';
  const io = { out: (s: string) => void (out += s), err: (s: string) => void (err += s), isTTY: false, env: {} };
  try {
    const code = await observe(parseObserveArgs(['--server', `127.0.0.1:${port}`, '--verdict', 'DROPPED']), io);
    assert.equal(code, 0);
    assert.equal(out, 'May  4 13:23:48.000: default/xwing:42818 <> default/deathstar:80 Policy denied DROPPED (TCP)\n');
  } finally {
    await server.close();
  }
  out = '';
  const code = await observe(parseObserveArgs(['--server', `127.0.0.1:${port}`]), io);
  assert.equal(code, 1);
  assert.equal(out, '');
  assert.match(err, /^weft observe: cannot reach the Observer API at 127\.0\.0\.1:\d+ .*: /);
});
