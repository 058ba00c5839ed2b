#!/usr/bin/env node
// The bench's load generator, run inside a lab pod (`lab.exec`). Prints one JSON line of results.
//   bulk    --target H:P --streams N --seconds S     N streams to a sink for S seconds; bytes the sink
//                                                    acknowledged / time until its last answer
//   rr      --target H:P --rate R --conns K --seconds S [--size 1024]
//           open loop: request i is due at start + i/R on connection i mod K and is sent then whether or
//           not earlier answers came back; latency = answer complete − *scheduled* time (no coordinated
//           omission). The echo answer is the request's own bytes.
//   conns   --target H:P --concurrency C --seconds S  connect, 1 byte each way, close; C at a time
//   connect --target H:P --count N [--listen P]     connect() latency alone, one at a time (with
//                                                    --listen: a listener process on 0.0.0.0:P accepts)
//   listen  --target 0.0.0.0:P                      (connect's listener process)
//   hold    --target H:P --count N --seconds S       opens N echo connections (1 byte each way), prints
//                                                    {"held":N}, keeps them idle until S or stdin closes
import { spawn } from 'node:child_process';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const { values: o } = parseArgs({
  allowPositionals: true,
  options: {
    target: { type: 'string' },
    streams: { type: 'string', default: '1' },
    seconds: { type: 'string', default: '5' },
    rate: { type: 'string', default: '1000' },
    conns: { type: 'string', default: '8' },
    size: { type: 'string', default: '1024' },
    concurrency: { type: 'string', default: '16' },
    count: { type: 'string', default: '1000' },
    listen: { type: 'string' },
  },
});
const mode = process.argv[2];
const i = (o.target ?? '').lastIndexOf(':');
const host = o.target?.slice(0, i);
const port = Number(o.target?.slice(i + 1));
const seconds = Number(o.seconds);
const now = () => performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function connect(opts = {}) {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host, port, allowHalfOpen: true, noDelay: true, ...opts });
    sock.once('connect', () => {
      sock.off('error', reject);
      resolve(sock);
    });
    sock.once('error', reject);
  });
}

function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

function stats(samplesMs) {
  const s = Float64Array.from(samplesMs).sort();
  const us = (v) => (v === null ? null : Math.round(v * 1000 * 10) / 10);
  return { n: s.length, p50_us: us(percentile(s, 50)), p90_us: us(percentile(s, 90)), p99_us: us(percentile(s, 99)), max_us: us(s.length ? s[s.length - 1] : null) };
}

function out(result) {
  process.stdout.write(JSON.stringify({ mode, ...result }) + '\n');
}

async function bulk() {
  const chunk = Buffer.alloc(256 * 1024, 0x61);
  const socks = await Promise.all(Array.from({ length: Number(o.streams) }, () => connect()));
  const start = now();
  const deadline = start + seconds * 1000;
  const counts = await Promise.all(
    socks.map(
      (sock) =>
        new Promise((resolve, reject) => {
          let answer = '';
          sock.setEncoding('utf8');
          sock.on('data', (d) => (answer += d));
          sock.on('end', () => resolve({ bytes: Number(answer.trim()), at: now() }));
          sock.on('error', reject);
          const pump = () => {
            while (now() < deadline) if (!sock.write(chunk)) return void sock.once('drain', pump);
            sock.end();
          };
          pump();
        }),
    ),
  );
  const bytes = counts.reduce((a, c) => a + c.bytes, 0);
  const secs = (Math.max(...counts.map((c) => c.at)) - start) / 1000;
  out({ streams: socks.length, bytes, seconds: secs, gbps: (bytes * 8) / secs / 1e9 });
}

