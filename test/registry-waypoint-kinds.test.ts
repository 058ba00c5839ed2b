// The waypoint's kinds in the registry: RequestAuthentication, Gateway, HTTPRoute, DestinationRule and
// VirtualService. Documents in the shape of Istio's and Gateway API's documented examples parse to the
// expected structure (with Gateway API's defaults filled in); each class of invalid field is refused
// with a problem naming the file, the line and the field; mutated and hostile documents never throw,
// never hang, and leave Object.prototype alone.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import YAML from 'yaml';
import type { ConfigProblem } from '../agent/errors.js';
import { parseDocuments, stripSource } from '../agent/registry/parse.js';
import type { Resource } from '../agent/registry/types.js';
import { regexProblem } from '../agent/registry/waypoint-kinds.js';
import { PROTO_KEYS, assertProblemShape, assertPrototypeUntouched, bounded, garbage, lineCount, snapshotObjectPrototype, withOwnKey } from './helpers/hostile.js';

const FILE = '/cfg/waypoint.yaml';
const RUNS = Math.min(Number(process.env.WEFT_PROPERTY_RUNS ?? 150), 300);
const PROTO_BEFORE = snapshotObjectPrototype();

function parse(text: string): ReturnType<typeof parseDocuments> {
  const r = bounded(2000, 'parseDocuments', () => parseDocuments(text, FILE));
  const lines = lineCount(text);
  for (const p of r.problems) assertProblemShape(p, FILE, lines);
  return r;
}

/** The one resource of `text` (as a record: the tests compare whole structures). */
function parseOne(text: string): { kind: string; spec: unknown } & Record<string, unknown> {
  const r = parse(text);
  assert.deepEqual(r.problems, []);
  assert.equal(r.resources.length, 1);
  return stripSource<Resource>(r.resources[0]!) as unknown as { kind: string; spec: unknown } & Record<string, unknown>;
}

/** The one problem of `text`, which must name `field` at `line` with a reason matching `reason`. */
function refused(text: string, field: string, line: number, reason: RegExp): ConfigProblem {
  const r = parse(text);
  assert.equal(r.resources.length, 0, `refused: ${field}`);
  const p = r.problems.find((x) => x.field === field);
  assert.ok(p, `a problem at ${field}; got ${JSON.stringify(r.problems)}`);
  assert.equal(p.line, line, `line of ${field}: ${JSON.stringify(r.problems)}`);
  assert.match(p.reason, reason);
  return p;
}

// ---- valid documents ---------------------------------------------------------------------------

const REQUEST_AUTHN = `apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: httpbin
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  jwtRules:
  - issuer: "issuer-foo"
    jwksUri: https://example.com/.well-known/jwks.json
    audiences: [bookstore_android.apps.example.com, bookstore_web.apps.example.com]
    fromHeaders:
    - name: x-jwt-assertion
      prefix: "Bearer "
    fromParams: [my_token]
    fromCookies: [session]
    outputPayloadToHeader: x-jwt-payload
    outputClaimToHeaders:
    - header: x-jwt-claim-foo
      claim: foo
    forwardOriginalToken: true
    timeout: 5s
`;

const JWKS = JSON.stringify({ keys: [{ kty: 'RSA', e: 'AQAB', n: 'xAE7eB6qugXyCAG3yhh7pkDkT65pHymX', kid: 'k1', alg: 'RS256' }] });
const REQUEST_AUTHN_TARGET = `apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: jwt-on-waypoint
  namespace: default
spec:
  targetRefs:
  - kind: Gateway
    group: gateway.networking.k8s.io
    name: waypoint
  jwtRules:
  - issuer: testing@secure.istio.io
    jwks: '${JWKS}'
`;

const GATEWAY = `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  labels:
    istio.io/waypoint-for: service
  name: waypoint
  namespace: default
spec:
  gatewayClassName: istio-waypoint
  listeners:
  - name: mesh
    port: 15008
    protocol: HBONE
`;

const HTTPROUTE = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: reviews
  namespace: default
