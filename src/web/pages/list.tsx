/** The VM list: live states from the event stream, filter and sort, bulk start and stop. */
import { useEffect, useState } from 'preact/hooks';
import type { Summary } from '../../api/ui.js';
import { api, formatBytes, useLive, type Vm } from '../api.js';
import { Action, StateBadge } from '../ui.js';

type SortKey = 'name' | 'host' | 'state' | 'cpus' | 'memory' | 'cpuUse' | 'memUse';

type Usage = Summary['usage'];

function addresses(vm: Vm): string {
  const forwards = vm.definition.nics.flatMap((nic) => nic.forwards.map((forward) => `${forward.hostAddress}:${forward.hostPort}→${forward.guestPort}`));
  const nics = vm.definition.nics.length === 0 ? 'no NIC' : vm.definition.nics.map((nic) => `${nic.network} ${nic.mac}`).join(', ');
  return forwards.length > 0 ? `${nics}; ${forwards.join(', ')}` : nics;
}

export function VmList({ query }: { query: URLSearchParams }) {
  const live = useLive();
  const [filter, setFilter] = useState(query.get('q') ?? '');
  const [stateFilter, setStateFilter] = useState(query.get('state') ?? '');
  const [sort, setSort] = useState<{ key: SortKey; descending: boolean }>({ key: 'name', descending: false });
  const [selected, setSelected] = useState<Set<string>>(new Set());
  const [usage, setUsage] = useState<Usage>({});
  // CPU and memory use are sampled by the daemon every 2 s (read here at that pace); states come from the event stream.
  useEffect(() => {
    let current = true;
    const load = () => api.call('GET /ui/summary').then((summary) => current && setUsage(summary.usage), () => {});
    void load();
    const timer = setInterval(load, 2000);
    return () => {
      current = false;
      clearInterval(timer);
    };
  }, []);

  const rows = (() => {
    const needle = filter.trim().toLowerCase();
    const value = (vm: Vm): string | number => {
      switch (sort.key) {
        case 'name': return vm.definition.name;
        case 'host': return vm.host ?? '';
        case 'state': return vm.runtime.state;
        case 'cpus': return vm.definition.cpus.count;
        case 'memory': return vm.definition.memory;
        case 'cpuUse': return usage[vm.definition.name]?.cpu ?? -1;
        case 'memUse': return usage[vm.definition.name]?.memory ?? -1;
      }
    };
    return [...live.vms.values()]
      .filter((vm) => (!needle || vm.definition.name.toLowerCase().includes(needle) || (vm.definition.description ?? '').toLowerCase().includes(needle)) && (!stateFilter || vm.runtime.state === stateFilter))
      .sort((a, b) => {
        const left = value(a);
        const right = value(b);
        const order = typeof left === 'number' && typeof right === 'number' ? left - right : String(left).localeCompare(String(right));
        return sort.descending ? -order : order;
      });
  })();

  const header = (key: SortKey, label: string, narrow = '') => (
    <th class={narrow} aria-sort={sort.key === key ? (sort.descending ? 'descending' : 'ascending') : 'none'}>
      <button type="button" class="sort" onClick={() => setSort({ key, descending: sort.key === key ? !sort.descending : false })}>
        {label}{sort.key === key ? (sort.descending ? ' ▼' : ' ▲') : ''}
      </button>
    </th>
  );
  const toggle = (name: string) => {
    const next = new Set(selected);
    if (next.has(name)) next.delete(name);
    else next.add(name);
    setSelected(next);
  };
  // In a cluster the list is every member's VMs, each with the host that runs it.
  const clustered = live.cluster.enabled;
  const chosen = rows.filter((vm) => selected.has(vm.definition.name));
  const bulk = (verb: 'start' | 'stop') => async () => {
    const targets = chosen.filter((vm) => (verb === 'start' ? vm.runtime.state === 'stopped' : vm.runtime.state !== 'stopped'));
    const results = await Promise.allSettled(targets.map((vm) => api.call(verb === 'start' ? 'POST /vms/:name/start' : 'POST /vms/:name/stop', { params: { name: vm.definition.name } })));
    const failed = results.filter((result) => result.status === 'rejected');
    if (failed.length > 0) throw new Error(`${failed.length} of ${targets.length} could not ${verb}: ${(failed[0] as PromiseRejectedResult).reason instanceof Error ? ((failed[0] as PromiseRejectedResult).reason as Error).message : ''}`);
  };

  return (
    <div class="page">
      <div class="page-head">
        <h1>Virtual machines</h1>
        <a class="button primary" href="#/create">Create VM</a>
      </div>
      <div class="toolbar" role="search">
        <label class="inline">
          <span class="sr-only">Filter by name</span>
          <input type="search" placeholder="Filter by name or description" value={filter} onInput={(event) => setFilter((event.target as HTMLInputElement).value)} />
        </label>
        <label class="inline">
          <span class="sr-only">State</span>
          <select value={stateFilter} onChange={(event) => setStateFilter((event.target as HTMLSelectElement).value)}>
            <option value="">All states</option>
            <option value="running">Running</option>
            <option value="stopped">Stopped</option>
            <option value="paused">Paused</option>
          </select>
        </label>
        <span class="muted">{rows.length} of {live.vms.size}</span>
        <span class="spacer" />
        <Action label={`Start selected (${chosen.length})`} disabled={chosen.length === 0} run={bulk('start')} />
        <Action label={`Stop selected (${chosen.length})`} disabled={chosen.length === 0} run={bulk('stop')} />
      </div>
      <div class="table-wrap">
        <table class="vm-table" data-testid="vm-table">
          <thead>
            <tr>
              <th>
                <input type="checkbox" aria-label="Select all shown" checked={rows.length > 0 && chosen.length === rows.length} onChange={(event) => setSelected((event.target as HTMLInputElement).checked ? new Set(rows.map((vm) => vm.definition.name)) : new Set())} />
              </th>
              {header('name', 'Name')}
              {clustered && header('host', 'Host')}
              {header('state', 'State')}
              {header('cpus', 'vCPUs', 'wide')}
              {header('memory', 'Memory')}
              {header('cpuUse', 'CPU use')}
              {header('memUse', 'Memory use', 'wide')}
              <th class="wide">Network</th>
            </tr>
          </thead>
          <tbody>
            {rows.map((vm) => {
              const name = vm.definition.name;
              const use = usage[name];
              // Use is sampled by each host for its own VMs: this daemon has figures for its VMs only.
              const running = vm.runtime.state === 'running' && (!clustered || vm.host === live.cluster.self);
              return (
                <tr key={name} data-vm={name}>
                  <td><input type="checkbox" aria-label={`Select ${name}`} checked={selected.has(name)} onChange={() => toggle(name)} /></td>
                  <td><a href={`#/vms/${encodeURIComponent(name)}`}>{name}</a>{vm.definition.description && <div class="muted small">{vm.definition.description}</div>}</td>
                  {clustered && <td data-testid="vm-host">{vm.host ?? '–'}</td>}
                  <td><StateBadge state={vm.runtime.state} /></td>
                  <td class="wide">{vm.definition.cpus.count}</td>
                  <td>{formatBytes(vm.definition.memory * 1024 * 1024)}</td>
                  <td data-testid="cpu-use" data-value={use && running ? use.cpu : undefined}>{use && running ? `${(use.cpu * 100).toFixed(0)}%` : running ? '…' : '–'}</td>
                  <td class="wide">{use && running ? formatBytes(use.memory) : running ? '…' : '–'}</td>
                  <td class="wide small">{addresses(vm)}</td>
                </tr>
              );
            })}
          </tbody>
        </table>
        {live.loaded && live.vms.size === 0 && <p class="muted">No VMs yet. <a href="#/create">Create one</a>.</p>}
      </div>
    </div>
  );
}
