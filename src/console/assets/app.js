// Switchboard agent console: one ES module, no build step, no dependency.
//
// The console is a client of the public agent API only. The token is kept in sessionStorage
// (gone when the tab closes); every call sends it as `Authorization: Bearer`. The live list
// reads GET /api/v1/events with fetch() streaming rather than EventSource, because EventSource
// cannot send that header and a token in a URL would end up in logs and history. The stream
// reconnects with back-off and the list is re-read each time it is up and after a `lagged`
// event, so nothing missed stays stale. Text from the API is only ever set as textContent, never as markup.

const TOKEN_KEY = "switchboard.token";
const API = "/api/v1";
const PRIORITY = { urgent: 0, high: 1, normal: 2, low: 3 };
// The list is read in pages of LIST_PAGE rows: the first shows at once (a 10,000-row page of a
// busy team took the broker ~50 ms of CPU before anything showed), the rest follow, re-rendered
// at most every LIST_RENDER_MS. At most LIST_PAGES pages (200,000 rows) are read at once.
const LIST_PAGE = 200;
const LIST_PAGES = 1000;
const LIST_RENDER_MS = 500;
const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 15000;

const $ = (sel, root = document) => root.querySelector(sel);
const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  me: null,
  convs: new Map(), // id -> Conversation (without messages)
  unread: new Map(), // id -> inbound messages since it was last open
  selected: null, // id of the highlighted row
  open: null, // Conversation with messages, the one shown
  view: "inbox",
  typingSentAt: 0,
  replyTo: null, // id of the message the next reply quotes
  openSeq: 0, // bumped by every read of the open conversation; only the newest is shown
  listSeq: 0, // bumped by every read of the list; an older one still paging stops
  streamAbort: null,
  supTimer: null,
};
// Presence changes carry no event, so the supervisor view is re-read this often while shown.
const SUPERVISOR_REFRESH_MS = 10000;

// ---- DOM helpers -------------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function duration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, "0")}s`;
  const hrs = Math.floor(m / 60);
  if (hrs < 48) return `${hrs}h ${String(m % 60).padStart(2, "0")}m`;
  return `${Math.floor(hrs / 24)}d ${hrs % 24}h`;
}

function clock(iso) {
  const d = new Date(iso);
  return isNaN(d) ? "" : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

// ---- API ---------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message || `HTTP ${status}`);
    this.status = status;
    this.code = body?.error?.code;
  }
}

