// The agent binds the Observer API while an agent handing over to it may still hold the port
// (`whenPortFree` retries the whole `serve`): a retry after the TLS bind failed must not fail on the
// loopback listener the first attempt already bound.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CertificateAuthority } from '../agent/controller/ca.js';
import { ObserverServer } from '../agent/flows/observer-server.js';
import { relaySpiffeUri } from '../agent/flows/observer-tls.js';
import { FlowStore } from '../agent/flows/store.js';
import { createLogger } from '../agent/log.js';
import { ObserverClient } from '../agent/relay/client.js';

test('serve again after the TLS port was taken: the second attempt serves both listeners', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-observer-retry-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const ca = await CertificateAuthority.loadOrCreate({ dir, trustDomain: 'mesh.test' });
  const serving = await ca.issueObserverServingCredential('node-a', 3600);
  // A port free on both addresses, then held on the TLS address (the old agent).
  const probe = net.createServer().listen(0, '127.0.0.1');
  await once(probe, 'listening');
  const port = (probe.address() as net.AddressInfo).port;
  probe.close();
  const holder = net.createServer().listen(port, '127.0.0.2');
  await once(holder, 'listening');
  const server = new ObserverServer({ store: new FlowStore(10, 'node-a'), nodeName: 'node-a', version: 't', log: createLogger('test', { level: 'silent' }) });
  t.after(() => server.close());
  const tls = { host: '127.0.0.2', rootCertPem: ca.rootCertPem, ...serving, allowedIdentities: [relaySpiffeUri('mesh.test')] };
  await assert.rejects(server.serve(port, { tls }), 'the TLS address is held');
  holder.close();
  await once(holder, 'close');
  await server.serve(port, { tls });
  const nodes = await new ObserverClient(`127.0.0.1:${port}`).getNodes(3000);
  assert.equal(nodes.nodes?.length, 1, 'the loopback listener serves');
});
