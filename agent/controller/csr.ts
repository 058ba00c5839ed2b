// What a workload CSR asks for, read and checked before anything is signed: the node-authorization
// check needs the identity first, and the CA signs only what passed here.
//
// A CSR comes from the network, so every check that bounds the cost of the next comes first: the
// size of the PEM, then the key (type, size, exponent), and only then the signature, which Node
// verifies natively. (Verifying with node-forge's JavaScript RSA before looking at the key let one
// CSR with a huge modulus or exponent hold the controller's only thread for minutes.)
import { createPublicKey, verify, type KeyObject } from 'node:crypto';
import { ErrorCodes, WeftError, errorMessage } from '../errors.js';
import { DerError, Tag, bitStringBytes, children, decodeOid, expectTag, fromPem, readOne, type Tlv } from '../identity/der.js';
import { parseSpiffeId, type SpiffeId } from '../identity/spiffe.js';

/** A CSR of an RSA 4096 key with one SPIFFE URI SAN is about 1.7 KiB of PEM; nothing honest is larger. */
export const MAX_CSR_PEM_BYTES = 4096;
export const RSA_MIN_BITS = 2048;
export const RSA_MAX_BITS = 4096;
export const RSA_EXPONENT = 65537n;
/** The only elliptic curve accepted (what ztunnel uses for workload keys). */
export const EC_CURVE = 'prime256v1';

export const Oids = {
  extensionRequest: '1.2.840.113549.1.9.14',
  subjectAltName: '2.5.29.17',
  rsaEncryption: '1.2.840.113549.1.1.1',
  sha256WithRSA: '1.2.840.113549.1.1.11',
  sha384WithRSA: '1.2.840.113549.1.1.12',
  sha512WithRSA: '1.2.840.113549.1.1.13',
  ecPublicKey: '1.2.840.10045.2.1',
  ecdsaWithSHA256: '1.2.840.10045.4.3.2',
  ecdsaWithSHA384: '1.2.840.10045.4.3.3',
} as const;

/** Signature algorithm OID → the key type it needs and the hash Node verifies with. */
const SIGNATURE_ALGORITHMS: ReadonlyMap<string, { keyType: 'rsa' | 'ec'; hash: string }> = new Map([
  [Oids.sha256WithRSA, { keyType: 'rsa', hash: 'sha256' }],
  [Oids.sha384WithRSA, { keyType: 'rsa', hash: 'sha384' }],
  [Oids.sha512WithRSA, { keyType: 'rsa', hash: 'sha512' }],
  [Oids.ecdsaWithSHA256, { keyType: 'ec', hash: 'sha256' }],
  [Oids.ecdsaWithSHA384, { keyType: 'ec', hash: 'sha384' }],
]);

/** RFC 5280 GeneralName tag numbers, for messages. */
const GENERAL_NAME_KINDS = ['otherName', 'email', 'DNS name', 'x400Address', 'directoryName', 'ediPartyName', 'URI', 'IP address', 'registeredID'];

export interface CheckedCsr {
  identity: SpiffeId;
  /** The requester's key, as it goes into the certificate. */
  publicKey: KeyObject;
  /** SubjectPublicKeyInfo, DER, exactly as the CSR carries it. */
  spkiDer: Buffer;
  keyType: 'rsa' | 'ec';
}

function refused(reason: string, cause?: unknown): WeftError {
  return new WeftError(ErrorCodes.CA, `CSR refused: ${reason}`, cause === undefined ? undefined : { cause });
}

/** Why `key` is not a key weft signs for, or undefined when it is one. */
export function publicKeyProblem(key: KeyObject): string | undefined {
  const details = key.asymmetricKeyDetails ?? {};
  if (key.asymmetricKeyType === 'rsa') {
    const bits = details.modulusLength ?? 0;
    if (bits < RSA_MIN_BITS || bits > RSA_MAX_BITS) return `the RSA modulus has ${bits} bits; ${RSA_MIN_BITS} to ${RSA_MAX_BITS} are accepted`;
    if (details.publicExponent !== RSA_EXPONENT) return `the RSA public exponent must be ${RSA_EXPONENT}`;
    return undefined;
  }
  if (key.asymmetricKeyType === 'ec') {
    return details.namedCurve === EC_CURVE ? undefined : `the EC key is on curve ${details.namedCurve ?? 'unknown'}; only P-256 (${EC_CURVE}) is accepted`;
  }
  return `key type ${key.asymmetricKeyType ?? 'unknown'} is not accepted (RSA ${RSA_MIN_BITS}-${RSA_MAX_BITS} bits with e=${RSA_EXPONENT}, or ECDSA P-256)`;
}