async function api(method, path, body) {
  const init = { method, headers: { Authorization: `Bearer ${state.token}` } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(API + path, init);
  const text = await resp.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (resp.status === 401) {
    signOut("Your token was refused; sign in again.");
    throw new ApiError(401, json);
  }
  if (!resp.ok) throw new ApiError(resp.status, json);
  return json;
}

function flash(message) {
  const el = $("#flash") || document.body.appendChild(h("div", { id: "flash", role: "status" }));
  el.textContent = message;
  el.className = "flash";
  clearTimeout(flash.timer);
  flash.timer = setTimeout(() => (el.textContent = ""), 5000);
}

// ---- sign-in -----------------------------------------------------------------------------

function showSignIn(error) {
  $("#app").hidden = true;
  const form = $("#signin");
  form.hidden = false;
  $("#signin-error").textContent = error || "";
  form.token.focus();
}

async function signIn(token) {
  state.token = token;
  try {
    state.me = await api("GET", "/agents/me");
  } catch (e) {
    state.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    showSignIn(e.status === 401 ? "Unknown token." : `Cannot sign in: ${e.message}`);
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  $("#signin").hidden = true;
  $("#app").hidden = false;
  renderMe();
  const teamSel = $("#f-team");
  teamSel.replaceChildren(h("option", { value: "" }, "all teams"));
  for (const t of state.me.teams || []) teamSel.append(h("option", { value: t }, t));
  $("#tab-supervisor").hidden = !isSupervisor();
  try {
    await refreshList();
  } catch (e) {
    // The stream re-reads the list once it is up; say why the list is empty meanwhile.
    flash(`Cannot read the conversations yet: ${e.message}`);
  }
  startStream();
}

function signOut(message) {
  state.listSeq++; // a list still paging belongs to the session that ends
  clearInterval(state.supTimer);
  state.supTimer = null;
  state.view = "inbox";
  state.streamAbort?.abort();
  state.streamAbort = null;
  state.token = null;
  state.me = null;
  state.convs.clear();
  state.unread.clear();
  state.open = null;
  sessionStorage.removeItem(TOKEN_KEY);
  showSignIn(message);
}

function isSupervisor() {
  return state.me && (state.me.role === "supervisor" || state.me.role === "admin");
}

function renderMe() {
  const me = state.me;
  $("#me-name").textContent = `${me.id} (${me.role})`;
  $("#presence").value = me.status;
  $("#me-load").textContent = `${me.open_conversations}/${me.max_concurrent}`;
  $("#me-load").title = "conversations you own / most at once";
}

async function refreshMe() {
  try {
    state.me = await api("GET", "/agents/me");
    renderMe();
  } catch {
    /* shown on the next success */
  }
}

// ---- the list ----------------------------------------------------------------------------

/// Reads the list page by page (in id order), showing the first page as soon as it arrives.
/// Rows the previous read showed stay until the read passes their id: then they are replaced, or
/// dropped when the broker no longer lists them (so a re-read never empties the screen first).
async function refreshList() {
  const seq = ++state.listSeq;
  // Ids sort as the broker orders them (ASCII): one pass through them as the pages advance.
  const before = [...state.convs.keys()].sort();
  const read = new Set();
  let passed = 0;
  let after = null;
  let shown = 0;
  for (let page = 0; page < LIST_PAGES; page++) {
    const q = new URLSearchParams({ limit: String(LIST_PAGE) });
    if (after) q.set("after", after);
    const body = await api("GET", `/conversations?${q}`);
    if (seq !== state.listSeq) return; // a newer read took over
    for (const c of body.conversations) {
      state.convs.set(c.id, c);
      read.add(c.id);
    }
    after = body.next_after;
    while (passed < before.length && (!after || before[passed] <= after)) {
      if (!read.has(before[passed])) state.convs.delete(before[passed]);
      passed++;
    }
    if (page === 0 || !after || Date.now() - shown >= LIST_RENDER_MS) {
      renderList();
      shown = Date.now();
    }
    if (!after) break;
  }
}

function waitingSince(c) {
  return c.waiting_since || (c.status === "queued" ? c.last_message_at : null);
}

function sortKey(a, b) {
  const ra = a.status === "resolved" ? 1 : 0;
  const rb = b.status === "resolved" ? 1 : 0;
  if (ra !== rb) return ra - rb;
  const pa = PRIORITY[a.priority] ?? 2;
  const pb = PRIORITY[b.priority] ?? 2;
  if (pa !== pb) return pa - pb;
  // The longest waiting first; what waits for nobody after what does.
  const wa = waitingSince(a) ? Date.parse(waitingSince(a)) : Infinity;
  const wb = waitingSince(b) ? Date.parse(waitingSince(b)) : Infinity;
  if (wa !== wb) return wa - wb;
  return Date.parse(b.last_message_at) - Date.parse(a.last_message_at);
}

function filtered() {
  const status = $("#f-status").value;
  const team = $("#f-team").value;
  const mine = $("#f-mine").checked;
  return [...state.convs.values()]
    .filter((c) => (status === "open" ? c.status !== "resolved" : !status || c.status === status))
    .filter((c) => !team || c.team === team)
    .filter((c) => !mine || c.assignee === state.me?.id)
    .sort(sortKey);
}

function customerName(c) {
  return c.customer_name || c.customer_username || c.customer;
}

function rowFor(c) {
  const unread = state.unread.get(c.id) || 0;
  const taken = c.assignee && c.assignee !== state.me?.id && state.me?.role === "agent";
  return h(
    "li",
    {
      class: `row${c.id === state.selected ? " selected" : ""}${taken ? " taken" : ""}`,
      tabindex: "-1",
      dataset: { conversationId: c.id, status: c.status, assignee: c.assignee || "" },
      onclick: () => openConversation(c.id),
    },
    h("span", { class: "name" }, customerName(c)),
    h(
      "span",
      { class: "meta" },
      h("span", { class: `badge status st-${c.status}` }, c.status),
      " ",
      c.priority && c.priority !== "normal"
        ? h("span", { class: `badge pr-${c.priority}` }, c.priority)
        : null,
      " ",
      h("span", { class: "assignee" }, c.assignee ? `@${c.assignee}` : "unassigned"),
      ` · ${c.team}`,
    ),
    h(
      "span",
      { class: "side" },
      h("span", { class: `unread${unread ? " some" : ""}`, title: "unread" }, String(unread)),
      h("span", {
        class: `sla${c.sla_breaches?.length ? " breached" : ""}`,
        title: c.sla_breaches?.length ? `SLA missed: ${c.sla_breaches.join(", ")}` : "waiting",
        dataset: { since: waitingSince(c) || "" },
      }),
    ),
  );
}

function renderList() {
  const rows = filtered();
  const list = $("#list");
  list.replaceChildren(...rows.map(rowFor));
  $("#list-empty").hidden = rows.length > 0;
  tickClocks();
}

/// Clocks are text in fixed-width boxes: updating them never moves anything.
function tickClocks() {
  const now = Date.now();
  for (const el of document.querySelectorAll(".sla")) {
    const since = el.dataset.since;
    el.textContent = since ? duration(now - Date.parse(since)) : "";
  }
  const w = $("#window");
  if (w && state.open) renderWindow(w, state.open);
}

function moveSelection(delta) {
  const rows = [...document.querySelectorAll("#list .row")];
  if (!rows.length) return;
  let i = rows.findIndex((r) => r.dataset.conversationId === state.selected);
  i = i < 0 ? 0 : Math.min(rows.length - 1, Math.max(0, i + delta));
  state.selected = rows[i].dataset.conversationId;
  rows.forEach((r, j) => r.classList.toggle("selected", j === i));
  rows[i].scrollIntoView({ block: "nearest" });
  rows[i].focus();
}

// ---- the live stream ---------------------------------------------------------------------

async function startStream() {
  let delay = RETRY_MIN_MS;
  const abort = new AbortController();
  state.streamAbort?.abort();
  state.streamAbort = abort;
  while (!abort.signal.aborted && state.token) {
    try {
      const resp = await fetch(`${API}/events`, {
        headers: { Authorization: `Bearer ${state.token}`, Accept: "text/event-stream" },
        signal: abort.signal,
        cache: "no-store",
      });
      if (resp.status === 401) return signOut("Your token was refused; sign in again.");
      if (!resp.ok || !resp.body) throw new Error(`HTTP ${resp.status}`);
      // The list is read once the stream is up, so nothing that changed before (while it was
      // down, or between the first read and now) is missed; then the page counts as live.
      await refreshList();
      setLive(true);
      delay = RETRY_MIN_MS;
      await readEvents(resp.body);
    } catch (e) {
      if (abort.signal.aborted) return;
    }
    setLive(false);
    await new Promise((r) => setTimeout(r, delay * (0.5 + Math.random() / 2)));
    delay = Math.min(RETRY_MAX_MS, delay * 2);
  }
}

function setLive(up) {
  const el = $("#live");
  el.classList.toggle("up", up);
  el.textContent = up ? "live" : "reconnecting";
  document.body.dataset.live = up ? "up" : "down";
}

async function readEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value.replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const frame = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      let type = "message";
      const data = [];
      for (const line of frame.split("\n")) {
        if (line.startsWith("event:")) type = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (!data.length) continue; // keep-alive comment
      try {
        onEvent(type, JSON.parse(data.join("\n")));
      } catch (e) {
        console.warn("bad event", e);
      }
    }
  }
}

