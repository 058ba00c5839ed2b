// Hubble's Observer API (proto/flow, proto/observer, proto/relay) and weft's ConnectionInfo
// (proto/weft/flow/v1), loaded once per process from the .proto files: @grpc/proto-loader for the
// gRPC service definitions, a protobufjs Root over the same files and include paths for the
// messages weft encodes itself (the ConnectionInfo packed into Flow.extensions, flow logs).
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { existsSync } from 'node:fs';
import { makeClientConstructor, type MethodDefinition, type ServiceClientConstructor, type ServiceDefinition } from '@grpc/grpc-js';
import { loadSync, type PackageDefinition } from '@grpc/proto-loader';
import protobuf from 'protobufjs';
import { protoDir } from '../system/assets.js';
import type {
  AnyMessage,
  ConnectionInfo,
  EmptyRequest,
  Flow,
  GetAgentEventsResponse,
  GetDebugEventsResponse,
  GetEventsRequest,
  GetFlowsRequest,
  GetFlowsResponse,
  GetNamespacesResponse,
  GetNodesResponse,
  ServerStatusResponse,
} from './types.js';

export const OBSERVER_SERVICE = 'observer.Observer';
export const CONNECTION_INFO_TYPE = 'weft.flow.v1.ConnectionInfo';
export const CONNECTION_INFO_TYPE_URL = `type.googleapis.com/${CONNECTION_INFO_TYPE}`;

/** The proto files, relative to protoDir(). observer.proto pulls in flow and relay. */
export const FLOW_PROTO_FILES = ['observer/observer.proto', 'weft/flow/v1/connection_info.proto'] as const;

/** How every message of these protos is turned into JS objects (and back). */
export const FLOW_LOADER_OPTIONS = { keepCase: true, enums: String, longs: String, defaults: false, oneofs: true } as const;

export interface ObserverServiceDefinition extends ServiceDefinition {
  GetFlows: MethodDefinition<GetFlowsRequest, GetFlowsResponse>;
  GetAgentEvents: MethodDefinition<GetEventsRequest, GetAgentEventsResponse>;
  GetDebugEvents: MethodDefinition<GetEventsRequest, GetDebugEventsResponse>;
  GetNodes: MethodDefinition<EmptyRequest, GetNodesResponse>;
  GetNamespaces: MethodDefinition<EmptyRequest, GetNamespacesResponse>;
  ServerStatus: MethodDefinition<EmptyRequest, ServerStatusResponse>;
}

export interface FlowProtos {
  packageDefinition: PackageDefinition;
  /** For `server.addService(observer, impl)`. */
  observer: ObserverServiceDefinition;
  /** For `new ObserverClient(address, credentials)`. */
  ObserverClient: ServiceClientConstructor;
  /** The same protos as protobufjs types, for encoding messages outside gRPC. */
  root: protobuf.Root;
}

/** Directory holding protobufjs' google/protobuf/*.proto (the well-known types). */
function protobufjsIncludeDir(): string {
  const require = createRequire(import.meta.url);
  return dirname(require.resolve('protobufjs/package.json'));
}

let cached: FlowProtos | undefined;

export function flowProtos(): FlowProtos {
  if (cached) return cached;
  const dir = protoDir();
  for (const f of FLOW_PROTO_FILES) if (!existsSync(join(dir, f))) throw new Error(`${join(dir, f)} is missing`);
  const includeDirs = [dir, protobufjsIncludeDir()];
  const packageDefinition = loadSync([...FLOW_PROTO_FILES], { ...FLOW_LOADER_OPTIONS, includeDirs });
  const observer = packageDefinition[OBSERVER_SERVICE] as unknown as ObserverServiceDefinition;

  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => {
    for (const dir of includeDirs) {
      const candidate = join(dir, target);
      if (existsSync(candidate)) return candidate;
    }
    return target;
  };
  root.loadSync([...FLOW_PROTO_FILES], { keepCase: true });
  root.resolveAll();

  cached = { packageDefinition, observer, ObserverClient: makeClientConstructor(observer, OBSERVER_SERVICE), root };
  return cached;
}

const toObjectOptions: protobuf.IConversionOptions = { enums: String, longs: String, defaults: false, oneofs: true };

/** Encodes a Flow to protobuf bytes, exactly as it would travel inside GetFlowsResponse. */
export function encodeFlow(flow: Flow): Uint8Array {
  const type = flowProtos().root.lookupType('flow.Flow');
  return type.encode(type.fromObject(flow as unknown as Record<string, unknown>)).finish();
}

/** Decodes protobuf bytes of a flow.Flow into the proto-loader object form (keepCase, enum names, longs as strings). */
export function decodeFlow(bytes: Uint8Array): Flow {
  const type = flowProtos().root.lookupType('flow.Flow');
  return type.toObject(type.decode(bytes), toObjectOptions) as unknown as Flow;
}

/** Packs weft's ConnectionInfo into a google.protobuf.Any for Flow.extensions. */
export function packConnectionInfo(info: ConnectionInfo): AnyMessage {
  const type = flowProtos().root.lookupType(CONNECTION_INFO_TYPE);
  const problem = type.verify(info as unknown as Record<string, unknown>);
  if (problem) throw new TypeError(`invalid ConnectionInfo: ${problem}`);
  return { type_url: CONNECTION_INFO_TYPE_URL, value: type.encode(type.fromObject(info as unknown as Record<string, unknown>)).finish() };
}

/**
 * The ConnectionInfo in a flow's extensions, or undefined when there is none (or another type).
 * The byte and duration counters come back as numbers, like the producers set them.
 */
export function unpackConnectionInfo(flow: Pick<Flow, 'extensions'>): ConnectionInfo | undefined {
  const ext = flow.extensions;
  if (!ext || ext.type_url !== CONNECTION_INFO_TYPE_URL) return undefined;
  const type = flowProtos().root.lookupType(CONNECTION_INFO_TYPE);
  return type.toObject(type.decode(ext.value), { longs: Number, defaults: false }) as ConnectionInfo;
}
