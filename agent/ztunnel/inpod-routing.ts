// Policy routing inside an enrolled pod's netns, so the proxy can hand connections to the app from
// the client's own address (IP_TRANSPARENT) and the app sees its real peer, as with Istio in-pod mode.
//
// The app answers such a connection to the client's IP, which the pod's routes would send out of
// eth0. The proxy's transparent sockets carry their own mark (APP_MARK), and with
// `tcp_fwmark_accept` the app's accepted socket (and its SYN-ACK) inherits the mark of the SYN that
// opened it. One rule sends every packet with that mark through a table whose only route is `local`,
// so the app's replies are delivered back to the proxy's socket — whatever the port, so nothing a
// client does adds rules. The proxy's other sockets carry PROXY_MARK and keep the main table.
// Set up once per pod at enrollment, removed when it leaves. IPv4 only (so is the proxy).
//
// The kernel's reverse-path check of the proxy's SYN (source: the client's address, arriving on lo)
// can find that source "local": `accept_local` lets it in. The pod's rp_filter is off as in any pod,
// so this loosens nothing that was enforced.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { APP_MARK, PROXY_MARK } from '../datapath/layout.js';
import { ErrorCodes, WeftError } from '../errors.js';

const run = promisify(execFile);

export const ROUTE_TABLE = 100;
const PREF_PROXY_MARK = 100;
const PREF_APP_MARK = 101;

interface IpRule {
  priority?: number;
  fwmark?: string;
}

const hex = (n: number): string => `0x${n.toString(16)}`;

export class TransparentRouting {
  private ready: Promise<void> | undefined;

  constructor(private readonly netnsPath: string) {}

  private async inNetns(argv: string[], input?: string): Promise<string> {
    try {
      const child = run('nsenter', [`--net=${this.netnsPath}`, '--', ...argv]);
      if (input !== undefined) child.child.stdin?.end(input);
      return (await child).stdout;
    } catch (err) {
      throw new WeftError(ErrorCodes.SYSCALL, `${argv.join(' ')} in ${this.netnsPath}: ${String(err)}`, { cause: err });
    }
  }

  private async rules(): Promise<IpRule[]> {
    return JSON.parse((await this.inNetns(['ip', '-j', 'rule', 'show'])) || '[]') as IpRule[];
  }

  /** The table, the two mark rules and the sysctls, once per pod (they survive agent restarts, so
   * look first). Idempotent and cached; a failure is retried on the next call. */
  setup(): Promise<void> {
    this.ready ??= (async () => {
      const have = new Set((await this.rules()).map((r) => r.priority));
      const batch = [`route replace local 0.0.0.0/0 dev lo table ${ROUTE_TABLE}`];
      if (!have.has(PREF_PROXY_MARK)) batch.push(`rule add pref ${PREF_PROXY_MARK} fwmark ${hex(PROXY_MARK)} lookup main`);
      if (!have.has(PREF_APP_MARK)) batch.push(`rule add pref ${PREF_APP_MARK} fwmark ${hex(APP_MARK)} lookup ${ROUTE_TABLE}`);
      await this.inNetns(['ip', '-batch', '-'], batch.join('\n') + '\n');
      await this.inNetns(['sysctl', '-qw', 'net.ipv4.conf.all.accept_local=1', 'net.ipv4.tcp_fwmark_accept=1']);
    })();
    this.ready.catch(() => (this.ready = undefined));
    return this.ready;
  }

  /**
   * Remove everything `setup` added: once the pod is no longer proxied, its app's replies must take
   * the normal routes again. Idempotent; also used for pods found un-enrolled after an agent restart.
   */
  async clear(): Promise<void> {
    this.ready = undefined;
    const batch: string[] = [];
    for (const r of await this.rules()) {
      if (r.priority === PREF_PROXY_MARK || r.priority === PREF_APP_MARK) batch.push(`rule del pref ${r.priority}`);
    }
    batch.push(`route flush table ${ROUTE_TABLE}`);
    // -force: one missing piece must not keep the others in place.
    await this.inNetns(['ip', '-force', '-batch', '-'], batch.join('\n') + '\n');
    await this.inNetns(['sysctl', '-qw', 'net.ipv4.conf.all.accept_local=0', 'net.ipv4.tcp_fwmark_accept=0']);
  }

  /** The rules in force (for tests and the config dump): priority and mark. */
  async list(): Promise<Array<{ priority: number; fwmark?: string }>> {
    return (await this.rules()).filter((r) => r.priority === PREF_PROXY_MARK || r.priority === PREF_APP_MARK).map((r) => ({ priority: r.priority!, ...(r.fwmark ? { fwmark: r.fwmark } : {}) }));
  }
}
