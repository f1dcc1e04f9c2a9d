// One open conversation: its history (paged back with "Load earlier"), live messages merged by
// (sender, id), the state of the caller's own messages (sending, sent on the bridge's ack, delivered and
// read from receipts), typing indicators, and image attachments shown as thumbnails.
import { call, el } from "/shared/http.js";

const $ = (id) => document.getElementById(id);
const PAGE = 30;
const TYPING_EVERY_MS = 3000;
const TYPING_STALE_MS = 6000;
const images = new Map(); // "id" or "id?thumbnail" -> Promise of an object URL

function imageUrl(mediaId, thumbnail) {
  const key = thumbnail ? `${mediaId}?thumbnail` : mediaId;
  if (!images.has(key)) {
    const promise = call("GET", `/v1/media/${mediaId}${thumbnail ? "?thumbnail=1" : ""}`, undefined, { raw: true })
      .then((response) => response.blob()).then((blob) => URL.createObjectURL(blob));
    promise.catch(() => images.delete(key)); // not stored yet: try again on the next render
    images.set(key, promise);
  }
  return images.get(key);
}

async function showImage(mediaId) {
  $("full-image").src = await imageUrl(mediaId, false);
  $("viewer").showModal();
}

let current = null;
let lastTyping = 0;

export class Thread {
  constructor(conversation, { me, client, publish, onChange }) {
    Object.assign(this, { conversation, me, client, publish, onChange });
    this.messages = new Map();
    this.next = null;
    this.floor = 0; // stored messages below this seq are earlier history, which "Load earlier" brings
    this.loadingOlder = false;
    this.delivered = 0; // the highest seq of the caller's messages another member has received
    this.read = 0;
    this.typists = new Map();
    this.typingTimer = null;
    current = this;
    $("messages").replaceChildren();
    $("typing").textContent = "";
    this.resubscribe(client);
  }

  resubscribe(client) {
    this.client = client;
    if (client) client.subscribe(`typing/${this.conversation}/+`, { qos: 0 });
  }

  close() {
    if (this.client) this.client.unsubscribe(`typing/${this.conversation}/+`);
    clearTimeout(this.typingTimer);
    if (current === this) current = null;
  }

  async load() {
    let page;
    try {
      page = await call("GET", `/v1/conversations/${encodeURIComponent(this.conversation)}/messages?limit=${PAGE}`);
    } catch (error) {
      if (error.status !== 404) throw error; // 404: no message yet
      return;
    }
    this.addPage(page);
    const mine = page.messages.find((m) => m.sender === this.me);
    if (mine) {
      const detail = await call("GET", `/v1/messages/${encodeURIComponent(this.conversation)}/${mine.seq}`);
      if (detail.delivered_to.length) this.delivered = mine.seq;
      if (detail.read_by.length) this.read = mine.seq;
    }
    const theirs = page.messages.filter((m) => m.sender !== this.me);
    if (theirs.length) {
      const upTo = Math.max(...theirs.map((m) => m.seq));
      for (const author of new Set(theirs.map((m) => m.sender))) {
        this.publish(`receipt/${author}/${this.me}`, { conversation: this.conversation, up_to_seq: upTo, status: "read" });
      }
    }
    this.render(true);
  }

  addPage(page) {
    this.next = page.next;
    const seqs = page.messages.map((m) => m.seq);
    this.floor = this.next === null || !seqs.length ? 0 : Math.min(...seqs);
    // A sync that ran while the page was on its way may have added older stored messages: they are earlier
    // history, and showing them would put them above the page with "Load earlier" still offering them.
    for (const [key, message] of this.messages) if (message.seq != null && message.seq < this.floor) this.messages.delete(key);
    for (const message of page.messages) this.add(message, false);
    if (current === this) $("older").classList.toggle("hidden", this.next === null);
  }

  async older() {
    if (this.next === null || this.loadingOlder) return;
    this.loadingOlder = true;
    let page;
    try {
      page = await call("GET", `/v1/conversations/${encodeURIComponent(this.conversation)}/messages?limit=${PAGE}&before=${this.next}`);
    } finally { this.loadingOlder = false; }
    if (current !== this) return; // another conversation was opened meanwhile
    // The view stays on what the reader was looking at: the same distance from the bottom once the earlier
    // messages are in above it (render replaces every node, so no node from before can be scrolled to).
    const list = $("messages");
    const fromBottom = list.scrollHeight - list.scrollTop;
    this.addPage(page);
    this.render(false);
    list.scrollTop = list.scrollHeight - fromBottom;
  }

