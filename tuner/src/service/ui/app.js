// The web UI of `bocb serve`: hash-routed views over /api/ui/, polled
// conditionally (ETag; cursors for what grows). Every name reaches the page
// through textContent or an attribute set by the DOM, never through HTML.
'use strict';

const POLL_MS = 2000;
const TOKEN_KEY = 'bocb-token';
const SVG_NS = 'http://www.w3.org/2000/svg';

// The page's view: its name, the element it draws in, its poll timer.
let current = { name: '', timer: null, generation: 0 };
const etags = new Map();

function token() { return localStorage.getItem(TOKEN_KEY) || ''; }

// An element: h('td', {class: 'num'}, 'text', child, ...). Strings become
// text nodes, so names are shown as written, never parsed as HTML.
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// Replaces `el`'s children; null and false stand for nothing, as in h().
function fill(el, ...children) {
  el.replaceChildren(...children.flat().filter(c => c !== null && c !== undefined && c !== false));
}

function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, String(v));
  }
}

// A path segment or query value, encoded.
const enc = encodeURIComponent;

class Unchanged extends Error {}

// GETs `path` (relative to the base), with the token. `conditional`:
// throws Unchanged when the service answers 304 to the last ETag.
async function api(path, { method = 'GET', body = null, conditional = false, text = false } = {}) {
  const headers = { Authorization: 'Bearer ' + token() };
  if (body !== null) headers['Content-Type'] = 'application/json';
  const tagged = etags.get(path);
  if (conditional && tagged) headers['If-None-Match'] = tagged;
  const res = await fetch(path, { method, headers, cache: 'no-store', body: body === null ? null : JSON.stringify(body) });
  if (res.status === 401) { askToken('The service refused the token.'); throw new Unchanged(); }
  if (res.status === 304) throw new Unchanged();
  const answer = text ? await res.text() : await res.json();
  if (!res.ok) throw new Error(answer.error || String(answer));
  const tag = res.headers.get('ETag');
  if (conditional && tag) etags.set(path, tag);
  return answer;
}

function main() { return document.getElementById('main'); }

function fmtAcc(x) { return x === null || x === undefined ? '—' : x.toFixed(2); }
function fmtNum(x) {
  if (x === null || x === undefined) return '—';
  const a = Math.abs(x);
  return a !== 0 && (a < 1e-3 || a >= 1e4) ? x.toExponential(2) : String(+x.toPrecision(4));
}
function fmtDuration(sec) {
  if (sec === null || sec === undefined) return '—';
  if (sec < 90) return Math.round(sec) + ' s';
  if (sec < 5400) return Math.round(sec / 60) + ' min';
  return (sec / 3600).toFixed(1) + ' h';
}
function stateBadge(state) { return h('span', { class: 'state ' + state }, state); }
function counts(map) {
  return Object.entries(map || {}).map(([k, v]) => k + ' ' + v).join(' · ') || '—';
}

// Colour of `x` on [lo, hi]: pale yellow to deep blue.
function colour(x, lo, hi) {
  const t = hi > lo ? Math.min(1, Math.max(0, (x - lo) / (hi - lo))) : 1;
  const a = [255, 247, 188], b = [37, 52, 148];
  const c = a.map((v, i) => Math.round(v + (b[i] - v) * t));
  return { fill: `rgb(${c[0]},${c[1]},${c[2]})`, text: t > 0.55 ? '#fff' : '#1d2330' };
}

// ---- Routing ---------------------------------------------------------------

