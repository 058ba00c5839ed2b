// Mutual TLS for the node's Observer API, as Hubble secures the link from its relay to the agents:
// the agent serves on its node address with a certificate from the mesh CA (URI SAN
// spiffe://<td>/weft/node/<node>, serverAuth) and requires a client certificate from the same CA
// whose identity is on an allow-list (by default the relay's, spiffe://<td>/weft/relay); the relay
// verifies that the node it dialled holds that node's identity. Plaintext stays on loopback only.
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { createSecureContext } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { ErrorCodes, WeftError, errorMessage } from '../errors.js';
import { isValidTrustDomain, nodeSpiffeUri, uriSansOf } from '../identity/spiffe.js';

export const OBSERVER_CERT_FILE = 'observer-cert.pem';
export const OBSERVER_KEY_FILE = 'observer-key.pem';
export const RELAY_CERT_FILE = 'relay-cert.pem';
export const RELAY_KEY_FILE = 'relay-key.pem';
export const ROOT_CERT_FILE = 'root-cert.pem';
/** Observer credentials live as long as node credentials (a year); rotation is by re-issuing. */
export const DEFAULT_OBSERVER_CREDENTIAL_TTL_SECONDS = 365 * 86_400;
/** SNI sent to a node (TLS forbids an IP there; the identity check does not use it). */
const OBSERVER_SNI = 'observer.weft';

export interface TlsCredential {
  /** The mesh root(s) peers must chain to. */
  rootCertPem: string;
  certPem: string;
  keyPem: string;
}

/** The agent's side: its serving credential, and who may read. */
export interface ObserverServerTls extends TlsCredential {
  /** SPIFFE IDs (URI SANs) a client certificate must carry one of. */
  allowedIdentities: readonly string[];
}

/** A reader's side (the relay, or `weft observe`): its client credential, and the node it expects. */
export interface ObserverClientTls extends TlsCredential {
  /** The URI SAN the server's certificate must carry, e.g. spiffe://<td>/weft/node/<node>. */
  serverIdentity: string;
}

function tlsError(message: string, cause?: unknown): WeftError {
  return new WeftError(ErrorCodes.TLS, message, cause === undefined ? undefined : { cause });
}

/** The relay's identity toward the nodes' Observer APIs. */
export function relaySpiffeUri(trustDomain: string): string {
  if (!isValidTrustDomain(trustDomain)) throw tlsError(`invalid trust domain ${JSON.stringify(trustDomain)}`);
  return `spiffe://${trustDomain}/weft/relay`;
}

/** The identity a node's Observer API serves with. */
export function nodeObserverIdentity(trustDomain: string, node: string): string {
  try {
    return nodeSpiffeUri(trustDomain, node);
  } catch (err) {
    throw tlsError(errorMessage(err), err);
  }
}

/** The trust domain of a certificate issued by the mesh CA (its first spiffe:// URI SAN). */
export function trustDomainOfCert(certPem: string): string {
  let uris: string[];
  try {
    uris = uriSansOf(new X509Certificate(certPem));
  } catch (err) {
    throw tlsError(`cannot read the certificate: ${errorMessage(err)}`, err);
  }
  for (const u of uris) {
    const m = /^spiffe:\/\/([^/]+)(\/|$)/.exec(u);
    if (m && isValidTrustDomain(m[1]!)) return m[1]!;
  }
  throw tlsError(`the certificate carries no SPIFFE ID (URI SANs: ${uris.join(', ') || 'none'})`);
}

/** Reads and checks a credential (PEM files): the key must match the certificate. */
export function loadTlsCredential(files: { rootFile: string; certFile: string; keyFile: string }): TlsCredential {
  const read = (path: string, what: string): string => {
    try {
      return readFileSync(path, 'utf8');
    } catch (err) {
      throw tlsError(`cannot read the ${what} ${path}: ${errorMessage(err)}`, err);
    }
  };
  const cred = { rootCertPem: read(files.rootFile, 'root certificate'), certPem: read(files.certFile, 'certificate'), keyPem: read(files.keyFile, 'key') };
  try {
    createSecureContext({ ca: cred.rootCertPem, cert: cred.certPem, key: cred.keyPem });
  } catch (err) {
    throw tlsError(`${files.certFile} / ${files.keyFile}: ${errorMessage(err)}`, err);
  }
  return cred;
}

