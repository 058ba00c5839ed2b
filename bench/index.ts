// `npm run bench`: every benchmark of weft, one after the other (each writes bench/results/<name>.*).
import { runFlowBench } from './flows.js';

const benches: Array<[string, () => Promise<unknown>]> = [['flows', () => runFlowBench()]];

for (const [name, run] of benches) {
  process.stdout.write(`== ${name}\n`);
  await run();
}
process.exit(0);