spec:
  parentRefs:
  - group: ""
    kind: Service
    name: reviews
    port: 9080
  hostnames: [reviews.default.svc.cluster.local]
  rules:
  - matches:
    - path:
        type: Exact
        value: /reviews/1
      headers:
      - name: end-user
        value: jason
      - type: RegularExpression
        name: x-build
        value: "^v[0-9]+$"
      queryParams:
      - name: debug
        value: "1"
      method: GET
    - path:
        type: RegularExpression
        value: "^/api/v[12]/.*$"
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: x-canary, value: "yes"}]
        add: [{name: x-via, value: waypoint}]
        remove: [x-internal]
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        remove: [server]
    - type: RequestMirror
      requestMirror:
        backendRef: {name: reviews-shadow, port: 9080}
        percent: 10
    - type: CORS
      cors:
        allowOrigins: ["https://app.example.com"]
        allowMethods: [GET, POST]
        allowCredentials: true
        maxAge: 600
    backendRefs:
    - name: reviews-v2
      port: 9080
    timeouts:
      request: 10s
      backendRequest: 2s
    retry:
      attempts: 3
      codes: [503, 504]
      backoff: 100ms
  - matches:
    - path:
        value: /legacy
    filters:
    - type: URLRewrite
      urlRewrite:
        path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}
    backendRefs:
    - name: reviews-v1
      port: 9080
      weight: 90
    - name: reviews-v2
      port: 9080
      weight: 10
  - matches:
    - path: {type: PathPrefix, value: /old}
    filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https, statusCode: 301, path: {type: ReplaceFullPath, replaceFullPath: /new}}
  - backendRefs:
    - name: reviews-v1
      port: 9080
`;

const DESTINATION_RULE = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews-cb-policy
  namespace: default
spec:
  host: reviews.prod.svc.cluster.local
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 100
        connectTimeout: 30ms
      http:
        http1MaxPendingRequests: 1
        http2MaxRequests: 1000
        maxRequestsPerConnection: 10
        maxRetries: 3
    outlierDetection:
      consecutive5xxErrors: 7
      consecutiveGatewayErrors: 5
      interval: 5m
      baseEjectionTime: 15m
      maxEjectionPercent: 100
    loadBalancer:
      simple: LEAST_REQUEST
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      loadBalancer: {simple: ROUND_ROBIN}
`;

const VIRTUAL_SERVICE = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: ratings-route
  namespace: default
spec:
  hosts:
  - ratings.prod.svc.cluster.local
  http:
  - name: faulty
    fault:
      delay:
        percentage:
          value: 0.1
        fixedDelay: 5s
      abort:
        percentage:
          value: 10
        httpStatus: 400
    route:
    - destination:
        host: ratings.prod.svc.cluster.local
        subset: v1
        port: {number: 9080}
      weight: 100
    timeout: 10s
