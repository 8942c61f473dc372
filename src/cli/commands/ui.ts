/**
 * `vireo ui`: the web UI for a daemon reached through its Unix socket. The
 * daemon opens a listener on 127.0.0.1 (once) and makes a one-time log-in
 * link, which this prints and, with --open, hands to the desktop's browser.
 * The link logs in one browser, once, within five minutes.
 */
import { Command } from 'commander';
import { ApiClient } from '../../client/api-client.js';
import type { VireoPaths } from '../../core/paths.js';
import { start } from '../../core/process/run.js';
import { note } from '../output.js';

export function uiCommand(paths: () => VireoPaths): Command {
  return new Command('ui')
    .description('open the web UI of the local daemon: prints a one-time log-in link for a listener on 127.0.0.1')
    .option('--open', 'also open the link with xdg-open')
    .action(async (flags: { open?: boolean }) => {
      const api = new ApiClient({ socketPath: paths().daemonSocket });
      const link = await api.call('POST /ui/links');
      process.stdout.write(`${link.url}\n`);
      note(`open this link within ${Math.round(link.expiresInSeconds / 60)} minutes; it logs in one browser, once`);
      if (flags.open) {
        // The browser may stay up long after this command: it outlives it.
        const opener = start('xdg-open', [link.url], { outlive: true });
        if (opener.pid === undefined) note('xdg-open is not available; open the link yourself');
      }
    });
}
