/**
 * The graphical console: noVNC over the daemon's VNC WebSocket
 * (GET /vms/NAME/vnc, the VM's VNC server behind it), authenticated with a
 * one-time password the daemon sets for each connection. Scales to fit its
 * box (or shows the screen at its own size), sends Ctrl-Alt-Del, types a
 * pasted text as key presses (for a guest with no clipboard agent: an
 * installer, a BIOS, a log-in prompt), and says when the connection
 * dropped and that it is reconnecting.
 */
import RFB from '@novnc/novnc';
import { useEffect, useRef, useState } from 'preact/hooks';
import { api } from './api.js';
import { errorText } from './ui.js';

/** Keys of a US keyboard: the layout QEMU's guests assume unless told otherwise. */
const UNSHIFTED: Record<string, string> = { '-': 'Minus', '=': 'Equal', '[': 'BracketLeft', ']': 'BracketRight', '\\': 'Backslash', ';': 'Semicolon', "'": 'Quote', ',': 'Comma', '.': 'Period', '/': 'Slash', '`': 'Backquote', ' ': 'Space', '\n': 'Enter', '\t': 'Tab' };
const SHIFTED: Record<string, string> = { '!': '1', '@': '2', '#': '3', $: '4', '%': '5', '^': '6', '&': '7', '*': '8', '(': '9', ')': '0', _: '-', '+': '=', '{': '[', '}': ']', '|': '\\', ':': ';', '"': "'", '<': ',', '>': '.', '?': '/', '~': '`' };
const XK_SHIFT_L = 0xffe1;

/**
 * The key presses that type one character: its X keysym and the physical key
 * (for QEMU's extended key events, which send scancodes), and whether Shift
 * must be held. QEMU's plain keysym path would not add Shift by itself.
 */
