// The policy kinds' checks moved to policy-kinds.ts, and the kinds table (kinds.ts) lists them: parsing
// no longer depends on importing this file. It remains for the code and tests that import it by name.
export * from './policy-kinds.js';
