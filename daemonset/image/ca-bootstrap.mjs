#!/usr/bin/env node
// The controller's CA on Kubernetes, before the controller starts (the init container `ca` of
// daemonset/core/controller.yaml):
//   - the root is kept in the Secret weft-ca of the controller's namespace: loaded into --state on
//     every start, created there (and the Secret with it) on the very first one; when two starts race,
//     the Secret that was created first wins and the other start takes it;
//   - the root certificate is published in the ConfigMap weft-root-cert, which the agents and the
//     relay mount to verify the controller and each other;
//   - the relay's client credential is kept in the Secret weft-relay-credential, issued again when it
//     is missing, from another root, or within 30 days of expiry.
// The Role weft-controller-ca grants exactly these calls (daemonset/rbac-calls.json lists them).
//
//   node ca-bootstrap.mjs --state DIR [--trust-domain TD] [--kubeconfig FILE]
import { X509Certificate } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { realpathSync } from 'node:fs';
import { parseArgs } from 'node:util';
import * as k8s from '@kubernetes/client-node';
import { Mesh } from '../../dist/agent/config.js';
import { ROOT_CERT_FILE, ROOT_KEY_FILE } from '../../dist/agent/controller/ca.js';
import { writeRelayCredentials } from '../../dist/agent/controller/index.js';
import { ErrorCodes, WeftError, errorMessage } from '../../dist/agent/errors.js';
import { createLogger } from '../../dist/agent/log.js';

/** The objects the bootstrap keeps, in the controller's namespace. */
export const CaObjects = {
  caSecret: 'weft-ca',
  rootConfigMap: 'weft-root-cert',
  relaySecret: 'weft-relay-credential',
};
/** A relay credential closer than this to its expiry is issued again. */
const RENEW_BEFORE_MS = 30 * 24 * 3600 * 1000;
const LABELS = { 'app.kubernetes.io/part-of': 'weft', 'app.kubernetes.io/name': 'weft-controller' };

const log = createLogger('ca-bootstrap');

const b64 = (text) => Buffer.from(text, 'utf8').toString('base64');
const unb64 = (data) => Buffer.from(data, 'base64').toString('utf8');
const status = (err) => (err && typeof err === 'object' && 'code' in err && typeof err.code === 'number' ? err.code : undefined);

async function readOrUndefined(call) {
  try {
    return await call();
  } catch (err) {
    if (status(err) === 404) return undefined;
    throw err;
  }
}

/** Whether the relay credential in `data` (a Secret's base64 data) is still good for `rootPem`. */
export function relayCredentialGood(data, rootPem, now = Date.now()) {
  const cert = data?.['relay-cert.pem'];
  const key = data?.['relay-key.pem'];
  const root = data?.[ROOT_CERT_FILE];
  if (!cert || !key || !root || unb64(root) !== rootPem) return false;
  try {
    return new Date(new X509Certificate(unb64(cert)).validTo).getTime() - now > RENEW_BEFORE_MS;
  } catch {
    return false;
  }
}

function writeRoot(stateDir, data) {
  const cert = data?.[ROOT_CERT_FILE];
  const key = data?.[ROOT_KEY_FILE];
  if (!cert || !key) throw new WeftError(ErrorCodes.CA, `Secret ${CaObjects.caSecret} lacks ${ROOT_CERT_FILE} or ${ROOT_KEY_FILE}`);
  writeFileSync(join(stateDir, ROOT_KEY_FILE), unb64(key), { mode: 0o600 });
  writeFileSync(join(stateDir, ROOT_CERT_FILE), unb64(cert), { mode: 0o600 });
}

