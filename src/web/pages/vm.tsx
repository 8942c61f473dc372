/** One VM: overview and actions, graphs, serial console, snapshots, clone/template/migrate, settings. */
import { lazy, Suspense } from 'preact/compat';
import { useEffect, useState } from 'preact/hooks';
import type { SnapshotView } from '../../api/snapshots.js';
import { bootDiskIndex } from '../../core/model/boot-disk.js';
import { api, formatBytes, live, timeAgo, useCall, useLive, type Vm } from '../api.js';
import { Action, Card, Field, StateBadge, errorText } from '../ui.js';

const SerialConsole = lazy(() => import('../console.js'));
const GraphicalConsole = lazy(() => import('../vnc.js'));
const Graphs = lazy(() => import('../graphs.js'));

/** Where this tab migrated VMs to, so their page says where they went once they vanish from this host's list. */
const movedTo = new Map<string, string>();

/**
 * Migrations to a cluster member this tab started, by VM, with their
 * progress. Kept outside the form: while the VM is between hosts (its old
 * host has let it go, the cluster has not yet listed it on the new one) its
 * page has no VM to show for a moment, and the form unmounts and comes back.
 */
interface ClusterMove {
  to: string;
  progress: string;
  fraction?: number;
  /** Still under way (another move of it waits). */
  active: boolean;
}
const clusterMoves = new Map<string, ClusterMove>();
const moveListeners = new Set<() => void>();

function setClusterMove(name: string, move: ClusterMove | undefined): void {
  if (move) clusterMoves.set(name, move);
  else clusterMoves.delete(name);
  for (const listener of moveListeners) listener();
}

function useClusterMove(name: string): ClusterMove | undefined {
  const [, setTick] = useState(0);
  useEffect(() => {
    const listener = () => setTick((tick) => tick + 1);
    moveListeners.add(listener);
    return () => {
      moveListeners.delete(listener);
    };
  }, []);
  return clusterMoves.get(name);
}

const TABS = ['overview', 'graphs', 'console', 'display', 'snapshots', 'manage', 'settings'] as const;
const TAB_LABELS: Record<string, string> = { console: 'Serial console', display: 'Graphical console' };
type Tab = (typeof TABS)[number];

