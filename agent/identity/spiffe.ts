// SPIFFE IDs of workloads (spiffe://<trust-domain>/ns/<ns>/sa/<sa>) and of node agents
// (spiffe://<trust-domain>/weft/node/<node>), and reading them out of X.509 certificates.
import { X509Certificate } from 'node:crypto';
import { ErrorCodes, WeftError } from '../errors.js';

export interface SpiffeId {
  trustDomain: string;
  namespace: string;
  serviceAccount: string;
}

// SPIFFE ID spec: a trust domain is lowercase letters, digits, '.', '-', '_'; path segments add
// uppercase letters. Kubernetes names are stricter still, so these are the only checks we need.
const TRUST_DOMAIN = /^[a-z0-9._-]{1,255}$/;
const SEGMENT = /^[A-Za-z0-9._-]+$/;

function validSegment(s: string): boolean {
  return SEGMENT.test(s) && s !== '.' && s !== '..';
}

function fail(message: string): never {
  throw new WeftError(ErrorCodes.IDENTITY, message);
}

export function isValidTrustDomain(td: string): boolean {
  return TRUST_DOMAIN.test(td);
}

/** Parses `spiffe://<td>/ns/<ns>/sa/<sa>`; anything else is a WEFT_ERR_IDENTITY error saying why. */
export function parseSpiffeId(uri: string): SpiffeId {
  const prefix = 'spiffe://';
  if (!uri.startsWith(prefix)) fail(`not a SPIFFE ID (scheme must be spiffe://): ${JSON.stringify(uri)}`);
  const rest = uri.slice(prefix.length);
  const slash = rest.indexOf('/');
  const trustDomain = slash < 0 ? rest : rest.slice(0, slash);
  if (!isValidTrustDomain(trustDomain)) fail(`SPIFFE ID ${JSON.stringify(uri)} has an invalid trust domain`);
  const parts = slash < 0 ? [] : rest.slice(slash + 1).split('/');
  if (parts.length !== 4 || parts[0] !== 'ns' || parts[2] !== 'sa') {
    fail(`SPIFFE ID ${JSON.stringify(uri)} is not a workload identity (expected /ns/<namespace>/sa/<service-account>)`);
  }
  const [, namespace, , serviceAccount] = parts as [string, string, string, string];
  if (!validSegment(namespace) || !validSegment(serviceAccount)) fail(`SPIFFE ID ${JSON.stringify(uri)} has an invalid path segment`);
  return { trustDomain, namespace, serviceAccount };
}

export function formatSpiffeId(id: SpiffeId): string {
  return `spiffe://${id.trustDomain}/ns/${id.namespace}/sa/${id.serviceAccount}`;
}

/** Istio's principal form, the SPIFFE ID without its scheme: `<td>/ns/<ns>/sa/<sa>`. */
export function principalOf(id: SpiffeId): string {
  return `${id.trustDomain}/ns/${id.namespace}/sa/${id.serviceAccount}`;
}

export function sameSpiffeId(a: SpiffeId, b: SpiffeId): boolean {
  return a.trustDomain === b.trustDomain && a.namespace === b.namespace && a.serviceAccount === b.serviceAccount;
}

/** Checks the parts of a workload identity before it goes into a CSR or a certificate. */
export function validateSpiffeId(id: SpiffeId): SpiffeId {
  return parseSpiffeId(formatSpiffeId(id));
}

/** A node name that can appear in a node SPIFFE ID (one path segment). */
export function isValidNodeName(node: string): boolean {
  return validSegment(node);
}

/** The identity a node agent holds toward the controller: `spiffe://<td>/weft/node/<node>`. */
export function nodeSpiffeUri(trustDomain: string, node: string): string {
  if (!isValidTrustDomain(trustDomain)) fail(`invalid trust domain ${JSON.stringify(trustDomain)}`);
  if (!validSegment(node)) fail(`invalid node name ${JSON.stringify(node)}`);
  return `spiffe://${trustDomain}/weft/node/${node}`;
}

/** The node name in a node agent's SPIFFE ID of the given trust domain, or undefined if it is not one. */
export function parseNodeSpiffeUri(uri: string, trustDomain: string): string | undefined {
  const prefix = `spiffe://${trustDomain}/weft/node/`;
  if (!uri.startsWith(prefix)) return undefined;
  const node = uri.slice(prefix.length);
  return validSegment(node) ? node : undefined;
}

// Node renders subjectAltName as `DNS:a, URI:spiffe://x, IP Address:1.2.3.4`; a value that holds
// a separator or a quote is JSON-quoted. Split on that grammar rather than on bare commas.
function parseSubjectAltName(san: string): Array<{ type: string; value: string }> {
  const out: Array<{ type: string; value: string }> = [];
  const entry = /([A-Za-z][A-Za-z ]*):("(?:[^"\\]|\\.)*"|[^,]*)(?:, |$)/y;
  let m: RegExpExecArray | null;
  while (entry.lastIndex < san.length && (m = entry.exec(san)) !== null) {
    const raw = m[2] ?? '';
    out.push({ type: m[1] ?? '', value: raw.startsWith('"') ? (JSON.parse(raw) as string) : raw });
  }
  return out;
}

function toX509(cert: X509Certificate | string | Buffer): X509Certificate {
  return cert instanceof X509Certificate ? cert : new X509Certificate(cert);
}

/** Every URI SAN of a certificate, in order. */
export function uriSansOf(cert: X509Certificate | string | Buffer): string[] {
  const san = toX509(cert).subjectAltName;
  return san ? parseSubjectAltName(san).filter((e) => e.type === 'URI').map((e) => e.value) : [];
}

/**
 * The workload SPIFFE ID of an X.509-SVID. The SVID spec requires exactly one URI SAN; a certificate
 * with none, with several, or with one that is not a workload SPIFFE ID is a WEFT_ERR_IDENTITY error.
 */
export function spiffeIdOfCert(cert: X509Certificate | string | Buffer): SpiffeId {
  const uris = uriSansOf(cert);
  if (uris.length === 0) fail('certificate has no URI SAN');
  if (uris.length > 1) fail(`certificate has ${uris.length} URI SANs, an SVID has exactly one`);
  return parseSpiffeId(uris[0] as string);
}
