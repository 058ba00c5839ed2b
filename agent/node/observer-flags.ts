// The agent's Observer flags → how the Observer API is served: plaintext on 127.0.0.1 always; with
// --observer-tls (or WEFT_OBSERVER_TLS=1) also mutual TLS on the node's address, with the serving
// credential beside the node credential and the relay's identity as the default allow-list. An agent
// that authenticates with a service-account token (--ca-token, on Kubernetes) holds no files from the
// CA: without --observer-cert/--observer-key it asks the controller for the serving certificate and
// renews it while serving.
import { isIP } from 'node:net';
import { dirname, join } from 'node:path';
import { ErrorCodes, WeftError } from '../errors.js';
import { DEFAULT_MAX_STREAMS, type ObserverServeOptions } from '../flows/observer-server.js';
import { ObserverCertRenewer, type ObserverCertificateSigner } from '../flows/observer-cert.js';
import { OBSERVER_CERT_FILE, OBSERVER_KEY_FILE, loadTlsCredential, relaySpiffeUri, trustDomainOfCert } from '../flows/observer-tls.js';
import type { Logger } from '../log.js';

function positiveInt(text: string, flag: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new WeftError(ErrorCodes.USAGE, `${flag}: "${text}" is not a positive integer`);
  return n;
}

export interface ObserverFlags {
  'observer-tls'?: boolean;
  'observer-address'?: string;
  'observer-cert'?: string;
  'observer-key'?: string;
  'observer-allow'?: string[];
  'observer-max-streams'?: string;
}

/** With --ca-token: where the serving certificate comes from when no --observer-cert/--observer-key is given. */
export interface ObserverFromController {
  signer: ObserverCertificateSigner;
  node: string;
  /** The mesh root (PEM): its spiffe:// URI SAN names the trust domain when it has one. */
  rootCertPem: string;
  /** The trust domain otherwise (--trust-domain). */
  trustDomain: string;
  log: Logger;
}

/** The trust domain a weft-made root names (spiffe://<td>), else `fallback` (an operator's root need not name one). */
function rootTrustDomain(rootCertPem: string, fallback: string): string {
  try {
    return trustDomainOfCert(rootCertPem);
  } catch {
    return fallback;
  }
}

/** The Observer API's listeners from the flags: plaintext loopback always; mutual TLS on the node address when asked. */
export function observerServing(
  values: ObserverFlags,
  nodeCertFile: string,
  rootFile: string,
  env: NodeJS.ProcessEnv = process.env,
  fromController?: ObserverFromController,
): ObserverServeOptions {
  const maxStreams = values['observer-max-streams'] === undefined ? DEFAULT_MAX_STREAMS : positiveInt(values['observer-max-streams'], '--observer-max-streams');
  const envTls = env.WEFT_OBSERVER_TLS;
  if (envTls !== undefined && !['', '0', '1', 'true', 'false'].includes(envTls)) throw new WeftError(ErrorCodes.USAGE, `WEFT_OBSERVER_TLS: "${envTls}" is not 1/true or 0/false`);
  const tls = values['observer-tls'] === true || envTls === '1' || envTls === 'true';
  if (!tls) {
    for (const f of ['observer-address', 'observer-cert', 'observer-key', 'observer-allow'] as const) {
      if (values[f] !== undefined) throw new WeftError(ErrorCodes.USAGE, `--${f} needs --observer-tls (without it the Observer API is on 127.0.0.1 only)`);
    }
    return { maxStreams };
  }
  const host = values['observer-address'] ?? env.WEFT_NODE_IP;
  if (!host) throw new WeftError(ErrorCodes.USAGE, '--observer-tls needs the node address: --observer-address IP (or WEFT_NODE_IP)');
  if (!isIP(host) || host === '0.0.0.0' || host === '::') throw new WeftError(ErrorCodes.USAGE, `--observer-address: "${host}" is not the node's IP address`);
  if (fromController && values['observer-cert'] === undefined && values['observer-key'] === undefined) {
    const trustDomain = rootTrustDomain(fromController.rootCertPem, fromController.trustDomain);
    const allowed = checkAllowed(values['observer-allow'] ?? [relaySpiffeUri(trustDomain)]);
    const renewer = new ObserverCertRenewer({ ...fromController, trustDomain });
    return { maxStreams, tls: { host, allowedIdentities: allowed, renewer } };
  }
  const dir = dirname(nodeCertFile);
  const credential = loadTlsCredential({
    rootFile,
    certFile: values['observer-cert'] ?? join(dir, OBSERVER_CERT_FILE),
    keyFile: values['observer-key'] ?? join(dir, OBSERVER_KEY_FILE),
  });
  const allowed = checkAllowed(values['observer-allow'] ?? [relaySpiffeUri(trustDomainOfCert(credential.certPem))]);
  return { maxStreams, tls: { host, ...credential, allowedIdentities: allowed } };
}

function checkAllowed(allowed: string[]): string[] {
  for (const id of allowed) {
    if (!/^spiffe:\/\/[^/]+\/.+/.test(id)) throw new WeftError(ErrorCodes.USAGE, `--observer-allow: "${id}" is not a SPIFFE ID (spiffe://<trust-domain>/<path>)`);
  }
  return allowed;
}
