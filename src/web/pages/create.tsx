/**
 * The create wizard. What the user enters becomes a VM spec that is checked
 * with the API's own zod schema (VmSpecSchema) before it is sent, so the
 * field at fault is marked at once; the daemon checks it again and its
 * error, which names the field too, lands next to the same input.
 */
import { useState } from 'preact/hooks';
import { MAX_ISO_UPLOAD } from '../../api/limits.js';
import { Name, VmSpecSchema, type VmSpecInput } from '../../core/model/vm.js';
import { api, formatBytes, live, useCall } from '../api.js';
import { Card, Field, errorText } from '../ui.js';

/** An ISO 9660 image has "CD001" at byte 32769 (its first volume descriptor): checked before a byte is sent. */
async function looksLikeIso(file: File): Promise<boolean> {
  const magic = new Uint8Array(await file.slice(32769, 32774).arrayBuffer());
  return String.fromCharCode(...magic) === 'CD001';
}

/** A volume name from a file name: "debian-12.5.0-amd64-netinst.iso" → "debian-12.5.0-amd64-netinst". */
function volumeNameFor(file: string): string {
  return file.replace(/\.iso$/i, '').replace(/[^A-Za-z0-9._-]+/g, '-').replace(/^[^A-Za-z0-9]+/, '').slice(0, 63) || 'installer';
}

interface Upload {
  file?: File;
  name: string;
  /** The user typed the name: a file picked afterwards keeps it (else the name follows the file's). */
  nameEdited?: boolean;
  sent?: number;
  total?: number;
  busy: boolean;
  fileError?: string;
  nameError?: string;
  failure?: string;
  done?: string;
  controller?: AbortController;
}

/**
 * Uploading an installer ISO from this computer into the daemon's storage:
 * the file's first bytes and the volume's name are checked here, the bytes
 * go out with a progress bar, and the new volume is chosen for the VM.
 */
function IsoUpload(props: { taken: (name: string) => boolean; onUploaded: (name: string) => void }) {
  const [upload, setUpload] = useState<Upload>({ name: '', busy: false });
  const pick = async (event: Event) => {
    const file = (event.target as HTMLInputElement).files?.[0];
    if (!file) return setUpload({ name: upload.name, nameEdited: upload.nameEdited, busy: false });
    const fileError = file.size > MAX_ISO_UPLOAD
      ? `${file.name} is ${formatBytes(file.size)}, more than the ${formatBytes(MAX_ISO_UPLOAD)} an upload may be`
      : (await looksLikeIso(file)) ? undefined : `${file.name} is not an ISO 9660 image (no CD001 volume descriptor at byte 32769)`;
    setUpload({ file, name: upload.nameEdited ? upload.name : volumeNameFor(file.name), nameEdited: upload.nameEdited, busy: false, ...(fileError ? { fileError } : {}) });
  };
  const start = async () => {
    const file = upload.file;
    if (!file) return setUpload({ ...upload, fileError: 'choose an ISO file first' });
    const checked = Name.safeParse(upload.name);
    const nameError = !checked.success ? checked.error.issues[0]?.message ?? 'not a valid name' : props.taken(upload.name) ? `a volume named ${upload.name} already exists` : undefined;
    if (nameError || upload.fileError) return setUpload({ ...upload, ...(nameError ? { nameError } : {}) });
    const controller = new AbortController();
    setUpload({ file, name: upload.name, nameEdited: upload.nameEdited, busy: true, sent: 0, total: file.size, controller });
    try {
      const volume = await api.upload('POST /disks/upload', { query: { name: upload.name } }, file, {
        signal: controller.signal,
        onProgress: (sent, total) => setUpload((current) => ({ ...current, sent, total })),
      });
      setUpload({ name: '', busy: false, done: `Uploaded ${volume.name} (${formatBytes(volume.actualSize)}); it is the VM's ISO now.` });
      props.onUploaded(volume.name);
    } catch (error) {
      const field = (error as { details?: { field?: string } }).details?.field;
      const message = errorText(error).replace(/^[^:]+: /, '');
      setUpload({ file, name: upload.name, nameEdited: upload.nameEdited, busy: false, ...(field === 'query.name' ? { nameError: message } : field === 'body' ? { fileError: message } : { failure: errorText(error) }) });
    }
  };
  const fraction = upload.total ? (upload.sent ?? 0) / upload.total : 0;
  return (
    <div class="iso-upload" data-testid="iso-upload">
      <h3>Or upload an ISO from this computer</h3>
      <Field id="f-isoFile" label="ISO file" error={upload.fileError} hint="Kept in the daemon's storage as a read-only CD-ROM volume">
        <input id="f-isoFile" type="file" accept=".iso,application/x-iso9660-image" onChange={pick} disabled={upload.busy} aria-invalid={upload.fileError ? 'true' : undefined} aria-describedby={upload.fileError ? 'f-isoFile-error' : undefined} />
      </Field>
      <Field id="f-isoName" label="Volume name for it" error={upload.nameError}>
        <input id="f-isoName" value={upload.name} autocomplete="off" disabled={upload.busy} onInput={(event) => setUpload({ ...upload, name: (event.target as HTMLInputElement).value, nameEdited: true, nameError: undefined })} aria-invalid={upload.nameError ? 'true' : undefined} aria-describedby={upload.nameError ? 'f-isoName-error' : undefined} />
      </Field>
      <div class="upload-actions">
        {upload.busy
          ? <button type="button" onClick={() => upload.controller?.abort()}>Cancel upload</button>
          : <button type="button" onClick={start} data-testid="iso-upload-start">Upload ISO</button>}
        {upload.busy && (
          <>
            <progress id="iso-progress" max={1} value={fraction} aria-label="Upload progress" data-testid="iso-progress" data-sent={upload.sent ?? 0} />
            <span role="status" aria-live="polite">{Math.floor(fraction * 100)}% ({formatBytes(upload.sent ?? 0)} of {formatBytes(upload.total ?? 0)})</span>
          </>
        )}
        {upload.done && <span role="status" data-testid="iso-upload-done">{upload.done}</span>}
        {upload.failure && <span class="error" role="alert">{upload.failure}</span>}
      </div>
    </div>
  );
}


