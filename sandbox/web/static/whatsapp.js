// Demo page, the WhatsApp customer: a phone number and a name write to the demo business number
// through the WhatsApp sandbox (POST /_customer: a real-shaped message, signed as Meta signs it,
// posted to the bridge's webhook) and read the chat: what they wrote (GET /_deliveries, with
// whether the bridge took it) and what the bridge sent them (GET /_sent?to=, with the delivery
// statuses the sandbox posted back so far).
// Everything goes into the DOM through textContent; nothing here is parsed as HTML.
// demo.js's timer runs this panel's poll (window.DEMO_PANELS): one timer, one offline banner.
"use strict";

(function () {
  const section = document.getElementById("whatsapp");
  if (!section) return;
  const BASE = section.dataset.whatsappBase;
  const POLL_TIMEOUT_MS = 3000;
  const SEND_TIMEOUT_MS = 15000;
  const STORAGE_KEY = "demo-whatsapp-customer";
  const DEFAULT_PHONE = "79990001234";
  const DEFAULT_NAME = "Anna";

  // Every endpoint this panel calls on the WhatsApp sandbox: [path, HTTP method].
  // tests/browser/test_try_it_page.py checks each one exists.
  const ENDPOINTS = {
    waState: ["/_state", "GET"],
    waCustomer: ["/_customer", "POST"],
    waSent: ["/_sent", "GET"],
    waDeliveries: ["/_deliveries", "GET"],
  };

  // No answer at all (refused, network error, timeout): the shared banner tells the user.
  class NoAnswer extends Error {}

  async function call(name, options) {
    const [path, method] = ENDPOINTS[name];
    const opts = options || {};
    let url = BASE + path;
    if (opts.query) url += "?" + new URLSearchParams(opts.query).toString();
    const init = { method: method, headers: { Accept: "application/json" },
                   signal: AbortSignal.timeout(method === "GET" ? POLL_TIMEOUT_MS : SEND_TIMEOUT_MS) };
    if (opts.json !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(opts.json);
    }
    let response;
    try {
      response = await fetch(url, init);
    } catch (err) {
      throw new NoAnswer(err && err.name === "TimeoutError" ? "timeout" : "unreachable");
    }
    let data = null;
    try {
      data = await response.json();
    } catch (err) {
      data = null;
    }
    return { status: response.status, data: data };
  }

  // -- small helpers ------------------------------------------------------------------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function setStatus(node, text, tone) {
    node.textContent = text;
    node.classList.toggle("ok", tone === "ok");
    node.classList.toggle("bad", tone === "bad");
  }

  function asList(value) {
    return Array.isArray(value) ? value : [];
  }

  function present(value) {
    return value !== undefined && value !== null && value !== "";
  }

  const TIME = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });

  // The sandbox's times are seconds on its own clock (which a test may move a day on).
  function clock(seconds) {
    return seconds ? TIME.format(seconds * 1000) : "";
  }

  // The wa_id a number names, as the sandbox reads it: "+", spaces, dashes, dots and
  // parentheses dropped, 7 to 15 digits (sandbox/whatsapp/state.py normalize_to).
  function waId(value) {
    const digits = String(value || "").trim().replace(/[+\s\-().]/g, "");
    return /^\d{7,15}$/.test(digits) ? digits : null;
  }

  // -- what a message shows ---------------------------------------------------------------

  // [en, ru] of each kind of message that is not plain text
  const KINDS = {
    image: ["photo", "фото"], video: ["video", "видео"], audio: ["audio", "аудио"],
    document: ["file", "файл"], sticker: ["sticker", "стикер"], location: ["location", "геолокация"],
    contacts: ["contact", "контакт"], reaction: ["reaction", "реакция"],
    interactive: ["buttons", "кнопки"], button: ["button", "кнопка"], order: ["order", "заказ"],
  };

  function kindLabel(type, detail) {
    const [en, ru] = KINDS[type] || [String(type || "message"), "сообщение"];
    return "[" + en + " / " + ru + (present(detail) ? ": " + detail : "") + "]";
  }

  // A template send: "template: <name> (<param>, <param>)": the parameters of every component,
  // each as the text it carries (or its fallback, or its type).
  function templateText(template) {
    const t = template || {};
    const params = [];
    for (const component of asList(t.components)) {
      for (const p of asList(component && component.parameters)) {
        if (!p) continue;
        if (present(p.text)) params.push(String(p.text));
        else if (p.currency && present(p.currency.fallback_value)) params.push(String(p.currency.fallback_value));
        else if (p.date_time && present(p.date_time.fallback_value)) params.push(String(p.date_time.fallback_value));
        else params.push("[" + (p.type || "?") + "]");
      }
    }
    return "template: " + (t.name || "?") + (params.length ? " (" + params.join(", ") + ")" : "");
  }

  // A media object (sent or received): its kind, then its caption or file name.
  function mediaText(type, media) {
    const m = media || {};
    const caption = present(m.caption) ? " " + m.caption : "";
    return kindLabel(type, type === "document" ? (m.filename || null) : null) + caption;
  }

  // What the bridge sent (the Graph API body as posted).
  function sentText(body) {
    const b = body || {};
    const type = b.type || "text";
    if (type === "text") return String((b.text && b.text.body) || "");
    if (type === "template") return templateText(b.template);
    if (type in { image: 1, video: 1, audio: 1, document: 1, sticker: 1 }) return mediaText(type, b[type]);
    if (type === "reaction") return kindLabel("reaction", (b.reaction && b.reaction.emoji) || null);
    if (type === "location") {
      const loc = b.location || {};
      return kindLabel("location", loc.name || loc.address || null);
    }
    if (type === "interactive") {
      const i = b.interactive || {};
      return (i.body && i.body.text) || kindLabel("interactive");
    }
    return kindLabel(type);
  }

  // What the customer wrote (a message of the webhook payload).
  function writtenText(m) {
    const type = m.type || "text";
    if (type === "text") return String((m.text && m.text.body) || "");
    if (type in { image: 1, video: 1, audio: 1, document: 1, sticker: 1 }) return mediaText(type, m[type]);
    if (type === "reaction") return kindLabel("reaction", (m.reaction && m.reaction.emoji) || null);
    if (type === "button") return (m.button && m.button.text) || kindLabel("button");
    return kindLabel(type);
  }

  // -- delivery notes ---------------------------------------------------------------------

  // Under a customer's bubble: did the bridge take the message (its webhook answered 2xx),
  // and did the business read it (the bridge marked it read)?
  function writtenNote(item) {
    if (item.ok && item.read) return { text: "read / прочитано ✓✓", tone: "read" };
    if (item.ok) return { text: "delivered / доставлено ✓", tone: "" };
    const why = present(item.status) ? ["the bridge answered " + item.status, "мост ответил " + item.status]
      : ["the bridge did not answer", "мост не ответил"];
    return { text: "not delivered (" + why[0] + ") / не доставлено (" + why[1] + ")", tone: "failed" };
  }

  // WhatsApp's ticks for a send: the furthest status the sandbox posted so far, in whatever
  // order (statuses may come shuffled or twice); a failure wins.
  const RANK = { sent: 1, delivered: 2, read: 3 };

  function sentNote(s) {
    const statuses = asList(s.statuses).map((x) => x && x.status);
    const failure = s.failure || null;
    if (failure || statuses.includes("failed")) {
      const code = failure && present(failure.code) ? " " + failure.code : "";
      return { text: "failed / ошибка" + code, tone: "failed" };
    }
    const best = statuses.reduce((top, name) => Math.max(top, RANK[name] || 0), 0);
    if (best === 3) return { text: "read / прочитано ✓✓", tone: "read" };
    if (best === 2) return { text: "delivered / доставлено ✓✓", tone: "" };
    if (best === 1) return { text: "sent / отправлено ✓", tone: "" };
    return { text: "accepted / принято", tone: "" };
  }

  // -- the customer ---------------------------------------------------------------------

  const phoneInput = document.getElementById("wa-phone");
  const nameInput = document.getElementById("wa-name");
  const form = document.getElementById("wa-form");
  const textBox = document.getElementById("wa-text");
  const status = document.getElementById("wa-status");
  const notice = document.getElementById("wa-notice");
  const business = document.getElementById("wa-business");
  const transcript = document.getElementById("wa-transcript");

  function loadIdentity() {
    let saved = null;
    try {
      saved = JSON.parse(localStorage.getItem(STORAGE_KEY) || "null");
    } catch (err) {
      saved = null;
    }
    phoneInput.value = (saved && saved.phone) || DEFAULT_PHONE;
    nameInput.value = (saved && saved.name) || DEFAULT_NAME;
  }

  function saveIdentity() {
    localStorage.setItem(STORAGE_KEY, JSON.stringify({ phone: phoneInput.value.trim(),
                                                       name: nameInput.value }));
  }

  function randomPhone() {
    return "7999" + String(Math.floor(Math.random() * 1e7)).padStart(7, "0");
  }

  function notSent(err) {
    if (!(err instanceof NoAnswer)) {
      console.error(err);
      return "Not sent / Не отправлено: " + err.message;
    }
    return err.message === "timeout"
      ? "Not sent: no answer from the bridge in " + SEND_TIMEOUT_MS / 1000 + " s / " +
        "Не отправлено: мост не ответил за " + SEND_TIMEOUT_MS / 1000 + " с"
      : "Not sent: the bridge is not responding / Не отправлено: мост не отвечает";
  }

  // What the status line says after POST /_customer: [text, tone].
  function outcome(result) {
    const d = result.data || {};
    if (result.status === 200 && d.delivered) return ["Sent ✓ / Отправлено ✓", "ok"];
    if (result.status === 200) {
      return present(d.status)
        ? ["Not delivered: the bridge answered " + d.status + " / Не доставлено: мост ответил " + d.status, "bad"]
        : ["Not delivered: the bridge did not answer / Не доставлено: мост не ответил", "bad"];
    }
    if (result.status === 409) {
      return ["The demo number is not connected to the bridge yet; try again in a moment / " +
              "Демо-номер ещё не подключён к мосту; повторите чуть позже", "bad"];
    }
    return ["Error / Ошибка: " + (d.message || ("HTTP " + result.status)), "bad"];
  }

  async function send(event) {
    event.preventDefault();
    const id = waId(phoneInput.value);
    if (!id) {
      setStatus(status, "Enter a phone number: 7–15 digits with the country code / " +
        "Введите номер: 7–15 цифр с кодом страны", "bad");
      phoneInput.focus();
      return;
    }
    if (!textBox.value.trim()) return;
    saveIdentity();
    setStatus(status, "Sending… / Отправка…");
    let result;
    try {
      result = await call("waCustomer", {
        json: { from: id, name: nameInput.value.trim() || id, text: textBox.value },
      });
    } catch (err) {
      setStatus(status, notSent(err), "bad");
      return;
    }
    const [text, tone] = outcome(result);
    setStatus(status, text, tone);
    if (result.status === 200) textBox.value = "";  // written, taken or not (the bubble says)
    poll().catch((err) => console.error(err));
  }

  // -- the chat -------------------------------------------------------------------------

  function messagesOf(payload) {
    const out = [];
    for (const entry of asList(payload && payload.entry)) {
      for (const change of asList(entry && entry.changes)) {
        const value = (change && change.value) || {};
        for (const m of asList(value.messages)) if (m) out.push(m);
      }
    }
    return out;
  }

  // The customer's messages: one bubble per message id, its first attempt's time, its last
  // attempt's outcome (the sandbox redelivers what the bridge refused).
  function written(deliveries, id, read) {
    const byId = new Map();
    for (const d of deliveries) {
      for (const m of messagesOf(d.payload)) {
        if (String(m.from) !== id) continue;
        const key = m.id || ("delivery " + d.id);
        const first = byId.get(key);
        byId.set(key, { who: "customer", at: first ? first.at : Number(d.time) || 0,
                        text: writtenText(m), ok: !!d.ok, status: d.status, read: read.has(m.id) });
      }
    }
    return Array.from(byId.values()).map((item) => ({ ...item, note: writtenNote(item) }));
  }

  function received(sent) {
    return sent.map((s) => ({ who: "bot", at: Number(s.time) || 0, text: sentText(s.body),
                              note: sentNote(s), template: (s.body || {}).type === "template" }));
  }

  function bubble([who, text, time, note, tone, template]) {
    const li = el("li", "bubble " + who + (tone === "failed" ? " failed" : "") +
                        (template ? " template" : ""));
    li.appendChild(el("span", "text", text));
    const meta = el("span", "meta");
    if (time) meta.appendChild(document.createTextNode(time + " · "));
    meta.appendChild(el("span", "ticks" + (tone ? " " + tone : ""), note));
    li.appendChild(meta);
    return li;
  }

  function render(items) {
    items.sort((a, b) => a.at - b.at);
    const model = items.map((i) => [i.who, i.text, clock(i.at), i.note.text, i.note.tone, !!i.template]);
    const sig = JSON.stringify(model);
    if (transcript.dataset.sig === sig) return;
    transcript.dataset.sig = sig;
    const nodes = model.map(bubble);
    if (!nodes.length) nodes.push(el("li", "empty", "No messages yet: write one below / Сообщений пока нет: напишите ниже"));
    transcript.replaceChildren(...nodes);
    transcript.scrollTop = transcript.scrollHeight;
  }

  // The demo number (from /_state), and a notice while no webhook points at the bridge.
  function showAccount(result) {
    const d = (result.status === 200 && result.data) || {};
    const account = asList(d.accounts)[0] || null;
    const connected = !!(d.webhook && d.webhook.url) && !!account;
    const label = account
      ? "+" + account.display_phone_number + (account.verified_name ? " (" + account.verified_name + ")" : "")
      : "—";
    if (business.textContent !== label) business.textContent = label;
    const text = connected || result.status !== 200 ? "" : "The demo number is not connected to the bridge " +
      "(is the WhatsApp channel installed?) / Демо-номер не подключён к мосту";
    if (notice.textContent !== text) notice.textContent = text;
    notice.hidden = !text;
    return account;
  }

  async function poll() {
    const id = waId(phoneInput.value);
    try {
      const [state, sent, deliveries] = await Promise.all([
        call("waState"),
        id ? call("waSent", { query: { to: id } }) : null,
        id ? call("waDeliveries", { query: { kind: "customer" } }) : null,
      ]);
      const account = showAccount(state);
      if (!id) {
        render([]);
        return;
      }
      if (sent.status !== 200 || deliveries.status !== 200) return;
      const read = new Set(asList(account && account.read));
      render(written(asList(deliveries.data && deliveries.data.deliveries), id, read)
        .concat(received(asList(sent.data && sent.data.sent))));
    } catch (err) {
      if (!(err instanceof NoAnswer)) throw err;  // no answer: the shared banner says so
    }
  }

  loadIdentity();
  form.addEventListener("submit", send);
  // Enter writes a new line (a message may have several); Ctrl+Enter (⌘+Enter) sends.
  textBox.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  document.getElementById("wa-new").addEventListener("click", () => {
    phoneInput.value = randomPhone();
    saveIdentity();
    setStatus(status, "");
    poll().catch((err) => console.error(err));
  });
  phoneInput.addEventListener("change", () => { saveIdentity(); poll().catch((err) => console.error(err)); });
  nameInput.addEventListener("change", saveIdentity);
  (window.DEMO_PANELS = window.DEMO_PANELS || []).push(poll);
})();
