// The controller's Kubernetes source (`weft controller --source kubernetes`): one list + watch informer
// (@kubernetes/client-node's ListWatch) per kind the registry knows — Namespaces, Nodes, Pods,
// Services, EndpointSlices, and the policy and routing kinds — each object decoded (kube-decode.ts)
// and validated by the registry's own parser (parse.ts parseObject), then the whole good state handed
// to the registry (registry.ts replace()), which diffs, versions and streams it to agents exactly as
// it does for `--source dir:PATH`.
//
// Staying current with the API server:
//   - lists are read in pages (`limit` + `continue`); a continue that expired (410) starts the list
//     over in one piece; watches resume from the last resourceVersion seen (event or bookmark: weft
//     asks for bookmarks, so a quiet kind's version still moves and a resumed watch is cheap);
//   - a watch that ends with 410 (an ERROR event whose Status has code 410) is followed by a new list,
//     and what changed meanwhile arrives as adds, updates and deletes against the informer's cache:
//     nothing is dropped from the registry while that happens;
//   - a failed list or watch (API server restarting, network) is retried after a wait that doubles
//     from KubeSourceDefaults.retryInitialMs up to retryMaxMs; a watch the server ends again at once
//     waits the same way before the next; a kind the server does not serve (its CRD is not installed)
//     counts as empty and is retried at the cap;
//   - nothing reaches the registry before every kind has been listed once: agents never see pods
//     without the policies that govern them.
//
// A rejected object keeps its last good version in force (the registry holds `good`), is listed with
// the registry's problems, and is reported back to the API (kube-report.ts): a status condition on
// Istio's kinds, an Event on the others.
import { EventEmitter } from 'node:events';
import { hostname } from 'node:os';
import { ListWatch, Watch, type KubeConfig, type KubernetesListObject, type KubernetesObject } from '@kubernetes/client-node';
import { KubeSourceDefaults } from '../config.js';
import { errorMessage, type ConfigProblem } from '../errors.js';
import type { Logger } from '../log.js';
import { kindSpec } from '../registry/kinds.js';
import { parseObject, problemKind } from '../registry/parse.js';
import type { Resource, WithSource } from '../registry/types.js';
import { KUBE_KINDS, apiVersionOf, collectionPath, decodeKubeObject, objectKey, type ApiObject, type KubeKind } from './kube-decode.js';
import { KubeHttp, httpStatusOf } from './kube-http.js';
import { RejectionReporter } from './kube-report.js';
import type { ConfigRegistry } from './registry.js';

export interface KubeSourceOptions {
  kubeConfig: KubeConfig;
  /** Where the source's state goes (a registry without a directory). */
  registry: ConfigRegistry;
  log: Logger;
  /** What to read; default every kind of KUBE_KINDS the registry's kinds table knows. */
  kinds?: readonly KubeKind[];
  /** reportingInstance of weft's Events (default: $POD_NAME, else the host name). */
  instance?: string;
  /** Report rejected objects to the API (status condition or Event); default true. */
  reportRejections?: boolean;
  listPageSize?: number;
  retryInitialMs?: number;
  retryMaxMs?: number;
  watchTimeoutSeconds?: number;
  batchMs?: number;
}

/** One kind's progress, for the controller's status and for tests. */
export interface KindStatus {
  kind: string;
  apiVersion: string;
  /** The last resourceVersion seen (list, event or bookmark). */
  resourceVersion: string;
  listed: boolean;
  /** The API server does not serve the kind (404): counted as empty, retried. */
  missing: boolean;
  /** Failures since the last success. */
  failures: number;
  lists: number;
  watches: number;
  lastError?: string;
}

interface KindState {
  k: KubeKind;
  lw: ListWatch<KubernetesObject>;
  status: KindStatus;
  retry: NodeJS.Timeout | undefined;
  /** When the current watch started, and whether it brought anything (a watch that ends at once, empty, backs off). */
  watchStartedAt: number;
  watchProductive: boolean;
  quickEnds: number;
}