/**
 * Parses and checks a PEM CSR: at most MAX_CSR_PEM_BYTES, an accepted key, a signature that verifies
 * with that key, and exactly one SAN, a URI that is a workload SPIFFE ID. Anything else is a
 * WEFT_ERR_CA error saying why. The trust domain is the caller's to check.
 */
export function checkCsr(csrPem: string): CheckedCsr {
  return workloadCsr(checkCsrRequest(csrPem));
}

/** A CSR that passed every check but the identity's form: its one URI SAN, not yet read as an identity. */
export interface CheckedCsrRequest extends Omit<CheckedCsr, 'identity'> {
  uri: string;
}

/** The workload identity a checked CSR asks for; a WEFT_ERR_CA error when its URI is not one. */
export function workloadCsr(request: CheckedCsrRequest): CheckedCsr {
  let identity: SpiffeId;
  try {
    identity = parseSpiffeId(request.uri);
  } catch (err) {
    throw refused(errorMessage(err), err);
  }
  return { identity, publicKey: request.publicKey, spkiDer: request.spkiDer, keyType: request.keyType };
}

/**
 * checkCsr without reading the URI SAN as a workload identity: the CA also signs node agents' Observer
 * serving certificates (spiffe://<td>/weft/node/<node>), whose form the gRPC server checks.
 */
export function checkCsrRequest(csrPem: string): CheckedCsrRequest {
  if (typeof csrPem !== 'string') throw refused('not a PEM certificate request');
  // The size first: everything after it costs time in proportion to the input.
  if (csrPem.length > MAX_CSR_PEM_BYTES) throw refused(`it is ${csrPem.length} bytes, more than the ${MAX_CSR_PEM_BYTES} accepted`);
  const der = fromPem(csrPem, ['CERTIFICATE REQUEST', 'NEW CERTIFICATE REQUEST']);
  if (der === undefined) throw refused('cannot parse it: not one PEM CERTIFICATE REQUEST block');
  let fields: { cri: Tlv; spki: Tlv; sigAlg: string; sigAlgParams: Tlv | undefined; signature: Buffer; attributes: Tlv | undefined };
  try {
    fields = csrFields(der);
  } catch (err) {
    throw refused(`cannot parse it: ${errorMessage(err)}`, err);
  }
  let publicKey: KeyObject;
  try {
    publicKey = createPublicKey({ key: fields.spki.raw, format: 'der', type: 'spki' });
  } catch (err) {
    throw refused(`cannot read its public key: ${errorMessage(err)}`, err);
  }
  const keyProblem = publicKeyProblem(publicKey);
  if (keyProblem !== undefined) throw refused(keyProblem);
  const keyType = publicKey.asymmetricKeyType as 'rsa' | 'ec';

  const alg = SIGNATURE_ALGORITHMS.get(fields.sigAlg);
  if (alg === undefined) throw refused(`signature algorithm ${fields.sigAlg} is not accepted`);
  if (alg.keyType !== keyType) throw refused(`signature algorithm ${fields.sigAlg} does not fit its ${keyType.toUpperCase()} key`);
  // RSA algorithm identifiers carry NULL parameters (or, from some encoders, none); ECDSA's carry none.
  const params = fields.sigAlgParams;
  if (params !== undefined && !(keyType === 'rsa' && params.tag === Tag.NULL && params.value.length === 0)) {
    throw refused('unexpected signature algorithm parameters');
  }
  let signed = false;
  try {
    signed = verify(alg.hash, fields.cri.raw, publicKey, fields.signature);
  } catch {
    signed = false;
  }
  if (!signed) throw refused('its signature does not verify');

  let names: Array<{ kind: number; value: Buffer }>;
  try {
    names = requestedSans(fields.attributes);
  } catch (err) {
    throw refused(`cannot read its extension request: ${errorMessage(err)}`, err);
  }
  const uris = names.filter((n) => n.kind === 6);
  if (uris.length !== 1) throw refused(`it must carry exactly one URI SAN, found ${uris.length}`);
  const others = names.filter((n) => n.kind !== 6);
  if (others.length > 0) {
    throw refused(`it must carry no SAN besides its URI SAN, found ${others.map((n) => GENERAL_NAME_KINDS[n.kind] ?? `[${n.kind}]`).join(', ')}`);
  }
  const uriBytes = (uris[0] as { value: Buffer }).value;
  // IA5String, and a SPIFFE ID is printable ASCII: control bytes or 8-bit bytes are never honest.
  if (!uriBytes.every((b) => b > 0x20 && b < 0x7f)) throw refused('its URI SAN holds non-printable bytes');
  return { uri: uriBytes.toString('ascii'), publicKey, spkiDer: Buffer.from(fields.spki.raw), keyType };
}