function route() {
  const hash = location.hash.replace(/^#/, '');
  const [path, query] = hash.split('?');
  const params = new URLSearchParams(query || '');
  const parts = (path || '/').split('/').filter(Boolean).map(decodeURIComponent);
  if (parts.length === 0) return { name: 'experiments', run: experimentsView };
  if (parts[0] === 'submit') return { name: 'submit', run: submitView };
  if (parts[0] === 'e' && parts.length >= 2) {
    const exp = parts[1];
    if (parts.length === 2) return { name: 'experiment', run: el => experimentView(el, exp) };
    if (parts[2] === 'pair') return { name: 'pair', run: el => pairView(el, exp, params.get('b'), params.get('o')) };
    if (parts[2] === 'trials') return { name: 'trials', run: el => trialsView(el, exp) };
    if (parts[2] === 't' && parts[3]) return { name: 'trial', run: el => trialView(el, exp, parts[3]) };
    if (parts[2] === 'parallel') return { name: 'parallel', run: el => parallelView(el, exp) };
    if (parts[2] === 'analyses') return { name: 'analyses', run: el => analysesView(el, exp) };
  }
  return { name: 'missing', run: el => el.append(h('p', {}, 'No such page. ', h('a', { href: '#/' }, 'Experiments'))) };
}

function show() {
  if (current.timer) clearTimeout(current.timer);
  current.generation += 1;
  etags.clear();
  const r = route();
  current.name = r.name;
  document.body.dataset.view = r.name;
  delete document.body.dataset.loaded;
  const el = main();
  el.replaceChildren();
  if (!token()) { askToken(''); return; }
  r.run(el);
}

// Runs `tick` now and every POLL_MS while this view stays; `tick` redraws
// only when its data changed.
function poll(tick) {
  const generation = current.generation;
  const live = document.getElementById('live');
  const step = async () => {
    if (generation !== current.generation) return;
    try {
      await tick();
      document.body.dataset.loaded = '1';
      live.classList.remove('stale');
    } catch (e) {
      if (!(e instanceof Unchanged)) {
        live.classList.add('stale');
        showError(e);
      }
    }
    if (generation === current.generation) current.timer = setTimeout(step, POLL_MS);
  };
  step();
}

function showError(e) {
  let box = document.getElementById('view-error');
  if (!box) {
    box = h('p', { id: 'view-error', class: 'error' });
    main().prepend(box);
  }
  box.textContent = e.message;
}

function askToken(message) {
  const el = main();
  const input = h('input', { type: 'password', size: 60, placeholder: 'token', id: 'token-input' });
  fill(el,
    h('h1', {}, 'Token'),
    message ? h('p', { class: 'error' }, message) : null,
    h('p', {}, 'The service’s token is in STORE/service-token; the service also prints a link that carries it.'),
    h('form', { onsubmit: ev => { ev.preventDefault(); localStorage.setItem(TOKEN_KEY, input.value.trim()); show(); } },
      input, ' ', h('button', { class: 'action', type: 'submit' }, 'Use')));
}

// ---- Experiments -----------------------------------------------------------

function experimentsView(el) {
  const body = h('tbody');
  el.append(h('h1', {}, 'Experiments'),
    h('table', { id: 'experiments' },
      h('thead', {}, h('tr', {}, ['Name', 'State', 'Pairs', 'Trials', 'Best acc. %', 'Progress', 'ETA']
        .map((t, i) => h('th', { class: i === 2 || i === 4 ? 'num' : '' }, t)))),
      body));
  poll(async () => {
    const data = await api('api/ui/experiments', { conditional: true });
    fill(body, ...data.experiments.map(e => h('tr', { class: 'click', onclick: () => { location.hash = '#/e/' + enc(e.name); } },
      h('td', {}, h('a', { href: '#/e/' + enc(e.name) }, e.name)),
      h('td', {}, stateBadge(e.state)),
      h('td', { class: 'num' }, e.pairs),
      h('td', {}, counts(e.trials)),
      h('td', { class: 'num' }, fmtAcc(e.best_accuracy)),
      h('td', {}, h('span', { class: 'bar' }, h('span', { style: `width:${Math.round(100 * e.progress)}%` })), ' ', Math.round(100 * e.progress) + '%'),
      h('td', {}, fmtDuration(e.eta_s)))));
    if (data.experiments.length === 0) body.append(h('tr', {}, h('td', { colspan: 7, class: 'muted' }, 'No experiment yet: submit one.')));
  });
}

// ---- Experiment ------------------------------------------------------------

function tabs(exp, on) {
  const items = [['Matrix', '#/e/' + enc(exp)], ['Trials', '#/e/' + enc(exp) + '/trials'],
    ['Parallel coordinates', '#/e/' + enc(exp) + '/parallel'], ['Analyses', '#/e/' + enc(exp) + '/analyses']];
  return h('div', {},
    h('div', { class: 'crumbs' }, h('a', { href: '#/' }, 'Experiments'), ' / ', exp),
    h('div', { class: 'tabs' }, items.map(([t, href]) => h('a', { href, class: t === on ? 'on' : '' }, t))));
}

async function act(exp, action) {
  await api('api/experiments/' + enc(exp) + '/' + action, { method: 'POST', body: {} });
  etags.clear();
}

function experimentView(el, exp) {
  const head = h('div', { class: 'controls' });
  const matrix = h('div', { class: 'card', id: 'matrix' });
  const side = h('div', {});
  el.append(tabs(exp, 'Matrix'), head, h('div', { class: 'row' }, matrix, side));
  poll(async () => {
    const d = await api('api/ui/experiments/' + enc(exp), { conditional: true });
    const st = d.status;
    const stop = h('button', { class: 'action danger', id: 'stop', disabled: st.state !== 'running' ? 'disabled' : null,
      onclick: () => act(exp, 'stop').catch(showError) }, 'Stop');
    const resume = h('button', { class: 'action', id: 'resume', disabled: st.state === 'running' || st.state === 'imported' ? 'disabled' : null,
      onclick: () => act(exp, 'resume').catch(showError) }, 'Resume');
    fill(head, h('h1', { style: 'margin:0' }, exp), stateBadge(st.state), stop, resume,
      h('span', { class: 'muted' }, counts(st.trials), ' · ', Math.round(100 * d.progress) + '% · ETA ' + fmtDuration(d.eta_s)));
    fill(matrix, h('h2', { style: 'margin-top:0' }, 'Best accuracy per pair'), heatMatrix(exp, d),
      h('div', { class: 'legend' }, '✕ marks a failure (', d.failure_rule || 'no rule: no result yet', '); click a cell for the pair.'));
    fill(side,
      h('h2', { style: 'margin-top:0' }, 'Workers'),
      d.workers.length === 0 ? h('p', { class: 'muted' }, 'No worker has asked for work in the last 10 minutes.')
        : h('table', { id: 'workers' }, h('tr', {}, ['Worker', 'Device', 'Trial', 'Last heartbeat'].map(t => h('th', {}, t))),
          d.workers.map(w => h('tr', {}, h('td', {}, w.worker), h('td', {}, w.device || '—'),
            h('td', {}, w.trial ? h('a', { href: '#/e/' + enc(exp) + '/t/' + enc(w.trial) }, w.trial) : h('span', { class: 'muted' }, 'idle')),
            h('td', {}, fmtDuration(w.silent_s) + ' ago')))),
      h('h2', {}, 'Errors', d.errors_total > d.errors.length ? h('span', { class: 'muted' }, ` (latest ${d.errors.length} of ${d.errors_total})`) : null),
      st.error ? h('p', { class: 'error' }, st.error) : null,
      d.errors.length === 0 && !st.error ? h('p', { class: 'muted' }, 'None.')
        : h('table', {}, d.errors.slice(-20).map(e => h('tr', {},
          h('td', {}, h('a', { href: '#/e/' + enc(exp) + '/t/' + enc(e.trial) }, e.trial)), h('td', {}, e.backbone + ' × ' + e.optimizer),
          h('td', { class: 'error' }, e.error)))),
      h('h2', {}, 'Settings'),
      h('pre', { id: 'settings' }, d.settings || '(none)'));
  });
}

function heatMatrix(exp, d) {
  if (d.cells.length === 0) return h('p', { class: 'muted' }, 'No trial yet.');
  const cw = 92, ch = 34, left = 10 + 7 * Math.min(28, Math.max(...d.backbones.map(b => b.length))), top = 70;
  const svg = s('svg', { width: left + cw * d.optimizers.length + 10, height: top + ch * d.backbones.length + 10, id: 'heat' });
  d.optimizers.forEach((o, j) => svg.append(s('text', { x: left + cw * j + cw / 2, y: top - 8, 'text-anchor': 'start',
    transform: `rotate(-30 ${left + cw * j + cw / 2} ${top - 8})` }, o)));
  d.backbones.forEach((b, i) => svg.append(s('text', { x: left - 6, y: top + ch * i + ch / 2 + 4, 'text-anchor': 'end' },
    b.length > 28 ? b.slice(0, 27) + '…' : b, s('title', {}, b))));
  for (const c of d.cells) {
    const i = d.backbones.indexOf(c.backbone), j = d.optimizers.indexOf(c.optimizer);
    const x = left + cw * j, y = top + ch * i;
    const col = c.accuracy === null ? { fill: '#eceff3', text: '#667085' } : { fill: c.fill, text: c.text };
    const label = c.accuracy === null ? counts(c.trials).split(' · ')[0] : fmtAcc(c.accuracy) + (c.fails ? ' ✕' : '');
    const g = s('g', { class: 'cell', 'data-backbone': c.backbone, 'data-optimizer': c.optimizer });
    g.addEventListener('click', () => { location.hash = `#/e/${enc(exp)}/pair?b=${enc(c.backbone)}&o=${enc(c.optimizer)}`; });
    g.append(s('rect', { x: x + 1, y: y + 1, width: cw - 2, height: ch - 2, fill: col.fill, stroke: c.fails ? '#c62828' : 'none', 'stroke-width': 2 }),
      s('text', { x: x + cw / 2, y: y + ch / 2 + 4, 'text-anchor': 'middle', fill: col.text, 'font-weight': c.fails ? 700 : 400 }, label),
      s('title', {}, `${c.backbone} × ${c.optimizer}: ${counts(c.trials)}`));
    svg.append(g);
  }
  return svg;
}

// ---- Pair ------------------------------------------------------------------

function pairView(el, exp, backbone, optimizer) {
  el.append(tabs(exp, ''), h('h1', {}, backbone + ' × ' + optimizer));
  const grid = h('div', { class: 'card', id: 'grid' });
  const curves = h('div', { class: 'card', id: 'curves' });
  const best = h('div', { class: 'card', id: 'best-so-far' });
  const extras = h('div', {});
  el.append(h('div', { class: 'row' }, grid, curves, best), extras);
  const lines = new Map();
  let cursor = 0;
  poll(async () => {
    const d = await api(`api/ui/experiments/${enc(exp)}/pair?backbone=${enc(backbone)}&optimizer=${enc(optimizer)}&cursor=${cursor}`);
    cursor = d.cursor;
    for (const c of d.curves) lines.set(c.id, c);
    fill(grid, h('h2', { style: 'margin-top:0' }, 'Stage 1: lr × weight decay'), gridMap(d.grid, d.trials));
    fill(curves, h('h2', { style: 'margin-top:0' }, 'Learning curves'), curvePlot([...lines.values()]),
      h('div', { class: 'legend' }, '■ stopped early · ✕ diverged'));
    fill(best, h('h2', { style: 'margin-top:0' }, 'Best so far'), bestSoFar(d.trials));
    const stage2 = d.trials.filter(t => t.stage === 2);
    fill(extras, h('h2', {}, 'Stage 2: extra hyperparameters'),
      stage2.length === 0 ? h('p', { class: 'muted' }, 'None yet.') : trialTable(exp, stage2, paramNames(stage2)));
  });
}

function paramNames(trials) { return [...new Set(trials.flatMap(t => Object.keys(t.params)))].sort(); }

function gridMap(grid, trials) {
  const c = 54, left = 70, top = 28;
  const lr = i => trials.find(t => t.grid && t.grid.lr === i && t.stage === 1);
  const wd = j => trials.find(t => t.grid && t.grid.weight_decay === j && t.stage === 1);
  const accs = grid.flat().map(x => x.accuracy).filter(a => a !== null);
  const lo = Math.min(...accs), hi = Math.max(...accs);
  const svg = s('svg', { width: left + 5 * c + 10, height: top + 5 * c + 30 });
  svg.append(s('text', { x: left + 2.5 * c, y: 12, 'text-anchor': 'middle' }, 'weight decay →'),
    s('text', { x: 12, y: top + 2.5 * c, transform: `rotate(-90 12 ${top + 2.5 * c})`, 'text-anchor': 'middle' }, 'lr →'));
  for (let i = 0; i < 5; i++) {
    const t = lr(i);
    svg.append(s('text', { x: left - 4, y: top + c * i + c / 2 + 4, 'text-anchor': 'end' }, t ? fmtNum(t.params.lr) : i));
    const u = wd(i);
    svg.append(s('text', { x: left + c * i + c / 2, y: top + 5 * c + 14, 'text-anchor': 'middle' }, u ? fmtNum(u.params.weight_decay) : i));
    for (let j = 0; j < 5; j++) {
      const cell = grid[i][j];
      const col = cell.accuracy === null ? { fill: '#eceff3', text: '#667085' } : colour(cell.accuracy, lo, hi);
      const bad = cell.diverged + cell.failed;
      const label = cell.accuracy !== null ? cell.accuracy.toFixed(1) : bad ? '✕' : cell.stopped ? '■' : '';
      svg.append(s('rect', { x: left + c * j + 1, y: top + c * i + 1, width: c - 2, height: c - 2, fill: col.fill }),
        s('text', { x: left + c * j + c / 2, y: top + c * i + c / 2 + 4, 'text-anchor': 'middle', fill: col.text }, label),
        s('title', {}, `done ${cell.done}, stopped ${cell.stopped}, diverged ${cell.diverged}, failed ${cell.failed}`));
    }
  }
  return svg;
}

// A line plot of `series` ([{id, status, points: [[x, y], ...]}]).
function linePlot(series, { width = 420, height = 240, xLabel = 'epoch', yLabel = 'test acc. %', marks = true, id = null } = {}) {
  const pts = series.flatMap(l => l.points.filter(p => p[1] !== null));
  const svg = s('svg', { width, height, id });
  if (pts.length === 0) { svg.append(s('text', { x: 20, y: 30 }, 'No epoch yet.')); return svg; }
  const m = { l: 44, r: 10, t: 10, b: 30 };
  const xs = pts.map(p => p[0]), ys = pts.map(p => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1), y0 = Math.min(...ys), y1 = Math.max(...ys, y0 + 1e-9);
  const X = x => m.l + (x - x0) / (x1 - x0) * (width - m.l - m.r);
  const Y = y => height - m.b - (y - y0) / (y1 - y0) * (height - m.t - m.b);
  svg.append(s('line', { x1: m.l, y1: height - m.b, x2: width - m.r, y2: height - m.b, stroke: '#98a2b3' }),
    s('line', { x1: m.l, y1: m.t, x2: m.l, y2: height - m.b, stroke: '#98a2b3' }),
    s('text', { x: m.l - 4, y: m.t + 8, 'text-anchor': 'end' }, fmtNum(y1)),
    s('text', { x: m.l - 4, y: height - m.b, 'text-anchor': 'end' }, fmtNum(y0)),
    s('text', { x: m.l, y: height - 8 }, x0), s('text', { x: width - m.r, y: height - 8, 'text-anchor': 'end' }, x1),
    s('text', { x: (width + m.l) / 2, y: height - 8, 'text-anchor': 'middle' }, xLabel),
    s('text', { x: 10, y: height / 2, transform: `rotate(-90 10 ${height / 2})`, 'text-anchor': 'middle' }, yLabel));
  series.forEach((l, k) => {
    const p = l.points.filter(q => q[1] !== null);
    if (p.length === 0) return;
    const hue = (k * 67) % 360;
    const stroke = `hsl(${hue} 60% 42%)`;
    svg.append(s('polyline', { points: p.map(q => `${X(q[0])},${Y(q[1])}`).join(' '), fill: 'none', stroke, 'stroke-width': 1.5 },
      s('title', {}, l.id)));
    const last = p[p.length - 1];
    if (marks && l.status === 'stopped') svg.append(s('rect', { x: X(last[0]) - 3.5, y: Y(last[1]) - 3.5, width: 7, height: 7, fill: stroke }, s('title', {}, l.id + ': stopped early')));
    if (marks && l.status === 'diverged') svg.append(s('text', { x: X(last[0]), y: Y(last[1]) + 4, 'text-anchor': 'middle', fill: '#c62828' }, '✕'));
  });
  return svg;
}

function curvePlot(lines) { return linePlot(lines, { id: 'curve-plot' }); }

function bestSoFar(trials) {
  const done = trials.filter(t => t.accuracy !== null && t.status === 'done')
    .sort((a, b) => a.created_unix_s - b.created_unix_s);
  let best = -Infinity;
  const points = done.map((t, i) => { best = Math.max(best, t.accuracy); return [i + 1, best]; });
  return linePlot([{ id: 'best so far', status: 'done', points }], { xLabel: 'finished trials', yLabel: 'best acc. %', marks: false });
}

// ---- Trials ----------------------------------------------------------------

function trialTable(exp, rows, params, sortable = null) {
  const cols = [['id', 'Trial'], ['backbone', 'Backbone'], ['optimizer', 'Optimizer'], ['status', 'Status'],
    ['stage', 'Stage'], ['seed', 'Seed'], ...params.map(p => ['param:' + p, p]), ['accuracy', 'Acc. %'], ['epochs', 'Epochs'], ['wall', 'Time']];
  const numeric = k => !['id', 'backbone', 'optimizer', 'status'].includes(k);
  const head = h('tr', {}, cols.map(([k, t]) => {
    const mark = sortable && sortable.sort === k ? (sortable.desc ? ' ▼' : ' ▲') : '';
    return h('th', { class: (numeric(k) ? 'num ' : '') + (sortable ? 'sort' : ''), 'data-sort': k,
      onclick: sortable ? () => sortable.onSort(k) : null }, t + mark);
  }));
  return h('table', { class: 'trials' }, h('thead', {}, head), h('tbody', {}, rows.map(r => h('tr', { class: 'click', onclick: () => { location.hash = `#/e/${enc(exp)}/t/${enc(r.id)}`; } },
    h('td', {}, h('a', { href: `#/e/${enc(exp)}/t/${enc(r.id)}` }, r.id.slice(0, 10))), h('td', {}, r.backbone), h('td', {}, r.optimizer),
    h('td', {}, stateBadge(r.status)), h('td', { class: 'num' }, r.stage), h('td', { class: 'num' }, r.seed),
    params.map(p => h('td', { class: 'num' }, fmtNum(r.params[p]))),
    h('td', { class: 'num' }, fmtAcc(r.accuracy)), h('td', { class: 'num' }, r.epochs), h('td', { class: 'num' }, fmtDuration(r.wall_time_s))))));
}

function trialsView(el, exp) {
  const q = { page: 0, size: 50, sort: 'created', desc: false, filter: '', status: '' };
  const filter = h('input', { placeholder: 'filter id / backbone / optimizer', id: 'filter', size: 32 });
  const status = h('select', { id: 'status-filter' }, ['', 'queued', 'running', 'done', 'stopped', 'diverged', 'failed'].map(v => h('option', { value: v }, v || 'any status')));
  const jump = h('input', { placeholder: 'jump to trial id', size: 18 });
  const info = h('span', { class: 'muted', id: 'page-info' });
  const prev = h('button', { class: 'action', onclick: () => { q.page = Math.max(0, q.page - 1); refresh(); } }, '‹ Prev');
  const next = h('button', { class: 'action', id: 'next-page', onclick: () => { q.page += 1; refresh(); } }, 'Next ›');
  const table = h('div', { id: 'trial-table' });
  filter.addEventListener('input', () => { q.filter = filter.value; q.page = 0; refresh(); });
  status.addEventListener('change', () => { q.status = status.value; q.page = 0; refresh(); });
  jump.addEventListener('keydown', ev => { if (ev.key === 'Enter' && jump.value.trim()) location.hash = `#/e/${enc(exp)}/t/${enc(jump.value.trim())}`; });
  el.append(tabs(exp, 'Trials'), h('div', { class: 'controls' }, filter, status, prev, next, info, jump), table);
  const url = () => `api/ui/experiments/${enc(exp)}/trials?page=${q.page}&size=${q.size}&sort=${enc(q.sort)}&desc=${q.desc ? 1 : 0}&filter=${enc(q.filter)}&status=${enc(q.status)}`;
  let generation = current.generation;
  const draw = d => {
    const pages = Math.max(1, Math.ceil(d.total / d.size));
    info.textContent = `${d.total} trials · page ${d.page + 1} of ${pages}`;
    next.disabled = d.page + 1 >= pages;
    prev.disabled = d.page === 0;
    fill(table, trialTable(exp, d.rows, d.params, {
      sort: q.sort, desc: q.desc,
      onSort: k => { if (q.sort === k) q.desc = !q.desc; else { q.sort = k; q.desc = k === 'accuracy'; } refresh(); },
    }));
  };
  const refresh = () => api(url()).then(d => { if (generation === current.generation) draw(d); }).catch(showError);
  poll(async () => draw(await api(url(), { conditional: true })));
}

function trialView(el, exp, id) {
  const info = h('div', { class: 'card' });
  const plot = h('div', { class: 'card', id: 'trial-curve' });
  const logBox = h('pre', { class: 'log', id: 'log' });
  const timm = h('pre', { id: 'timm', hidden: 'hidden' });
  el.append(tabs(exp, ''), h('h1', {}, 'Trial ' + id), h('div', { class: 'row' }, info, plot),
    h('h2', {}, 'Log (following)'), logBox, timm);
  const points = [];
  let logFrom = 0, status = '';
  poll(async () => {
    const t = await api(`api/ui/experiments/${enc(exp)}/trials/${enc(id)}?since=${points.length}`);
    points.splice(t.since, points.length - t.since, ...t.curve);
    const copy = h('button', { class: 'action', id: 'copy-timm', onclick: () => copyTimm(t.timm_args, timm) }, 'Copy as timm args');
    const stop = h('button', { class: 'action danger', id: 'stop-trial', disabled: t.status !== 'running' && t.status !== 'queued' ? 'disabled' : null,
      onclick: () => act(exp, 'trials/' + enc(id) + '/stop').catch(showError) }, 'Stop this trial');
    fill(info, h('table', { class: 'kv' },
      [['backbone', t.backbone], ['optimizer', t.optimizer], ['status', stateBadge(t.status)], ['stage', t.stage], ['seed', t.seed],
        ['recipe', t.recipe || '—'], ['device', t.device || '—'], ['accuracy', fmtAcc(t.accuracy)], ['epochs', points.length],
        ['time', fmtDuration(t.wall_time_s)], ...Object.entries(t.params).map(([k, v]) => [k, fmtNum(v)])]
        .map(([k, v]) => h('tr', {}, h('td', {}, k), h('td', {}, v)))),
      t.error ? h('p', { class: 'error' }, t.error) : null, h('p', {}, stop, copy));
    if (t.curve.length > 0 || status !== t.status || plot.childElementCount === 0) {
      fill(plot, h('h2', { style: 'margin-top:0' }, 'Test accuracy'),
        linePlot([{ id, status: t.status, points }], { id: 'trial-plot' }),
        h('div', { class: 'legend', id: 'epoch-count' }, `${points.length} epochs`));
    }
    status = t.status;
    const log = await api(`api/ui/trials/${enc(id)}/log?from=${logFrom}`);
    if (log.text) { logBox.append(document.createTextNode(log.text)); logBox.scrollTop = logBox.scrollHeight; }
    logFrom = log.next;
  });
}

function copyTimm(args, box) {
  box.hidden = false;
  box.textContent = args;
  if (navigator.clipboard) navigator.clipboard.writeText(args).catch(() => {});
}

// ---- Parallel coordinates --------------------------------------------------

function parallelView(el, exp) {
  const top = h('select', { id: 'top' }, [100, 50, 25, 10, 5].map(p => h('option', { value: p }, p === 100 ? 'all trials' : `top ${p}%`)));
  const box = h('div', { class: 'card', id: 'parallel' });
  let last = null;
  top.addEventListener('change', () => { if (last) draw(last); });
  el.append(tabs(exp, 'Parallel coordinates'), h('div', { class: 'controls' }, 'Show ', top), box);
  const draw = d => {
    const all = d.points.slice().sort((a, b) => b.accuracy - a.accuracy);
    const shown = all.slice(0, Math.max(1, Math.ceil(all.length * Number(top.value) / 100)));
    fill(box, parallelPlot(d.params, shown, all), h('div', { class: 'legend' }, `${shown.length} of ${all.length} done trials; log scales where a parameter spans more than 10×.`));
  };
  poll(async () => { last = await api(`api/ui/experiments/${enc(exp)}/points`, { conditional: true }); draw(last); });
}

function parallelPlot(params, shown, all) {
  if (all.length === 0) return h('p', { class: 'muted' }, 'No done trial yet.');
  const axes = [...params, 'accuracy'];
  const width = Math.max(760, 150 * axes.length), height = 340, m = { l: 50, r: 50, t: 24, b: 30 };
  const value = (p, name) => name === 'accuracy' ? p.accuracy : p.params[name];
  const scales = axes.map(name => {
    const vs = all.map(p => value(p, name)).filter(v => v !== undefined && v !== null);
    let lo = Math.min(...vs), hi = Math.max(...vs);
    const log = name !== 'accuracy' && lo > 0 && hi / lo > 10;
    const f = v => log ? Math.log10(v) : v;
    if (log) { lo = Math.log10(lo); hi = Math.log10(hi); }
    if (hi === lo) { hi += 1; lo -= 1; }
    return { name, log, min: Math.min(...vs), max: Math.max(...vs), y: v => height - m.b - (f(v) - lo) / (hi - lo) * (height - m.t - m.b) };
  });
  const X = i => m.l + i * (width - m.l - m.r) / Math.max(1, axes.length - 1);
  const svg = s('svg', { width, height });
  const accs = all.map(p => p.accuracy), lo = Math.min(...accs), hi = Math.max(...accs);
  for (const p of shown.slice().reverse()) {
    const pts = scales.map((sc, i) => { const v = value(p, sc.name); return v === undefined ? null : `${X(i)},${sc.y(v)}`; }).filter(Boolean);
    svg.append(s('polyline', { points: pts.join(' '), fill: 'none', stroke: colour(p.accuracy, lo, hi).fill, 'stroke-width': 1.4, opacity: 0.85 },
      s('title', {}, `${p.id.slice(0, 10)} ${p.backbone} × ${p.optimizer}: ${fmtAcc(p.accuracy)}%`)));
  }
  scales.forEach((sc, i) => svg.append(s('line', { x1: X(i), y1: m.t, x2: X(i), y2: height - m.b, stroke: '#475467' }),
    s('text', { x: X(i), y: 14, 'text-anchor': 'middle', 'font-weight': 600 }, sc.name + (sc.log ? ' (log)' : '')),
    s('text', { x: X(i) + 4, y: m.t + 4 }, fmtNum(sc.max)), s('text', { x: X(i) + 4, y: height - m.b + 14 }, fmtNum(sc.min))));
  return svg;
}

// ---- Analyses --------------------------------------------------------------

function analysesView(el, exp) {
  // The report's own HTML, in a frame that may run nothing.
  const frame = h('iframe', { sandbox: '', id: 'report', title: 'report', style: 'width:100%;height:75vh;border:1px solid #d9dee7;background:#fff' });
  el.append(tabs(exp, 'Analyses'), h('p', { class: 'muted' }, 'The HTML report’s analyses, recomputed as results arrive; each pair’s learning curves are on its page.'), frame);
  // Without the curves the report reads trial summaries only, not every epoch.
  poll(async () => {
    frame.srcdoc = await api(`api/report?experiment=${enc(exp)}&format=html&curves=false`, { conditional: true, text: true });
  });
}

// ---- Submit ----------------------------------------------------------------

function submitView(el) {
  const text = h('textarea', { id: 'yaml', spellcheck: 'false', placeholder: 'name: my-experiment\ndataset: { format: cifar100-bin, path: /data/cifar100 }\n...' });
  const file = h('input', { type: 'file', accept: '.yaml,.yml' });
  const base = h('input', { id: 'base', size: 50, value: '.', title: 'where relative dataset paths start, on the service’s machine' });
  const out = h('div', { id: 'submit-result' });
  file.addEventListener('change', async () => { if (file.files[0]) text.value = await file.files[0].text(); });
  const submit = async () => {
    out.replaceChildren();
    const origin = file.files[0] ? file.files[0].name : 'pasted.yaml';
    try {
      const st = await api('api/experiments', { method: 'POST', body: { yaml: text.value, base: base.value, origin } });
      fill(out, h('p', {}, 'Submitted: ', h('a', { href: '#/e/' + enc(st.name) }, st.name)));
    } catch (e) {
      if (e instanceof Unchanged) return;
      // Errors name their place as FILE:LINE:COLUMN (or YAML's "line L column C").
      const at = /:(\d+):(\d+):|line (\d+),? column (\d+)/.exec(e.message);
      const line = at && Number(at[1] || at[3]), column = at && Number(at[2] || at[4]);
      fill(out, h('p', { class: 'error', id: 'submit-error' }, at ? `Line ${line}, column ${column}: ` : '', e.message));
      if (at) selectLine(text, line);
    }
  };
  el.append(h('h1', {}, 'Submit an experiment'),
    h('div', { class: 'controls' }, 'Upload ', file, ' relative paths from ', base), text,
    h('p', {}, h('button', { class: 'action', id: 'submit', onclick: submit }, 'Submit')), out);
  document.body.dataset.loaded = '1';
}

// Selects line `n` (1-based) of `area`, where a validation error points.
function selectLine(area, n) {
  const lines = area.value.split('\n');
  const start = lines.slice(0, n - 1).reduce((a, l) => a + l.length + 1, 0);
  area.focus();
  area.setSelectionRange(start, start + (lines[n - 1] || '').length);
}

// ---- Start -----------------------------------------------------------------

function start() {
  // The printed link carries the token in the fragment: kept, then dropped
  // from the address bar and the history.
  const m = /^#token=([^&]+)/.exec(location.hash);
  if (m) {
    localStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
    history.replaceState(null, '', location.pathname + '#/');
  }
  document.getElementById('logout').addEventListener('click', () => { localStorage.removeItem(TOKEN_KEY); show(); });
  window.addEventListener('hashchange', show);
  show();
}

start();
