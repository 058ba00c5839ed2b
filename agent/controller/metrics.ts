// The controller's Prometheus metrics, on a registry of their own (so tests can run several controllers
// in one process): config rejections, connected agents, certificates issued and denied, registry version.
import { Counter, Gauge, Registry } from 'prom-client';

export class ControllerMetrics {
  readonly registry = new Registry();
  readonly rejections = new Counter({
    name: 'weft_config_rejections_total',
    help: 'Configuration documents rejected by validation, by kind (counted once per distinct problem).',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  });
  readonly connectedAgents = new Gauge({
    name: 'weft_controller_connected_agents',
    help: 'Node agents with an open discovery stream.',
    registers: [this.registry],
  });
  readonly certificatesIssued = new Counter({
    name: 'weft_controller_certificates_issued_total',
    help: 'Workload certificates signed for node agents.',
    registers: [this.registry],
  });
  readonly certificatesDenied = new Counter({
    name: 'weft_controller_certificates_denied_total',
    help: 'Certificate requests refused, by reason (invalid: malformed CSR; unauthorized: node authorization failed).',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  readonly registryVersion = new Gauge({
    name: 'weft_controller_registry_version',
    help: 'Version of the configuration registry (increases with every change).',
    registers: [this.registry],
  });
}
