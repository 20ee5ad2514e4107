// The weft console: plain JavaScript, no build step, no dependencies.
// Every value from the API is put on the page as text, never as markup.
'use strict';

const ROLES = ['viewer', 'operator', 'admin'];
let me = null;        // { name, role } once signed in
let timer = null;     // the current page's refresh
const $ = (id) => document.getElementById(id);

// An element with properties (className, textContent, onclick, …) and children.
function el(tag, props, ...children) {
  const e = document.createElement(tag);
  Object.assign(e, props || {});
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

// Put `children` (nested arrays flattened, nulls left out) on `page`.
function fill(page, ...children) {
  page.replaceChildren(...children.flat(2).filter((c) => c !== null && c !== undefined));
}

function may(role) {
  return me && ROLES.indexOf(me.role) >= ROLES.indexOf(role);
}

function token() {
  return sessionStorage.getItem('weft-token');
}

async function api(method, path, body) {
  const headers = { 'Accept': 'application/json' };
  if (token()) headers['Authorization'] = 'Bearer ' + token();
  const init = { method, headers, credentials: 'omit' };
  if (method !== 'GET') {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body || {});
  }
  const resp = await fetch('/api/v1' + path, init);
  let data = null;
  try { data = await resp.json(); } catch (_) { data = null; }
  if (!resp.ok) {
    const why = (data && data.error) || resp.statusText;
    const err = new Error(resp.status + ': ' + why);
    err.status = resp.status;
    throw err;
  }
  return data;
}

function say(text) {
  $('status').textContent = text || '';
}

// --- signing in -----------------------------------------------------------

async function signIn() {
  // With tokens configured and none given yet, ask first: a call without
  // one would only be refused (and count as a failed login).
  if (!token()) {
    try {
      const config = await (await fetch('/ui/config.json')).json();
      if (config.tokens) {
        showSignIn('');
        return false;
      }
    } catch (_) { /* ask the API */ }
  }
  try {
    me = await api('GET', '/whoami');
  } catch (e) {
    me = null;
    if (e.status === 401) {
      const had = !!token();
      // A refused token is not kept.
      sessionStorage.removeItem('weft-token');
      showSignIn(had ? 'that token was not accepted' : '');
      return false;
    }
    say('the host does not answer: ' + e.message);
    return false;
  }
  $('sign-in').hidden = true;
  $('nav').hidden = false;
  $('who').textContent = me.name + ' (' + me.role + ')';
  $('sign-out').hidden = !token();
  return true;
}

function showSignIn(error) {
  clearInterval(timer);
  $('nav').hidden = true;
  $('sign-out').hidden = true;
  $('who').textContent = '';
  $('page').replaceChildren();
  $('sign-in').hidden = false;
  $('sign-in-error').textContent = error || '';
}

// --- pages ----------------------------------------------------------------

const age = (ms) => {
  if (!ms) return '-';
  const s = Math.round(ms / 1000);
  if (s < 120) return s + ' s';
  if (s < 7200) return Math.round(s / 60) + ' min';
  return Math.round(s / 3600) + ' h';
};

let last = null; // previous pipeline counters, for rates

