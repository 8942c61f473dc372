/**
 * Vireo's web UI: log-in, then the dashboard, VM list and pages for each
 * resource, routed by the URL's hash (the daemon serves one page at /).
 * Everything goes through the shared API client (src/client) over fetch.
 */
import '@xterm/xterm/css/xterm.css';
import 'uplot/dist/uPlot.min.css';
import './style.css';
import { render } from 'preact';
import { lazy, Suspense } from 'preact/compat';
import { useEffect, useState } from 'preact/hooks';
import { VireoError } from '../core/errors.js';
import { api, live, useLive, type Session } from './api.js';
import { Dashboard } from './pages/dashboard.js';
import { Hosts } from './pages/hosts.js';
import { VmList } from './pages/list.js';
import { Disks, Events, Images, Operations, Tokens } from './pages/resources.js';
import { VmPage } from './pages/vm.js';
import { errorText } from './ui.js';

const CreateVm = lazy(() => import('./pages/create.js'));

function useHash(): string {
  const [hash, setHash] = useState(location.hash);
  useEffect(() => {
    const update = () => setHash(location.hash);
    window.addEventListener('hashchange', update);
    return () => window.removeEventListener('hashchange', update);
  }, []);
  return hash;
}

function Login({ onLogin }: { onLogin: (session: Session) => void }) {
  const [token, setToken] = useState('');
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);
  const expired = location.hash.includes('link=expired');
  const submit = async (event: Event) => {
    event.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      onLogin(await api.call('POST /ui/login', { body: { token } }));
    } catch (failure) {
      setError(errorText(failure));
    } finally {
      setBusy(false);
    }
  };
  return (
    <main class="login">
      <form onSubmit={submit} aria-labelledby="login-title" data-testid="login-form">
        <h1 id="login-title"><span class="logo" aria-hidden="true">◆</span> Vireo</h1>
        {expired && <p class="error" role="alert">That log-in link was already used or has expired. Run <code>vireo ui</code> again, or log in with a token.</p>}
        <label for="token">API token</label>
        <input id="token" name="token" type="password" autocomplete="current-password" value={token} onInput={(event) => setToken((event.target as HTMLInputElement).value)} aria-invalid={error ? 'true' : undefined} aria-describedby={error ? 'login-error' : undefined} required />
        <small>Make one on the host with <code>vireo token create NAME</code>, or open the link printed by <code>vireo ui</code>.</small>
        {error && <p class="error" id="login-error" role="alert">{error}</p>}
        <button type="submit" class="primary" disabled={busy || !token}>{busy ? 'Logging in…' : 'Log in'}</button>
      </form>
    </main>
  );
}

const NAV: [string, string][] = [
  ['#/', 'Dashboard'],
  ['#/hosts', 'Hosts'],
  ['#/vms', 'VMs'],
  ['#/create', 'Create'],
  ['#/disks', 'Disks'],
  ['#/images', 'Images'],
  ['#/operations', 'Operations'],
  ['#/events', 'Events'],
  ['#/tokens', 'Tokens'],
];

function Shell({ session, onLogout }: { session: Session; onLogout: () => void }) {
  const hash = useHash();
  const state = useLive();
  const [path, search = ''] = hash.replace(/^#/, '').split('?');
  const parts = (path || '/').split('/').filter(Boolean).map(decodeURIComponent);
  const query = new URLSearchParams(search);
  const section = parts[0] ?? '';
  useEffect(() => {
    // Focus the page's heading on navigation, so screen readers announce the new page.
    document.querySelector<HTMLElement>('main h1')?.focus();
  }, [hash]);
  let page;
  if (section === '' ) page = <Dashboard />;
  else if (section === 'hosts') page = <Hosts />;
  else if (section === 'vms' && parts[1]) page = <VmPage name={parts[1]} tab={parts[2] ?? 'overview'} />;
  else if (section === 'vms') page = <VmList query={query} />;
  else if (section === 'create') page = <CreateVm />;
  else if (section === 'disks') page = <Disks />;
  else if (section === 'images') page = <Images />;
  else if (section === 'operations') page = <Operations />;
  else if (section === 'events') page = <Events />;
  else if (section === 'tokens') page = <Tokens {...(session.token ? { currentToken: session.token.id } : {})} />;
  else page = <div class="page"><h1>Not found</h1></div>;
  const active = (href: string) => (href === '#/' ? section === '' : `#/${section}` === href);
  return (
    <div class="shell">
      <a class="skip" href="#main" onClick={(event) => { event.preventDefault(); document.getElementById('main')?.focus(); }}>Skip to content</a>
      <header class="top">
        <a class="brand" href="#/"><span class="logo" aria-hidden="true">◆</span> Vireo</a>
        <nav aria-label="Main">
          {NAV.filter(([href]) => href !== '#/hosts' || state.cluster.enabled).map(([href, label]) => <a key={href} href={href} aria-current={active(href) ? 'page' : undefined}>{label}</a>)}
        </nav>
        <span class="spacer" />
        <span class={`conn ${state.connected ? 'up' : 'down'}`} role="status" data-testid="connection">{state.connected ? 'Live' : 'Reconnecting…'}</span>
        <span class="who">{session.token ? session.token.name : 'local'}</span>
        <button type="button" onClick={onLogout} data-testid="logout">Log out</button>
      </header>
      <main id="main" tabIndex={-1}>
        <Suspense fallback={<p class="muted">Loading…</p>}>{page}</Suspense>
      </main>
    </div>
  );
}

function App() {
  const [session, setSession] = useState<Session | null>();
  const [error, setError] = useState<string>();
  const loggedOut = () => {
    live.stop();
    api.csrf = undefined;
    setSession(null);
  };
  const begin = (value: Session) => {
    api.csrf = value.csrf;
    setSession(value);
    if (location.hash.startsWith('#/login')) location.hash = '#/';
    live.start(loggedOut).catch((failure: unknown) => setError(errorText(failure)));
  };
  useEffect(() => {
    api.call('GET /ui/session').then(begin, (failure: unknown) => {
      if (failure instanceof VireoError && failure.code !== 'unauthorized') setError(errorText(failure));
      setSession(null);
    });
  }, []);
  if (session === undefined) return <p class="muted center">Loading…</p>;
  if (session === null) return <Login onLogin={begin} />;
  return (
    <>
      {error && <p class="error banner" role="alert">{error}</p>}
      <Shell session={session} onLogout={async () => {
        await api.call('POST /ui/logout').catch(() => {});
        loggedOut();
      }} />
    </>
  );
}

render(<App />, document.getElementById('app')!);