  /** Adds a message; false when it was there already (its seq is filled in if it was missing). */
  add(message, render = true) {
    const key = `${message.sender}\n${message.id}`;
    const known = this.messages.get(key);
    if (message.seq != null && message.seq < this.floor) { // earlier history, not loaded yet
      if (known) { this.messages.delete(key); if (render) this.render(); }
      return false;
    }
    if (known) {
      if (known.seq == null && message.seq != null) { known.seq = message.seq; if (render) this.render(); }
      return false;
    }
    this.messages.set(key, { ...message, attachments: message.attachments ?? [] });
    if (render) this.render();
    return true;
  }

  acked(id, seq) {
    const message = this.messages.get(`${this.me}\n${id}`);
    if (message && message.seq == null) { message.seq = seq; this.render(); }
  }

  receipt(_reader, upTo, status) {
    this.delivered = Math.max(this.delivered, upTo);
    if (status === "read") this.read = Math.max(this.read, upTo);
    this.render();
  }

  watermark(_user, delivered, read) {
    this.delivered = Math.max(this.delivered, delivered, read);
    this.read = Math.max(this.read, read);
    this.render();
  }

  unstored() { return [...this.messages.values()].some((m) => m.seq == null); }

  typing(user, on) {
    if (on) this.typists.set(user, Date.now() + TYPING_STALE_MS); else this.typists.delete(user);
    this.renderTyping();
  }

  renderTyping() {
    const now = Date.now();
    for (const [user, until] of this.typists) if (until < now) this.typists.delete(user);
    const names = [...this.typists.keys()];
    $("typing").textContent = names.length ? `${names.join(", ")} ${names.length > 1 ? "are" : "is"} typing…` : "";
    clearTimeout(this.typingTimer);
    if (names.length) this.typingTimer = setTimeout(() => this.renderTyping(), 1000);
  }

  stateOf(message) {
    if (message.sender !== this.me) return null;
    if (message.seq == null) return "sending";
    if (message.seq <= this.read) return "read";
    if (message.seq <= this.delivered) return "delivered";
    return "sent";
  }

  render(toBottom) {
    if (current !== this) return; // closed: the list shows another conversation now
    const list = $("messages");
    const atBottom = toBottom ?? list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    // Unstored ones (no seq yet) last, in the order they came (Infinity - Infinity is NaN, which sort misreads).
    const ordered = [...this.messages.values()].sort((a, b) => (a.seq ?? Infinity) - (b.seq ?? Infinity) || 0);
    list.replaceChildren(...ordered.map((message) => {
      const mine = message.sender === this.me;
      const state = this.stateOf(message);
      const stored = message.seq != null || mine;
      return el("li", { class: mine ? "mine" : "theirs", "data-id": message.id, "data-seq": message.seq ?? "" },
        el("span", { class: "sender", text: mine ? "you" : message.sender }),
        message.body ? el("span", { class: "body", text: message.body }) : null,
        ...message.attachments.map((mediaId) => {
          const img = el("img", { class: "thumb", alt: `image from ${mine ? "you" : message.sender}`, "data-media": mediaId });
          if (stored) imageUrl(mediaId, true).then((url) => { img.src = url; }, () => {});
          return el("button", { type: "button", class: "plain image", "aria-label": "open the full image", onclick: () => showImage(mediaId) }, img);
        }),
        state ? el("span", { class: "state", text: state }) : null);
    }));
    if (atBottom) list.scrollTop = list.scrollHeight;
  }

  async send(body, file) {
    const attachments = [];
    if (file) {
      const form = new FormData();
      form.append("file", file);
      const uploaded = await call("POST", "/v1/media", form);
      attachments.push({ media_id: uploaded.media_id });
    }
    const id = `web-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
    const [kind, a, b] = this.conversation.split(":");
    const topic = kind === "group" ? `group/${a}/${this.me}` : `dm/${a === this.me ? b : a}/${this.me}`;
    const payload = { id, body, ...(attachments.length ? { attachments } : {}) };
    this.publish(`typing/${this.conversation}/${this.me}`, { typing: false }, 0);
    lastTyping = 0;
    const message = { conversation: this.conversation, sender: this.me, id, body, attachments: attachments.map((x) => x.media_id), seq: null };
    this.add(message);
    this.render(true);
    this.publish(topic, payload, 1);
    this.onChange(message);
  }

  typed() {
    const now = Date.now();
    if (now - lastTyping > TYPING_EVERY_MS) {
      lastTyping = now;
      this.publish(`typing/${this.conversation}/${this.me}`, { typing: true }, 0);
    }
  }
}

$("composer").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (!current) return;
  const body = $("body").value;
  const file = $("attach").files[0];
  if (!body.trim() && !file) return;
  $("send-error").textContent = "";
  try {
    await current.send(body, file);
    $("body").value = "";
    $("attach").value = "";
  } catch (error) { $("send-error").textContent = error.message; }
});
$("body").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); $("composer").requestSubmit(); }
});
$("body").addEventListener("input", () => current?.typed());
$("older").addEventListener("click", () => current?.older());