async function pipelines(page) {
  const list = (await api('GET', '/pipelines')).pipelines;
  const now = Date.now();
  const rate = (p, field) => {
    const before = last && last.list.find((q) => q.name === p.name);
    if (!before) return '-';
    const secs = (now - last.at) / 1000;
    return ((field(p) - field(before)) / secs).toFixed(1);
  };
  const failed = (p) => p.retried + p.dead_lettered;
  const rows = list.map((p) => el('tr', { id: 'pipeline-' + p.name },
    el('td', {}, el('a', { href: '#/events?pipeline=' + encodeURIComponent(p.name), textContent: p.name })),
    el('td', { className: 'owner', textContent: (p.catalog && p.catalog.owner) || (p.route_of ? 'route of ' + p.route_of : '-') }),
    el('td', p.paused && p.pause_reason
      ? { className: 'bad state', title: p.pause_reason, textContent: 'paused' }
      : { className: 'state', textContent: p.paused ? 'paused' : 'running' }),
    el('td', { textContent: p.breaker }),
    el('td', { className: 'num queued', textContent: p.queued }),
    el('td', { className: 'num', textContent: age(p.oldest_age_ms) }),
    el('td', { className: 'num accepted', textContent: p.accepted }),
    el('td', { className: 'num delivered', textContent: p.delivered }),
    el('td', { className: 'num', textContent: rate(p, (q) => q.accepted) }),
    el('td', { className: 'num', textContent: rate(p, (q) => q.delivered) }),
    el('td', { className: 'num', textContent: rate(p, failed) }),
    el('td', { className: 'num', textContent: p.dead_letters }),
    el('td', p.unaccounted === 0
      ? { className: 'ok', textContent: 'balanced' }
      : { className: 'bad', textContent: p.unaccounted + ' unaccounted' }),
    el('td', {}, may('operator')
      ? el('button', {
        className: p.paused ? 'resume' : 'pause',
        textContent: p.paused ? 'Resume' : 'Pause',
        onclick: async () => {
          try {
            await api('POST', '/pipelines/' + encodeURIComponent(p.name) + (p.paused ? '/resume' : '/pause'));
            render();
          } catch (e) { say(e.message); }
        },
      })
      : null),
  ));
  last = { at: now, list };
  const canaries = list.flatMap((p) => (p.canaries || []).map((c) =>
    el('li', {}, p.name + ', ' + c.step + ': ' + c.candidate + ' at ' + Math.round(c.share * 100) + '% against ' +
      c.baseline + ': ' + c.state + (c.reason ? ' (' + c.reason + ')' : ''))));
  fill(page,
    el('h1', { textContent: 'Pipelines' }),
    el('table', { id: 'pipelines' },
      el('tr', {}, ['pipeline', 'owner', 'state', 'breaker', 'queued', 'oldest', 'accepted', 'delivered',
        'accepted/s', 'delivered/s', 'failed/s', 'dead letters', 'reconciled', ''].map((h) => el('th', { textContent: h }))),
      rows),
    canaries.length ? el('div', {}, el('h2', { textContent: 'Canaries' }), el('ul', {}, canaries)) : null,
    objectives(list),
    el('p', { className: 'muted', textContent: 'Counters since start; rates over the last second. Failed: attempts retried or dead-lettered.' }),
  );
}

// The objectives, quality gates, synthetic checks and pause reasons of
// the pipelines that have any.
function objectives(list) {
  const pct = (v) => (v * 100).toFixed(1) + '%';
  const burn = (r, w) => (r.burn_rates[w] || 0).toFixed(2) + '×';
  const rows = list.flatMap((p) => {
    const o = p.objectives || {};
    return [['success', o.success], ['latency', o.latency]].filter(([, r]) => r).map(([slo, r]) =>
      el('tr', { className: 'slo' },
        el('td', { textContent: p.name }),
        el('td', { textContent: slo }),
        el('td', { className: 'num', textContent: pct(r.objective) }),
        el('td', { className: 'num', textContent: burn(r, '5m') }),
        el('td', { className: 'num', textContent: burn(r, '1h') }),
        el('td', { className: 'num', textContent: burn(r, '6h') }),
        el('td', { className: r.budget_remaining < 0 ? 'num bad' : 'num', textContent: pct(r.budget_remaining) }),
        el('td', r.alerts.length ? { className: 'bad', textContent: r.alerts.join('; ') } : { className: 'ok', textContent: 'ok' })));
  });
  const notes = list.flatMap((p) => {
    const o = p.objectives || {};
    const out = [];
    if (p.paused && p.pause_reason) out.push(el('li', { className: 'bad' }, p.name + ' paused: ' + p.pause_reason));
    if (o.freshness) out.push(el('li', { className: o.freshness.ok ? '' : 'bad' }, p.name + ' freshness: ' +
      (o.freshness.ok ? 'ok' : 'violated') + ', ' + o.freshness.stale_s + ' s without a delivery while events wait (limit ' + o.freshness.limit_s + ' s)'));
    if (o.quality) out.push(el('li', { className: o.quality.tripped ? 'bad' : '' }, p.name + ' quality: ' + pct(o.quality.invalid_ratio) +
      ' invalid of ' + o.quality.window_events + ' events (max ' + pct(o.quality.max_invalid_ratio) + ', ' + o.quality.action + ')' +
      (o.quality.tripped ? ': ' + o.quality.tripped : '')));
    for (const c of p.synthetic || []) {
      out.push(el('li', { className: 'synthetic' + (c.last_error && c.failed ? ' bad' : '') }, p.name + ' synthetic ' + c.check + ': ' +
        c.ok + ' ok, ' + c.failed + ' failed; last success ' + (c.last_ok_ms ? new Date(c.last_ok_ms).toISOString() + ' (' + c.last_latency_ms + ' ms)' : 'never') +
        (c.last_error ? '; last error: ' + c.last_error : '')));
    }
    return out;
  });
  if (!rows.length && !notes.length) return null;
  return el('div', { id: 'objectives' },
    el('h2', { textContent: 'Objectives' }),
    rows.length ? el('table', {},
      el('tr', {}, ['pipeline', 'objective', 'target', 'burn 5m', 'burn 1h', 'burn 6h', 'budget left', 'alerts'].map((h) => el('th', { textContent: h }))),
      rows) : null,
    notes.length ? el('ul', {}, notes) : null);
}