function soon(fn, key, ms = 150) {
  clearTimeout(soon[key]);
  soon[key] = setTimeout(fn, ms);
}

function onEvent(type, ev) {
  if (type === "lagged") {
    soon(() => refreshList().catch(() => {}), "list", 0);
    if (state.open) soon(() => reloadOpen(), "open");
    return;
  }
  const c = ev.conversation;
  if (!c) return;
  state.convs.set(c.id, c);
  if (type === "message.created" && ev.message?.direction === "inbound" && state.open?.id !== c.id) {
    state.unread.set(c.id, (state.unread.get(c.id) || 0) + 1);
  }
  // One row changes in place: the list is re-rendered from memory (cheap) on the next frame.
  soon(renderList, "render", 0);
  if (state.open?.id === c.id) soon(() => reloadOpen(), "open", 50);
  if (ev.conversation && (c.assignee === state.me?.id || type.startsWith("conversation."))) {
    soon(refreshMe, "me", 300);
  }
  if (state.view === "supervisor") soon(renderSupervisor, "sup", 1000);
}

// ---- one conversation --------------------------------------------------------------------

async function openConversation(id) {
  state.selected = id;
  state.unread.delete(id);
  document.body.classList.add("has-detail");
  showView("inbox");
  const seq = ++state.openSeq;
  try {
    const c = await api("GET", `/conversations/${encodeURIComponent(id)}`);
    if (seq !== state.openSeq) return; // another conversation was opened meanwhile
    state.open = c;
  } catch (e) {
    if (seq !== state.openSeq) return;
    state.open = null;
    $("#detail").replaceChildren(h("p", { class: "error" }, e.message));
    return;
  }
  state.typingSentAt = 0;
  state.replyTo = null;
  renderList();
  renderDetail({ keepDraft: false });
}

/// Reads the open conversation again. Reads overlap (events, actions), and their answers may
/// come back out of order: only the newest shows, so an answer read before a claim never puts
/// the pre-claim state (and its disabled buttons) back over the claim's.
async function reloadOpen() {
  if (!state.open) return;
  const id = state.open.id;
  const seq = ++state.openSeq;
  try {
    const c = await api("GET", `/conversations/${encodeURIComponent(id)}`);
    if (seq !== state.openSeq || state.open?.id !== id) return;
    state.open = c;
    renderDetail({ keepDraft: true });
  } catch (e) {
    if (seq !== state.openSeq || state.open?.id !== id) return;
    // It left our sight: its row goes, since no event will update it any more. Resolved (an
    // agent sees no resolved conversation it does not own) it stays on screen as it ended;
    // otherwise (taken by someone else, moved to another team) it closes, saying why.
    if (e.status === 404 && state.open) {
      state.convs.delete(id);
      renderList();
      if (state.open.status !== "resolved") {
        closeConversation();
        flash("This conversation is no longer visible to you.");
      }
    }
  }
}

