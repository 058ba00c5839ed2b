// `weft relay`: the cluster-wide Observer API on 4245 over every node's Observer (4244), nodes found
// through the controller (their InternalIPs) or given with --peer, dialled over mutual TLS with the
// relay's credential (--client-cert). Runs until SIGINT/SIGTERM.
// `weft relay credentials`: issue the relay's client credential, or a node's Observer serving one.
import { parseArgs } from 'node:util';
import { writeObserverCredentials, writeRelayCredentials } from '../controller/index.js';
import { Mesh, RelayDefaults } from '../config.js';
import { ErrorCodes, WeftError, errorMessage } from '../errors.js';
import { createLogger } from '../log.js';
import { isPort } from '../net/address.js';
import { DEFAULT_MAX_STREAMS, OBSERVER_PORT } from '../flows/observer-server.js';
import { DEFAULT_OBSERVER_CREDENTIAL_TTL_SECONDS, loadTlsCredential, type TlsCredential } from '../flows/observer-tls.js';
import { durationProblem, parseDurationSeconds } from '../registry/duration.js';
import { weftVersion } from '../system/version.js';
import { parseHostPort } from '../system/host-port.js';
import { PeerPool, controllerPeers, parsePeer, staticPeers, type Discover } from './peers.js';
import { RelayServer } from './server.js';

const USAGE = `usage: weft relay [--listen HOST:PORT] (--controller-monitoring URL | --peer NAME=HOST:PORT ...) [TLS options]
  --listen HOST:PORT              where the relay serves the Observer API (default ${RelayDefaults.listen})
  --controller-monitoring URL     discover nodes from the controller's /debug/status (their InternalIPs)
  --observer-port PORT            the nodes' Observer port with --controller-monitoring (default ${OBSERVER_PORT})
  --peer NAME=HOST[:PORT]         a node's Observer API, repeatable (instead of the controller)
  --refresh SECONDS               re-discover nodes this often (default 10)
  --client-cert FILE, --client-key FILE, --root-cert FILE
                                  the relay's credential (weft relay credentials): nodes are dialled over
                                  mutual TLS and must hold their node identity; without it, plaintext
                                  (nodes serve plaintext on their loopback only)
  --max-streams N                 GetFlows streams served at once (default ${DEFAULT_MAX_STREAMS})

usage: weft relay credentials --state DIR --out DIR [--node NAME] [--trust-domain TD] [--ttl DURATION]
  issues from the controller's CA (--state) the relay's client credential (relay-cert.pem, relay-key.pem)
  or, with --node, that node's Observer serving credential (observer-cert.pem, observer-key.pem),
  with root-cert.pem; keys 0600 (default ttl 8760h)`;

async function credentialsCommand(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        state: { type: 'string' },
        out: { type: 'string' },
        node: { type: 'string' },
        'trust-domain': { type: 'string', default: Mesh.trustDomain },
        ttl: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    throw new WeftError(ErrorCodes.USAGE, `${errorMessage(err)}\n${USAGE}`);
  }
  if (values.help) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  if (!values.state || !values.out) throw new WeftError(ErrorCodes.USAGE, `--state and --out are required\n${USAGE}`);
  let ttl = DEFAULT_OBSERVER_CREDENTIAL_TTL_SECONDS;
  if (values.ttl !== undefined) {
    const s = parseDurationSeconds(values.ttl);
    if (s === undefined) throw new WeftError(ErrorCodes.USAGE, `--ttl: ${durationProblem(values.ttl)}`);
    ttl = s;
  }
  const issue = { stateDir: values.state, outDir: values.out, trustDomain: values['trust-domain'], ttlSeconds: ttl };
  const files = values.node === undefined ? await writeRelayCredentials(issue) : await writeObserverCredentials({ ...issue, node: values.node });
  process.stdout.write(`${files.certFile}\n${files.keyFile}\n${files.rootFile}\n`);
  return 0;
}

export async function relayCommand(argv: string[]): Promise<number> {
  if (argv[0] === 'credentials') return credentialsCommand(argv.slice(1));
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        listen: { type: 'string', default: RelayDefaults.listen },
        'controller-monitoring': { type: 'string' },
        'observer-port': { type: 'string', default: String(OBSERVER_PORT) },
        peer: { type: 'string', multiple: true, default: [] },
        refresh: { type: 'string', default: '10' },
        'client-cert': { type: 'string' },
        'client-key': { type: 'string' },
        'root-cert': { type: 'string' },
        'max-streams': { type: 'string', default: String(DEFAULT_MAX_STREAMS) },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    throw new WeftError(ErrorCodes.USAGE, `${errorMessage(err)}\n${USAGE}`);
  }
  if (values.help) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  const monitoring = values['controller-monitoring'];
  const peers = values.peer.map(parsePeer);
  if ((monitoring === undefined) === (peers.length === 0)) throw new WeftError(ErrorCodes.USAGE, `give either --controller-monitoring or --peer\n${USAGE}`);
  const refresh = Number(values.refresh);
  if (!Number.isFinite(refresh) || refresh <= 0) throw new WeftError(ErrorCodes.USAGE, '--refresh needs a positive number of seconds');
  const observerPort = Number(values['observer-port']);
  if (!isPort(observerPort)) throw new WeftError(ErrorCodes.USAGE, '--observer-port needs a port number');
  const { host, port } = parseHostPort(values.listen, '--listen');
  const maxStreams = Number(values['max-streams']);
  if (!Number.isInteger(maxStreams) || maxStreams < 1) throw new WeftError(ErrorCodes.USAGE, '--max-streams needs a positive integer');
  const tlsFiles = [values['client-cert'], values['client-key'], values['root-cert']];
  if (tlsFiles.some((f) => f !== undefined) && !tlsFiles.every((f) => f !== undefined)) {
    throw new WeftError(ErrorCodes.USAGE, '--client-cert, --client-key and --root-cert go together');
  }
  const tls: TlsCredential | undefined =
    values['client-cert'] !== undefined && values['client-key'] !== undefined && values['root-cert'] !== undefined
      ? loadTlsCredential({ certFile: values['client-cert'], keyFile: values['client-key'], rootFile: values['root-cert'] })
      : undefined;

  const log = createLogger('relay');
  const url = monitoring === undefined ? undefined : /^https?:\/\//.test(monitoring) ? monitoring : `http://${monitoring}`;
  const discover: Discover = url ? controllerPeers(url, observerPort) : staticPeers(peers);
  const pool = new PeerPool(discover, log, refresh * 1000, tls);
  await pool.start();
  const server = new RelayServer({ pool, version: weftVersion(), log, maxStreams });
  try {
    await server.listen(host, port);
  } catch (err) {
    pool.close();
    throw new WeftError(ErrorCodes.USAGE, `cannot listen on ${values.listen}: ${errorMessage(err)}`, { cause: err });
  }
  log.info({ nodes: pool.list().map((p) => `${p.name}=${p.address}`), source: url ?? 'peers', tls: pool.tlsEnabled }, 'relay ready');
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  await server.close();
  pool.close();
  return 0;
}