`;

test('valid documents of each kind parse to the structure written, with Gateway API defaults', () => {
  assert.deepEqual(parseOne(REQUEST_AUTHN), {
    apiVersion: 'security.istio.io/v1',
    kind: 'RequestAuthentication',
    metadata: { name: 'httpbin', namespace: 'foo' },
    spec: {
      selector: { matchLabels: { app: 'httpbin' } },
      jwtRules: [
        {
          issuer: 'issuer-foo',
          jwksUri: 'https://example.com/.well-known/jwks.json',
          audiences: ['bookstore_android.apps.example.com', 'bookstore_web.apps.example.com'],
          fromHeaders: [{ name: 'x-jwt-assertion', prefix: 'Bearer ' }],
          fromParams: ['my_token'],
          fromCookies: ['session'],
          outputPayloadToHeader: 'x-jwt-payload',
          outputClaimToHeaders: [{ header: 'x-jwt-claim-foo', claim: 'foo' }],
          forwardOriginalToken: true,
          timeout: '5s',
        },
      ],
    },
  });
  assert.deepEqual(parseOne(REQUEST_AUTHN_TARGET).spec, {
    targetRefs: [{ kind: 'Gateway', group: 'gateway.networking.k8s.io', name: 'waypoint' }],
    jwtRules: [{ issuer: 'testing@secure.istio.io', jwks: JWKS }],
  });
  assert.deepEqual(parseOne(GATEWAY), {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'Gateway',
    metadata: { name: 'waypoint', namespace: 'default', labels: { 'istio.io/waypoint-for': 'service' } },
    spec: { gatewayClassName: 'istio-waypoint', listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }] },
  });
  const route = parseOne(HTTPROUTE);
  assert.equal(route.kind, 'HTTPRoute');
  assert.deepEqual(route.spec, {
    parentRefs: [{ group: '', kind: 'Service', name: 'reviews', port: 9080 }],
    hostnames: ['reviews.default.svc.cluster.local'],
    rules: [
      {
        matches: [
          {
            path: { type: 'Exact', value: '/reviews/1' },
            headers: [
              { type: 'Exact', name: 'end-user', value: 'jason' },
              { type: 'RegularExpression', name: 'x-build', value: '^v[0-9]+$' },
            ],
            queryParams: [{ type: 'Exact', name: 'debug', value: '1' }],
            method: 'GET',
          },
          { path: { type: 'RegularExpression', value: '^/api/v[12]/.*$' } },
        ],
        filters: [
          { type: 'RequestHeaderModifier', requestHeaderModifier: { set: [{ name: 'x-canary', value: 'yes' }], add: [{ name: 'x-via', value: 'waypoint' }], remove: ['x-internal'] } },
          { type: 'ResponseHeaderModifier', responseHeaderModifier: { remove: ['server'] } },
          { type: 'RequestMirror', requestMirror: { backendRef: { name: 'reviews-shadow', port: 9080 }, percent: 10 } },
          { type: 'CORS', cors: { allowOrigins: ['https://app.example.com'], allowMethods: ['GET', 'POST'], allowCredentials: true, maxAge: 600 } },
        ],
        backendRefs: [{ name: 'reviews-v2', port: 9080 }],
        timeouts: { request: '10s', backendRequest: '2s' },
        retry: { attempts: 3, codes: [503, 504], backoff: '100ms' },
      },
      {
        // PathPrefix is the default type of a path match.
        matches: [{ path: { type: 'PathPrefix', value: '/legacy' } }],
        filters: [{ type: 'URLRewrite', urlRewrite: { path: { type: 'ReplacePrefixMatch', replacePrefixMatch: '/v2' } } }],
        backendRefs: [
          { name: 'reviews-v1', port: 9080, weight: 90 },
          { name: 'reviews-v2', port: 9080, weight: 10 },
        ],
      },
      {
        matches: [{ path: { type: 'PathPrefix', value: '/old' } }],
        filters: [{ type: 'RequestRedirect', requestRedirect: { scheme: 'https', statusCode: 301, path: { type: 'ReplaceFullPath', replaceFullPath: '/new' } } }],
      },
      // No matches: Gateway API's default, every path.
      { matches: [{ path: { type: 'PathPrefix', value: '/' } }], backendRefs: [{ name: 'reviews-v1', port: 9080 }] },
    ],
  });
  assert.deepEqual(parseOne(DESTINATION_RULE).spec, {
    host: 'reviews.prod.svc.cluster.local',
    trafficPolicy: {
      connectionPool: {
        tcp: { maxConnections: 100, connectTimeout: '30ms' },
        http: { http1MaxPendingRequests: 1, http2MaxRequests: 1000, maxRequestsPerConnection: 10, maxRetries: 3 },
      },
      outlierDetection: { consecutive5xxErrors: 7, consecutiveGatewayErrors: 5, interval: '5m', baseEjectionTime: '15m', maxEjectionPercent: 100 },
      loadBalancer: { simple: 'LEAST_REQUEST' },
    },
    subsets: [{ name: 'v1', labels: { version: 'v1' }, trafficPolicy: { loadBalancer: { simple: 'ROUND_ROBIN' } } }],
  });
  assert.deepEqual(parseOne(VIRTUAL_SERVICE).spec, {
    hosts: ['ratings.prod.svc.cluster.local'],
    http: [
      {
        name: 'faulty',
        fault: { delay: { percentage: { value: 0.1 }, fixedDelay: '5s' }, abort: { percentage: { value: 10 }, httpStatus: 400 } },
        route: [{ destination: { host: 'ratings.prod.svc.cluster.local', subset: 'v1', port: { number: 9080 } }, weight: 100 }],
        timeout: '10s',
      },
    ],
  });
  // All five in one multi-document file, as users keep them.
  const all = parse([REQUEST_AUTHN, GATEWAY, HTTPROUTE, DESTINATION_RULE, VIRTUAL_SERVICE].join('---\n'));
  assert.deepEqual(all.problems, []);
  assert.deepEqual(
    all.resources.map((r) => r.kind),
    ['RequestAuthentication', 'Gateway', 'HTTPRoute', 'DestinationRule', 'VirtualService'],
  );
});

/** `doc` with the line containing `from` replaced by `to` (keeps every other line where it was). */
function edit(doc: string, from: string, to: string): string {
  assert.ok(doc.includes(from), `fixture contains ${from}`);
  return doc.replace(from, to);
}

test('RequestAuthentication: each invalid field is named with its line', () => {
  refused(edit(REQUEST_AUTHN, 'jwksUri: https://example.com', 'jwksUri: http://example.com'), 'spec.jwtRules[0].jwksUri', 12, /https URL/);
  refused(edit(REQUEST_AUTHN, 'jwksUri: https://example.com/.well-known/jwks.json', 'jwksUri: "not a url"'), 'spec.jwtRules[0].jwksUri', 12, /not a URL/);
  refused(edit(REQUEST_AUTHN, '  - issuer: "issuer-foo"\n    jwksUri:', '  - jwksUri:'), 'spec.jwtRules[0].issuer', 11, /required/);
  refused(edit(REQUEST_AUTHN_TARGET, `jwks: '${JWKS}'`, "jwks: '{\"keys\": ['"), 'spec.jwtRules[0].jwks', 13, /not JSON/);
  refused(edit(REQUEST_AUTHN_TARGET, `jwks: '${JWKS}'`, 'jwks: \'{"keys": [{"e": "AQAB"}]}\''), 'spec.jwtRules[0].jwks', 13, /no "kty"/);
  refused(edit(REQUEST_AUTHN_TARGET, `    jwks: '${JWKS}'`, `    jwksUri: https://example.com/jwks\n    jwks: '${JWKS}'`), 'spec.jwtRules[0].jwks', 14, /only one of jwks or jwksUri/);
  refused(edit(REQUEST_AUTHN, 'timeout: 5s', 'timeout: soon'), 'spec.jwtRules[0].timeout', 24, /not a duration/);
  refused(edit(REQUEST_AUTHN, '    - name: x-jwt-assertion', '    - name: "bad header"'), 'spec.jwtRules[0].fromHeaders[0].name', 15, /header name/);
  refused(edit(REQUEST_AUTHN, '      claim: foo', '      claim: ""'), 'spec.jwtRules[0].outputClaimToHeaders[0].claim', 22, /empty/);
  refused(edit(REQUEST_AUTHN, 'forwardOriginalToken: true', 'forwardOriginalToken: "yes"'), 'spec.jwtRules[0].forwardOriginalToken', 23, /true or false/);
  refused(edit(REQUEST_AUTHN_TARGET, 'spec:\n', 'spec:\n  selector: {matchLabels: {app: a}}\n'), 'spec.targetRefs', 8, /only one of selector or targetRefs/);
  refused(edit(REQUEST_AUTHN, '    timeout: 5s', '    timeout: 5s\n    jwksUrl: x'), 'spec.jwtRules[0].jwksUrl', 25, /unknown field "jwksUrl"/);
});