function params() {
  const q = location.hash.split('?')[1] || '';
  return new URLSearchParams(q);
}

async function events(page) {
  const p = params();
  const names = (await api('GET', '/pipelines')).pipelines.map((x) => x.name);
  const query = new URLSearchParams();
  for (const k of ['pipeline', 'state', 'since']) if (p.get(k)) query.set(k, p.get(k));
  query.set('limit', '200');
  const list = (await api('GET', '/events?' + query)).events;
  const pick = el('select', { id: 'filter-pipeline' }, el('option', { value: '', textContent: 'every pipeline' }),
    names.map((n) => el('option', { value: n, textContent: n, selected: n === p.get('pipeline') })));
  const state = el('select', { id: 'filter-state' }, ['', 'queued', 'delivered', 'filtered', 'dead-lettered'].map((s) =>
    el('option', { value: s, textContent: s || 'any state', selected: s === (p.get('state') || '') })));
  const since = el('input', { id: 'filter-since', placeholder: 'since (2h, or a time)', value: p.get('since') || '' });
  const apply = el('button', {
    textContent: 'Filter',
    onclick: () => {
      const q = new URLSearchParams();
      if (pick.value) q.set('pipeline', pick.value);
      if (state.value) q.set('state', state.value);
      if (since.value) q.set('since', since.value);
      location.hash = '#/events?' + q;
    },
  });
  fill(page,
    el('h1', { textContent: 'Events' }),
    el('div', { className: 'filters' }, pick, state, since, apply),
    el('table', { id: 'events' },
      el('tr', {}, ['event', 'pipeline', 'key', 'state', 'received', 'attempts', 'time', 'last outcome'].map((h) => el('th', { textContent: h }))),
      list.map((e) => el('tr', {},
        el('td', {}, el('a', { href: '#/event/' + encodeURIComponent(e.id), className: 'event-link', textContent: e.id })),
        el('td', { textContent: e.pipeline }),
        el('td', { textContent: e.key }),
        el('td', { textContent: e.state }),
        el('td', { textContent: e.received_at }),
        el('td', { className: 'num', textContent: e.attempts }),
        el('td', { className: 'num', textContent: e.busy_ms.toFixed(1) + ' ms' }),
        el('td', { textContent: e.last }),
      ))),
  );
}

