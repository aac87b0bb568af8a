// Producer form and live consumer view. Every piece of message content is set with
// textContent, so markup in a body or an attribute is shown, never run.
"use strict";

const MAX_ROWS = 200;        // rows kept in each list; older ones are dropped
const BURST_CHUNK = 100;     // a burst is sent in requests of this many, to show progress
const BODY_CHARS = 2000;     // longer bodies are shortened on screen

const $ = (id) => document.getElementById(id);

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function prepend(list, rows) {
  // Newest first; rows arrive oldest first.
  const fragment = document.createDocumentFragment();
  for (let i = rows.length - 1; i >= 0; i--) fragment.appendChild(rows[i]);
  list.insertBefore(fragment, list.firstChild);
  while (list.children.length > MAX_ROWS) list.removeChild(list.lastChild);
}

function time(ms) {
  return ms ? new Date(ms).toLocaleTimeString() : "?";
}

// ---------------------------------------------------------------- live connection

const socket = typeof io === "function" ? io({ transports: ["websocket", "polling"] }) : null;
const connection = $("connection");

if (!socket) {
  connection.textContent = "unavailable (Socket.IO client not installed: run npm ci)";
} else {
  socket.on("connect", () => { connection.textContent = "connected"; connection.className = "badge on"; });
  socket.on("disconnect", () => { connection.textContent = "disconnected"; connection.className = "badge off"; });
  socket.on("connect_error", async () => {
    connection.textContent = "reconnecting…";
    connection.className = "badge off";
    try {   // the app refuses tabs over MAX_BROWSERS: say so instead of a bare "reconnecting"
      const b = (await (await fetch("/status")).json()).browsers;
      if (b && b.connected >= b.max && !socket.connected) {
        connection.textContent = `too many tabs open (${b.connected} of MAX_BROWSERS=${b.max}); retrying…`;
      }
    } catch (err) { /* the app does not answer: "reconnecting…" says enough */ }
  });
}

// ---------------------------------------------------------------- SQS reachability (every page)

async function checkSqs() {
  const badge = $("sqs-state");
  try {
    const response = await fetch("/readyz");
    const r = await response.json();
    if (response.ok) {
      const dlq = !r.dead_letter_queue ? ""
        : r.dead_letter_error ? ` · dead-letter queue ${r.dead_letter_queue}: ${r.dead_letter_error}`
        : ` · dead-letter queue: ${r.dead_letter_messages}`;
      badge.textContent = `ready · ${r.messages_visible} waiting · ${r.messages_in_flight} in flight${dlq}`;
      badge.className = "badge on";
    } else {
      badge.textContent = `not reachable: ${r.reason}`;
      badge.className = "badge off";
    }
  } catch (err) {
    badge.textContent = "the app does not answer";
    badge.className = "badge off";
  }
}
checkSqs();
setInterval(checkSqs, 5000);

// ---------------------------------------------------------------- consumer view

const messages = $("messages");
if (messages && socket) {
  const seen = new Set();
  const shown = $("count-shown");
  let received = 0;          // messages this tab got live (history excluded)
  let pending = [];
  let scheduled = false;

  const flush = () => {
    scheduled = false;
    shown.textContent = received;
    const rows = pending.map(renderMessage);
    pending = [];
    prepend(messages, rows);
  };
  const queueRow = (item) => {
    pending.push(item);
    if (pending.length > MAX_ROWS) pending = pending.slice(-MAX_ROWS);
    if (!scheduled) { scheduled = true; requestAnimationFrame(flush); }
  };

  socket.on("sqs_history", (data) => {
    for (const m of data.messages) {
      if (!seen.has(m.id + "/" + m.receive_count)) { seen.add(m.id + "/" + m.receive_count); queueRow({ message: m }); }
    }
  });
  // One event per batch the consumer received (1-10 messages), in the order SQS gave them. The
  // consumer deletes the batch from the queue once every connected tab has confirmed it.
  socket.on("sqs_messages", (batch, confirm) => {
    for (const m of batch.messages) {
      const key = m.id + "/" + m.receive_count;
      if (seen.has(key)) continue;
      seen.add(key);
      received++;
      if (seen.size > 5 * MAX_ROWS) seen.clear();
      queueRow({ message: m });
    }
    if (typeof confirm === "function") confirm();
  });
  socket.on("sqs_message_failed", (f) => queueRow({ failure: f }));
  socket.on("consumer_status", updateStatus);
}

