// The core kinds' document checks: weft's Node and LabConfig, Kubernetes' Namespace, Pod and
// Service, in the shapes of types.ts. Each validator gets the document (a mapping) and its checked
// metadata, records every problem it finds and returns the normalised resource, or undefined. Which
// apiVersion and kind reach which validator is the table in kinds.ts.
import { SERVICE_NAME_LABEL } from './types.js';
import type {
  ClusterNodeResource,
  Container,
  EndpointConditions,
  EndpointSliceResource,
  SliceEndpoint,
  SlicePort,
  ContainerPort,
  LabConfigResource,
  NamespaceResource,
  NodeResource,
  ObjectMeta,
  PodResource,
  ServicePort,
  ServiceResource,
} from './types.js';
import { durationProblem } from './duration.js';
import {
  ENV_NAME,
  checkList,
  checkCidr,
  checkIPv4,
  checkLabelName,
  checkObject,
  checkPort,
  checkString,
  checkStringArray,
  checkStringMap,
  checkSubdomainName,
  describe,
  quote,
  type DocContext,
  type Json,
  type PathSeg,
} from './validators.js';

const TOP = ['apiVersion', 'kind', 'metadata', 'spec', 'status'];

/** weft's lab Node (weft.io/v1alpha1: a pod CIDR is required) or a Kubernetes Node (v1: it may have none). */
export function validateNode(ctx: DocContext, raw: Record<string, Json>, meta: ObjectMeta): NodeResource | ClusterNodeResource | undefined {
  const before = ctx.problems.length;
  const cluster = raw.apiVersion === 'v1';
  checkObject(ctx, [], raw, TOP);
  const spec = checkObject(ctx, ['spec'], raw.spec, ['podCIDR'], { required: !cluster });
  const podCIDR = spec ? checkCidr(ctx, ['spec', 'podCIDR'], spec.podCIDR, !cluster, { maxPrefix: 30, forWhat: 'pods' }) : undefined;
  let addresses: Array<{ type: 'InternalIP'; address: string }> | undefined;
  const status = checkObject(ctx, ['status'], raw.status, ['addresses']);
  if (status && status.addresses !== undefined) {
    if (!Array.isArray(status.addresses)) ctx.add(['status', 'addresses'], 'must be a sequence');
    else {
      addresses = [];
      status.addresses.forEach((a, i) => {
        const p = ['status', 'addresses', i];
        const o = checkObject(ctx, p, a, ['type', 'address'], { required: true });
        if (!o) return;
        const type = checkString(ctx, [...p, 'type'], o.type, { required: true, oneOf: ['InternalIP'] });
        const address = checkIPv4(ctx, [...p, 'address'], o.address, true);
        if (type && address) addresses!.push({ type: 'InternalIP', address });
      });
    }
  }
  if (ctx.problems.length !== before) return undefined;
  if (cluster) {
    const n: ClusterNodeResource = { apiVersion: 'v1', kind: 'Node', metadata: meta, spec: podCIDR ? { podCIDR } : {} };
    if (addresses) n.status = { addresses };
    return n;
  }
  if (!podCIDR) return undefined;
  const r: NodeResource = { apiVersion: 'weft.io/v1alpha1', kind: 'Node', metadata: meta, spec: { podCIDR } };
  if (addresses) r.status = { addresses };
  return r;
}