function closeConversation() {
  state.open = null;
  state.openSeq++;
  document.body.classList.remove("has-detail");
  $("#detail").replaceChildren(h("p", { class: "empty" }, "Pick a conversation (j/k to move, Enter to open)."));
  document.querySelector(`#list .row.selected`)?.focus();
}

function windowOpen(c) {
  return c.window_expires_at && Date.parse(c.window_expires_at) > Date.now();
}

function renderWindow(el, c) {
  if (!c.window_expires_at) {
    el.textContent = "no customer message yet: templates only";
    el.classList.add("closed");
    return;
  }
  const left = Date.parse(c.window_expires_at) - Date.now();
  el.classList.toggle("closed", left <= 0);
  el.textContent = left > 0 ? `window closes in ${duration(left)}` : "24-hour window closed: templates only";
}

function renderDetail({ keepDraft }) {
  const c = state.open;
  const pane = $("#detail");
  const msgList = pane.querySelector(".messages");
  const atBottom = !msgList || msgList.scrollHeight - msgList.scrollTop - msgList.clientHeight < 40;

  const mine = c.assignee === state.me.id;
  const canClaim = !mine && c.status !== "assigned";
  const supervisorish = isSupervisor();
  const act = (label, fn, enabled, key) =>
    h("button", { type: "button", disabled: !enabled, title: key ? `${label} (${key})` : label, onclick: fn, dataset: { action: label.toLowerCase() } }, label);

  const head = h(
    "div",
    { class: "conv-head" },
    h(
      "div",
      { class: "conv-title" },
      h("button", { type: "button", class: "back", onclick: closeConversation }, "Back"),
      h("h2", {}, customerName(c)),
      h("span", { class: `badge status st-${c.status}` }, c.status),
      h("span", { class: "assignee" }, c.assignee ? `@${c.assignee}` : "unassigned"),
      h("span", { class: "team" }, `team ${c.team}`),
      h("span", { class: `badge pr-${c.priority}` }, c.priority),
      ...(c.labels || []).map((l) => h("span", { class: "badge" }, l)),
      h("span", { id: "window", class: "window" }),
    ),
    h(
      "div",
      { class: "actions" },
      act("Claim", () => doAction("claim"), canClaim, "c"),
      act("Release", () => doAction("release"), mine, "u"),
      act("Resolve", () => doAction("resolve"), mine || (supervisorish && c.status !== "resolved"), "e"),
      // Back to the bot (teams with automation; the broker answers 409 automation_off otherwise).
      act("Hand back", () => doAction("handback"), (mine || supervisorish) && (c.status === "assigned" || c.status === "queued"), "b"),
      h("input", { name: "transfer_to", placeholder: "team or @id", "aria-label": "transfer to", list: "team-list", dataset: { conv: c.id } }),
      h("datalist", { id: "team-list" }, (state.me.teams || []).map((t) => h("option", { value: t }))),
      act("Transfer", doTransfer, mine || supervisorish, "t"),
    ),
  );
  renderWindow(head.querySelector("#window"), c);

  const byId = new Map((c.messages || []).map((m) => [m.id, m]));
  const messages = h("ul", { class: "messages", "aria-live": "polite", dataset: { conversationId: c.id } }, (c.messages || []).map((m) => messageEl(m, byId, mine && windowOpen(c))));
  // The composer is kept while its conversation and mode stay the same, so an event that
  // arrives while the agent types never replaces the box under the cursor.
  const key = `${c.id}|${mine}|${windowOpen(c)}`;
  const old = pane.querySelector(".composer");
  const composer = keepDraft && old && old.dataset.key === key ? old : composerEl(c, mine);
  composer.dataset.key = key;
  if (keepDraft && old && composer !== old) {
    const draft = old.querySelector('textarea[name="text"]')?.value || "";
    composer.querySelector('textarea[name="text"]').value = draft;
  }
  // The transfer box likewise: what is typed there (and the focus) survives a re-render.
  const oldTo = pane.querySelector('input[name="transfer_to"]');
  if (keepDraft && oldTo && oldTo.dataset.conv === c.id) head.querySelector('input[name="transfer_to"]').replaceWith(oldTo);
  const focused = document.activeElement;
  pane.replaceChildren(head, messages, composer);
  renderReplying();
  if (focused && (composer.contains(focused) || focused === oldTo)) focused.focus();
  if (atBottom) messages.scrollTop = messages.scrollHeight;
}

