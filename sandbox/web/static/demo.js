// Demo page: customer in Telegram (left) <-> rep in the CRM (right): HubSpot, amoCRM or
// Bitrix24, whichever the page was rendered for (<body data-crm>). The e-mail client below them
// is email.js's; its poller runs on this file's timer (window.DEMO_PANELS).
// All text goes into the DOM through textContent; nothing user-supplied is parsed as page HTML
// (a HubSpot note body is parsed in an inert document and rebuilt from allowed tags: richText()).
"use strict";

(function () {
  const page = document.body.dataset;
  const CRM = page.crm === "amocrm" || page.crm === "bitrix24" ? page.crm : "hubspot";
  const BASES = { telegram: page.telegramBase, hubspot: page.hubspotBase, amocrm: page.amocrmBase,
                  bitrix24: page.bitrix24Base };
  const AMO_SUBDOMAIN = page.amocrmSubdomain || "demo";
  const B24_PORTAL = page.bitrix24Portal || "demo.bitrix24.ru";
  const POLL_MS = Number(page.pollMs) || 1500;
  // A poll with no answer in POLL_TIMEOUT_MS counts as the bridge being down (so does a refused
  // connection, at once): with the pause between polls, a hung server shows as down within 5 s.
  // A send waits longer: delivering runs the bridge's webhook.
  const POLL_TIMEOUT_MS = 3000;
  const SEND_TIMEOUT_MS = 15000;
  // While the bridge is down one probe request goes out per tick, 1 s, 2 s, 4 s, then every 5 s
  // (instead of every panel polling every POLL_MS).
  const OFFLINE_FIRST_MS = 1000;
  const OFFLINE_MAX_MS = 5000;

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
    amoReply: ["amocrm", "/_reply", "POST"],
    amoNote: ["amocrm", "/_note", "POST"],
    amoLeadStatus: ["amocrm", "/_lead_status", "POST"],
    b24State: ["bitrix24", "/_state", "GET"],
    b24Reply: ["bitrix24", "/_reply", "POST"],
    b24LeadStatus: ["bitrix24", "/_lead_status", "POST"],
    b24DealStage: ["bitrix24", "/_deal_stage", "POST"],
  };

  // -- the link to the bridge ---------------------------------------------------------

  // Raised by call() when no answer came: refused connection, network error or timeout.
  class BridgeDown extends Error {}

  const offlineBanner = document.getElementById("offline-banner");
  const link = { online: true, misses: 0 };

  function setOnline(online) {
    if (online) link.misses = 0;
    if (link.online === online) return;
    link.online = online;
    offlineBanner.hidden = online;
    document.body.classList.toggle("offline", !online);
  }

  function nextDelay() {
    if (link.online) return POLL_MS;
    link.misses += 1;
    return Math.min(OFFLINE_FIRST_MS * 2 ** (link.misses - 1), OFFLINE_MAX_MS);
  }

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
      setOnline(false);
      throw new BridgeDown(err && err.name === "TimeoutError" ? "timeout" : "unreachable");
    }
    setOnline(true);
    let data = null;
    try {
      data = await response.json();
    } catch (err) {
      data = null;
    }
    return { status: response.status, data: data };
  }

  // A poll or a send failed: the bridge being down is shown by the banner; anything else is a
  // bug of this page and goes to the console.
  function report(err) {
    if (!(err instanceof BridgeDown)) console.error(err);
  }

  // What a send that got no answer says, instead of "Sending…" forever.
  function notSent(err) {
    report(err);
    if (!(err instanceof BridgeDown)) return "Not sent / Не отправлено: " + err.message;
    return err.message === "timeout"
      ? "Not sent: no answer from the bridge in " + SEND_TIMEOUT_MS / 1000 + " s / " +
        "Не отправлено: мост не ответил за " + SEND_TIMEOUT_MS / 1000 + " с"
      : "Not sent: the bridge is not responding / Не отправлено: мост не отвечает";
  }

  // -- small helpers ------------------------------------------------------------------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function bilingual(node, en, ru) {
    node.appendChild(document.createTextNode(en + " "));
    node.appendChild(el("span", "ru", "/ " + ru));
    return node;
  }

  function setStatus(node, text, tone) {
    node.textContent = text;
    node.classList.toggle("ok", tone === "ok");
    node.classList.toggle("bad", tone === "bad");
  }

  function toMillis(value) {
    if (value === undefined || value === null || value === "") return 0;
    if (typeof value === "number") return value < 1e12 ? value * 1000 : value;
    if (/^\d+$/.test(String(value))) return toMillis(Number(value));
    const parsed = Date.parse(value);
    return Number.isNaN(parsed) ? 0 : parsed;
  }

  const TIME = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
  const DAY_TIME = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short",
                                                        hour: "2-digit", minute: "2-digit" });

  function clock(ms) {
    return ms ? TIME.format(ms) : "";
  }

  function sameDay(a, b) {
    return new Date(a).toDateString() === new Date(b).toDateString();
  }

  // A due time: the clock for today, the day and the clock otherwise.
  function dueText(ms) {
    if (!ms) return "no due date / без срока";
    return "due / срок " + (sameDay(ms, Date.now()) ? TIME.format(ms) : DAY_TIME.format(ms));
  }

  function asList(value) {
    return Array.isArray(value) ? value : [];
  }

  function present(value) {
    return value !== undefined && value !== null && value !== "";
  }

  function firstLine(text) {
    return String(text || "").split("\n").map((s) => s.trim()).find(Boolean) || "";
  }

  // The bridge ends its own CRM entries with a de-duplication marker, [bridge:<12 hex>:<seq>:<ms>]
  // (crm_adapters/*/timeline.py). The CRM shows it as text; here it is set apart, small.
  const MARKER = /\[bridge:[0-9a-f]{12}(?::-?\d*:\d*)?\]/g;

  function textWithMarkers(className, text) {
    const node = el("span", className);
    let last = 0;
    const value = String(text);
    for (const match of value.matchAll(MARKER)) {
      node.appendChild(document.createTextNode(value.slice(last, match.index)));
      const marker = el("span", "marker", match[0]);
      marker.title = "The bridge's marker (it skips what it already wrote) / " +
        "Метка моста (по ней он не пишет одно и то же дважды)";
      node.appendChild(marker);
      last = match.index + match[0].length;
    }
    node.appendChild(document.createTextNode(value.slice(last)));
    return node;
  }

  // HubSpot note bodies (hs_note_body) are HTML, which HubSpot shows formatted. Here a body is
  // untrusted: DOMParser builds an inert document (no script runs, nothing loads) and only a few
  // formatting tags are copied over, without any attribute; other elements keep their text,
  // scripts and styles are dropped. Line breaks count both as "\n" (.rich is pre-line) and as
  // <p> / <br>.
  const RICH_TAGS = new Set(["P", "BR", "B", "STRONG", "I", "EM", "U", "S", "UL", "OL", "LI",
                             "BLOCKQUOTE", "PRE", "CODE", "DIV", "SPAN"]);
  const DROPPED_TAGS = new Set(["SCRIPT", "STYLE", "TEMPLATE", "NOSCRIPT", "IFRAME", "OBJECT",
                                "EMBED", "SVG", "MATH", "HEAD", "TITLE", "TEXTAREA", "SELECT"]);
  const BLOCK_TAGS = new Set(["P", "BR", "DIV", "UL", "OL", "LI", "BLOCKQUOTE", "PRE"]);

  function isBlock(node) {
    return !!node && node.nodeType === Node.ELEMENT_NODE && BLOCK_TAGS.has(node.tagName);
  }

  function copyAllowed(from, to) {
    for (const node of from.childNodes) {
      if (node.nodeType === Node.TEXT_NODE) {
        // source formatting between blocks ("</p>\n<p>") is not a line of its own
        const layout = !node.data.trim() && (isBlock(node.previousSibling) || isBlock(node.nextSibling));
        if (!layout) to.appendChild(document.createTextNode(node.data));
      } else if (node.nodeType === Node.ELEMENT_NODE && !DROPPED_TAGS.has(node.tagName)) {
        if (RICH_TAGS.has(node.tagName)) {
          const copy = document.createElement(node.tagName.toLowerCase());
          copyAllowed(node, copy);
          to.appendChild(copy);
        } else {
          copyAllowed(node, to);
        }
      }
    }
  }

  function richText(html) {
    const doc = new DOMParser().parseFromString(String(html || ""), "text/html");
    const node = el("div", "text rich");
    copyAllowed(doc.body, node);
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

  // Why the bridge did not take a customer's message: [en, ru].
  function refusal(status) {
    return present(status)
      ? ["the bridge answered " + status, "мост ответил " + status]
      : ["the bridge did not answer", "мост не ответил"];
  }

  // Under a customer's bubble: did the bridge take the message (its webhook answered 2xx)?
  function deliveryNote(d) {
    if (d.ok) return { text: "delivered / доставлено ✓", failed: false };
    const [en, ru] = refusal(d.status);
    return { text: "not delivered (" + en + ") / не доставлено (" + ru + ")", failed: true };
  }

  function mediaLabel(s) {
    const m = s.message || {};
    if (m.photo) return "[photo / фото] ";
    if (m.document) return "[file / файл] ";
    return "";
  }

  function renderTranscript(deliveries, sent) {
    // one bubble per update: its last delivery attempt says how it went
    const updates = new Map();
    for (const d of deliveries) updates.set(d.update_id ?? d.time, d);
    const items = [];
    for (const d of updates.values()) {
      const text = d.text || (d.kind === "message" ? "[media / медиа]" : "[" + d.kind + "]");
      const note = deliveryNote(d);
      items.push({ who: "customer", text: text, time: d.time * 1000, note: note.text, failed: note.failed });
    }
    for (const s of sent) {
      items.push({ who: "bot", text: mediaLabel(s) + (s.text || s.caption || ""), time: s.time * 1000,
                   note: "", failed: false });
    }
    items.sort((a, b) => a.time - b.time);
    const model = items.map((item) => [item.who, item.text, clock(item.time), item.note, item.failed]);
    const changed = renderList(transcript, model, ([who, text, time, note, failed]) => {
      const li = el("li", "bubble " + who + (failed ? " failed" : ""));
      li.appendChild(el("span", "text", text));
      li.appendChild(el("span", "meta", [time, note].filter(Boolean).join(" · ")));
      return li;
    }, "No messages yet: write one below / Сообщений пока нет: напишите ниже");
    if (changed) transcript.scrollTop = transcript.scrollHeight;
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
    setStatus(customerStatus, "Sending… / Отправка…");
    let result;
    try {
      result = await call("deliver", {
        json: { from: { id: id, first_name: nameInput.value || "Customer" }, text: textBox.value },
      });
    } catch (err) {
      setStatus(customerStatus, notSent(err), "bad");
      return;
    }
    const d = result.data || {};
    if (result.status === 200 && d.delivered) {
      setStatus(customerStatus, "Sent ✓ / Отправлено ✓", "ok");
      textBox.value = "";
    } else if (result.status === 200) {
      const [en, ru] = refusal(d.status);
      setStatus(customerStatus, "Not delivered: " + en + " / Не доставлено: " + ru, "bad");
      textBox.value = "";
    } else if (result.status === 409) {
      setStatus(customerStatus, "The bridge is still starting (no webhook yet); try again in a moment / " +
        "Мост ещё запускается (вебхука пока нет); повторите чуть позже", "bad");
    } else {
      setStatus(customerStatus, "Error / Ошибка: " + (d.message || ("HTTP " + result.status)), "bad");
    }
    pollTelegram().catch(report);
  }

  // -- the CRM side, shared -----------------------------------------------------------

  const contactsList = document.getElementById("contacts");
  const dealsList = document.getElementById("deals");
  const ticketsList = document.getElementById("tickets");
  const leadsList = document.getElementById("leads");
  const leadStatus = document.getElementById("lead-status");
  const timeline = document.getElementById("timeline");
  const timelineContact = document.getElementById("timeline-contact");
  const recordCard = document.getElementById("record-card");
  const replyStatus = document.getElementById("reply-status");
  const crmStatus = document.getElementById("crm-status");
  let selectedContact = null;
  // Until the rep picks a contact the panel follows the newest one (the customer writing now).
  let followNewest = true;

  function selectContact(contacts) {
    const ids = contacts.map((c) => String(c.id));
    if ((followNewest || !ids.includes(selectedContact)) && ids.length) {
      selectedContact = ids[ids.length - 1];
    }
  }

  function pickContact(id, poll) {
    followNewest = false;
    selectedContact = String(id);
    poll().catch(report);
  }

  function contactItem(item, poll) {
    const li = el("li", "record" + (item.selected ? " selected" : ""));
    li.tabIndex = 0;
    li.appendChild(el("span", "text", item.label));
    if (item.details) li.appendChild(el("span", "meta", item.details));
    li.addEventListener("click", () => pickContact(item.id, poll));
    li.addEventListener("keydown", (e) => { if (e.key === "Enter") pickContact(item.id, poll); });
    return li;
  }

  function recordItem(kind, item) {
    const li = el("li", "record " + kind + (item.open === false ? " closed" : "") + (item.mine ? " mine" : ""));
    li.appendChild(el("span", "text", item.label));
    if (item.details) li.appendChild(el("span", "meta", item.details));
    return li;
  }

  // The selected contact's owner and open tasks: [owner name, [{subject, due (ms), who}]].
  function renderRecordCard(card) {
    const sig = JSON.stringify(card);
    if (recordCard.dataset.sig === sig) return;
    recordCard.dataset.sig = sig;
    if (!card) {
      recordCard.replaceChildren();
      return;
    }
    const [owner, tasks] = card;
    const ownerRow = el("div", "owner-row");
    ownerRow.append(bilingual(el("span", "label"), "Owner", "Ответственный"), el("span", "owner", owner));
    const list = el("ul", "tasks");
    for (const task of tasks) {
      const li = el("li", "task" + (task.due && task.due < Date.now() ? " overdue" : ""));
      li.appendChild(el("span", "subject", task.subject));
      li.appendChild(document.createTextNode(" · "));
      li.appendChild(el("span", "due", dueText(task.due)));
      if (task.who) li.appendChild(el("span", "who", " · " + task.who));
      list.appendChild(li);
    }
    if (!tasks.length) list.appendChild(el("li", "empty", "none / нет"));
    recordCard.replaceChildren(ownerRow,
      bilingual(el("span", "label tasks-title"), "Open tasks", "Открытые задачи"), list);
  }

  function renderEntries(model, emptyText) {
    const changed = renderList(timeline, model, (item) => {
      const li = el("li", "entry " + item.kind);
      li.appendChild(el("span", "meta", [clock(item.time)].concat(item.who).filter(Boolean).join(" · ")));
      li.appendChild(item.html !== undefined ? richText(item.html) : textWithMarkers("text", item.text));
      return li;
    }, emptyText);
    if (changed) timeline.scrollTop = timeline.scrollHeight;
  }

  function isOkDelivery(d) {
    return d.ok === true || (typeof d.status === "number" && d.status >= 200 && d.status < 300);
  }

  // What the CRM's own webhooks to the bridge did, after a manager's action.
  function notifiedText(list) {
    const hooks = asList(list);
    if (!hooks.length) return "";
    const failed = hooks.find((h) => !isOkDelivery(h));
    if (!failed) return " · the bridge was notified ✓ / мост уведомлён ✓";
    return " · the bridge was not notified (" + (present(failed.status) ? "HTTP " + failed.status
      : "no answer") + ") / мост не уведомлён";
  }

  // -- rep (HubSpot) ------------------------------------------------------------------

  function props(record) {
    return (record && record.properties) || {};
  }

  function contactLabel(contact) {
    const p = props(contact);
    const name = [p.firstname, p.lastname].filter(Boolean).join(" ");
    return name || p.email || p.phone || p.telegram_username || ("Contact / Контакт " + contact.id);
  }

  // Every sandbox answers GET /_state with {"accounts": [...]}; HubSpot's accounts are its
  // portals {contacts, deals, ..., associations, threads, owners, pipelines}; a flat
  // {contacts, deals, ...} works too. Association keys may be snake or camel case.
  function crmView(data) {
    const portals = Array.isArray(data.accounts) ? data.accounts : [data];
    const view = { contacts: [], deals: [], tickets: [], notes: [], tasks: [], associations: [],
                   threads: [], owners: [] };
    const pipelines = { deals: [], tickets: [] };
    for (const portal of portals) {
      for (const key of Object.keys(view)) view[key] = view[key].concat(asList(portal && portal[key]));
      for (const key of Object.keys(pipelines)) {
        pipelines[key] = pipelines[key].concat(asList(portal && portal.pipelines && portal.pipelines[key]));
      }
    }
    view.pipelines = pipelines;
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

  function hsOwners(state) {
    return new Map(asList(state.owners).map((o) => [String(o.id),
      [o.firstName, o.lastName].filter(Boolean).join(" ") || o.email || ("owner " + o.id)]));
  }

  function hsOwnerName(owners, id) {
    if (!present(id)) return "unassigned / не назначен";
    return owners.get(String(id)) || ("owner / ответственный " + id);
  }

  // A stage id -> its label in the record's pipeline (GET /crm/v3/pipelines/{type}).
  function hsStage(state, type, pipelineId, stageId) {
    if (!present(stageId)) return "";
    const pipes = asList(state.pipelines[type]);
    const own = pipes.filter((p) => String(p.id) === String(pipelineId));
    for (const pipe of own.concat(pipes)) {
      const stage = asList(pipe.stages).find((s) => String(s.id) === String(stageId));
      if (stage) return stage.label + (pipes.length > 1 ? " (" + pipe.label + ")" : "");
    }
    return String(stageId);
  }

  function hsClosed(state, type, pipelineId, stageId) {
    for (const pipe of asList(state.pipelines[type])) {
      if (present(pipelineId) && String(pipe.id) !== String(pipelineId)) continue;
      const stage = asList(pipe.stages).find((s) => String(s.id) === String(stageId));
      const meta = (stage && stage.metadata) || {};
      if (stage) return meta.isClosed === "true" || meta.ticketState === "CLOSED";
    }
    return false;
  }

  // An outgoing inbox message: what the bridge reported back (FACTS 3.7 statusType).
  function hsMessageState(m) {
    const history = asList(m.statusHistory);
    const last = history.length ? history[history.length - 1] : null;
    if (!last) return { text: "sent / отправлено", failed: false };
    if (last.statusType === "FAILED") {
      return { text: "failed / ошибка" + (last.errorMessage ? ": " + last.errorMessage : ""), failed: true };
    }
    if (last.statusType === "READ") return { text: "read / прочитано ✓✓", failed: false };
    return { text: "delivered / доставлено ✓", failed: false };
  }

  function hsTimelineItems(state, contactId, owners) {
    const associations = asList(state.associations);
    const items = [];
    const noteIds = linked(associations, "note", contactId);
    for (const note of asList(state.notes)) {
      if (!noteIds.has(String(note.id))) continue;
      const p = props(note);
      items.push({ kind: "note", html: String(p.hs_note_body || ""),
                   time: toMillis(p.hs_timestamp || note.createdAt),
                   who: ["note / заметка", present(p.hubspot_owner_id) ? hsOwnerName(owners, p.hubspot_owner_id) : ""] });
    }
    const threadIds = linked(associations, "thread", contactId);
    for (const thread of asList(state.threads)) {
      const owner = thread.contact_id || thread.contactId || thread.associatedContactId;
      if (!threadIds.has(String(thread.id)) && String(owner) !== contactId) continue;
      for (const m of asList(thread.messages)) {
        const incoming = String(m.direction || "").toUpperCase() === "INCOMING";
        const sender = asList(m.senders)[0] || {};
        const state_ = incoming ? null : hsMessageState(m);
        const item = { kind: (incoming ? "incoming" : "outgoing") + (state_ && state_.failed ? " failed" : ""),
                       time: toMillis(m.createdAt || m.timestamp),
                       who: ["chat / чат", sender.name || (incoming ? "customer / клиент" : "rep / менеджер"),
                             state_ ? state_.text : ""] };
        // the plain text when there is one; else the message's HTML, rendered like a note's
        if (m.text) item.text = m.text;
        else item.html = String(m.richText || "");
        items.push(item);
      }
    }
    items.sort((a, b) => a.time - b.time);
    return items;
  }

  function hsCard(state, contact, owners) {
    const contactId = String(contact.id);
    const taskIds = linked(asList(state.associations), "task", contactId);
    const tasks = asList(state.tasks).filter((t) => taskIds.has(String(t.id)) &&
        props(t).hs_task_status !== "COMPLETED" && !t.archived)
      .map((t) => ({ subject: props(t).hs_task_subject || ("Task / Задача " + t.id),
                     due: toMillis(props(t).hs_timestamp),
                     who: hsOwnerName(owners, props(t).hubspot_owner_id) }))
      .sort((a, b) => a.due - b.due);
    return [hsOwnerName(owners, props(contact).hubspot_owner_id), tasks];
  }

  async function pollHubspot() {
    const result = await call("crmState");
    if (result.status !== 200 || !result.data) {
      setStatus(crmStatus, "HubSpot sandbox / песочница HubSpot: HTTP " + result.status, "bad");
      return;
    }
    setStatus(crmStatus, "");
    const state = crmView(result.data);
    const owners = hsOwners(state);
    const contacts = asList(state.contacts).filter((c) => !c.archived);
    selectContact(contacts);
    renderList(contactsList, contacts.map((c) => ({
      id: String(c.id), label: contactLabel(c), selected: String(c.id) === selectedContact,
      details: "owner / ответственный: " + hsOwnerName(owners, props(c).hubspot_owner_id),
    })), (item) => contactItem(item, pollHubspot), "— none / нет —");
    const contact = contacts.find((c) => String(c.id) === selectedContact);
    const dealIds = contact ? linked(state.associations, "deal", selectedContact) : new Set();
    const ticketIds = contact ? linked(state.associations, "ticket", selectedContact) : new Set();
    renderList(dealsList, asList(state.deals).filter((d) => !d.archived).map((d) => {
      const p = props(d);
      return { label: p.dealname || ("Deal / Сделка " + d.id), mine: dealIds.has(String(d.id)),
               open: !hsClosed(state, "deals", p.pipeline, p.dealstage),
               details: [hsStage(state, "deals", p.pipeline, p.dealstage),
                         hsOwnerName(owners, p.hubspot_owner_id)].filter(Boolean).join(" · ") };
    }), (item) => recordItem("deal", item), "— none / нет —");
    renderList(ticketsList, asList(state.tickets).filter((t) => !t.archived).map((t) => {
      const p = props(t);
      return { label: p.subject || ("Ticket / Тикет " + t.id), mine: ticketIds.has(String(t.id)),
               open: !hsClosed(state, "tickets", p.hs_pipeline, p.hs_pipeline_stage),
               details: [hsStage(state, "tickets", p.hs_pipeline, p.hs_pipeline_stage),
                         hsOwnerName(owners, p.hubspot_owner_id)].filter(Boolean).join(" · ") };
    }), (item) => recordItem("ticket", item), "— none / нет —");
    timelineContact.textContent = contact ? contactLabel(contact) : "—";
    renderRecordCard(contact ? hsCard(state, contact, owners) : null);
    renderEntries(contact ? hsTimelineItems(state, selectedContact, owners) : [],
                  contact ? "Nothing yet / Пока пусто" : "Pick a contact / Выберите контакт");
  }

  async function sendReply(event) {
    event.preventDefault();
    const textBox = document.getElementById("reply-text");
    if (!selectedContact || !textBox.value.trim()) {
      setStatus(replyStatus, "Pick a contact first / Сначала выберите контакт", "bad");
      return;
    }
    setStatus(replyStatus, "Sending… / Отправка…");
    let result;
    try {
      result = await call("crmReply", { json: { contact_id: selectedContact, text: textBox.value } });
    } catch (err) {
      setStatus(replyStatus, notSent(err), "bad");
      return;
    }
    const d = result.data || {};
    const webhook = d.webhook || {};
    if (result.status === 200 && isOkDelivery(webhook)) {
      setStatus(replyStatus, "Sent ✓: the bridge is passing it to the customer / " +
        "Отправлено ✓: мост передаёт ответ клиенту", "ok");
      textBox.value = "";
    } else if (result.status === 200) {
      setStatus(replyStatus, "Saved in HubSpot, but the bridge did not take it (" +
        (present(webhook.status) ? "HTTP " + webhook.status : "no answer") + ") / " +
        "Сохранено в HubSpot, но мост его не принял", "bad");
    } else if (result.status === 404) {
      setStatus(replyStatus, "This contact has no Telegram conversation yet / " +
        "У этого контакта ещё нет переписки в Telegram", "bad");
    } else {
      setStatus(replyStatus, "Error / Ошибка: " + (d.message || ("HTTP " + result.status)), "bad");
    }
    pollHubspot().catch(report);
  }

  // -- manager (amoCRM) ---------------------------------------------------------------
  // The amoCRM sandbox answers GET /_state?account= with {"accounts": [{users, pipelines,
  // contacts, leads, notes, tasks, chats, ...}]}; the page shows the first (the configured) account.

  const WON = 142;
  const LOST = 143;
  const REPLY_MARKER = "@client";
  let amoAccount = null; // the last account read, for the note reply's open lead

  function amoUsers(account) {
    return new Map(asList(account.users).map((u) => [String(u.id), u]));
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

  function amoLeadIds(account, contact) {
    const contactId = String(contact.id);
    const leadIds = new Set(asList(contact.leads).map(String));
    for (const lead of asList(account.leads)) {
      if (hasContact(lead, contactId)) leadIds.add(String(lead.id));
    }
    return leadIds;
  }

  async function setLeadStatus(leadId, statusId, actions) {
    const buttons = Array.from(actions.querySelectorAll("button"));
    for (const b of buttons) b.disabled = true;
    setStatus(leadStatus, "Sending… / Отправка…");
    try {
      const result = await call("amoLeadStatus", { json: { lead_id: leadId, status_id: statusId } });
      const d = result.data || {};
      const word = statusId === WON ? "won / успешно" : "lost / не реализовано";
      if (result.status === 200) {
        setStatus(leadStatus, "Lead / Сделка #" + leadId + ": " + word + notifiedText(d.webhooks), "ok");
      } else {
        setStatus(leadStatus, "Error / Ошибка: " + (d.message || ("HTTP " + result.status)), "bad");
      }
    } catch (err) {
      setStatus(leadStatus, notSent(err), "bad");
    } finally {
      for (const b of buttons) b.disabled = false; // gone from the page once the lead closed
    }
    pollAmo().catch(report);
  }

  function renderAmoLeads(account, leadIds) {
    const users = amoUsers(account);
    const model = asList(account.leads).filter((lead) => !lead.is_deleted).map((lead) => ({
      id: lead.id, open: isOpen(lead), mine: leadIds.has(String(lead.id)),
      label: lead.name || ("Lead / Сделка #" + lead.id),
      details: "#" + lead.id + " · " + stageName(account, lead) + " · " + userName(users, lead.responsible_user_id),
    }));
    renderList(leadsList, model, (item) => {
      const li = recordItem("lead", item);
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

  // An outgoing chat message: the last delivery status the bridge reported (1 delivered,
  // 2 read, -1 error; FACTS 1.x, amojo delivery_status).
  function amoMessageState(m) {
    const statuses = asList(m.delivery_statuses);
    const last = statuses.length ? statuses[statuses.length - 1] : null;
    if (!last) return { text: "sent / отправлено", failed: false };
    if (last.status === -1) {
      return { text: "failed / ошибка" + (last.error ? ": " + last.error : ""), failed: true };
    }
    if (last.status === 2) return { text: "read / прочитано ✓✓", failed: false };
    return { text: "delivered / доставлено ✓", failed: false };
  }

  function amoTimelineItems(account, contact, leadIds) {
    const contactId = String(contact.id);
    const users = amoUsers(account);
    const items = [];
    for (const note of asList(account.notes)) {
      const onContact = note.entity_type === "contacts" && String(note.entity_id) === contactId;
      const onLead = note.entity_type === "leads" && leadIds.has(String(note.entity_id));
      if (!onContact && !onLead) continue;
      items.push({ kind: "note", time: toMillis(note.created_at), text: noteText(note),
                   who: ["note / заметка", onLead ? "lead / сделка #" + note.entity_id : "",
                         userName(users, note.created_by)] });
    }
    for (const chat of asList(account.chats)) {
      if (String(chat.contact_id) !== contactId) continue;
      const client = (chat.client && chat.client.name) || "customer / клиент";
      for (const m of asList(chat.messages)) {
        const incoming = m.direction === "in";
        const sender = incoming ? client : ((m.sender && m.sender.name) || "manager / менеджер");
        const state = incoming ? null : amoMessageState(m);
        items.push({ kind: (incoming ? "incoming" : "outgoing") + (state && state.failed ? " failed" : ""),
                     time: toMillis(m.timestamp), text: m.text || ("[" + (m.type || "message") + "]"),
                     who: ["chat / чат", sender, state ? state.text : ""] });
      }
    }
    items.sort((a, b) => a.time - b.time);
    return items;
  }

  function amoCard(account, contact, leadIds) {
    const users = amoUsers(account);
    const contactId = String(contact.id);
    const tasks = asList(account.tasks).filter((t) => !t.is_completed && (
      (t.entity_type === "contacts" && String(t.entity_id) === contactId) ||
      (t.entity_type === "leads" && leadIds.has(String(t.entity_id)))))
      .map((t) => ({ subject: firstLine(t.text) || ("Task / Задача " + t.id), due: toMillis(t.complete_till),
                     who: userName(users, t.responsible_user_id) }))
      .sort((a, b) => a.due - b.due);
    return [userName(users, contact.responsible_user_id), tasks];
  }

  async function pollAmo() {
    const result = await call("amoState", { query: { account: AMO_SUBDOMAIN } });
    const d = result.data || {};
    const account = result.status === 200 ? asList(d.accounts)[0] : null;
    if (!account) {
      setStatus(crmStatus, "amoCRM sandbox / песочница amoCRM (" + AMO_SUBDOMAIN + "): " +
        (d.message || ("HTTP " + result.status)), "bad");
      return;
    }
    setStatus(crmStatus, "");
    amoAccount = account;
    const users = amoUsers(account);
    const contacts = asList(account.contacts).filter((c) => !c.is_deleted);
    selectContact(contacts);
    renderList(contactsList, contacts.map((c) => ({
      id: String(c.id), label: amoContactLabel(c), selected: String(c.id) === selectedContact,
      details: asList(c.custom_fields_values).map(fieldText).filter(Boolean)
        .concat(["responsible / ответственный: " + userName(users, c.responsible_user_id)]).join(" · "),
    })), (item) => contactItem(item, pollAmo), "— none / нет —");
    const contact = contacts.find((c) => String(c.id) === selectedContact);
    const leadIds = contact ? amoLeadIds(account, contact) : new Set();
    renderAmoLeads(account, leadIds);
    timelineContact.textContent = contact ? amoContactLabel(contact) : "—";
    renderRecordCard(contact ? amoCard(account, contact, leadIds) : null);
    renderEntries(contact ? amoTimelineItems(account, contact, leadIds) : [],
                  contact ? "Nothing yet / Пока пусто" : "Pick a contact / Выберите контакт");
  }

  function withMarker(text) {
    const trimmed = text.replace(/^\s+/, "");
    return /^@(client|клиент)(?![\p{L}\p{N}])/iu.test(trimmed) ? trimmed : REPLY_MARKER + " " + trimmed;
  }

  async function sendAmoNote(text) {
    const lead = openLead(amoAccount, selectedContact);
    if (!lead) {
      setStatus(replyStatus, "This contact has no open lead / У контакта нет открытой сделки", "bad");
      return null;
    }
    setStatus(replyStatus, "Sending… / Отправка…");
    const result = await call("amoNote", { json: { lead_id: lead.id, text: withMarker(text) } });
    const d = result.data || {};
    if (result.status === 200) {
      setStatus(replyStatus, "Note added to lead / Заметка добавлена в сделку #" + lead.id +
        notifiedText(d.webhooks), "ok");
    } else {
      setStatus(replyStatus, "Error / Ошибка: " + (d.message || ("HTTP " + result.status)), "bad");
    }
    return result;
  }

  async function sendAmoChat(text) {
    setStatus(replyStatus, "Sending… / Отправка…");
    const result = await call("amoReply", {
      json: { contact_id: Number(selectedContact), text: text, account: AMO_SUBDOMAIN },
    });
    const d = result.data || {};
    const webhook = d.webhook || {};
    if (result.status === 404 && d.error === "chat_not_found") {
      setStatus(replyStatus, "This contact has no amoCRM chat: reply as a note / " +
        "У контакта нет чата amoCRM: ответьте заметкой", "bad");
    } else if (result.status === 200 && isOkDelivery(webhook)) {
      setStatus(replyStatus, "Sent ✓: the bridge is passing it to the customer / " +
        "Отправлено ✓: мост передаёт ответ клиенту", "ok");
    } else if (result.status === 200) {
      setStatus(replyStatus, "Saved in amoCRM, but the bridge did not take it (" +
        (present(webhook.status) ? "HTTP " + webhook.status : "no answer") + ") / " +
        "Сохранено в amoCRM, но мост его не принял", "bad");
    } else {
      setStatus(replyStatus, "Error / Ошибка: " + (d.message || ("HTTP " + result.status)), "bad");
    }
    return result;
  }

  async function sendAmoReply(event) {
    event.preventDefault();
    const textBox = document.getElementById("reply-text");
    if (!selectedContact || !textBox.value.trim()) {
      setStatus(replyStatus, "Pick a contact first / Сначала выберите контакт", "bad");
      return;
    }
    const checked = document.querySelector('input[name="reply-mode"]:checked');
    const mode = checked ? checked.value : "chat";
    let result;
    try {
      result = mode === "note" ? await sendAmoNote(textBox.value) : await sendAmoChat(textBox.value);
    } catch (err) {
      setStatus(replyStatus, notSent(err), "bad");
      return;
    }
    if (result && result.status >= 200 && result.status < 300) textBox.value = "";
    pollAmo().catch(report);
  }

  // -- operator (Bitrix24) ------------------------------------------------------------
  // The Bitrix24 sandbox answers GET /_state?account= with {"accounts": [{users, statuses,
  // deal_categories, open_lines, contacts, leads, deals, tasks, chats, ...}]}; each record is
  // {id, fields, multifields, links, timeline: {comments, activities}}, each Open Lines
  // chat {id, connector, line, external_chat_id, external_user_id, user, crm, messages}.
  // The page shows the first (the configured) portal.

  const LEAD_CONVERTED = "CONVERTED";
  const LEAD_JUNK = "JUNK";
  const CRM_ONLY = "Replies go through Open Lines; this contact has none (CRM-only mode) / " +
    "Ответы идут через Открытые линии; у этого контакта их нет (режим «только CRM»)";
  // tasks-task-list.md: status 5 is "completed"
  const B24_TASK_DONE = "5";
  const openlinesChat = document.getElementById("openlines-chat");
  let b24Portal = null; // the last portal read, for the reply's Open Lines chat

  function fieldsOf(record) {
    return (record && record.fields) || {};
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

  function renderB24Contacts(portal) {
    const users = b24Users(portal);
    const model = asList(portal.contacts).map((c) => ({
      id: String(c.id), label: b24ContactLabel(c), selected: String(c.id) === selectedContact,
      details: multi(c, "PHONE").concat(multi(c, "EMAIL")).map((m) => m.VALUE)
        .concat(multi(c, "IM").map(imText),
                ["responsible / ответственный: " + b24UserName(users, fieldsOf(c).ASSIGNED_BY_ID)])
        .join(" · "),
    }));
    renderList(contactsList, model, (item) => contactItem(item, pollB24), "— none / нет —");
  }

  async function setB24Status(kind, recordId, statusId, word, actions) {
    const buttons = Array.from(actions.querySelectorAll("button"));
    for (const b of buttons) b.disabled = true;
    setStatus(leadStatus, "Sending… / Отправка…");
    try {
      const result = kind === "lead"
        ? await call("b24LeadStatus", { json: { portal: B24_PORTAL, lead_id: Number(recordId), status_id: statusId } })
        : await call("b24DealStage", { json: { portal: B24_PORTAL, deal_id: Number(recordId), stage_id: statusId } });
      const d = result.data || {};
      if (result.status === 200) {
        setStatus(leadStatus, (kind === "lead" ? "Lead / Лид #" : "Deal / Сделка #") + recordId + ": " + word +
          notifiedText(d.deliveries), "ok");
      } else {
        setStatus(leadStatus, "Error / Ошибка: " + (d.message || ("HTTP " + result.status)), "bad");
      }
    } catch (err) {
      setStatus(leadStatus, notSent(err), "bad");
    } finally {
      for (const b of buttons) b.disabled = false; // gone from the page once the record closed
    }
    pollB24().catch(report);
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
               label: f.TITLE || ("Lead / Лид #" + lead.id),
               details: "#" + lead.id + " · " + state.name + " · " + b24UserName(users, f.ASSIGNED_BY_ID) };
    });
    renderList(leadsList, model, (item) => {
      const li = recordItem("lead", item);
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
               label: f.TITLE || ("Deal / Сделка #" + deal.id),
               details: "#" + deal.id + " · " + state.name + " · " + b24UserName(users, f.ASSIGNED_BY_ID) };
    });
    renderList(dealsList, model, (item) => {
      const li = recordItem("deal", item);
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
      if (m.read) flags.push("read / прочитано ✓✓");
      else if (m.delivered) flags.push("delivered / доставлено ✓");
      else flags.push("sent / отправлено");
    }
    if (m.updated) flags.push("edited / изменено");
    if (m.deleted) flags.push("deleted / удалено");
    return flags;
  }

  // The records of the contact: [kind, record] for the contact, its leads and its deals.
  function b24Records(portal, view) {
    return [["contact", view.contact]]
      .concat(asList(portal.leads).filter((l) => view.leadIds.has(String(l.id))).map((l) => ["lead", l]),
              asList(portal.deals).filter((d) => view.dealIds.has(String(d.id))).map((d) => ["deal", d]));
  }

  function whereText(kind, record) {
    return kind === "lead" ? "lead / лид #" + record.id : kind === "deal" ? "deal / сделка #" + record.id : "";
  }

  // Comments, done to-dos and Open Lines messages; open to-dos are in the record card
  // (Bitrix24 pins them above the timeline too).
  function b24TimelineItems(portal, view) {
    const users = b24Users(portal);
    const items = [];
    for (const [kind, record] of b24Records(portal, view)) {
      const where = whereText(kind, record);
      const own = record.timeline || {};
      for (const c of asList(own.comments)) {
        items.push({ kind: "note", time: toMillis(c.CREATED), text: bbToText(c.COMMENT),
                     who: ["comment / комментарий", where, b24UserName(users, c.AUTHOR_ID)] });
      }
      for (const a of asList(own.activities).filter((x) => x.completed)) {
        items.push({ kind: "todo done", time: toMillis(a.created),
                     text: [a.title, a.description].filter(Boolean).join("\n") || "[to-do / дело]",
                     who: ["to-do done / дело выполнено", where, b24UserName(users, a.responsibleId)] });
      }
    }
    for (const chat of view.chats) {
      for (const m of asList(chat.messages)) {
        const incoming = m.direction === "in";
        items.push({ kind: incoming ? "incoming" : "outgoing", time: toMillis(m.date), text: messageText(m),
                     who: ["Open Lines / Открытые линии",
                           incoming ? "customer / клиент" : b24UserName(users, m.author)].concat(messageFlags(m)) });
      }
    }
    items.sort((a, b) => a.time - b.time);
    return items;
  }

  function b24Card(portal, view) {
    const users = b24Users(portal);
    const tasks = [];
    const crmKeys = new Set();
    const prefix = { contact: "C_", lead: "L_", deal: "D_" };
    for (const [kind, record] of b24Records(portal, view)) {
      crmKeys.add(prefix[kind] + record.id);
      for (const a of asList((record.timeline || {}).activities).filter((x) => !x.completed)) {
        tasks.push({ subject: a.title || "[to-do / дело]", due: toMillis(a.deadline),
                     who: b24UserName(users, a.responsibleId) });
      }
    }
    // tasks.task.add bound with UF_CRM_TASK ["L_<id>", "C_<id>", ...] (the task_kind: task setting)
    for (const t of asList(portal.tasks)) {
      if (String(t.status) === B24_TASK_DONE) continue;
      if (!asList(t.UF_CRM_TASK).some((key) => crmKeys.has(String(key)))) continue;
      tasks.push({ subject: t.title || ("Task / Задача " + t.id), due: toMillis(t.deadline),
                   who: b24UserName(users, t.responsibleId) });
    }
    tasks.sort((a, b) => a.due - b.due);
    return [b24UserName(users, fieldsOf(view.contact).ASSIGNED_BY_ID), tasks];
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
      ? "Replies go to the Open Lines chat / Ответ уйдёт в чат Открытых линий: " +
        (chat.name || chat.external_chat_id) + " · " + lineName(portal, chat.line)
      : CRM_ONLY;
    if (openlinesChat.textContent !== text) openlinesChat.textContent = text;
    openlinesChat.classList.toggle("crm-only", crmOnly);
    for (const node of document.querySelectorAll("#reply-form textarea, #reply-form button")) {
      if (node.disabled !== crmOnly) node.disabled = crmOnly;
    }
  }

  async function pollB24() {
    const result = await call("b24State", { query: { account: B24_PORTAL } });
    const d = result.data || {};
    const portal = result.status === 200 ? asList(d.accounts)[0] : null;
    if (!portal) {
      setStatus(crmStatus, "Bitrix24 sandbox / песочница Битрикс24 (" + B24_PORTAL + "): " +
        (d.message || ("HTTP " + result.status)), "bad");
      return;
    }
    setStatus(crmStatus, "");
    b24Portal = portal;
    const contacts = asList(portal.contacts);
    selectContact(contacts);
    const contact = contacts.find((c) => String(c.id) === selectedContact);
    const view = contact ? contactView(portal, contact) : null;
    renderB24Contacts(portal);
    renderB24Leads(portal, view);
    renderB24Deals(portal, view);
    timelineContact.textContent = view ? b24ContactLabel(view.contact) : "—";
    renderRecordCard(view ? b24Card(portal, view) : null);
    renderEntries(view ? b24TimelineItems(portal, view) : [],
                  view ? "Nothing yet / Пока пусто" : "Pick a contact / Выберите контакт");
    renderOpenLinesChat(portal, view);
  }

  function b24ReplyOutcome(result) {
    const d = result.data || {};
    if (result.status === 409) {
      return ["The connector is not active on this line / Коннектор не активен на этой линии", "bad"];
    }
    if (result.status !== 200) return ["Error / Ошибка: " + (d.message || d.error || ("HTTP " + result.status)), "bad"];
    const ev = d.webhook || {};
    const as = b24UserName(b24Users(b24Portal), (d.message || {}).author);
    if (!asList(d.deliveries).length) {
      return ["Saved in Bitrix24 (as " + as + "), but the bridge is not subscribed to operator messages / " +
              "Сохранено в Битрикс24, но мост не подписан на сообщения операторов", "bad"];
    }
    if (!isOkDelivery(ev)) {
      return ["Saved in Bitrix24, but the bridge did not take it (" +
              (present(ev.status) ? "HTTP " + ev.status : "no answer") + ") / " +
              "Сохранено в Битрикс24, но мост его не принял", "bad"];
    }
    return ["Sent ✓ as " + as + ": the bridge is passing it to the customer / " +
            "Отправлено ✓ от имени " + as + ": мост передаёт ответ клиенту", "ok"];
  }

  async function sendB24Reply(event) {
    event.preventDefault();
    const textBox = document.getElementById("reply-text");
    const contact = asList(b24Portal && b24Portal.contacts).find((c) => String(c.id) === selectedContact);
    if (!contact || !textBox.value.trim()) {
      setStatus(replyStatus, "Pick a contact first / Сначала выберите контакт", "bad");
      return;
    }
    const chat = replyChat(contactView(b24Portal, contact));
    if (!chat) {
      setStatus(replyStatus, CRM_ONLY, "bad");
      return;
    }
    setStatus(replyStatus, "Sending… / Отправка…");
    let result;
    try {
      result = await call("b24Reply", {
        json: { account: B24_PORTAL, conversation: chat.external_chat_id, connector: chat.connector,
                line: chat.line, text: textBox.value },
      });
    } catch (err) {
      setStatus(replyStatus, notSent(err), "bad");
      return;
    }
    const [text, tone] = b24ReplyOutcome(result);
    setStatus(replyStatus, text, tone);
    if (result.status === 200) textBox.value = "";
    pollB24().catch(report);
  }

  // -- wiring -------------------------------------------------------------------------

  // crm -> [reply handler, poller] of the right panel
  const PANELS = {
    hubspot: [sendReply, pollHubspot], amocrm: [sendAmoReply, pollAmo], bitrix24: [sendB24Reply, pollB24],
  };
  const pollCrm = PANELS[CRM][1];

  // One timer drives every panel: these two and those other scripts register in
  // window.DEMO_PANELS (email.js: the e-mail client). While the bridge is down a single cheap
  // request probes it, with a growing pause; the first answer brings every panel back at once.
  async function tick() {
    try {
      if (!link.online) await call("sent", { query: { chat_id: String(customerId() || 0) } });
      const others = (window.DEMO_PANELS || []).map((poll) => Promise.resolve().then(poll));
      const results = await Promise.allSettled([pollTelegram(), pollCrm(), ...others]);
      for (const r of results) if (r.status === "rejected") report(r.reason);
    } catch (err) {
      report(err);
    }
    setTimeout(tick, nextDelay());
  }

  loadIdentity();
  document.getElementById("customer-form").addEventListener("submit", sendCustomerMessage);
  document.getElementById("reply-form").addEventListener("submit", PANELS[CRM][0]);
  document.getElementById("customer-new").addEventListener("click", () => {
    idInput.value = randomId();
    saveIdentity();
    pollTelegram().catch(report);
  });
  idInput.addEventListener("change", saveIdentity);
  nameInput.addEventListener("change", saveIdentity);
  tick();
})();
