/** Disks, images, operations (the task log), events and tokens. */
import { useState } from 'preact/hooks';
import { api, formatBytes, timeAgo, useCall, useLive } from '../api.js';
import { Action, Card, Field, OperationRow, StateBadge, errorText } from '../ui.js';
import { eventSummary } from './dashboard.js';


export function Disks() {
  const { data, error, reload } = useCall('GET /disks');
  const [name, setName] = useState('');
  const [size, setSize] = useState('1G');
  const [resize, setResize] = useState<Record<string, string>>({});
  return (
    <div class="page">
      <h1>Disks</h1>
      <Card title="New volume">
        <form class="inline-form" onSubmit={(event) => event.preventDefault()}>
          <Field id="disk-name" label="Name"><input id="disk-name" value={name} onInput={(event) => setName((event.target as HTMLInputElement).value)} /></Field>
          <Field id="disk-size" label="Size"><input id="disk-size" value={size} onInput={(event) => setSize((event.target as HTMLInputElement).value)} /></Field>
          <Action label="Create" disabled={!name} run={async () => {
            await api.call('POST /disks', { body: { name, size } });
            setName('');
            reload();
          }} />
        </form>
      </Card>
      <Card title="Volumes">
        {error && <p class="error">{errorText(error)}</p>}
        <div class="table-wrap">
          <table>
            <thead><tr><th>Name</th><th>Format</th><th>Media</th><th>Size</th><th>On disk</th><th>Used by</th><th>Resize</th><th /></tr></thead>
            <tbody>
              {(data ?? []).map((volume) => (
                <tr key={volume.name}>
                  <td>{volume.name}</td>
                  <td>{volume.format}{volume.backingChain.length > 0 ? ' (linked)' : ''}</td>
                  <td>{volume.media}</td>
                  <td>{formatBytes(volume.virtualSize)}</td>
                  <td>{formatBytes(volume.actualSize)}</td>
                  <td>{volume.usedBy.join(', ')}</td>
                  <td>
                    <label class="inline"><span class="sr-only">New size of {volume.name}</span><input class="short" placeholder="e.g. 20G" value={resize[volume.name] ?? ''} onInput={(event) => setResize({ ...resize, [volume.name]: (event.target as HTMLInputElement).value })} /></label>
                    <Action label="Resize" disabled={!resize[volume.name]} run={async () => {
                      await api.call('POST /disks/:name/resize', { params: { name: volume.name }, body: { size: resize[volume.name] ?? '' } });
                      reload();
                    }} />
                  </td>
                  <td><Action label="Delete" danger confirm={`Delete volume ${volume.name}?`} run={async () => {
                    await api.call('DELETE /disks/:name', { params: { name: volume.name } });
                    reload();
                  }} /></td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
        <p class="muted small">Importing and exporting image files names paths on the daemon's host, so it is done with the CLI (vireo disk import/export) on that host.</p>
      </Card>
    </div>
  );
}


export function Images() {
  const { data, error, reload } = useCall('GET /images');
  return (
    <div class="page">
      <h1>Images</h1>
      <Card title="Images" actions={<Action label="Build the tiny image" run={async () => {
        await api.waitForOperation(await api.call('POST /images', { body: { kind: 'tiny' } }));
        reload();
      }} />}>
        {error && <p class="error">{errorText(error)}</p>}
        <div class="table-wrap">
          <table>
            <thead><tr><th>Name</th><th>Built</th><th /></tr></thead>
            <tbody>
              {(data ?? []).map((image) => (
                <tr key={image.name}>
                  <td>{image.name}</td>
                  <td>{timeAgo(image.builtAt)}</td>
                  <td><Action label="Delete" danger confirm={`Delete image ${image.name}?`} run={async () => {
                    await api.call('DELETE /images/:name', { params: { name: image.name } });
                    reload();
                  }} /></td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      </Card>
    </div>
  );
}

export function Operations() {
  const live = useLive();
  const operations = [...live.operations.values()].sort((a, b) => String(b.createdAt).localeCompare(String(a.createdAt)));
  return (
    <div class="page">
      <h1>Operations</h1>
      <div class="table-wrap">
        <table>
          <thead><tr>{live.cluster.enabled && <th>Host</th>}<th>Kind</th><th>Target</th><th>State</th><th>Progress</th><th>Started</th><th /></tr></thead>
          <tbody>{operations.map((operation) => <OperationRow key={operation.id} operation={operation} showHost={live.cluster.enabled} />)}</tbody>
        </table>
      </div>
    </div>
  );
}

export function Events() {
  const live = useLive();
  const [kind, setKind] = useState('');
  const events = live.events.filter((event) => !kind || event.kind === kind);
  return (
    <div class="page">
      <h1>Events</h1>
      <div class="toolbar">
        <label class="inline">Kind{' '}
          <select value={kind} onChange={(event) => setKind((event.target as HTMLSelectElement).value)}>
            <option value="">All</option>
            {['vm.state', 'vm.defined', 'vm.deleted', 'vm.qmp', 'vm.migration', 'operation', 'daemon', ...(live.cluster.enabled ? ['cluster.leader', 'cluster.connection'] : [])].map((entry) => <option key={entry}>{entry}</option>)}
          </select>
        </label>
        <span class="muted">Live since this page opened.</span>
      </div>
      <div class="table-wrap">
        <table>
          <thead><tr><th>#</th><th>Time</th>{live.cluster.enabled && <th>Host</th>}<th>Kind</th><th>VM</th><th>What</th></tr></thead>
          <tbody>
            {events.map((event) => (
              <tr key={`${event.host ?? ''}:${event.epoch}:${event.seq}`} data-host={event.host}><td>{event.seq}</td><td>{new Date(event.time).toLocaleTimeString()}</td>{live.cluster.enabled && <td>{event.host ?? ''}</td>}<td><code>{event.kind}</code></td><td>{event.vm ?? ''}</td><td>{eventSummary(event.data)}</td></tr>
            ))}
          </tbody>
        </table>
      </div>
    </div>
  );
}


export function Tokens({ currentToken }: { currentToken?: string }) {
  const { data, error, reload } = useCall('GET /tokens');
  const [name, setName] = useState('');
  const [expires, setExpires] = useState('');
  const [secret, setSecret] = useState<string>();
  return (
    <div class="page">
      <h1>API tokens</h1>
      <Card title="New token">
        <form class="inline-form" onSubmit={(event) => event.preventDefault()}>
          <Field id="token-name" label="Name"><input id="token-name" value={name} onInput={(event) => setName((event.target as HTMLInputElement).value)} /></Field>
          <Field id="token-expires" label="Expires (optional)" hint="12h, 30d, 1y or a date"><input id="token-expires" value={expires} onInput={(event) => setExpires((event.target as HTMLInputElement).value)} /></Field>
          <Action label="Create" disabled={!name} run={async () => {
            const created = await api.call('POST /tokens', { body: { name, ...(expires ? { expires } : {}) } });
            setSecret(created.secret);
            setName('');
            reload();
          }} />
        </form>
        {secret && <p role="status">The new token (shown only now): <code class="secret">{secret}</code></p>}
      </Card>
      <Card title="Tokens">
        {error && <p class="error">{errorText(error)}</p>}
        <div class="table-wrap">
          <table>
            <thead><tr><th>ID</th><th>Name</th><th>Created</th><th>Expires</th><th>Last used</th><th /></tr></thead>
            <tbody>
              {(data ?? []).map((token) => (
                <tr key={token.id}>
                  <td><code>{token.id}</code></td>
                  <td>{token.name}{token.id === currentToken && <span class="badge">this session</span>}</td>
                  <td>{timeAgo(token.createdAt)}</td>
                  <td>{token.expiresAt ? new Date(token.expiresAt).toLocaleString() : 'never'}</td>
                  <td>{token.lastUsedAt ? timeAgo(token.lastUsedAt) : '–'}</td>
                  <td><Action label="Revoke" danger confirm={`Revoke ${token.name}? Its sessions end too.`} run={async () => {
                    await api.call('DELETE /tokens/:id', { params: { id: token.id } });
                    reload();
                  }} /></td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      </Card>
    </div>
  );
}

export { StateBadge };