const MEDIA_KINDS = new Set(["image", "video", "audio", "document", "sticker"]);

function messageEl(m, byId, canQuote) {
  const kind = m.kind || m.type;
  const parts = [];
  // Meta quotes by wamid, so only a message WhatsApp knows can be quoted (never a note).
  const quotable = canQuote && m.direction !== "note" && m.wamid;
  parts.push(
    h(
      "div",
      { class: "by" },
      h("span", {}, m.direction === "inbound" ? "customer" : m.author),
      kind && kind !== "text" ? h("span", { class: "badge kind" }, kind) : null,
      h("time", { datetime: m.at }, clock(m.at)),
      quotable
        ? h("button", { type: "button", class: "quote-btn", title: "Quote in the reply (q: the last customer message)", onclick: () => setReplyTo(m.id), dataset: { action: "quote" } }, "Quote")
        : null,
    ),
  );
  if (m.reply_to) {
    const q = byId.get(m.reply_to);
    parts.push(h("div", { class: "quote" }, q ? q.text || `[${q.type}]` : "a message not shown here"));
  }
  if (m.media) parts.push(mediaEl(m.media));
  else if (MEDIA_KINDS.has(m.type)) parts.push(h("div", { class: "media pending" }, `[${m.type}]`));
  const text = m.media?.caption && m.text === m.media.caption ? null : m.text;
  if (text) parts.push(h("div", { class: "text" }, text));
  else if (!m.media && !MEDIA_KINDS.has(m.type) && m.type !== "text") {
    parts.push(h("div", { class: "text muted" }, `[${m.type} message]`));
  }
  if (m.reactions?.length) {
    parts.push(h("div", { class: "reactions" }, m.reactions.map((r) => h("span", { title: r.by }, `${r.emoji} `))));
  }
  if (m.direction === "outbound" && m.status) {
    const reason = m.error ? `: ${m.error.reason || m.error.title} (${m.error.code})` : "";
    parts.push(h("div", { class: `status ${m.status}` }, `${m.status}${reason}`));
  }
  return h(
    "li",
    { class: `msg ${m.direction}`, dataset: { messageId: m.id, kind: m.type, status: m.status || "" } },
    parts,
  );
}

/// Media bytes need the bearer token, so they are fetched as a blob and shown from memory.
function mediaEl(media) {
  const box = h("div", { class: "media", dataset: { mediaId: media.id } });
  if (media.caption) box.append(h("div", { class: "caption" }, media.caption));
  if (!media.downloaded) {
    box.prepend(h("span", { class: "muted" }, `[${media.mime_type || "media"}: not downloaded yet]`));
    return box;
  }
  const url = `${API}/media/${encodeURIComponent(media.id)}`;
  const load = () =>
    fetch(url, { headers: { Authorization: `Bearer ${state.token}` } }).then((r) => {
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      return r.blob();
    });
  if ((media.mime_type || "").startsWith("image/")) {
    const img = h("img", { alt: media.caption || "image" });
    box.prepend(img);
    load()
      .then((b) => (img.src = URL.createObjectURL(b)))
      .catch((e) => img.replaceWith(h("span", { class: "error" }, `image unavailable (${e.message})`)));
  } else {
    const name = media.filename || `${media.id}`;
    box.prepend(
      h(
        "button",
        {
          type: "button",
          onclick: () =>
            load()
              .then((b) => {
                const a = h("a", { href: URL.createObjectURL(b), download: name });
                a.click();
              })
              .catch((e) => flash(`Download failed: ${e.message}`)),
        },
        `Download ${name} (${media.mime_type || "file"})`,
      ),
    );
  }
  return box;
}

function composerEl(c, mine) {
  const open = windowOpen(c);
  const ta = h("textarea", {
    name: "text",
    placeholder: mine ? (open ? "Reply (Ctrl+Enter sends) or write a note" : "Write a note") : "Claim it to reply; notes are always possible",
    "aria-label": "message text",
    oninput: () => typing(c),
    onkeydown: (e) => {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
        e.preventDefault();
        send();
      } else if (e.key === "Escape") ta.blur();
    },
  });
  const box = h(
    "div",
    { class: "composer" },
    h("div", { class: "replying", hidden: true }),
    ta,
    h(
      "div",
      { class: "row-buttons" },
      h("button", { type: "button", class: "primary", disabled: !(mine && open), onclick: send, dataset: { action: "send" } }, "Send"),
      h("button", { type: "button", onclick: addNote, dataset: { action: "note" } }, "Note"),
      h("span", { class: "hint" }, mine && !open ? "window closed: send an approved template" : ""),
    ),
  );
  if (mine && !open) box.append(templatePicker(c));
  return box;
}

