#!/usr/bin/env node
// The bench's server, run in a lab pod: `node server.mjs [--sink PORT] [--echo PORT]` (0.0.0.0).
//   sink: reads and discards everything; when the client half-closes, answers one line `<bytes>\n`
//         (so the client times delivered bytes, not bytes left in socket buffers) and ends.
//   echo: writes back every byte it reads; ends when the client ends.
import net from 'node:net';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { sink: { type: 'string', default: '5001' }, echo: { type: 'string', default: '5002' } } });

function listen(port, onConnection) {
  const server = net.createServer({ allowHalfOpen: true, noDelay: true }, onConnection);
  server.on('error', (err) => {
    process.stderr.write(`port ${port}: ${err.message}\n`);
    process.exit(1);
  });
  server.listen({ port, host: '0.0.0.0', backlog: 4096 }, () => process.stdout.write(`listening on ${port}\n`));
  return server;
}

const servers = [
  listen(Number(values.sink), (sock) => {
    let bytes = 0;
    sock.on('data', (chunk) => (bytes += chunk.length));
    sock.on('end', () => sock.end(`${bytes}\n`));
    sock.on('error', () => sock.destroy());
  }),
  listen(Number(values.echo), (sock) => {
    sock.on('data', (chunk) => sock.write(chunk));
    sock.on('end', () => sock.end());
    sock.on('error', () => sock.destroy());
  }),
];
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => Promise.all(servers.map((s) => new Promise((r) => s.close(r)))).then(() => process.exit(0)));