/** discovery.k8s.io/v1 EndpointSlice: IPv4 slices of a named Service (weft's addresses are IPv4). */
export function validateEndpointSlice(ctx: DocContext, raw: Record<string, Json>, meta: ObjectMeta): EndpointSliceResource | undefined {
  const before = ctx.problems.length;
  checkObject(ctx, [], raw, ['apiVersion', 'kind', 'metadata', 'addressType', 'endpoints', 'ports']);
  const service = meta.labels?.[SERVICE_NAME_LABEL];
  if (service === undefined) ctx.add(['metadata', 'labels'], `an EndpointSlice needs the label ${SERVICE_NAME_LABEL} naming its Service`);
  else checkLabelName(ctx, ['metadata', 'labels', SERVICE_NAME_LABEL], service);
  checkString(ctx, ['addressType'], raw.addressType, { required: true, oneOf: ['IPv4'] });
  const endpoints = checkList(ctx, ['endpoints'], raw.endpoints, (p, e) => {
    const o = checkObject(ctx, p, e, ['addresses', 'conditions', 'nodeName', 'targetRef'], { required: true, tolerated: ['hostname', 'zone', 'hints', 'deprecatedTopology'] });
    if (!o) return undefined;
    const addrs = checkStringArray(ctx, [...p, 'addresses'], o.addresses, { required: true, nonEmpty: true });
    const addresses: string[] = [];
    addrs?.forEach((a, j) => {
      const ip = checkIPv4(ctx, [...p, 'addresses', j], a, true);
      if (ip) addresses.push(ip);
    });
    const ep: SliceEndpoint = { addresses };
    const c = checkObject(ctx, [...p, 'conditions'], o.conditions, ['ready', 'serving', 'terminating']);
    if (c) {
      const conditions: EndpointConditions = {};
      for (const k of ['ready', 'serving', 'terminating'] as const) {
        const v = c[k];
        if (v === undefined || v === null) continue;
        if (typeof v !== 'boolean') ctx.add([...p, 'conditions', k], `must be true or false, got ${describe(v)}`);
        else conditions[k] = v;
      }
      ep.conditions = conditions;
    }
    if (o.nodeName !== undefined && o.nodeName !== null) {
      const n = checkSubdomainName(ctx, [...p, 'nodeName'], o.nodeName);
      if (n) ep.nodeName = n;
    }
    const t = checkObject(ctx, [...p, 'targetRef'], o.targetRef, ['kind', 'namespace', 'name'], { tolerated: ['uid', 'apiVersion', 'resourceVersion', 'fieldPath'] });
    if (t) {
      const ref: NonNullable<SliceEndpoint['targetRef']> = {};
      for (const k of ['kind', 'namespace', 'name'] as const) {
        const v = t[k] === undefined ? undefined : checkString(ctx, [...p, 'targetRef', k], t[k]);
        if (v) ref[k] = v;
      }
      ep.targetRef = ref;
    }
    return ep;
  }) ?? [];
  const ports = checkList(ctx, ['ports'], raw.ports, (p, pt) => {
    const o = checkObject(ctx, p, pt, ['name', 'port', 'protocol'], { required: true, tolerated: ['appProtocol'] });
    if (!o) return undefined;
    const sp: SlicePort = {};
    // A port's name is "" when the Service has a single unnamed port.
    if (o.name !== undefined && o.name !== null && o.name !== '') {
      const n = checkLabelName(ctx, [...p, 'name'], o.name);
      if (n) sp.name = n;
    }
    const port = checkPort(ctx, [...p, 'port'], o.port, false);
    if (port !== undefined) sp.port = port;
    const protocol = o.protocol === undefined || o.protocol === null ? undefined : checkString(ctx, [...p, 'protocol'], o.protocol, { oneOf: ['TCP', 'UDP'] });
    if (protocol) sp.protocol = protocol as 'TCP' | 'UDP';
    return sp;
  }) ?? [];
  if (ctx.problems.length !== before) return undefined;
  const r: EndpointSliceResource = {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: meta as ObjectMeta & { namespace: string },
    addressType: 'IPv4',
    endpoints,
  };
  if (ports.length) r.ports = ports;
  return r;
}

export function validateNamespace(ctx: DocContext, raw: Record<string, Json>, meta: ObjectMeta): NamespaceResource | undefined {
  const before = ctx.problems.length;
  checkObject(ctx, [], raw, TOP);
  checkObject(ctx, ['spec'], raw.spec, [], { tolerated: ['finalizers'] });
  checkObject(ctx, ['status'], raw.status, [], { tolerated: ['phase'] });
  if (ctx.problems.length !== before) return undefined;
  return { apiVersion: 'v1', kind: 'Namespace', metadata: meta };
}

