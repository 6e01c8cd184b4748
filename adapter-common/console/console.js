// The mqtt-broker web console: polls the JSON API every two seconds and draws what it
// gets. Every text from the broker goes in through textContent, never as HTML.
"use strict";

const POLL_MS = 2000;
const HISTORY = 90; // points on the charts (three minutes)
const history = { t: [], msgIn: [], msgOut: [], bytesIn: [], bytesOut: [] };
let last = null; // the previous overview, for the rates

const $ = (id) => document.getElementById(id);

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) tr.appendChild(c instanceof Node ? c : el("td", c));
  return tr;
}

function fill(tbodyId, rows, columns, emptyText) {
  const body = $(tbodyId);
  body.replaceChildren();
  if (rows.length === 0) {
    const td = el("td", emptyText, "empty");
    td.colSpan = columns;
    body.appendChild(row([td]));
    return;
  }
  for (const r of rows) body.appendChild(r);
}

function duration(secs) {
  secs = Math.floor(secs);
  const d = Math.floor(secs / 86400), h = Math.floor((secs % 86400) / 3600);
  const m = Math.floor((secs % 3600) / 60), s = secs % 60;
  if (d > 0) return `${d}d ${h}h ${m}m`;
  if (h > 0) return `${h}h ${m}m ${s}s`;
  if (m > 0) return `${m}m ${s}s`;
  return `${s}s`;
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + units[i];
}

function num(n) {
  return n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2);
}