/** CertificationRequest ::= SEQUENCE { certificationRequestInfo, signatureAlgorithm, signature BIT STRING } (RFC 2986). */
function csrFields(der: Buffer): { cri: Tlv; spki: Tlv; sigAlg: string; sigAlgParams: Tlv | undefined; signature: Buffer; attributes: Tlv | undefined } {
  const top = children(expectTag(readOne(der), Tag.SEQUENCE, 'CertificationRequest'));
  if (top.length !== 3) throw new DerError(`CertificationRequest has ${top.length} elements, not 3`);
  const [cri, algId, sig] = top as [Tlv, Tlv, Tlv];
  // CertificationRequestInfo ::= SEQUENCE { version INTEGER (0), subject Name, subjectPKInfo, attributes [0] }
  const info = children(expectTag(cri, Tag.SEQUENCE, 'certificationRequestInfo'));
  const version = expectTag(info[0], Tag.INTEGER, 'version');
  if (version.value.length !== 1 || version.value[0] !== 0) throw new DerError('version is not 0 (v1)');
  expectTag(info[1], Tag.SEQUENCE, 'subject');
  const spki = expectTag(info[2], Tag.SEQUENCE, 'subjectPKInfo');
  const attributes = info[3];
  if (attributes !== undefined && attributes.tag !== 0xa0) throw new DerError('attributes: expected [0]');
  if (info.length > 4) throw new DerError('certificationRequestInfo has trailing elements');
  const alg = children(expectTag(algId, Tag.SEQUENCE, 'signatureAlgorithm'));
  if (alg.length < 1 || alg.length > 2) throw new DerError('signatureAlgorithm is malformed');
  const sigAlg = decodeOid(expectTag(alg[0], Tag.OID, 'signatureAlgorithm.algorithm').value);
  return { cri, spki, sigAlg, sigAlgParams: alg[1], signature: bitStringBytes(sig, 'signature'), attributes };
}

/** Every GeneralName of the subjectAltName extension requested (PKCS#9 extensionRequest), in order. */
function requestedSans(attributes: Tlv | undefined): Array<{ kind: number; value: Buffer }> {
  if (attributes === undefined) return [];
  const requests = children(attributes).filter((a) => {
    const parts = children(expectTag(a, Tag.SEQUENCE, 'attribute'));
    return decodeOid(expectTag(parts[0], Tag.OID, 'attribute type').value) === Oids.extensionRequest;
  });
  // Two requests or two SAN extensions could each look harmless alone; one of each is all we read.
  if (requests.length > 1) throw new DerError('more than one extensionRequest attribute');
  if (requests.length === 0) return [];
  const values = children(expectTag(children(requests[0] as Tlv)[1], Tag.SET, 'extensionRequest values'));
  if (values.length !== 1) throw new DerError(`extensionRequest has ${values.length} values, not 1`);
  const sanExtensions = children(expectTag(values[0], Tag.SEQUENCE, 'Extensions')).filter((ext) => {
    const parts = children(expectTag(ext, Tag.SEQUENCE, 'Extension'));
    return decodeOid(expectTag(parts[0], Tag.OID, 'extnID').value) === Oids.subjectAltName;
  });
  if (sanExtensions.length > 1) throw new DerError('more than one subjectAltName extension');
  if (sanExtensions.length === 0) return [];
  const parts = children(sanExtensions[0] as Tlv);
  const extnValue = expectTag(parts[parts.length - 1], Tag.OCTET_STRING, 'subjectAltName extnValue');
  const generalNames = children(expectTag(readOne(extnValue.value), Tag.SEQUENCE, 'GeneralNames'));
  return generalNames.map((n) => {
    if (n.cls !== 2) throw new DerError('a GeneralName that is not context-tagged');
    return { kind: n.num, value: n.value };
  });
}