interface Form {
  name: string;
  description: string;
  source: 'image' | 'iso' | 'disk' | 'none';
  image: string;
  iso: string;
  disk: string;
  cpus: string;
  memory: string;
  newDisk: string;
  nicModel: string;
  network: string;
  forwardHost: string;
  forwardGuest: string;
  start: boolean;
  ciUser: string;
  ciKeys: string;
  vnc: boolean;
}

const INITIAL: Form = { name: '', description: '', source: 'image', image: '', iso: '', disk: '', cpus: '1', memory: '256M', newDisk: '', nicModel: 'virtio', network: 'user', forwardHost: '', forwardGuest: '22', start: false, ciUser: '', ciKeys: '', vnc: false };

/** Maps the spec's field paths (as zod and the daemon name them) to the form's inputs. */
function inputFor(path: string): keyof Form {
  const field = path.replace(/^body\./, '').replace(/^spec\./, '');
  if (field.startsWith('name')) return 'name';
  if (field.startsWith('description')) return 'description';
  if (field.startsWith('cpus')) return 'cpus';
  if (field.startsWith('memory')) return 'memory';
  if (field.startsWith('boot')) return 'image';
  if (field.startsWith('nics.0.forwards.0.guestPort')) return 'forwardGuest';
  if (field.startsWith('nics.0.forwards')) return 'forwardHost';
  if (field.startsWith('nics.0.network')) return 'network';
  if (field.startsWith('nics')) return 'nicModel';
  if (field.startsWith('cloudInit.user')) return 'ciUser';
  if (field.startsWith('cloudInit')) return 'ciKeys';
  if (field.startsWith('newDisks')) return 'newDisk';
  if (field.startsWith('disks')) return 'disk';
  return 'name';
}

function buildSpec(form: Form): Record<string, unknown> {
  const disks: Record<string, unknown>[] = [];
  if (form.source === 'disk' && form.disk) disks.push({ volume: form.disk });
  if (form.source === 'iso' && form.iso) disks.push({ volume: form.iso, media: 'cdrom' });
  // Port forwards belong to the user-mode network; a Vireo network has its own (vireo network forward add).
  const forwards = form.forwardHost && form.network === 'user' ? [{ hostPort: Number(form.forwardHost), guestPort: Number(form.forwardGuest) }] : [];
  const keys = form.ciKeys.split('\n').map((line) => line.trim()).filter(Boolean);
  const cloudInit = { ...(form.ciUser ? { user: form.ciUser } : {}), ...(keys.length > 0 ? { sshKeys: keys } : {}) };
  const cpus = /^\d+$/.test(form.cpus) ? Number(form.cpus) : form.cpus;
  return {
    name: form.name,
    ...(form.description ? { description: form.description } : {}),
    cpus,
    memory: form.memory,
    ...(form.source === 'image' ? { boot: { kernel: { image: form.image } } } : form.source === 'iso' ? { boot: { order: ['cdrom', 'disk'] } } : {}),
    disks,
    nics: form.nicModel === 'none' ? [] : [{ model: form.nicModel, network: form.network, forwards }],
    ...(Object.keys(cloudInit).length > 0 ? { cloudInit } : {}),
    ...(form.vnc ? { vnc: {} } : {}),
  };
}