/**
 * TLS server credentials that require a client certificate chaining to the root, and whose serving
 * credential can be replaced while the listener runs (a renewed certificate). grpc-js binds a server
 * per credential object and watches it: a new SecureContext goes to Node's setSecureContext, so new
 * handshakes get the new certificate while open connections keep theirs. Until the first credential
 * is set, grpc-js drops every connection (no handshake with nothing to serve).
 */
export class ObserverServingCredentials extends grpc.ServerCredentials {
  private currentCred: TlsCredential | undefined;

  constructor(initial?: TlsCredential) {
    // As createSsl(root, pair, true): the client certificate is required and verified against the root.
    super({ requestCert: true, rejectUnauthorized: true }, initial ? ObserverServingCredentials.contextOptions(initial) : undefined);
    this.currentCred = initial;
  }

  private static contextOptions(cred: TlsCredential): { ca: string; cert: string; key: string } {
    const options = { ca: cred.rootCertPem, cert: cred.certPem, key: cred.keyPem };
    try {
      createSecureContext(options);
    } catch (err) {
      throw tlsError(`unusable Observer serving credential: ${errorMessage(err)}`, err);
    }
    return options;
  }

  /** The credential served to new connections, if any yet. */
  get current(): TlsCredential | undefined {
    return this.currentCred;
  }

  /** Serves `cred` to every new connection from now on; a credential Node's TLS refuses throws and changes nothing. */
  update(cred: TlsCredential): void {
    const options = ObserverServingCredentials.contextOptions(cred);
    this.currentCred = cred;
    this.updateSecureContextOptions(options);
  }

  _equals(other: grpc.ServerCredentials): boolean {
    return other === this;
  }
}

/** TLS server credentials that require a client certificate chaining to the root. */
export function observerServerCredentials(tls: ObserverServerTls): ObserverServingCredentials {
  if (tls.allowedIdentities.length === 0) throw tlsError('the Observer TLS allow-list is empty: no client could read');
  return new ObserverServingCredentials(tls);
}

/**
 * Whether the caller of a TLS call may read: its (already chain-verified) certificate must carry an
 * allowed SPIFFE ID. Returns the status to refuse the call with, or undefined.
 */
export function refusePeer(
  auth: { sslPeerCertificate?: { raw?: Buffer } } | undefined,
  allowed: readonly string[],
): { code: grpc.status; details: string } | undefined {
  const raw = auth?.sslPeerCertificate?.raw;
  if (!raw) return { code: grpc.status.UNAUTHENTICATED, details: 'a client certificate from the mesh CA is required' };
  let uris: string[];
  try {
    uris = uriSansOf(raw);
  } catch (err) {
    return { code: grpc.status.UNAUTHENTICATED, details: `unreadable client certificate: ${errorMessage(err)}` };
  }
  if (uris.some((u) => allowed.includes(u))) return undefined;
  return { code: grpc.status.PERMISSION_DENIED, details: `${uris.join(', ') || 'a certificate without a SPIFFE ID'} may not read flows (allowed: ${allowed.join(', ')})` };
}

/** Channel credentials and options to dial a TLS Observer API: our client certificate, and the server's identity checked. */
export function observerChannelCredentials(tls: ObserverClientTls, address: string): { credentials: grpc.ChannelCredentials; options: grpc.ChannelOptions } {
  const credentials = grpc.credentials.createSsl(Buffer.from(tls.rootCertPem), Buffer.from(tls.keyPem), Buffer.from(tls.certPem), {
    checkServerIdentity: (_servername, cert) => {
      let uris: string[];
      try {
        uris = cert.raw ? uriSansOf(cert.raw) : [];
      } catch (err) {
        return tlsError(`unreadable server certificate at ${address}: ${errorMessage(err)}`, err);
      }
      return uris.includes(tls.serverIdentity) ? undefined : tlsError(`the server at ${address} is ${uris.join(', ') || 'no SPIFFE ID'}, not ${tls.serverIdentity}`);
    },
  });
  const host = /^\[(.+)\]:\d+$/.exec(address)?.[1] ?? address.replace(/:\d+$/, '');
  return { credentials, options: isIP(host) ? { 'grpc.ssl_target_name_override': OBSERVER_SNI } : {} };
}

/** A credential's files, as the controller's CA writes them (agent/controller's writeObserverCredentials, writeRelayCredentials). */
export interface CredentialFiles {
  certFile: string;
  keyFile: string;
  rootFile: string;
}