/// Outside the window only approved templates may be sent; their `{{n}}` placeholders become
/// inputs. A broker without the templates API shows that none are available.
function templatePicker(c) {
  const box = h("div", { class: "templates" }, h("span", { class: "muted" }, "loading templates…"));
  const show = (list) => {
    const approved = list.filter((t) => t.status === "APPROVED");
    if (!approved.length) return box.replaceChildren(h("span", { class: "muted" }, "No approved templates."));
    const sel = h("select", { name: "template", "aria-label": "template" }, approved.map((t, i) => h("option", { value: i }, `${t.name} (${t.language})`)));
    const params = h("div", { class: "params" });
    const fill = () => {
      const t = approved[sel.value];
      const body = (t.components || []).find((x) => (x.type || "").toUpperCase() === "BODY")?.text || "";
      const n = new Set(body.match(/\{\{\d+\}\}/g) || []).size;
      params.replaceChildren(h("div", { class: "muted" }, body), ...Array.from({ length: n }, (_, i) => h("input", { name: `param${i + 1}`, placeholder: `{{${i + 1}}}` })));
    };
    sel.addEventListener("change", fill);
    fill();
    const sendT = async () => {
      const t = approved[sel.value];
      const parameters = [...params.querySelectorAll("input")].map((i) => i.value);
      try {
        await api("POST", `/conversations/${encodeURIComponent(c.id)}/messages`, {
          template: { name: t.name, language: t.language, parameters },
          idempotency_key: crypto.randomUUID(),
        });
        await reloadOpen();
      } catch (e) {
        flash(`Template not sent: ${e.message}`);
      }
    };
    box.replaceChildren(sel, params, h("button", { type: "button", onclick: sendT }, "Send template"));
  };
  // Read each time the picker opens: approvals and pauses change at Meta's pace, not ours.
  api("GET", "/templates")
    .then((b) => show(b?.templates || []))
    .catch(() => box.replaceChildren(h("span", { class: "muted" }, "Templates are not available on this broker.")));
  return box;
}

/// The message the next reply quotes (`null`: none), shown above the reply box with a way out.
function setReplyTo(id) {
  const c = state.open;
  const m = id && c ? (c.messages || []).find((x) => x.id === id) : null;
  state.replyTo = m ? m.id : null;
  renderReplying();
  if (m) $('textarea[name="text"]')?.focus();
}

function renderReplying() {
  const bar = $("#detail .composer .replying");
  if (!bar) return;
  const m = state.replyTo && (state.open?.messages || []).find((x) => x.id === state.replyTo);
  bar.hidden = !m;
  bar.replaceChildren(
    ...(m
      ? [
          h("span", { class: "quote" }, m.text || `[${m.type}]`),
          h("button", { type: "button", title: "Do not quote", onclick: () => setReplyTo(null), dataset: { action: "unquote" } }, "\u00d7"),
        ]
      : []),
  );
}

/// Typing tells the customer we read and are answering (at most every 20 s per conversation).
function typing(c) {
  if (c.assignee !== state.me.id || Date.now() - state.typingSentAt < 20000) return;
  state.typingSentAt = Date.now();
  api("POST", `/conversations/${encodeURIComponent(c.id)}/read`).catch(() => {});
}

async function doAction(action) {
  const c = state.open;
  if (!c) return;
  try {
    const after = await api("POST", `/conversations/${encodeURIComponent(c.id)}/${action}`);
    // Shown at once from the answer: after a release or resolve an agent may no longer see it.
    if (after?.id === c.id && state.open?.id === c.id) {
      state.openSeq++; // reads started before this answer are older than it
      state.open = { ...after, messages: c.messages };
      state.convs.set(c.id, after);
      renderDetail({ keepDraft: true });
      renderList();
    }
  } catch (e) {
    const who = e.code === "already_assigned" ? " (someone else has it)" : "";
    flash(`${action} failed: ${e.message}${who}`);
  }
  await reloadOpen();
  refreshMe();
}

async function doTransfer() {
  const c = state.open;
  const input = $('input[name="transfer_to"]');
  const to = input?.value.trim();
  if (!c || !to) {
    input?.focus();
    return;
  }
  const body = to.startsWith("@") ? { agent: to.slice(1) } : { team: to };
  try {
    await api("POST", `/conversations/${encodeURIComponent(c.id)}/transfer`, body);
    input.value = "";
  } catch (e) {
    flash(`Transfer failed: ${e.message}`);
  }
  await reloadOpen();
}

async function send() {
  const c = state.open;
  const ta = $('textarea[name="text"]');
  const text = ta?.value.trim();
  if (!c || !text) return;
  try {
    const body = { text, idempotency_key: crypto.randomUUID() };
    if (state.replyTo) body.reply_to = state.replyTo;
    await api("POST", `/conversations/${encodeURIComponent(c.id)}/messages`, body);
    ta.value = "";
    setReplyTo(null);
  } catch (e) {
    flash(`Not sent: ${e.message}`);
  }
  await reloadOpen();
}

