/**
 * Serial consoles shared between clients. QEMU's console socket takes one
 * client at a time, so the daemon holds a single connection per VM while
 * anyone is attached and fans it out: every attached client (browser tabs,
 * `vireo vm console` through the daemon) sees the output, and any of them
 * can type, like a shared terminal.
 */
import { vmPaths, type VireoPaths } from '../core/paths.js';
import { SerialConsole } from '../core/vm/console.js';
import { serialSocketOf } from '../core/qemu/argv.js';

export interface ConsoleClient {
  send(data: Buffer): void;
  /** The VM's console went away (the VM stopped), or the daemon is stopping (code 1001). */
  close(reason: string, code?: number): void;
}

interface Session {
  console: SerialConsole;
  clients: Set<ConsoleClient>;
}

export class ConsoleHub {
  private readonly sessions = new Map<string, Promise<Session>>();

  constructor(private readonly paths: VireoPaths) {}

  /** Attaches a client; returns functions to type into the console and to detach. */
  async attach(vm: string, serial: number, client: ConsoleClient): Promise<{ write(data: Buffer | string): void; detach(): void }> {
    const key = serial === 0 ? vm : `${vm}#${serial}`;
    const session = await this.session(key, serial === 0 ? vmPaths(this.paths, vm).serialSocket : serialSocketOf(vmPaths(this.paths, vm), serial));
    session.clients.add(client);
    return {
      write: (data) => session.console.write(data),
      detach: () => {
        session.clients.delete(client);
        if (session.clients.size === 0) this.end(key, session);
      },
    };
  }

  async close(): Promise<void> {
    for (const [vm, pending] of this.sessions) {
      const session = await pending.catch(() => undefined);
      if (session) this.end(vm, session, 'the daemon is shutting down', 1001);
    }
  }

  /** One connection per VM and port (vm, or vm#N for extra port N): QEMU's socket takes one client at a time. */
  private session(vm: string, socket: string): Promise<Session> {
    let pending = this.sessions.get(vm);
    if (!pending) {
      pending = SerialConsole.connect(socket).then((console) => {
        const session: Session = { console, clients: new Set() };
        console.onData((text) => {
          const data = Buffer.from(text, 'utf8');
          for (const client of session.clients) client.send(data);
        });
        console.onClose(() => this.end(vm, session, `the console of VM '${vm.replace(/#.*/, '')}' closed (the VM stopped)`));
        return session;
      });
      pending.catch(() => this.sessions.delete(vm));
      this.sessions.set(vm, pending);
    }
    return pending;
  }

  private end(vm: string, session: Session, reason?: string, code?: number): void {
    this.sessions.delete(vm);
    if (reason) for (const client of session.clients) client.close(reason, code);
    session.clients.clear();
    void session.console.close();
  }
}
