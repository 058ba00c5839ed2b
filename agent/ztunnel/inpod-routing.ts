// Policy routing inside an enrolled pod's netns, so the proxy can hand connections to the app from
// the client's own address (IP_TRANSPARENT) and the app sees its real peer, as with Istio in-pod mode.
//
// The app answers such a connection to the client's IP, which the pod's routes would send out of
// eth0. One rule per app port sends the app's replies (source = pod IP, source port = app port)
// through a table whose only route is `local`, so they are delivered back to the proxy's socket.
// The proxy's own packets carry its mark and keep the main table. IPv4 only for now.
//
// The kernel's reverse-path check of an arriving SYN to that port looks up the same rule (with the
// ports swapped) and finds the client's address "local": without `accept_local` every plaintext SYN
// from outside would be dropped as IP_LOCAL_SOURCE once the rule exists. Replies cannot be told apart
// by a mark here (that would take conntrack), so the pod's netns accepts local-looking sources; its
// rp_filter is off as in any pod, so this loosens nothing that was enforced.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { PROXY_MARK } from '../datapath/layout.js';
import { ErrorCodes, WeftError } from '../errors.js';

const run = promisify(execFile);

export const ROUTE_TABLE = 100;
const PREF_PROXY_MARK = 100;
const PREF_APP_REPLY = 101;

interface IpRule {
  priority?: number;
  src?: string;
  table?: string;
  fwmark?: string;
  ipproto?: string;
  sport?: string | number;
}

export class TransparentRouting {
  private ready: Promise<void> | undefined;
  private readonly ports = new Map<number, Promise<void>>();

  constructor(
    private readonly netnsPath: string,
    private readonly podIp: string,
  ) {}

  private async ip(args: string[]): Promise<string> {
    try {
      const { stdout } = await run('nsenter', [`--net=${this.netnsPath}`, '--', 'ip', ...args]);
      return stdout;
    } catch (err) {
      throw new WeftError(ErrorCodes.SYSCALL, `ip ${args.join(' ')} in ${this.netnsPath}: ${String(err)}`, { cause: err });
    }
  }

  private async sysctl(key: string, value: string): Promise<void> {
    try {
      await run('nsenter', [`--net=${this.netnsPath}`, '--', 'sysctl', '-qw', `${key}=${value}`]);
    } catch (err) {
      throw new WeftError(ErrorCodes.SYSCALL, `sysctl ${key}=${value} in ${this.netnsPath}: ${String(err)}`, { cause: err });
    }
  }

  private async rules(): Promise<IpRule[]> {
    return JSON.parse((await this.ip(['-j', 'rule', 'show'])) || '[]') as IpRule[];
  }

  /** The table and the mark rule, once per netns (they survive agent restarts, so look first). */
  private setup(): Promise<void> {
    this.ready ??= (async () => {
      await this.sysctl('net.ipv4.conf.all.accept_local', '1');
      await this.ip(['route', 'replace', 'local', '0.0.0.0/0', 'dev', 'lo', 'table', String(ROUTE_TABLE)]);
      const have = await this.rules();
      if (!have.some((r) => r.priority === PREF_PROXY_MARK)) {
        await this.ip(['rule', 'add', 'pref', String(PREF_PROXY_MARK), 'fwmark', `0x${PROXY_MARK.toString(16)}`, 'lookup', 'main']);
      }
    })();
    return this.ready;
  }

  /**
   * Remove everything `setup` and `ensurePort` added: once the pod is no longer proxied, its app's
   * replies must take the normal routes again. Idempotent; also used for pods found un-enrolled
   * after an agent restart.
   */
  async clear(): Promise<void> {
    this.ready = undefined;
    this.ports.clear();
    for (const r of await this.rules()) {
      if (r.priority !== PREF_PROXY_MARK && r.priority !== PREF_APP_REPLY) continue;
      await this.ip(['rule', 'del', 'pref', String(r.priority), ...(r.src && r.src !== 'all' ? ['from', r.src] : []), ...(r.sport ? ['ipproto', 'tcp', 'sport', String(r.sport)] : []), ...(r.fwmark ? ['fwmark', r.fwmark] : []), 'lookup', r.table ?? 'main']);
    }
    await this.ip(['route', 'flush', 'table', String(ROUTE_TABLE)]);
    await this.sysctl('net.ipv4.conf.all.accept_local', '0');
  }

  /** Make sure the app's replies from `port` come back to the proxy. Idempotent and cached. */
  ensurePort(port: number): Promise<void> {
    let p = this.ports.get(port);
    if (!p) {
      p = (async () => {
        await this.setup();
        const have = await this.rules();
        const exists = have.some((r) => r.priority === PREF_APP_REPLY && String(r.sport) === String(port) && r.src === this.podIp);
        if (!exists) {
          await this.ip(['rule', 'add', 'pref', String(PREF_APP_REPLY), 'from', this.podIp, 'ipproto', 'tcp', 'sport', String(port), 'lookup', String(ROUTE_TABLE)]);
        }
      })();
      p.catch(() => this.ports.delete(port));
      this.ports.set(port, p);
    }
    return p;
  }
}
