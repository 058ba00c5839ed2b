// `npm run bench`: every benchmark of weft, one after the other (each writes bench/results/<name>.*;
// the mesh bench writes latest.json, latest.md and mesh.json). `--quick`: the mesh bench's smoke sizes.
import { runFlowBench } from './flows.js';
import { optionsFromArgv, runMeshBench } from './mesh.js';

const benches: Array<[string, () => Promise<unknown>]> = [
  ['flows', () => runFlowBench()],
  ['mesh', () => runMeshBench(optionsFromArgv(process.argv.slice(2)))],
];

for (const [name, run] of benches) {
  process.stdout.write(`== ${name}\n`);
  await run();
}
process.exit(0);