test('Gateway: waypoint-for values, listeners and class are checked', () => {
  refused(edit(GATEWAY, 'waypoint-for: service', 'waypoint-for: everything'), 'metadata.labels.istio.io/waypoint-for', 5, /not one of service, workload, all, none/);
  refused(edit(GATEWAY, 'port: 15008', 'port: 150080'), 'spec.listeners[0].port', 12, /outside 1-65535/);
  refused(edit(GATEWAY, 'protocol: HBONE', 'protocol: "HB ONE"'), 'spec.listeners[0].protocol', 13, /not a protocol/);
  refused(edit(GATEWAY, '  gatewayClassName: istio-waypoint\n', ''), 'spec.gatewayClassName', 9, /required/);
  refused(edit(GATEWAY, '    protocol: HBONE\n', '    protocol: HBONE\n  - name: mesh\n    port: 15009\n    protocol: HBONE\n'), 'spec.listeners[1].name', 14, /more than once/);
  refused(edit(GATEWAY, '  listeners:\n  - name: mesh\n    port: 15008\n    protocol: HBONE\n', '  listeners: []\n'), 'spec.listeners', 10, /at least one listener/);
  for (const v of ['service', 'workload', 'all', 'none']) assert.equal(parseOne(edit(GATEWAY, 'waypoint-for: service', `waypoint-for: ${v}`)).kind, 'Gateway');
});

