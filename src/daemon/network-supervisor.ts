/**
 * Keeps networks serving while the daemon runs: at start it reconciles them
 * (bridges, dnsmasq and rules come back after a reboot; after a daemon crash
 * nothing needed redoing, since none of them is the daemon's child), then
 * checks every second that each dnsmasq lives and each bridge exists,
 * bringing back what died and saying so as an event.
 */
import type { VireoPaths } from '../core/paths.js';
import type { EventBus } from './events.js';

const CHECK_INTERVAL_MS = 1000;

export class NetworkSupervisor {
  private timer: NodeJS.Timeout | undefined;
  private checking = false;

  constructor(private readonly paths: VireoPaths, private readonly events: EventBus, private readonly log: (line: string) => void = () => undefined) {}

  async start(): Promise<void> {
    const service = await import('../core/network/service.js');
    for (const report of await service.reconcileNetworks(this.paths)) {
      if (report.error) this.log(`network ${report.network}: ${report.error}`);
      if (report.error || report.bridgeCreated || report.dnsmasqStarted || report.tapsReattached.length > 0) {
        this.events.publish('network.reconciled', { ...report });
      }
    }
    this.timer = setInterval(() => void this.check(), CHECK_INTERVAL_MS);
    this.timer.unref();
  }

  private async check(): Promise<void> {
    if (this.checking) return;
    this.checking = true;
    try {
      const service = await import('../core/network/service.js');
      const dead = await service.deadDnsmasqs(this.paths);
      const missing = await service.missingBridges(this.paths);
      if (dead.length === 0 && missing.length === 0) return;
      for (const report of await service.reconcileNetworks(this.paths)) {
        if (!dead.includes(report.network) && !missing.includes(report.network)) continue;
        if (report.error) this.log(`network ${report.network}: ${report.error}`);
        this.events.publish('network.dnsmasq', {
          network: report.network,
          action: report.error ? 'failed' : 'restarted',
          dnsmasqDied: dead.includes(report.network),
          bridgeRecreated: report.bridgeCreated,
          tapsReattached: report.tapsReattached,
          ...(report.error ? { error: report.error } : {}),
        });
      }
    } catch (error) {
      this.log(`network check: ${error instanceof Error ? error.message : String(error)}`);
    } finally {
      this.checking = false;
    }
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
  }
}
