// The operator's page of sandboxd: plain JavaScript, no build step. It reads everything
// through the API with the token kept in this tab's session storage.
'use strict';
(function () {
  const KEY = 'sandboxd.token';
  const $ = (sel, root) => (root || document).querySelector(sel);
  const view = $('#view');
  let info = null;          // {tenant, xterm}
  let skew = 0;             // server time - local time, ms
  let refresh = null;       // what the current view reloads on an event
  let timers = [];          // intervals of the current view
  let terminal = null;      // the open terminal, if any
  let events = null;        // the event stream's AbortController

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'text') e.textContent = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : v);
    }
    for (const k of kids.flat()) if (k !== null && k !== undefined) e.append(k.nodeType ? k : document.createTextNode(String(k)));
    return e;
  }
  const token = () => sessionStorage.getItem(KEY) || '';
  const enc = encodeURIComponent;
  function toast(msg) {
    const t = $('#toast');
    t.textContent = msg;
    t.classList.add('show');
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => t.classList.remove('show'), 3000);
  }

  class APIError extends Error {
    constructor(status, code, detail) { super(detail || ('HTTP ' + status)); this.status = status; this.code = code; }
  }
  async function api(path, opts) {
    opts = opts || {};
    const headers = Object.assign({ Authorization: 'Bearer ' + token() }, opts.headers || {});
    const resp = await fetch(path, Object.assign({}, opts, { headers }));
    if (resp.status === 401) { signOut('That token was not accepted.'); throw new APIError(401, 'unauthorized', 'not signed in'); }
    if (!resp.ok) {
      let p = {};
      try { p = await resp.json(); } catch (e) { /* not a problem document */ }
      throw new APIError(resp.status, p.code, p.detail || p.title);
    }
    return opts.raw ? resp : resp.json();
  }

  // ---- time ----
  const now = () => Date.now() + skew;
  function dur(ms) {
    const neg = ms < 0; ms = Math.abs(ms);
    const s = Math.floor(ms / 1000), d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60, sec = s % 60;
    const out = d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : m ? `${m}m ${sec}s` : `${sec}s`;
    return neg ? '-' + out : out;
  }
  function countdown(td) {
    const left = Date.parse(td.dataset.expires) - now();
    td.textContent = left <= 0 ? 'expired' : dur(left);
    td.classList.toggle('soon', left > 0 && left < 5 * 60 * 1000);
  }
  function tick() { document.querySelectorAll('[data-expires]').forEach(countdown); document.querySelectorAll('[data-since]').forEach(td => { td.textContent = dur(now() - Date.parse(td.dataset.since)); }); }
  const bytes = n => n == null ? '–' : n < 1024 ? n + ' B' : n < 1048576 ? (n / 1024).toFixed(1) + ' KiB' : n < 1073741824 ? (n / 1048576).toFixed(1) + ' MiB' : (n / 1073741824).toFixed(2) + ' GiB';

  // ---- sign-in ----
  function signOut(msg) {
    sessionStorage.removeItem(KEY);
    info = null;
    stopView();
    if (events) { events.abort(); events = null; }
    $('#nav').hidden = true; $('#signout').hidden = true; $('#who').textContent = '';
    view.replaceChildren();
    $('#signin').hidden = false;
    $('#signin-error').textContent = msg || '';
    $('#token').focus();
  }
  async function signIn() {
    try {
      info = await api('/v1/ui/info');
    } catch (e) {
      if (e.status !== 401) $('#signin-error').textContent = 'sandboxd did not answer: ' + e.message;
      return;
    }
    skew = Date.parse(info.now) - Date.now();
    if (info.xterm && !window.Terminal && !$('#xterm-js')) {
      // sandboxd found a browser build of xterm.js (ui.xterm_dir): the terminal uses it.
      document.head.append(el('link', { rel: 'stylesheet', href: 'vendor/xterm/xterm.css' }), el('script', { id: 'xterm-js', src: 'vendor/xterm/xterm.js' }));
    }
    $('#signin').hidden = true; $('#nav').hidden = false; $('#signout').hidden = false;
    $('#who').textContent = 'tenant ' + info.tenant;
    follow();
    route();
  }
  $('#signin-form').addEventListener('submit', ev => {
    ev.preventDefault();
    const t = $('#token').value.trim();
    if (!t) return;
    sessionStorage.setItem(KEY, t);
    $('#token').value = '';
    signIn();
  });
  $('#signout').addEventListener('click', () => signOut());

  // ---- live events (server-sent events, read with fetch: EventSource cannot send a token) ----
  async function follow() {
    if (events) events.abort();
    const ctl = new AbortController();
    events = ctl;
    let wait = 1000;
    while (!ctl.signal.aborted) {
      try {
        const resp = await api('/v1/ui/events', { raw: true, signal: ctl.signal, headers: { Accept: 'text/event-stream' } });
        wait = 1000;
        const reader = resp.body.getReader();
        const dec = new TextDecoder();
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += dec.decode(value, { stream: true });
          let i;
          while ((i = buf.indexOf('\n\n')) >= 0) {
            const block = buf.slice(0, i); buf = buf.slice(i + 2);
            const data = block.split('\n').filter(l => l.startsWith('data: ')).map(l => l.slice(6)).join('\n');
            if (data) { try { onEvent(JSON.parse(data)); } catch (e) { /* a malformed event changes nothing */ } }
          }
        }
      } catch (e) {
        if (ctl.signal.aborted || (e && e.status === 401)) return;
      }
      await new Promise(r => setTimeout(r, wait));
      wait = Math.min(wait * 2, 15000);
    }
  }
  let pending = null;
  function onEvent(ev) {
    if (!refresh) return;
    clearTimeout(pending);
    pending = setTimeout(() => { if (refresh) refresh(ev); }, 250);
  }

  // ---- views ----
  function stopView() {
    timers.forEach(clearInterval); timers = [];
    refresh = null;
    if (terminal) { terminal.close(); terminal = null; }
  }
  function route() {
    if (!info) return;
    stopView();
    const h = location.hash || '#/';
    document.querySelectorAll('[data-nav]').forEach(a => a.removeAttribute('aria-current'));
    let m;
    if ((m = h.match(/^#\/s\/([0-9a-fA-F-]{36})$/))) return showSandbox(m[1]);
    if (h === '#/overview') { $('[data-nav=overview]').setAttribute('aria-current', 'page'); return showOverview(); }
    $('[data-nav=list]').setAttribute('aria-current', 'page');
    return showList();
  }
  window.addEventListener('hashchange', route);
  setInterval(tick, 1000); // countdowns and ages, whatever the view

  // The list of sandboxes: filters and paging as GET /v1/sandboxes has them.
  const listState = { agent: '', expired: '', limit: '50', cursors: [''] };
  function showList() {
    const table = el('table', { class: 'list', id: 'sandboxes' },
      el('thead', {}, el('tr', {}, ['Chat', 'Agent', 'Profile', 'Status', 'Age', 'Expires in', 'CPU', 'Memory'].map((t, i) => el('th', { scope: 'col', class: i >= 6 ? 'num' : null, text: t })))),
      el('tbody'));
    const agent = el('input', { id: 'f-agent', value: listState.agent, placeholder: 'any', size: 14 });
    const expired = el('select', { id: 'f-expired' }, [['', 'any'], ['false', 'live'], ['true', 'expired']].map(([v, t]) => el('option', { value: v, selected: v === listState.expired, text: t })));
    const limit = el('select', { id: 'f-limit' }, ['10', '25', '50', '100'].map(v => el('option', { value: v, selected: v === listState.limit, text: v })));
    const prev = el('button', { type: 'button', class: 'secondary', id: 'prev', text: 'Previous page' });
    const next = el('button', { type: 'button', class: 'secondary', id: 'next', text: 'Next page' });
    const status = el('p', { class: 'muted', id: 'list-status', role: 'status' });
    const form = el('form', { class: 'row filters' },
      el('div', {}, el('label', { for: 'f-agent', text: 'Agent' }), agent),
      el('div', {}, el('label', { for: 'f-expired', text: 'Status' }), expired),
      el('div', {}, el('label', { for: 'f-limit', text: 'Per page' }), limit),
      el('button', { type: 'submit', text: 'Apply' }));
    form.addEventListener('submit', ev => {
      ev.preventDefault();
      Object.assign(listState, { agent: agent.value.trim(), expired: expired.value, limit: limit.value, cursors: [''] });
      load();
    });
    prev.addEventListener('click', () => { listState.cursors.pop(); load(); });
    let nextCursor = '';
    next.addEventListener('click', () => { listState.cursors.push(nextCursor); load(); });
    view.replaceChildren(el('section', { class: 'card' }, el('h1', { text: 'Sandboxes' }), form),
      el('section', { class: 'card' }, table, status, el('div', { class: 'pager' }, prev, next)));

    async function load() {
      const q = new URLSearchParams({ limit: listState.limit });
      if (listState.agent) q.set('agent_id', listState.agent);
      if (listState.expired) q.set('expired', listState.expired);
      const after = listState.cursors[listState.cursors.length - 1];
      if (after) q.set('after', after);
      let page;
      try { page = await api('/v1/ui/sandboxes?' + q); } catch (e) { status.textContent = e.message; return; }
      skew = Date.parse(page.now) - Date.now();
      const body = table.tBodies[0];
      body.replaceChildren(...page.items.map(s => el('tr', { 'data-chat': s.chat_id },
        el('td', { 'data-label': 'Chat' }, el('a', { href: '#/s/' + s.chat_id, class: 'mono', text: s.chat_id })),
        el('td', { 'data-label': 'Agent', text: s.agent_id || 'default' }),
        el('td', { 'data-label': 'Profile', text: s.profile || 'default' }),
        el('td', { 'data-label': 'Status' }, el('span', { class: 'badge ' + (s.expired ? 'expired' : 'live'), text: s.expired ? 'expired' : s.status.toLowerCase() })),
        el('td', { 'data-label': 'Age', 'data-since': s.created_at }),
        el('td', { 'data-label': 'Expires in', 'data-expires': s.expires_at, class: 'expires' }),
        el('td', { 'data-label': 'CPU', class: 'num', text: s.cpu_percent == null ? '–' : s.cpu_percent.toFixed(1) + ' %' }),
        el('td', { 'data-label': 'Memory', class: 'num', text: bytes(s.memory_bytes) }))));
      tick();
      status.textContent = page.items.length ? '' : 'No sandboxes' + (listState.cursors.length > 1 ? ' on this page.' : ' yet.');
      nextCursor = page.next;
      next.disabled = !page.next;
      prev.disabled = listState.cursors.length <= 1;
    }
    refresh = load;
    timers.push(setInterval(load, 10000)); // CPU and memory: the server caches them
    load();
  }

  // A sandbox's page.
  function showSandbox(chat) {
    const path = '/v1/chats/' + enc(chat) + '/sandbox';
    const kv = el('dl', { class: 'kv', id: 'session' });
    const msg = el('p', { class: 'error', role: 'alert', id: 'sandbox-msg' });
    const ttl = el('select', { id: 'ttl', 'aria-label': 'Keep alive for' }, [['600', '10 minutes'], ['3600', '1 hour'], ['14400', '4 hours'], ['86400', '24 hours']].map(([v, t]) => el('option', { value: v, text: t })));
    const keep = el('button', { type: 'button', id: 'keepalive', text: 'Keep alive' });
    const del = el('button', { type: 'button', class: 'danger', id: 'delete', text: 'Delete sandbox' });
    const evList = el('ul', { class: 'plain', id: 'events' });
    const execList = el('ul', { class: 'plain', id: 'execs' });
    const egressList = el('ul', { class: 'plain', id: 'egress' });
    const files = el('ul', { class: 'plain files', id: 'files' });
    const crumbs = el('p', { class: 'mono', id: 'cwd' });
    const upload = el('input', { type: 'file', id: 'upload', 'aria-label': 'File to upload' });
    const upBtn = el('button', { type: 'button', id: 'upload-btn', text: 'Upload' });
    const termBox = el('div', { id: 'terminal' });
    const termBtn = el('button', { type: 'button', id: 'term-open', text: 'Open terminal' });
    let cwd = '';

    view.replaceChildren(
      el('p', {}, el('a', { href: '#/', text: '← Sandboxes' })),
      el('section', { class: 'card' }, el('h1', {}, 'Sandbox ', el('span', { class: 'mono', text: chat })), kv, msg,
        el('div', { class: 'row' }, el('div', {}, el('label', { for: 'ttl', text: 'Keep alive for' }), ttl), keep, del)),
      el('div', { class: 'grid' },
        el('section', { class: 'card' }, el('h2', { text: 'Workspace files' }), crumbs, files,
          el('div', { class: 'row' }, upload, upBtn)),
        el('section', { class: 'card' }, el('h2', { text: 'Recent commands' }), execList),
        el('section', { class: 'card' }, el('h2', { text: 'Events' }), evList),
        el('section', { class: 'card' }, el('h2', { text: 'Refused connections' }), egressList)),
      el('section', { class: 'card' }, el('h2', { text: 'Terminal' }), termBtn, termBox));

    async function loadSession() {
      let s;
      try { s = await api(path); } catch (e) {
        kv.replaceChildren();
        msg.textContent = e.status === 404 ? 'This chat has no sandbox (any more).' : e.message;
        keep.disabled = del.disabled = termBtn.disabled = upBtn.disabled = true;
        return false;
      }
      const row = (k, v) => [el('dt', { text: k }), v.nodeType ? el('dd', {}, v) : el('dd', { text: v })];
      kv.replaceChildren(...row('Status', s.expired ? 'expired' : s.status.toLowerCase()), ...row('Agent', s.agent_id || 'default'),
        ...row('Created', new Date(s.created_at).toLocaleString()),
        ...row('Expires', new Date(s.expires_at).toLocaleString()),
        ...row('Expires in', el('span', { 'data-expires': s.expires_at, id: 'expires-in' })),
        ...row('Session', s.session_id), ...row('Container', s.container_id.slice(0, 12)), ...row('Workspace', s.volume_host_path));
      kv.dataset.expiresAt = s.expires_at;
      tick();
      return true;
    }
    async function loadEvents() {
      let r;
      try { r = await api('/v1/ui/chats/' + enc(chat) + '/events'); } catch (e) { return; }
      const items = r.items.slice().reverse();
      const li = e => el('li', {}, el('span', { class: 'ev-type', text: e.type }), el('time', { datetime: e.at, class: 'muted', text: new Date(e.at).toLocaleTimeString() }), el('span', { class: 'mono', text: e.detail || '' }));
      evList.replaceChildren(...(items.length ? items.map(li) : [el('li', { class: 'muted', text: 'Nothing recorded since sandboxd started.' })]));
      const execs = items.filter(e => e.type === 'exec');
      execList.replaceChildren(...(execs.length ? execs.map(li) : [el('li', { class: 'muted', text: 'No commands yet.' })]));
    }
    async function loadEgress() {
      let r;
      try { r = await api(path + '/egress'); } catch (e) { egressList.replaceChildren(el('li', { class: 'muted', text: e.message })); return; }
      const d = r.denials || [];
      egressList.replaceChildren(...(d.length ? d.map(x => el('li', {}, el('span', { class: 'ev-type', text: x.reason }),
        el('time', { datetime: x.time, class: 'muted', text: new Date(x.time).toLocaleTimeString() }),
        el('span', { class: 'mono', text: x.destination + (x.detail ? ' — ' + x.detail : '') })))
        : [el('li', { class: 'muted', text: 'None (or the profile has no network egress).' })]));
    }
    async function loadFiles() {
      crumbs.replaceChildren(el('a', { href: '#', 'data-dir': '', text: '/workspace' }),
        ...cwd.split('/').filter(Boolean).map((p, i, a) => [' / ', el('a', { href: '#', 'data-dir': a.slice(0, i + 1).join('/'), text: p })]).flat());
      let list;
      try { list = await api(path + '/files/list?path=' + enc(cwd || '.')); } catch (e) { files.replaceChildren(el('li', { class: 'muted', text: e.message })); return; }
      const items = (list.items || list.files || list || []);
      files.replaceChildren(...(items.length ? items.map(f => {
        const rel = f.path;
        const name = rel.split('/').pop();
        const isDir = f.is_dir || (f.mode && String(f.mode).startsWith('d'));
        return el('li', {},
          isDir ? el('a', { href: '#', class: 'name mono', 'data-dir': rel, text: name + '/' }) : el('span', { class: 'name mono', text: name }),
          isDir ? null : el('span', { class: 'muted', text: bytes(f.size) }),
          isDir ? null : el('button', { type: 'button', class: 'secondary', 'data-download': rel, 'aria-label': 'Download ' + name, text: 'Download' }));
      }) : [el('li', { class: 'muted', text: 'Empty folder.' })]));
    }
    view.addEventListener('click', async ev => {
      const a = ev.target.closest('[data-dir]');
      if (a) { ev.preventDefault(); cwd = a.dataset.dir; loadFiles(); return; }
      const d = ev.target.closest('[data-download]');
      if (d) {
        try {
          const resp = await api(path + '/files?path=' + enc(d.dataset.download), { raw: true });
          const url = URL.createObjectURL(await resp.blob());
          const link = el('a', { href: url, download: d.dataset.download.split('/').pop() });
          document.body.append(link); link.click(); link.remove();
          setTimeout(() => URL.revokeObjectURL(url), 10000);
          toast('Downloaded ' + d.dataset.download);
        } catch (e) { toast(e.message); }
      }
    });
    upBtn.addEventListener('click', async () => {
      const f = upload.files[0];
      if (!f) { toast('Choose a file first.'); return; }
      const target = (cwd ? cwd + '/' : '') + f.name;
      try {
        await api(path + '/files?path=' + enc(target), { method: 'PUT', body: f, headers: { 'Content-Type': 'application/octet-stream' } });
        toast('Uploaded ' + target);
        upload.value = '';
        loadFiles();
      } catch (e) { toast('Upload failed: ' + e.message); }
    });
    keep.addEventListener('click', async () => {
      const label = ttl.options[ttl.selectedIndex].text;
      if (!(await confirmDialog('Keep this sandbox alive for ' + label + ' from now?'))) return;
      try {
        await api(path + '/keepalive', { method: 'POST', body: JSON.stringify({ ttl_s: Number(ttl.value) }), headers: { 'Content-Type': 'application/json' } });
        toast('Kept alive');
        loadSession(); loadEvents();
      } catch (e) { toast(e.message); }
    });
    del.addEventListener('click', async () => {
      if (!(await confirmDialog('Delete this sandbox? Its container goes; its workspace folder stays.'))) return;
      try {
        await api(path, { method: 'DELETE' });
        toast('Deleted');
        location.hash = '#/';
      } catch (e) { toast(e.message); }
    });
    termBtn.addEventListener('click', () => {
      if (terminal) { terminal.close(); terminal = null; termBtn.textContent = 'Open terminal'; return; }
      terminal = openTerminal(chat, termBox, () => { terminal = null; termBtn.textContent = 'Open terminal'; });
      termBtn.textContent = 'Close terminal';
    });
    refresh = () => { loadSession().then(ok => { if (ok) loadEgress(); }); loadEvents(); };
    loadSession().then(ok => { if (ok) { loadFiles(); loadEgress(); } });
    loadEvents();
  }

  function confirmDialog(text) {
    const d = $('#confirm');
    $('#confirm-text').textContent = text;
    return new Promise(resolve => {
      d.addEventListener('close', () => resolve(d.returnValue === 'ok'), { once: true });
      d.returnValue = '';
      d.showModal();
      $('#confirm-ok').focus();
    });
  }

  // The terminal: a WebSocket to .../sandbox/terminal, the token offered as a subprotocol.
  // xterm.js when sandboxd found a browser build of it; else a plain one: output as text,
  // a line of input sent on Enter.
  function openTerminal(chat, box, onEnd) {
    const b64 = btoa(unescape(encodeURIComponent(token()))).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const cols = 100, rows = 24;
    const ws = new WebSocket(`${proto}//${location.host}/v1/chats/${enc(chat)}/sandbox/terminal?cols=${cols}&rows=${rows}`, ['sandboxd.terminal.v1', 'bearer.' + b64]);
    ws.binaryType = 'arraybuffer';
    const te = new TextEncoder(), td = new TextDecoder();
    const send = s => { if (ws.readyState === 1) ws.send(te.encode(s)); };
    let write, dispose;
    if (info.xterm && window.Terminal) {
      const host = el('div', { class: 'term-host', id: 'xterm' });
      box.replaceChildren(host);
      const xt = new window.Terminal({ cols, rows });
      xt.open(host);
      (xt.onData ? xt.onData.bind(xt) : h => xt.on('data', h))(send);
      write = s => xt.write(s);
      dispose = () => xt.dispose();
      xt.focus();
    } else {
      const out = el('pre', { class: 'term', id: 'term-out', tabindex: '0', 'aria-live': 'off', 'aria-label': 'Terminal output' });
      const input = el('input', { id: 'term-in', autocomplete: 'off', spellcheck: 'false', 'aria-label': 'Command to type into the terminal' });
      const ctrlc = el('button', { type: 'button', class: 'secondary', text: 'Ctrl-C' });
      const form = el('form', { class: 'term-input' }, input, el('button', { type: 'submit', id: 'term-send', text: 'Send' }), ctrlc);
      form.addEventListener('submit', ev => { ev.preventDefault(); send(input.value + '\r'); input.value = ''; });
      ctrlc.addEventListener('click', () => send('\x03'));
      input.addEventListener('keydown', ev => {
        if (ev.ctrlKey && ev.key.length === 1 && /[a-z]/i.test(ev.key)) { ev.preventDefault(); send(String.fromCharCode(ev.key.toUpperCase().charCodeAt(0) - 64)); }
        else if (ev.key === 'Tab') { ev.preventDefault(); send(input.value + '\t'); input.value = ''; }
      });
      box.replaceChildren(out, form);
      let text = '';
      write = s => {
        // No emulation: escape sequences go, carriage returns before a newline go,
        // a backspace takes one character back.
        s = s.replace(/\x1b\[[0-9;?]*[ -\/]*[@-~]/g, '').replace(/\x1b\][^\x07\x1b]*(\x07|\x1b\\)/g, '').replace(/\x1b[()][A-Za-z0-9]/g, '').replace(/\r+\n/g, '\n');
        for (const ch of s) {
          if (ch === '\b') text = text.slice(0, -1);
          else if (ch === '\r') { const i = text.lastIndexOf('\n'); text = text.slice(0, i + 1); }
          else if (ch === '\x07') continue;
          else text += ch;
        }
        if (text.length > 200000) text = text.slice(-150000);
        out.textContent = text;
        out.scrollTop = out.scrollHeight;
      };
      dispose = () => {};
      input.focus();
    }
    ws.addEventListener('message', ev => {
      if (typeof ev.data === 'string') {
        let m = {};
        try { m = JSON.parse(ev.data); } catch (e) { return; }
        write(m.type === 'exit' ? `\r\n[the shell exited with code ${m.exit_code}]\r\n` : `\r\n[${m.code || 'error'}: ${m.detail || ''}]\r\n`);
        return;
      }
      write(td.decode(ev.data, { stream: true }));
    });
    let ended = false;
    ws.addEventListener('close', () => { if (!ended) { ended = true; write('\r\n[disconnected]\r\n'); onEnd(); } });
    ws.addEventListener('error', () => { /* close follows and says so */ });
    return { close() { ended = true; try { ws.close(1000); } catch (e) { /* closed already */ } dispose(); box.replaceChildren(); } };
  }

  // The overview: the service's own counts of the last hour, drawn as small SVG bar charts.
  function showOverview() {
    const wrap = el('div', { id: 'overview' });
    view.replaceChildren(el('h1', { text: 'Overview' }), wrap);
    const NS = 'http://www.w3.org/2000/svg';
    function chart(title, minutes, keys, cls) {
      const vals = minutes.map(m => keys.reduce((a, k) => a + (m.counts[k] || 0), 0));
      const total = vals.reduce((a, b) => a + b, 0), peak = Math.max(1, ...vals);
      const svg = document.createElementNS(NS, 'svg');
      svg.setAttribute('viewBox', '0 0 600 90'); svg.setAttribute('preserveAspectRatio', 'none');
      svg.setAttribute('role', 'img'); svg.setAttribute('aria-label', `${title}: ${total} in the last hour, at most ${peak === 1 && !total ? 0 : peak} a minute`);
      const axis = document.createElementNS(NS, 'line');
      Object.entries({ x1: 0, y1: 89, x2: 600, y2: 89, class: 'axis' }).forEach(([k, v]) => axis.setAttribute(k, v));
      svg.append(axis);
      vals.forEach((v, i) => {
        if (!v) return;
        const r = document.createElementNS(NS, 'rect'), h = Math.max(2, v / peak * 86);
        Object.entries({ x: i * 10 + 1, y: 89 - h, width: 8, height: h, class: 'bar ' + (cls || '') }).forEach(([k, val]) => r.setAttribute(k, val));
        const t = document.createElementNS(NS, 'title'); t.textContent = `${v} at ${new Date(minutes[i].start).toLocaleTimeString()}`;
        r.append(t); svg.append(r);
      });
      return el('section', { class: 'card chart', 'data-chart': keys.join(',') }, el('h2', {}, title, ' ', el('span', { class: 'muted', text: `${total} / hour` })), svg,
        el('p', { class: 'muted', text: `per minute, ${peak === 1 && !total ? 0 : peak} at most` }));
    }
    async function load() {
      let o;
      try { o = await api('/v1/ui/overview'); } catch (e) { wrap.replaceChildren(el('p', { class: 'error', text: e.message })); return; }
      const pools = o.pools.length ? o.pools.map(p => {
        const fill = el('div', { class: 'fill' });
        fill.style.width = Math.min(100, p.target ? p.ready / p.target * 100 : 0) + '%';
        return el('div', { class: 'pool' }, el('div', { class: 'row' }, el('strong', { text: p.profile }), el('span', { class: 'muted', text: `${p.ready} ready of ${p.target} (max ${p.max})` })),
          el('div', { class: 'track', role: 'img', 'aria-label': `${p.profile}: ${p.ready} of ${p.target} ready` }, fill));
      }) : [el('p', { class: 'muted', text: 'No profile has a warm pool.' })];
      wrap.replaceChildren(el('div', { class: 'grid' },
        el('section', { class: 'card' }, el('h2', { text: 'Active sandboxes' }), el('div', { class: 'big', id: 'active', text: o.active + (o.active_capped ? '+' : '') }), el('p', { class: 'muted', text: 'live, of this tenant' })),
        chart('Created', o.minutes, ['created', 'replaced']),
        chart('Reused', o.minutes, ['reused']),
        chart('Errors', o.minutes, ['create_failed'], 'bad'),
        chart('Cleaned up', o.minutes, ['cleaned', 'died', 'deleted'], 'warn'),
        el('section', { class: 'card' }, el('h2', { text: 'Warm pools' }), ...pools)));
    }
    refresh = load;
    timers.push(setInterval(load, 30000));
    load();
  }

  if (token()) signIn(); else signOut();
})();