async function addNote() {
  const c = state.open;
  const ta = $('textarea[name="text"]');
  const text = ta?.value.trim();
  if (!c || !text) return;
  try {
    await api("POST", `/conversations/${encodeURIComponent(c.id)}/notes`, { text });
    ta.value = "";
  } catch (e) {
    flash(`Note not added: ${e.message}`);
  }
  await reloadOpen();
}

// ---- supervisor view ---------------------------------------------------------------------

/// Reads queues, agents and reports together and shows them in one step (no card appears
/// "loading" and then grows); a read that an earlier one outlives is dropped, not shown.
async function renderSupervisor() {
  if (state.view !== "supervisor" || !state.me) return;
  const seq = (renderSupervisor.seq = (renderSupervisor.seq || 0) + 1);
  const view = $("#supervisor-view");
  const teams = state.me.teams || [];
  const people = Promise.all(teams.map(agentsCard));
  const reports = reportsCard();
  const cards = await Promise.all(
    teams.map(async (team) => {
      try {
        const q = await api("GET", `/teams/${encodeURIComponent(team)}/queue?limit=50`);
        return h(
          "section",
          { class: "card queue", dataset: { team } },
          h("h3", {}, `Team ${team}`),
          h(
            "div",
            { class: "figures" },
            h("div", { class: "figure" }, h("b", { class: "depth" }, String(q.depth)), h("span", {}, "waiting")),
            // A clock like the list's: it keeps counting between reads of the queue.
            h("div", { class: "figure" }, h("b", { class: "oldest sla", dataset: { since: q.depth ? new Date(Date.now() - (q.oldest_wait_seconds || 0) * 1000).toISOString() : "" } }), h("span", {}, "oldest wait")),
            h("div", { class: "figure" }, h("b", {}, String(teamAgents(team))), h("span", {}, "assigned now")),
          ),
          h(
            "table",
            {},
            h("tr", {}, h("th", {}, "customer"), h("th", {}, "priority"), h("th", {}, "waiting")),
            (q.conversations || []).map((c) =>
              h(
                "tr",
                { class: "clickable", dataset: { conversationId: c.id }, onclick: () => openConversation(c.id) },
                h("td", {}, customerName(c)),
                h("td", {}, c.priority),
                h("td", { class: "sla", dataset: { since: waitingSince(c) || c.created_at } }),
              ),
            ),
          ),
        );
      } catch (e) {
        return h("section", { class: "card" }, h("h3", {}, `Team ${team}`), h("p", { class: "error" }, e.message));
      }
    }),
  );
  const all = [...cards, ...(await people), await reports];
  if (seq !== renderSupervisor.seq || state.view !== "supervisor") return;
  view.replaceChildren(...all);
  tickClocks();
}

/// The teams' reports over the last 24 hours (`GET /reports/teams`).
async function reportsCard() {
  const to = new Date().toISOString();
  const from = new Date(Date.now() - 86400000).toISOString();
  const title = h("h3", {}, "Reports (last 24 h)");
  const p50 = (x) => (x?.p50 != null ? duration(x.p50 * 1000) : "–");
  try {
    const r = await api("GET", `/reports/teams?from=${encodeURIComponent(from)}&to=${encodeURIComponent(to)}`);
    const cols = ["team", "conversations", "inbound", "outbound", "first response p50", "resolution p50", "SLA hits / misses", "backlog"];
    return h(
      "section",
      { class: "card reports" },
      title,
      h(
        "table",
        {},
        h("tr", {}, cols.map((t) => h("th", {}, t))),
        (r.teams || []).map((t) =>
          h(
            "tr",
            { dataset: { team: t.team } },
            h("td", {}, t.team),
            h("td", { class: "conversations" }, String(t.conversations)),
            h("td", { class: "inbound" }, String(t.inbound)),
            h("td", { class: "outbound" }, String(t.outbound)),
            h("td", {}, p50(t.first_response_seconds)),
            h("td", {}, p50(t.resolution_seconds)),
            h("td", {}, `${t.sla_hits ?? "–"} / ${t.sla_misses ?? "–"}`),
            h("td", {}, String(t.backlog ?? "–")),
          ),
        ),
      ),
    );
  } catch (e) {
    return h("section", { class: "card reports" }, title, h("p", { class: "error" }, `Reports unavailable: ${e.message}`));
  }
}

const PRESENCE_ORDER = { online: 0, away: 1, offline: 2 };