async function get(path) {
  const r = await fetch(path, { cache: "no-store", credentials: "same-origin" });
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

function td(text, cls) { return el("td", text, cls); }

function showOverview(o) {
  $("version").textContent = o.version;
  $("uptime").textContent = duration(o.uptime_secs);
  const g = o.gauges;
  $("g-connections").textContent = g.connections;
  $("g-sessions").textContent = g.sessions;
  $("g-subscriptions").textContent = g.subscriptions;
  $("g-retained").textContent = g.retained;
  $("g-queued").textContent = g.queued_messages;
  $("g-inflight").textContent = g.inflight_messages;
  fill("listeners", o.listeners.map((l) => row([td(l.name), td(l.addr, "mono"), td(l.protocol)])), 3, "none");
  const d = o.drops;
  fill("drops", [
    row([td("queue full"), td(d.queue_full, "num")]),
    row([td("expired while queued"), td(d.expired, "num")]),
    row([td("too large for the client"), td(d.too_large, "num")]),
    row([td("memory budget"), td(d.memory_budget, "num")]),
    row([td("QoS 0, client reads too slowly"), td(d.write_backlog, "num")]),
  ], 2, "");
  const s = o.stats;
  fill("refused", [
    row([td("publishes (ACL)"), td(s.publish_denied, "num")]),
    row([td("subscriptions"), td(s.subscribe_denied, "num")]),
    row([td("messages to wildcard subscriptions (ACL)"), td(s.receive_denied, "num")]),
    row([td("authentication"), td(s.auth_failures, "num")]),
  ], 2, "");

  const now = performance.now() / 1000;
  if (last !== null && now > last.t) {
    const dt = now - last.t;
    const rate = (a, b) => Math.max(0, (a - b) / dt);
    const point = {
      msgIn: rate(s.messages_received, last.s.messages_received),
      msgOut: rate(s.messages_sent, last.s.messages_sent),
      bytesIn: rate(s.bytes_received, last.s.bytes_received),
      bytesOut: rate(s.bytes_sent, last.s.bytes_sent),
    };
    history.t.push(now);
    for (const k of ["msgIn", "msgOut", "bytesIn", "bytesOut"]) history[k].push(point[k]);
    if (history.t.length > HISTORY) for (const k in history) history[k].shift();
    $("r-msg-in").textContent = num(point.msgIn);
    $("r-msg-out").textContent = num(point.msgOut);
    $("r-bytes-in").textContent = bytes(point.bytesIn);
    $("r-bytes-out").textContent = bytes(point.bytesOut);
  }
  last = { t: now, s };
  chart($("chart-msgs"), history.msgIn, history.msgOut, num, " msg/s");
  chart($("chart-bytes"), history.bytesIn, history.bytesOut, bytes, "/s");
}

// Two series on a canvas: incoming (blue) and outgoing (orange), scaled to the highest.
function chart(canvas, a, b, fmt, unit) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 18;
  ctx.clearRect(0, 0, w, h);
  const max = Math.max(1, ...a, ...b) * 1.2; // headroom above the highest point
  ctx.strokeStyle = "#e2e5ea";
  ctx.lineWidth = 1;
  ctx.fillStyle = "#6b7385";
  ctx.font = "11px system-ui, sans-serif";
  for (const f of [0, 0.5, 1]) {
    const y = pad + (h - 2 * pad) * (1 - f);
    ctx.beginPath(); ctx.moveTo(0, y); ctx.lineTo(w, y); ctx.stroke();
    ctx.fillText(fmt(max * f) + unit, 4, y - 3);
  }
  const line = (series, color) => {
    if (series.length < 2) return;
    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    // Until the history is full the points spread over the whole width.
    const step = w / Math.max(series.length - 1, 1);
    series.forEach((v, i) => {
      const x = i * step;
      const y = pad + (h - 2 * pad) * (1 - v / max);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  };
  line(a, "#2f6fdb");
  line(b, "#d9822b");
}

function showClients(clients) {
  $("n-clients").textContent = `(${clients.length})`;
  fill("clients", clients.map((c) => {
    const since = new Date(Date.now() - c.connected_secs * 1000);
    const button = el("button", "disconnect");
    button.title = `disconnect ${c.client_id}`;
    button.addEventListener("click", () => disconnect(c.client_id, button));
    const action = document.createElement("td");
    action.appendChild(button);
    const tr = row([
      td(c.client_id, "mono"), td(c.username ?? ""), td(c.peer, "mono"), td(c.listener),
      td(c.protocol), td(c.keep_alive_secs + " s", "num"), td(c.inflight, "num"),
      td(c.queued, "num"), td(since.toLocaleString() + " (" + duration(c.connected_secs) + ")"),
      action,
    ]);
    tr.dataset.clientId = c.client_id;
    return tr;
  }), 10, "no client connected");
}

function showSessions(sessions) {
  $("n-sessions").textContent = `(${sessions.length})`;
  fill("sessions", sessions.map((s) => {
    let expiry;
    if (s.online) expiry = s.expiry_secs === 0 ? "ends with the connection" : "after " + duration(s.expiry_secs) + " offline";
    else expiry = s.expires_in_secs === null ? "never" : "in " + duration(s.expires_in_secs);
    return row([
      td(s.client_id, "mono"), td(s.online ? "online" : "offline", s.online ? "online" : "offline"),
      td(s.subscriptions, "num"), td(s.queued, "num"), td(expiry),
    ]);
  }), 5, "no session");
}

function showSubscriptions(filters) {
  let n = 0;
  fill("subscriptions", filters.map((f) => {
    n += f.subscribers.length;
    const who = f.subscribers.map((s) => `${s.client_id} (${s.qos})`).join(", ");
    return row([td(f.filter, "mono"), td(who, "mono")]);
  }), 2, "no subscription");
  $("n-subscriptions").textContent = `(${n} on ${filters.length} filters)`;
}

function showRetained(messages) {
  $("n-retained").textContent = `(${messages.length})`;
  fill("retained", messages.map((m) => row([
    td(m.topic, "mono"), td(m.qos, "num"), td(bytes(m.size), "num"),
    td(m.payload + (m.truncated ? " …" : ""), "mono payload"),
  ])), 4, "no retained message");
}

async function disconnect(clientId, button) {
  button.disabled = true;
  try {
    const r = await fetch(`api/clients/${encodeURIComponent(clientId)}/disconnect`, {
      method: "POST", credentials: "same-origin",
    });
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    setStatus(`disconnected ${clientId}`, false);
  } catch (e) {
    setStatus(`disconnect ${clientId}: ${e.message}`, true);
  }
  setTimeout(poll, 300);
}

function setStatus(text, bad) {
  const s = $("status");
  s.textContent = text;
  s.classList.toggle("bad", bad);
}

let timer = null;
async function poll() {
  clearTimeout(timer);
  try {
    const [o, c, s, sub, r] = await Promise.all([
      get("api/overview"), get("api/clients"), get("api/sessions"),
      get("api/subscriptions"), get("api/retained"),
    ]);
    showOverview(o);
    showClients(c);
    showSessions(s);
    showSubscriptions(sub);
    showRetained(r);
    setStatus("updated " + new Date().toLocaleTimeString(), false);
  } catch (e) {
    setStatus("broker unreachable: " + e.message, true);
  }
  timer = setTimeout(poll, POLL_MS);
}

poll();
