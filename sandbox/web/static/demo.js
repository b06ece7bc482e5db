// Demo page: customer in Telegram (left) <-> rep in HubSpot (right).
// All text goes into the DOM through textContent; nothing user-supplied is parsed as page HTML.
"use strict";

(function () {
  const page = document.body.dataset;
  const BASES = { telegram: page.telegramBase, hubspot: page.hubspotBase };
  const POLL_MS = Number(page.pollMs) || 1500;

  // Every endpoint the page calls: [sandbox, path, HTTP method].
  // tests/sandbox/test_web_page.py checks each one exists.
  const ENDPOINTS = {
    deliver: ["telegram", "/_deliver", "POST"],
    sent: ["telegram", "/_sent", "GET"],
    deliveries: ["telegram", "/_deliveries", "GET"],
    crmState: ["hubspot", "/_state", "GET"],
    crmReply: ["hubspot", "/_reply", "POST"],
  };

  async function call(name, options) {
    const [sandbox, path, method] = ENDPOINTS[name];
    const opts = options || {};
    let url = BASES[sandbox] + path;
    if (opts.query) {
      url += "?" + new URLSearchParams(opts.query).toString();
    }
    const init = { method: method, headers: { Accept: "application/json" } };
    if (opts.json !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(opts.json);
    }
    const response = await fetch(url, init);
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

  function toMillis(value) {
    if (value === undefined || value === null || value === "") return 0;
    if (typeof value === "number") return value < 1e12 ? value * 1000 : value;
    if (/^\d+$/.test(String(value))) return toMillis(Number(value));
    const parsed = Date.parse(value);
    return Number.isNaN(parsed) ? 0 : parsed;
  }

  function clock(ms) {
    return ms ? new Date(ms).toLocaleTimeString() : "";
  }

  function htmlToText(html) {
    // DOMParser documents never run scripts; only the text is kept.
    if (!html) return "";
    return new DOMParser().parseFromString(String(html), "text/html").body.textContent || "";
  }

  function asList(value) {
    return Array.isArray(value) ? value : [];
  }

  // -- customer (Telegram) ------------------------------------------------------------

  const nameInput = document.getElementById("customer-name");
  const idInput = document.getElementById("customer-id");
  const transcript = document.getElementById("transcript");
  const customerStatus = document.getElementById("customer-status");

  function randomId() {
    return 100000000 + Math.floor(Math.random() * 800000000);
  }

  function loadIdentity() {
    let saved = null;
    try {
      saved = JSON.parse(localStorage.getItem("demo-customer") || "null");
    } catch (err) {
      saved = null;
    }
    nameInput.value = (saved && saved.name) || "Anna";
    idInput.value = (saved && saved.id) || randomId();
  }

  function saveIdentity() {
    localStorage.setItem("demo-customer",
      JSON.stringify({ name: nameInput.value, id: Number(idInput.value) }));
  }

  function customerId() {
    const id = Number(idInput.value);
    return Number.isInteger(id) && id > 0 ? id : null;
  }

  function renderTranscript(deliveries, sent) {
    const items = [];
    for (const d of deliveries) {
      if (d.attempt > 1) continue; // one line per update, not per retry
      const text = d.text || (d.kind === "message" ? "[media]" : "[" + d.kind + "]");
      const status = d.ok ? "bridge " + d.status : (d.error || "not delivered");
      items.push({ who: "customer", text: text, time: d.time * 1000, note: status });
    }
    for (const s of sent) {
      const media = s.message && (s.message.photo ? "[photo] " : s.message.document ? "[document] " : "");
      items.push({ who: "bot", text: (media || "") + (s.text || s.caption || ""), time: s.time * 1000,
                   note: s.method });
    }
    items.sort((a, b) => a.time - b.time);
    const nodes = items.map((item) => {
      const li = el("li", "bubble " + item.who);
      li.appendChild(el("span", "text", item.text));
      li.appendChild(el("span", "meta", clock(item.time) + " · " + item.note));
      return li;
    });
    transcript.replaceChildren(...nodes);
    transcript.scrollTop = transcript.scrollHeight;
  }

  async function pollTelegram() {
    const id = customerId();
    if (!id) return;
    const query = { chat_id: String(id) };
    const [deliveries, sent] = await Promise.all([
      call("deliveries", { query: query }), call("sent", { query: query }),
    ]);
    renderTranscript(asList(deliveries.data && deliveries.data.deliveries),
                     asList(sent.data && sent.data.sent));
  }

  async function sendCustomerMessage(event) {
    event.preventDefault();
    const textBox = document.getElementById("customer-text");
    const id = customerId();
    if (!id || !textBox.value.trim()) return;
    saveIdentity();
    customerStatus.textContent = "Sending… / Отправка…";
    const result = await call("deliver", {
      json: { from: { id: id, first_name: nameInput.value || "Customer" }, text: textBox.value },
    });
    if (result.status === 200 && result.data) {
      const d = result.data;
      customerStatus.textContent = d.delivered
        ? "Delivered, the bridge answered " + d.status + " / Доставлено, мост ответил " + d.status
        : "Not delivered / Не доставлено: " + (d.error || ("HTTP " + d.status));
      textBox.value = "";
    } else if (result.status === 409) {
      customerStatus.textContent = "The bridge has not set its webhook yet / Мост ещё не установил вебхук";
    } else {
      customerStatus.textContent = "Error / Ошибка: " +
        ((result.data && result.data.message) || ("HTTP " + result.status));
    }
    pollTelegram().catch(() => {});
  }

  // -- rep (HubSpot) ------------------------------------------------------------------

  const contactsList = document.getElementById("contacts");
  const dealsList = document.getElementById("deals");
  const ticketsList = document.getElementById("tickets");
  const timeline = document.getElementById("timeline");
  const timelineContact = document.getElementById("timeline-contact");
  const replyStatus = document.getElementById("reply-status");
  const crmStatus = document.getElementById("crm-status");
  let selectedContact = null;

  function props(record) {
    return (record && record.properties) || {};
  }

  function contactLabel(contact) {
    const p = props(contact);
    const name = [p.firstname, p.lastname].filter(Boolean).join(" ");
    return name || p.email || p.phone || p.telegram_username || ("Contact " + contact.id);
  }

  function renderRecords(list, records, label, selectable) {
    const nodes = records.map((record) => {
      const li = el("li", "record", label(record));
      if (selectable) {
        li.tabIndex = 0;
        if (String(record.id) === String(selectedContact)) li.classList.add("selected");
        const choose = () => { selectedContact = String(record.id); pollHubspot().catch(() => {}); };
        li.addEventListener("click", choose);
        li.addEventListener("keydown", (e) => { if (e.key === "Enter") choose(); });
      }
      return li;
    });
    if (!nodes.length) nodes.push(el("li", "empty", "— none / нет —"));
    list.replaceChildren(...nodes);
  }

  // The HubSpot sandbox answers {"portals": [{contacts, deals, ..., associations, threads}]};
  // a flat {contacts, deals, ...} works too. Association keys may be snake or camel case.
  function crmView(data) {
    const portals = Array.isArray(data.portals) ? data.portals : [data];
    const view = { contacts: [], deals: [], tickets: [], notes: [], associations: [], threads: [] };
    for (const portal of portals) {
      for (const key of Object.keys(view)) view[key] = view[key].concat(asList(portal && portal[key]));
    }
    view.associations = view.associations.map((a) => ({
      from_type: a.from_type || a.fromObjectType, from_id: a.from_id ?? a.fromId,
      to_type: a.to_type || a.toObjectType, to_id: a.to_id ?? a.toId,
    }));
    return view;
  }

  function linked(associations, typeWord, contactId) {
    const ids = new Set();
    for (const a of associations) {
      const from = String(a.from_type || ""), to = String(a.to_type || "");
      if (from.includes(typeWord) && to.includes("contact") && String(a.to_id) === contactId) {
        ids.add(String(a.from_id));
      } else if (to.includes(typeWord) && from.includes("contact") && String(a.from_id) === contactId) {
        ids.add(String(a.to_id));
      }
    }
    return ids;
  }

  function timelineItems(state, contactId) {
    const associations = asList(state.associations);
    const items = [];
    const noteIds = linked(associations, "note", contactId);
    for (const note of asList(state.notes)) {
      if (!noteIds.has(String(note.id))) continue;
      const p = props(note);
      items.push({ kind: "note", text: htmlToText(p.hs_note_body),
                   time: toMillis(p.hs_timestamp || note.createdAt) });
    }
    const threadIds = linked(associations, "thread", contactId);
    for (const thread of asList(state.threads)) {
      const owner = thread.contact_id || thread.contactId || thread.associatedContactId;
      if (!threadIds.has(String(thread.id)) && String(owner) !== contactId) continue;
      for (const m of asList(thread.messages)) {
        items.push({ kind: String(m.direction || "message").toLowerCase(), text: m.text || htmlToText(m.richText),
                     time: toMillis(m.createdAt || m.timestamp) });
      }
    }
    items.sort((a, b) => a.time - b.time);
    return items;
  }

  function renderTimeline(state) {
    const contact = asList(state.contacts).find((c) => String(c.id) === selectedContact);
    timelineContact.textContent = contact ? contactLabel(contact) : "—";
    if (!contact) {
      timeline.replaceChildren(el("li", "empty", "Pick a contact / Выберите контакт"));
      return;
    }
    const nodes = timelineItems(state, selectedContact).map((item) => {
      const li = el("li", "entry " + item.kind);
      li.appendChild(el("span", "meta", clock(item.time) + " · " + item.kind));
      li.appendChild(el("span", "text", item.text));
      return li;
    });
    if (!nodes.length) nodes.push(el("li", "empty", "Nothing yet / Пока пусто"));
    timeline.replaceChildren(...nodes);
  }

  async function pollHubspot() {
    const result = await call("crmState");
    if (result.status !== 200 || !result.data) {
      crmStatus.textContent = "HubSpot sandbox: HTTP " + result.status;
      return;
    }
    crmStatus.textContent = "";
    const state = crmView(result.data);
    const contacts = asList(state.contacts);
    if (!selectedContact && contacts.length) selectedContact = String(contacts[contacts.length - 1].id);
    renderRecords(contactsList, contacts, contactLabel, true);
    renderRecords(dealsList, asList(state.deals),
      (d) => (props(d).dealname || ("Deal " + d.id)) + (props(d).dealstage ? " · " + props(d).dealstage : ""), false);
    renderRecords(ticketsList, asList(state.tickets),
      (t) => (props(t).subject || ("Ticket " + t.id)) +
             (props(t).hs_pipeline_stage ? " · " + props(t).hs_pipeline_stage : ""), false);
    renderTimeline(state);
  }

  async function sendReply(event) {
    event.preventDefault();
    const textBox = document.getElementById("reply-text");
    if (!selectedContact || !textBox.value.trim()) {
      replyStatus.textContent = "Pick a contact first / Сначала выберите контакт";
      return;
    }
    replyStatus.textContent = "Sending… / Отправка…";
    const result = await call("crmReply", { json: { contact_id: selectedContact, text: textBox.value } });
    const d = result.data || {};
    const webhook = d.webhook || {};
    const webhookStatus = d.webhook_status ?? webhook.status ?? d.status ??
      (webhook.error || d.message || "—");
    replyStatus.textContent = "HTTP " + result.status + " · webhook status / статус вебхука: " +
      (typeof webhookStatus === "object" ? JSON.stringify(webhookStatus) : webhookStatus);
    if (result.status >= 200 && result.status < 300) textBox.value = "";
    pollHubspot().catch(() => {});
  }

  // -- wiring -------------------------------------------------------------------------

  function loop(task) {
    const run = () => {
      task().catch(() => {}).finally(() => setTimeout(run, POLL_MS));
    };
    run();
  }

  loadIdentity();
  document.getElementById("customer-form").addEventListener("submit", sendCustomerMessage);
  document.getElementById("reply-form").addEventListener("submit", sendReply);
  document.getElementById("customer-new").addEventListener("click", () => {
    idInput.value = randomId();
    saveIdentity();
    pollTelegram().catch(() => {});
  });
  idInput.addEventListener("change", saveIdentity);
  nameInput.addEventListener("change", saveIdentity);
  loop(pollTelegram);
  loop(pollHubspot);
})();