/** The kinds to read: those of KUBE_KINDS whose documents the registry validates. */
export function readableKinds(): KubeKind[] {
  return KUBE_KINDS.filter((k) => {
    const spec = kindSpec(k.kind);
    return spec !== undefined && spec.apiVersions.includes(apiVersionOf(k));
  });
}

/** client-node's Watch, asking for bookmarks and a server-side timeout, telling the source what it sees. */
class SourceWatch extends Watch {
  constructor(
    kc: KubeConfig,
    /** Resolves false when no watch should start (the source was closed meanwhile). */
    private readonly onStart: () => Promise<boolean>,
    private readonly onEvent: (phase: string, obj: unknown) => void,
    private readonly timeoutSeconds: number,
  ) {
    super(kc);
  }

  override async watch(
    path: string,
    queryParams: Record<string, string | number | boolean | undefined>,
    callback: (phase: string, apiObj: unknown, watchObj?: unknown) => void,
    done: (err: unknown) => void,
  ): Promise<AbortController> {
    if (!(await this.onStart())) return new AbortController();
    const timeout = Math.round(this.timeoutSeconds * (1 + Math.random()));
    return super.watch(
      path,
      { ...queryParams, allowWatchBookmarks: true, timeoutSeconds: timeout },
      (phase, obj, raw) => {
        this.onEvent(phase, obj);
        callback(phase, obj, raw);
      },
      done,
    );
  }
}

/**
 * The source. Emits 'progress' (a KindStatus) after every list, every watch event (bookmarks
 * included) and every failure, so a caller can wait for a version instead of polling.
 */
export class KubeSource extends EventEmitter {
  readonly http: KubeHttp;
  readonly reporter: RejectionReporter | undefined;
  private readonly registry: ConfigRegistry;
  private readonly log: Logger;
  private readonly states: KindState[] = [];
  /** Object key → its last good version (what stays in force when a newer one is refused). */
  private readonly good = new Map<string, WithSource<Resource>>();
  /** Object key → the problems of its current version. */
  private readonly problems = new Map<string, ConfigProblem[]>();
  private readonly pageSize: number;
  private readonly retryInitialMs: number;
  private readonly retryMaxMs: number;
  private readonly batchMs: number;
  private batchTimer: NodeJS.Timeout | undefined;
  private syncedOnce = false;
  private closed = false;
  private readonly syncWaiters: Array<() => void> = [];

  private constructor(o: KubeSourceOptions) {
    super();
    this.http = new KubeHttp(o.kubeConfig);
    this.registry = o.registry;
    this.log = o.log.child({ source: 'kubernetes' });
    this.pageSize = o.listPageSize ?? KubeSourceDefaults.listPageSize;
    this.retryInitialMs = o.retryInitialMs ?? KubeSourceDefaults.retryInitialMs;
    this.retryMaxMs = o.retryMaxMs ?? KubeSourceDefaults.retryMaxMs;
    this.batchMs = o.batchMs ?? KubeSourceDefaults.batchMs;
    const instance = o.instance ?? process.env.POD_NAME ?? hostname();
    this.reporter = o.reportRejections === false ? undefined : new RejectionReporter({ http: this.http, log: this.log, instance });
    const watchTimeout = o.watchTimeoutSeconds ?? KubeSourceDefaults.watchTimeoutSeconds;
    for (const k of o.kinds ?? readableKinds()) {
      const status: KindStatus = { kind: k.kind, apiVersion: apiVersionOf(k), resourceVersion: '', listed: false, missing: false, failures: 0, lists: 0, watches: 0 };
      const s = { k, status, retry: undefined, watchStartedAt: 0, watchProductive: false, quickEnds: 0 } as unknown as KindState;
      const watch = new SourceWatch(o.kubeConfig, () => this.beforeWatch(s), (phase, obj) => this.onWatchEvent(s, phase, obj), watchTimeout);
      s.lw = new ListWatch<KubernetesObject>(collectionPath(k), watch, () => this.list(s), false);
      s.lw.on('add', (obj) => this.upsert(s, obj as ApiObject));
      s.lw.on('update', (obj) => this.upsert(s, obj as ApiObject));
      s.lw.on('delete', (obj) => this.remove(s, obj as ApiObject));
      s.lw.on('error', (err) => this.failed(s, err));
      this.states.push(s);
    }
  }