/// A team's agents with their presence and load (`GET /teams/{id}/agents`), online first.
async function agentsCard(team) {
  try {
    const body = await api("GET", `/teams/${encodeURIComponent(team)}/agents`);
    const agents = (body.agents || []).slice().sort((a, b) => (PRESENCE_ORDER[a.status] ?? 3) - (PRESENCE_ORDER[b.status] ?? 3));
    return h(
      "section",
      { class: "card agents", dataset: { team } },
      h("h3", {}, `Agents of ${team}`),
      h(
        "table",
        {},
        h("tr", {}, h("th", {}, "agent"), h("th", {}, "presence"), h("th", {}, "load")),
        agents.map((a) =>
          h(
            "tr",
            { dataset: { agentId: a.id, presence: a.status || "" } },
            h("td", {}, a.name && a.name !== a.id ? `${a.name} (@${a.id})` : `@${a.id}`),
            h("td", {}, h("span", { class: `badge pres pres-${a.status}` }, a.status || "?")),
            h("td", { class: "load-cell" }, `${a.open_conversations ?? 0}/${a.max_concurrent}`),
          ),
        ),
      ),
    );
  } catch (e) {
    return h("section", { class: "card agents" }, h("h3", {}, `Agents of ${team}`), h("p", { class: "error" }, e.message));
  }
}

function teamAgents(team) {
  let n = 0;
  for (const c of state.convs.values()) if (c.team === team && c.status === "assigned") n++;
  return n;
}

function showView(view) {
  state.view = view;
  clearInterval(state.supTimer);
  state.supTimer = view === "supervisor" ? setInterval(renderSupervisor, SUPERVISOR_REFRESH_MS) : null;
  $("#inbox-view").hidden = view !== "inbox";
  $("#supervisor-view").hidden = view !== "supervisor";
  $("#tab-inbox").setAttribute("aria-pressed", String(view === "inbox"));
  $("#tab-supervisor").setAttribute("aria-pressed", String(view === "supervisor"));
  if (view === "supervisor") renderSupervisor();
}

// ---- keyboard ----------------------------------------------------------------------------

let pendingG = false;
function onKey(e) {
  if (!state.me || e.ctrlKey || e.metaKey || e.altKey) return;
  const t = e.target;
  // Typing into a field (a select jumps by letter) is not a shortcut; a checkbox has no letters.
  const typing = (t instanceof HTMLInputElement && t.type !== "checkbox") || t instanceof HTMLTextAreaElement;
  if (typing || t instanceof HTMLSelectElement) return;
  // A focused button keeps Enter and Space for itself.
  if (t instanceof HTMLButtonElement && (e.key === "Enter" || e.key === " ")) return;
  if ($("#help").open) return;
  const click = (name, el) => (el || document.querySelector(`#detail button[data-action="${name}"]:not(:disabled)`))?.click();
  if (pendingG) {
    pendingG = false;
    if (e.key === "i") showView("inbox");
    if (e.key === "s" && isSupervisor()) showView("supervisor");
    return;
  }
  const keys = {
    j: () => moveSelection(1),
    k: () => moveSelection(-1),
    Enter: () => state.selected && openConversation(state.selected),
    o: () => state.selected && openConversation(state.selected),
    c: () => click("claim"),
    u: () => click("release"),
    e: () => click("resolve"),
    b: () => click("hand back"),
    t: () => $('input[name="transfer_to"]')?.focus(),
    r: () => $('textarea[name="text"]')?.focus(),
    q: () => click("quote", [...document.querySelectorAll('#detail .msg.inbound button[data-action="quote"]')].pop()),
    n: () => $('textarea[name="text"]')?.focus(),
    "/": () => $("#f-status").focus(),
    "?": () => $("#help").showModal(),
    g: () => (pendingG = true),
    Escape: () => closeConversation(),
  };
  const fn = keys[e.key];
  if (fn) {
    e.preventDefault();
    fn();
  }
}

// ---- start -------------------------------------------------------------------------------

function init() {
  $("#signin").addEventListener("submit", (e) => {
    e.preventDefault();
    const token = e.target.token.value.trim();
    if (token) signIn(token);
  });
  $("#signout").addEventListener("click", () => signOut());
  $("#tab-inbox").addEventListener("click", () => showView("inbox"));
  $("#tab-supervisor").addEventListener("click", () => showView("supervisor"));
  $("#help-button").addEventListener("click", () => $("#help").showModal());
  for (const id of ["#f-status", "#f-team", "#f-mine"]) $(id).addEventListener("change", renderList);
  $("#presence").addEventListener("change", async (e) => {
    try {
      await api("PUT", "/agents/me/presence", { status: e.target.value });
    } catch (err) {
      flash(`Presence not changed: ${err.message}`);
    }
    refreshMe();
    if (state.view === "supervisor") renderSupervisor();
  });
  document.addEventListener("keydown", onKey);
  setInterval(tickClocks, 1000);
  if (state.token) signIn(state.token);
  else showSignIn();
}

init();