function attemptCard(a) {
  const total = Math.max(a.duration_ms, ...a.steps.map((s) => s.offset_ms + s.duration_ms), 0.001);
  return el('div', { className: 'card attempt' },
    el('strong', { textContent: 'attempt ' + a.attempt + ': ' + a.outcome }),
    el('span', { className: 'muted', textContent: '  ' + a.at + ', ' + a.duration_ms.toFixed(2) + ' ms' }),
    el('div', { textContent: a.detail }),
    el('table', { className: 'calls' },
      el('tr', {}, ['plugin call', 'outcome', 'duration', 'fuel', 'memory', 'timeline'].map((h) => el('th', { textContent: h }))),
      a.steps.map((s) => {
        const bar = el('div', { className: 'bar' + (['ok', 'filtered', 'split'].includes(s.outcome) ? '' : ' failed') });
        bar.style.left = (100 * s.offset_ms / total) + '%';
        bar.style.width = Math.max(0.5, 100 * s.duration_ms / total) + '%';
        return el('tr', { className: 'call' },
          el('td', { textContent: s.step }),
          el('td', { textContent: s.outcome }),
          el('td', { className: 'num', textContent: s.duration_ms.toFixed(2) + ' ms' }),
          // 0: fuel is not metered (no grant sets a fuel budget).
          el('td', { className: 'num', textContent: s.fuel ? s.fuel.toLocaleString('en') : '-' }),
          el('td', { className: 'num', textContent: s.memory_bytes ? Math.round(s.memory_bytes / 1024) + ' KiB' : '-' }),
          el('td', {}, el('div', { className: 'timeline' }, bar)));
      })));
}

async function eventPage(page, id) {
  const e = await api('GET', '/events/' + encodeURIComponent(id));
  let payload = e.payload;
  try { payload = JSON.stringify(JSON.parse(e.payload), null, 2); } catch (_) { /* as it came */ }
  fill(page,
    el('h1', { textContent: 'Event ' + e.id }),
    el('table', { id: 'event' }, [
      ['pipeline', e.pipeline], ['key', e.key], ['correlation id', e.correlation_id], ['state', e.state],
      ['received', e.received_at], ['attempts', e.attempts], ['receipt', e.receipt || '-'],
      ['error', e.error ? (e.failed_step + ': ' + e.error_kind + ': ' + e.error) : '-'],
      ['parent', e.parent || '-'], ['children', (e.children || []).length],
    ].map(([k, v]) => el('tr', {}, el('th', { textContent: k }), el('td', { textContent: v })))),
    el('h2', { textContent: 'Attempts' }),
    e.history.map(attemptCard),
    el('h2', { textContent: 'Payload (redacted fields masked)' }),
    el('pre', { id: 'payload', textContent: payload }),
  );
}

async function dlq(page) {
  const p = params();
  const query = new URLSearchParams();
  for (const k of ['pipeline', 'since']) if (p.get(k)) query.set(k, p.get(k));
  const [list, names] = await Promise.all([
    api('GET', '/dlq?' + query).then((r) => r.dead_letters),
    api('GET', '/pipelines').then((r) => r.pipelines.map((x) => x.name)),
  ]);
  const pick = el('select', { id: 'dlq-pipeline' }, el('option', { value: '', textContent: 'every pipeline' }),
    names.map((n) => el('option', { value: n, textContent: n, selected: n === p.get('pipeline') })));
  const since = el('input', { id: 'dlq-since', placeholder: 'since (2h, or a time)', value: p.get('since') || '' });
  const filter = el('button', {
    textContent: 'Filter',
    onclick: () => {
      const q = new URLSearchParams();
      if (pick.value) q.set('pipeline', pick.value);
      if (since.value) q.set('since', since.value);
      location.hash = '#/dlq?' + q;
    },
  });
  const boxes = [];
  const act = async (action) => {
    const ids = boxes.filter((b) => b.checked).map((b) => b.value);
    if (!ids.length) { say('select dead letters first'); return; }
    if (!confirm((action === 'purge' ? 'Delete for good ' : 'Replay ') + ids.length + ' dead letter(s)?')) return;
    try {
      const r = await api('POST', '/dlq/' + action, { ids });
      say(r.results.map((x) => x.id + ': ' + x.result).join('; '));
      render();
    } catch (e) { say(e.message); }
  };
  fill(page,
    el('h1', { textContent: 'Dead letters' }),
    el('div', { className: 'filters' }, pick, since, filter,
      may('operator') ? el('button', { id: 'replay', textContent: 'Replay selected', onclick: () => act('replay') }) : null,
      may('admin') ? el('button', { id: 'purge', textContent: 'Purge selected', onclick: () => act('purge') }) : null),
    el('table', { id: 'dead-letters' },
      el('tr', {}, ['', 'event', 'pipeline', 'key', 'failed step', 'error', 'attempts', 'received'].map((h) => el('th', { textContent: h }))),
      list.map((d) => {
        const box = el('input', { type: 'checkbox', value: d.id, className: 'pick' });
        boxes.push(box);
        return el('tr', {},
          el('td', {}, box),
          el('td', {}, el('a', { href: '#/event/' + encodeURIComponent(d.id), textContent: d.id })),
          el('td', { textContent: d.pipeline }),
          el('td', { textContent: d.key }),
          el('td', { textContent: d.failed_step }),
          el('td', { textContent: d.error_kind + ': ' + d.error }),
          el('td', { className: 'num', textContent: d.attempts }),
          el('td', { textContent: d.received_at }));
      })),
    list.length ? null : el('p', { className: 'muted', textContent: 'No dead letters.' }),
  );
}