export function keystroke(char: string): { keysym: number; code: string | null; shift: boolean } {
  const point = char.codePointAt(0)!;
  if (char === '\n' || char === '\r') return { keysym: 0xff0d, code: 'Enter', shift: false };
  if (char === '\t') return { keysym: 0xff09, code: 'Tab', shift: false };
  if (/^[a-z]$/.test(char)) return { keysym: point, code: `Key${char.toUpperCase()}`, shift: false };
  if (/^[A-Z]$/.test(char)) return { keysym: point, code: `Key${char}`, shift: true };
  if (/^[0-9]$/.test(char)) return { keysym: point, code: `Digit${char}`, shift: false };
  if (UNSHIFTED[char]) return { keysym: point, code: UNSHIFTED[char]!, shift: false };
  const base = SHIFTED[char];
  if (base) return { keysym: point, code: /^[0-9]$/.test(base) ? `Digit${base}` : UNSHIFTED[base]!, shift: true };
  // Anything else: Latin-1 keysyms equal their code point, the rest are 0x01000000 + code point (X11's rule).
  return { keysym: point < 0x100 ? point : 0x01000000 + point, code: null, shift: false };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Types text into the guest key by key, paced so that a slow (TCG) guest's keyboard buffer keeps up. */
async function typeText(rfb: RFB, text: string, isCurrent: () => boolean): Promise<void> {
  for (const char of text.replace(/\r\n/g, '\n')) {
    if (!isCurrent()) return;
    const { keysym, code, shift } = keystroke(char);
    if (shift) rfb.sendKey(XK_SHIFT_L, 'ShiftLeft', true);
    rfb.sendKey(keysym, code, true);
    rfb.sendKey(keysym, code, false);
    if (shift) rfb.sendKey(XK_SHIFT_L, 'ShiftLeft', false);
    await sleep(12);
  }
}

/** WebSocket close codes the daemon uses when there is nothing to connect to: retrying will not help. */
const FINAL_CODES: Record<number, string> = { 4404: 'no such VM', 4409: 'the VM is not running or has no graphical console', 4401: 'the session ended' };

export default function GraphicalConsole({ vm, running, hasVnc }: { vm: string; running: boolean; hasVnc: boolean }) {
  const box = useRef<HTMLDivElement>(null);
  const rfb = useRef<RFB>();
  const [status, setStatus] = useState('connecting…');
  const [connected, setConnected] = useState(false);
  const [scale, setScale] = useState(true);
  const [paste, setPaste] = useState('');
  const [typing, setTyping] = useState(false);
  const [generation, setGeneration] = useState(0);

  useEffect(() => {
    if (!box.current || !running || !hasVnc) return;
    let stopped = false;
    let retry: ReturnType<typeof setTimeout> | undefined;
    const connect = async () => {
      setStatus('connecting…');
      let password: string;
      try {
        ({ password } = await api.call('POST /vms/:name/vnc/password', { params: { name: vm }, body: { validSeconds: 30 } }));
      } catch (failure) {
        if (stopped) return;
        setStatus(`cannot connect: ${errorText(failure)}; retrying…`);
        retry = setTimeout(() => void connect(), 3000);
        return;
      }
      if (stopped || !box.current) return;
      const socket = api.vnc(vm);
      let finalReason: string | undefined;
      socket.addEventListener('close', (event) => {
        finalReason = FINAL_CODES[event.code] ? `${FINAL_CODES[event.code]}${event.reason ? ` (${event.reason})` : ''}` : undefined;
      });
      const client = new RFB(box.current, socket, { credentials: { password } });
      client.scaleViewport = scale;
      client.background = '#000';
      rfb.current = client;
      client.addEventListener('connect', () => {
        setConnected(true);
        setStatus('connected');
      });
      client.addEventListener('securityfailure', (event) => {
        setStatus(`refused by the VNC server: ${(event as CustomEvent<{ reason?: string }>).detail.reason ?? 'authentication failed'}`);
      });
      client.addEventListener('disconnect', () => {
        setConnected(false);
        if (rfb.current === client) rfb.current = undefined;
        if (stopped) return;
        // The close event has run by now; a final reason (no VM, not running) ends the retries.
        if (finalReason) {
          setStatus(`disconnected: ${finalReason}`);
          return;
        }
        setStatus('disconnected; reconnecting…');
        retry = setTimeout(() => void connect(), 2000);
      });
    };
    void connect();
    return () => {
      stopped = true;
      clearTimeout(retry);
      rfb.current?.disconnect();
      rfb.current = undefined;
    };
  }, [vm, running, hasVnc, generation]);

  useEffect(() => {
    if (rfb.current) rfb.current.scaleViewport = scale;
  }, [scale]);

  if (!hasVnc) return <p class="muted" data-testid="vnc-absent">This VM has no graphical console. Add one in its settings while it is stopped (<code>vnc: {'{}'}</code> in its spec), then start it.</p>;
  if (!running) return <p class="muted">The graphical console is available while the VM runs.</p>;
  const type = async () => {
    const client = rfb.current;
    if (!client || !paste) return;
    setTyping(true);
    try {
      await typeText(client, paste, () => rfb.current === client);
    } finally {
      setTyping(false);
      client.focus();
    }
  };
  return (
    <div class="console">
      <div class="vnc-toolbar">
        <p class="console-status" role="status" data-testid="vnc-status">Graphical console: {status}</p>
        <span class="spacer" />
        <button type="button" disabled={!connected} onClick={() => rfb.current?.sendCtrlAltDel()} data-testid="vnc-cad">Send Ctrl-Alt-Del</button>
        <label class="check"><input type="checkbox" checked={scale} onChange={(event) => setScale((event.target as HTMLInputElement).checked)} /> Scale to fit</label>
        <button type="button" onClick={() => setGeneration((value) => value + 1)}>Reconnect</button>
      </div>
      <div class="vnc-screen" ref={box} data-testid="vnc-screen" aria-label={`Graphical console of ${vm}; click to type into it`} />
      <form class="inline-form vnc-paste" onSubmit={(event) => { event.preventDefault(); void type(); }}>
        <div class="field">
          <label for="vnc-paste">Paste as typing (sent as key presses, US layout)</label>
          <textarea id="vnc-paste" rows={2} value={paste} onInput={(event) => setPaste((event.target as HTMLTextAreaElement).value)} />
        </div>
        <button type="submit" disabled={!connected || !paste || typing} data-testid="vnc-type">{typing ? 'Typing…' : 'Type it'}</button>
      </form>
    </div>
  );
}
