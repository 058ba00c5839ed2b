// Parsing and strict validation of Kubernetes-style YAML documents. Every problem names file, line,
// field path (`spec.containers[0].command`) and reason; nothing is thrown per document — callers collect
// every problem of every file and throw one ConfigError (see load.ts).
import { LineCounter, parseAllDocuments, isMap, isSeq, isScalar, type Document, type Node as YamlNode, type YAMLError } from 'yaml';
import type { ConfigProblem } from '../errors.js';
import type {
  Container,
  ContainerPort,
  LabConfigResource,
  NamespaceResource,
  NodeResource,
  ObjectMeta,
  PodResource,
  Resource,
  ServicePort,
  ServiceResource,
  WithSource,
} from './types.js';
import { parseCidr, parseIPv4 } from './cidr.js';
import { durationProblem } from './duration.js';
import { quote, safeName } from './quote.js';

export { quote } from './quote.js';

export type PathSeg = string | number;

export function formatPath(path: readonly PathSeg[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else {
      const s = safeName(seg);
      out += out ? `.${s}` : s;
    }
  }
  return out;
}

/** One YAML document being validated: knows how to turn a field path into the line of its node. */
export class DocContext {
  constructor(
    readonly file: string,
    readonly doc: Document.Parsed,
    private readonly lc: LineCounter,
    readonly problems: ConfigProblem[],
  ) {}

  /** Line (1-based) of the document's first content node. */
  get startLine(): number {
    const c = this.doc.contents;
    const off = c?.range?.[0] ?? this.doc.range?.[0] ?? 0;
    return this.lc.linePos(off).line;
  }

  /**
   * The line of the node at `path`; with `atKey`, the line of its key. A path that does not exist
   * resolves to its deepest existing ancestor (e.g. a missing required field → the parent's key line).
   */
  line(path: readonly PathSeg[], atKey = false): number {
    let node: unknown = this.doc.contents;
    let best: number | undefined = (node as YamlNode | null)?.range?.[0];
    for (let i = 0; i < path.length; i++) {
      const seg = path[i]!;
      const last = i === path.length - 1;
      if (isMap(node) && typeof seg === 'string') {
        const pair = node.items.find((p) => (isScalar(p.key) ? String(p.key.value) : p.key) === seg);
        if (!pair) break;
        const keyOff = (pair.key as YamlNode | null)?.range?.[0];
        const valOff = (pair.value as YamlNode | null)?.range?.[0];
        if (last && atKey) {
          best = keyOff ?? best;
        } else {
          best = valOff ?? keyOff ?? best;
        }
        // For a flow value starting on the key's line, the key line is what an editor shows; same line.
        node = pair.value;
      } else if (isSeq(node) && typeof seg === 'number') {
        const item = node.items[seg] as YamlNode | undefined;
        if (!item) break;
        best = item.range?.[0] ?? best;
        node = item;
      } else {
        break;
      }
    }
    return this.lc.linePos(best ?? 0).line;
  }

  add(path: readonly PathSeg[], reason: string, atKey = false): void {
    this.problems.push({ file: this.file, line: this.line(path, atKey), field: formatPath(path), reason });
  }
}

// ---------------------------------------------------------------------------------------------
// Small typed checkers. Each returns the value when valid, else records a problem and returns undefined.

type Json = unknown;

/**
 * A YAML mapping as toJS() returns it. Other objects a tag can produce (`!!binary` → Buffer,
 * `!!timestamp` → Date, `!!set` → Set, `!!omap` → Map) are not mappings of fields.
 */
export function isPlainObject(v: Json): v is Record<string, Json> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const proto: unknown = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