test('HTTPRoute: matches, regular expressions, filters, weights, timeouts and retries are checked', () => {
  // Line numbers of the fixture (HTTPROUTE).
  refused(edit(HTTPROUTE, 'value: "^/api/v[12]/.*$"', 'value: "^/api/(v[12]"'), 'spec.rules[0].matches[1].path.value', 30, /not a valid regular expression/);
  refused(edit(HTTPROUTE, 'value: "^/api/v[12]/.*$"', 'value: "^(a+)+$"'), 'spec.rules[0].matches[1].path.value', 30, /repeats a group/);
  refused(edit(HTTPROUTE, 'value: "^v[0-9]+$"', 'value: "^(v)\\\\1$"'), 'spec.rules[0].matches[0].headers[1].value', 23, /backreferences/);
  refused(edit(HTTPROUTE, 'value: "^v[0-9]+$"', `value: "${'a'.repeat(1100)}"`), 'spec.rules[0].matches[0].headers[1].value', 23, /longer than/);
  refused(edit(HTTPROUTE, 'value: /reviews/1', 'value: reviews/1'), 'spec.rules[0].matches[0].path.value', 17, /absolute path/);
  refused(edit(HTTPROUTE, 'value: /reviews/1', 'value: /reviews/1?x=1'), 'spec.rules[0].matches[0].path.value', 17, /no "\?" or "#"/);
  refused(edit(HTTPROUTE, 'value: /reviews/1', 'value: /reviews/../admin'), 'spec.rules[0].matches[0].path.value', 17, /dot segments|"\/\.\.\/"/);
  refused(edit(HTTPROUTE, '      - type: RegularExpression\n        name: x-build', '      - type: RegularExpression\n        name: end-user'), 'spec.rules[0].matches[0].headers[1].name', 22, /matched more than once/);
  refused(edit(HTTPROUTE, 'type: Exact', 'type: Prefix'), 'spec.rules[0].matches[0].path.type', 16, /not one of Exact, PathPrefix, RegularExpression/);
  refused(edit(HTTPROUTE, 'method: GET', 'method: get'), 'spec.rules[0].matches[0].method', 27, /not one of GET/);
  refused(edit(HTTPROUTE, '    - type: ResponseHeaderModifier\n      responseHeaderModifier:\n        remove: [server]\n', '    - type: ExtensionRef\n      extensionRef: {group: x.io, kind: F, name: f}\n'), 'spec.rules[0].filters[1].type', 37, /filter type "ExtensionRef" is not supported/);
  refused(edit(HTTPROUTE, '      weight: 90', '      weight: 1000001'), 'spec.rules[1].backendRefs[0].weight', 70, /outside 0-1000000/);
  refused(edit(HTTPROUTE, '      request: 10s', '      request: 10sec'), 'spec.rules[0].timeouts.request', 54, /Gateway API duration/);
  refused(edit(HTTPROUTE, '      backendRequest: 2s', '      backendRequest: 20s'), 'spec.rules[0].timeouts.backendRequest', 55, /must not be longer than request/);
  refused(edit(HTTPROUTE, 'codes: [503, 504]', 'codes: [503, 200]'), 'spec.rules[0].retry.codes[1]', 58, /outside 400-599/);
  refused(edit(HTTPROUTE, '    - name: reviews-v2\n      port: 9080\n    timeouts', '    - name: reviews-v2\n    timeouts'), 'spec.rules[0].backendRefs[0].port', 51, /must set port/);
  refused(edit(HTTPROUTE, '  - group: ""\n    kind: Service', '  - group: apps\n    kind: Deployment'), 'spec.parentRefs[0]', 8, /Gateway .* or a Service/);
  refused(edit(HTTPROUTE, 'requestRedirect: {scheme: https, statusCode: 301', 'requestRedirect: {scheme: https, statusCode: 404'), 'spec.rules[2].filters[0].requestRedirect.statusCode', 78, /301, 302/);
  refused(edit(HTTPROUTE, '    - path: {type: PathPrefix, value: /old}', '    - path: {type: Exact, value: /old}\n    backendRefs: [{name: x, port: 1}]'), 'spec.rules[2].backendRefs', 76, /RequestRedirect filter must not have backendRefs/);
  refused(edit(HTTPROUTE, '    - path:\n        value: /legacy', '    - path:\n        type: Exact\n        value: /legacy'), 'spec.rules[1].filters', 64, /ReplacePrefixMatch needs exactly one match/);
  refused(edit(HTTPROUTE, '    - path:\n        value: /legacy', '    - path:\n        value: /legacy\n    - method: GET'), 'spec.rules[1].filters', 64, /ReplacePrefixMatch needs exactly one match/);
  refused(edit(HTTPROUTE, '  - backendRefs:\n    - name: reviews-v1', '  - name: tail\n    backendRefs:\n    - name: reviews-v1').replace('  - matches:\n    - path: {type: PathPrefix', '  - name: tail\n    matches:\n    - path: {type: PathPrefix'), 'spec.rules[3].name', 80, /used more than once/);
  const many = Array.from({ length: 9 }, (_, i) => `  - matches: [${Array.from({ length: 15 }, (_, j) => `{path: {value: /r${i}m${j}}}`).join(', ')}]\n    backendRefs: [{name: b, port: 80}]\n`).join('');
  refused(edit(HTTPROUTE, '  - backendRefs:\n    - name: reviews-v1', `${many}  - backendRefs:\n    - name: reviews-v1`), 'spec.rules', 13, /140 matches in all/);
  refused(edit(HTTPROUTE, '      requestHeaderModifier:', '      responseHeaderModifier: {remove: [a]}\n      requestHeaderModifier:'), 'spec.rules[0].filters[0].responseHeaderModifier', 33, /must not be set for a RequestHeaderModifier filter/);
  refused(edit(HTTPROUTE, '      - name: end-user', '      - name: "end user"'), 'spec.rules[0].matches[0].headers[0].name', 19, /header name/);
});

