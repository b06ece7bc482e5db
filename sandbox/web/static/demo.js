// Demo page: customer in Telegram (left) <-> rep in the CRM (right): HubSpot, amoCRM or
// Bitrix24, whichever the page was rendered for (<body data-crm>).
// All text goes into the DOM through textContent; nothing user-supplied is parsed as page HTML.
"use strict";

(function () {
  const page = document.body.dataset;
  const CRM = page.crm === "amocrm" || page.crm === "bitrix24" ? page.crm : "hubspot";
  const BASES = { telegram: page.telegramBase, hubspot: page.hubspotBase, amocrm: page.amocrmBase,
                  bitrix24: page.bitrix24Base };
  const AMO_SUBDOMAIN = page.amocrmSubdomain || "demo";
  const B24_PORTAL = page.bitrix24Portal || "demo.bitrix24.ru";
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
    b24State: ["bitrix24", "/_state", "GET"],
    b24OperatorReply: ["bitrix24", "/_operator_reply", "POST"],
    b24LeadStatus: ["bitrix24", "/_lead_status", "POST"],
    b24DealStage: ["bitrix24", "/_deal_stage", "POST"],
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

  // -- operator (Bitrix24) ------------------------------------------------------------
  // The Bitrix24 sandbox answers GET /_state?portal= with {"portals": [{users, statuses,
  // deal_categories, open_lines, contacts, leads, deals, chats, ...}]}; each record is
  // {id, fields, multifields, links, timeline: {comments, activities}}, each Open Lines
  // chat {id, connector, line, external_chat_id, external_user_id, user, crm, messages}.
  // The page shows the first (the configured) portal.

  const LEAD_CONVERTED = "CONVERTED";
  const LEAD_JUNK = "JUNK";
  const CRM_ONLY = "Replies go through Open Lines; this contact has none (CRM-only mode) / " +
    "Ответы идут через Открытые линии; у этого контакта их нет (режим «только CRM»)";
  const openlinesChat = document.getElementById("openlines-chat");
  let b24Portal = null; // the last portal read, for the reply's Open Lines chat

  function fieldsOf(record) {
    return (record && record.fields) || {};
  }

  function present(value) {
    return value !== undefined && value !== null && value !== "";
  }

  // Operator messages and timeline comments are BB-code: keep the text, drop the tags
  // (the result goes to textContent like everything else).
  const SIGNATURE = /^\s*\[b\]\s*[^\[\]\n]{1,120}?\s*:\s*\[\/b\][ \t]*(?:\[br\s*\/?\]|\n)?[ \t]*/i;

  function bbToText(text) {
    return String(text || "")
      .replace(/\[br\s*\/?\]/gi, "\n")
      .replace(/\[url=([^\]]+)\]([\s\S]*?)\[\/url\]/gi, "$2 ($1)")
      .replace(/\[\/?(b|i|u|s|url|code|quote|color|size|font|left|right|center|justify|img|user|chat|send|put|context|call|dialog)(=[^\]]*)?\]/gi, "");
  }

  function b24Users(portal) {
    return new Map(asList(portal.users).map((u) => [String(u.ID), u]));
  }

  function b24UserName(users, id) {
    if (!present(id)) return "—";
    const user = users.get(String(id));
    const name = user ? [user.NAME, user.LAST_NAME].filter(Boolean).join(" ") : "";
    return name || ("user " + id);
  }

  function b24ContactLabel(contact) {
    const f = fieldsOf(contact);
    const name = [f.NAME, f.SECOND_NAME, f.LAST_NAME].filter(Boolean).join(" ");
    return name || ("Contact / Контакт " + contact.id);
  }

  function multi(record, type) {
    return asList(record && record.multifields && record.multifields[type])
      .filter((m) => m && present(m.VALUE));
  }

  function imText(m) {
    const type = String(m.VALUE_TYPE || "IM");
    if (type === "OPENLINE" || type === "IMOL") return "Open Lines / Открытые линии";
    return type.charAt(0) + type.slice(1).toLowerCase() + ": " + m.VALUE;
  }

  // Semantics of a status / stage row: "P" in process, "S" success, "F" failure.
  function semantic(row) {
    if (!row) return null;
    if (row.SEMANTICS === "S" || row.SEMANTICS === "F") return row.SEMANTICS;
    const extra = row.EXTRA && row.EXTRA.SEMANTICS;
    if (extra === "success") return "S";
    if (extra === "failure" || extra === "apology") return "F";
    return "P";
  }

  function statusRows(portal, entityId) {
    return asList(portal.statuses).filter((s) => s.ENTITY_ID === entityId)
      .sort((a, b) => Number(a.SORT || 0) - Number(b.SORT || 0));
  }

  // crm-deal-add.md: the general pipeline's stages are DEAL_STAGE, pipeline N's DEAL_STAGE_N
  function stageEntity(categoryId) {
    const id = Number(categoryId || 0);
    return id ? "DEAL_STAGE_" + id : "DEAL_STAGE";
  }

  function categoryName(portal, categoryId) {
    const id = String(categoryId || 0);
    const category = asList(portal.deal_categories).find((c) => String(c.id) === id);
    return (category && category.name) || ("pipeline " + id);
  }

  function leadState(portal, lead) {
    const f = fieldsOf(lead);
    const row = statusRows(portal, "STATUS").find((s) => s.STATUS_ID === f.STATUS_ID);
    return { name: row ? row.NAME : ("status " + f.STATUS_ID),
             semantic: semantic(row) || f.STATUS_SEMANTIC_ID || "P" };
  }

  function dealState(portal, deal) {
    const f = fieldsOf(deal);
    const row = statusRows(portal, stageEntity(f.CATEGORY_ID)).find((s) => s.STATUS_ID === f.STAGE_ID);
    return { name: (row ? row.NAME : ("stage " + f.STAGE_ID)) + " (" + categoryName(portal, f.CATEGORY_ID) + ")",
             semantic: semantic(row) || f.STAGE_SEMANTIC_ID || (f.CLOSED === "Y" ? "F" : "P") };
  }

  // Where Won / Lost take a deal: the stage of its pipeline with success semantics and the
  // first with failure semantics (a plain "failure" before an "apology" one).
  function closingStages(portal, deal) {
    const rows = statusRows(portal, stageEntity(fieldsOf(deal).CATEGORY_ID));
    const won = rows.find((s) => semantic(s) === "S");
    const failures = rows.filter((s) => semantic(s) === "F");
    const lost = failures.find((s) => !(s.EXTRA && s.EXTRA.SEMANTICS === "apology")) || failures[0];
    return { won: won ? won.STATUS_ID : null, lost: lost ? lost.STATUS_ID : null };
  }

  // CONTACT_ID, or CONTACT_IDS (a deal's contacts; the sandbox keeps them under links)
  function contactIdsOf(record) {
    const f = fieldsOf(record);
    const links = (record && record.links) || {};
    const ids = [f.CONTACT_ID].concat(asList(f.CONTACT_IDS), asList(links.CONTACT_IDS));
    return new Set(ids.filter((v) => present(v) && String(v) !== "0").map(String));
  }

  function imolAddress(chat) {
    return ["imol", chat.connector, chat.line, chat.external_chat_id, chat.user].join("|");
  }

  // The contact's Open Lines chats: linked by Bitrix24's CRM tracker (the chat's record is
  // the contact or one of its leads / deals), or by one of the contact's IM values: the
  // chat's imol| address, or the customer's id on the channel, which the bridge keeps in IM
  // ("TELEGRAM": "<id>", "OTHER": "<kind>:<id>") and sends as the connector's user.id.
  function contactChats(portal, contact, leadIds, dealIds) {
    const contactId = String(contact.id);
    const values = multi(contact, "IM").map((m) => String(m.VALUE));
    return asList(portal.chats).filter((chat) => {
      const crm = chat.crm || {};
      if (crm.entity === "contact" && String(crm.id) === contactId) return true;
      if (crm.entity === "lead" && leadIds.has(String(crm.id))) return true;
      if (crm.entity === "deal" && dealIds.has(String(crm.id))) return true;
      if (values.includes(imolAddress(chat))) return true;
      const user = String(chat.external_user_id || "");
      return !chat.group && user !== "" && values.some((v) => v === user || v.endsWith(":" + user));
    });
  }

  // The selected contact with its leads, deals and Open Lines chats.
  function contactView(portal, contact) {
    const id = String(contact.id);
    const leadIds = new Set(asList(portal.leads).filter((l) => contactIdsOf(l).has(id)).map((l) => String(l.id)));
    const dealIds = new Set(asList(portal.deals).filter((d) => contactIdsOf(d).has(id)).map((d) => String(d.id)));
    const chats = contactChats(portal, contact, leadIds, dealIds);
    for (const chat of chats) { // a lead the tracker opened for the contact's chat is the contact's too
      if (chat.crm && chat.crm.entity === "lead") leadIds.add(String(chat.crm.id));
    }
    return { contact: contact, leadIds: leadIds, dealIds: dealIds, chats: chats };
  }

  function lastActivity(chat) {
    const messages = asList(chat.messages);
    return messages.length ? toMillis(messages[messages.length - 1].date) : toMillis(chat.created);
  }

  // Where a reply goes: the contact's chat with the latest message.
  function replyChat(view) {
    let best = null;
    for (const chat of view ? view.chats : []) {
      if (!best || lastActivity(chat) > lastActivity(best) ||
          (lastActivity(chat) === lastActivity(best) && Number(chat.id) > Number(best.id))) best = chat;
    }
    return best;
  }

  function eventsText(deliveries) {
    const list = asList(deliveries);
    if (!list.length) return "no event handlers / обработчиков событий нет";
    return "events / события: " + list.map((d) => String(d.event || "") + " " + (d.status ?? "—") +
      (d.error ? " " + String(d.error).slice(0, 120) : "")).join(", ");
  }

  function chooseB24Contact(id) {
    selectedContact = String(id);
    pollB24().catch(() => {});
  }

  function renderB24Contacts(portal) {
    const users = b24Users(portal);
    const model = asList(portal.contacts).map((c) => ({
      id: String(c.id), label: b24ContactLabel(c), selected: String(c.id) === selectedContact,
      details: multi(c, "PHONE").concat(multi(c, "EMAIL")).map((m) => m.VALUE)
        .concat(multi(c, "IM").map(imText),
                ["responsible / ответственный: " + b24UserName(users, fieldsOf(c).ASSIGNED_BY_ID)])
        .join(" · "),
    }));
    renderList(contactsList, model, (item) => {
      const li = el("li", "record" + (item.selected ? " selected" : ""));
      li.tabIndex = 0;
      li.appendChild(el("span", "text", item.label));
      if (item.details) li.appendChild(el("span", "meta", item.details));
      li.addEventListener("click", () => chooseB24Contact(item.id));
      li.addEventListener("keydown", (e) => { if (e.key === "Enter") chooseB24Contact(item.id); });
      return li;
    }, "— none / нет —");
  }

  async function setB24Status(kind, recordId, statusId, word, actions) {
    const buttons = Array.from(actions.querySelectorAll("button"));
    for (const b of buttons) b.disabled = true;
    leadStatus.textContent = "Sending… / Отправка…";
    try {
      const result = kind === "lead"
        ? await call("b24LeadStatus", { json: { portal: B24_PORTAL, lead_id: Number(recordId), status_id: statusId } })
        : await call("b24DealStage", { json: { portal: B24_PORTAL, deal_id: Number(recordId), stage_id: statusId } });
      const d = result.data || {};
      leadStatus.textContent = result.status === 200
        ? (kind === "lead" ? "Lead / Лид #" : "Deal / Сделка #") + recordId + ": " + word + " (" +
          statusId + ") · " + eventsText(d.deliveries)
        : "Error / Ошибка: " + (d.message || ("HTTP " + result.status));
    } catch (err) {
      leadStatus.textContent = "Error / Ошибка: " + err.message;
    } finally {
      for (const b of buttons) b.disabled = false; // gone from the page once the record closed
    }
    pollB24().catch(() => {});
  }

  function actionButton(className, en, ru, onClick) {
    const button = bilingual(el("button", "small " + className), en, ru);
    button.type = "button";
    button.addEventListener("click", onClick);
    return button;
  }

  function renderB24Leads(portal, view) {
    const users = b24Users(portal);
    const model = asList(portal.leads).map((lead) => {
      const f = fieldsOf(lead);
      const state = leadState(portal, lead);
      return { id: String(lead.id), open: state.semantic === "P", mine: !!view && view.leadIds.has(String(lead.id)),
               label: "#" + lead.id + " " + (f.TITLE || "") + " · " + state.name + " · " +
                 b24UserName(users, f.ASSIGNED_BY_ID) };
    });
    renderList(leadsList, model, (item) => {
      const li = el("li", "record lead" + (item.open ? "" : " closed") + (item.mine ? " mine" : ""));
      li.appendChild(el("span", "text", item.label));
      if (item.open) {
        const actions = el("span", "lead-actions");
        actions.append(
          actionButton("won", "Converted", "Сконвертирован", () => setB24Status(
            "lead", item.id, LEAD_CONVERTED, "converted / сконвертирован", actions)),
          actionButton("lost", "Junk", "Некачественный", () => setB24Status(
            "lead", item.id, LEAD_JUNK, "junk / некачественный", actions)));
        li.appendChild(actions);
      }
      return li;
    }, "— none / нет —");
  }

  function renderB24Deals(portal, view) {
    const users = b24Users(portal);
    const model = asList(portal.deals).map((deal) => {
      const f = fieldsOf(deal);
      const state = dealState(portal, deal);
      const open = state.semantic === "P";
      return { id: String(deal.id), open: open, mine: !!view && view.dealIds.has(String(deal.id)),
               stages: open ? closingStages(portal, deal) : {},
               label: "#" + deal.id + " " + (f.TITLE || "") + " · " + state.name + " · " +
                 b24UserName(users, f.ASSIGNED_BY_ID) };
    });
    renderList(dealsList, model, (item) => {
      const li = el("li", "record deal" + (item.open ? "" : " closed") + (item.mine ? " mine" : ""));
      li.appendChild(el("span", "text", item.label));
      if (item.open && (item.stages.won || item.stages.lost)) {
        const actions = el("span", "lead-actions");
        if (item.stages.won) {
          actions.append(actionButton("won", "Won", "Успешна", () => setB24Status(
            "deal", item.id, item.stages.won, "won / успешна", actions)));
        }
        if (item.stages.lost) {
          actions.append(actionButton("lost", "Lost", "Провалена", () => setB24Status(
            "deal", item.id, item.stages.lost, "lost / провалена", actions)));
        }
        li.appendChild(actions);
      }
      return li;
    }, "— none / нет —");
  }

  function when(value) {
    const ms = toMillis(value);
    return ms ? new Date(ms).toLocaleString() : String(value);
  }

  function messageText(m) {
    // the operator's "[b]Name:[/b] [br]" signature: the name is in the entry's meta line
    const raw = String(m.text || "");
    const text = bbToText(m.direction === "in" ? raw : raw.replace(SIGNATURE, "")).trim();
    const files = asList(m.files).map((f) => "[file / файл: " + ((f && (f.name || f.url)) || "?") + "]");
    return [text].concat(files).filter(Boolean).join("\n") || "[message / сообщение]";
  }

  function messageFlags(m) {
    const flags = [];
    if (m.direction !== "in") {
      if (m.read) flags.push("read / прочитано");
      else if (m.delivered) flags.push("delivered / доставлено");
    }
    if (m.updated) flags.push("edited / изменено");
    if (m.deleted) flags.push("deleted / удалено");
    return flags.length ? " · " + flags.join(" · ") : "";
  }

  function b24TimelineItems(portal, view) {
    const users = b24Users(portal);
    const records = [["contact", view.contact]]
      .concat(asList(portal.leads).filter((l) => view.leadIds.has(String(l.id))).map((l) => ["lead", l]),
              asList(portal.deals).filter((d) => view.dealIds.has(String(d.id))).map((d) => ["deal", d]));
    const items = [];
    for (const [kind, record] of records) {
      const where = kind === "lead" ? " · lead / лид #" + record.id
        : kind === "deal" ? " · deal / сделка #" + record.id : "";
      const own = record.timeline || {};
      for (const c of asList(own.comments)) {
        items.push({ kind: "note", time: toMillis(c.CREATED), text: bbToText(c.COMMENT),
                     who: "comment / комментарий" + where + " · " + b24UserName(users, c.AUTHOR_ID) });
      }
      for (const a of asList(own.activities)) {
        items.push({ kind: "todo" + (a.completed ? " done" : ""), time: toMillis(a.created),
                     text: [a.title, a.description].filter(Boolean).join("\n") || "[to-do / дело]",
                     who: "to-do / дело" + where + " · " + b24UserName(users, a.responsibleId) +
                       (a.deadline ? " · due / срок " + when(a.deadline) : "") +
                       (a.completed ? " · done / выполнено" : "") });
      }
    }
    for (const chat of view.chats) {
      for (const m of asList(chat.messages)) {
        const incoming = m.direction === "in";
        items.push({ kind: incoming ? "incoming" : "outgoing", time: toMillis(m.date), text: messageText(m),
                     who: "Open Lines / Открытые линии · " +
                       (incoming ? "customer / клиент" : b24UserName(users, m.author)) + messageFlags(m) });
      }
    }
    items.sort((a, b) => a.time - b.time);
    return items;
  }

  function renderB24Timeline(portal, view) {
    timelineContact.textContent = view ? b24ContactLabel(view.contact) : "—";
    const model = view ? b24TimelineItems(portal, view) : [];
    const changed = renderList(timeline, model, (item) => {
      const li = el("li", "entry " + item.kind);
      li.appendChild(el("span", "meta", clock(item.time) + " · " + item.who));
      li.appendChild(el("span", "text", item.text));
      return li;
    }, view ? "Nothing yet / Пока пусто" : "Pick a contact / Выберите контакт");
    if (changed) timeline.scrollTop = timeline.scrollHeight;
  }

  function lineName(portal, lineId) {
    const line = asList(portal.open_lines).find((l) => String(l.ID) === String(lineId));
    return (line && line.LINE_NAME) || String(lineId);
  }

  // Which chat the reply box answers in; a contact without one is CRM-only.
  function renderOpenLinesChat(portal, view) {
    const chat = replyChat(view);
    const crmOnly = !!view && !chat;
    const text = !view ? "" : chat
      ? "Open Lines chat / чат Открытых линий: " + (chat.name || chat.external_chat_id) + " · " +
        lineName(portal, chat.line) + " · " + chat.connector
      : CRM_ONLY;
    if (openlinesChat.textContent !== text) openlinesChat.textContent = text;
    openlinesChat.classList.toggle("crm-only", crmOnly);
    for (const node of document.querySelectorAll("#reply-form textarea, #reply-form button")) {
      if (node.disabled !== crmOnly) node.disabled = crmOnly;
    }
  }

  async function pollB24() {
    const result = await call("b24State", { query: { portal: B24_PORTAL } });
    const d = result.data || {};
    const portal = result.status === 200 ? asList(d.portals)[0] : null;
    if (!portal) {
      crmStatus.textContent = "Bitrix24 sandbox / песочница Битрикс24 (" + B24_PORTAL + "): " +
        (d.message || ("HTTP " + result.status));
      return;
    }
    crmStatus.textContent = "";
    b24Portal = portal;
    const contacts = asList(portal.contacts);
    if (contacts.length && !contacts.some((c) => String(c.id) === selectedContact)) {
      selectedContact = String(contacts[contacts.length - 1].id);
    }
    const contact = contacts.find((c) => String(c.id) === selectedContact);
    const view = contact ? contactView(portal, contact) : null;
    renderB24Contacts(portal);
    renderB24Leads(portal, view);
    renderB24Deals(portal, view);
    renderB24Timeline(portal, view);
    renderOpenLinesChat(portal, view);
  }

  async function sendB24Reply(event) {
    event.preventDefault();
    const textBox = document.getElementById("reply-text");
    const contact = asList(b24Portal && b24Portal.contacts).find((c) => String(c.id) === selectedContact);
    if (!contact || !textBox.value.trim()) {
      replyStatus.textContent = "Pick a contact first / Сначала выберите контакт";
      return;
    }
    const chat = replyChat(contactView(b24Portal, contact));
    if (!chat) {
      replyStatus.textContent = CRM_ONLY;
      return;
    }
    replyStatus.textContent = "Sending… / Отправка…";
    const result = await call("b24OperatorReply", {
      json: { portal: B24_PORTAL, chat_id: chat.external_chat_id, connector: chat.connector,
              line: chat.line, text: textBox.value },
    });
    const d = result.data || {};
    if (result.status === 200) {
      const sent = d.message || {};
      const ev = d.event;
      replyStatus.textContent = "HTTP 200 · " + b24UserName(b24Users(b24Portal), sent.author) + " · " + (ev
        ? "OnImConnectorMessageAdd: " + (ev.status ?? String(ev.error || "—").slice(0, 120))
        : "no OnImConnectorMessageAdd handler / обработчика OnImConnectorMessageAdd нет");
      textBox.value = "";
    } else if (result.status === 409) {
      replyStatus.textContent = "HTTP 409 · the connector is not active on this line / " +
        "коннектор не активен на этой линии";
    } else {
      replyStatus.textContent = "HTTP " + result.status + " · " + (d.message || d.error || "—");
    }
    pollB24().catch(() => {});
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
  // crm -> [reply handler, poller] of the right panel
  const PANELS = {
    hubspot: [sendReply, pollHubspot], amocrm: [sendAmoReply, pollAmo], bitrix24: [sendB24Reply, pollB24],
  };
  document.getElementById("reply-form").addEventListener("submit", PANELS[CRM][0]);
  document.getElementById("customer-new").addEventListener("click", () => {
    idInput.value = randomId();
    saveIdentity();
    pollTelegram().catch(() => {});
  });
  idInput.addEventListener("change", saveIdentity);
  nameInput.addEventListener("change", saveIdentity);
  loop(pollTelegram);
  loop(PANELS[CRM][1]);
})();
