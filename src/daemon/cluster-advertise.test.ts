import assert from 'node:assert/strict';
import { test } from 'node:test';
import { advertiseDecision } from './cluster-advertise.js';

const config = { url: 'https://10.0.0.1:8443', listenUrl: 'https://10.0.0.1:8443', fingerprint256: 'AA' };

test('a URL derived from --listen follows the new listen address', () => {
  const decision = advertiseDecision(config, { url: 'https://10.0.0.1:9443', fingerprint256: 'AA' });
  assert.deepEqual({ ...decision, note: undefined }, { change: true, url: 'https://10.0.0.1:9443', fingerprint256: 'AA', note: undefined });
  // A config written before listenUrl existed is taken as derived.
  assert.equal(advertiseDecision({ url: config.url }, { url: 'https://10.0.0.2:8443' }).change, true);
});

test('the same address and certificate: nothing to do', () => {
  assert.deepEqual(advertiseDecision(config, { url: config.url, fingerprint256: 'AA' }), { change: false });
});

test('a new certificate on the same address is re-advertised with its fingerprint', () => {
  const decision = advertiseDecision(config, { url: config.url, fingerprint256: 'BB' });
  assert.equal(decision.change, true);
  assert.equal(decision.change && decision.fingerprint256, 'BB');
});

test('an explicit --url is kept whatever the daemon listens on now', () => {
  const explicit = { url: 'https://vireo-a.example:443', listenUrl: 'https://10.0.0.1:8443', fingerprint256: 'AA' };
  const decision = advertiseDecision(explicit, { url: 'https://10.0.0.1:9443', fingerprint256: 'AA' });
  assert.equal(decision.change, false);
  assert.match(decision.note ?? '', /stays advertised/);
  const recert = advertiseDecision(explicit, { url: 'https://10.0.0.1:9443', fingerprint256: 'CC' });
  assert.deepEqual(recert.change && [recert.url, recert.fingerprint256], ['https://vireo-a.example:443', 'CC']);
});

test('no TCP listener, or a wildcard one: the old URL stays, with a note', () => {
  assert.equal(advertiseDecision(config, {}).change, false);
  assert.ok(advertiseDecision(config, {}).note);
  const wild = advertiseDecision(config, { url: 'https://0.0.0.0:8443' });
  assert.equal(wild.change, false);
  assert.ok(wild.note);
});