export default function CreateVm() {
  const [form, setForm] = useState<Form>(INITIAL);
  const [errors, setErrors] = useState<Partial<Record<keyof Form, string>>>({});
  const [failure, setFailure] = useState<string>();
  const [busy, setBusy] = useState(false);
  const images = useCall('GET /images');
  const networks = useCall('GET /networks');
  const volumes = useCall('GET /disks');
  const isos = (volumes.data ?? []).filter((volume) => volume.media === 'cdrom');
  const disks = (volumes.data ?? []).filter((volume) => volume.media !== 'cdrom');
  if (!form.image && images.data?.[0]) setForm({ ...form, image: images.data[0].name });

  const set = (key: keyof Form) => (event: Event) => {
    const target = event.target as HTMLInputElement;
    setForm({ ...form, [key]: target.type === 'checkbox' ? target.checked : target.value });
    setErrors({ ...errors, [key]: undefined });
  };

  const validate = (): boolean => {
    const next: Partial<Record<keyof Form, string>> = {};
    const result = VmSpecSchema.safeParse(buildSpec(form));
    if (!result.success) {
      for (const issue of result.error.issues) {
        const key = inputFor(issue.path.join('.'));
        // Key checks say "is not an SSH public key": which line of the box is meant.
        next[key] ??= issue.path[1] === 'sshKeys' && typeof issue.path[2] === 'number' ? `key ${issue.path[2] + 1} ${issue.message}` : issue.message;
      }
    }
    if (form.source === 'image' && !form.image) next.image = 'choose an image (build one on the Images page)';
    if (form.source === 'iso' && !form.iso) next.iso = 'choose an ISO volume';
    if (form.source === 'disk' && !form.disk) next.disk = 'choose a volume';
    setErrors(next);
    return Object.keys(next).length === 0;
  };

  const submit = async (event: Event) => {
    event.preventDefault();
    setFailure(undefined);
    if (!validate()) return;
    setBusy(true);
    try {
      // validate() has checked it against the schema, so it is that schema's input.
      const spec = buildSpec(form) as VmSpecInput;
      await api.call('POST /vms', { body: { spec, newDisks: form.newDisk ? [{ size: form.newDisk }] : [] } });
      await live.refresh(form.name);
      if (form.start) await api.call('POST /vms/:name/start', { params: { name: form.name } });
      location.hash = `#/vms/${encodeURIComponent(form.name)}`;
    } catch (error) {
      const failure = error as { code?: string; details?: { field?: string } };
      // The daemon names no field for a duplicate; the form shows it at the name, which decides every other name.
      const field = failure.details?.field ?? (failure.code === 'already_exists' ? 'name' : undefined);
      if (field) setErrors({ [inputFor(field)]: errorText(error).replace(/^[^:]+: /, '') });
      else setFailure(errorText(error));
    } finally {
      setBusy(false);
    }
  };

  const input = (key: keyof Form, props: Record<string, unknown> = {}) => (
    <input id={`f-${key}`} name={key} value={String(form[key])} onInput={set(key)} aria-invalid={errors[key] ? 'true' : undefined} aria-describedby={errors[key] ? `f-${key}-error` : undefined} {...props} />
  );

  return (
    <div class="page">
      <h1>Create a VM</h1>
      <form class="form wizard" onSubmit={submit} noValidate data-testid="create-form">
        <Card title="1. Name">
          <Field id="f-name" label="Name" error={errors.name} hint="Letters, digits, '.', '_' or '-'">{input('name', { autocomplete: 'off', required: true })}</Field>
          <Field id="f-description" label="Description (optional)" error={errors.description}>{input('description')}</Field>
        </Card>
        <Card title="2. What it boots">
          <fieldset>
            <legend class="sr-only">Boot source</legend>
            {(['image', 'iso', 'disk', 'none'] as const).map((source) => (
              <label class="check" key={source}>
                <input type="radio" name="source" value={source} checked={form.source === source} onChange={set('source')} />{' '}
                {{ image: 'A built image', iso: 'An installer ISO', disk: 'An existing disk', none: 'Nothing yet (network boot)' }[source]}
              </label>
            ))}
          </fieldset>
          {form.source === 'image' && (
            <Field id="f-image" label="Image" error={errors.image}>
              <select id="f-image" value={form.image} onChange={set('image')}>
                <option value="">Choose…</option>
                {(images.data ?? []).map((image) => <option key={image.name} value={image.name}>{image.name}</option>)}
              </select>
            </Field>
          )}
          {form.source === 'iso' && (
            <>
              <Field id="f-iso" label="ISO volume" error={errors.iso}>
                <select id="f-iso" value={form.iso} onChange={set('iso')} aria-invalid={errors.iso ? 'true' : undefined} aria-describedby={errors.iso ? 'f-iso-error' : undefined}>
                  <option value="">Choose…</option>
                  {isos.map((volume) => <option key={volume.name} value={volume.name}>{volume.name}</option>)}
                </select>
              </Field>
              <IsoUpload
                taken={(name) => (volumes.data ?? []).some((volume) => volume.name === name)}
                onUploaded={(name) => {
                  volumes.reload();
                  setForm((current) => ({ ...current, iso: name }));
                  setErrors((current) => ({ ...current, iso: undefined }));
                }}
              />
            </>
          )}
          {form.source === 'disk' && (
            <Field id="f-disk" label="Volume" error={errors.disk}>
              <select id="f-disk" value={form.disk} onChange={set('disk')}>
                <option value="">Choose…</option>
                {disks.map((volume) => <option key={volume.name} value={volume.name}>{volume.name}</option>)}
              </select>
            </Field>
          )}
        </Card>
        <Card title="3. Resources">
          <Field id="f-cpus" label="vCPUs" error={errors.cpus}>{input('cpus', { type: 'number', min: 1, max: 255 })}</Field>
          <Field id="f-memory" label="Memory" error={errors.memory} hint="e.g. 512M or 2G">{input('memory')}</Field>
          <Field id="f-newDisk" label="New empty disk (optional)" error={errors.newDisk} hint="Size, e.g. 10G; made as <name>-disk0">{input('newDisk')}</Field>
          <label class="check"><input type="checkbox" checked={form.vnc} onChange={set('vnc')} /> Graphical console (VGA, reached through the daemon)</label>
        </Card>
        <Card title="4. Network">
          <Field id="f-nicModel" label="NIC" error={errors.nicModel}>
            <select id="f-nicModel" value={form.nicModel} onChange={set('nicModel')}>
              <option value="virtio">virtio</option>
              <option value="e1000">e1000</option>
              <option value="none">No NIC</option>
            </select>
          </Field>
          {form.nicModel !== 'none' && (
            <Field id="f-network" label="Network" error={errors.network}>
              <select id="f-network" value={form.network} onChange={set('network')} aria-invalid={errors.network ? 'true' : undefined} aria-describedby={errors.network ? 'f-network-error' : undefined}>
                <option value="user">User-mode (NAT in QEMU)</option>
                {(networks.data ?? []).map((network) => <option key={network.name} value={network.name}>{network.name}</option>)}
              </select>
            </Field>
          )}
          {form.network === 'user' && form.nicModel !== 'none' && (
            <>
              <Field id="f-forwardHost" label="Forward host port (optional)" error={errors.forwardHost} hint="127.0.0.1:PORT reaches the guest port below">{input('forwardHost', { type: 'number', min: 1, max: 65535 })}</Field>
              <Field id="f-forwardGuest" label="to guest port" error={errors.forwardGuest}>{input('forwardGuest', { type: 'number', min: 1, max: 65535 })}</Field>
            </>
          )}
        </Card>
        <Card title="5. Guest set-up (cloud-init)">
          <p class="muted small">For cloud images that run cloud-init: a user with sudo, and the SSH keys that may log in as it.</p>
          <Field id="f-ciUser" label="User (optional)" error={errors.ciUser} hint="e.g. admin">{input('ciUser', { autocomplete: 'off' })}</Field>
          <Field id="f-ciKeys" label="SSH public keys (optional, one per line)" error={errors.ciKeys} hint="The contents of ~/.ssh/id_ed25519.pub">
            <textarea id="f-ciKeys" name="ciKeys" rows={3} value={form.ciKeys} onInput={set('ciKeys')} aria-invalid={errors.ciKeys ? 'true' : undefined} aria-describedby={errors.ciKeys ? 'f-ciKeys-error' : undefined} spellcheck={false} />
          </Field>
        </Card>
        <div class="form-actions">
          <label class="check"><input type="checkbox" checked={form.start} onChange={set('start')} /> Start it now</label>
          <button type="submit" class="primary" disabled={busy} aria-busy={busy}>{busy ? 'Creating…' : 'Create VM'}</button>
          {failure && <span class="error" role="alert">{failure}</span>}
        </div>
      </form>
    </div>
  );
}
