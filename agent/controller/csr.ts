// What a workload CSR asks for, read before anything is signed: the node-authorization check needs the
// identity first. Only what the CA accepts is recognised (RSA PEM, signature verifying with its own key,
// exactly one URI SAN that is a workload SPIFFE ID); the CA checks all of it again when it signs.
import forge from 'node-forge';
import { ErrorCodes, WeftError, errorMessage } from '../errors.js';
import { SanType } from '../identity/csr.js';
import { parseSpiffeId, type SpiffeId } from '../identity/spiffe.js';

function invalid(reason: string): WeftError {
  return new WeftError(ErrorCodes.CA, `malformed CSR: ${reason}`);
}

/** The identity a PEM CSR requests; a WEFT_ERR_CA error saying why when the CSR is malformed. */
export function csrIdentity(csrPem: string): SpiffeId {
  if (typeof csrPem !== 'string' || !csrPem.includes('-----BEGIN CERTIFICATE REQUEST-----')) throw invalid('not a PEM certificate request');
  let csr: forge.pki.CertificateSigningRequest;
  try {
    csr = forge.pki.certificationRequestFromPem(csrPem);
  } catch (err) {
    throw invalid(`cannot parse it (only RSA keys are accepted): ${errorMessage(err)}`);
  }
  let verified = false;
  try {
    verified = csr.verify();
  } catch {
    verified = false;
  }
  if (!verified) throw invalid('its signature does not verify');
  const request = csr.getAttribute({ name: 'extensionRequest' });
  const extensions = (request?.extensions ?? []) as Array<{ name?: string; altNames?: Array<{ type: number; value?: string }> }>;
  const uris = extensions
    .filter((e) => e.name === 'subjectAltName')
    .flatMap((e) => e.altNames ?? [])
    .filter((n) => n.type === SanType.URI)
    .map((n) => n.value ?? '');
  if (uris.length !== 1) throw invalid(`it must carry exactly one URI SAN, found ${uris.length}`);
  try {
    return parseSpiffeId(uris[0]!);
  } catch (err) {
    throw invalid(errorMessage(err));
  }
}
