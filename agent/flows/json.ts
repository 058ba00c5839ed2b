// Hubble's JSON form of flows, as `hubble observe -o json` and Hubble's flow exporter print it: the
// protobuf JSON mapping (protojson) with the proto's own field names. Fields holding their zero
// value are left out (a message field that is set stays, even empty), enums are names, 64-bit
// integers are decimal strings, Timestamps are RFC 3339 in UTC with 0, 3, 6 or 9 fractional digits,
// wrapper types (BoolValue, Int32Value, …) are bare values, and an Any is
// `{"@type": url, ...fields of the packed message}`. Works from the proto descriptors in
// proto/ (protobufjs), so every field the protos know is covered.
import protobuf from 'protobufjs';
import { flowProtos } from './proto.js';
import type { Flow, GetFlowsResponse } from './types.js';

export type JsonValue = string | number | boolean | null | JsonValue[] | JsonObject;
export interface JsonObject {
  [key: string]: JsonValue;
}

export function flowResponseToJson(resp: GetFlowsResponse): JsonObject {
  return messageToJson('observer.GetFlowsResponse', resp);
}

export function flowToJson(flow: Flow): JsonObject {
  return messageToJson('flow.Flow', flow);
}

/** Any message of the loaded protos, given in proto-loader object form (keepCase). */
export function messageToJson(typeName: string, message: object): JsonObject {
  return convertMessage(flowProtos().root.lookupType(typeName), message as Record<string, unknown>);
}

const LONG_TYPES = new Set(['int64', 'uint64', 'sint64', 'fixed64', 'sfixed64']);
const WRAPPERS = new Set(['BoolValue', 'Int32Value', 'UInt32Value', 'Int64Value', 'UInt64Value', 'StringValue', 'BytesValue', 'FloatValue', 'DoubleValue']);

function convertMessage(type: protobuf.Type, obj: Record<string, unknown>): JsonObject {
  const out: JsonObject = {};
  for (const field of type.fieldsArray) {
    const value = obj[field.name];
    if (value === undefined || value === null) continue;
    // A member of a oneof that is set is present even with its zero value.
    const explicit = field.partOf !== null || field.options?.proto3_optional === true;
    if (field.repeated) {
      if (!Array.isArray(value) || value.length === 0) continue;
      out[field.name] = value.map((v: unknown) => convertValue(field, v));
      continue;
    }
    if (!explicit && isZero(field, value)) continue;
    out[field.name] = convertValue(field, value);
  }
  return out;
}

function isZero(field: protobuf.Field, value: unknown): boolean {
  const rt = field.resolvedType;
  if (rt instanceof protobuf.Type) return false;
  if (rt instanceof protobuf.Enum) return value === 0 || rt.values[String(value)] === 0;
  if (field.type === 'bool') return value === false;
  if (field.type === 'string') return value === '';
  if (field.type === 'bytes') return (value as Uint8Array).length === 0;
  return String(value) === '0';
}

function convertValue(field: protobuf.Field, value: unknown): JsonValue {
  const rt = field.resolvedType;
  if (rt instanceof protobuf.Enum) {
    if (typeof value === 'string') return value;
    return rt.valuesById[Number(value)] ?? Number(value);
  }
  if (rt instanceof protobuf.Type) return convertWellKnownOrMessage(rt, value as Record<string, unknown>);
  return convertScalar(field.type, value);
}

function convertScalar(type: string, value: unknown): JsonValue {
  if (LONG_TYPES.has(type)) return String(value);
  if (type === 'bytes') return Buffer.from(value as Uint8Array).toString('base64');
  if (type === 'double' || type === 'float') {
    const n = Number(value);
    return Number.isFinite(n) ? n : String(n);
  }
  return value as JsonValue;
}

function convertWellKnownOrMessage(type: protobuf.Type, obj: Record<string, unknown>): JsonValue {
  const name = type.fullName; // ".google.protobuf.Timestamp"
  if (name === '.google.protobuf.Timestamp') return timestampToRfc3339(obj);
  if (name === '.google.protobuf.Any') return anyToJson(obj);
  if (name === '.google.protobuf.FieldMask') return ((obj.paths as string[] | undefined) ?? []).join(',');
  if (name.startsWith('.google.protobuf.') && WRAPPERS.has(type.name)) {
    const field = type.fields.value!;
    const value = obj.value ?? (field.type === 'bool' ? false : field.type === 'string' ? '' : 0);
    return convertScalar(field.type, value);
  }
  return convertMessage(type, obj);
}

/** RFC 3339 in UTC, the fraction in groups of 3 digits as protojson writes it. */
export function timestampToRfc3339(ts: { seconds?: unknown; nanos?: unknown }): string {
  const seconds = BigInt(String(ts.seconds ?? 0));
  const nanos = Number(ts.nanos ?? 0);
  const date = new Date(Number(seconds) * 1000).toISOString().slice(0, 19);
  let fraction = '';
  if (nanos !== 0) {
    const digits = String(nanos).padStart(9, '0');
    fraction = `.${nanos % 1_000_000 === 0 ? digits.slice(0, 3) : nanos % 1000 === 0 ? digits.slice(0, 6) : digits}`;
  }
  return `${date}${fraction}Z`;
}

/** `{"@type": url, ...fields}` for a type the protos know; an unknown type keeps its bytes as base64 `value`. */
function anyToJson(obj: Record<string, unknown>): JsonObject {
  const url = String(obj.type_url ?? '');
  const bytes = (obj.value as Uint8Array | undefined) ?? new Uint8Array();
  const typeName = url.slice(url.lastIndexOf('/') + 1);
  const packed = typeName ? flowProtos().root.lookup(typeName) : null;
  if (!(packed instanceof protobuf.Type)) return { '@type': url, value: Buffer.from(bytes).toString('base64') };
  const decoded = packed.toObject(packed.decode(bytes), { longs: String, enums: String, defaults: false, oneofs: true });
  const inner = convertWellKnownOrMessage(packed, decoded);
  // Well-known types inside an Any keep their JSON form under "value".
  if (packed.fullName.startsWith('.google.protobuf.')) return { '@type': url, value: inner };
  return { '@type': url, ...(inner as JsonObject) };
}
