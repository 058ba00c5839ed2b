// The base of every resource type: object metadata and where a document came from. The kind
// modules build on it (policy-types.ts, then types.ts, which gathers every kind); it imports
// nothing, so the resource types form a line, not a circle.

export interface ObjectMeta {
  name: string;
  namespace?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  /** The API server's identity of the object (kept from the Kubernetes source: a token bound to a pod names its uid). */
  uid?: string;
}

/** Where a document came from, so every error can name file and line. */
export interface SourceRef {
  file: string;
  line: number;
}

export type WithSource<T> = T & { source: SourceRef };
