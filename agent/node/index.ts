// The node agent's public entry: what other programs (the CLI, the lab, tests) may use. The agent
// itself runs from command.ts (`weft agent`); everything else under agent/node/ is its own business.

// Talking to a running agent: its loopback admin API inside the node's netns, and its pod channel
// (what the CNI plugin, and the lab in its place, call).
export { agentAdminGet, agentAdminPost, eventually } from './admin-client.js';
export { podChannelRequest, toRequest, type CaptureState, type LocalPod } from './pod-channel.js';
