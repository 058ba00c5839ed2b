// Telling users, where they look, that weft refused one of their objects: on Istio's kinds a status
// condition (as istiod keeps its own there), written through the status subresource with a JSON merge
// patch (Istio's CRDs take no strategic merge patch: 415); on every other kind, or when the status
// cannot be written, a Kubernetes Event (events.k8s.io/v1) regarding the object. Both name the field
// and the reason, and say whether the last good version stays in force. A condition turns back to
// True once the object is valid again. Each object's rejection is written once per distinct message,
// so weft's own status write (which the watch brings back as a change) does not write again.
import { randomBytes } from 'node:crypto';
import { KubeSourceDefaults } from '../config.js';
import { errorMessage, type ConfigProblem } from '../errors.js';
import type { Logger } from '../log.js';
import { apiVersionOf, objectKey, objectPath, type ApiObject, type KubeKind } from './kube-decode.js';
import { httpStatusOf, type KubeHttp } from './kube-http.js';

export interface ReporterOptions {
  http: KubeHttp;
  log: Logger;
  /** reportingInstance of the Events: this controller (its pod's name in a cluster). */
  instance: string;
  /** The wall clock, in ms (tests move it). */
  now?: () => number;
}

interface Condition {
  type: string;
  status: 'True' | 'False' | 'Unknown';
  reason?: string;
  message?: string;
  lastTransitionTime?: string;
  observedGeneration?: number;
}

/** metav1.Time: RFC 3339 in whole seconds. */
function rfc3339(ms: number): string {
  return new Date(Math.floor(ms / 1000) * 1000).toISOString().replace('.000Z', 'Z');
}

/**
 * metav1.MicroTime: exactly six fractional digits, or the API server refuses the Event (a JavaScript
 * Date would give three).
 */
export function microTime(ms: number): string {
  const whole = Math.floor(ms);
  const micros = Math.floor((ms - whole) * 1000);
  return new Date(whole).toISOString().replace(/\.(\d{3})Z$/, (_m, milli: string) => `.${milli}${String(micros).padStart(3, '0')}Z`);
}

/** The problems of one object in one line: `field: reason; field: reason`. */
function describeProblems(problems: readonly ConfigProblem[]): string {
  return problems.map((p) => (p.field ? `${p.field}: ${p.reason}` : p.reason)).join('; ');
}

function truncateBytes(s: string, max: number): string {
  if (Buffer.byteLength(s) <= max) return s;
  let out = s.slice(0, max);
  while (Buffer.byteLength(out) > max - 3) out = out.slice(0, -1);
  return `${out}...`;
}

export class RejectionReporter {
  private readonly http: KubeHttp;
  private readonly log: Logger;
  private readonly instance: string;
  private readonly now: () => number;
  /** Object key → the message last written for it (uid-qualified). */
  private readonly written = new Map<string, string>();
  private readonly inFlight = new Set<Promise<void>>();

  constructor(o: ReporterOptions) {
    this.http = o.http;
    this.log = o.log;
    this.instance = o.instance;
    this.now = o.now ?? (() => performance.timeOrigin + performance.now());
  }

  /** `o` was refused for `problems`; `inForce`: an earlier good version of it is still used. */
  rejected(k: KubeKind, o: ApiObject, problems: readonly ConfigProblem[], inForce: boolean): void {
    const key = objectKey(k, o);
    const message = `${describeProblems(problems)} (${inForce ? 'weft keeps the last good version in force' : 'weft does not use this object'})`;
    const mark = `${o.metadata?.uid ?? ''}|${message}`;
    if (this.written.get(key) === mark) return;
    this.track(key, mark, k.statusConditions ? this.condition(k, o, false, message) : this.event(k, o, message));
  }

  /** `o` is valid: a condition weft set to False goes back to True. */
  accepted(k: KubeKind, o: ApiObject): void {
    const key = objectKey(k, o);
    const had = this.written.get(key);
    this.written.delete(key);
    if (!k.statusConditions) return;
    const ours = conditionsOf(o).find((c) => c.type === KubeSourceDefaults.conditionType);
    if (ours?.status !== 'False' && had === undefined) return;
    const mark = `${o.metadata?.uid ?? ''}|accepted`;
    this.track(key, mark, this.condition(k, o, true, 'weft uses this object'));
  }

  /** The object is gone. */
  forget(key: string): void {
    this.written.delete(key);
  }