export function VmPage({ name, tab }: { name: string; tab: string }) {
  const state = useLive();
  const vm = state.vms.get(name);
  const current: Tab = (TABS as readonly string[]).includes(tab) ? (tab as Tab) : 'overview';
  const moving = useClusterMove(name);
  if (!vm) {
    const moved = movedTo.get(name);
    return (
      <div class="page">
        <h1>{name}</h1>
        {moving ? (
          <p role="status" data-testid="moving">{name} is migrating to {moving.to}: {moving.progress}</p>
        ) : moved ? (
          <p role="status" data-testid="moved">
            {name} was migrated and now runs on {moved}. <a href={`${moved.replace(/\/$/, '')}/#/vms/${encodeURIComponent(name)}`} data-testid="moved-link">Open it there</a> (log in to that daemon's web UI with one of its tokens).
          </p>
        ) : (
          <p>{state.loaded ? 'No such VM (deleted or migrated away).' : 'Loading…'}</p>
        )}
      </div>
    );
  }
  const running = vm.runtime.state !== 'stopped';
  const post = (key: 'POST /vms/:name/start' | 'POST /vms/:name/stop' | 'POST /vms/:name/pause' | 'POST /vms/:name/resume' | 'POST /vms/:name/reboot' | 'POST /vms/:name/kill') => () => api.call(key, { params: { name } });
  return (
    <div class="page">
      <div class="page-head">
        <h1>{name} <StateBadge state={vm.runtime.state} /></h1>
        <div class="actions">
          {!running && <Action label="Start" run={post('POST /vms/:name/start')} testId="vm-start" />}
          {running && <Action label="Stop" run={post('POST /vms/:name/stop')} testId="vm-stop" />}
          {vm.runtime.state === 'running' && <Action label="Pause" run={post('POST /vms/:name/pause')} />}
          {vm.runtime.state === 'paused' && <Action label="Resume" run={post('POST /vms/:name/resume')} />}
          {running && <Action label="Reboot" run={post('POST /vms/:name/reboot')} />}
          {running && <Action label="Power off" danger confirm={`Power off ${name} at once, without a shutdown?`} run={post('POST /vms/:name/kill')} />}
        </div>
      </div>
      <nav class="tabs" aria-label="VM sections">
        {TABS.map((entry) => (
          <a key={entry} href={`#/vms/${encodeURIComponent(name)}/${entry}`} aria-current={entry === current ? 'page' : undefined}>{TAB_LABELS[entry] ?? entry[0]!.toUpperCase() + entry.slice(1)}</a>
        ))}
      </nav>
      <Suspense fallback={<p class="muted">Loading…</p>}>
        {current === 'overview' && <Overview vm={vm} />}
        {current === 'graphs' && <Graphs vm={name} />}
        {current === 'console' && <SerialConsole vm={name} running={running} />}
        {current === 'display' && <GraphicalConsole vm={name} running={running} hasVnc={vm.definition.vnc !== undefined} />}
        {current === 'snapshots' && <Snapshots vm={name} />}
        {current === 'manage' && <Manage vm={vm} />}
        {current === 'settings' && <Settings vm={vm} />}
      </Suspense>
    </div>
  );
}

function Overview({ vm }: { vm: Vm }) {
  const def = vm.definition;
  const boot = def.boot.kernel && 'image' in def.boot.kernel ? `image ${def.boot.kernel.image}` : def.boot.kernel ? 'direct kernel' : def.boot.firmware.toUpperCase();
  return (
    <div class="grid">
      <Card title="Overview">
        <dl class="facts">
          <dt>State</dt><dd><StateBadge state={vm.runtime.state} />{vm.runtime.accel && ` (${vm.runtime.accel})`}</dd>
          {vm.runtime.startedAt && (<><dt>Started</dt><dd>{timeAgo(vm.runtime.startedAt)}</dd></>)}
          <dt>vCPUs</dt><dd>{def.cpus.count} ({def.cpus.sockets} × {def.cpus.cores} × {def.cpus.threads})</dd>
          <dt>Memory</dt><dd>{formatBytes(def.memory * 1024 * 1024)}</dd>
          <dt>Machine</dt><dd>{def.machine}, {def.accelerator}</dd>
          <dt>Boot</dt><dd>{boot}</dd>
          <dt>UUID</dt><dd><code>{def.uuid}</code></dd>
          {def.description && (<><dt>Description</dt><dd>{def.description}</dd></>)}
        </dl>
      </Card>
      <Card title="Disks">
        <ul>{def.disks.map((disk, index) => <li key={index}><code>{disk.volume}</code> {disk.media} on {disk.bus}{disk.readOnly ? ', read-only' : ''}</li>)}</ul>
        {def.disks.length === 0 && <p class="muted">No disks.</p>}
      </Card>
      <Card title="Network">
        <ul>
          {def.nics.map((nic, index) => (
            <li key={index}>{nic.model} on {nic.network}, <code>{nic.mac}</code>{nic.forwards.map((forward) => `; ${forward.protocol} ${forward.hostAddress}:${forward.hostPort} → guest ${forward.guestPort}`).join('')}</li>
          ))}
        </ul>
        {def.nics.length === 0 && <p class="muted">No NICs.</p>}
      </Card>
    </div>
  );
}

function Snapshots({ vm }: { vm: string }) {
  const { data, error, reload } = useCall('GET /vms/:name/snapshots', { params: { name: vm } });
  const [name, setName] = useState('');
  const [diskOnly, setDiskOnly] = useState(false);
  // Depth-first rows, children under their parent: the tree.
  const rows: { snapshot: SnapshotView; depth: number }[] = [];
  const all = data?.snapshots ?? [];
  const names = new Set(all.map((snapshot) => snapshot.name));
  const walk = (parent: string | undefined, depth: number) => {
    for (const snapshot of all.filter((entry) => (parent === undefined ? !entry.parent || !names.has(entry.parent) : entry.parent === parent)).sort((a, b) => a.createdAt.localeCompare(b.createdAt))) {
      rows.push({ snapshot, depth });
      walk(snapshot.name, depth + 1);
    }
  };
  walk(undefined, 0);
  const run = (work: () => Promise<{ id: string }>) => async () => {
    await api.waitForOperation((await work()).id);
    reload();
  };
  return (
    <div>
      <Card title="Take a snapshot">
        <form class="inline-form" onSubmit={(event) => event.preventDefault()}>
          <Field id="snapshot-name" label="Name"><input id="snapshot-name" value={name} onInput={(event) => setName((event.target as HTMLInputElement).value)} /></Field>
          <label class="check"><input type="checkbox" checked={diskOnly} onChange={(event) => setDiskOnly((event.target as HTMLInputElement).checked)} /> Disks only (no memory)</label>
          <Action label="Take snapshot" testId="snapshot-create" disabled={!name} run={run(async () => {
            const operation = await api.call('POST /vms/:name/snapshots', { params: { name: vm }, body: { name, diskOnly } });
            setName('');
            return operation;
          })} />
        </form>
      </Card>
      <Card title="Snapshot tree">
        {error && <p class="error">{errorText(error)}</p>}
        <ul class="tree" role="tree" aria-label="Snapshots">
          {rows.map(({ snapshot, depth }) => (
            <li key={snapshot.name} role="treeitem" style={{ paddingLeft: `${depth * 1.5}rem` }} data-snapshot={snapshot.name}>
              <span class="tree-name">{depth > 0 ? '└ ' : ''}<strong>{snapshot.name}</strong></span>
              {data?.current === snapshot.name && <span class="badge">current</span>}
              <span class="muted small"> {snapshot.kind}{snapshot.memory ? ' + memory' : ''}, {timeAgo(snapshot.createdAt)}</span>
              <Action label="Revert" testId={`revert-${snapshot.name}`} confirm={`Revert ${vm} to ${snapshot.name}? Changes since are lost.`} run={run(() => api.call('POST /vms/:name/snapshots/:snapshot/revert', { params: { name: vm, snapshot: snapshot.name } }))} />
              <Action label="Delete" danger confirm={`Delete snapshot ${snapshot.name}?`} run={run(() => api.call('DELETE /vms/:name/snapshots/:snapshot', { params: { name: vm, snapshot: snapshot.name } }))} />
            </li>
          ))}
        </ul>
        {!data && !error && <p class="muted" role="status">Loading…</p>}
        {data && rows.length === 0 && <p class="muted">No snapshots.</p>}
      </Card>
    </div>
  );
}

function Manage({ vm }: { vm: Vm }) {
  const name = vm.definition.name;
  const stopped = vm.runtime.state === 'stopped';
  const [clone, setClone] = useState('');
  const [linked, setLinked] = useState(false);
  const [target, setTarget] = useState({ url: '', token: '', fingerprint256: '', bandwidth: '' });
  const [progress, setProgress] = useState<string>();
  const [fraction, setFraction] = useState<number>();
  const migrate = async () => {
    setProgress('starting…');
    const operation = await api.call('POST /vms/:name/migrate', {
      params: { name },
      body: {
        to: { url: target.url, token: target.token, ...(target.fingerprint256 ? { fingerprint256: target.fingerprint256 } : {}) },
        offline: stopped,
        ...(target.bandwidth ? { bandwidth: target.bandwidth } : {}),
      },
    });
    movedTo.set(name, target.url);
    try {
      await api.followOperation(operation, {
        vm: name,
        onProgress: (update) => {
          setProgress(`${update.state}: ${update.progress?.message ?? ''}`);
          setFraction(update.progress?.fraction);
        },
      });
    } catch (failure) {
      // Failed or cancelled: the VM stays here (the Action shows why).
      movedTo.delete(name);
      setProgress(undefined);
      throw failure;
    }
    setProgress('finished: the VM now lives on the destination');
    setFraction(1);
  };
  return (
    <div class="grid">
      <Card title="Clone">
        <p class="muted">{stopped ? 'Copies the VM and its disks under a new name.' : 'Stop the VM to clone it.'}</p>
        <Field id="clone-name" label="New VM name"><input id="clone-name" value={clone} onInput={(event) => setClone((event.target as HTMLInputElement).value)} /></Field>
        <label class="check"><input type="checkbox" checked={linked} onChange={(event) => setLinked((event.target as HTMLInputElement).checked)} /> Linked clone (templates only)</label>
        <Action label="Clone" disabled={!stopped || !clone} run={async () => {
          await api.waitForOperation(await api.call('POST /vms/:name/clone', { params: { name }, body: { name: clone, linked } }));
          await live.refresh(clone);
          location.hash = `#/vms/${encodeURIComponent(clone)}`;
        }} />
      </Card>
      <Card title="Template">
        <p class="muted">A template is frozen: it never starts, and linked clones share its disks.</p>
        <Action label="Make template" disabled={!stopped} confirm={`Freeze ${name} as a template?`} run={async () => {
          await api.call('POST /vms/:name/template', { params: { name } });
          await live.refresh(name);
        }} />
      </Card>
      {live.cluster.enabled ? <ClusterMigrate vm={vm} /> : (
        <Card title="Migrate">
          <p class="muted">{stopped ? 'Offline: the definition and disks move.' : 'Live: the VM keeps running while its memory moves.'}</p>
          <Field id="migrate-url" label="Destination daemon (https://HOST:PORT)"><input id="migrate-url" value={target.url} onInput={(event) => setTarget({ ...target, url: (event.target as HTMLInputElement).value })} /></Field>
          <Field id="migrate-token" label="Destination token"><input id="migrate-token" type="password" autocomplete="off" value={target.token} onInput={(event) => setTarget({ ...target, token: (event.target as HTMLInputElement).value })} /></Field>
          <Field id="migrate-fp" label="Certificate SHA-256 fingerprint (optional)"><input id="migrate-fp" value={target.fingerprint256} onInput={(event) => setTarget({ ...target, fingerprint256: (event.target as HTMLInputElement).value })} /></Field>
          <Field id="migrate-bandwidth" label="Bandwidth limit (optional, bytes/s: 50M, 1G)"><input id="migrate-bandwidth" class="short" value={target.bandwidth} onInput={(event) => setTarget({ ...target, bandwidth: (event.target as HTMLInputElement).value })} /></Field>
          <Action label="Migrate" disabled={!target.url || !target.token} run={migrate} />
          {progress && <p role="status" data-testid="migration-progress">{fraction !== undefined && <progress max={1} value={fraction} aria-label="Migration progress" />} {progress}</p>}
        </Card>
      )}
      <Card title="Delete">
        <Action label="Delete VM and its disks" danger disabled={!stopped} confirm={`Delete ${name} and its disks? This cannot be undone.`} run={async () => {
          await api.call('DELETE /vms/:name', { params: { name }, query: { withDisks: 'true' } });
          location.hash = '#/vms';
        }} />
      </Card>
    </div>
  );
}

/**
 * Migrate in a cluster: the other members by name, with their health, free
 * capacity and the scheduler's verdict for this VM (its pick marked, with
 * its reasons); the daemon finds the chosen member's address and
 * credentials itself, so no URL or token is asked for.
 */
function ClusterMigrate({ vm }: { vm: Vm }) {
  const name = vm.definition.name;
  const stopped = vm.runtime.state === 'stopped';
  // Judged again when the VM moves or changes state (its host and its demand are the scheduler's input).
  const { data, error, reload } = useCall('GET /vms/:name/destinations', { params: { name } }, [vm.host, vm.runtime.state]);
  const [chosen, setChosen] = useState<string>();
  const [bandwidth, setBandwidth] = useState('');
  const move = useClusterMove(name);
  const selectable = (member: { alive: boolean; state: string }) => member.alive && member.state === 'active';
  const members = data?.members ?? [];
  const target = chosen !== undefined && members.some((member) => member.name === chosen && selectable(member)) ? chosen : data?.suggestion;
  const migrate = async () => {
    if (!target) return;
    setClusterMove(name, { to: target, progress: 'starting…', active: true });
    try {
      const operation = await api.call('POST /vms/:name/migrate', {
        params: { name },
        body: { to: { member: target }, offline: stopped, ...(bandwidth ? { bandwidth } : {}) },
      });
      await api.followOperation(operation, {
        vm: name,
        onProgress: (update) => {
          const progress = `${update.state}: ${update.progress?.message ?? ''}`;
          setClusterMove(name, { to: target, progress, active: true, ...(update.progress?.fraction !== undefined ? { fraction: update.progress.fraction } : {}) });
        },
      });
    } catch (failure) {
      // Failed or cancelled: the VM stays where it was (the Action shows why).
      setClusterMove(name, undefined);
      throw failure;
    }
    setClusterMove(name, { to: target, progress: `finished: ${name} now runs on ${target}`, fraction: 1, active: false });
    setChosen(undefined);
    await live.refresh(name);
    reload();
  };
  return (
    <Card title="Migrate">
      <p class="muted">{stopped ? 'Offline: the VM moves to another host of the cluster while stopped.' : 'Live: the VM keeps running while its memory moves to another host of the cluster.'} It is on <strong data-testid="migrate-from">{vm.host ?? data?.host ?? '…'}</strong> now.</p>
      {error && <p class="error" role="alert">{errorText(error)}</p>}
      {!data && !error && <p class="muted" role="status">Loading the hosts…</p>}
      {data && (
        <fieldset class="destinations" data-testid="migrate-members">
          <legend>Destination host</legend>
          {members.length === 0 && <p class="muted">No other host in the cluster.</p>}
          {members.map((member) => (
            <label key={member.name} class="check destination" data-member={member.name}>
              <input type="radio" name={`migrate-member-${name}`} value={member.name} checked={target === member.name} disabled={!selectable(member)} onChange={() => setChosen(member.name)} aria-label={member.name} />
              <strong>{member.name}</strong>
              <span data-testid="member-health" class={member.alive ? 'ok' : 'error'}>{member.alive ? (member.state === 'active' ? 'up' : 'maintenance') : 'down'}</span>
              {member.suggested && <span class="badge" data-testid="suggested">suggested</span>}
              {member.free && <span class="muted small" data-testid="member-free">free: {member.free.vcpus} vCPUs, {formatBytes(member.free.memoryMiB * 1024 * 1024)}{member.cpuLoad !== undefined ? `, CPU ${Math.round(member.cpuLoad * 100)}% busy` : ''}</span>}
              <span class="muted small" data-testid="member-verdict">{member.fits ? `fits: ${Math.round((member.fullness ?? 0) * 100)}% full with it, score ${member.score}` : member.reasons.join('; ')}</span>
            </label>
          ))}
        </fieldset>
      )}
      {data && <p class="muted small" data-testid="suggestion-reason">{data.suggestion ? `Scheduler's choice: ${data.explanation}` : `No host fits: ${data.explanation}`}</p>}
      <Field id="migrate-bandwidth" label="Bandwidth limit (optional, bytes/s: 50M, 1G)"><input id="migrate-bandwidth" class="short" value={bandwidth} onInput={(event) => setBandwidth((event.target as HTMLInputElement).value)} /></Field>
      <Action label={target ? `Migrate to ${target}` : 'Migrate'} disabled={!target || move?.active === true} run={migrate} testId="migrate-member" />
      {move && <p role="status" data-testid="migration-progress">{move.fraction !== undefined && <progress max={1} value={move.fraction} aria-label="Migration progress" />} {move.progress}</p>}
    </Card>
  );
}

function Settings({ vm }: { vm: Vm }) {
  return (
    <div class="grid">
      <LiveSettings vm={vm} />
      <Devices vm={vm} />
      <StoppedSettings vm={vm} />
    </div>
  );
}

/** The field an API error names, as the form's input id: body.resources.cpu.limit -> cpu-limit. */
function settingsField(error: unknown): string | undefined {
  const field = (error as { details?: { field?: string } }).details?.field?.replace(/^body\./, '');
  if (!field) return undefined;
  if (field.startsWith('resources.cpu.limit')) return 'cpu-limit';
  if (field.startsWith('resources.cpu.weight')) return 'cpu-weight';
  if (field.startsWith('resources.memory.balloon')) return 'balloon';
  if (field.startsWith('resources.memory.limit')) return 'memory-limit';
  if (field.startsWith('count') || field.startsWith('cpus')) return 'vcpus';
  return undefined;
}

/** What changes on a running VM at once (and, on a stopped one, at its next start): CPU cap and weight, balloon, memory limit, vCPUs up to max. */
function LiveSettings({ vm }: { vm: Vm }) {
  const def = vm.definition;
  const running = vm.runtime.state === 'running' || vm.runtime.state === 'paused';
  const resources = def.resources ?? {};
  const [form, setForm] = useState({
    cpuLimit: resources.cpu?.limit !== undefined ? `${Math.round(resources.cpu.limit * 100)}%` : '',
    cpuWeight: resources.cpu?.weight !== undefined ? String(resources.cpu.weight) : '',
    balloon: resources.memory?.balloon !== undefined ? `${resources.memory.balloon}M` : '',
    memoryLimit: resources.memory?.limit !== undefined ? `${resources.memory.limit}M` : '',
    vcpus: String(def.cpus.count),
  });
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [result, setResult] = useState<string>();
  const field = (key: keyof typeof form, id: string, label: string, hint: string, props: Record<string, unknown> = {}) => (
    <Field id={id} label={label} hint={hint} error={errors[id]}>
      <input id={id} value={form[key]} aria-invalid={errors[id] ? 'true' : undefined} aria-describedby={errors[id] ? `${id}-error` : undefined} onInput={(event) => { setForm({ ...form, [key]: (event.target as HTMLInputElement).value }); setErrors({ ...errors, [id]: '' }); }} {...props} />
    </Field>
  );
  const apply = async () => {
    setResult(undefined);
    setErrors({});
    const cpu = { ...resources.cpu, limit: form.cpuLimit || undefined, weight: form.cpuWeight ? Number(form.cpuWeight) : undefined };
    const memory = { ...resources.memory, balloon: form.balloon || undefined, limit: form.memoryLimit || undefined };
    const next = JSON.parse(JSON.stringify({ ...resources, cpu, memory })) as Record<string, Record<string, unknown>>;
    for (const key of Object.keys(next)) if (next[key] && Object.keys(next[key]!).length === 0) delete next[key];
    const said: string[] = [];
    try {
      const set = await api.call('POST /vms/:name/resources', { params: { name: def.name }, body: { resources: Object.keys(next).length > 0 ? next : null } });
      said.push(set.live ? 'CPU and memory settings applied to the running VM' : 'CPU and memory settings saved for the next start');
      if (Number(form.vcpus) !== def.cpus.count) {
        await api.call('POST /vms/:name/cpus', { params: { name: def.name }, body: { count: Number(form.vcpus) } });
        said.push(running ? `vCPUs set to ${form.vcpus} live` : `vCPUs set to ${form.vcpus}`);
      }
    } catch (failure) {
      const id = settingsField(failure);
      if (id) {
        setErrors({ [id]: errorText(failure).replace(/^[^:]+: /, '') });
        return;
      }
      throw failure;
    } finally {
      await live.refresh(def.name);
      if (said.length > 0) setResult(`${said.join('; ')}.`);
    }
  };
  return (
    <Card title={running ? 'Change live' : 'Resources'}>
      <p class="muted">{running ? 'These apply to the running VM at once, and stay for later starts.' : 'These apply at the next start (and can change live while it runs).'}</p>
      <form class="form" onSubmit={(event) => event.preventDefault()}>
        {field('cpuLimit', 'cpu-limit', 'CPU cap (optional)', '50% of one core, 150%, or 1.5 cores; empty: no cap')}
        {field('cpuWeight', 'cpu-weight', 'CPU weight (optional)', 'Share under contention, 1-10000 (default 100)', { type: 'number', min: 1, max: 10000 })}
        {field('balloon', 'balloon', 'Memory balloon target (optional)', `What the guest is left with, up to ${def.memory}M`)}
        {field('memoryLimit', 'memory-limit', 'Memory limit of the QEMU process (optional)', 'Guest memory plus QEMU\'s own, e.g. 512M')}
        {field('vcpus', 'vcpus', `vCPUs${def.cpus.max !== undefined ? ` (up to ${def.cpus.max} live)` : ''}`, def.cpus.max !== undefined ? 'Hot-added while it runs; the guest brings them online' : 'Only while stopped: this VM was defined without cpus.max', { type: 'number', min: 1, max: def.cpus.max ?? 255, disabled: running && def.cpus.max === undefined })}
        <Action label={running ? 'Apply live' : 'Save'} testId="settings-apply" run={apply} />
        {result && <p role="status" data-testid="settings-result">{result}</p>}
      </form>
    </Card>
  );
}

/** The NIC models the attach endpoint takes (the select offers only these). */
const NIC_MODELS = ['virtio', 'e1000', 'e1000e', 'rtl8139'] as const;
type NicModel = (typeof NIC_MODELS)[number];

/** Disks and NICs attached or detached, live on a running VM (virtio on a free hot-plug port). */
function Devices({ vm }: { vm: Vm }) {
  const def = vm.definition;
  const volumes = useCall('GET /disks', {}, [def.disks.length]);
  const used = new Set(def.disks.map((disk) => disk.volume));
  // The daemon refuses to detach the disk the firmware boots; no button is offered for it.
  const boot = bootDiskIndex(def);
  const free = (volumes.data ?? []).filter((volume) => volume.media !== 'cdrom' && !used.has(volume.name) && volume.usedBy.length === 0);
  const [volume, setVolume] = useState('');
  const [model, setModel] = useState<NicModel>('virtio');
  const change = (work: () => Promise<unknown>) => async () => {
    await work();
    await live.refresh(def.name);
  };
  return (
    <Card title="Disks and NICs">
      <p class="muted">Attached and detached live while the VM runs (the guest must release a device before it goes).</p>
      <ul class="device-list">
        {def.disks.map((disk, index) => (
          <li key={disk.id ?? index} data-disk={disk.volume}>
            <code>{disk.volume}</code> {disk.media} on {disk.bus}{index === boot ? ' (boot disk)' : ''}
            {index !== boot && <Action label="Detach" danger confirm={`Detach ${disk.volume} from ${def.name}?`} run={change(() => api.call('DELETE /vms/:name/disks/:disk', { params: { name: def.name, disk: disk.id ?? disk.volume } }))} />}
          </li>
        ))}
        {def.nics.map((nic, index) => (
          <li key={nic.mac ?? index} data-nic={nic.id ?? nic.mac}>
            NIC {nic.model} on {nic.network}, <code>{nic.mac}</code>
            <Action label="Detach" danger confirm={`Detach NIC ${nic.mac} from ${def.name}?`} run={change(() => api.call('DELETE /vms/:name/nics/:nic', { params: { name: def.name, nic: nic.id ?? nic.mac } }))} />
          </li>
        ))}
      </ul>
      <form class="inline-form" onSubmit={(event) => event.preventDefault()}>
        <Field id="attach-volume" label="Attach a disk">
          <select id="attach-volume" value={volume} onChange={(event) => setVolume((event.target as HTMLSelectElement).value)}>
            <option value="">Choose a free volume…</option>
            {free.map((entry) => <option key={entry.name} value={entry.name}>{entry.name}</option>)}
          </select>
        </Field>
        <Action label="Attach disk" disabled={!volume} run={change(async () => {
          await api.call('POST /vms/:name/disks', { params: { name: def.name }, body: { volume } });
          setVolume('');
        })} />
      </form>
      <form class="inline-form" onSubmit={(event) => event.preventDefault()}>
        <Field id="attach-nic" label="Attach a NIC (user-mode network)">
          <select id="attach-nic" value={model} onChange={(event) => setModel((event.target as HTMLSelectElement).value as NicModel)}>
            {NIC_MODELS.map((entry) => <option key={entry} value={entry}>{entry}</option>)}
          </select>
        </Field>
        <Action label="Attach NIC" run={change(() => api.call('POST /vms/:name/nics', { params: { name: def.name }, body: { model } }))} />
      </form>
    </Card>
  );
}

/** What needs the VM stopped: vCPU count beyond max, memory size, description. */
function StoppedSettings({ vm }: { vm: Vm }) {
  const def = vm.definition;
  const stopped = vm.runtime.state === 'stopped';
  const [cpus, setCpus] = useState(String(def.cpus.count));
  const [memory, setMemory] = useState(`${def.memory}M`);
  const [description, setDescription] = useState(def.description ?? '');
  const [saved, setSaved] = useState(false);
  return (
    <Card title="While stopped">
      <p class="muted">
        {stopped
          ? 'These apply at the next start.'
          : 'Memory size, vCPUs beyond the live maximum and the description change while the VM is stopped.'}
      </p>
      <form class="form" onSubmit={(event) => event.preventDefault()}>
        <Field id="set-cpus" label="vCPUs (at start)"><input id="set-cpus" type="number" min={1} max={255} disabled={!stopped} value={cpus} onInput={(event) => setCpus((event.target as HTMLInputElement).value)} /></Field>
        <Field id="set-memory" label="Memory"><input id="set-memory" disabled={!stopped} value={memory} onInput={(event) => setMemory((event.target as HTMLInputElement).value)} /></Field>
        <Field id="set-description" label="Description"><input id="set-description" disabled={!stopped} value={description} onInput={(event) => setDescription((event.target as HTMLInputElement).value)} /></Field>
        <Action label="Save" disabled={!stopped} run={async () => {
          const { uuid: _uuid, createdAt: _createdAt, template: _template, clonedFrom: _clonedFrom, ...rest } = def;
          const spec = { ...rest, cpus: { ...def.cpus, count: Number(cpus), sockets: undefined, cores: undefined, threads: undefined }, memory, description: description || undefined };
          await api.call('PUT /vms/:name', { params: { name: def.name }, body: { spec: JSON.parse(JSON.stringify(spec)) } });
          await live.refresh(def.name);
          setSaved(true);
        }} />
        {saved && <span role="status"> Saved.</span>}
      </form>
    </Card>
  );
}
