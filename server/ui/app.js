// app.js - tandem's chat page. Talks to the daemon it was served by (/v1/models,
// /v1/chat/completions with streaming); conversations, settings and the API key live in this
// browser's localStorage only. Model output is rendered as Markdown by marked and sanitized by
// DOMPurify before it reaches the DOM; the page's CSP (server/api_ui.c) lets only DOMPurify's
// Trusted Types policy create HTML. Everything else is set with textContent.
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);
  const KEY = 'tandem.';
  const load = (k, d) => {
    try {
      const v = localStorage.getItem(KEY + k);
      return v === null ? d : JSON.parse(v);
    } catch {
      return d;
    }
  };
  const save = (k, v) => localStorage.setItem(KEY + k, JSON.stringify(v));

  // ---- state (persisted)
  let convs = load('conversations', []); // [{id, title, created, messages: [msg]}]
  let currentId = load('current', null);
  const settings = Object.assign({ model: '', system: '', temperature: '', top_p: '', max_tokens: '' },
    load('settings', {}));
  let apiKey = load('apiKey', '');
  // msg: {role, content, reasoning?, stats?: {ttft_ms, tps, prompt, completion}, note?, error?}

  // ---- state (this page only)
  let controller = null; // AbortController of the running request
  let live = null; // {msg, view} of the answer being streamed

  const saveConvs = () => {
    save('conversations', convs);
    save('current', currentId);
  };
  const current = () => convs.find((c) => c.id === currentId) || null;

  // ---- rendering
  DOMPurify.addHook('afterSanitizeAttributes', (node) => {
    if (node.tagName === 'A' && node.hasAttribute('href')) {
      node.setAttribute('target', '_blank');
      node.setAttribute('rel', 'noopener noreferrer');
    }
  });
  const PURIFY = {
    RETURN_TRUSTED_TYPE: true,
    FORBID_TAGS: ['style', 'form', 'input', 'button', 'textarea', 'select'],
    FORBID_ATTR: ['style'],
  };
  function renderMarkdown(el, text) {
    el.innerHTML = DOMPurify.sanitize(marked.parse(text, { gfm: true, async: false }), PURIFY);
  }
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function setStatus(text, isError = false) {
    $('status').textContent = text;
    $('status').classList.toggle('error', isError);
  }

  function statsText(s) {
    const parts = [];
    if (s.ttft_ms != null) parts.push(`first token ${Math.round(s.ttft_ms)} ms`);
    if (s.tps != null) parts.push(`${s.tps.toFixed(1)} tokens/s`);
    if (s.prompt != null) parts.push(`${s.prompt} prompt + ${s.completion} completion tokens`);
    return parts.join(' · ');
  }

  // One message's DOM; update() redraws it from msg (called while streaming).
  function messageView(msg) {
    const root = el('article', `msg ${msg.role}`);
    root.append(el('div', 'who', msg.role === 'user' ? 'You' : 'Assistant'));
    let reasoning = null;
    const body = el('div', 'body');
    const stats = el('div', 'stats');
    const note = el('div', 'note');
    root.append(body, stats, note);
    function update() {
      if (msg.reasoning && !reasoning) {
        reasoning = el('details', 'reasoning');
        reasoning.append(el('summary', '', 'Reasoning'), el('div', 'reasoning-body'));
        root.insertBefore(reasoning, body);
      }
      if (reasoning) {
        reasoning.lastChild.textContent = msg.reasoning;
        reasoning.firstChild.textContent = msg === live?.msg && !msg.content ? 'Reasoning…' : 'Reasoning';
      }
      if (msg.role === 'user') body.textContent = msg.content;
      else renderMarkdown(body, msg.content);
      stats.textContent = msg.stats ? statsText(msg.stats) : '';
      note.textContent = msg.error || msg.note || '';
      note.classList.toggle('error', !!msg.error);
    }
    update();
    return { root, update };
  }

  function renderMessages() {
    const box = $('messages');
    box.replaceChildren();
    const c = current();
    if (!c) return;
    for (const m of c.messages) {
      const v = messageView(m);
      if (live && live.msg === m) live.view = v;
      box.append(v.root);
    }
    box.scrollTop = box.scrollHeight;
  }

  function renderList() {
    const ul = $('conv-list');
    ul.replaceChildren();
    for (const c of convs) {
      const li = el('li', c.id === currentId ? 'current' : '');
      const open = el('button', 'open', c.title);
      open.type = 'button';
      open.title = c.title;
      if (c.id === currentId) open.setAttribute('aria-current', 'true');
      open.addEventListener('click', () => select(c.id));
      const ren = el('button', 'act rename', 'Rename');
      ren.type = 'button';
      ren.setAttribute('aria-label', `Rename “${c.title}”`);
      ren.addEventListener('click', () => startRename(li, c));
      const del = el('button', 'act delete', 'Delete');
      del.type = 'button';
      del.setAttribute('aria-label', `Delete “${c.title}”`);
      del.addEventListener('click', () => remove(c.id));
      li.append(open, ren, del);
      ul.append(li);
    }
  }

  function startRename(li, c) {
    const input = el('input', 'rename-input');
    input.value = c.title;
    input.setAttribute('aria-label', 'New name');
    li.replaceChildren(input);
    input.focus();
    input.select();
    let done = false;
    const finish = (keep) => {
      if (done) return;
      done = true;
      const t = input.value.trim();
      if (keep && t) c.title = t;
      saveConvs();
      renderList();
    };
    input.addEventListener('keydown', (e) => {
      if (e.key === 'Enter') finish(true);
      else if (e.key === 'Escape') finish(false);
    });
    input.addEventListener('blur', () => finish(true));
  }

  function select(id) {
    if (controller) controller.abort();
    currentId = id;
    saveConvs();
    renderList();
    renderMessages();
    $('prompt').focus();
  }

  function newConversation() {
    const c = { id: `c${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`,
      title: 'New chat', created: Date.now(), messages: [] };
    convs.unshift(c);
    return c;
  }

  function remove(id) {
    const c = convs.find((x) => x.id === id);
    if (!c || !confirm(`Delete “${c.title}”?`)) return;
    if (id === currentId && controller) controller.abort();
    convs = convs.filter((x) => x.id !== id);
    if (currentId === id) currentId = convs.length ? convs[0].id : null;
    saveConvs();
    renderList();
    renderMessages();
  }

  // ---- the API
  function headers() {
    const h = { 'Content-Type': 'application/json' };
    if (apiKey) h.Authorization = `Bearer ${apiKey}`;
    return h;
  }
  async function errorText(r) {
    try {
      const j = await r.json();
      return j.error?.message || `HTTP ${r.status}`;
    } catch {
      return `HTTP ${r.status}`;
    }
  }
  function needKey() {
    $('settings').open = true;
    $('api-key').focus();
    setStatus('This server requires an API key: enter it in Settings.', true);
  }

  let modelsTimer = null;
  async function loadModels() {
    clearTimeout(modelsTimer);
    let r;
    try {
      r = await fetch('/v1/models', { headers: headers() });
    } catch (e) {
      setStatus(`Cannot reach the server: ${e.message}`, true);
      modelsTimer = setTimeout(loadModels, 3000);
      return;
    }
    if (r.status === 401) return needKey();
    if (r.status === 503) { // still loading the model
      setStatus(await errorText(r));
      modelsTimer = setTimeout(loadModels, 1000);
      return;
    }
    if (!r.ok) return setStatus(await errorText(r), true);
    const ids = (await r.json()).data.map((m) => m.id);
    const sel = $('model');
    sel.replaceChildren(...ids.map((id) => el('option', '', id)));
    if (ids.includes(settings.model)) sel.value = settings.model;
    settings.model = sel.value;
    setStatus(`Ready: ${sel.value}`);
    if (!performance.getEntriesByName('tandem:ready').length) performance.mark('tandem:ready'); // tests/bench/ui_load.mjs
  }

  function requestBody(c) {
    const messages = [];
    if (settings.system.trim()) messages.push({ role: 'system', content: settings.system });
    for (const m of c.messages) {
      if (m === live?.msg) continue;
      if (m.role === 'assistant' && !m.content) continue;
      messages.push({ role: m.role, content: m.content });
    }
    const body = { model: settings.model || undefined, messages, stream: true,
      stream_options: { include_usage: true } };
    for (const k of ['temperature', 'top_p', 'max_tokens']) {
      if (settings[k] !== '' && Number.isFinite(Number(settings[k]))) body[k] = Number(settings[k]);
    }
    return body;
  }

  // Read an SSE body, calling onEvent(json) for each `data:` payload until [DONE].
  async function readSSE(r, onEvent) {
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const data = block.split('\n').filter((l) => l.startsWith('data:'))
          .map((l) => l.slice(5).trimStart()).join('\n');
        if (!data) continue;
        if (data === '[DONE]') return;
        onEvent(JSON.parse(data));
      }
    }
  }

  let drawPending = false;
  function redrawLive() {
    if (drawPending) return;
    drawPending = true;
    requestAnimationFrame(() => {
      drawPending = false;
      if (!live?.view) return;
      const box = $('messages');
      const atEnd = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
      live.view.update();
      if (atEnd) box.scrollTop = box.scrollHeight;
    });
  }

  function setBusy(busy) {
    $('send').hidden = busy;
    $('stop').hidden = !busy;
    document.body.classList.toggle('busy', busy);
  }

  async function send(text) {
    let c = current();
    if (!c) {
      c = newConversation();
      currentId = c.id;
    }
    if (c.title === 'New chat') c.title = text.replace(/\s+/g, ' ').trim().slice(0, 48) || 'New chat';
    c.messages.push({ role: 'user', content: text });
    const msg = { role: 'assistant', content: '', reasoning: '' };
    c.messages.push(msg);
    live = { msg, view: null };
    const body = requestBody(c);
    saveConvs();
    renderList();
    renderMessages();
    setBusy(true);
    setStatus('Generating…');
    controller = new AbortController();
    const t0 = performance.now();
    let tFirst = null;
    let usage = null;
    try {
      const r = await fetch('/v1/chat/completions', { method: 'POST', headers: headers(),
        body: JSON.stringify(body), signal: controller.signal });
      if (!r.ok) {
        if (r.status === 401) needKey();
        throw new Error(await errorText(r));
      }
      await readSSE(r, (ev) => {
        if (ev.error) throw new Error(ev.error.message || 'error');
        if (ev.usage) usage = ev.usage;
        const d = ev.choices?.[0]?.delta;
        if (!d) return;
        if (tFirst === null && (d.content || d.reasoning_content)) tFirst = performance.now();
        if (d.reasoning_content) msg.reasoning += d.reasoning_content;
        if (d.content) msg.content += d.content;
        if (ev.choices[0].finish_reason === 'length') msg.note = 'stopped at max tokens';
        redrawLive();
      });
      setStatus(`Ready: ${settings.model}`);
    } catch (e) {
      if (e.name === 'AbortError') {
        msg.note = 'stopped';
        setStatus('Stopped.');
      } else {
        msg.error = e.message;
        setStatus(e.message, true);
      }
    }
    const tEnd = performance.now();
    msg.stats = { ttft_ms: tFirst === null ? null : tFirst - t0 };
    if (usage) {
      msg.stats.prompt = usage.prompt_tokens;
      msg.stats.completion = usage.completion_tokens;
      if (tFirst !== null && tEnd > tFirst && usage.completion_tokens > 1)
        msg.stats.tps = (usage.completion_tokens - 1) / ((tEnd - tFirst) / 1000);
    }
    controller = null;
    const view = live.view;
    live = null;
    if (view) view.update();
    saveConvs();
    setBusy(false);
  }

  // ---- wiring
  function bindSetting(id, key) {
    const input = $(id);
    input.value = settings[key];
    input.addEventListener('change', () => {
      settings[key] = input.value;
      save('settings', settings);
    });
  }
  bindSetting('model', 'model');
  bindSetting('system', 'system');
  bindSetting('temperature', 'temperature');
  bindSetting('top_p', 'top_p');
  bindSetting('max_tokens', 'max_tokens');
  $('api-key').value = apiKey;
  $('api-key').addEventListener('change', () => {
    apiKey = $('api-key').value.trim();
    save('apiKey', apiKey);
    loadModels();
  });
  $('new-chat').addEventListener('click', () => {
    if (controller) controller.abort();
    const c = newConversation();
    currentId = c.id;
    saveConvs();
    renderList();
    renderMessages();
    $('prompt').focus();
  });
  $('composer').addEventListener('submit', (e) => {
    e.preventDefault();
    const text = $('prompt').value;
    if (!text.trim() || controller) return;
    $('prompt').value = '';
    send(text);
  });
  $('prompt').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $('composer').requestSubmit();
    }
  });
  $('stop').addEventListener('click', () => controller?.abort());
  window.addEventListener('storage', (e) => { // another tab changed the conversations
    if (e.key === KEY + 'conversations' && !controller) {
      convs = load('conversations', []);
      renderList();
      renderMessages();
    }
  });

  if (!current() && convs.length) currentId = convs[0].id;
  renderList();
  renderMessages();
  loadModels();
  $('prompt').focus();
})();
