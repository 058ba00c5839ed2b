// Mutual TLS between workloads for HBONE (port 15008): TLS 1.3 only, ALPN h2, SPIFFE identities in
// place of host names, no SNI and no session resumption (a resumed session would skip the
// certificate checks that authorization depends on).
import type net from 'node:net';
import tls from 'node:tls';
import { X509Certificate, constants as cryptoConstants } from 'node:crypto';
import { ErrorCodes, WeftError, errorMessage } from '../errors.js';
import type { WorkloadCertificate } from '../identity/manager.js';
import { formatSpiffeId, sameSpiffeId, spiffeIdOfCert, type SpiffeId } from '../identity/spiffe.js';

export const HBONE_ALPN = 'h2';
const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;

export type PeerVerdict = { ok: true; id: SpiffeId } | { ok: false; reason: string };

/** The certificate chain a workload presents: its leaf and any intermediates, never the root. */
function presentedChain(cert: WorkloadCertificate): string {
  return cert.chainPem.slice(0, -1).join('');
}

/** Options for `http2.createSecureServer` / `tls.createServer` (and `setSecureContext` on rotation)
 * that serve HBONE as the given workload and require a client certificate from our root. */
export function serverSecureContextOptions(cert: WorkloadCertificate): tls.TlsOptions {
  return {
    cert: presentedChain(cert),
    key: cert.keyPem,
    ca: cert.rootPem,
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: 'TLSv1.3',
    maxVersion: 'TLSv1.3',
    ALPNProtocols: [HBONE_ALPN],
    // No stateless tickets; with a zero session timeout the stateful cache never resumes either.
    secureOptions: cryptoConstants.SSL_OP_NO_TICKET,
    sessionTimeout: 0,
  };
}

/** Checks one SPIFFE identity against our trust domain and, when given, the expected identities. */
function verifyIdentity(cert: X509Certificate, trustDomain: string, expected: SpiffeId[] | undefined): PeerVerdict {
  let id: SpiffeId;
  try {
    id = spiffeIdOfCert(cert);
  } catch (err) {
    return { ok: false, reason: `peer certificate has no usable SPIFFE ID: ${errorMessage(err)}` };
  }
  if (id.trustDomain !== trustDomain) return { ok: false, reason: `peer ${formatSpiffeId(id)} is not in trust domain ${trustDomain}` };
  if (expected !== undefined && !expected.some((e) => sameSpiffeId(e, id))) {
    return { ok: false, reason: `peer ${formatSpiffeId(id)} is not the expected identity (${expected.map(formatSpiffeId).join(', ') || 'none'})` };
  }
  return { ok: true, id };
}

/**
 * After the handshake: the peer presented a certificate that chains to our root, with exactly one
 * URI SAN that is a workload SPIFFE ID of our trust domain, and (when `expected` is given) one of
 * those identities.
 */
export function verifyPeer(socket: tls.TLSSocket, options: { trustDomain: string; expected?: SpiffeId[] }): PeerVerdict {
  const peer = socket.getPeerX509Certificate();
  if (!peer) return { ok: false, reason: 'peer presented no certificate' };
  if (!socket.authorized) return { ok: false, reason: `peer certificate not trusted: ${describeVerifyError(socket.authorizationError)}` };
  return verifyIdentity(peer, options.trustDomain, options.expected);
}

/** Human words for OpenSSL's verification codes that peers most often hit. */
function describeVerifyError(err: Error | string | null | undefined): string {
  if (err === null || err === undefined) return 'unknown reason';
  const code = typeof err === 'string' ? err : ((err as NodeJS.ErrnoException).code ?? err.message);
  switch (code) {
    case 'CERT_HAS_EXPIRED':
      return 'certificate expired (CERT_HAS_EXPIRED)';
    case 'CERT_NOT_YET_VALID':
      return 'certificate not yet valid (CERT_NOT_YET_VALID)';
    case 'UNABLE_TO_VERIFY_LEAF_SIGNATURE':
    case 'UNABLE_TO_GET_ISSUER_CERT':
    case 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY':
    case 'SELF_SIGNED_CERT_IN_CHAIN':
    case 'DEPTH_ZERO_SELF_SIGNED_CERT':
    case 'CERT_SIGNATURE_FAILURE':
      return `unknown CA (${code})`;
    // A chain through a certificate that may not sign others (a workload trying to mint identities
    // with its own leaf key).
    case 'INVALID_CA':
    case 'KEYUSAGE_NO_CERTSIGN':
    case 'PATH_LENGTH_EXCEEDED':
      return `issuer is not a CA (${code})`;
    // Our CA's certificate, but not for this side of TLS (a serving-only certificate as a client).
    case 'INVALID_PURPOSE':
      return `certificate not issued for this use (${code})`;
    // OpenSSL's catch-all; seen for a chain through a leaf that is not a CA.
    case 'UNSPECIFIED':
      return `certificate chain does not verify (${code})`;
    default:
      return typeof err === 'string' ? err : err.message;
  }
}

