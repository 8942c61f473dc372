/**
 * The tiny guest image: what it is and promises (contract.ts) and how it is
 * built (build.ts).
 */
export { PROMPT_PATTERN, READY_LINE, TINY_CMDLINE, TINY_IMAGE } from './contract.js';
export { buildTinyImage, type BuildOptions, type BuildProgress } from './build.js';