// The latest records of the audit log (at most `n`), and its check.
async function recentAudit(n) {
  const check = await api('GET', '/audit-log/verify');
  const from = Math.max(0, (check.records || 0) - n);
  const log = await api('GET', '/audit-log?from=' + from);
  return [check, log.records];
}

function when(ms) {
  return ms ? new Date(ms).toISOString() : '-';
}

// Credentials (never a secret or a token) and the store's encryption.
function protection(credentials, encryption) {
  const keys = encryption.keys_in_use || [];
  return el('div', { className: 'card', id: 'protection' },
    el('h2', { textContent: 'Credentials' }),
    credentials.length
      ? el('table', { id: 'credentials' },
        el('tr', {}, ['name', 'kind', 'used by', 'state', 'valid until', 'last refresh', 'last error']
          .map((h) => el('th', { textContent: h }))),
        credentials.map((c) => el('tr', { className: c.state === 'failing' ? 'bad' : '' },
          el('td', { textContent: c.name }),
          el('td', { textContent: c.kind + (c.grant ? ' (' + c.grant + ')' : '') }),
          el('td', { textContent: (c.used_by || []).join(', ') }),
          el('td', { textContent: c.state }),
          el('td', { textContent: when(c.valid_until_ms) }),
          el('td', { textContent: when(c.last_refresh_ms) }),
          el('td', { textContent: c.last_error || '' }))))
      : el('p', { className: 'muted', textContent: 'No grant attaches a credential.' }),
    el('h2', { textContent: 'Store' }),
    el('p', {
      id: 'encryption',
      textContent: encryption.current_key
        ? 'Encrypted at rest: new values sealed under key ' + encryption.current_key
          + (keys.length > 1 ? '; values still under ' + keys.filter((k) => k !== encryption.current_key).join(', ') + ' (run weft store reencrypt)' : '')
        : 'Not encrypted at rest (server.encryption).',
    }));
}

