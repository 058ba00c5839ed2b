// The agent's loopback admin API refuses what a web page on the node could send it: a POST without
// the x-weft-admin header (a cross-site form needs none), any request with an Origin header, and a
// Host that is not loopback (DNS rebinding); tools (agentAdminGet/Post's way) get through.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { ADMIN_HEADER, ADMIN_HEADER_VALUE, AdminServer } from '../agent/metrics/admin-server.js';
import { agentAdminGet, agentAdminPost } from '../agent/node/admin-client.js';

let server: AdminServer;
let trims = 0;

before(async () => {
  server = new AdminServer({ '/config_dump': () => ({ pods: ['shop/a'] }) }, { '/memory/trim': () => ({ trimmed: ++trims }) });
  await server.listen(0);
});

after(() => server.close());

function request(method: string, path: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: server.port, method, path, headers }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

test('POST without the admin header is 403 and does nothing; with it, 200', async () => {
  const refused = await request('POST', '/memory/trim');
  assert.equal(refused.status, 403);
  assert.match(refused.body, /x-weft-admin/);
  // A form post from a page: a content type a browser sends without a preflight, still no header.
  assert.equal((await request('POST', '/memory/trim', { 'content-type': 'application/x-www-form-urlencoded' })).status, 403);
  assert.equal((await request('POST', '/memory/trim', { [ADMIN_HEADER]: '0' })).status, 403);
  assert.equal(trims, 0);
  const ok = await request('POST', '/memory/trim', { [ADMIN_HEADER]: ADMIN_HEADER_VALUE });
  assert.equal(ok.status, 200);
  assert.deepEqual(JSON.parse(ok.body), { trimmed: 1 });
});

test('a request with an Origin header is 403, GET or POST, header or not', async () => {
  assert.equal((await request('GET', '/config_dump', { origin: 'http://evil.example' })).status, 403);
  assert.equal((await request('GET', '/config_dump', { origin: 'null' })).status, 403);
  assert.equal((await request('POST', '/memory/trim', { origin: 'http://evil.example', [ADMIN_HEADER]: ADMIN_HEADER_VALUE })).status, 403);
  // A CORS preflight never succeeds, so a page cannot go on to add the header.
  assert.equal((await request('OPTIONS', '/memory/trim', { origin: 'http://evil.example', 'access-control-request-headers': ADMIN_HEADER })).status, 403);
  assert.equal(trims, 1);
});

test('a Host that is not loopback is 403 (DNS rebinding); loopback names pass', async () => {
  assert.equal((await request('GET', '/config_dump', { host: 'evil.example:15000' })).status, 403);
  assert.equal((await request('GET', '/config_dump', { host: '10.0.0.2:15000' })).status, 403);
  assert.equal((await request('GET', '/config_dump', { host: '127.0.0.1.evil.example' })).status, 403);
  for (const host of [`127.0.0.1:${server.port}`, 'localhost', '[::1]:15000']) {
    const r = await request('GET', '/config_dump', { host });
    assert.equal(r.status, 200, host);
    assert.deepEqual(JSON.parse(r.body), { pods: ['shop/a'] });
  }
});

test('GET needs no header; unknown paths and methods keep their answers', async () => {
  assert.equal((await request('GET', '/config_dump')).status, 200);
  assert.equal((await request('GET', '/nope')).status, 404);
  assert.equal((await request('PUT', '/config_dump', { [ADMIN_HEADER]: ADMIN_HEADER_VALUE })).status, 405);
});

test('the admin client (as weft status, the bench and the lab tests use it) is let through, POST included', async (t) => {
  if (process.getuid?.() !== 0) return t.skip('entering a network namespace needs root');
  // This process's own network namespace stands in for a node's.
  const before = trims;
  assert.deepEqual(await agentAdminPost('/proc/self/ns/net', '/memory/trim', server.port), { trimmed: before + 1 });
  assert.deepEqual(await agentAdminGet('/proc/self/ns/net', '/config_dump', server.port), { pods: ['shop/a'] });
});