export function validatePod(ctx: DocContext, raw: Record<string, Json>, meta: ObjectMeta): PodResource | undefined {
  const before = ctx.problems.length;
  checkObject(ctx, [], raw, TOP);
  const spec = checkObject(ctx, ['spec'], raw.spec, ['nodeName', 'serviceAccountName', 'containers'], {
    required: true,
    tolerated: ['restartPolicy', 'terminationGracePeriodSeconds'],
  });
  let nodeName: string | undefined;
  let serviceAccountName: string | undefined;
  const containers: Container[] = [];
  if (spec) {
    nodeName = ctx.fromApi ? checkSubdomainName(ctx, ['spec', 'nodeName'], spec.nodeName) : checkLabelName(ctx, ['spec', 'nodeName'], spec.nodeName);
    if (spec.serviceAccountName !== undefined) serviceAccountName = checkSubdomainName(ctx, ['spec', 'serviceAccountName'], spec.serviceAccountName);
    const cs = spec.containers;
    if (cs === undefined || cs === null) ctx.add(['spec', 'containers'], 'required field is missing');
    else if (!Array.isArray(cs)) ctx.add(['spec', 'containers'], `must be a sequence, got ${describe(cs)}`);
    else if (cs.length === 0) ctx.add(['spec', 'containers'], 'a pod needs at least one container');
    else {
      const names = new Set<string>();
      cs.forEach((c, i) => {
        const p: PathSeg[] = ['spec', 'containers', i];
        const o = checkObject(ctx, p, c, ['name', 'command', 'args', 'ports', 'env'], {
          required: true,
          tolerated: ['image', 'imagePullPolicy'],
        });
        if (!o) return;
        const name = checkLabelName(ctx, [...p, 'name'], o.name);
        if (name !== undefined) {
          if (names.has(name)) ctx.add([...p, 'name'], `duplicate container name "${name}"`);
          names.add(name);
        }
        // The lab runs a file's containers, so a file must say what to run; a pod from the API runs its
        // image's entrypoint, which weft neither knows nor needs.
        const command = checkStringArray(ctx, [...p, 'command'], o.command, { required: !ctx.fromApi, nonEmpty: !ctx.fromApi });
        const args = checkStringArray(ctx, [...p, 'args'], o.args);
        const ports: ContainerPort[] = [];
        if (o.ports !== undefined && o.ports !== null) {
          if (!Array.isArray(o.ports)) ctx.add([...p, 'ports'], `must be a sequence, got ${describe(o.ports)}`);
          else
            o.ports.forEach((pt, j) => {
              const pp = [...p, 'ports', j];
              const po = checkObject(ctx, pp, pt, ['containerPort', 'name', 'protocol'], { required: true });
              if (!po) return;
              const containerPort = checkPort(ctx, [...pp, 'containerPort'], po.containerPort, true);
              const pname = po.name === undefined ? undefined : checkLabelName(ctx, [...pp, 'name'], po.name);
              const protocol = po.protocol === undefined ? undefined : checkString(ctx, [...pp, 'protocol'], po.protocol, { oneOf: ['TCP', 'UDP'] });
              if (containerPort === undefined) return;
              const cp: ContainerPort = { containerPort };
              if (pname) cp.name = pname;
              if (protocol) cp.protocol = protocol as 'TCP' | 'UDP';
              ports.push(cp);
            });
        }
        const env: Array<{ name: string; value: string }> = [];
        if (o.env !== undefined && o.env !== null) {
          if (!Array.isArray(o.env)) ctx.add([...p, 'env'], `must be a sequence, got ${describe(o.env)}`);
          else
            o.env.forEach((e, j) => {
              const ep = [...p, 'env', j];
              const eo = checkObject(ctx, ep, e, ['name', 'value'], { required: true });
              if (!eo) return;
              const en = checkString(ctx, [...ep, 'name'], eo.name, { required: true, pattern: ENV_NAME, patternReason: 'is not a valid environment variable name' });
              let ev: string | undefined;
              if (typeof eo.value === 'number' || typeof eo.value === 'boolean') ctx.add([...ep, 'value'], `must be a string, got ${describe(eo.value)} (quote it)`);
              else ev = eo.value === undefined ? '' : checkString(ctx, [...ep, 'value'], eo.value);
              if (en !== undefined && ev !== undefined) env.push({ name: en, value: ev });
            });
        }
        if (name !== undefined && (command !== undefined || ctx.fromApi)) {
          const container: Container = { name, command: [...(command ?? []), ...(args ?? [])] };
          if (ports.length) container.ports = ports;
          if (env.length) container.env = env;
          containers.push(container);
        }
      });
    }
  }
  let status: PodResource['status'];
  const st = checkObject(ctx, ['status'], raw.status, ['podIP', 'hostIP', 'phase']);
  if (st) {
    status = {};
    const podIP = st.podIP === undefined ? undefined : checkIPv4(ctx, ['status', 'podIP'], st.podIP, false);
    const hostIP = st.hostIP === undefined ? undefined : checkIPv4(ctx, ['status', 'hostIP'], st.hostIP, false);
    const phase = st.phase === undefined ? undefined : checkString(ctx, ['status', 'phase'], st.phase, { oneOf: ['Pending', 'Running'] });
    if (podIP) status.podIP = podIP;
    if (hostIP) status.hostIP = hostIP;
    if (phase) status.phase = phase as 'Pending' | 'Running';
  }
  if (ctx.problems.length !== before || nodeName === undefined) return undefined;
  const r: PodResource = {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: meta as ObjectMeta & { namespace: string },
    spec: { nodeName, containers },
  };
  if (serviceAccountName) r.spec.serviceAccountName = serviceAccountName;
  if (status) r.status = status;
  return r;
}