function renderMessage(item) {
  const li = el("li");
  if (item.failure) {
    const f = item.failure;
    li.className = "failed";
    const of = f.max_receive_count ? ` of ${f.max_receive_count}` : "";
    li.appendChild(el("div", "error", `handler failed (attempt ${f.receive_count}${of}): ${f.error}`));
    const next = f.max_receive_count && f.receive_count >= f.max_receive_count
      ? `last attempt: SQS moves it to the dead-letter queue ${f.dead_letter_queue} instead of delivering it again`
      : "left on the queue for redelivery";
    li.appendChild(el("div", "meta", `${f.id} · ${next}`));
    return li;
  }
  const m = item.message;
  li.dataset.id = m.id;
  // The body exactly as received: re-serialising parsed JSON would change numbers and keys.
  // The server shortens long bodies (more so in history); body_chars is then the whole length.
  // Characters as the server counts them (code points: an emoji is one, not two UTF-16 units).
  const chars = m.body.length > BODY_CHARS ? Array.from(m.body) : null;
  const length = m.body_truncated ? m.body_chars : (chars ? chars.length : m.body.length);
  const body = length > BODY_CHARS ? chars.slice(0, BODY_CHARS).join("") + ` … (${length - BODY_CHARS} more characters)` : m.body;
  li.appendChild(el("pre", "body", body));
  if (m.is_json) li.firstChild.appendChild(el("span", "tag", "JSON"));
  const names = Object.keys(m.attributes || {});
  if (names.length) {
    const attrs = el("div", "attrs");
    for (const name of names) {
      const a = m.attributes[name];
      attrs.appendChild(el("span", "", `${name} (${a.type}) = ${a.value}`));
    }
    li.appendChild(attrs);
  }
  const redelivered = m.receive_count > 1 ? ` · redelivered (receive ${m.receive_count})` : "";
  const group = m.group_id ? ` · group ${m.group_id}` : "";
  li.appendChild(el("div", "meta",
    `${m.id} · sent ${time(m.sent_at)} · received ${time(m.received_at)} by ${m.consumer}${group}${redelivered}`));
  return li;
}

function updateStatus(status) {
  if (status.queue) $("queue").textContent = status.queue.queue_url || status.queue.queue_name;
  const s = status.stats;
  if (!s) return;
  $("count-received").textContent = s.received;
  $("count-deleted").textContent = s.deleted;
  $("count-failed").textContent = s.failed;
  $("count-errors").textContent = s.errors;
  $("consumer-state").textContent = s.state.replace("_", " ");
  const error = $("consumer-error");
  error.hidden = !s.last_error;
  error.textContent = s.last_error ? `SQS error: ${s.last_error} (retrying with backoff)` : "";
}

// ---------------------------------------------------------------- producer form

const form = $("produce-form");
if (form) {
  const attributes = $("attributes");
  const template = $("attribute-row");
  $("add-attribute").addEventListener("click", () => {
    const row = template.content.firstElementChild.cloneNode(true);
    row.querySelector(".remove").addEventListener("click", () => row.remove());
    attributes.appendChild(row);
    row.querySelector(".attr-name").focus();
  });
  form.addEventListener("submit", (event) => { event.preventDefault(); send(); });
}

function readForm() {
  const payload = { message: $("message").value };
  const attrs = {};
  for (const row of document.querySelectorAll("#attributes .attribute")) {
    const name = row.querySelector(".attr-name").value.trim();
    const type = row.querySelector(".attr-type").value;
    const value = row.querySelector(".attr-value").value;
    if (!name && !value) continue;
    if (Object.prototype.hasOwnProperty.call(attrs, name)) {
      throw new Error(`attributes.${name}: the same attribute name twice`);
    }
    attrs[name] = type === "Binary" ? { DataType: type, BinaryValue: value } : { DataType: type, StringValue: value };
  }
  if (Object.keys(attrs).length) payload.attributes = attrs;
  if (document.body.dataset.fifo === "true") {
    const group = $("group-id").value.trim();
    const dedup = $("dedup-id").value.trim();
    if (group) payload.group_id = group;
    if (dedup) payload.dedup_id = dedup;
  }
  return payload;
}

async function post(payload) {
  let response;
  try {
    response = await fetch("/produce", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(payload),
    });
  } catch (err) {
    return { ok: false, data: { error: `the app did not answer: ${err.message}` } };
  }
  let data;
  try { data = await response.json(); } catch { data = { error: `HTTP ${response.status}` }; }
  return { ok: response.ok, data };
}

async function send() {
  const result = $("produce-result");
  const progress = $("progress");
  const button = $("send");
  const total = Number($("count").value || 1);
  if (!Number.isInteger(total) || total < 1 || total > 1000) {
    result.className = "error";
    result.textContent = "count: must be a whole number from 1 to 1000";
    return;
  }
  let base;
  try {
    base = readForm();
  } catch (err) {
    result.className = "error";
    result.textContent = err.message;
    return;
  }
  button.disabled = true;
  result.className = "";
  result.textContent = "sending…";
  progress.hidden = total === 1;
  progress.max = total;
  progress.value = 0;
  let sent = 0;
  try {
    for (let chunk = 0; sent < total; chunk++) {
      const count = Math.min(BURST_CHUNK, total - sent);
      const payload = { ...base, count };
      if (base.dedup_id && total > BURST_CHUNK) payload.dedup_id = `${base.dedup_id}-${chunk + 1}`;
      const { ok, data } = await post(payload);
      if (!ok) {
        result.className = "error";
        const where = data.field ? `${data.field}: ` : "";
        result.textContent = `${where}${data.error}` + (sent || data.sent ? ` (${sent + (data.sent || 0)} sent before this)` : "");
        return;
      }
      sent += data.sent;
      progress.value = sent;
      result.textContent = `sending… ${sent} of ${total}`;
      prepend($("sent"), data.message_ids.slice(-MAX_ROWS).map((id) => el("li", "", `${id} · ${base.message.slice(0, 80)}`)));
    }
    result.className = "ok";
    result.textContent = `sent ${sent} message${sent === 1 ? "" : "s"}`;
    // SQS would silently drop a resend with the same deduplication id within five minutes.
    if ($("dedup-id")) $("dedup-id").value = "";
  } finally {
    button.disabled = false;
  }
}
