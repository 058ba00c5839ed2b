// node echo-server.mjs PORT NAME
// Listens on 0.0.0.0:PORT. On each connection it first writes one line
//   hello <NAME> local=<localAddress>:<localPort> peer=<remoteAddress>:<remotePort>
// then echoes every byte back; when the peer ends its side, it ends its own (half-close preserved).
import net from 'node:net';

const port = Number(process.argv[2] ?? 8080);
const name = process.argv[3] ?? process.env.POD_NAME ?? 'echo';
if (!Number.isInteger(port) || port < 1 || port > 65535) {
  process.stderr.write(`usage: node echo-server.mjs PORT NAME\n`);
  process.exit(2);
}

const server = net.createServer({ allowHalfOpen: true }, (socket) => {
  const peer = `${socket.remoteAddress}:${socket.remotePort}`;
  socket.write(`hello ${name} local=${socket.localAddress}:${socket.localPort} peer=${peer}\n`);
  process.stdout.write(`${new Date().toISOString()} ${name} connection from ${peer}\n`);
  socket.on('data', (chunk) => socket.write(chunk));
  socket.on('end', () => socket.end());
  socket.on('error', (err) => process.stdout.write(`${new Date().toISOString()} ${name} ${peer} error ${err.message}\n`));
});
server.on('error', (err) => {
  process.stderr.write(`${name}: ${err.message}\n`);
  process.exit(1);
});
server.listen(port, '0.0.0.0', () => process.stdout.write(`${name} listening on 0.0.0.0:${port}\n`));
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => server.close(() => process.exit(0)));
