// Switchboard's web chat client: logs in over HTTP (a token from POST /v1/auth/token), then talks MQTT over
// WebSocket with MQTT.js (vendored at /vendor/mqtt.min.js), the token as the MQTT password. History, the
// conversation list and catch-up after a reconnect come from the REST API (/v1/conversations, history,
// /v1/sync); messages, acks, receipts, presence and typing arrive live over MQTT (docs/protocol.md).
import { call, el, login, session } from "/shared/http.js";
import { Thread } from "/app/thread.js";

const $ = (id) => document.getElementById(id);
const state = {
  me: null, groups: [], cursor: null, client: null, connectedOnce: false,
  conversations: new Map(), seen: new Set(), unstored: new Map(), presence: new Map(), open: null, thread: null, syncTimer: null, syncRetries: 0,
};

const dmId = (a, b) => `dm:${[a, b].sort().join(":")}`;
const peerOf = (conversation) => conversation.split(":").slice(1).find((n) => n !== state.me) ?? state.me;
const titleOf = (conversation) => (conversation.startsWith("group:") ? `# ${conversation.slice(6)}` : peerOf(conversation));
const newId = () => `web-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;

function setStatus(text) { $("status").textContent = text; }

export function publish(topic, payload, qos = 1) {
  if (state.client) state.client.publish(topic, JSON.stringify(payload), { qos });
}

function conversationOfTopic(kind, target, sender) {
  return kind === "dm" ? dmId(target, sender) : `group:${target}`;
}

// ---- the conversation list ----
function touch(conversation, message, { unread = 0 } = {}) {
  const entry = state.conversations.get(conversation) ?? { id: conversation, unread: 0, last_message: null, updated_at: "" };
  if (message) { entry.last_message = message; entry.updated_at = message.stored_at ?? new Date().toISOString(); }
  entry.unread += unread;
  state.conversations.set(conversation, entry);
  renderList();
}

function renderList() {
  const list = $("conversations");
  const entries = [...state.conversations.values()].sort((a, b) => (b.updated_at || "").localeCompare(a.updated_at || ""));
  list.replaceChildren(...entries.map((entry) => {
    const dm = entry.id.startsWith("dm:");
    const online = dm && state.presence.get(peerOf(entry.id)) === "online";
    const last = entry.last_message;
    const lastText = last ? `${last.sender === state.me ? "you" : last.sender}: ${last.body || (last.attachments?.length ? "[image]" : "")}` : "no messages yet";
    const label = `${titleOf(entry.id)}${dm ? (online ? ", online" : ", offline") : ""}${entry.unread ? `, ${entry.unread} unread` : ""}; ${lastText}`;
    return el("li", {},
      el("button", { type: "button", "data-conversation": entry.id, "aria-label": label, "aria-current": entry.id === state.open ? "true" : "false", onclick: () => openConversation(entry.id) },
        dm ? el("span", { class: `dot${online ? " online" : ""}`, "data-presence": peerOf(entry.id), "aria-hidden": "true" }) : null,
        el("span", { class: "name", text: titleOf(entry.id) }), " ",
        entry.unread ? el("span", { class: "badge unread", text: String(entry.unread) }) : null,
        el("span", { class: "last", text: lastText })));
  }));
}

async function loadConversations() {
  const answer = await call("GET", "/v1/conversations?limit=200");
  for (const conversation of answer.conversations) state.conversations.set(conversation.id, { ...conversation });
  for (const group of state.groups) if (!state.conversations.has(`group:${group}`)) state.conversations.set(`group:${group}`, { id: `group:${group}`, unread: 0, last_message: null, updated_at: "" });
  $("known-groups").replaceChildren(...state.groups.map((g) => el("option", { value: `group:${g}` })));
  renderList();
}

// ---- one open conversation ----
async function openConversation(conversation) {
  if (state.thread) state.thread.close();
  state.open = conversation;
  const entry = state.conversations.get(conversation);
  if (entry) entry.unread = 0; else touch(conversation, null);
  $("thread-title").textContent = titleOf(conversation);
  $("composer").classList.remove("hidden");
  const thread = new Thread(conversation, { me: state.me, client: state.client, publish, onChange: (message) => touch(conversation, message) });
  state.thread = thread;
  renderPeerPresence();
  renderList();
  await thread.load();
  // Messages seen live may be stored by now (older than the page, or in it): a sync tells, so that only
  // the ones still not stored are added below the history, with no seq to place them by.
  clearTimeout(state.syncTimer);
  try { await syncNow(); } catch { scheduleSync(1000); }
  if (state.thread !== thread) return; // another conversation was opened meanwhile
  for (const message of state.unstored.values()) if (message.conversation === conversation) thread.add(message);
  $("body").focus();
}

function renderPeerPresence() {
  const open = state.open;
  $("peer-presence").textContent = open && open.startsWith("dm:") ? `${peerOf(open)} is ${state.presence.get(peerOf(open)) ?? "offline"}` : "";
}

/** True the first time a message (sender, id) is seen, live or through sync: it is counted unread once. */
function firstSight(message) {
  const key = `${message.sender}\n${message.id}`;
  if (state.seen.has(key)) return false;
  state.seen.add(key);
  return true;
}

// ---- MQTT ----
function onMessage(topic, payloadBytes) {
  const text = new TextDecoder().decode(payloadBytes);
  const [kind, target, sender] = topic.split("/");
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text.startsWith("{") ? null : { id: null, body: text }; }
  if (kind === "presence") {
    state.presence.set(target, data?.status ?? "offline");
    renderList(); renderPeerPresence();
  } else if (kind === "dm" || kind === "group") {
    if (!data) return;
    const conversation = conversationOfTopic(kind, target, sender);
    const message = { conversation, sender, id: data.id, body: data.body ?? "", attachments: (data.attachments ?? []).map((a) => a.media_id), seq: null };
    const isOpen = state.open === conversation && state.thread;
    const fresh = isOpen ? state.thread.add(message) && firstSight(message) : firstSight(message);
    if (fresh && sender !== state.me) state.unstored.set(`${sender}\n${message.id}`, message);
    if (fresh) touch(conversation, message, { unread: sender !== state.me && !isOpen ? 1 : 0 });
    if (sender !== state.me) scheduleSync(300);
  } else if (kind === "ack") {
    if (state.thread && data?.conversation === state.open) state.thread.acked(data.id, data.seq);
  } else if (kind === "receipt") {
    if (state.thread && data?.conversation === state.open) state.thread.receipt(sender, data.up_to_seq, data.status);
  } else if (kind === "typing") {
    if (state.thread && target === state.open && sender !== state.me) state.thread.typing(sender, data?.typing !== false);
  }
}

async function connect() {
  const config = await (await fetch("/app/config.json")).json();
  const secure = location.protocol === "https:" && config.wss_port;
  const url = `${secure ? "wss" : "ws"}://${location.hostname}:${secure ? config.wss_port : config.ws_port}/mqtt`;
  const clientId = newId();
  document.body.dataset.clientId = clientId; // shown for support and tests (a second login with it takes over)
  const client = mqtt.connect(url, {
    username: state.me, password: session.token, clientId, clean: true,
    protocolVersion: 4, reconnectPeriod: 1000, connectTimeout: 10000, keepalive: 30,
  });
  state.client = client;
  client.on("connect", () => {
    setStatus("connected");
    const filters = [`dm/${state.me}/+`, `dm/+/${state.me}`, `ack/${state.me}`, `receipt/${state.me}/+`, "presence/+",
      ...state.groups.map((g) => `group/${g}/+`)];
    client.subscribe(filters, { qos: 1 });
    if (state.thread) state.thread.resubscribe(client);
    if (state.connectedOnce) scheduleSync(0); // catch up on what arrived while we were away
    state.connectedOnce = true;
  });
  client.on("reconnect", () => setStatus("reconnecting…"));
  client.on("offline", () => setStatus("offline, retrying"));
  client.on("error", (error) => setStatus(`connection problem: ${error.message}`));
  client.on("message", onMessage);
}

