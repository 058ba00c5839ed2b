// Reading the controller's /debug/status, for `weft status` and for the relay's node discovery.
import { get } from 'node:http';
import { ErrorCodes, WeftError, errorMessage } from '../errors.js';
import type { ControllerStatus } from './monitoring.js';

export function fetchControllerStatus(monitoringUrl: string, timeoutMs = 3000): Promise<ControllerStatus> {
  const url = `${monitoringUrl.replace(/\/+$/, '')}/debug/status`;
  return new Promise((resolve, reject) => {
    const req = get(url, { timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d));
      res.on('end', () => {
        if (res.statusCode !== 200) return reject(new WeftError(ErrorCodes.CONTROLLER, `${url} answered ${res.statusCode}`));
        try {
          resolve(JSON.parse(body) as ControllerStatus);
        } catch (err) {
          reject(new WeftError(ErrorCodes.CONTROLLER, `${url} did not answer JSON: ${errorMessage(err)}`));
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', (err) => reject(new WeftError(ErrorCodes.CONTROLLER, `cannot reach the controller at ${url}: ${err.message}`, { cause: err })));
  });
}
