// Demo page, the Viber customer: a user id and a name write to the demo bot through the Viber
// sandbox (POST /_customer: a real-shaped message callback, signed with the bot's token as Viber
// signs it, posted to the bridge's webhook), open the chat (POST /_open: conversation_started,
// answered with the bot's welcome message when it has one) and read the chat: what they wrote
// (GET /_deliveries?kind=deliver, with whether the bridge took it), what the bridge sent them
// (GET /_sent?receiver=, with the delivered / seen reports posted back so far) and the welcome
// messages (GET /_state).
// Everything goes into the DOM through textContent; nothing here is parsed as HTML.
// demo.js's timer runs this panel's poll (window.DEMO_PANELS): one timer, one offline banner.
"use strict";

(function () {
  const section = document.getElementById("viber");
  if (!section) return;
  const BASE = section.dataset.viberBase;
  const POLL_TIMEOUT_MS = 3000;
  const SEND_TIMEOUT_MS = 15000;
  const STORAGE_KEY = "demo-viber-customer";
  const DEFAULT_ID = "01234567890A=";
  const DEFAULT_NAME = "Anna";

  // Every endpoint this panel calls on the Viber sandbox: [path, HTTP method].
  const ENDPOINTS = {
    vbState: ["/_state", "GET"],
    vbCustomer: ["/_customer", "POST"],
    vbOpen: ["/_open", "POST"],
    vbSent: ["/_sent", "GET"],
    vbDeliveries: ["/_deliveries", "GET"],
  };

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

  const TIME = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });

  function clock(seconds) {
    return seconds ? TIME.format(seconds * 1000) : "";
  }

  // A Viber user id as the sandbox takes it: 1 to 64 characters, no spaces.
  function userId(value) {
    const id = String(value || "").trim();
    return /^[A-Za-z0-9+/=_-]{1,64}$/.test(id) ? id : null;
  }

  // [en, ru] of each kind of message that is not plain text
  const KINDS = {
    picture: ["photo", "фото"], video: ["video", "видео"], file: ["file", "файл"],
    sticker: ["sticker", "стикер"], location: ["location", "геолокация"],
    contact: ["contact", "контакт"], url: ["link", "ссылка"],
  };

  function messageText(m) {
    const type = m.type || "text";
    if (type === "text") return String(m.text || "");
    const [en, ru] = KINDS[type] || [String(type), "сообщение"];
    const detail = m.file_name || m.media || m.text || "";
    return "[" + en + " / " + ru + "]" + (detail ? " " + detail : "");
  }

  function writtenNote(d) {
    if (d.ok) return { text: "delivered / доставлено ✓", tone: "" };
    const why = d.status ? ["the bridge answered " + d.status, "мост ответил " + d.status]
      : ["the bridge did not answer", "мост не ответил"];
    return { text: "not delivered (" + why[0] + ") / не доставлено (" + why[1] + ")", tone: "failed" };
  }

  // Viber's ticks for a send: seen wins over delivered, whatever order they came in.
  function sentNote(s) {
    const names = asList(s.statuses).filter((x) => x && x.ok).map((x) => x.status);
    if (names.includes("seen")) return { text: "seen / прочитано ✓✓", tone: "read" };
    if (names.includes("delivered")) return { text: "delivered / доставлено ✓✓", tone: "" };
    return { text: "sent / отправлено ✓", tone: "" };
  }

  const idInput = document.getElementById("vb-id");
  const nameInput = document.getElementById("vb-name");
  const form = document.getElementById("vb-form");
  const textBox = document.getElementById("vb-text");
  const status = document.getElementById("vb-status");
  const notice = document.getElementById("vb-notice");
  const bot = document.getElementById("vb-bot");
  const transcript = document.getElementById("vb-transcript");

  function loadIdentity() {
    let saved = null;
    try {
      saved = JSON.parse(localStorage.getItem(STORAGE_KEY) || "null");
    } catch (err) {
      saved = null;
    }
    idInput.value = (saved && saved.id) || DEFAULT_ID;
    nameInput.value = (saved && saved.name) || DEFAULT_NAME;
  }

  function saveIdentity() {
    localStorage.setItem(STORAGE_KEY, JSON.stringify({ id: idInput.value.trim(), name: nameInput.value }));
  }

  function randomId() {
    const bytes = new Uint8Array(12);
    crypto.getRandomValues(bytes);
    return btoa(String.fromCharCode(...bytes));
  }

  function notSent(err) {
    if (!(err instanceof NoAnswer)) {
      console.error(err);
      return "Not sent / Не отправлено: " + err.message;
    }
    return "Not sent: the bridge is not responding / Не отправлено: мост не отвечает";
  }

  function outcome(result) {
    const d = result.data || {};
    if (result.status === 200 && d.delivered) return ["Sent ✓ / Отправлено ✓", "ok"];
    if (result.status === 200) {
      return ["Not delivered: the bridge answered " + (d.status || "nothing") +
              " / Не доставлено: мост ответил " + (d.status || "—"), "bad"];
    }
    if (result.status === 409) {
      return ["The demo bot is not connected to the bridge yet; try again in a moment / " +
              "Демо-бот ещё не подключён к мосту; повторите чуть позже", "bad"];
    }
    return ["Error / Ошибка: " + (d.message || ("HTTP " + result.status)), "bad"];
  }

  async function post(name, json) {
    const id = userId(idInput.value);
    if (!id) {
      setStatus(status, "Enter a user id: letters, digits, + / = _ - / " +
        "Введите ID: буквы, цифры, + / = _ -", "bad");
      idInput.focus();
      return null;
    }
    saveIdentity();
    setStatus(status, "Sending… / Отправка…");
    let result;
    try {
      result = await call(name, { json: { ...json, from: id, user: id,
                                          name: nameInput.value.trim() || id } });
    } catch (err) {
      setStatus(status, notSent(err), "bad");
      return null;
    }
    const [text, tone] = outcome(result);
    setStatus(status, text, tone);
    poll().catch((err) => console.error(err));
    return result;
  }

  async function send(event) {
    event.preventDefault();
    if (!textBox.value.trim()) return;
    const result = await post("vbCustomer", { text: textBox.value });
    if (result && result.status === 200) textBox.value = "";
  }

  function written(deliveries, id) {
    const byToken = new Map();
    for (const d of deliveries) {
      const p = d.payload || {};
      if (p.event !== "message" || !p.sender || p.sender.id !== id) continue;
      // a retry is the same body; a token beyond 2^53 alone may round onto another's
      const key = String(p.message_token) + "|" + p.timestamp + "|" + JSON.stringify(p.message);
      const first = byToken.get(key);
      byToken.set(key, { who: "customer", at: first ? first.at : Number(d.time) || 0,
                         text: messageText(p.message || {}), note: writtenNote(d) });
    }
    return Array.from(byToken.values());
  }

  function received(sent, welcomes, id) {
    const out = sent.map((s) => ({ who: "bot", at: Number(s.time) || 0,
                                   text: messageText(s.body || {}), note: sentNote(s) }));
    for (const w of welcomes) {
      if (w.receiver !== id) continue;
      out.push({ who: "bot", at: Number(w.time) || 0, text: messageText(w.message || {}),
                 note: { text: "welcome / приветствие", tone: "" } });
    }
    return out;
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

  function showBot(result) {
    const d = (result.status === 200 && result.data) || {};
    const account = asList(d.accounts)[0] || null;
    const label = account ? account.name || account.id : "—";
    if (bot.textContent !== label) bot.textContent = label;
    const connected = !!(account && account.webhook && account.webhook.url);
    const text = connected || result.status !== 200 ? "" : "The demo bot is not connected to the bridge " +
      "(is the Viber channel installed?) / Демо-бот не подключён к мосту";
    if (notice.textContent !== text) notice.textContent = text;
    notice.hidden = !text;
    return d;
  }

  async function poll() {
    const id = userId(idInput.value);
    try {
      const [state, sent, deliveries] = await Promise.all([
        call("vbState"),
        id ? call("vbSent", { query: { receiver: id } }) : null,
        id ? call("vbDeliveries", { query: { kind: "deliver" } }) : null,
      ]);
      const d = showBot(state);
      if (!id) {
        render([]);
        return;
      }
      if (sent.status !== 200 || deliveries.status !== 200) return;
      render(written(asList(deliveries.data && deliveries.data.deliveries), id)
        .concat(received(asList(sent.data && sent.data.sent), asList(d.welcomes), id)));
    } catch (err) {
      if (!(err instanceof NoAnswer)) throw err;
    }
  }

  loadIdentity();
  form.addEventListener("submit", send);
  textBox.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  document.getElementById("vb-open").addEventListener("click", () => {
    post("vbOpen", {}).catch((err) => console.error(err));
  });
  document.getElementById("vb-new").addEventListener("click", () => {
    idInput.value = randomId();
    saveIdentity();
    setStatus(status, "");
    poll().catch((err) => console.error(err));
  });
  idInput.addEventListener("change", () => { saveIdentity(); poll().catch((err) => console.error(err)); });
  nameInput.addEventListener("change", saveIdentity);
  (window.DEMO_PANELS = window.DEMO_PANELS || []).push(poll);
})();