export async function bootstrap({ core, namespace, stateDir, trustDomain }) {
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  let ca = await readOrUndefined(() => core.readNamespacedSecret({ name: CaObjects.caSecret, namespace }));
  if (ca) writeRoot(stateDir, ca.data);
  const out = mkdtempSync(join(tmpdir(), 'weft-ca-'));
  try {
    // Loads the root from stateDir, or creates it there when the Secret did not exist.
    let relay = await writeRelayCredentials({ stateDir, outDir: out, trustDomain });
    if (!ca) {
      const data = { [ROOT_CERT_FILE]: b64(readFileSync(join(stateDir, ROOT_CERT_FILE), 'utf8')), [ROOT_KEY_FILE]: b64(readFileSync(join(stateDir, ROOT_KEY_FILE), 'utf8')) };
      try {
        await core.createNamespacedSecret({ namespace, body: { apiVersion: 'v1', kind: 'Secret', metadata: { name: CaObjects.caSecret, namespace, labels: LABELS }, type: 'Opaque', data } });
        log.info({ secret: CaObjects.caSecret, namespace }, 'created the mesh root');
      } catch (err) {
        if (status(err) !== 409) throw err;
        // Another start created it first: that root is the mesh's.
        ca = await core.readNamespacedSecret({ name: CaObjects.caSecret, namespace });
        writeRoot(stateDir, ca.data);
        relay = await writeRelayCredentials({ stateDir, outDir: out, trustDomain });
      }
    } else {
      log.info({ secret: CaObjects.caSecret, namespace }, 'loaded the mesh root');
    }
    const rootPem = readFileSync(relay.rootFile, 'utf8');

    const cm = await readOrUndefined(() => core.readNamespacedConfigMap({ name: CaObjects.rootConfigMap, namespace }));
    const cmBody = { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: CaObjects.rootConfigMap, namespace, labels: LABELS, ...(cm ? { resourceVersion: cm.metadata?.resourceVersion } : {}) }, data: { [ROOT_CERT_FILE]: rootPem } };
    if (!cm) await core.createNamespacedConfigMap({ namespace, body: cmBody });
    else if (cm.data?.[ROOT_CERT_FILE] !== rootPem) await core.replaceNamespacedConfigMap({ name: CaObjects.rootConfigMap, namespace, body: cmBody });
    log.info({ configMap: CaObjects.rootConfigMap, namespace, changed: !cm || cm.data?.[ROOT_CERT_FILE] !== rootPem }, 'root certificate published');

    const current = await readOrUndefined(() => core.readNamespacedSecret({ name: CaObjects.relaySecret, namespace }));
    if (!relayCredentialGood(current?.data, rootPem)) {
      const data = { 'relay-cert.pem': b64(readFileSync(relay.certFile, 'utf8')), 'relay-key.pem': b64(readFileSync(relay.keyFile, 'utf8')), [ROOT_CERT_FILE]: b64(rootPem) };
      const body = { apiVersion: 'v1', kind: 'Secret', metadata: { name: CaObjects.relaySecret, namespace, labels: LABELS, ...(current ? { resourceVersion: current.metadata?.resourceVersion } : {}) }, type: 'Opaque', data };
      if (current) await core.replaceNamespacedSecret({ name: CaObjects.relaySecret, namespace, body });
      else await core.createNamespacedSecret({ namespace, body });
      log.info({ secret: CaObjects.relaySecret, namespace }, 'relay credential issued');
    }
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}

async function main(argv) {
  const { values } = parseArgs({
    args: argv,
    options: { state: { type: 'string' }, 'trust-domain': { type: 'string', default: Mesh.trustDomain }, kubeconfig: { type: 'string' } },
  });
  if (!values.state) throw new WeftError(ErrorCodes.USAGE, 'usage: ca-bootstrap.mjs --state DIR [--trust-domain TD] [--kubeconfig FILE]');
  const kc = new k8s.KubeConfig();
  if (values.kubeconfig) kc.loadFromFile(values.kubeconfig);
  else kc.loadFromCluster();
  const namespace = process.env.POD_NAMESPACE;
  if (!namespace) throw new WeftError(ErrorCodes.USAGE, 'POD_NAMESPACE is not set (the downward API gives it)');
  await bootstrap({ core: kc.makeApiClient(k8s.CoreV1Api), namespace, stateDir: values.state, trustDomain: values['trust-domain'] });
  return 0;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === realpathSync(process.argv[1])) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err) => {
      log.error({ code: err instanceof WeftError ? err.code : status(err), err: errorMessage(err) }, 'CA bootstrap failed');
      process.exit(1);
    },
  );
}
