/**
 * The interactive serial console: the terminal in raw mode piped to the
 * guest's serial port, until Ctrl-] (as in virsh) or the VM goes away.
 */
import type { SerialConsole } from '../core/vm/console.js';
import { note } from './output.js';

const ESCAPE = 0x1d; // Ctrl-]

/** Returns the exit code: 0 when the user detached or the VM stopped. */
export async function attachConsole(console: SerialConsole, name: string): Promise<number> {
  const stdin = process.stdin;
  note(`Connected to the console of VM '${name}'. Escape character is ^] (Ctrl-]).`);
  const raw = stdin.isTTY;
  if (raw) stdin.setRawMode(true);
  return new Promise<number>((resolve) => {
    let finished = false;
    const finish = (message: string) => {
      if (finished) return; // closing the console fires onClose too
      finished = true;
      if (raw) stdin.setRawMode(false);
      // A paused pipe still holds the event loop open; let go of stdin entirely.
      stdin.destroy();
      stdin.off('data', onInput);
      stdin.off('end', onEnd);
      void console.close();
      note(`\r\n${message}`);
      resolve(0);
    };
    const onInput = (chunk: Buffer) => {
      const escape = chunk.indexOf(ESCAPE);
      if (escape !== -1) {
        if (escape > 0) console.write(chunk.subarray(0, escape));
        finish('Detached from the console.');
        return;
      }
      console.write(chunk);
    };
    // Piped input: send it all, give the guest a moment to answer, then leave.
    const onEnd = () => setTimeout(() => finish('Input ended; detached.'), 1000);
    console.onData((text) => process.stdout.write(text));
    console.onClose(() => finish(`The console of VM '${name}' closed (the VM stopped).`));
    stdin.on('data', onInput);
    stdin.on('end', onEnd);
    stdin.resume();
  });
}