// ---- catch-up through /v1/sync ----
function scheduleSync(delay) {
  clearTimeout(state.syncTimer);
  state.syncTimer = setTimeout(syncNow, delay);
}

async function syncNow() {
  let more = true;
  while (more) {
    const page = await call("GET", `/v1/sync?since=${encodeURIComponent(state.cursor)}&limit=200`);
    const newest = new Map();
    for (const message of page.messages) {
      state.unstored.delete(`${message.sender}\n${message.id}`);
      const isOpen = state.thread && state.open === message.conversation;
      if (isOpen) state.thread.add(message);
      const fresh = firstSight(message);
      touch(message.conversation, message, { unread: fresh && !isOpen && message.sender !== state.me ? 1 : 0 });
      if (message.sender !== state.me) {
        const authors = newest.get(message.conversation) ?? new Map();
        authors.set(message.sender, Math.max(authors.get(message.sender) ?? 0, message.seq));
        newest.set(message.conversation, authors);
      }
    }
    for (const receipt of page.receipts) {
      if (receipt.user !== state.me && state.thread && receipt.conversation === state.open) state.thread.watermark(receipt.user, receipt.delivered_seq, receipt.read_seq);
    }
    for (const [conversation, authors] of newest) {
      const status = conversation === state.open && document.visibilityState === "visible" ? "read" : "delivered";
      const upTo = Math.max(...authors.values());
      for (const author of authors.keys()) publish(`receipt/${author}/${state.me}`, { conversation, up_to_seq: upTo, status });
    }
    state.cursor = page.next;
    more = page.more;
  }
  // A message seen live but not stored yet: its seq (for receipts) comes with a later sync.
  const waiting = state.unstored.size || (state.thread && state.thread.unstored());
  if (waiting && state.syncRetries++ < 20) scheduleSync(500);
  else state.syncRetries = 0;
}

