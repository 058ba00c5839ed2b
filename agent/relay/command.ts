// `weft relay`: the cluster-wide Observer API on 4245 over every node's Observer (4244), nodes found
// through the controller (their InternalIPs) or given with --peer. Runs until SIGINT/SIGTERM.
import { parseArgs } from 'node:util';
import { ErrorCodes, WeftError, errorMessage } from '../errors.js';
import { createLogger } from '../log.js';
import { OBSERVER_PORT } from '../flows/observer-server.js';
import { weftVersion } from '../system/version.js';
import { parseHostPort } from '../controller/server.js';
import { PeerPool, controllerPeers, parsePeer, staticPeers, type Discover } from './peers.js';
import { RELAY_PORT, RelayServer } from './server.js';

const USAGE = `usage: weft relay [--listen HOST:PORT] (--controller-monitoring URL | --peer NAME=HOST:PORT ...)
  --listen HOST:PORT              where the relay serves the Observer API (default 127.0.0.1:${RELAY_PORT})
  --controller-monitoring URL     discover nodes from the controller's /debug/status (their InternalIPs)
  --observer-port PORT            the nodes' Observer port with --controller-monitoring (default ${OBSERVER_PORT})
  --peer NAME=HOST[:PORT]         a node's Observer API, repeatable (instead of the controller)
  --refresh SECONDS               re-discover nodes this often (default 10)`;

export async function relayCommand(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        listen: { type: 'string', default: `127.0.0.1:${RELAY_PORT}` },
        'controller-monitoring': { type: 'string' },
        'observer-port': { type: 'string', default: String(OBSERVER_PORT) },
        peer: { type: 'string', multiple: true, default: [] },
        refresh: { type: 'string', default: '10' },
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
  if (!Number.isInteger(observerPort) || observerPort < 1 || observerPort > 65535) throw new WeftError(ErrorCodes.USAGE, '--observer-port needs a port number');
  const { host, port } = parseHostPort(values.listen, '--listen');

  const log = createLogger('relay');
  const url = monitoring === undefined ? undefined : /^https?:\/\//.test(monitoring) ? monitoring : `http://${monitoring}`;
  const discover: Discover = url ? controllerPeers(url, observerPort) : staticPeers(peers);
  const pool = new PeerPool(discover, log, refresh * 1000);
  await pool.start();
  const server = new RelayServer({ pool, version: weftVersion(), log });
  try {
    await server.listen(host, port);
  } catch (err) {
    pool.close();
    throw new WeftError(ErrorCodes.USAGE, `cannot listen on ${values.listen}: ${errorMessage(err)}`, { cause: err });
  }
  log.info({ nodes: pool.list().map((p) => `${p.name}=${p.address}`), source: url ?? 'peers' }, 'relay ready');
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  await server.close();
  pool.close();
  return 0;
}