async function plugins(page) {
  const [list, [, log], credentials, encryption] = await Promise.all([
    api('GET', '/plugins').then((r) => r.plugins),
    recentAudit(1000),
    api('GET', '/credentials').then((r) => r.credentials),
    api('GET', '/store/encryption'),
  ]);
  // Denials over time: the audit log keeps each (up to 10 a minute per plugin).
  const denials = (name) => log.filter((r) => r.kind === 'denial' && r.actor === name).slice(-20).reverse();
  fill(page,
    el('h1', { textContent: 'Plugins and grants' }),
    protection(credentials, encryption),
    list.map((p) => el('div', { className: 'card plugin', id: 'plugin-' + p.name },
      el('h2', { textContent: p.name + (p.version ? ' ' + p.version : '') + ' (' + p.world + ')' }),
      el('div', { className: 'muted', textContent: 'sha256 ' + p.sha256 }),
      el('div', { textContent: 'used by: ' + ((p.used_by || []).join(', ') || 'no pipeline') }),
      el('div', { textContent: 'calls ' + p.calls + ', failures ' + p.failures }),
      el('div', { className: Object.keys(p.denials || {}).length ? 'bad' : '',
        textContent: 'denials: ' + (Object.entries(p.denials || {}).map(([k, v]) => k + ' ' + v).join(', ') || 'none') }),
      el('div', { textContent: 'mismatches: ' + ((p.mismatches || []).map((m) => JSON.stringify(m)).join('; ') || 'none') }),
      el('h3', { textContent: 'Imports (what it asks for)' }),
      el('pre', { textContent: (p.imports || []).join('\n') || '(none)' }),
      el('h3', { textContent: 'Grant (what it may do)' }),
      el('pre', { className: 'grant', textContent: JSON.stringify(p.grant, null, 2) }),
      denials(p.name).length ? el('div', {},
        el('h3', { textContent: 'Latest denials' }),
        el('table', { className: 'denials' }, denials(p.name).map((r) => el('tr', {},
          el('td', { textContent: new Date(r.at_ms).toISOString() }),
          el('td', { textContent: r.pipeline }),
          el('td', { textContent: r.action }),
          el('td', { textContent: r.detail }))))) : null)),
  );
}

async function audit(page) {
  const [check, records] = await recentAudit(500);
  fill(page,
    el('h1', { textContent: 'Audit log' }),
    el('p', check.intact
      ? { id: 'chain', className: 'ok', textContent: 'The chain verifies: ' + check.records + ' records.' }
      : { id: 'chain', className: 'bad', textContent: 'The chain does not verify at record ' + check.index + ': ' + check.reason }),
    el('table', { id: 'audit' },
      el('tr', {}, ['#', 'when', 'who', 'what', 'pipeline', 'detail'].map((h) => el('th', { textContent: h }))),
      records.slice().reverse().map((r) => el('tr', {},
        el('td', { className: 'num', textContent: r.index }),
        el('td', { textContent: r.at || (r.at_ms ? new Date(r.at_ms).toISOString() : '') }),
        el('td', { textContent: r.actor }),
        el('td', { textContent: r.kind + ' ' + r.action }),
        el('td', { textContent: r.pipeline }),
        el('td', { textContent: r.detail })))),
  );
}

// --- routing --------------------------------------------------------------

async function render() {
  clearInterval(timer);
  say('');
  const hash = location.hash || '#/pipelines';
  const path = hash.slice(1).split('?')[0];
  for (const a of document.querySelectorAll('#nav a')) {
    a.classList.toggle('here', path.startsWith(a.getAttribute('href').slice(1)));
  }
  const page = $('page');
  const show = async () => {
    try {
      if (path === '/pipelines') await pipelines(page);
      else if (path === '/events') await events(page);
      else if (path.startsWith('/event/')) await eventPage(page, decodeURIComponent(path.slice(7)));
      else if (path === '/dlq') await dlq(page);
      else if (path === '/plugins') await plugins(page);
      else if (path === '/audit') await audit(page);
      else location.hash = '#/pipelines';
    } catch (e) {
      if (e.status === 401) { showSignIn('signed out: the token is no longer accepted'); return; }
      say(e.message);
    }
  };
  await show();
  if (path === '/pipelines') timer = setInterval(show, 1000);
}

window.addEventListener('hashchange', () => { if (me) render(); });
window.addEventListener('DOMContentLoaded', async () => {
  $('sign-in-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    sessionStorage.setItem('weft-token', $('token').value);
    $('token').value = '';
    if (await signIn()) render();
  });
  $('sign-out').addEventListener('click', () => {
    sessionStorage.removeItem('weft-token');
    me = null;
    showSignIn('');
  });
  if (await signIn()) render();
});