async function rr() {
  const size = Number(o.size);
  const rate = Number(o.rate);
  const total = Math.max(1, Math.round(rate * seconds));
  const request = Buffer.alloc(size, 0x62);
  const conns = await Promise.all(Array.from({ length: Number(o.conns) }, () => connect()));
  // One unmeasured round trip per connection: the path is set up (tunnels, pools) before timing.
  await Promise.all(
    conns.map(
      (sock) =>
        new Promise((resolve, reject) => {
          let got = 0;
          const onData = (d) => {
            got += d.length;
            if (got < size) return;
            sock.off('data', onData);
            sock.off('error', reject);
            resolve();
          };
          sock.on('data', onData);
          sock.once('error', reject);
          sock.write(request);
        }),
    ),
  );
  const latencies = [];
  let completed = 0;
  let finish;
  const finished = new Promise((r) => (finish = r));
  const state = conns.map((sock) => {
    const st = { sock, due: [], received: 0, answered: 0 };
    sock.on('data', (d) => {
      st.received += d.length;
      const t = now();
      while (st.received >= (st.answered + 1) * size) {
        latencies.push(t - st.due.shift());
        st.answered++;
        if (++completed === total) finish();
      }
    });
    sock.on('error', () => finish());
    return st;
  });
  const start = now() + 5;
  const interval = 1000 / rate;
  let sent = 0;
  await new Promise((resolve) => {
    const tick = () => {
      const t = now();
      while (sent < total && start + sent * interval <= t) {
        const st = state[sent % state.length];
        st.due.push(start + sent * interval);
        st.sock.write(request);
        sent++;
      }
      if (sent === total) return resolve();
      setTimeout(tick, Math.max(0, start + sent * interval - now()));
    };
    setTimeout(tick, Math.max(0, start - now()));
  });
  const timeout = setTimeout(finish, 10_000);
  await finished;
  clearTimeout(timeout);
  const elapsed = (now() - start) / 1000;
  for (const st of state) st.sock.destroy();
  out({ rate, conns: conns.length, size, sent, completed, lost: total - completed, achieved_rps: completed / elapsed, ...stats(latencies) });
}

async function conns() {
  const deadline = now() + seconds * 1000;
  const start = now();
  let ok = 0;
  const errors = {};
  const one = () =>
    new Promise((resolve) => {
      const sock = net.connect({ host, port, noDelay: true });
      let got = false;
      sock.on('connect', () => sock.write('x'));
      sock.on('data', () => {
        got = true;
        sock.end();
      });
      sock.on('error', (err) => {
        errors[err.code ?? err.message] = (errors[err.code ?? err.message] ?? 0) + 1;
      });
      sock.on('close', () => {
        if (got) ok++;
        resolve();
      });
    });
  const worker = async () => {
    while (now() < deadline) await one();
  };
  await Promise.all(Array.from({ length: Number(o.concurrency) }, worker));
  const secs = (now() - start) / 1000;
  out({ concurrency: Number(o.concurrency), ok, errors, seconds: secs, conns_per_s: ok / secs });
}

async function connectLatency() {
  // The listener is a process of its own, as the weft proxy is: accepting does not share our loop.
  let listener;
  if (o.listen) {
    listener = spawn(process.execPath, [fileURLToPath(import.meta.url), 'listen', '--target', `0.0.0.0:${o.listen}`], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise((resolve, reject) => {
      listener.stdout.once('data', resolve);
      listener.once('exit', (code) => reject(new Error(`listener exited ${code}`)));
    });
  }
  const samples = [];
  const errors = {};
  for (let n = 0; n < Number(o.count); n++) {
    await new Promise((resolve) => {
      const t = now();
      const sock = net.connect({ host, port });
      sock.once('connect', () => {
        samples.push(now() - t);
        sock.destroy();
        resolve();
      });
      sock.once('error', (err) => {
        errors[err.code ?? err.message] = (errors[err.code ?? err.message] ?? 0) + 1;
        resolve();
      });
    });
    if (n % 50 === 49) await sleep(1); // let the other side's work (a proxy's upstream) interleave
  }
  listener?.kill();
  out({ count: Number(o.count), errors, ...stats(samples) });
}

/** For connect --listen: accepts and closes every connection; prints one line when listening. */
async function listen() {
  const server = net.createServer((s) => s.destroy());
  server.listen({ port, host, backlog: 4096 }, () => process.stdout.write('listening\n'));
  await new Promise(() => undefined);
}

async function hold() {
  const count = Number(o.count);
  const socks = [];
  for (let n = 0; n < count; n += 100) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(100, count - n) }, async () => {
        const sock = await connect();
        sock.on('error', () => undefined);
        await new Promise((resolve) => {
          sock.once('data', resolve);
          sock.write('x');
        });
        return sock;
      }),
    );
    socks.push(...batch);
  }
  out({ held: socks.length });
  await new Promise((resolve) => {
    setTimeout(resolve, seconds * 1000);
    process.stdin.on('end', resolve).on('error', resolve).resume();
  });
  const open = socks.filter((s) => !s.destroyed).length;
  for (const s of socks) s.destroy();
  out({ released: socks.length, still_open: open });
}

const modes = { bulk, rr, conns, connect: connectLatency, hold, listen };
if (!modes[mode] || !o.target) {
  process.stderr.write('usage: loadgen.mjs bulk|rr|conns|connect|hold --target HOST:PORT [options]\n');
  process.exit(2);
}
await modes[mode]();
process.exit(0);
