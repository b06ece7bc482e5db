// Demo page, the e-mail client: a customer writes to the demo support address through the
// e-mail sandbox (POST /_deliver, JSON form) and reads what the bridge sent back over SMTP
// (GET /_sent?to=) next to the mails written (GET /_deliveries?from=).
// Mail is untrusted: everything goes into the DOM through textContent, the HTML part of a mail
// is never shown (its text part is), and nothing here is parsed as HTML.
// demo.js's timer runs this panel's poll (window.DEMO_PANELS): one timer, one offline banner.
"use strict";

(function () {
  const section = document.getElementById("email");
  if (!section) return;
  const BASE = section.dataset.emailBase;
  const SUPPORT = section.dataset.emailAddress;
  const POLL_TIMEOUT_MS = 3000;
  const SEND_TIMEOUT_MS = 15000;
  const STORAGE_KEY = "demo-email-customer";

  // Every endpoint this panel calls on the e-mail sandbox: [path, HTTP method].
  // tests/sandbox/test_email_sandbox.py checks each one exists.
  const ENDPOINTS = {
    mailboxState: ["/_state", "GET"],
    deliverMail: ["/_deliver", "POST"],
    sentMail: ["/_sent", "GET"],
    writtenMail: ["/_deliveries", "GET"],
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

  // Long ids and addresses may wrap after their punctuation (a <wbr> after . - @ + >), never
  // inside a run of letters or digits.
  function breakable(className, text) {
    const node = el("span", className);
    for (const piece of String(text).split(/(?<=[.\-@+>_])/)) {
      node.appendChild(document.createTextNode(piece));
      node.appendChild(document.createElement("wbr"));
    }
    return node;
  }

  const TIME = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });

  function clock(seconds) {
    return seconds ? TIME.format(seconds * 1000) : "";
  }

  // RFC 3834: any Auto-Submitted value but "no" marks a mail sent by a machine.
  function isAutomatic(headers) {
    const value = String((headers && headers["Auto-Submitted"]) || "").trim().toLowerCase();
    return value !== "" && value !== "no";
  }

  // -- the customer ---------------------------------------------------------------------

  const fromInput = document.getElementById("email-from");
  const nameInput = document.getElementById("email-name");
  const subjectInput = document.getElementById("email-subject");
  const textBox = document.getElementById("email-text");
  const status = document.getElementById("email-status");
  const notice = document.getElementById("email-notice");
  const inbox = document.getElementById("email-inbox");
  const mailboxLabel = document.getElementById("email-mailbox");
  const replying = document.getElementById("email-replying");
  const replyingText = document.getElementById("email-replying-text");
  // the bridge's mail being answered: {messageId, references, subject}
  let answering = null;

  function loadIdentity() {
    let saved = null;
    try {
      saved = JSON.parse(localStorage.getItem(STORAGE_KEY) || "null");
    } catch (err) {
      saved = null;
    }
    fromInput.value = (saved && saved.address) || "anna@example.com";
    nameInput.value = (saved && saved.name) || "Anna";
  }

  function saveIdentity() {
    localStorage.setItem(STORAGE_KEY, JSON.stringify({ address: address(), name: nameInput.value }));
  }

  function address() {
    return fromInput.value.trim().toLowerCase();
  }

  function answer(mail) {
    const subject = mail.subject || "";
    answering = { messageId: mail.headers["Message-ID"], references: asList(mail.references),
                  subject: subject };
    subjectInput.value = /^re:/i.test(subject) ? subject : "Re: " + subject;
    replyingText.textContent = "Replying to “" + (subject || "(no subject)") + "” / Ответ на письмо";
    replying.hidden = false;
    textBox.focus();
  }

  function stopAnswering() {
    answering = null;
    replying.hidden = true;
    replyingText.textContent = "";
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

  // What the form's status line says after POST /_deliver: [text, tone].
  function outcome(result) {
    const d = result.data || {};
    if (result.status === 200 && d.delivered) return ["Sent ✓ / Отправлено ✓", "ok"];
    if (result.status === 200) {
      const why = d.status ? "the bridge answered " + d.status : (d.error || "no answer");
      return ["Not delivered: " + why + " / Не доставлено", "bad"];
    }
    if (result.status === 409) {
      return ["The demo mailbox is not connected to the bridge yet / " +
              "Демо-ящик ещё не подключён к мосту", "bad"];
    }
    return ["Error / Ошибка: " + (d.message || ("HTTP " + result.status)), "bad"];
  }

  async function send(event) {
    event.preventDefault();
    if (!address() || !textBox.value.trim()) return;
    saveIdentity();
    const mail = { from: address(), name: nameInput.value.trim(), subject: subjectInput.value,
                   text: textBox.value, to: SUPPORT };
    if (answering && answering.messageId) {
      mail.in_reply_to = answering.messageId;
      mail.references = answering.references;
    }
    setStatus(status, "Sending… / Отправка…");
    let result;
    try {
      result = await call("deliverMail", { json: mail });
    } catch (err) {
      setStatus(status, notSent(err), "bad");
      return;
    }
    const [text, tone] = outcome(result);
    setStatus(status, text, tone);
    if (result.status === 200) {
      // the mail is written: the next one starts blank (the sender stays)
      textBox.value = "";
      subjectInput.value = "";
      stopAnswering();
    }
    poll().catch((err) => console.error(err));
  }

  // -- the mailbox ----------------------------------------------------------------------

  // the mails whose headers the user opened: kept open when the list is drawn again
  const openHeaders = new Set();

  function headerList(key, headers) {
    const details = el("details", "mail-headers");
    details.open = openHeaders.has(key);
    details.addEventListener("toggle", () => {
      if (details.open) openHeaders.add(key);
      else openHeaders.delete(key);
    });
    details.appendChild(el("summary", null, "Threading headers / Заголовки цепочки"));
    const list = el("dl");
    for (const name of ["Message-ID", "In-Reply-To", "References", "Reply-To", "Auto-Submitted"]) {
      if (!headers[name]) continue;
      list.appendChild(el("dt", null, name));
      const value = el("dd");
      value.appendChild(breakable("header-value", headers[name]));
      list.appendChild(value);
    }
    details.appendChild(list);
    return details;
  }

  // One item of the mailbox: a mail the customer wrote (kind "written") or the bridge sent
  // (kind "received").
  function mailItem(item) {
    const li = el("li", "mail " + item.kind + (item.automatic ? " automatic" : "") +
                        (item.failed ? " failed" : ""));
    const head = el("div", "mail-head");
    head.appendChild(breakable("who", item.who));
    head.appendChild(el("span", "meta", item.time));
    li.appendChild(head);
    li.appendChild(el("div", "mail-subject", item.subject || "(no subject / без темы)"));
    if (item.note) li.appendChild(el("div", "meta mail-note", item.note));
    li.appendChild(el("div", "text", item.text === null ? "(no text part / нет текстовой части)"
                                                       : item.text.replace(/\s+$/, "")));
    li.appendChild(headerList(item.key, item.headers));
    if (item.kind === "received") {
      const button = el("button", "small reply", "Reply / Ответить");
      button.type = "button";
      button.addEventListener("click", () => answer(item.mail));
      li.appendChild(button);
    }
    return li;
  }

  function written(d) {
    return {
      kind: "written", key: "written:" + d.id, time: clock(d.time), at: d.time,
      who: "You / Вы → " + (d.account || SUPPORT),
      subject: d.subject, text: d.text, headers: d.headers || {}, automatic: false,
      note: d.delivered ? "delivered to the bridge / доставлено ✓"
        : "not delivered (" + (d.status ? "the bridge answered " + d.status : (d.error || "no answer")) +
          ") / не доставлено",
      failed: !d.delivered,
    };
  }

  function received(s) {
    const headers = s.headers || {};
    const automatic = isAutomatic(headers);
    return {
      kind: "received", key: "received:" + s.id, time: clock(s.time), at: s.time,
      who: headers.From || s.envelope.mail_from,
      subject: s.subject, text: s.text, headers: headers, automatic: automatic,
      note: automatic ? "automatic reply / автоматический ответ" : "", failed: false, mail: s,
    };
  }

  function render(items) {
    const model = items.map((i) => [i.key, i.who, i.time, i.subject, i.text, i.note, i.headers]);
    const sig = JSON.stringify(model);
    if (inbox.dataset.sig === sig) return;
    inbox.dataset.sig = sig;
    const nodes = items.map(mailItem);
    if (!nodes.length) {
      nodes.push(el("li", "empty", "No mail yet / Писем пока нет"));
    }
    inbox.replaceChildren(...nodes);
    inbox.scrollTop = inbox.scrollHeight;
  }

  function showConnection(result) {
    const box = result.status === 200 ? asList(result.data && result.data.accounts)[0] : null;
    const connected = !!(box && box.webhook_url);
    const text = connected ? "" : "The demo mailbox " + SUPPORT + " is not connected to the bridge " +
      "(is the e-mail channel installed?) / Демо-ящик не подключён к мосту";
    if (notice.textContent !== text) notice.textContent = text;
    notice.hidden = connected;
  }

  async function poll() {
    const who = address();
    mailboxLabel.textContent = who || "—";
    try {
      const [state, sent, deliveries] = await Promise.all([
        call("mailboxState", { query: { account: SUPPORT } }),
        who ? call("sentMail", { query: { to: who } }) : null,
        who ? call("writtenMail", { query: { from: who } }) : null,
      ]);
      showConnection(state);
      if (!who || sent.status !== 200 || deliveries.status !== 200) return;
      const items = asList(deliveries.data && deliveries.data.deliveries).map(written)
        .concat(asList(sent.data && sent.data.sent).map(received));
      items.sort((a, b) => a.at - b.at);
      render(items);
    } catch (err) {
      if (!(err instanceof NoAnswer)) throw err;  // no answer: the shared banner says so
    }
  }

  loadIdentity();
  document.getElementById("email-form").addEventListener("submit", send);
  document.getElementById("email-reply-cancel").addEventListener("click", stopAnswering);
  fromInput.addEventListener("change", () => { saveIdentity(); poll().catch((err) => console.error(err)); });
  nameInput.addEventListener("change", saveIdentity);
  (window.DEMO_PANELS = window.DEMO_PANELS || []).push(poll);
})();
