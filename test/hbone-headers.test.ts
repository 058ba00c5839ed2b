// The HBONE CONNECT headers as ztunnel sends them, and reading them back at the destination.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connectHeaders, forwardedFor, parseAuthority } from '../agent/ztunnel/hbone.js';

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