export function checkObject(
  ctx: DocContext,
  path: PathSeg[],
  v: Json,
  allowed: readonly string[],
  opts: { required?: boolean; tolerated?: readonly string[] } = {},
): Record<string, Json> | undefined {
  if (v === undefined || v === null) {
    if (opts.required) ctx.add(path, 'required field is missing');
    return undefined;
  }
  if (!isPlainObject(v)) {
    ctx.add(path, `must be a mapping, got ${describe(v)}`);
    return undefined;
  }
  for (const k of Object.keys(v)) {
    if (!allowed.includes(k) && !opts.tolerated?.includes(k)) {
      ctx.add([...path, k], `unknown field ${quote(k)} (allowed: ${allowed.join(', ')})`, true);
    }
  }
  return v;
}

export function describe(v: Json): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a sequence';
  if (v instanceof Uint8Array) return 'binary data (!!binary)';
  if (v instanceof Date) return 'a timestamp (!!timestamp)';
  if (v instanceof Set) return 'a set (!!set)';
  if (v instanceof Map) return 'an ordered mapping (!!omap or !!pairs)';
  if (typeof v === 'object') return 'a mapping';
  if (typeof v === 'string') return `the string ${quote(v)}`;
  if (typeof v === 'function' || typeof v === 'symbol') return typeof v;
  return `${typeof v} ${String(v)}`;
}

export function checkString(
  ctx: DocContext,
  path: PathSeg[],
  v: Json,
  opts: { required?: boolean; pattern?: RegExp; patternReason?: string; maxLength?: number; oneOf?: readonly string[] } = {},
): string | undefined {
  if (v === undefined || v === null) {
    if (opts.required) ctx.add(path, 'required field is missing');
    return undefined;
  }
  if (typeof v !== 'string') {
    ctx.add(path, `must be a string, got ${describe(v)}`);
    return undefined;
  }
  if (opts.required && v === '') {
    ctx.add(path, 'must not be empty');
    return undefined;
  }
  if (opts.maxLength !== undefined && v.length > opts.maxLength) {
    ctx.add(path, `${quote(v)} is longer than ${opts.maxLength} characters`);
    return undefined;
  }
  if (opts.oneOf && !opts.oneOf.includes(v)) {
    ctx.add(path, `${quote(v)} is not one of ${opts.oneOf.join(', ')}`);
    return undefined;
  }
  if (opts.pattern && !opts.pattern.test(v)) {
    ctx.add(path, `${quote(v)} ${opts.patternReason ?? `does not match ${opts.pattern}`}`);
    return undefined;
  }
  return v;
}

export function checkPort(ctx: DocContext, path: PathSeg[], v: Json, required: boolean): number | undefined {
  if (v === undefined || v === null) {
    if (required) ctx.add(path, 'required field is missing');
    return undefined;
  }
  if (typeof v !== 'number' || !Number.isInteger(v)) {
    ctx.add(path, `must be an integer port number, got ${describe(v)}`);
    return undefined;
  }
  if (v < 1 || v > 65535) {
    ctx.add(path, `port ${v} is outside 1-65535`);
    return undefined;
  }
  return v;
}

export function checkStringArray(ctx: DocContext, path: PathSeg[], v: Json, opts: { required?: boolean; nonEmpty?: boolean } = {}): string[] | undefined {
  if (v === undefined || v === null) {
    if (opts.required) ctx.add(path, 'required field is missing');
    return undefined;
  }
  if (!Array.isArray(v)) {
    ctx.add(path, `must be a sequence of strings, got ${describe(v)}`);
    return undefined;
  }
  if (opts.nonEmpty && v.length === 0) {
    ctx.add(path, 'must not be empty');
    return undefined;
  }
  let ok = true;
  v.forEach((item, i) => {
    if (typeof item !== 'string') {
      ctx.add([...path, i], `must be a string, got ${describe(item)}`);
      ok = false;
    }
  });
  return ok ? (v as string[]) : undefined;
}

