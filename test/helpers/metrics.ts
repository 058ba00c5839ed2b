// Reading an agent's Prometheus endpoint (15020 on the node's IP) in tests.
import { get } from 'node:http';
import { Ports } from '../../agent/config.js';

export function metricsOf(ip: string): Promise<string> {
  return new Promise((resolve, reject) => {
    get({ host: ip, port: Ports.metrics, path: '/metrics', timeout: 5000 }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`/metrics: ${res.statusCode}`))));
    }).on('error', reject);
  });
}

/** The value of one series in a Prometheus text exposition, summed over those matching every label. */
export function sample(text: string, name: string, labels: Record<string, string>): number {
  let total = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name + '{') && !line.startsWith(name + ' ')) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) total += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return total;
}
