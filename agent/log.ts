// Structured logging for every weft process: JSON, one event per line, fields not sentences.
import { destination, pino, stdTimeFunctions, type Logger } from 'pino';

export type { Logger };

export function createLogger(component: string, options: { level?: string; destination?: number | string } = {}): Logger {
  const level = options.level ?? process.env.WEFT_LOG_LEVEL ?? 'info';
  const dest = destination({ dest: options.destination ?? 2, sync: true });
  return pino({ level, base: { component }, timestamp: stdTimeFunctions.isoTime }, dest);
}