/** A CIDR; with `size`, one with a prefix no longer than `maxPrefix` (`forWhat`: "pods" → "too small for pods"). */
export function checkCidr(ctx: DocContext, path: PathSeg[], v: Json, required: boolean, size?: { maxPrefix: number; forWhat?: string }): string | undefined {
  const s = checkString(ctx, path, v, { required });
  if (s === undefined) return undefined;
  const c = parseCidr(s);
  if (typeof c === 'string') {
    ctx.add(path, c);
    return undefined;
  }
  // Reported, but the value is still returned: the caller decides from the problem count.
  if (size && c.prefix > size.maxPrefix) ctx.add(path, `${c.text} is too small${size.forWhat ? ` for ${size.forWhat}` : ''} (prefix must be /${size.maxPrefix} or shorter)`);
  return c.text;
}

export function checkIPv4(ctx: DocContext, path: PathSeg[], v: Json, required: boolean): string | undefined {
  const s = checkString(ctx, path, v, { required });
  if (s === undefined) return undefined;
  if (parseIPv4(s) === undefined) {
    ctx.add(path, `${quote(s)} is not an IPv4 address`);
    return undefined;
  }
  return s;
}

export const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
export const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL_NAME = /^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
const ENV_NAME = /^[-._a-zA-Z][-._a-zA-Z0-9]*$/;

export function checkLabelName(ctx: DocContext, path: PathSeg[], v: Json): string | undefined {
  return checkString(ctx, path, v, {
    required: true,
    maxLength: 63,
    pattern: DNS1123_LABEL,
    patternReason: 'is not a valid name (DNS-1123 label: lower-case letters, digits and "-", starting and ending alphanumeric)',
  });
}

export function checkSubdomainName(ctx: DocContext, path: PathSeg[], v: Json, required = true): string | undefined {
  return checkString(ctx, path, v, {
    required,
    maxLength: 253,
    pattern: DNS1123_SUBDOMAIN,
    patternReason: 'is not a valid name (DNS-1123 subdomain: lower-case letters, digits, "-" and ".")',
  });
}

/** A Kubernetes qualified name (`prefix/name`): what label and annotation keys must be. */
function checkLabelKey(ctx: DocContext, path: PathSeg[], key: string, what: 'label' | 'annotation'): boolean {
  const slash = key.indexOf('/');
  const prefix = slash >= 0 ? key.slice(0, slash) : undefined;
  const name = slash >= 0 ? key.slice(slash + 1) : key;
  if (prefix !== undefined && (prefix.length > 253 || !DNS1123_SUBDOMAIN.test(prefix))) {
    ctx.add(path, `key ${quote(key)} has an invalid prefix (must be a DNS-1123 subdomain)`, true);
    return false;
  }
  if (name.length === 0 || name.length > 63 || !LABEL_NAME.test(name)) {
    ctx.add(path, `key ${quote(key)} is not a valid ${what} key`, true);
    return false;
  }
  return true;
}

