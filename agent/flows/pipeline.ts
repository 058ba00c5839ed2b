// Where the node's flows go: built once, counted in the metrics, packed with weft's ConnectionInfo,
// kept in the store (which serves the Observer API and its followers), and written to the flow log.
import type { CaptureEvent } from '../datapath/layout.js';
import type { Workload } from '../state/cluster-state.js';
import type { FlowBuilder, ConnectionEvent } from './builder.js';
import type { FlowStore } from './store.js';
import type { AnyMessage, ConnectionInfo, Flow, GetFlowsResponse, LostEventSource } from './types.js';

export interface FlowSinks {
  store: FlowStore;
  pack: (info: ConnectionInfo) => AnyMessage;
  metrics?: {
    recordFlow(flow: Flow, info: ConnectionInfo | undefined, event: 'open' | 'close' | 'deny'): void;
    recordLost(source: LostEventSource, n: number): void;
  };
  log?: { write(resp: GetFlowsResponse): void };
}

export class FlowPipeline {
  constructor(
    private readonly builder: FlowBuilder,
    private readonly sinks: FlowSinks,
  ) {}

  connection(e: ConnectionEvent): void {
    const { flow, info } = this.builder.connection(e);
    this.emit(flow, info, e.verdict === 'DROPPED' ? 'deny' : 'close');
  }

  capture(e: CaptureEvent, podOfCookie: (cookie: bigint) => Workload | undefined): void {
    const built = this.builder.capture(e, podOfCookie);
    if (built) this.emit(built.flow, built.info, e.kind === 'STEERED' ? 'open' : e.kind === 'REFUSED' ? 'deny' : 'close');
  }

  /** Events the kernel could not hand over (its ring was full): reported, never silent. */
  lost(source: LostEventSource, n: number): void {
    this.sinks.store.reportLost(source, n);
    this.sinks.metrics?.recordLost(source, n);
  }

  private emit(flow: Flow, info: ConnectionInfo, event: 'open' | 'close' | 'deny'): void {
    this.sinks.metrics?.recordFlow(flow, info, event);
    if (Object.keys(info).length) flow.extensions = this.sinks.pack(info);
    this.sinks.store.add(flow);
    this.sinks.log?.write({ flow, node_name: flow.node_name, time: flow.time });
  }
}