  /** Resolves when every write started so far has ended (tests). */
  async idle(): Promise<void> {
    while (this.inFlight.size) await Promise.allSettled([...this.inFlight]);
  }

  private track(key: string, mark: string, work: Promise<boolean>): void {
    const p = work
      .then((done) => {
        // Only what reached the API counts as written; a failed write is tried again on the next change.
        if (done) this.written.set(key, mark);
      })
      .catch((err: unknown) => this.log.warn({ object: key, err: errorMessage(err) }, 'cannot report on a Kubernetes object'))
      .finally(() => this.inFlight.delete(p));
    this.inFlight.add(p);
  }

  /** Writes weft's condition through the status subresource; falls back to an Event when that is refused. */
  private async condition(k: KubeKind, o: ApiObject, accepted: boolean, message: string): Promise<boolean> {
    const name = o.metadata?.name ?? '';
    const namespace = o.metadata?.namespace;
    const others = conditionsOf(o).filter((c) => c.type !== KubeSourceDefaults.conditionType);
    const previous = conditionsOf(o).find((c) => c.type === KubeSourceDefaults.conditionType);
    const status = accepted ? 'True' : 'False';
    if (previous?.status === status && previous.message === message) return true;
    const ours: Condition = {
      type: KubeSourceDefaults.conditionType,
      status,
      reason: accepted ? 'Accepted' : 'Invalid',
      message,
      lastTransitionTime: previous?.status === status && previous.lastTransitionTime ? previous.lastTransitionTime : rfc3339(this.now()),
    };
    if (typeof o.metadata?.generation === 'number') ours.observedGeneration = o.metadata.generation;
    // The whole list goes back (a merge patch replaces arrays), others' conditions as they were; the
    // resourceVersion makes it fail rather than overwrite a condition written meanwhile.
    const patch = { metadata: { resourceVersion: o.metadata?.resourceVersion }, status: { conditions: [...others, ours] } };
    try {
      await this.http.request(objectPath(k, namespace, name, 'status'), {
        method: 'PATCH',
        contentType: 'application/merge-patch+json',
        query: { fieldManager: KubeSourceDefaults.fieldManager },
        body: patch,
      });
      this.log.info({ object: objectKey(k, o), condition: ours.type, status, message }, accepted ? 'status condition: accepted' : 'status condition: rejected');
      return true;
    } catch (err) {
      const code = httpStatusOf(err);
      // 409: the object changed meanwhile; its next version comes back through the watch.
      if (code === 409) return false;
      this.log.warn({ object: objectKey(k, o), err: errorMessage(err) }, 'cannot write the status condition; reporting with an Event');
      return accepted ? false : this.event(k, o, message);
    }
  }

  private async event(k: KubeKind, o: ApiObject, message: string): Promise<boolean> {
    const name = o.metadata?.name ?? '';
    const objNamespace = k.namespaced ? o.metadata?.namespace : undefined;
    // Events about cluster-scoped objects live in `default`, as the API server's own do.
    const namespace = objNamespace ?? 'default';
    const regarding: Record<string, unknown> = { apiVersion: apiVersionOf(k), kind: k.kind, name };
    if (objNamespace) regarding.namespace = objNamespace;
    if (o.metadata?.uid) regarding.uid = o.metadata.uid;
    if (o.metadata?.resourceVersion) regarding.resourceVersion = o.metadata.resourceVersion;
    const event = {
      apiVersion: 'events.k8s.io/v1',
      kind: 'Event',
      metadata: { name: `${name.slice(0, 200)}.${randomBytes(8).toString('hex')}`, namespace },
      eventTime: microTime(this.now()),
      reportingController: KubeSourceDefaults.reportingController,
      reportingInstance: this.instance.slice(0, 128),
      action: 'Validate',
      reason: 'Rejected',
      type: 'Warning',
      note: truncateBytes(message, KubeSourceDefaults.maxEventNoteBytes),
      regarding,
    };
    await this.http.request(`/apis/events.k8s.io/v1/namespaces/${encodeURIComponent(namespace)}/events`, { method: 'POST', body: event });
    this.log.info({ object: objectKey(k, o), event: event.metadata.name, message }, 'event: rejected');
    return true;
  }
}

function conditionsOf(o: ApiObject): Condition[] {
  const status = o.status as { conditions?: unknown } | undefined;
  return Array.isArray(status?.conditions) ? (status.conditions.filter((c) => typeof c === 'object' && c !== null) as Condition[]) : [];
}
