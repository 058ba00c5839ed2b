// The lab's network: a fabric netns with bridge br0 joining the host (.1) and every node's eth0; per
// node a cni0 bridge holding the pod CIDR's .1 and routes to the other nodes' pod CIDRs; per pod an
// eth0 veth into its node's cni0. Plus the per-pod /etc/netns files (hosts, resolv.conf).
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cidrSize, mustParseIPv4Cidr, nthAddress } from '../net/address.js';
import { ETC_NETNS } from './names.js';
import { ip, ipn, run } from './sys.js';

/** A new netns with its loopback up. */
export async function createNetns(netns: string): Promise<void> {
  await ip('netns', 'add', netns);
  await ipn(netns, 'link', 'set', 'lo', 'up');
}

/**
 * eth0 of `netns` holding `cidrAddress`, its veth peer `peer` enslaved to `bridge` in `bridgeNetns`.
 * How a node joins the fabric's br0 and a pod its node's cni0.
 */
async function addEth0(netns: string, cidrAddress: string, peer: string, bridgeNetns: string, bridge: string): Promise<void> {
  await ip('link', 'add', 'eth0', 'netns', netns, 'type', 'veth', 'peer', 'name', peer, 'netns', bridgeNetns);
  await ipn(bridgeNetns, 'link', 'set', peer, 'master', bridge, 'up');
  await ipn(netns, 'addr', 'add', cidrAddress, 'dev', 'eth0');
  await ipn(netns, 'link', 'set', 'eth0', 'up');
}

export async function createFabric(netns: string): Promise<void> {
  await createNetns(netns);
  await ipn(netns, 'link', 'add', 'br0', 'type', 'bridge');
  await ipn(netns, 'link', 'set', 'br0', 'up');
}

/** The host's veth into the fabric, holding `hostIP/prefix`. */
export async function createHostLink(fabric: string, hostLink: string, peer: string, hostIP: string, prefix: number): Promise<void> {
  await ip('link', 'add', hostLink, 'type', 'veth', 'peer', 'name', peer, 'netns', fabric);
  await ipn(fabric, 'link', 'set', peer, 'master', 'br0', 'up');
  await ip('addr', 'add', `${hostIP}/${prefix}`, 'dev', hostLink);
  await ip('link', 'set', hostLink, 'up');
}

async function sysctls(netns: string, settings: Record<string, string>): Promise<void> {
  await run('ip', ['netns', 'exec', netns, 'sysctl', '-q', '-w', ...Object.entries(settings).map(([k, v]) => `${k}=${v}`)]);
}

export interface NodeNet {
  netns: string;
  fabric: string;
  fabricPeer: string;
  ip: string;
  prefix: number;
  podCIDR: string;
  gateway: string;
}

export async function createNodeNetns(netns: string): Promise<void> {
  await createNetns(netns);
  // Before any interface exists, so eth0 and cni0 inherit them.
  await sysctls(netns, {
    'net.ipv4.ip_forward': '1',
    'net.ipv4.conf.all.rp_filter': '0',
    'net.ipv4.conf.default.rp_filter': '0',
  });
}

export async function configureNode(n: NodeNet): Promise<void> {
  await addEth0(n.netns, `${n.ip}/${n.prefix}`, n.fabricPeer, n.fabric, 'br0');
  const pod = mustParseIPv4Cidr(n.podCIDR);
  // A fixed MAC: a bridge otherwise takes the lowest MAC of its ports, so a new pod's veth could
  // change the gateway's MAC under the other pods' ARP caches and cut them off until they expire.
  await ipn(n.netns, 'link', 'add', 'cni0', 'address', bridgeMac(n.gateway), 'type', 'bridge');
  await ipn(n.netns, 'addr', 'add', `${n.gateway}/${pod.prefix}`, 'dev', 'cni0');
  await ipn(n.netns, 'link', 'set', 'cni0', 'up');
}

