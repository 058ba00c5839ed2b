// The agents' warnings, errors and refusals from a lab's logs, for a failure message.
import { readFileSync } from 'node:fs';
import type { LabHandle } from '../../agent/lab/index.js';

export function agentComplaints(lab: LabHandle, last = 20): string {
  return lab.nodes
    .flatMap((n) =>
      readFileSync(n.agentLog, 'utf8')
        .split('\n')
        .filter((l) => /"level":(40|50|60)|refused|denied/.test(l))
        .slice(-last)
        .map((l) => `${n.name}: ${l.slice(0, 400)}`),
    )
    .join('\n');
}
