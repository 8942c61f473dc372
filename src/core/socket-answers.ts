/**
 * Whether something answers on a Unix socket. The daemon asks it of its API
 * socket (another daemon running?) and the watchdog process of its own (another
 * watchdog?). Node's own modules only: the watchdog's one-file build takes it in.
 */
import { connect } from 'node:net';

export function socketAnswers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(path);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}
