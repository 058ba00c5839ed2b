// node echo-client.mjs HOST PORT [MESSAGE]
// Connects, sends MESSAGE (default "ping"), half-closes, prints everything the server sent, exits 0
// when the server ended its side (exit 1 on error or after 5 s).
import net from 'node:net';

const [host = '127.0.0.1', portText = '80', message = 'ping'] = process.argv.slice(2);
const socket = net.connect({ host, port: Number(portText), allowHalfOpen: true });
const timer = setTimeout(() => {
  process.stderr.write(`timeout talking to ${host}:${portText}\n`);
  process.exit(1);
}, Number(process.env.ECHO_TIMEOUT_MS ?? 5000));
socket.on('connect', () => socket.end(`${message}\n`));
socket.on('data', (d) => process.stdout.write(d));
socket.on('end', () => {
  clearTimeout(timer);
  process.exit(0);
});
socket.on('error', (err) => {
  process.stderr.write(`${host}:${portText}: ${err.message}\n`);
  process.exit(1);
});