export interface ConnectTlsOptions {
  /** An already connected TCP socket (made inside the source pod's netns). */
  socket: net.Socket;
  /** The source workload's certificate, presented as the client certificate. */
  cert: WorkloadCertificate;
  /** The identities the destination may hold; anything else is refused. */
  expected: SpiffeId[];
  trustDomain: string;
  /** Default 10 s; the socket is destroyed when it passes. */
  handshakeTimeoutMs?: number;
}

/**
 * The client side of HBONE's TLS over `socket`. Resolves once the server proved one of the expected
 * identities and agreed to h2; otherwise rejects with a WEFT_ERR_TLS error naming the reason and
 * destroys the socket.
 */
export function connectTls(options: ConnectTlsOptions): Promise<tls.TLSSocket> {
  const { socket, cert, expected, trustDomain } = options;
  return new Promise<tls.TLSSocket>((resolve, reject) => {
    // Set by checkServerIdentity so the rejection says "wrong identity", not a generic TLS error.
    let identityProblem: string | undefined;
    const tlsSocket = tls.connect({
      socket,
      cert: presentedChain(cert),
      key: cert.keyPem,
      ca: cert.rootPem,
      minVersion: 'TLSv1.3',
      maxVersion: 'TLSv1.3',
      ALPNProtocols: [HBONE_ALPN],
      // No SNI: the server's identity is its SPIFFE ID, not a name.
      servername: '',
      rejectUnauthorized: true,
      // Called only after the chain verified against our root; replaces the hostname check.
      checkServerIdentity: (_host, peer) => {
        const verdict = verifyIdentity(new X509Certificate(peer.raw), trustDomain, expected);
        if (verdict.ok) return undefined;
        identityProblem = verdict.reason;
        return new Error(verdict.reason);
      },
    });
    const timer = setTimeout(() => fail(`handshake timed out after ${options.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS} ms`), options.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS);
    timer.unref();
    let settled = false;
    function fail(reason: string, cause?: unknown): void {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      tlsSocket.destroy();
      socket.destroy();
      reject(new WeftError(ErrorCodes.TLS, `HBONE TLS to ${expected.map(formatSpiffeId).join(' | ') || 'nobody'} refused: ${reason}`, cause === undefined ? undefined : { cause }));
    }
    tlsSocket.once('secureConnect', () => {
      if (settled) return;
      if (tlsSocket.alpnProtocol !== HBONE_ALPN) return fail(`server did not agree to ALPN ${HBONE_ALPN}`);
      settled = true;
      clearTimeout(timer);
      tlsSocket.off('error', onError);
      tlsSocket.off('close', onClose);
      resolve(tlsSocket);
    });
    const onError = (err: Error): void => fail(identityProblem ?? describeTlsError(err), err);
    const onClose = (): void => fail('connection closed during the handshake');
    tlsSocket.on('error', onError);
    tlsSocket.once('close', onClose);
  });
}

/**
 * Why a handshake failed, for logs and flow records: pass the server's `tlsClientError` arguments
 * (Node drops a client whose certificate does not verify without telling the error why, but leaves
 * the verification code on the socket) or a client-side error.
 */
export function handshakeFailureReason(err: Error, socket?: tls.TLSSocket): string {
  const verifyCode = socket?.authorizationError as Error | string | null | undefined;
  if (verifyCode) return `peer certificate not trusted: ${describeVerifyError(verifyCode)}`;
  if ((err as NodeJS.ErrnoException).code === 'ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE') return 'peer presented no certificate';
  return describeTlsError(err);
}

/** The client's view of a failed handshake: OpenSSL verify codes and alerts from the server. */
function describeTlsError(err: Error): string {
  const code = (err as NodeJS.ErrnoException).code ?? '';
  if (/^ERR_SSL_.*ALERT/.test(code)) return `server sent TLS alert: ${code.replace(/^ERR_SSL_/, '').toLowerCase()}`;
  const words = describeVerifyError(code || err);
  return words === code ? err.message : words;
}
