/** Vireo's version, shown by `vireo --version` and the daemon's API. */
export const VERSION = '0.1.0';
