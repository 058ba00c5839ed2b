// `weft status`: the mesh as the controller sees it — nodes and their agents' discovery streams, the
// enrolled pods, and every rejected configuration document — from the controller's /debug/status
// (plus the lab's own view of nodes and pods when a lab is running).
import { parseArgs } from 'node:util';
import { fetchControllerStatus, type ControllerStatus } from '../controller/index.js';
import type { CertSnapshot } from '../identity/manager.js';
import { agentAdminGet } from '../node/index.js';
import { formatDuration } from '../registry/duration.js';
import { ErrorCodes, WeftError, errorMessage } from '../errors.js';
import { labStatus, openLab, type LabStatus } from '../lab/index.js';

const USAGE = `usage: weft status [--name LAB] [--controller-monitoring URL] [--json]
  --controller-monitoring URL   the controller's monitoring endpoint (default: the lab's controller)`;

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  return rows.map((r) => r.map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]!))).join('  ')).join('\n') + '\n';
}

/** One workload certificate as a node agent reports it (`/certs`). */
export interface NodeCertificate extends CertSnapshot {
  node: string;
}

/** Every agent's certificates, read from its loopback admin API inside the node's netns (labs). */
async function labCertificates(labName: string | undefined): Promise<NodeCertificate[]> {
  const lab = openLab(labName);
  const all = await Promise.all(
    lab.nodes.map(async (n) => {
      try {
        return (await agentAdminGet<CertSnapshot[]>(n.netnsPath, '/certs')).map((c) => ({ ...c, node: n.name }));
      } catch {
        return [];
      }
    }),
  );
  return all.flat();
}

function formatCertificates(certs: NodeCertificate[]): string {
  if (certs.length === 0) return 'no workload certificates\n';
  const rows = [['CERTIFICATE', 'NODE', 'STATE', 'EXPIRES', 'IN', 'FAILURES', 'LAST ERROR']];
  for (const c of certs.sort((a, b) => a.identity.localeCompare(b.identity))) {
    rows.push([
      c.identity,
      c.node,
      c.state,
      c.notAfter ? String(c.notAfter) : '-',
      c.secondsToExpiry !== undefined ? formatDuration(Math.max(0, Math.floor(c.secondsToExpiry))) : '-',
      String(c.failures),
      c.failures > 0 && c.lastError ? c.lastError : '-',
    ]);
  }
  return table(rows);
}

export function formatMeshStatus(url: string, s: ControllerStatus, lab?: LabStatus, certs?: NodeCertificate[]): string {
  const kinds = Object.entries(s.registry.byKind)
    .map(([k, n]) => `${n} ${k}`)
    .join(', ');
  let t = `controller ${url}: trust domain ${s.trustDomain}, registry version ${s.registry.version} (${kinds || 'empty'})\n`;
  t += `root CA valid until ${s.ca.rootNotAfter}; workload certificates at most ${s.ca.maxCertTtlSeconds} s; issued ${s.certificates.issued}, denied ${s.certificates.denied}\n\n`;

  const streams = new Map(s.connectedAgents.map((a) => [a.node, a]));
  const nodeNames = lab ? lab.nodes.map((n) => n.name) : [...streams.keys()].sort();
  const rows = [['NODE', 'AGENT', 'DISCOVERY', 'VERSION', 'OBJECTS']];
  for (const name of nodeNames) {
    const a = streams.get(name);
    const agent = lab?.nodes.find((n) => n.name === name)?.agent ?? (a ? 'connected' : '-');
    rows.push([name, agent, a ? `connected since ${a.since}` : 'not connected', a ? String(a.version) : '-', a ? String(a.objects) : '-']);
  }
  t += rows.length > 1 ? table(rows) : 'no agents connected\n';

  if (lab) {
    const enrolled = lab.pods.filter((p) => p.enrolled);
    t += '\n';
    t += enrolled.length ? table([['ENROLLED POD', 'NODE', 'IP', 'PHASE'], ...enrolled.map((p) => [`${p.namespace}/${p.name}`, p.node, p.ip, p.phase])]) : 'no enrolled pods\n';
  }

  if (certs) t += '\n' + formatCertificates(certs);

  t += '\n';
  if (s.configProblems.length === 0) t += 'configuration: no rejected documents\n';
  else {
    t += `configuration: ${s.configProblems.length} problem(s); the last good versions stay in force\n`;
    for (const p of s.configProblems) t += `  ${p.message}\n`;
  }
  return t;
}

export async function statusCommand(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: { name: { type: 'string' }, 'controller-monitoring': { type: 'string' }, json: { type: 'boolean', default: false }, help: { type: 'boolean', short: 'h' } },
    }));
  } catch (err) {
    throw new WeftError(ErrorCodes.USAGE, `${errorMessage(err)}\n${USAGE}`);
  }
  if (values.help) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  const { name, json } = values;
  let url = values['controller-monitoring'];
  let lab: LabStatus | undefined;
  if (url === undefined || name !== undefined) {
    const monitoring = openLab(name).state.controller?.monitoring;
    lab = await labStatus({ name });
    if (url === undefined) {
      if (!monitoring) throw new WeftError(ErrorCodes.LAB_STATE, `lab "${lab.name}" has no controller (started with --no-agents?)`);
      url = `http://${monitoring}`;
    }
  }
  const base = url.replace(/\/+$/, '');
  let s: ControllerStatus;
  try {
    s = await fetchControllerStatus(base);
  } catch (err) {
    // A lab's agents can still be asked: with the controller down is when their view matters most.
    if (!lab) throw err;
    const certs = await labCertificates(name);
    const why = errorMessage(err);
    process.stdout.write(json ? JSON.stringify({ controller: { unreachable: why }, lab, certificates: certs }, null, 2) + '\n' : `controller ${base}: unreachable (${why}); agents keep their configuration and certificates\n\n${formatCertificates(certs)}`);
    return 1;
  }
  const certs = lab ? await labCertificates(name) : undefined;
  process.stdout.write(json ? JSON.stringify({ controller: s, lab, certificates: certs }, null, 2) + '\n' : formatMeshStatus(base, s, lab, certs));
  return 0;
}
