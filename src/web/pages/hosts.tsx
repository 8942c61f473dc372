/**
 * The cluster's hosts: each member with its health (up or down, as its lease
 * says), whether it leads, its labels, capacity against what its VMs are
 * given and its measured load, its state (active or in maintenance), and the
 * maintenance buttons (evacuate: migrate its VMs off and take no new ones;
 * restore). Below, the cluster's events as they happen on any member.
 *
 * Members going down are not events on this daemon's stream (a lease just
 * expires), so the page re-reads GET /cluster every few seconds while open.
 */
import { useEffect, useState } from 'preact/hooks';
import type { EvacuationResult, MemberView } from '../../api/cluster.js';
import { api, formatBytes, timeAgo, useLive } from '../api.js';
import { Action, Card, Meter, StateBadge } from '../ui.js';
import { eventSummary } from './dashboard.js';

const REFRESH_MS = 3000;

function Evacuation({ result }: { result: EvacuationResult }) {
  return (
    <div class="evacuation" data-testid={`evacuation-${result.host}`} role="status">
      <strong>Evacuated {result.host}:</strong>{' '}
      {result.moved.length === 0 ? 'nothing moved' : result.moved.map((move) => `${move.vm} → ${move.to} (${move.kind})`).join(', ')}
      {result.blocked.length > 0 && (
        <ul class="blocked">
          {result.blocked.map((entry) => <li key={entry.vm} data-vm={entry.vm}><strong>{entry.vm}</strong> stays: {entry.message} <code>{entry.reason}</code></li>)}
        </ul>
      )}
    </div>
  );
}

function HostRow({ member, onChanged, onEvacuated, upCount }: { member: MemberView; onChanged: () => void; onEvacuated: (result: EvacuationResult) => void; upCount: number }) {
  const memoryMiB = member.capacity.memoryMiB;
  const maintenance = member.state === 'maintenance';
  return (
    <tr data-host={member.name}>
      <td>
        <strong>{member.name}</strong>
        {member.leader && <span class="leader-badge" data-testid="leader" title="Runs the cluster's decisions">leader</span>}
        <div class="muted small">{member.url}</div>
      </td>
      <td data-testid="health"><StateBadge state={member.alive ? 'up' : 'down'} />{member.since && <div class="muted small">since {timeAgo(member.since)}</div>}</td>
      <td data-testid="member-state"><StateBadge state={member.state} /></td>
      <td data-testid="labels">{Object.entries(member.labels).map(([key, value]) => <code key={key} class="label">{key}={value}</code>)}</td>
      <td class="capacity" data-testid="capacity">
        <Meter label={`vCPUs given (of ${member.capacity.cpus} CPUs)`} used={member.allocated?.vcpus ?? 0} total={member.capacity.cpus} format={(value) => String(value)} />
        <Meter label="Memory given" used={(member.allocated?.memoryMiB ?? 0) * 1024 * 1024} total={memoryMiB * 1024 * 1024} format={formatBytes} />
        <div class="muted small">{member.allocated ? `${member.allocated.vms} VM${member.allocated.vms === 1 ? '' : 's'}` : 'down: allocation unknown'}</div>
      </td>
      <td data-testid="load">
        {member.load ? (
          <>
            <div>CPU {(member.load.cpuFraction * 100).toFixed(0)}%</div>
            <div class="muted small">memory {formatBytes(member.load.memoryUsedMiB * 1024 * 1024)} in use</div>
          </>
        ) : '–'}
      </td>
      <td class="host-actions">
        {maintenance ? (
          <Action label="Restore" testId={`restore-${member.name}`} title="Back in service: it takes new VMs again" run={async () => {
            await api.call('POST /cluster/members/:name/restore', { params: { name: member.name }, body: {} });
            onChanged();
          }} />
        ) : (
          <Action label="Evacuate" testId={`evacuate-${member.name}`} disabled={!member.alive || upCount < 2}
            title={upCount < 2 ? 'The last host that is up cannot be evacuated' : 'Maintenance: migrate its VMs to the others, and place nothing new on it'}
            confirm={`Evacuate ${member.name}? Its VMs migrate to the other hosts and it takes no new VMs until restored.`}
            run={async () => {
              const started = await api.call('POST /cluster/members/:name/evacuate', { params: { name: member.name }, body: {} });
              onChanged();
              const done = await api.waitForOperation(started);
              if (done.result) onEvacuated(done.result);
              onChanged();
            }} />
        )}
      </td>
    </tr>
  );
}

