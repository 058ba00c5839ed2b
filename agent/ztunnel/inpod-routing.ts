// Policy routing inside an enrolled pod's netns, so the proxy can hand connections to the app from
// the client's own address (IP_TRANSPARENT) and the app sees its real peer, as with Istio in-pod mode.
//
// The app answers such a connection to the client's IP, which the pod's routes would send out of
// eth0. The proxy's transparent sockets carry their own mark (APP_MARK), and with
// `tcp_fwmark_accept` the app's accepted socket (and its SYN-ACK) inherits the mark of the SYN that
// opened it. One rule sends every packet with that mark through a table whose only route is `local`,
// so the app's replies are delivered back to the proxy's socket — whatever the port, so nothing a
// client does adds rules. The proxy's other sockets carry PROXY_MARK and keep the main table.
// Set up once per pod at enrollment, removed when it leaves. IPv4 only (so is the proxy). Done over
// rtnetlink by the native addon (native/src/route.cc): no process is spawned per pod.
//
// The kernel's reverse-path check of the proxy's SYN (source: the client's address, arriving on lo)
// can find that source "local": `accept_local` lets it in. The pod's rp_filter is off as in any pod,
// so this loosens nothing that was enforced.
import { APP_MARK, PROXY_MARK } from '../datapath/layout.js';
import { clearTransparentRouting, listRoutingRules, setupTransparentRouting, type TransparentRoutingOptions } from '../../native/index.js';

export const ROUTE_TABLE = 100;
const PREF_PROXY_MARK = 100;
const PREF_APP_MARK = 101;
const RT_TABLE_MAIN = 254;

/** The local route's table and the two mark rules, as the addon takes them. */
export const TRANSPARENT_ROUTING: TransparentRoutingOptions = Object.freeze({
  table: ROUTE_TABLE,
  rules: Object.freeze([
    Object.freeze({ priority: PREF_PROXY_MARK, fwmark: PROXY_MARK, table: RT_TABLE_MAIN }),
    Object.freeze({ priority: PREF_APP_MARK, fwmark: APP_MARK, table: ROUTE_TABLE }),
  ]),
});

const hex = (n: number): string => `0x${n.toString(16)}`;

export class TransparentRouting {
  private ready: Promise<void> | undefined;

  constructor(private readonly netnsPath: string) {}

  /** The table, the two mark rules and the sysctls, once per pod (they survive agent restarts, so
   * the addon looks first). Idempotent and cached; a failure is retried on the next call. */
  setup(): Promise<void> {
    if (!this.ready) {
      const ready = setupTransparentRouting(this.netnsPath, TRANSPARENT_ROUTING);
      this.ready = ready;
      ready.catch(() => {
        if (this.ready === ready) this.ready = undefined;
      });
    }
    return this.ready;
  }

  /**
   * Remove everything `setup` added: once the pod is no longer proxied, its app's replies must take
   * the normal routes again. Idempotent; also used for pods found un-enrolled after an agent restart.
   * Every piece is removed even when another fails (a missing one is no failure).
   */
  async clear(): Promise<void> {
    this.ready = undefined;
    await clearTransparentRouting(this.netnsPath, TRANSPARENT_ROUTING);
  }

  /** The rules in force (for tests and the config dump): priority, mark as `ip rule` shows it, table. */
  async list(): Promise<Array<{ priority: number; fwmark?: string; table?: number }>> {
    return (await listRoutingRules(this.netnsPath, TRANSPARENT_ROUTING)).map((r) => ({
      priority: r.priority,
      ...(r.fwmark !== undefined ? { fwmark: r.fwmask === undefined || r.fwmask === 0xffffffff ? hex(r.fwmark) : `${hex(r.fwmark)}/${hex(r.fwmask)}` } : {}),
      ...(r.table !== undefined ? { table: r.table } : {}),
    }));
  }
}