// ---- start ----
async function start() {
  let me;
  try { me = await call("GET", "/v1/me"); } catch { session.clear(); showLogin(); return; }
  state.me = me.name; state.groups = me.groups;
  $("login-form").classList.add("hidden");
  $("chat").classList.remove("hidden");
  $("logout").classList.remove("hidden");
  $("me").textContent = `signed in as ${me.name}`;
  $("console-link").classList.toggle("hidden", me.role !== "admin");
  state.cursor = (await call("GET", "/v1/sync")).next;
  await loadConversations();
  setStatus("connecting…");
  await connect();
}

function showLogin() {
  $("login-form").classList.remove("hidden");
  $("chat").classList.add("hidden");
  $("username").focus();
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("login-error").textContent = "";
  try {
    await login($("username").value.trim(), $("password").value);
    $("password").value = "";
    await start();
  } catch (error) { $("login-error").textContent = error.message; }
});

$("logout").addEventListener("click", () => { session.clear(); if (state.client) state.client.end(true); location.reload(); });

$("new-chat").addEventListener("submit", async (event) => {
  event.preventDefault();
  const value = $("new-peer").value.trim();
  $("new-chat-error").textContent = "";
  if (!value) return;
  if (value.startsWith("group:") && !state.groups.includes(value.slice(6))) {
    $("new-chat-error").textContent = `you are not a member of ${value}: your groups are ${state.groups.join(", ") || "none"}`;
    return;
  }
  if (!value.startsWith("group:")) {
    // Does the user exist? The DM's history says (404 for an unknown user); presence would not: it is hidden
    // from users who share no conversation yet.
    if (!/^[A-Za-z0-9_.-]{1,64}$/.test(value)) {
      $("new-chat-error").textContent = `${value} is not a user name`;
      return;
    }
    try { await call("GET", `/v1/conversations/${encodeURIComponent(dmId(state.me, value))}/messages?limit=1`); } catch (error) {
      $("new-chat-error").textContent = error.status === 404 ? `no such user(s): ${value}` : error.message;
      return;
    }
  }
  openConversation(value.startsWith("group:") ? value : dmId(state.me, value));
  $("new-peer").value = "";
});

if (session.token) start(); else showLogin();
