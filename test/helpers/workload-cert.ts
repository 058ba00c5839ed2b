// A workload certificate signed by a test CA, for the TLS and HBONE tests.
import { X509Certificate } from 'node:crypto';
import type { CertificateAuthority } from '../../agent/controller/ca.js';
import { createKeyAndCsr } from '../../agent/identity/csr.js';
import { workloadCertificateFromChain, type WorkloadCertificate } from '../../agent/identity/manager.js';

export async function issueWorkloadCertificate(ca: CertificateAuthority, namespace: string, serviceAccount: string, ttlSeconds = 3600): Promise<WorkloadCertificate> {
  const id = { trustDomain: ca.trustDomain, namespace, serviceAccount };
  const { keyPem, csrPem } = await createKeyAndCsr(id);
  const { chain } = await ca.signWorkloadCsr(csrPem, ttlSeconds);
  // Checked at issuance time, so an already expired test certificate still loads.
  return workloadCertificateFromChain(id, keyPem, chain, Date.parse(new X509Certificate(chain[0] as string).validFrom));
}
