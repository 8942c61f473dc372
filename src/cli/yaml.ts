/**
 * The yaml package for the CLI, which loads it only when a command needs it
 * (`await import('./yaml.js')`). Not `await import('yaml')`: yaml is
 * CommonJS, and in the bundled CLI (scripts/bundle-cli.ts) a dynamic import
 * of a CommonJS package yields its default export only, so its named
 * exports would be undefined; a static import keeps them.
 */
export { parse, stringify } from 'yaml';
