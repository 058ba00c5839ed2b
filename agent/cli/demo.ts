// `weft demo` — the newcomer's tour on one Linux box: bring up the example lab (two nodes, a
// controller, an agent per node, the relay), follow the cluster's flows live through the relay as
// `weft observe -f` would, send traffic that eBPF steers into the node proxies and mutual TLS carries
// between nodes, apply Istio policies, send the same traffic again, summarise, tear down.
import { parseArgs } from 'node:util';
import { Ports, RelayDefaults } from '../config.js';
import { ErrorCodes, WeftError } from '../errors.js';
import { flowResponseToJson } from '../flows/json.js';
import { unpackConnectionInfo } from '../flows/proto.js';
import type { GetFlowsResponse } from '../flows/types.js';
import { labDown, labUp, type LabHandle } from '../lab/index.js';
import { repoPath } from '../system/assets.js';
import { agentAdminGet, eventually } from '../node/index.js';
import { ObserverClient } from '../relay/index.js';
import { applyPolicies } from './apply.js';
import { formatStatus } from '../lab/command.js';
import { FlowPrinter } from './observe-printer.js';

const LAB_NAME = 'weft-demo';
const RELAY = RelayDefaults.address;

const colour = process.stdout.isTTY && !process.env.NO_COLOR;
const bold = (text: string): string => (colour ? `\x1b[1m${text}\x1b[0m` : text);
const out = (s = ''): void => void process.stdout.write(s + '\n');

interface Totals {
  allowed: number;
  denied: number;
  bytes: number;
  identities: Set<string>;
  flows: number;
}

/** Follows every node's flows through the relay and prints the proxies' verdicts live. */
class LiveFlows {
  private readonly client = new ObserverClient(RELAY);
  private readonly printer = new FlowPrinter({ output: 'compact', color: colour, toJson: flowResponseToJson, out: (t) => process.stdout.write('  ' + t), err: (t) => process.stderr.write(t) });
  private readonly stream;
  private lastFlowAt = Date.now();
  readonly totals: Totals = { allowed: 0, denied: 0, bytes: 0, identities: new Set(), flows: 0 };

  constructor() {
    // The destination's verdicts (INGRESS) tell the story; socket-level capture flows are left out.
    this.stream = this.client.getFlows({ follow: true, whitelist: [{ traffic_direction: ['INGRESS'] }], blacklist: [{ verdict: ['REDIRECTED', 'TRACED'] }] });
    this.stream.on('data', (resp: GetFlowsResponse) => this.onResponse(resp));
    this.stream.on('error', () => undefined);
  }

  private onResponse(resp: GetFlowsResponse): void {
    if (!resp.flow) return;
    const f = resp.flow;
    this.lastFlowAt = Date.now();
    this.totals.flows++;
    const info = unpackConnectionInfo(f);
    if (f.verdict === 'FORWARDED') this.totals.allowed++;
    if (f.verdict === 'DROPPED') this.totals.denied++;
    this.totals.bytes += (info?.bytes_sent ?? 0) + (info?.bytes_received ?? 0);
    for (const p of [info?.source_principal, info?.destination_principal]) if (p) this.totals.identities.add(`spiffe://${p}`);
    this.printer.write(resp);
  }

  /** Wait until the flows of what just happened have arrived: none new for a short while. */
  async settle(quietMs = 400): Promise<void> {
    this.lastFlowAt = Date.now();
    await eventually('flows to settle', async () => (Date.now() - this.lastFlowAt >= quietMs ? true : undefined), 10_000);
  }

  close(): void {
    this.stream.cancel();
    this.client.close();
  }
}

const TRAFFIC = [
  { what: 'frontend → api (service, across nodes)', from: 'shop/frontend', to: 'api.shop:80' },
  { what: 'frontend → db (service, across nodes)', from: 'shop/frontend', to: 'db.shop:5432' },
  { what: 'api → db (same node)', from: 'shop/api', to: 'db.shop:5432' },
  { what: 'legacy/client (not in the mesh) → api', from: 'legacy/client', to: 'api.shop:80' },
];