export function validateService(ctx: DocContext, raw: Record<string, Json>, meta: ObjectMeta): ServiceResource | undefined {
  const before = ctx.problems.length;
  checkObject(ctx, [], raw, TOP);
  const spec = checkObject(ctx, ['spec'], raw.spec, ['selector', 'ports', 'clusterIP'], { required: true, tolerated: ['type'] });
  const ports: ServicePort[] = [];
  let selector: Record<string, string> | undefined;
  let clusterIP: string | undefined;
  if (spec) {
    if (spec.type !== undefined) checkString(ctx, ['spec', 'type'], spec.type, { oneOf: ['ClusterIP'] });
    selector = checkStringMap(ctx, ['spec', 'selector'], spec.selector, 'selector');
    if (spec.clusterIP !== undefined) clusterIP = checkIPv4(ctx, ['spec', 'clusterIP'], spec.clusterIP, false);
    const ps = spec.ports;
    if (ps === undefined || ps === null) ctx.add(['spec', 'ports'], 'required field is missing');
    else if (!Array.isArray(ps)) ctx.add(['spec', 'ports'], `must be a sequence, got ${describe(ps)}`);
    else if (ps.length === 0) ctx.add(['spec', 'ports'], 'a service needs at least one port');
    else {
      const seen = new Map<string, number>();
      ps.forEach((pt, i) => {
        const p: PathSeg[] = ['spec', 'ports', i];
        const o = checkObject(ctx, p, pt, ['name', 'port', 'targetPort', 'protocol'], { required: true });
        if (!o) return;
        const port = checkPort(ctx, [...p, 'port'], o.port, true);
        let targetPort: number | undefined;
        if (typeof o.targetPort === 'string') ctx.add([...p, 'targetPort'], `named target ports (${quote(o.targetPort)}) are not supported; use a number`);
        else targetPort = checkPort(ctx, [...p, 'targetPort'], o.targetPort, false);
        const name = o.name === undefined ? undefined : checkLabelName(ctx, [...p, 'name'], o.name);
        const protocol = o.protocol === undefined ? undefined : checkString(ctx, [...p, 'protocol'], o.protocol, { oneOf: ['TCP', 'UDP'] });
        if (port === undefined) return;
        const key = `${port}/${protocol ?? 'TCP'}`;
        if (seen.has(key)) ctx.add([...p, 'port'], `duplicate port ${key} (also spec.ports[${seen.get(key)}])`);
        seen.set(key, i);
        if (ps.length > 1 && name === undefined) ctx.add(p, 'ports must be named when a service has more than one');
        const sp: ServicePort = { port };
        if (name) sp.name = name;
        if (targetPort !== undefined) sp.targetPort = targetPort;
        if (protocol) sp.protocol = protocol as 'TCP' | 'UDP';
        ports.push(sp);
      });
    }
  }
  checkObject(ctx, ['status'], raw.status, [], { tolerated: ['loadBalancer'] });
  if (ctx.problems.length !== before) return undefined;
  const r: ServiceResource = { apiVersion: 'v1', kind: 'Service', metadata: meta as ObjectMeta & { namespace: string }, spec: { ports } };
  if (selector && Object.keys(selector).length) r.spec.selector = selector;
  if (clusterIP) r.spec.clusterIP = clusterIP;
  return r;
}

export function validateLabConfig(ctx: DocContext, raw: Record<string, Json>, meta: ObjectMeta): LabConfigResource | undefined {
  const before = ctx.problems.length;
  checkObject(ctx, [], raw, ['apiVersion', 'kind', 'metadata', 'spec']);
  const spec = checkObject(ctx, ['spec'], raw.spec, ['nodeNetwork', 'serviceCIDR', 'clusterDomain', 'trustDomain', 'workloadCertTTL']) ?? {};
  const nodeNetwork = checkCidr(ctx, ['spec', 'nodeNetwork'], spec.nodeNetwork, false, { maxPrefix: 29 });
  const serviceCIDR = checkCidr(ctx, ['spec', 'serviceCIDR'], spec.serviceCIDR, false, { maxPrefix: 28 });
  const clusterDomain = spec.clusterDomain === undefined ? undefined : checkSubdomainName(ctx, ['spec', 'clusterDomain'], spec.clusterDomain);
  const trustDomain = spec.trustDomain === undefined ? undefined : checkSubdomainName(ctx, ['spec', 'trustDomain'], spec.trustDomain);
  let workloadCertTTL: string | undefined;
  if (spec.workloadCertTTL !== undefined) {
    workloadCertTTL = checkString(ctx, ['spec', 'workloadCertTTL'], spec.workloadCertTTL, { required: true });
    const why = workloadCertTTL === undefined ? undefined : durationProblem(workloadCertTTL);
    if (why) ctx.add(['spec', 'workloadCertTTL'], why);
  }
  if (ctx.problems.length !== before) return undefined;
  const r: LabConfigResource = { apiVersion: 'weft.io/v1alpha1', kind: 'LabConfig', metadata: meta, spec: {} };
  if (nodeNetwork) r.spec.nodeNetwork = nodeNetwork;
  if (serviceCIDR) r.spec.serviceCIDR = serviceCIDR;
  if (clusterDomain) r.spec.clusterDomain = clusterDomain;
  if (trustDomain) r.spec.trustDomain = trustDomain;
  if (workloadCertTTL) r.spec.workloadCertTTL = workloadCertTTL;
  return r;
}