export function Hosts() {
  const live = useLive();
  const [evacuations, setEvacuations] = useState<EvacuationResult[]>([]);
  const reload = () => live.refreshCluster();
  useEffect(() => {
    void reload();
    const timer = setInterval(() => void reload(), REFRESH_MS);
    return () => clearInterval(timer);
  }, []);
  const cluster = live.cluster;
  if (!cluster.enabled) {
    return (
      <div class="page">
        <h1>Hosts</h1>
        <p class="muted">This daemon is not in a cluster. Make one with <code>vireo cluster init</code>, or join one with <code>vireo cluster join</code>.</p>
      </div>
    );
  }
  const members = cluster.members ?? [];
  const up = members.filter((member) => member.alive).length;
  const vmsOn = (host: string) => [...live.vms.values()].filter((vm) => vm.host === host).length;
  const events = live.events.filter((event) => event.kind.startsWith('cluster.') || event.kind === 'vm.migration' || (event.kind === 'operation' && String(event.data['kind'] ?? '').startsWith('host.'))).slice(0, 50);
  return (
    <div class="page">
      <div class="page-head">
        <h1>Hosts</h1>
        <span class="muted" data-testid="cluster-summary">
          cluster {cluster.clusterId} · {up} of {members.length} up · leader <strong data-testid="cluster-leader">{cluster.leader ?? 'none'}</strong> · this daemon is {cluster.self}
        </span>
      </div>
      {cluster.etcd && !cluster.etcd.reachable && <p class="error" role="alert" data-testid="etcd-down">etcd cannot be reached from {cluster.self}: {cluster.etcd.error}. Running VMs keep running; changes that need the cluster are refused.</p>}
      {cluster.totals && (
        <div class="grid">
          <Card title="Cluster capacity">
            <Meter label={`vCPUs given (of ${cluster.totals.capacity.cpus} CPUs)`} used={cluster.totals.allocated.vcpus} total={cluster.totals.capacity.cpus} format={(value) => String(value)} />
            <Meter label="Memory given" used={cluster.totals.allocated.memoryMiB * 1024 * 1024} total={cluster.totals.capacity.memoryMiB * 1024 * 1024} format={formatBytes} />
            <p class="muted small">{cluster.totals.allocated.vms} VMs on the hosts that are up. vCPUs may be overcommitted; memory is not.</p>
          </Card>
        </div>
      )}
      {evacuations.map((result, index) => <Evacuation key={index} result={result} />)}
      <Card title="Members">
        <div class="table-wrap">
          <table class="hosts-table" data-testid="hosts-table">
            <thead><tr><th>Host</th><th>Health</th><th>State</th><th>Labels</th><th>Capacity / given</th><th>Load</th><th /></tr></thead>
            <tbody>
              {members.map((member) => (
                <HostRow key={member.name} member={member} upCount={up} onChanged={() => void reload()} onEvacuated={(result) => setEvacuations([result, ...evacuations.filter((entry) => entry.host !== result.host)])} />
              ))}
            </tbody>
          </table>
        </div>
        <p class="muted small">{members.map((member) => `${member.name}: ${vmsOn(member.name)} listed`).join(' · ')}</p>
      </Card>
      <Card title="Cluster events">
        <div class="table-wrap">
          <table data-testid="cluster-events">
            <thead><tr><th>Time</th><th>Host</th><th>Kind</th><th>VM</th><th>What</th></tr></thead>
            <tbody>
              {events.map((event) => (
                <tr key={`${event.host ?? ''}:${event.epoch}:${event.seq}`} data-kind={event.kind} data-host={event.host}>
                  <td>{new Date(event.time).toLocaleTimeString()}</td><td>{event.host ?? ''}</td><td><code>{event.kind}</code></td><td>{event.vm ?? ''}</td><td>{eventSummary(event.data)}</td>
                </tr>
              ))}
            </tbody>
          </table>
          {events.length === 0 && <p class="muted">No cluster events since this page opened: leader changes, members connecting and migrations appear here as they happen.</p>}
        </div>
      </Card>
    </div>
  );
}
