// Demo page, the MAX customer: a user id and a name write to the demo bot through the MAX
// sandbox (POST /_customer: a real-shaped message_created, posted to the bot's subscription
// with its secret header), share a phone number (POST /_contact: the card signed with the bot
// token, as MAX signs it) and read the chat: what they wrote (GET /_deliveries, with whether the
// bridge took it) and what the bot sent them (GET /_sent?user_id=).
// Everything goes into the DOM through textContent; nothing here is parsed as HTML.
// demo.js's timer runs this panel's poll (window.DEMO_PANELS): one timer, one offline banner.
"use strict";

(function () {
  const section = document.getElementById("max");
  if (!section) return;
  const BASE = section.dataset.maxBase;
  const POLL_TIMEOUT_MS = 3000;
  const SEND_TIMEOUT_MS = 15000;
  const STORAGE_KEY = "demo-max-customer";
  const DEFAULT_USER = "5550001";
  const DEFAULT_NAME = "Anna";
  const DEFAULT_PHONE = "79990001234";

  // Every endpoint this panel calls on the MAX sandbox: [path, HTTP method].
  // tests/browser/test_try_it_page.py checks each one exists.
  const ENDPOINTS = {
    maxState: ["/_state", "GET"],
    maxCustomer: ["/_customer", "POST"],
    maxContact: ["/_contact", "POST"],
    maxSent: ["/_sent", "GET"],
    maxDeliveries: ["/_deliveries", "GET"],
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

  function clock(seconds) {
    return seconds ? TIME.format(seconds * 1000) : "";
  }

  // A MAX user id: a positive integer (int64; the page keeps it as digits).
  function userId(value) {
    const digits = String(value || "").trim();
    return /^[1-9]\d{0,17}$/.test(digits) ? digits : null;
  }

  // -- what a message shows ---------------------------------------------------------------

  // [en, ru] of each attachment type (the sandbox's and MAX's names)
  const KINDS = {
    image: ["photo", "фото"], video: ["video", "видео"], audio: ["audio", "аудио"],
    file: ["file", "файл"], sticker: ["sticker", "стикер"], contact: ["contact", "контакт"],
    share: ["link", "ссылка"], location: ["location", "геолокация"],
  };

  function kindLabel(type, detail) {
    const [en, ru] = KINDS[type] || [String(type || "message"), "сообщение"];
    return "[" + en + " / " + ru + (present(detail) ? ": " + detail : "") + "]";
  }

  // The phone of a contact card's vCard (its TEL line), for the label.
  function vcardPhone(vcf) {
    const match = /(?:^|\n)TEL[^:\n]*:([^\r\n]*)/.exec(String(vcf || ""));
    return match ? match[1].trim() : null;
  }

  function attachmentText(a) {
    const node = a || {};
    const payload = node.payload || {};
    if (node.type === "inline_keyboard") {
      const labels = [];
      for (const row of asList(payload.buttons)) {
        for (const b of asList(row)) if (b && present(b.text)) labels.push(b.text);
      }
      return "[buttons / кнопки: " + labels.join(", ") + "]";
    }
    if (node.type === "contact") return kindLabel("contact", vcardPhone(payload.vcf_info));
    if (node.type === "file") return kindLabel("file", node.filename || null);
    return kindLabel(node.type);
  }

  function bodyText(text, attachments) {
    const parts = [];
    if (present(text)) parts.push(String(text));
    for (const a of asList(attachments)) parts.push(attachmentText(a));
    return parts.join("\n") || kindLabel("message");
  }

  // -- the customer ---------------------------------------------------------------------

  const userInput = document.getElementById("max-user");
  const nameInput = document.getElementById("max-name");
  const phoneInput = document.getElementById("max-phone");
  const form = document.getElementById("max-form");
  const textBox = document.getElementById("max-text");
  const status = document.getElementById("max-status");
  const notice = document.getElementById("max-notice");
  const bot = document.getElementById("max-bot");
  const transcript = document.getElementById("max-transcript");

  function loadIdentity() {
    let saved = null;
    try {
      saved = JSON.parse(localStorage.getItem(STORAGE_KEY) || "null");
    } catch (err) {
      saved = null;
    }
    userInput.value = (saved && saved.user) || DEFAULT_USER;
    nameInput.value = (saved && saved.name) || DEFAULT_NAME;
    phoneInput.value = (saved && saved.phone) || DEFAULT_PHONE;
  }

  function saveIdentity() {
    localStorage.setItem(STORAGE_KEY, JSON.stringify({
      user: userInput.value.trim(), name: nameInput.value, phone: phoneInput.value.trim() }));
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

  // What the status line says after POST /_customer or /_contact: [text, tone].
  function outcome(result) {
    const d = result.data || {};
    if (result.status === 200 && d.delivered) return ["Sent ✓ / Отправлено ✓", "ok"];
    if (result.status === 200 && d.queued) {
      return ["Waiting for the bridge's poller / Ждёт, пока мост заберёт (long polling)", "ok"];
    }
    if (result.status === 200) {
      return present(d.status)
        ? ["Not delivered: the bridge answered " + d.status + " / Не доставлено: мост ответил " + d.status, "bad"]
        : ["Not delivered: the bridge did not answer / Не доставлено: мост не ответил", "bad"];
    }
    return ["Error / Ошибка: " + (d.message || ("HTTP " + result.status)), "bad"];
  }

  async function post(name, json, clear) {
    const id = userId(userInput.value);
    if (!id) {
      setStatus(status, "Enter a user id: a positive number / Введите ID пользователя: число", "bad");
      userInput.focus();
      return;
    }
    saveIdentity();
    setStatus(status, "Sending… / Отправка…");
    let result;
    try {
      result = await call(name, { json: { ...json(id), name: nameInput.value.trim() || "User" } });
    } catch (err) {
      setStatus(status, notSent(err), "bad");
      return;
    }
    const [text, tone] = outcome(result);
    setStatus(status, text, tone);
    if (result.status === 200 && clear) textBox.value = "";
    poll().catch((err) => console.error(err));
  }

  function send(event) {
    event.preventDefault();
    if (!textBox.value.trim()) return;
    return post("maxCustomer", (id) => ({ from: Number(id), text: textBox.value }), true);
  }

  function share() {
    const phone = phoneInput.value.trim();
    if (!/^\+?[\d\s\-()]{7,20}$/.test(phone)) {
      setStatus(status, "Enter a phone number / Введите номер телефона", "bad");
      phoneInput.focus();
      return;
    }
    return post("maxContact", (id) => ({ user: Number(id), phone: phone }), false);
  }

  // -- the chat -------------------------------------------------------------------------

  // The customer's messages: one bubble per mid, its first attempt's time, its last outcome.
  function written(deliveries, id) {
    const byMid = new Map();
    for (const d of deliveries) {
      const update = d.payload || {};
      const message = update.message || {};
      const sender = message.sender || {};
      if (String(sender.user_id) !== id) continue;
      const body = message.body || {};
      const key = body.mid || ("delivery " + d.id);
      const first = byMid.get(key);
      byMid.set(key, { who: "customer", at: first ? first.at : Number(d.time) || 0,
                       text: bodyText(body.text, body.attachments), ok: !!d.ok, status: d.status });
    }
    return Array.from(byMid.values()).map((item) => ({
      ...item,
      note: item.ok ? { text: "delivered / доставлено ✓", tone: "" }
        : { text: "not delivered / не доставлено (" + (present(item.status) ? item.status : "—") + ")",
            tone: "failed" },
    }));
  }

  function received(sent) {
    return sent.map((s) => ({ who: "bot", at: Number(s.time) || 0,
                              text: bodyText(s.text, s.attachments),
                              note: { text: "sent / отправлено ✓", tone: "" } }));
  }

  function bubble([who, text, time, note, tone]) {
    const li = el("li", "bubble " + who + (tone === "failed" ? " failed" : ""));
    li.appendChild(el("span", "text", text));
    const meta = el("span", "meta");
    if (time) meta.appendChild(document.createTextNode(time + " · "));
    meta.appendChild(el("span", "ticks" + (tone ? " " + tone : ""), note));
    li.appendChild(meta);
    return li;
  }

  function render(items) {
    items.sort((a, b) => a.at - b.at);
    const model = items.map((i) => [i.who, i.text, clock(i.at), i.note.text, i.note.tone]);
    const sig = JSON.stringify(model);
    if (transcript.dataset.sig === sig) return;
    transcript.dataset.sig = sig;
    const nodes = model.map(bubble);
    if (!nodes.length) nodes.push(el("li", "empty", "No messages yet: write one below / Сообщений пока нет: напишите ниже"));
    transcript.replaceChildren(...nodes);
    transcript.scrollTop = transcript.scrollHeight;
  }

  // The demo bot (from /_state), and a notice while no subscription points at the bridge.
  function showBot(result) {
    const d = (result.status === 200 && result.data) || {};
    const account = asList(d.accounts)[0] || null;
    const info = (account && account.bot) || {};
    const label = present(info.name) ? info.name + (present(info.username) ? " (@" + info.username + ")" : "") : "—";
    if (bot.textContent !== label) bot.textContent = label;
    const subscribed = !!account && asList(account.subscriptions).length > 0;
    const text = subscribed || result.status !== 200 ? "" : "No webhook subscription: the bridge " +
      "polls the bot, or it is not connected (is the MAX channel installed?) / Подписки на " +
      "вебхук нет: мост забирает обновления сам или бот не подключён";
    if (notice.textContent !== text) notice.textContent = text;
    notice.hidden = !text;
  }

  async function poll() {
    const id = userId(userInput.value);
    try {
      const [state, sent, deliveries] = await Promise.all([
        call("maxState"),
        id ? call("maxSent", { query: { user_id: id } }) : null,
        id ? call("maxDeliveries", { query: { update_type: "message_created" } }) : null,
      ]);
      showBot(state);
      if (!id) {
        render([]);
        return;
      }
      if (sent.status !== 200 || deliveries.status !== 200) return;
      render(written(asList(deliveries.data && deliveries.data.deliveries), id)
        .concat(received(asList(sent.data && sent.data.sent))));
    } catch (err) {
      if (!(err instanceof NoAnswer)) throw err;  // no answer: the shared banner says so
    }
  }

  loadIdentity();
  form.addEventListener("submit", send);
  // Enter writes a new line; Ctrl+Enter (⌘+Enter) sends.
  textBox.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  document.getElementById("max-share").addEventListener("click", () => { share(); });
  document.getElementById("max-new").addEventListener("click", () => {
    userInput.value = String(5550000 + Math.floor(Math.random() * 1e6));
    saveIdentity();
    setStatus(status, "");
    poll().catch((err) => console.error(err));
  });
  userInput.addEventListener("change", () => { saveIdentity(); poll().catch((err) => console.error(err)); });
  nameInput.addEventListener("change", saveIdentity);
  phoneInput.addEventListener("change", saveIdentity);
  (window.DEMO_PANELS = window.DEMO_PANELS || []).push(poll);
})();
