// signpost dashboard: every type and instance, live.
//
// State comes from GET /v1/services (a snapshot) and GET /v1/events (every
// change after it). The event stream is opened first; once its headers are
// in, the server has subscribed us, so a snapshot fetched then misses
// nothing: events arriving meanwhile are held and applied on top of it, in
// order. A `lagged` event or a reconnect takes a new snapshot the same way.
//
// Events are read with fetch and a stream reader rather than EventSource:
// it can send an Authorization header (should reads ever need the token)
// and sees the status of a refused request, which EventSource hides.
//
// Only the rows in view are in the DOM (a fixed row height, a spacer as
// tall as the whole list), so 10 000 instances cost what 40 do to draw.
"use strict";

(() => {
  const ROW = 30;            // px; --row in app.css
  const OVERSCAN = 8;        // rows drawn above and below the view
  const LOG_LINES = 30;
  const TOKEN_KEY = "signpost.token";

  const $ = (id) => document.getElementById(id);
  const el = {
    connection: $("connection"), summary: $("summary"), filter: $("filter"),
    tokenForm: $("token-form"), token: $("token"), tokenMessage: $("token-message"),
    problem: $("problem"), types: document.querySelector("#types tbody"), log: $("log"),
    shown: $("shown"), viewport: $("viewport"), spacer: $("spacer"), rows: $("rows"),
  };

  const state = {
    byId: new Map(),     // id -> entry (mutated in place, so lists of entries stay valid)
    sorted: [],          // every entry, by type then name
    shown: [],           // the entries that pass the filter
    orderDirty: true,
    filterDirty: true,
    terms: [],
    panic: new Map(),    // type -> {panic, instances, not_critical}
    held: null,          // events held while a snapshot is being fetched
    snapshot: 0,         // generation of the latest snapshot request
    skew: 0,             // server clock minus ours, ms
  };
  // For tests and the curious: how the page is doing.
  const stats = (window.signpostStats = {
    renders: 0, lastRenderMs: 0, slowestRenderMs: 0, snapshots: 0, events: 0, ignored: 0,
    rowsInDom: 0, errors: [],
  });
  window.addEventListener("error", (e) => stats.errors.push(String(e.message)));
  window.addEventListener("unhandledrejection", (e) => stats.errors.push(String(e.reason)));

  // ---------------------------------------------------------------- helpers

  const esc = (s) => String(s).replace(/[&<>"']/g, (c) =>
    ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const serverNow = () => Date.now() + state.skew;

  function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }
  function headers() {
    const t = token();
    return t ? { Authorization: "Bearer " + t } : {};
  }

  class NeedToken extends Error {}

  async function getJSON(path) {
    const response = await fetch(path, { headers: headers(), cache: "no-store" });
    if (response.status === 401 || response.status === 403) throw new NeedToken(String(response.status));
    if (!response.ok) {
      let message = response.status + " " + response.statusText;
      try { message += ": " + (await response.json()).error; } catch (_) { /* not JSON */ }
      throw new Error(path + " answered " + message);
    }
    return response.json();
  }

  function setConnection(stateName, text) {
    el.connection.dataset.state = stateName;
    el.connection.textContent = text || stateName;
  }

  function problem(message) {
    el.problem.hidden = !message;
    el.problem.textContent = message || "";
  }

  // The token box: resolves once the user has given a token.
  let tokenWaiters = [];
  function askForToken(status) {
    setConnection("token", "needs a token");
    el.tokenMessage.textContent = token()
      ? "The server refused the token (" + status + "): enter a token that may read."
      : "This server asks for a token to read (" + status + "): enter one (read role or more).";
    el.tokenForm.hidden = false;
    el.token.focus();
    return new Promise((resolve) => tokenWaiters.push(resolve));
  }
  el.tokenForm.addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, el.token.value.trim());
    el.token.value = "";
    el.tokenForm.hidden = true;
    const waiters = tokenWaiters;
    tokenWaiters = [];
    waiters.forEach((resolve) => resolve());
  });

  // ------------------------------------------------------------------ model

  function prepare(entry, s) {
    entry.id = s.id;
    entry.s = s;
    const tags = s.tags || [];
    const meta = Object.entries(s.metadata || {}).map(([k, v]) => k + "=" + v);
    entry.addr = (s.host.includes(":") ? "[" + s.host + "]" : s.host) + ":" + s.port;
    entry.meta = meta;
    // Not the id: a short term such as "db" would match one UUID in nine.
    // An id is matched by its start instead (see matches).
    entry.text = [s.name, s.type, s.name + "." + s.type, entry.addr, s.health, s.locality || "",
      ...tags, ...meta, s.output || "", s.check_output || ""].join("\n").toLowerCase();
    return entry;
  }

  function upsert(s, changed) {
    let entry = state.byId.get(s.id);
    if (!entry) {
      entry = {};
      state.byId.set(s.id, entry);
      state.orderDirty = true;
    } else if (entry.s.type !== s.type || entry.s.name !== s.name) {
      state.orderDirty = true;
    }
    prepare(entry, s);
    if (changed) entry.changedAt = Date.now();
    state.filterDirty = true;
  }

  function remove(id) {
    if (state.byId.delete(id)) state.orderDirty = true;
  }

  function replaceAll(services) {
    const previous = state.byId;
    state.byId = new Map();
    for (const s of services) {
      const entry = previous.get(s.id) || {};
      state.byId.set(s.id, prepare(entry, s));
    }
    state.orderDirty = true;
  }

  // The server's clock, so that countdowns are right even when this
  // machine's is not: every event and heartbeat time is at most the
  // server's now when it reaches us, a lower bound of the skew.
  function atLeast(serverSeconds) {
    if (typeof serverSeconds !== "number") return;
    const bound = serverSeconds * 1000 - Date.now();
    if (bound > state.skew) state.skew = bound;
  }

  function logLine(kind, s, detail) {
    const li = document.createElement("li");
    li.dataset.kind = kind;
    const when = new Date().toLocaleTimeString();
    const who = s ? "<b>" + esc(s.name + "." + s.type) + "</b> " : "";
    li.innerHTML = esc(when) + " " + esc(kind) + " " + who + esc(detail || "");
    li.title = li.textContent;
    el.log.prepend(li);
    while (el.log.children.length > LOG_LINES) el.log.lastChild.remove();
  }

  function apply(event) {
    stats.events++;
    atLeast(event.timestamp);
    const data = event.data || {};
    switch (event.type) {
      case "register":
        upsert(data.service_info, true);
        logLine(data.replaced ? "replace" : "register", data.service_info, data.service_info.host + ":" + data.service_info.port);
        break;
      case "health":
        upsert(data.service_info, true);
        logLine("health", data.service_info, (data.previous || "?") + " → " + data.service_info.health + (data.source ? " (" + data.source + ")" : ""));
        break;
      case "deregister":
      case "expire":
        remove(data.service_id);
        logLine(event.type, data.service_info, data.reason || "");
        break;
      case "panic":
        state.panic.set(data.service_type, data);
        state.filterDirty = true;
        logLine(data.panic ? "panic" : "calm", null, data.service_type + ": " + data.not_critical + " of " + data.instances + " not critical");
        break;
      case "lagged":
        logLine("lagged", null, "missed " + data.missed + " events; reloading the list");
        snapshot();
        break;
      default:
        stats.ignored++; // a kind this page does not know yet
    }
    schedule();
  }

  // ------------------------------------------------------- server contact

  // Takes a snapshot: holds events until it is in, then applies them on top.
  async function snapshot() {
    const generation = ++state.snapshot;
    if (!state.held) state.held = [];
    setConnection("syncing");
    for (let attempt = 0; ; attempt++) {
      try {
        const [list, health] = await Promise.all([getJSON("v1/services"), getJSON("v1/health")]);
        if (generation !== state.snapshot) return; // a newer one is under way
        atLeast(health.timestamp);
        for (const s of list.services) atLeast(s.last_heartbeat);
        replaceAll(list.services);
        const held = state.held;
        state.held = null;
        stats.snapshots++;
        el.summary.dataset.version = health.version;
        problem("");
        held.forEach(apply);
        setConnection("live");
        schedule();
        return;
      } catch (error) {
        if (generation !== state.snapshot) return;
        if (error instanceof NeedToken) {
          await askForToken(error.message);
        } else {
          problem("Could not load the services: " + error.message);
          await sleep(Math.min(1000 * 2 ** attempt, 10000));
        }
      }
    }
  }

  // Follows /v1/events for as long as the page is open, reconnecting.
  async function follow() {
    for (let attempt = 0; ; attempt++) {
      try {
        const response = await fetch("v1/events", { headers: headers(), cache: "no-store" });
        if (response.status === 401 || response.status === 403) {
          await askForToken(String(response.status));
          attempt = -1;
          continue;
        }
        if (!response.ok) throw new Error("the event stream answered " + response.status);
        attempt = 0;
        problem("");
        snapshot(); // subscribed: a snapshot now misses nothing
        await readEvents(response.body.getReader(), (data) => {
          let event;
          try { event = JSON.parse(data); } catch (_) { stats.ignored++; return; }
          if (state.held) state.held.push(event); else apply(event);
        });
        throw new Error("the event stream ended");
      } catch (error) {
        setConnection("offline", "reconnecting");
        state.snapshot++; // drop a snapshot in flight: the next connection takes one
        state.held = null;
        if (attempt > 0) problem("Lost the event stream (" + error.message + "); reconnecting.");
        await sleep(Math.min(500 * 2 ** attempt, 10000));
      }
    }
  }

  // Server-sent events: blocks separated by a blank line; `data:` lines
  // joined; `:` comments (keep-alives) skipped.
  async function readEvents(reader, onData) {
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data:"))
          .map((l) => l.slice(5).replace(/^ /, "")).join("\n");
        if (data) onData(data);
      }
    }
  }

  // ---------------------------------------------------------------- filter

  function parseFilter(text) {
    return text.toLowerCase().split(/\s+/).filter(Boolean).map((term) => {
      const at = term.indexOf(":");
      const key = at > 0 ? term.slice(0, at) : "";
      if (["type", "tag", "health", "name"].includes(key)) return { key, value: term.slice(at + 1) };
      return { key: "", value: term };
    });
  }

  function matches(entry) {
    const s = entry.s;
    for (const { key, value } of state.terms) {
      if (key === "type" ? s.type !== value
        : key === "name" ? s.name !== value
        : key === "tag" ? !(s.tags || []).includes(value)
        : key === "health" ? s.health !== value
        : !entry.text.includes(value) && !entry.id.startsWith(value)) return false;
    }
    return true;
  }

  el.filter.addEventListener("input", () => {
    state.terms = parseFilter(el.filter.value);
    state.filterDirty = true;
    el.viewport.scrollTop = 0;
    schedule();
  });

  el.types.addEventListener("click", (event) => {
    const row = event.target.closest("tr[data-type]");
    if (!row) return;
    const term = "type:" + row.dataset.type;
    el.filter.value = el.filter.value.trim() === term ? "" : term;
    el.filter.dispatchEvent(new Event("input"));
  });

  // ---------------------------------------------------------------- render

  let scheduled = false;
  function schedule() {
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(render);
  }

  function render() {
    scheduled = false;
    const started = performance.now();
    if (state.orderDirty) {
      state.sorted = Array.from(state.byId.values()).sort((a, b) =>
        a.s.type < b.s.type ? -1 : a.s.type > b.s.type ? 1 : a.s.name < b.s.name ? -1 : a.s.name > b.s.name ? 1 : 0);
      state.orderDirty = false;
      state.filterDirty = true;
    }
    if (state.filterDirty) {
      state.shown = state.terms.length ? state.sorted.filter(matches) : state.sorted;
      state.filterDirty = false;
      renderTypes();
    }
    el.spacer.style.height = state.shown.length * ROW + "px";
    renderRows();
    el.shown.textContent = state.shown.length === state.sorted.length
      ? String(state.sorted.length) : state.shown.length + " of " + state.sorted.length;
    stats.renders++;
    stats.lastRenderMs = performance.now() - started;
    stats.slowestRenderMs = Math.max(stats.slowestRenderMs, stats.lastRenderMs);
  }

  function renderTypes() {
    const now = serverNow();
    const types = new Map();
    let all = 0, serving = 0, critical = 0;
    for (const { s } of state.sorted) {
      if (s.expires_at * 1000 <= now) continue; // lapsed: its expire event is on its way
      let t = types.get(s.type);
      if (!t) types.set(s.type, (t = { all: 0, serving: 0, warning: 0, critical: 0 }));
      t.all++; all++;
      if (s.health === "critical") { t.critical++; critical++; } else { t.serving++; serving++; }
      if (s.health === "warning") t.warning++;
    }
    const selected = state.terms.find((t) => t.key === "type");
    let html = "";
    for (const [name, t] of types) {
      const panic = state.panic.get(name);
      html += '<tr data-type="' + esc(name) + '"' + (selected && selected.value === name ? ' class="selected"' : "") + ">"
        + '<td class="name">' + esc(name) + (panic && panic.panic ? ' <span class="panic" title="panic mode: DNS answers with every unexpired instance">panic</span>' : "") + "</td>"
        + '<td class="instances">' + t.all + "</td>"
        + '<td class="serving' + (t.serving ? "" : " none") + '">' + t.serving + "</td>"
        + '<td class="warning' + (t.warning ? " some" : "") + '">' + t.warning + "</td>"
        + '<td class="critical' + (t.critical ? " some" : "") + '">' + t.critical + "</td></tr>";
    }
    el.types.innerHTML = html || '<tr><td colspan="5" class="empty">no services registered</td></tr>';
    el.summary.textContent = all + " instances · " + serving + " serving · " + critical + " critical · " + types.size + " types";
  }

  function left(s) {
    const ms = s.expires_at * 1000 - serverNow();
    if (ms <= 0) return { text: "expired", cls: "gone" };
    const secs = Math.ceil(ms / 1000);
    const text = secs < 60 ? secs + "s"
      : secs < 3600 ? Math.floor(secs / 60) + "m " + String(secs % 60).padStart(2, "0") + "s"
      : Math.floor(secs / 3600) + "h " + String(Math.floor(secs % 3600 / 60)).padStart(2, "0") + "m";
    return { text, cls: ms < Math.min(5000, s.ttl * 250) ? "soon" : "" };
  }

  function rowHtml(entry) {
    const s = entry.s;
    const said = [s.output && "heartbeat: " + s.output, s.check_output && "check (" + (s.check_health || "?") + "): " + s.check_output]
      .filter(Boolean).join("\n");
    const steer = "p" + s.priority + " w" + s.weight + (s.locality ? " @" + s.locality : "");
    const expiry = left(s);
    return '<span class="health" data-health="' + esc(s.health) + '" title="' + esc(said || s.health) + '">' + esc(s.health) + "</span>"
      + '<span class="name" title="' + esc(s.id) + '"><b>' + esc(s.name) + '</b><span class="type">.' + esc(s.type) + "</span></span>"
      + '<span class="addr">' + esc(entry.addr) + "</span>"
      + '<span class="steer" title="priority ' + s.priority + ", weight " + s.weight + (s.locality ? ", locality " + esc(s.locality) : "") + '">' + esc(steer) + "</span>"
      + '<span class="tags">' + (s.tags || []).map((t) => '<span class="tag">' + esc(t) + "</span>").join("") + "</span>"
      + '<span class="metadata">' + entry.meta.map((m) => '<span class="meta">' + esc(m) + "</span>").join("") + "</span>"
      + '<span class="expires ' + expiry.cls + '" title="ttl ' + s.ttl + ' s">' + esc(expiry.text) + "</span>";
  }

  function renderRows() {
    const shown = state.shown;
    if (!shown.length) {
      el.rows.innerHTML = '<div class="empty">' + (state.sorted.length ? "nothing matches the filter" : "no services registered") + "</div>";
      el.rows.style.transform = "";
      stats.rowsInDom = 0;
      return;
    }
    const height = el.viewport.clientHeight || 600;
    const first = Math.max(0, Math.floor(el.viewport.scrollTop / ROW) - OVERSCAN);
    const last = Math.min(shown.length, Math.ceil((el.viewport.scrollTop + height) / ROW) + OVERSCAN);
    el.rows.style.transform = "translateY(" + first * ROW + "px)";
    const now = Date.now();
    let html = "";
    for (let i = first; i < last; i++) {
      const entry = shown[i];
      const changed = entry.changedAt && now - entry.changedAt < 2000;
      html += '<div class="row' + (changed ? " changed" : "") + '" data-id="' + esc(entry.id) + '" data-type="' + esc(entry.s.type)
        + '" data-name="' + esc(entry.s.name) + '" data-health="' + esc(entry.s.health) + '">' + rowHtml(entry) + "</div>";
    }
    el.rows.innerHTML = html;
    stats.rowsInDom = last - first;
  }

  el.viewport.addEventListener("scroll", schedule, { passive: true });
  window.addEventListener("resize", schedule);

  // Countdowns, and instances whose time ran out, once a second.
  setInterval(() => {
    state.filterDirty = true; // serving counts change as instances lapse
    schedule();
  }, 1000);

  state.terms = parseFilter(el.filter.value);
  schedule();
  follow();
})();
