/** Small shared pieces: action buttons that report failures, state badges, meters, notices. */
import type { ComponentChildren } from 'preact';
import { useState } from 'preact/hooks';
import { api, type LiveOperation } from './api.js';

export function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Runs an action; shows "…" while it runs and its error next to it. Operations are followed to their end. */
export function Action(props: { label: string; run: () => Promise<unknown>; danger?: boolean; confirm?: string; disabled?: boolean; title?: string; testId?: string }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string>();
  const click = async () => {
    if (props.confirm && !window.confirm(props.confirm)) return;
    setBusy(true);
    setError(undefined);
    try {
      const result = await props.run();
      const operation = result as LiveOperation | undefined;
      if (operation && typeof operation === 'object' && typeof operation.id === 'string' && operation.state === 'running') await api.waitForOperation(operation.id);
    } catch (failure) {
      setError(errorText(failure));
    } finally {
      setBusy(false);
    }
  };
  return (
    <span class="action">
      <button type="button" class={props.danger ? 'danger' : ''} disabled={busy || props.disabled} onClick={click} title={props.title} data-testid={props.testId} aria-busy={busy}>
        {busy ? `${props.label}…` : props.label}
      </button>
      {error && <span class="error" role="alert">{error}</span>}
    </span>
  );
}

export function StateBadge({ state }: { state: string }) {
  return <span class={`state state-${state}`} data-state={state}>{state}</span>;
}

export function Meter(props: { label: string; used: number; total: number; format: (value: number) => string }) {
  const fraction = props.total > 0 ? Math.min(1, props.used / props.total) : 0;
  return (
    <div class="meter">
      <div class="meter-head">
        <span>{props.label}</span>
        <span>{props.format(props.used)} / {props.format(props.total)}</span>
      </div>
      <div class="meter-bar" role="meter" aria-label={props.label} aria-valuemin={0} aria-valuemax={props.total} aria-valuenow={props.used}>
        <div style={{ width: `${(fraction * 100).toFixed(1)}%` }} class={fraction > 0.9 ? 'hot' : ''} />
      </div>
    </div>
  );
}

export function Card(props: { title: string; children: ComponentChildren; actions?: ComponentChildren }) {
  return (
    <section class="card" aria-label={props.title}>
      <header>
        <h2>{props.title}</h2>
        {props.actions}
      </header>
      {props.children}
    </section>
  );
}

export function Field(props: { label: string; error?: string | undefined; children: ComponentChildren; hint?: string; id: string }) {
  return (
    <div class={`field ${props.error ? 'invalid' : ''}`}>
      <label for={props.id}>{props.label}</label>
      {props.children}
      {props.hint && !props.error && <small>{props.hint}</small>}
      {props.error && <small class="error" id={`${props.id}-error`} role="alert">{props.error}</small>}
    </div>
  );
}

export function OperationRow({ operation, showHost = false }: { operation: LiveOperation; showHost?: boolean }) {
  const target = operation.target?.vm ?? operation.target?.image ?? '';
  return (
    <tr data-operation={operation.id}>
      {showHost && <td data-testid="operation-host">{operation.host ?? ''}</td>}
      <td><code>{operation.kind}</code></td>
      <td>{target}</td>
      <td><StateBadge state={operation.state} /></td>
      <td>
        {operation.progress?.fraction !== undefined && operation.state === 'running' && <progress max={1} value={operation.progress.fraction} />}
        {' '}{operation.error?.message ?? operation.progress?.message ?? ''}
      </td>
      <td>{operation.createdAt ? new Date(operation.createdAt).toLocaleTimeString() : ''}</td>
      <td>{operation.state === 'running' && <Action label="Cancel" run={() => api.call('POST /operations/:id/cancel', { params: { id: operation.id } })} />}</td>
    </tr>
  );
}