export function checkStringMap(
  ctx: DocContext,
  path: PathSeg[],
  v: Json,
  kind: 'labels' | 'annotations' | 'selector',
): Record<string, string> | undefined {
  if (v === undefined || v === null) return undefined;
  if (!isPlainObject(v)) {
    ctx.add(path, `must be a mapping of strings, got ${describe(v)}`);
    return undefined;
  }
  const out: Record<string, string> = {};
  for (const [k, val] of Object.entries(v)) {
    const p = [...path, k];
    if (typeof val !== 'string') {
      ctx.add(p, `value must be a string, got ${describe(val)} (quote it)`);
      continue;
    }
    // Annotation keys follow the label key rules too (as the API server checks them); values are free.
    if (!checkLabelKey(ctx, p, k, kind === 'annotations' ? 'annotation' : 'label')) continue;
    if (kind !== 'annotations') {
      if (val.length > 63 || !LABEL_VALUE.test(val)) {
        ctx.add(p, `${quote(val)} is not a valid label value`);
        continue;
      }
    }
    out[k] = val;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Kinds

export interface KindSpec {
  apiVersions: readonly string[];
  namespaced: boolean;
  /** Validates the whole document; returns the normalised resource, or undefined if it had problems. */
  validate(ctx: DocContext, raw: Record<string, Json>, meta: ObjectMeta): unknown;
}

const kinds = new Map<string, KindSpec>();

/** Other components (policies, routes) register their kinds here so one loader reads them all. */
export function registerKind(kind: string, spec: KindSpec): void {
  kinds.set(kind, spec);
}

export function knownKinds(): string[] {
  return [...kinds.keys()].sort();
}

function checkMetadata(ctx: DocContext, raw: Json, spec: KindSpec, kind: string): ObjectMeta | undefined {
  const before = ctx.problems.length;
  const m = checkObject(ctx, ['metadata'], raw, ['name', 'namespace', 'labels', 'annotations'], {
    required: true,
    tolerated: ['uid', 'resourceVersion', 'generation', 'creationTimestamp'],
  });
  if (!m) return undefined;
  const name =
    kind === 'Pod' ? checkSubdomainName(ctx, ['metadata', 'name'], m.name) : checkLabelName(ctx, ['metadata', 'name'], m.name);
  let namespace: string | undefined;
  if (spec.namespaced) {
    namespace = m.namespace === undefined ? 'default' : checkLabelName(ctx, ['metadata', 'namespace'], m.namespace);
  } else if (m.namespace !== undefined) {
    ctx.add(['metadata', 'namespace'], `${kind} is not namespaced`, true);
  }
  const labels = checkStringMap(ctx, ['metadata', 'labels'], m.labels, 'labels');
  const annotations = checkStringMap(ctx, ['metadata', 'annotations'], m.annotations, 'annotations');
  if (ctx.problems.length !== before || name === undefined) return undefined;
  const meta: ObjectMeta = { name };
  if (namespace !== undefined) meta.namespace = namespace;
  if (labels && Object.keys(labels).length) meta.labels = labels;
  if (annotations && Object.keys(annotations).length) meta.annotations = annotations;
  return meta;
}

const TOP = ['apiVersion', 'kind', 'metadata', 'spec', 'status'];

registerKind('Node', {
  apiVersions: ['weft.io/v1alpha1'],
  namespaced: false,
  validate(ctx, raw, meta): NodeResource | undefined {
    const before = ctx.problems.length;
    checkObject(ctx, [], raw, TOP);
    const spec = checkObject(ctx, ['spec'], raw.spec, ['podCIDR'], { required: true });
    const podCIDR = spec ? checkCidr(ctx, ['spec', 'podCIDR'], spec.podCIDR, true, { maxPrefix: 30, forWhat: 'pods' }) : undefined;
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
    if (ctx.problems.length !== before || !podCIDR) return undefined;
    const r: NodeResource = { apiVersion: 'weft.io/v1alpha1', kind: 'Node', metadata: meta, spec: { podCIDR } };
    if (addresses) r.status = { addresses };
    return r;
  },
});

registerKind('Namespace', {
  apiVersions: ['v1'],
  namespaced: false,
  validate(ctx, raw, meta): NamespaceResource | undefined {
    const before = ctx.problems.length;
    checkObject(ctx, [], raw, TOP);
    checkObject(ctx, ['spec'], raw.spec, [], { tolerated: ['finalizers'] });
    checkObject(ctx, ['status'], raw.status, [], { tolerated: ['phase'] });
    if (ctx.problems.length !== before) return undefined;
    return { apiVersion: 'v1', kind: 'Namespace', metadata: meta };
  },
});

registerKind('Pod', {
  apiVersions: ['v1'],
  namespaced: true,
  validate(ctx, raw, meta): PodResource | undefined {
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
      nodeName = checkLabelName(ctx, ['spec', 'nodeName'], spec.nodeName);
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
          const command = checkStringArray(ctx, [...p, 'command'], o.command, { required: true, nonEmpty: true });
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
          if (name !== undefined && command !== undefined) {
            const container: Container = { name, command: args ? [...command, ...args] : [...command] };
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
  },
});

registerKind('Service', {
  apiVersions: ['v1'],
  namespaced: true,
  validate(ctx, raw, meta): ServiceResource | undefined {
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
  },
});

registerKind('LabConfig', {
  apiVersions: ['weft.io/v1alpha1'],
  namespaced: false,
  validate(ctx, raw, meta): LabConfigResource | undefined {
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
  },
});

// ---------------------------------------------------------------------------------------------

export interface ParseResult {
  resources: Array<WithSource<Resource>>;
  problems: ConfigProblem[];
}

/**
 * Parses one file's text (multi-document YAML). Syntax errors and validation problems are returned,
 * never thrown. Documents with problems are left out of `resources`.
 */
export function parseDocuments(input: string, file: string): ParseResult {
  let text = input;
  const lc = new LineCounter();
  const problems: ConfigProblem[] = [];
  const resources: Array<WithSource<Resource>> = [];
  if (text.length > MAX_FILE_CHARS) {
    problems.push({ file, line: 1, field: '', reason: `file is ${text.length} characters long; a configuration file may have at most ${MAX_FILE_CHARS}` });
    return { resources, problems };
  }
  const nesting = limitFlowNesting(text);
  for (const p of nesting.problems) problems.push({ file, ...p, field: '' });
  text = nesting.text;
  let list: Document.Parsed[];
  try {
    // logLevel error: the library's own warnings (a collection used as a key...) would otherwise go
    // to process.emitWarning; the ones that matter are reported below as problems.
    const docs = parseAllDocuments(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true, logLevel: 'error' });
    list = Array.isArray(docs) ? docs : [];
  } catch (err) {
    // The parser recurses on nesting: a hostile file can exhaust the stack.
    problems.push({ file, line: 1, field: '', reason: `YAML syntax error: ${yamlReason(err)}` });
    return { resources, problems };
  }
  const errorsOf = errorsByDocument(list);
  const readDocument = (doc: Document.Parsed, errors: readonly YAMLError[]): void => {
    if (errors.length) {
      for (const e of errors) {
        const line = e.linePos?.[0]?.line ?? lc.linePos(e.pos[0]).line;
        problems.push({ file, line, field: '', reason: `YAML syntax error: ${yamlReason(e)}` });
      }
      return;
    }
    // Warnings are what the parser could not honour (an unknown tag such as `!foo` or `!!int abc`,
    // an unknown directive): it would carry on with a guess, so the document is refused instead.
    if (doc.warnings.length) {
      for (const w of doc.warnings) {
        const line = w.linePos?.[0]?.line ?? lc.linePos(w.pos[0]).line;
        problems.push({ file, line, field: '', reason: `YAML: ${yamlReason(w)}` });
      }
      return;
    }
    if (doc.contents === null || (isScalar(doc.contents) && doc.contents.value === null)) return; // empty document
    const ctx = new DocContext(file, doc, lc, problems);
    let raw: Json;
    try {
      raw = doc.toJS({ maxAliasCount: 100 });
    } catch (err) {
      ctx.add([], `cannot read document: ${yamlReason(err)}`);
      return;
    }
    try {
      const r = validateDocument(ctx, raw);
      if (r) resources.push(r);
    } catch (err) {
      // A bug of a validator must refuse one document, not take down the loader (and with it the
      // last good configuration). Tests assert this never happens.
      ctx.add([], `internal error while validating the document: ${yamlReason(err)}`);
    }
  };
  list.forEach((doc, i) => {
    const first = problems.length;
    readDocument(doc, errorsOf[i]!);
    const kind = documentKind(doc);
    for (let j = first; j < problems.length; j++) problemKinds.set(problems[j]!, kind);
  });
  // In file order (the nesting check reports before the documents are read).
  problems.sort((a, b) => a.line - b.line);
  if (problems.length > MAX_PROBLEMS_PER_FILE) {
    const more = problems.length - MAX_PROBLEMS_PER_FILE;
    problems.length = MAX_PROBLEMS_PER_FILE;
    problems.push({ file, line: problems[problems.length - 1]!.line, field: '', reason: `${more} more problems in this file are not listed` });
  }
  return { resources, problems };
}

/**
 * Each document's syntax errors, by where they are. The parser can hand an error that sits in one
 * document to the one before it (a stray `]` at the start of a document goes to the previous
 * document), which would refuse a valid document for its neighbour's mistake.
 */
function errorsByDocument(list: readonly Document.Parsed[]): YAMLError[][] {
  const out = list.map((): YAMLError[] => []);
  for (const [i, doc] of list.entries()) {
    for (const e of doc.errors) {
      const at = e.pos[0];
      let owner = i;
      const [start, , end] = doc.range;
      if (at < start || at >= end) {
        // The last document that starts at or before the error; else this one.
        for (let j = list.length - 1; j >= 0; j--) {
          if (list[j]!.range[0] <= at) {
            owner = j;
            break;
          }
        }
      }
      out[owner]!.push(e);
    }
  }
  return out;
}

const problemKinds = new WeakMap<ConfigProblem, string>();

/**
 * The kind of the document a problem of parseDocuments is about (for metrics labels): a registered
 * kind, or 'unknown' (no kind, an unregistered one, a syntax error before it). Never user text, so
 * hostile documents cannot mint label values.
 */
export function problemKind(p: ConfigProblem): string {
  return problemKinds.get(p) ?? 'unknown';
}

function documentKind(doc: Document.Parsed): string {
  const c = doc.contents;
  if (!isMap(c)) return 'unknown';
  const pair = c.items.find((it) => isScalar(it.key) && it.key.value === 'kind');
  const v = pair && isScalar(pair.value) ? pair.value.value : undefined;
  return typeof v === 'string' && kinds.has(v) ? v : 'unknown';
}

/** Largest file parseDocuments reads (characters): far above any real configuration, bounds parse time and memory. */
export const MAX_FILE_CHARS = 4 * 1024 * 1024;
/** Deepest `[`/`{` nesting parseDocuments hands to the YAML parser. */
export const MAX_FLOW_DEPTH = 1000;
/** Problems listed per file; past that one summary line says how many more there were. */
export const MAX_PROBLEMS_PER_FILE = 200;

/**
 * The YAML parser's time grows steeply with flow nesting (`[[[[...`: seconds for a few hundred KB)
 * before it gives up with a stack overflow, so nesting is measured first, by counting brackets, one
 * document at a time (a `---` or `...` line always ends a document, whatever it is in). A document
 * that nests too deeply is blanked out, its lines kept so the other documents keep their line
 * numbers. Brackets inside quoted or block scalars count too: a real document never has a thousand
 * unclosed ones, and the worst outcome is a clear refusal of that document.
 */
function limitFlowNesting(text: string): { text: string; problems: Array<{ line: number; reason: string }> } {
  const problems: Array<{ line: number; reason: string }> = [];
  const blank: Array<[number, number]> = [];
  let depth = 0;
  let line = 1;
  let docStart = 0;
  let tooDeep = false;
  let atLineStart = true;
  const endDocument = (end: number): void => {
    if (tooDeep) blank.push([docStart, end]);
    docStart = end;
    depth = 0;
    tooDeep = false;
  };
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (atLineStart && (c === 45 || c === 46) && isDocumentMarker(text, i)) endDocument(i);
    atLineStart = c === 10;
    if (c === 10) line++;
    else if (tooDeep) continue;
    else if (c === 91 || c === 123) {
      if (++depth > MAX_FLOW_DEPTH) {
        tooDeep = true;
        problems.push({ line, reason: `YAML syntax error: the document nests deeper than ${MAX_FLOW_DEPTH} levels` });
      }
    } else if ((c === 93 || c === 125) && depth > 0) depth--;
  }
  endDocument(text.length);
  if (blank.length === 0) return { text, problems };
  let out = '';
  let from = 0;
  for (const [start, end] of blank) {
    out += text.slice(from, start) + text.slice(start, end).replace(/[^\n]+/g, '');
    from = end;
  }
  return { text: out + text.slice(from), problems };
}

/** `---` or `...` at offset i (the start of a line), followed by a space, a tab, a line break or the end. */
function isDocumentMarker(text: string, i: number): boolean {
  const m = text.charCodeAt(i);
  if (text.charCodeAt(i + 1) !== m || text.charCodeAt(i + 2) !== m) return false;
  const next = text.charCodeAt(i + 3);
  return Number.isNaN(next) || next === 32 || next === 9 || next === 10 || next === 13;
}

/** The first line of a parser error, bounded and printable (it may repeat the user's text). */
function yamlReason(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  // The parser reports its own stack overflow as a syntax error carrying V8's message.
  if (/Maximum call stack size exceeded/.test(msg)) return 'the document nests too deeply';
  const line = firstLine(msg);
  return safeName(line) === line ? line : quote(line);
}

function firstLine(s: string): string {
  const i = s.indexOf('\n');
  return (i < 0 ? s : s.slice(0, i)).trim();
}

function validateDocument(ctx: DocContext, raw: Json): WithSource<Resource> | undefined {
  if (!isPlainObject(raw)) {
    ctx.add([], `a document must be a mapping with apiVersion and kind, got ${describe(raw)}`);
    return undefined;
  }
  const kind = checkString(ctx, ['kind'], raw.kind, { required: true });
  const apiVersion = checkString(ctx, ['apiVersion'], raw.apiVersion, { required: true });
  if (kind === undefined || apiVersion === undefined) return undefined;
  const spec = kinds.get(kind);
  if (!spec) {
    ctx.add(['kind'], `unknown kind ${quote(kind)} (known kinds: ${knownKinds().join(', ')})`);
    return undefined;
  }
  if (!spec.apiVersions.includes(apiVersion)) {
    ctx.add(['apiVersion'], `apiVersion ${quote(apiVersion)} is not valid for kind ${kind} (expected ${spec.apiVersions.join(' or ')})`);
    return undefined;
  }
  const meta = checkMetadata(ctx, raw.metadata, spec, kind);
  const before = ctx.problems.length;
  // Validate the body even if metadata failed, so one run reports every problem.
  const r = spec.validate(ctx, raw, meta ?? { name: '' });
  if (!meta || r === undefined || ctx.problems.length !== before) return undefined;
  const out = Object.assign(r as Resource, { source: { file: ctx.file, line: ctx.startLine } }) as WithSource<Resource>;
  contexts.set(out, ctx);
  return out;
}

const contexts = new WeakMap<object, DocContext>();

/**
 * The line of a field of a parsed resource (for cross-document checks such as "pod on a missing
 * node"), falling back to the document's first line when the resource was not produced by this parser.
 */
export function sourceLine(r: WithSource<Resource>, path: readonly PathSeg[], atKey = false): number {
  const ctx = contexts.get(r);
  return ctx ? ctx.line(path, atKey) : r.source.line;
}

/** A ConfigProblem located at a field of a parsed resource. */
export function problemAt(r: WithSource<Resource>, path: readonly PathSeg[], reason: string, atKey = false): ConfigProblem {
  return { file: r.source.file, line: sourceLine(r, path, atKey), field: formatPath(path), reason };
}

/** `Kind/namespace/name` (or `Kind/name`), the identity used for duplicate detection and apply. */
export function resourceKey(r: Resource): string {
  return r.metadata.namespace !== undefined ? `${r.kind}/${r.metadata.namespace}/${r.metadata.name}` : `${r.kind}/${r.metadata.name}`;
}

/** Removes the `source` added by the loader (for writing resources back out). */
export function stripSource<T extends Resource>(r: WithSource<T> | T): T {
  const { source: _source, ...rest } = r as WithSource<T>;
  void _source;
  return rest as unknown as T;
}
