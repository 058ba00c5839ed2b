// Credentials the controller's CA issues into a directory for the programs that need one: a node
// agent's node credential (how it authenticates to the controller), a node's Observer serving
// credential, and the relay's client credential toward the nodes' Observer APIs. What `weft controller
// node-credentials` and `weft relay credentials` write, and how the lab mints its own. Keys are 0600,
// each file is replaced atomically.
import { X509Certificate } from 'node:crypto';
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ControllerDefaults, Mesh } from '../config.js';
import {
  DEFAULT_OBSERVER_CREDENTIAL_TTL_SECONDS,
  OBSERVER_CERT_FILE,
  OBSERVER_KEY_FILE,
  RELAY_CERT_FILE,
  RELAY_KEY_FILE,
  ROOT_CERT_FILE,
  type CredentialFiles,
} from '../flows/observer-tls.js';
import { CertificateAuthority } from './ca.js';

export type { CredentialFiles };

export interface NodeCredentialFiles extends CredentialFiles {
  /** The credential's serial (what a `revoked-nodes` line may name). */
  serial: string;
  notAfter: string;
}

/** Where to issue from and to: the controller's state directory (its CA) and the output directory. */
export interface IssueOptions {
  /** The controller's --state: the CA's root is loaded from it (created there on first use). */
  stateDir: string;
  outDir: string;
  /** Default Mesh.trustDomain. */
  trustDomain?: string;
  ttlSeconds?: number;
}

function loadCa(o: IssueOptions): Promise<CertificateAuthority> {
  return CertificateAuthority.loadOrCreate({ dir: o.stateDir, trustDomain: o.trustDomain ?? Mesh.trustDomain });
}

function writeAtomic(path: string, text: string, mode: number): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, text, { mode });
  renameSync(tmp, path);
}

/** Writes an agent's node credential (node-cert.pem, node-key.pem, root-cert.pem) into `outDir`. */
export async function writeNodeCredentials(o: IssueOptions & { node: string }): Promise<NodeCredentialFiles> {
  return writeNodeCredentialFiles(await loadCa(o), o.node, o.outDir, o.ttlSeconds);
}

/** Writes a node's Observer serving credential (observer-cert.pem, observer-key.pem, root-cert.pem) into `outDir`. */
export async function writeObserverCredentials(o: IssueOptions & { node: string }): Promise<CredentialFiles> {
  return writeObserverCredentialFiles(await loadCa(o), { node: o.node }, o.outDir, o.ttlSeconds);
}

/** Writes the relay's client credential (relay-cert.pem, relay-key.pem, root-cert.pem) into `outDir`. */
export async function writeRelayCredentials(o: IssueOptions): Promise<CredentialFiles> {
  return writeObserverCredentialFiles(await loadCa(o), { relay: true }, o.outDir, o.ttlSeconds);
}

/** Issues `node`'s credential from `ca` and writes node-cert.pem, node-key.pem (0600) and root-cert.pem into `outDir`. */
async function writeNodeCredentialFiles(ca: CertificateAuthority, node: string, outDir: string, ttlSeconds: number = ControllerDefaults.nodeCredentialTtlSeconds): Promise<NodeCredentialFiles> {
  const cred = await ca.issueNodeCredential(node, ttlSeconds);
  mkdirSync(outDir, { recursive: true, mode: 0o700 });
  const files = { certFile: join(outDir, 'node-cert.pem'), keyFile: join(outDir, 'node-key.pem'), rootFile: join(outDir, ROOT_CERT_FILE) };
  writeAtomic(files.keyFile, cred.keyPem, 0o600);
  writeAtomic(files.certFile, cred.certPem, 0o644);
  writeAtomic(files.rootFile, ca.rootCertPem, 0o644);
  return { ...files, serial: cred.serial, notAfter: new Date(new X509Certificate(cred.certPem).validTo).toISOString() };
}

/**
 * Issues and writes an Observer credential: a node agent's serving one (`node` given:
 * observer-cert.pem / observer-key.pem) or the relay's client one (relay-cert.pem / relay-key.pem),
 * with root-cert.pem beside it. Keys are 0600.
 */
export async function writeObserverCredentialFiles(
  ca: CertificateAuthority,
  who: { node: string } | { relay: true },
  outDir: string,
  ttlSeconds = DEFAULT_OBSERVER_CREDENTIAL_TTL_SECONDS,
): Promise<CredentialFiles> {
  const cred = 'node' in who ? await ca.issueObserverServingCredential(who.node, ttlSeconds) : await ca.issueRelayCredential(ttlSeconds);
  mkdirSync(outDir, { recursive: true, mode: 0o700 });
  const files: CredentialFiles = {
    certFile: join(outDir, 'node' in who ? OBSERVER_CERT_FILE : RELAY_CERT_FILE),
    keyFile: join(outDir, 'node' in who ? OBSERVER_KEY_FILE : RELAY_KEY_FILE),
    rootFile: join(outDir, ROOT_CERT_FILE),
  };
  writeAtomic(files.keyFile, cred.keyPem, 0o600);
  writeAtomic(files.certFile, cred.certPem, 0o644);
  writeAtomic(files.rootFile, ca.rootCertPem, 0o644);
  return files;
}