  /**
   * Starts every informer; resolves once each kind has been listed (or found missing) and the registry
   * holds the first state. Keeps retrying meanwhile (an API server that is not up yet is waited for).
   */
  static async start(o: KubeSourceOptions): Promise<KubeSource> {
    const source = new KubeSource(o);
    source.log.info({ server: source.http.server, kinds: source.states.map((s) => s.k.kind) }, 'reading the Kubernetes API');
    for (const s of source.states) source.run(s);
    await source.synced();
    return source;
  }

  /** Resolves once every kind has been listed once and the registry was filled. */
  synced(): Promise<void> {
    if (this.syncedOnce) return Promise.resolve();
    return new Promise((resolve) => this.syncWaiters.push(resolve));
  }

  /** Each kind's progress. */
  status(): KindStatus[] {
    return this.states.map((s) => ({ ...s.status }));
  }

  /** The last resourceVersion seen of `kind` ('' before its first list). */
  resourceVersion(kind: string): string {
    return this.states.find((s) => s.k.kind === kind)?.status.resourceVersion ?? '';
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.batchTimer);
    for (const s of this.states) {
      clearTimeout(s.retry);
      await s.lw.stop();
    }
    await this.reporter?.idle();
  }

  private run(s: KindState): void {
    if (this.closed) return;
    s.lw.start().catch((err: unknown) => this.failed(s, err));
  }

  /** Every page of the kind's list, consistent at the first page's resourceVersion. */
  private async list(s: KindState): Promise<KubernetesListObject<KubernetesObject>> {
    const path = collectionPath(s.k);
    type Page = { metadata?: { resourceVersion?: string; continue?: string }; items?: KubernetesObject[] };
    const items: KubernetesObject[] = [];
    let resourceVersion = '';
    let cont: string | undefined;
    let pages = 0;
    try {
      do {
        const page = await this.http.request<Page>(path, { query: { limit: this.pageSize, continue: cont } });
        if (pages++ === 0) resourceVersion = page.metadata?.resourceVersion ?? '';
        items.push(...(page.items ?? []));
        cont = page.metadata?.continue || undefined;
      } while (cont);
    } catch (err) {
      if (httpStatusOf(err) !== 410 || pages === 0) throw err;
      // The continue token expired between pages: the whole list in one answer, as client-go falls back.
      this.log.info({ kind: s.k.kind, pages }, 'list continue expired (410); listing again in one piece');
      const whole = await this.http.request<Page>(path);
      items.length = 0;
      items.push(...(whole.items ?? []));
      resourceVersion = whole.metadata?.resourceVersion ?? '';
    }
    s.status.lists++;
    s.status.listed = true;
    s.status.missing = false;
    s.status.resourceVersion = resourceVersion;
    this.succeeded(s);
    this.log.debug({ kind: s.k.kind, objects: items.length, pages, resourceVersion }, 'listed');
    this.emit('progress', { ...s.status });
    // The informer hands the items to add/update/delete right after this returns: look again then.
    setImmediate(() => this.checkSynced());
    return { apiVersion: apiVersionOf(s.k), kind: `${s.k.kind}List`, metadata: { resourceVersion }, items };
  }

  private async beforeWatch(s: KindState): Promise<boolean> {
    if (this.closed) return false;
    const now = Date.now();
    // A watch the server ended at once without a single event is a server in trouble: back off.
    if (s.watchStartedAt && !s.watchProductive && now - s.watchStartedAt < this.retryInitialMs) {
      s.quickEnds++;
      await new Promise((resolve) => setTimeout(resolve, this.delay(s.quickEnds)));
    } else s.quickEnds = 0;
    if (this.closed) return false;
    s.watchStartedAt = Date.now();
    s.watchProductive = false;
    s.status.watches++;
    return true;
  }

  private onWatchEvent(s: KindState, phase: string, obj: unknown): void {
    s.watchProductive = true;
    if (phase === 'ERROR') {
      const st = obj as { code?: unknown; message?: unknown } | undefined;
      if (st?.code === 410) this.log.info({ kind: s.k.kind, resourceVersion: s.status.resourceVersion }, 'watch expired (410 Gone): listing again, keeping the current state meanwhile');
      else this.log.warn({ kind: s.k.kind, code: st?.code, message: st?.message }, 'watch error event');
      return;
    }
    const rv = (obj as ApiObject | undefined)?.metadata?.resourceVersion;
    if (rv) s.status.resourceVersion = rv;
    this.succeeded(s);
    // After the informer has handled the event (it runs right after this hook).
    queueMicrotask(() => this.emit('progress', { ...s.status }));
  }

  private succeeded(s: KindState): void {
    s.status.failures = 0;
    delete s.status.lastError;
  }

  private delay(failures: number): number {
    return Math.min(this.retryMaxMs, this.retryInitialMs * 2 ** Math.max(0, failures - 1));
  }

  private failed(s: KindState, err: unknown): void {
    if (this.closed) return;
    const code = httpStatusOf(err);
    s.status.failures++;
    s.status.lastError = errorMessage(err);
    let wait = this.delay(s.status.failures);
    if (code === 404 && !s.status.listed) {
      // The kind is not served (a CRD not installed): no objects of it; look again now and then.
      if (!s.status.missing) this.log.warn({ kind: s.k.kind, apiVersion: apiVersionOf(s.k) }, 'the API server does not serve this kind (is its CRD installed?); reading it as empty');
      s.status.missing = true;
      wait = this.retryMaxMs;
      setImmediate(() => this.checkSynced());
    } else {
      this.log.warn({ kind: s.k.kind, err: s.status.lastError, failures: s.status.failures, retryMs: wait }, 'list or watch failed; retrying, the last state stays in force');
    }
    clearTimeout(s.retry);
    s.retry = setTimeout(() => this.run(s), wait);
    this.emit('progress', { ...s.status });
  }

  private upsert(s: KindState, o: ApiObject): void {
    const key = objectKey(s.k, o);
    const decoded = decodeKubeObject(s.k, o);
    if ('skip' in decoded) {
      this.log.debug({ object: key, why: decoded.skip }, 'not part of the mesh view');
      this.drop(key);
      return;
    }
    const parsed = parseObject(decoded.doc, `kubernetes:${key}`);
    const r = parsed.resources[0];
    if (parsed.problems.length || !r) {
      this.problems.set(key, parsed.problems);
      this.reporter?.rejected(s.k, o, parsed.problems, this.good.has(key));
    } else {
      this.good.set(key, r);
      this.problems.delete(key);
      this.reporter?.accepted(s.k, o);
    }
    this.schedule();
  }

  private remove(s: KindState, o: ApiObject): void {
    const key = objectKey(s.k, o);
    this.reporter?.forget(key);
    this.drop(key);
  }

  private drop(key: string): void {
    const had = this.good.delete(key);
    const hadProblems = this.problems.delete(key);
    if (had || hadProblems) this.schedule();
  }

  private schedule(): void {
    if (!this.syncedOnce || this.batchTimer) return;
    this.batchTimer = setTimeout(() => {
      this.batchTimer = undefined;
      this.publish();
    }, this.batchMs);
  }

  private checkSynced(): void {
    if (this.syncedOnce || this.closed) return;
    if (!this.states.every((s) => s.status.listed || s.status.missing)) return;
    this.syncedOnce = true;
    this.publish();
    this.log.info({ objects: this.good.size, problems: this.problems.size, kinds: this.status().map((k) => `${k.kind}@${k.resourceVersion || '-'}`) }, 'Kubernetes API synced');
    for (const w of this.syncWaiters.splice(0)) w();
  }

  private publish(): void {
    if (this.closed) return;
    const problems: ConfigProblem[] = [];
    const kinds = new Map<ConfigProblem, string>();
    for (const ps of this.problems.values()) {
      for (const p of ps) {
        problems.push(p);
        kinds.set(p, problemKind(p));
      }
    }
    this.registry.replace(this.good, problems, kinds);
  }
}