test('DestinationRule and VirtualService: limits, load balancers, durations and faults are checked', () => {
  refused(edit(DESTINATION_RULE, 'maxConnections: 100', 'maxConnections: -1'), 'spec.trafficPolicy.connectionPool.tcp.maxConnections', 11, /outside 0-/);
  refused(edit(DESTINATION_RULE, 'connectTimeout: 30ms', 'connectTimeout: 30'), 'spec.trafficPolicy.connectionPool.tcp.connectTimeout', 12, /string/);
  refused(edit(DESTINATION_RULE, 'http1MaxPendingRequests: 1', 'http1MaxPendingRequests: "1"'), 'spec.trafficPolicy.connectionPool.http.http1MaxPendingRequests', 14, /integer/);
  refused(edit(DESTINATION_RULE, 'maxEjectionPercent: 100', 'maxEjectionPercent: 150'), 'spec.trafficPolicy.outlierDetection.maxEjectionPercent', 23, /outside 0-100/);
  refused(edit(DESTINATION_RULE, 'baseEjectionTime: 15m', 'baseEjectionTime: 15 minutes'), 'spec.trafficPolicy.outlierDetection.baseEjectionTime', 22, /not a duration/);
  refused(edit(DESTINATION_RULE, 'simple: LEAST_REQUEST', 'simple: FASTEST'), 'spec.trafficPolicy.loadBalancer.simple', 25, /not one of UNSPECIFIED/);
  refused(edit(DESTINATION_RULE, '  host: reviews.prod.svc.cluster.local\n', ''), 'spec.host', 7, /required/);
  refused(edit(DESTINATION_RULE, 'consecutive5xxErrors: 7', 'consecutiveErrors: 7'), 'spec.trafficPolicy.outlierDetection.consecutiveErrors', 19, /unknown field/);
  refused(edit(VIRTUAL_SERVICE, 'httpStatus: 400', 'httpStatus: 700'), 'spec.http[0].fault.abort.httpStatus', 19, /outside 200-599/);
  refused(edit(VIRTUAL_SERVICE, '          value: 0.1', '          value: 150'), 'spec.http[0].fault.delay.percentage.value', 14, /outside 0-100/);
  refused(edit(VIRTUAL_SERVICE, '        fixedDelay: 5s\n', ''), 'spec.http[0].fault.delay.fixedDelay', 13, /required/);
  refused(edit(VIRTUAL_SERVICE, '    fault:\n', '    fault: {}\n    faults:\n'), 'spec.http[0].faults', 12, /unknown field/);
  refused(edit(VIRTUAL_SERVICE, '  hosts:\n  - ratings.prod.svc.cluster.local\n', '  hosts: []\n'), 'spec.hosts', 7, /at least one host/);
});

