// A lab's status: what runs (controller, relay, each node's agent, each pod's containers) and
// whether it answers, the services with their endpoints. `weft lab status` and `weft status` print it.
import { isEnrolled as isEnrolledLocal, type NamespaceResource, type PodResource, type ServiceResource } from '../registry/types.js';
import { httpStatus } from './procs.js';
import { mustState, podKey, type LabState } from './state.js';
import { controllerReadyUrl, readyUrl, relayAnswers } from './supervision.js';
import { pidAlive } from './sys.js';
import { selects } from './topology.js';

export interface LabStatus {
  name: string;
  stateDir: string;
  status: LabState['status'];
  createdAt: string;
  nodeNetwork: string;
  serviceCIDR: string;
  hostIP: string;
  loadBalancer: string;
  controller: { state: 'ready' | 'running' | 'stopped' | 'disabled'; pid?: number; listen?: string; monitoring?: string; trustDomain?: string; workloadCertTTL?: string; log?: string };
  relay: { state: 'ready' | 'running' | 'stopped' | 'disabled'; pid?: number; listen?: string; log?: string };
  nodes: Array<{ name: string; ip: string; podCIDR: string; netns: string; agentPid?: number; agent: 'ready' | 'running' | 'stopped' | 'disabled'; log: string }>;
  pods: Array<{ namespace: string; name: string; node: string; ip: string; netns: string; cgroup: string; phase: 'Running' | 'Stopped' | 'Partial'; enrolled: boolean; containers: Array<{ name: string; pid?: number; running: boolean; log: string }> }>;
  services: Array<{ namespace: string; name: string; clusterIP: string; ports: string[]; endpoints: string[] }>;
}

export async function labStatus(opts: { name?: string } = {}): Promise<LabStatus> {
  const { state } = mustState(opts.name);
  const nsLabels = new Map<string, Record<string, string> | undefined>();
  for (const o of state.objects) if (o.kind === 'Namespace') nsLabels.set(o.metadata.name, o.metadata.labels);
  const nodes = await Promise.all(
    Object.values(state.nodes).map(async (n) => {
      let agent: LabStatus['nodes'][number]['agent'] = 'disabled';
      if (n.agentPid !== undefined) {
        if (!pidAlive(n.agentPid)) agent = 'stopped';
        else agent = (await httpStatus(readyUrl(n), 500)) === 200 ? 'ready' : 'running';
      } else if (state.agents) agent = 'stopped';
      return { name: n.name, ip: n.ip, podCIDR: n.podCIDR, netns: n.netns, agentPid: n.agentPid, agent, log: n.agentLog };
    }),
  );
  const c = state.controller;
  let controller: LabStatus['controller'] = { state: 'disabled' };
  if (c) {
    const alive = c.pid !== undefined && pidAlive(c.pid);
    const ready = alive && (await httpStatus(controllerReadyUrl(c), 500)) === 200;
    controller = { state: ready ? 'ready' : alive ? 'running' : 'stopped', pid: c.pid, listen: c.listen, monitoring: c.monitoring, trustDomain: c.trustDomain, workloadCertTTL: c.workloadCertTTL, log: c.log };
  }
  const r = state.relay;
  let relay: LabStatus['relay'] = { state: 'disabled' };
  if (r) {
    const alive = r.pid !== undefined && pidAlive(r.pid);
    const ready = alive && (await relayAnswers(r.listen, 1000));
    relay = { state: ready ? 'ready' : alive ? 'running' : 'stopped', pid: r.pid, listen: r.listen, log: r.log };
  }
  const pods = Object.values(state.pods).map((p) => {
    const obj = state.objects.find((o) => o.kind === 'Pod' && o.metadata.namespace === p.namespace && o.metadata.name === p.name) as PodResource | undefined;
    const containers = p.containers.map((c) => ({ name: c.name, pid: c.pid, running: c.pid !== undefined && pidAlive(c.pid), log: c.log }));
    const running = containers.filter((c) => c.running).length;
    const ns: NamespaceResource = { apiVersion: 'v1', kind: 'Namespace', metadata: { name: p.namespace, labels: nsLabels.get(p.namespace) } };
    return {
      namespace: p.namespace,
      name: p.name,
      node: p.node,
      ip: p.ip,
      netns: p.netns,
      cgroup: p.cgroup,
      phase: (running === containers.length && running > 0 ? 'Running' : running === 0 ? 'Stopped' : 'Partial') as 'Running' | 'Stopped' | 'Partial',
      enrolled: obj ? isEnrolledLocal(obj, ns) : false,
      containers,
    };
  });
  const services = Object.values(state.services).map((s) => {
    const obj = state.objects.find((o) => o.kind === 'Service' && o.metadata.namespace === s.namespace && o.metadata.name === s.name) as ServiceResource | undefined;
    const sel = obj?.spec.selector;
    const backends = sel
      ? (state.objects.filter((o) => o.kind === 'Pod' && o.metadata.namespace === s.namespace && selects(sel, o)) as PodResource[])
      : [];
    const ports = (obj?.spec.ports ?? []).map((p) => `${p.port}${p.targetPort && p.targetPort !== p.port ? `→${p.targetPort}` : ''}/${p.protocol ?? 'TCP'}`);
    const endpoints = backends.map((b) => state.pods[podKey(b.metadata.namespace, b.metadata.name)]?.ip).filter((x): x is string => !!x);
    return { namespace: s.namespace, name: s.name, clusterIP: s.vip, ports, endpoints };
  });
  return {
    name: state.name,
    stateDir: state.stateDir,
    status: state.status,
    createdAt: state.createdAt,
    nodeNetwork: state.nodeNetwork,
    serviceCIDR: state.serviceCIDR,
    hostIP: state.hostIP,
    loadBalancer: state.lb ? state.lb.linkPin : 'not loaded',
    controller,
    relay,
    nodes,
    pods,
    services,
  };
}
