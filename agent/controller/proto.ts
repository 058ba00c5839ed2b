// The controller's two gRPC services, loaded from proto/ with @grpc/proto-loader (no generated code),
// and the TypeScript shapes of their messages as proto-loader decodes them (keepCase, longs as numbers).
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { MethodDefinition, ServiceDefinition } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { protoDir } from '../system/assets.js';

export const DISCOVERY_SERVICE = 'weft.discovery.v1.Discovery';
export const CERTIFICATE_SERVICE = 'istio.v1.auth.IstioCertificateService';

export interface StreamRequest {
  node: string;
}

export interface ProtoResource {
  key: string;
  kind: string;
  json: string;
}

export interface ProtoConfigProblem {
  file: string;
  line: number;
  field: string;
  reason: string;
}

export interface ResourceUpdate {
  version: number;
  snapshot: boolean;
  upserts: ProtoResource[];
  removals: string[];
  problems: ProtoConfigProblem[];
  trust_domain: string;
}

export interface IstioCertificateRequest {
  csr: string;
  validity_duration: number;
  /** google.protobuf.Struct, as proto-loader decodes it (not interpreted by weft). */
  metadata?: unknown;
}

export interface IstioCertificateResponse {
  cert_chain: string[];
}

export interface ControllerProtos {
  discovery: ServiceDefinition;
  certificates: ServiceDefinition;
  stream: MethodDefinition<StreamRequest, ResourceUpdate>;
  createCertificate: MethodDefinition<IstioCertificateRequest, IstioCertificateResponse>;
}

let cached: ControllerProtos | undefined;

/** Loads both proto files once per process. */
export function controllerProtos(): ControllerProtos {
  if (cached) return cached;
  const files = ['weft/discovery/v1/discovery.proto', 'istio/v1/auth/ca.proto'];
  const dir = protoDir();
  for (const f of files) if (!existsSync(join(dir, f))) throw new Error(`${join(dir, f)} is missing`);
  const def = loadSync(files, { includeDirs: [dir], keepCase: true, longs: Number, enums: String, defaults: true, arrays: true });
  const discovery = def[DISCOVERY_SERVICE] as ServiceDefinition;
  const certificates = def[CERTIFICATE_SERVICE] as ServiceDefinition;
  cached = {
    discovery,
    certificates,
    stream: discovery.Stream as MethodDefinition<StreamRequest, ResourceUpdate>,
    createCertificate: certificates.CreateCertificate as MethodDefinition<IstioCertificateRequest, IstioCertificateResponse>,
  };
  return cached;
}
