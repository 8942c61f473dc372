/**
 * The serial console: xterm.js over the daemon's console WebSocket. The
 * daemon fans one console out to every client, so two tabs both work. A
 * dropped connection is said on screen and retried; the terminal fits its
 * box and follows window resizes. xterm's selection copies, and Ctrl+Shift+V
 * or the browser's paste types into the guest.
 */
import { Terminal } from '@xterm/xterm';
import { FitAddon } from '@xterm/addon-fit';
import { useEffect, useRef, useState } from 'preact/hooks';
import { api } from './api.js';

const KEYS: [string, string, string][] = [
  ['Esc', 'Escape', '\x1b'],
  ['Tab', 'Tab', '\t'],
  ['Ctrl-C', 'Control C (interrupt)', '\x03'],
  ['Ctrl-D', 'Control D (end of input)', '\x04'],
  ['↑', 'Up arrow', '\x1b[A'],
  ['↓', 'Down arrow', '\x1b[B'],
  ['←', 'Left arrow', '\x1b[D'],
  ['→', 'Right arrow', '\x1b[C'],
];

export default function SerialConsole({ vm, running }: { vm: string; running: boolean }) {
  const box = useRef<HTMLDivElement>(null);
  const [status, setStatus] = useState('connecting…');
  const send = useRef<(data: string) => void>();
  useEffect(() => {
    if (!box.current || !running) return;
    // lineHeight above 1: xterm's DOM renderer clips each row at the measured cell height, and
    // common monospace fonts (DejaVu Sans Mono, Debian's default) draw '_' below it, so
    // underscores vanished at 1.0. The test checks the pixels under a printed underscore.
    const terminal = new Terminal({ convertEol: false, cursorBlink: true, fontSize: 14, lineHeight: 1.2, scrollback: 5000, fontFamily: '"DejaVu Sans Mono", ui-monospace, Menlo, Consolas, "Liberation Mono", monospace' });
    const fit = new FitAddon();
    terminal.loadAddon(fit);
    terminal.open(box.current);
    // Lets the browser test read the terminal's buffer, not only what the DOM shows.
    (box.current as HTMLDivElement & { terminal?: Terminal }).terminal = terminal;
    fit.fit();
    terminal.focus();
    let socket: WebSocket | undefined;
    let stopped = false;
    let retry: ReturnType<typeof setTimeout> | undefined;
    const encoder = new TextEncoder();
    const connect = () => {
      socket = api.console(vm);
      socket.onopen = () => {
        setStatus('connected');
        // A carriage return makes the guest print its prompt, so the user sees a live console at once.
        socket?.send(encoder.encode('\r'));
      };
      socket.onmessage = (event) => terminal.write(new Uint8Array(event.data as ArrayBuffer));
      socket.onclose = (event) => {
        if (stopped) return;
        setStatus(`disconnected${event.reason ? `: ${event.reason}` : ''}; reconnecting…`);
        retry = setTimeout(connect, 2000);
      };
    };
    connect();
    const write = (data: string) => {
      if (socket?.readyState === WebSocket.OPEN) socket.send(encoder.encode(data));
    };
    send.current = (data) => {
      write(data);
      terminal.focus();
    };
    const input = terminal.onData(write);
    const resize = () => fit.fit();
    window.addEventListener('resize', resize);
    return () => {
      stopped = true;
      clearTimeout(retry);
      input.dispose();
      window.removeEventListener('resize', resize);
      socket?.close();
      terminal.dispose();
    };
  }, [vm, running]);
  if (!running) return <p class="muted">The serial console is available while the VM runs.</p>;
  return (
    <div class="console">
      <p class="console-status" role="status" data-testid="console-status">Serial console: {status}</p>
      {/* Keys a phone's on-screen keyboard lacks; sent as the terminal would send them. */}
      <div class="key-bar" role="toolbar" aria-label="Special keys">
        {KEYS.map(([label, name, sequence]) => (
          <button type="button" key={label} aria-label={name} onClick={() => send.current?.(sequence)}>{label}</button>
        ))}
      </div>
      <div class="terminal" ref={box} data-testid="terminal" aria-label={`Serial console of ${vm}`} />
    </div>
  );
}