/** A locally administered unicast MAC derived from the bridge's IPv4 address (02:77:<a.b.c.d>). */
export function bridgeMac(ip: string): string {
  return ['02', '77', ...ip.split('.').map((o) => Number(o).toString(16).padStart(2, '0'))].join(':');
}

export async function addNodeRoute(netns: string, podCIDR: string, via: string): Promise<void> {
  await ipn(netns, 'route', 'replace', podCIDR, 'via', via, 'dev', 'eth0');
}

export interface PodNet {
  netns: string;
  nodeNetns: string;
  peer: string;
  ip: string;
  prefix: number;
  gateway: string;
}

export async function configurePod(p: PodNet): Promise<void> {
  await addEth0(p.netns, `${p.ip}/${p.prefix}`, p.peer, p.nodeNetns, 'cni0');
  await ipn(p.netns, 'route', 'add', 'default', 'via', p.gateway, 'dev', 'eth0');
}

export async function deleteNetns(netns: string): Promise<void> {
  await run('ip', ['netns', 'del', netns], { allowFail: true });
}

export async function deleteLink(name: string): Promise<void> {
  await run('ip', ['link', 'del', name], { allowFail: true });
}

/** Address `n` of a range (0 = network address), e.g. the gateway .1. */
export function addressOf(cidr: string, n: number): string {
  return nthAddress(mustParseIPv4Cidr(cidr), n);
}

/** The lowest address ≥ `first` of `cidr` (excluding broadcast) not in `taken`. */
export function nextFree(cidr: string, first: number, taken: ReadonlySet<string>): string | undefined {
  const c = mustParseIPv4Cidr(cidr);
  for (let i = first; i < cidrSize(c) - 1; i++) {
    const a = nthAddress(c, i);
    if (!taken.has(a)) return a;
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// DNS: /etc/netns/<pod netns>/{hosts,resolv.conf}, bind-mounted over /etc by `ip netns exec`.

export interface HostsService {
  namespace: string;
  name: string;
  vip: string;
}

export function hostsFile(pod: { namespace: string; name: string; ip: string }, services: readonly HostsService[], clusterDomain: string): string {
  const lines = [
    '# written by weft lab; rewritten in place when services change',
    '127.0.0.1\tlocalhost',
    '::1\tlocalhost ip6-localhost ip6-loopback',
    `${pod.ip}\t${pod.name}`,
  ];
  const sorted = [...services].sort((a, b) => `${a.namespace}/${a.name}`.localeCompare(`${b.namespace}/${b.name}`));
  for (const s of sorted) {
    const names = [`${s.name}.${s.namespace}.svc.${clusterDomain}`, `${s.name}.${s.namespace}.svc`, `${s.name}.${s.namespace}`];
    if (s.namespace === pod.namespace) names.push(s.name);
    lines.push(`${s.vip}\t${names.join(' ')}`);
  }
  return lines.join('\n') + '\n';
}

export function resolvConf(namespace: string, clusterDomain: string): string {
  // Names are answered from the hosts file; the nameserver is a loopback address nothing listens on
  // in the pod's netns, so a miss fails fast instead of leaking queries to the host's resolver.
  return [
    '# written by weft lab',
    `search ${namespace}.svc.${clusterDomain} svc.${clusterDomain} ${clusterDomain}`,
    'nameserver 127.0.0.53',
    'options ndots:5 timeout:1 attempts:1',
    '',
  ].join('\n');
}

export function etcNetnsDir(netns: string): string {
  return join(ETC_NETNS, netns);
}

/** Writes (truncate + write, never rename: running pods have the file bind-mounted) the pod's DNS files. */
export function writePodDns(netns: string, hosts: string, resolv: string): void {
  const dir = etcNetnsDir(netns);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'hosts'), hosts, { flag: 'w' });
  writeFileSync(join(dir, 'resolv.conf'), resolv, { flag: 'w' });
}
