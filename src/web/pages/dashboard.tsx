/** The dashboard: host capacity against what running VMs take, counts, recent operations and events; in a cluster, the cluster's summary too. */
import { useEffect, useState } from 'preact/hooks';
import type { Summary } from '../../api/ui.js';
import { api, formatBytes, timeAgo, useLive } from '../api.js';
import { Card, Meter, OperationRow } from '../ui.js';

export function Dashboard() {
  const live = useLive();
  const [summary, setSummary] = useState<Summary>();
  // Capacity figures are sampled by the daemon every 2 s; state counts below come from the event stream.
  useEffect(() => {
    let current = true;
    const load = () => api.call('GET /ui/summary').then((value) => current && setSummary(value), () => {});
    void load();
    const timer = setInterval(load, 5000);
    return () => {
      current = false;
      clearInterval(timer);
    };
  }, []);
  const vms = [...live.vms.values()];
  const running = vms.filter((vm) => vm.runtime.state === 'running').length;
  const stopped = vms.filter((vm) => vm.runtime.state === 'stopped').length;
  const operations = [...live.operations.values()].sort((a, b) => String(b.createdAt).localeCompare(String(a.createdAt))).slice(0, 6);
  return (
    <div class="page">
      <h1>Dashboard</h1>
      <div class="grid">
        <Card title="VMs">
          <div class="counts">
            <a href="#/vms?state=running" class="count"><strong data-testid="count-running">{running}</strong> running</a>
            <a href="#/vms?state=stopped" class="count"><strong data-testid="count-stopped">{stopped}</strong> stopped</a>
            <span class="count"><strong>{vms.length - running - stopped}</strong> other</span>
          </div>
        </Card>
        {live.cluster.enabled && live.cluster.totals && (
          <Card title="Cluster" actions={<a href="#/hosts">Hosts</a>}>
            <p data-testid="dashboard-cluster">
              {(live.cluster.members ?? []).filter((member) => member.alive).length} of {(live.cluster.members ?? []).length} hosts up · leader <strong>{live.cluster.leader ?? 'none'}</strong>
              {(live.cluster.members ?? []).some((member) => member.state === 'maintenance') && ` · in maintenance: ${(live.cluster.members ?? []).filter((member) => member.state === 'maintenance').map((member) => member.name).join(', ')}`}
            </p>
            <Meter label="vCPUs given / cluster CPUs" used={live.cluster.totals.allocated.vcpus} total={live.cluster.totals.capacity.cpus} format={String} />
            <Meter label="Memory given / cluster memory" used={live.cluster.totals.allocated.memoryMiB * 1024 * 1024} total={live.cluster.totals.capacity.memoryMiB * 1024 * 1024} format={formatBytes} />
          </Card>
        )}
        <Card title={live.cluster.enabled && live.cluster.self ? `This host's capacity (${live.cluster.self})` : 'Host capacity'}>
          {summary ? (
            <>
              <Meter label="vCPUs of running VMs / host CPUs" used={summary.allocated.vcpus} total={summary.host.cpus} format={String} />
              <Meter label="Memory of running VMs / host memory" used={summary.allocated.memoryBytes} total={summary.host.memoryTotal} format={formatBytes} />
              <Meter label="Storage used" used={summary.host.storageSize - summary.host.storageAvailable} total={summary.host.storageSize} format={formatBytes} />
              <p class="muted">Defined in all: {summary.defined.vcpus} vCPUs, {formatBytes(summary.defined.memoryBytes)}.{summary.host.memoryAvailable !== undefined && ` Host memory available: ${formatBytes(summary.host.memoryAvailable)}.`}</p>
            </>
          ) : (
            <p class="muted">Loading…</p>
          )}
        </Card>
      </div>
      <Card title="Recent operations" actions={<a href="#/operations">All operations</a>}>
        <div class="table-wrap">
          <table>
            <thead><tr>{live.cluster.enabled && <th>Host</th>}<th>Kind</th><th>Target</th><th>State</th><th>Progress</th><th>Started</th><th /></tr></thead>
            <tbody>{operations.map((operation) => <OperationRow key={operation.id} operation={operation} showHost={live.cluster.enabled} />)}</tbody>
          </table>
        </div>
      </Card>
      {/* QEMU's own events (a guest agent's port opening and closing every second) would bury the rest: the events page has them. */}
      <Card title="Recent events" actions={<a href="#/events">All events</a>}>
        <ul class="events">
          {live.events.filter((event) => event.kind !== 'vm.qmp').slice(0, 8).map((event) => (
            <li key={`${event.host ?? ""}:${event.epoch}:${event.seq}`}><time>{timeAgo(event.time)}</time> <code>{event.kind}</code> {event.vm} {eventSummary(event.data)}</li>
          ))}
          {live.events.length === 0 && <li class="muted">None since this page opened.</li>}
        </ul>
      </Card>
    </div>
  );
}

export function eventSummary(data: Record<string, unknown>): string {
  if (typeof data['state'] === 'string' && typeof data['kind'] === 'string') return `${data['kind']} ${data['state']}`;
  if (typeof data['state'] === 'string') return `${data['previous'] ? `${String(data['previous'])} → ` : ''}${data['state']}`;
  if (typeof data['phase'] === 'string') return `migration ${data['phase']}`;
  if (typeof data['event'] === 'string') return String(data['event']);
  return '';
}