async function sendTraffic(lab: LabHandle, count: number, quiet = false): Promise<void> {
  for (const step of TRAFFIC) {
    const r = await lab.exec(step.from, ['node', repoPath('test', 'fixtures', 'conn-storm.mjs'), '--targets', step.to, '--count', String(count), '--timeout', '3000'], { stdio: 'pipe' });
    const summary = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as { ok?: number; failed?: number };
    if (!quiet) out(`  ${step.what}: ${summary.ok ?? 0} of ${count} connections echoed, ${summary.failed ?? count} refused`);
  }
}

export async function demoCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { keep: { type: 'boolean', default: false }, duration: { type: 'string' } } });
  const durationS = values.duration === undefined ? 0 : Number(values.duration);
  if (!Number.isFinite(durationS) || durationS < 0) throw new WeftError(ErrorCodes.USAGE, `--duration: "${values.duration}" is not a number of seconds`);
  const started = Date.now();

  out(bold('▶ bringing up the example lab (examples/lab.yaml): "shop" is in the mesh, "legacy" is not'));
  await labDown({ name: LAB_NAME });
  const lab = await labUp([repoPath('examples', 'lab.yaml')], { name: LAB_NAME, onProgress: (m) => out(`  · ${m}`) });
  let live: LiveFlows | undefined;
  try {
    out(formatStatus(await lab.status()));
    live = new LiveFlows();

    out(bold('▶ no policies yet: every path is open; pods in the mesh already talk mutual TLS over HBONE'));
    out('  (flows below come live from the relay, as `weft observe -f --traffic-direction ingress` shows them)');
    await sendTraffic(lab, 3);
    await live.settle();

    out('');
    out(bold('▶ weft apply -f examples/policies.yaml   (STRICT mTLS in shop; api ← frontend only; db ← api only)'));
    const keys = applyPolicies([repoPath('examples', 'policies.yaml')], LAB_NAME);
    for (const k of keys) out(`  ${k} applied`);
    for (const node of lab.nodes) {
      await eventually(`policies on ${node.name}`, async () => {
        const d = await agentAdminGet<{ policies: { authorization: string[]; peerAuthentication: string[] } }>(node.netnsPath, '/config_dump');
        return d.policies.authorization.length + d.policies.peerAuthentication.length >= keys.length ? true : undefined;
      });
    }

    out('');
    out(bold('▶ the same traffic under the policies'));
    await sendTraffic(lab, 3);
    await live.settle();

    if (durationS > 0) {
      out('');
      out(bold(`▶ traffic keeps flowing until ${durationS} s have passed`));
      while (Date.now() - started < durationS * 1000) await sendTraffic(lab, 2, true);
      await live.settle();
    }

    const t = live.totals;
    out('');
    out(bold('▶ summary'));
    out(`  connections allowed: ${t.allowed}, denied: ${t.denied} (each judged by the destination's node), bytes proxied: ${t.bytes}`);
    out(`  identities: ${[...t.identities].sort().join(', ')}`);
    out('');
    out('where to look next:');
    out(values.keep ? '  the lab is still running:' : '  run `npm run demo -- --keep` (or `weft lab up -f examples/lab.yaml`), then:');
    out(`  weft observe -f --pod shop/api        live flows, as \`hubble observe\` prints them (--verdict DROPPED, -o json …)`);
    out(`  weft status${values.keep ? ` --name ${LAB_NAME}` : ''}                         controller, agents, pods, certificates, config problems`);
    out(`  curl http://${lab.node('node-b').ip}:${Ports.metrics}/metrics   Istio and Hubble metrics of node-b's agent`);
    out('  docs/architecture.md                   how a connection travels, and why');
    return 0;
  } finally {
    live?.close();
    if (values.keep) out(`lab "${LAB_NAME}" kept; remove it with: weft lab down --name ${LAB_NAME}`);
    else {
      await labDown({ name: LAB_NAME });
      out(bold('▶ lab removed'));
    }
  }
}
