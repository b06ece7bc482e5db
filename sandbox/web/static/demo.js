// Demo page: customer in Telegram (left) <-> rep in the CRM (right): HubSpot or amoCRM,
// whichever the page was rendered for (<body data-crm>).
// All text goes into the DOM through textContent; nothing user-supplied is parsed as page HTML.
"use strict";

(function () {
  const page = document.body.dataset;
  const CRM = page.crm === "amocrm" ? "amocrm" : "hubspot";
  const BASES = { telegram: page.telegramBase, hubspot: page.hubspotBase, amocrm: page.amocrmBase };
  const AMO_SUBDOMAIN = page.amocrmSubdomain || "demo";
  const POLL_MS = Number(page.pollMs) || 1500;

  // Every endpoint the page calls: [sandbox, path, HTTP method]. The page only calls
  // the Telegram ones and those of its CRM (call() refuses the others).
  // tests/sandbox/test_web_page.py checks each one exists.
  const ENDPOINTS = {
    deliver: ["telegram", "/_deliver", "POST"],
    sent: ["telegram", "/_sent", "GET"],
    deliveries: ["telegram", "/_deliveries", "GET"],
    crmState: ["hubspot", "/_state", "GET"],
    crmReply: ["hubspot", "/_reply", "POST"],
    amoState: ["amocrm", "/_state", "GET"],
    amoChatReply: ["amocrm", "/_chat_reply", "POST"],
    amoNote: ["amocrm", "/_note", "POST"],
    amoLeadStatus: ["amocrm", "/_lead_status", "POST"],
  };

  async function call(name, options) {
    const [sandbox, path, method] = ENDPOINTS[name];
    if (sandbox !== "telegram" && sandbox !== CRM) {
      throw new Error("endpoint " + name + " is not for the " + CRM + " page");
    }
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

  // -- manager (amoCRM) ---------------------------------------------------------------
  // The amoCRM sandbox answers GET /_state?subdomain= with {"accounts": [{users, pipelines,
  // contacts, leads, notes, chats, ...}]}; the page shows the first (the configured) account.

  const leadsList = document.getElementById("leads");
  const leadStatus = document.getElementById("lead-status");
  const WON = 142;
  const LOST = 143;
  const REPLY_MARKER = "@client";
  let amoAccount = null; // the last account read, for the note reply's open lead

  function bilingual(node, en, ru) {
    node.appendChild(document.createTextNode(en + " "));
    node.appendChild(el("span", "ru", "/ " + ru));
    return node;
  }

  // Re-render a list only when what it shows changed: a click on a lead button or a
  // contact is not lost to a refresh that would change nothing.
  function renderList(list, model, build, emptyText) {
    const sig = JSON.stringify([emptyText, model]);
    if (list.dataset.sig === sig) return false;
    list.dataset.sig = sig;
    const nodes = model.map(build);
    if (!nodes.length) nodes.push(el("li", "empty", emptyText));
    list.replaceChildren(...nodes);
    return true;
  }

  function userName(users, id) {
    if (!id) return "robot / робот";
    const user = users.get(String(id));
    return user ? (user.name || ("user " + id)) : ("user " + id);
  }

  function fieldText(field) {
    const values = asList(field && field.values).map((v) => v && v.value)
      .filter((v) => v !== undefined && v !== null && v !== "");
    if (!values.length) return "";
    return (field.field_name || field.field_code || ("field " + field.field_id)) + ": " +
      values.join(", ");
  }

  function amoContactLabel(contact) {
    const name = contact.name || [contact.first_name, contact.last_name].filter(Boolean).join(" ");
    return name || ("Contact / Контакт " + contact.id);
  }

  function isOpen(lead) {
    return !lead.is_deleted && Number(lead.status_id) !== WON && Number(lead.status_id) !== LOST;
  }

  function hasContact(lead, contactId) {
    return asList(lead.contacts).some((c) => c && String(c.id) === contactId);
  }

  function stageName(account, lead) {
    const pipes = asList(account.pipelines);
    const own = pipes.filter((p) => String(p.id) === String(lead.pipeline_id));
    for (const pipe of own.concat(pipes)) {
      const status = asList(pipe.statuses).find((s) => String(s.id) === String(lead.status_id));
      if (status) return status.name + " (" + (pipe.name || ("pipeline " + pipe.id)) + ")";
    }
    return "status " + lead.status_id;
  }

  // Where a notes-mode reply goes: the contact's most recently updated open lead
  // (the one the sandbox's chat routing picks too).
  function openLead(account, contactId) {
    let best = null;
    for (const lead of asList(account && account.leads)) {
      if (!isOpen(lead) || !hasContact(lead, contactId)) continue;
      if (!best || (lead.updated_at || 0) >= (best.updated_at || 0)) best = lead;
    }
    return best;
  }

  function webhooksText(list) {
    const hooks = asList(list);
    if (!hooks.length) return "no account webhooks / вебхуков аккаунта нет";
    return "webhooks / вебхуки: " + hooks.map((h) => (h.ok ? String(h.status)
      : String(h.status || "—") + (h.error ? " " + String(h.error).slice(0, 120) : ""))).join(", ");
  }

  function chooseContact(id) {
    selectedContact = String(id);
    pollAmo().catch(() => {});
  }

  function renderAmoContacts(account) {
    const model = asList(account.contacts).filter((c) => !c.is_deleted).map((c) => ({
      id: String(c.id), label: amoContactLabel(c), selected: String(c.id) === selectedContact,
      details: asList(c.custom_fields_values).map(fieldText).filter(Boolean).join(" · "),
    }));
    renderList(contactsList, model, (item) => {
      const li = el("li", "record" + (item.selected ? " selected" : ""));
      li.tabIndex = 0;
      li.appendChild(el("span", "text", item.label));
      if (item.details) li.appendChild(el("span", "meta", item.details));
      li.addEventListener("click", () => chooseContact(item.id));
      li.addEventListener("keydown", (e) => { if (e.key === "Enter") chooseContact(item.id); });
      return li;
    }, "— none / нет —");
  }

  async function setLeadStatus(leadId, statusId, actions) {
    const buttons = Array.from(actions.querySelectorAll("button"));
    for (const b of buttons) b.disabled = true;
    leadStatus.textContent = "Sending… / Отправка…";
    try {
      const result = await call("amoLeadStatus", { json: { lead_id: leadId, status_id: statusId } });
      const d = result.data || {};
      const word = statusId === WON ? "won / успешно" : "lost / не реализовано";
      leadStatus.textContent = result.status === 200
        ? "Lead / Сделка #" + leadId + ": " + word + " · " + webhooksText(d.webhooks)
        : "Error / Ошибка: " + (d.message || ("HTTP " + result.status));
    } catch (err) {
      leadStatus.textContent = "Error / Ошибка: " + err.message;
    } finally {
      for (const b of buttons) b.disabled = false; // gone from the page once the lead closed
    }
    pollAmo().catch(() => {});
  }

  function renderAmoLeads(account) {
    const users = new Map(asList(account.users).map((u) => [String(u.id), u]));
    const model = asList(account.leads).filter((lead) => !lead.is_deleted).map((lead) => ({
      id: lead.id, open: isOpen(lead), mine: !!selectedContact && hasContact(lead, selectedContact),
      label: "#" + lead.id + " " + (lead.name || "") + " · " + stageName(account, lead) + " · " +
        userName(users, lead.responsible_user_id),
    }));
    renderList(leadsList, model, (item) => {
      const li = el("li", "record lead" + (item.open ? "" : " closed") + (item.mine ? " mine" : ""));
      li.appendChild(el("span", "text", item.label));
      if (item.open) {
        const actions = el("span", "lead-actions");
        const won = bilingual(el("button", "small won"), "Won", "Успешно");
        const lost = bilingual(el("button", "small lost"), "Lost", "Не реализовано");
        won.type = lost.type = "button";
        won.addEventListener("click", () => setLeadStatus(item.id, WON, actions));
        lost.addEventListener("click", () => setLeadStatus(item.id, LOST, actions));
        actions.append(won, lost);
        li.appendChild(actions);
      }
      return li;
    }, "— none / нет —");
  }

  function noteText(note) {
    const params = note.params || {};
    if (params.text) return String(params.text);
    return "[" + (note.note_type || "note") + "]";
  }

  function amoTimelineItems(account, contact) {
    const contactId = String(contact.id);
    const users = new Map(asList(account.users).map((u) => [String(u.id), u]));
    const leadIds = new Set(asList(contact.leads).map(String));
    for (const lead of asList(account.leads)) {
      if (hasContact(lead, contactId)) leadIds.add(String(lead.id));
    }
    const items = [];
    for (const note of asList(account.notes)) {
      const onContact = note.entity_type === "contacts" && String(note.entity_id) === contactId;
      const onLead = note.entity_type === "leads" && leadIds.has(String(note.entity_id));
      if (!onContact && !onLead) continue;
      const service = note.params && note.params.service ? " · " + note.params.service : "";
      items.push({ kind: "note", time: toMillis(note.created_at), text: noteText(note),
                   who: "note / заметка" + (onLead ? " · lead #" + note.entity_id : "") + service +
                        " · " + userName(users, note.created_by) });
    }
    for (const chat of asList(account.chats)) {
      if (String(chat.contact_id) !== contactId) continue;
      const client = (chat.client && chat.client.name) || "customer / клиент";
      for (const m of asList(chat.messages)) {
        const incoming = m.direction === "in";
        const sender = incoming ? client : ((m.sender && m.sender.name) || "manager / менеджер");
        items.push({ kind: incoming ? "incoming" : "outgoing", time: toMillis(m.timestamp),
                     text: m.text || ("[" + (m.type || "message") + "]"),
                     who: "chat / чат · " + sender });
      }
    }
    items.sort((a, b) => a.time - b.time);
    return items;
  }

  function renderAmoTimeline(account) {
    const contact = asList(account.contacts).find((c) => !c.is_deleted && String(c.id) === selectedContact);
    timelineContact.textContent = contact ? amoContactLabel(contact) : "—";
    const model = contact ? amoTimelineItems(account, contact) : null;
    const changed = renderList(timeline, model || [], (item) => {
      const li = el("li", "entry " + item.kind);
      li.appendChild(el("span", "meta", clock(item.time) + " · " + item.who));
      li.appendChild(el("span", "text", item.text));
      return li;
    }, contact ? "Nothing yet / Пока пусто" : "Pick a contact / Выберите контакт");
    if (changed) timeline.scrollTop = timeline.scrollHeight;
  }

  async function pollAmo() {
    const result = await call("amoState", { query: { subdomain: AMO_SUBDOMAIN } });
    const d = result.data || {};
    const account = result.status === 200 ? asList(d.accounts)[0] : null;
    if (!account) {
      crmStatus.textContent = "amoCRM sandbox / песочница amoCRM (" + AMO_SUBDOMAIN + "): " +
        (d.message || ("HTTP " + result.status));
      return;
    }
    crmStatus.textContent = "";
    amoAccount = account;
    const contacts = asList(account.contacts).filter((c) => !c.is_deleted);
    if (contacts.length && !contacts.some((c) => String(c.id) === selectedContact)) {
      selectedContact = String(contacts[contacts.length - 1].id);
    }
    renderAmoContacts(account);
    renderAmoLeads(account);
    renderAmoTimeline(account);
  }

  function withMarker(text) {
    const trimmed = text.replace(/^\s+/, "");
    return /^@(client|клиент)(?![\p{L}\p{N}])/iu.test(trimmed) ? trimmed : REPLY_MARKER + " " + trimmed;
  }

  async function sendAmoReply(event) {
    event.preventDefault();
    const textBox = document.getElementById("reply-text");
    if (!selectedContact || !textBox.value.trim()) {
      replyStatus.textContent = "Pick a contact first / Сначала выберите контакт";
      return;
    }
    const checked = document.querySelector('input[name="reply-mode"]:checked');
    const mode = checked ? checked.value : "chat";
    let result;
    if (mode === "note") {
      const lead = openLead(amoAccount, selectedContact);
      if (!lead) {
        replyStatus.textContent = "This contact has no open lead / У контакта нет открытой сделки";
        return;
      }
      replyStatus.textContent = "Sending… / Отправка…";
      result = await call("amoNote", { json: { lead_id: lead.id, text: withMarker(textBox.value) } });
      const d = result.data || {};
      replyStatus.textContent = "HTTP " + result.status + " · " + (result.status === 200
        ? "note on lead / заметка в сделке #" + lead.id + " · " + webhooksText(d.webhooks)
        : (d.message || "—"));
    } else {
      replyStatus.textContent = "Sending… / Отправка…";
      result = await call("amoChatReply", {
        json: { contact_id: Number(selectedContact), text: textBox.value, subdomain: AMO_SUBDOMAIN },
      });
      const d = result.data || {};
      const webhook = d.webhook || {};
      if (result.status === 404 && d.error === "chat_not_found") {
        replyStatus.textContent = "HTTP 404 · this contact has no amoCRM chat: reply as a note / " +
          "у контакта нет чата amoCRM: ответьте заметкой";
      } else {
        replyStatus.textContent = "HTTP " + result.status + " · webhook status / статус вебхука: " +
          (webhook.status ?? webhook.error ?? d.message ?? "—");
      }
    }
    if (result.status >= 200 && result.status < 300) textBox.value = "";
    pollAmo().catch(() => {});
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
  document.getElementById("reply-form").addEventListener("submit",
    CRM === "amocrm" ? sendAmoReply : sendReply);
  document.getElementById("customer-new").addEventListener("click", () => {
    idInput.value = randomId();
    saveIdentity();
    pollTelegram().catch(() => {});
  });
  idInput.addEventListener("change", saveIdentity);
  nameInput.addEventListener("change", saveIdentity);
  loop(pollTelegram);
  loop(CRM === "amocrm" ? pollAmo : pollHubspot);
})();
