// The relay's public entry: what other programs (the CLI, the lab) may use. The relay itself runs
// from command.ts (`weft relay`); everything else under agent/relay/ is its own business.

// A client of any Observer API (a node's on 4244, or the relay's on 4245).
export { ObserverClient, observerAddress } from './client.js';