test('prototype keys in any mapping are plain data or refused; nothing reaches Object.prototype', () => {
  const docs = [REQUEST_AUTHN, GATEWAY, HTTPROUTE, DESTINATION_RULE, VIRTUAL_SERVICE].map((d) => YAML.parse(d) as Record<string, unknown>);
  for (const doc of docs) {
    for (const key of PROTO_KEYS) {
      const spec = withOwnKey(doc.spec as Record<string, unknown>, key, { polluted: true });
      const r = parse(YAML.stringify({ ...doc, spec }));
      assert.equal(r.resources.length, 0, `${String(doc.kind)} with spec.${key}`);
      assert.ok(r.problems.some((p) => p.reason.includes('unknown field')));
    }
  }
  // As a label key of a waypoint Gateway, a prototype name is an ordinary label.
  const r = parse(edit(GATEWAY, '    istio.io/waypoint-for: service', '    istio.io/waypoint-for: service\n    constructor: x'));
  assert.deepEqual(r.problems, []);
  assertPrototypeUntouched(PROTO_BEFORE);
});

test('regular expressions: the bound holds on hostile patterns', () => {
  for (const bad of ['(a+)+$', '(a*)*b', '((ab)+c)+', '(x+x+)+y', '(?=a)a', '(?<!a)b', '\\k<n>(?<n>a)', '(a|aa){2,}+', '(a|aa)+$', '(?:x|y*)*z']) {
    assert.ok(regexProblem(bad), `refused: ${bad}`);
  }
  for (const good of ['^/api/v[12]/.*$', '^v[0-9]+$', '^/(foo|bar)/[0-9]+$', '(ab)+', '[(+*]+', '\\(a+\\)+', '^/users/[0-9]{1,6}/?$']) {
    assert.equal(regexProblem(good), undefined, `accepted: ${good}`);
  }
});

// ---- property: mutated documents never throw, hang or pollute -----------------------------------

/** Every path to a value inside `v` (keys and indexes), the root excluded. */
function paths(v: unknown, prefix: Array<string | number> = []): Array<Array<string | number>> {
  if (Array.isArray(v)) return v.flatMap((x, i) => [[...prefix, i], ...paths(x, [...prefix, i])]);
  if (v && typeof v === 'object') return Object.entries(v).flatMap(([k, x]) => [[...prefix, k], ...paths(x, [...prefix, k])]);
  return [];
}

function setAt(root: unknown, path: ReadonlyArray<string | number>, value: unknown): unknown {
  const copy = structuredClone(root) as Record<string | number, unknown>;
  let node = copy as Record<string | number, unknown>;
  for (const seg of path.slice(0, -1)) node = node[seg] as Record<string | number, unknown>;
  const last = path[path.length - 1]!;
  Object.defineProperty(node, last, { value, enumerable: true, writable: true, configurable: true });
  return copy;
}

test('property: any field of a valid document replaced by garbage is refused with located problems or parses; never throws or hangs', () => {
  const docs = [REQUEST_AUTHN, REQUEST_AUTHN_TARGET, GATEWAY, HTTPROUTE, DESTINATION_RULE, VIRTUAL_SERVICE].map((d) => YAML.parse(d) as unknown);
  const targets = docs.flatMap((d) => paths(d).map((p) => ({ d, p })));
  fc.assert(
    fc.property(fc.constantFrom(...targets), garbage(), fc.oneof(fc.string({ maxLength: 40 }), fc.constantFrom('(a+)+', '(((((', '\\', '[', '^(.*)*$', '(?<n>a)\\k<n>')), ({ d, p }, junk, rx) => {
      const mutated = setAt(d, p, p[p.length - 1] === 'value' && typeof junk !== 'string' ? rx : junk);
      const text = YAML.stringify(mutated);
      const r = parse(text);
      assert.ok(r.resources.length + r.problems.length >= 1);
      if (r.problems.length) assert.equal(r.resources.length, 0);
    }),
    { numRuns: RUNS },
  );
  assertPrototypeUntouched(PROTO_BEFORE);
});
