/*
 * The web chat widget: one <script src="<bridge>/widget/<key>.js" async> on a page.
 *
 * Plain ES2019, no framework, no build step. Everything lives in a Shadow DOM
 * root on its own host element (styles isolated both ways). Everything shown is
 * built with createElement / textContent: no HTML is ever parsed from data.
 *
 * HTTP API: channel_adapters/webchat/api.py (docs/channels/webchat.md).
 */
(function () {
  "use strict";

  // ---------------------------------------------------------------- where we are
  var SCRIPT_RE = /^(.*)\/widget\/([A-Za-z0-9_-]+)\.js(?:[?#].*)?$/;

  function ownScript() {
    var current = document.currentScript;
    if (current && SCRIPT_RE.test(current.src)) return current;
    // an async script loaded by another script: find ourselves by our src
    var scripts = document.getElementsByTagName("script");
    for (var i = scripts.length - 1; i >= 0; i--) {
      if (SCRIPT_RE.test(scripts[i].src)) return scripts[i];
    }
    return null;
  }

  var script = ownScript();
  if (!script) return;
  var found = SCRIPT_RE.exec(script.src);
  var BASE = found[1];
  var KEY = found[2];
  var API = BASE + "/widget/" + KEY;
  var loaded = (window.__crmBridgeWidgets = window.__crmBridgeWidgets || {});
  if (loaded[KEY]) return; // the snippet pasted twice: one widget
  loaded[KEY] = true;

  // ---------------------------------------------------------------- strings
  var RU = /^ru/i.test(document.documentElement.lang || "");
  var LANG = RU ? "ru" : "en";
  var STRINGS = {
    en: {
      open: "Open chat",
      close: "Close chat",
      title: "Chat with us",
      greeting: "Hello! How can we help you?",
      log: "Messages",
      placeholder: "Write a message…",
      message: "Message",
      send: "Send",
      attach: "Attach a file",
      removeFile: "Remove file",
      unread: function (n) {
        return n === 1 ? "1 unread message" : n + " unread messages";
      },
      you: "You",
      operator: "Operator",
      sending: "Sending…",
      sent: "Sent",
      notSent: "Not sent",
      retrying: "Not sent yet, retrying…",
      offline: "Connection lost. Reconnecting…",
      introText: "Please introduce yourself so that we can get back to you.",
      introConsentOnly: "Before we start:",
      name: "Name",
      phone: "Phone",
      email: "E-mail",
      start: "Start chat",
      skip: "Skip",
      needContact: "Please give a phone number or an e-mail address.",
      badPhone: "Please check the phone number.",
      badEmail: "Please check the e-mail address.",
      consent: "I agree to the processing of my personal data.",
      privacy: "Privacy policy",
      needConsent: "Please tick the box to start the chat.",
      uploading: "Uploading…",
      tooLarge: function (size) {
        return "The file is too large (at most " + size + ").";
      },
      badType: "This type of file cannot be sent.",
      uploadFailed: "The file could not be uploaded. Please try again.",
      tooMany: "Too many messages: please wait a moment.",
      tooLong: "The message is too long.",
      failed: "Something went wrong. Please try again.",
      choices: "Choose an option",
      mb: "MB",
      kb: "KB",
    },
    ru: {
      open: "Открыть чат",
      close: "Закрыть чат",
      title: "Напишите нам",
      greeting: "Здравствуйте! Чем можем помочь?",
      log: "Сообщения",
      placeholder: "Напишите сообщение…",
      message: "Сообщение",
      send: "Отправить",
      attach: "Прикрепить файл",
      removeFile: "Убрать файл",
      unread: function (n) {
        return "Непрочитанных сообщений: " + n;
      },
      you: "Вы",
      operator: "Оператор",
      sending: "Отправляется…",
      sent: "Отправлено",
      notSent: "Не отправлено",
      retrying: "Ещё не отправлено, пробуем снова…",
      offline: "Нет связи. Переподключаемся…",
      introText: "Представьтесь, пожалуйста, чтобы мы могли вам ответить.",
      introConsentOnly: "Прежде чем начать:",
      name: "Имя",
      phone: "Телефон",
      email: "Эл. почта",
      start: "Начать чат",
      skip: "Пропустить",
      needContact: "Укажите телефон или адрес эл. почты.",
      badPhone: "Проверьте номер телефона.",
      badEmail: "Проверьте адрес эл. почты.",
      consent: "Я согласен(на) на обработку моих персональных данных.",
      privacy: "Политика конфиденциальности",
      needConsent: "Отметьте согласие, чтобы начать чат.",
      uploading: "Загрузка…",
      tooLarge: function (size) {
        return "Файл слишком большой (не более " + size + ").";
      },
      badType: "Такой тип файла отправить нельзя.",
      uploadFailed: "Не удалось загрузить файл. Попробуйте ещё раз.",
      tooMany: "Слишком много сообщений: подождите немного.",
      tooLong: "Сообщение слишком длинное.",
      failed: "Что-то пошло не так. Попробуйте ещё раз.",
      choices: "Выберите вариант",
      mb: "МБ",
      kb: "КБ",
    },
  };
  var T = STRINGS[LANG];

  // ---------------------------------------------------------------- storage
  // Namespaced by the widget key: two widgets on one origin never mix visitors.
  var NS = "crmb:" + KEY + ":";

  function load(name, fallback) {
    try {
      var raw = window.localStorage.getItem(NS + name);
      return raw === null ? fallback : JSON.parse(raw);
    } catch (e) {
      return fallback; // storage off (private mode, a sandboxed frame) or junk
    }
  }

  function save(name, value) {
    try {
      if (value === null || value === undefined) window.localStorage.removeItem(NS + name);
      else window.localStorage.setItem(NS + name, JSON.stringify(value));
    } catch (e) {
      /* storage full or off: the widget still works for this page */
    }
  }

  // ---------------------------------------------------------------- context
  var UTM_KEYS = [
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_content",
    "utm_term",
    "gclid",
    "yclid",
    "fbclid",
  ];

  // The first touch is kept from the first page that had any tag; the last
  // touch is replaced by every page that has one.
  function recordTouch() {
    var params;
    try {
      params = new URLSearchParams(window.location.search);
    } catch (e) {
      return;
    }
    var touch = {};
    var any = false;
    UTM_KEYS.forEach(function (name) {
      var value = params.get(name);
      if (value) {
        touch[name] = value.slice(0, 200);
        any = true;
      }
    });
    if (!any) return;
    if (!load("utm_first", null)) save("utm_first", touch);
    save("utm_last", touch);
  }
  recordTouch();

  function timeZone() {
    try {
      return Intl.DateTimeFormat().resolvedOptions().timeZone || "";
    } catch (e) {
      return "";
    }
  }

  function context() {
    return {
      page_url: String(window.location.href).slice(0, 2000),
      page_title: String(document.title || "").slice(0, 500),
      referrer: String(document.referrer || "").slice(0, 2000),
      language: document.documentElement.lang || navigator.language || "",
      timezone: timeZone(),
      utm_first: load("utm_first", {}),
      utm_last: load("utm_last", {}),
    };
  }

  // ---------------------------------------------------------------- helpers
  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (name) {
        var value = attrs[name];
        if (value === null || value === undefined || value === false) return;
        if (name === "text") node.textContent = value;
        else if (name === "className") node.className = value;
        else node.setAttribute(name, value === true ? "" : String(value));
      });
    }
    (children || []).forEach(function (child) {
      if (child) node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return node;
  }

  var SVG_NS = "http://www.w3.org/2000/svg";
  function icon(paths) {
    var svg = document.createElementNS(SVG_NS, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    paths.forEach(function (d) {
      var path = document.createElementNS(SVG_NS, "path");
      path.setAttribute("d", d);
      svg.appendChild(path);
    });
    return svg;
  }
  var ICON_CHAT = [
    "M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2z",
  ];
  var ICON_CLOSE = ["M6.4 5 12 10.6 17.6 5 19 6.4 13.4 12l5.6 5.6-1.4 1.4-5.6-5.6L6.4 19 5 17.6 10.6 12 5 6.4z"];
  var ICON_SEND = ["M3 20.5V14l9-2-9-2V3.5L22 12z"];
  var ICON_ATTACH = [
    "M16.5 6.5v10.1a4.5 4.5 0 0 1-9 0V5.5a3 3 0 0 1 6 0v10.1a1.5 1.5 0 0 1-3 0V6.5H9v9.1a3 3 0 0 0 6 0V5.5a4.5 4.5 0 0 0-9 0v11.1a6 6 0 0 0 12 0V6.5z",
  ];

  function sleep(ms) {
    return new Promise(function (resolve) {
      var timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        window.removeEventListener("online", done);
        resolve();
      }
      // back online: try now rather than at the end of a long back-off
      window.addEventListener("online", done);
    });
  }

  // exponential back-off with jitter: 1, 2, 4, 8, 15 s at most
  function backoff(attempt) {
    var ms = Math.min(15000, 1000 * Math.pow(2, Math.max(0, attempt - 1)));
    return ms / 2 + Math.random() * (ms / 2);
  }

  function clientId() {
    var bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    var out = "";
    for (var i = 0; i < bytes.length; i++) out += ("0" + bytes[i].toString(16)).slice(-2);
    return out; // 32 hex characters: within the API's 8-64 [A-Za-z0-9_-]
  }

  function safeUrl(raw) {
    try {
      var url = new URL(raw, BASE + "/");
      return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
    } catch (e) {
      return null;
    }
  }

  function formatSize(bytes) {
    if (bytes >= 1024 * 1024) {
      var mb = bytes / (1024 * 1024);
      return (mb >= 10 ? Math.round(mb) : Math.round(mb * 10) / 10) + " " + T.mb;
    }
    return Math.max(1, Math.round(bytes / 1024)) + " " + T.kb;
  }

  function formatTime(iso) {
    var date = new Date(iso);
    if (isNaN(date.getTime())) return "";
    try {
      return date.toLocaleTimeString(LANG, { hour: "2-digit", minute: "2-digit" });
    } catch (e) {
      return "";
    }
  }

  // Text with its http(s) links made clickable: text nodes and <a> elements only.
  var LINK_RE = /\bhttps?:\/\/[^\s<>"']+/gi;
  function linkified(text) {
    var fragment = document.createDocumentFragment();
    var last = 0;
    var match;
    LINK_RE.lastIndex = 0;
    while ((match = LINK_RE.exec(text)) !== null) {
      var raw = match[0].replace(/[.,;:!?)\]}»]+$/, "");
      var href = safeUrl(raw);
      if (!href || !raw) continue;
      fragment.appendChild(document.createTextNode(text.slice(last, match.index)));
      fragment.appendChild(
        el("a", { href: href, target: "_blank", rel: "noopener noreferrer", text: raw })
      );
      last = match.index + raw.length;
      LINK_RE.lastIndex = last;
    }
    fragment.appendChild(document.createTextNode(text.slice(last)));
    return fragment;
  }

  // ---------------------------------------------------------------- colours
  function luminance(hex) {
    var rgb = [1, 3, 5].map(function (i) {
      var c = parseInt(hex.substr(i, 2), 16) / 255;
      return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4);
    });
    return 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2];
  }

  function contrast(a, b) {
    var la = luminance(a);
    var lb = luminance(b);
    return (Math.max(la, lb) + 0.05) / (Math.min(la, lb) + 0.05);
  }

  // White or near-black text on the brand colour, whichever contrasts more:
  // one of them always reaches 4.5:1.
  function textOn(color) {
    return contrast(color, "#ffffff") >= contrast(color, "#111111") ? "#ffffff" : "#111111";
  }

  // ---------------------------------------------------------------- HTTP
  var state = {
    config: null,
    token: load("token", null),
    visitor: load("visitor", null),
    messages: new Map(), // seq -> message: a seq is shown once
    lastSeq: 0,
    pending: new Map(), // client id -> its optimistic bubble
    outbox: load("outbox", []),
    files: [], // uploaded, waiting for the next message: {ref, name, size}
    open: false,
    syncing: false,
    sending: false,
    readPosted: 0,
    live: null, // the open stream or poll: cut when the browser goes offline
  };

  // The network went away: the open connection is dead even if no error has
  // come yet (a half-open socket only times out much later); reconnect when
  // it is back ("online" also cuts any back-off short).
  window.addEventListener("offline", function () {
    if (state.live) state.live.abort();
    setOffline(true);
  });

  function headers(json, anonymous) {
    var out = {};
    if (state.token && !anonymous) out.Authorization = "Bearer " + state.token;
    if (json) out["Content-Type"] = "application/json";
    return out;
  }

  // One API call: {status, data}; throws on a network error only.
  function call(method, path, body, options) {
    var init = {
      method: method,
      headers: headers(body !== undefined && !(body instanceof FormData), options && options.anonymous),
      credentials: "omit",
      cache: "no-store",
      mode: "cors",
    };
    if (body !== undefined) init.body = body instanceof FormData ? body : JSON.stringify(body);
    if (options && options.signal) init.signal = options.signal;
    return fetch(API + path, init).then(function (response) {
      return response
        .json()
        .catch(function () {
          return {};
        })
        .then(function (data) {
          return {
            status: response.status,
            data: data || {},
            retryAfter: Number(response.headers.get("Retry-After")) || 0,
          };
        });
    });
  }

  // A visitor token: the stored one, else a new visitor from /session.
  var sessionPromise = null;
  function session(renew) {
    if (state.token && !renew) return Promise.resolve(state.token);
    if (sessionPromise) return sessionPromise;
    sessionPromise = (async function () {
      for (var attempt = 1; ; attempt++) {
        var answer;
        try {
          answer = await call("POST", "/session", state.token ? { token: state.token } : {});
        } catch (e) {
          answer = { status: 0, data: {}, retryAfter: 0 }; // offline: try again
        }
        if (answer.status === 200 || answer.status === 201) {
          var changed = answer.data.visitor_id !== state.visitor;
          state.token = answer.data.token;
          state.visitor = answer.data.visitor_id;
          save("token", state.token);
          save("visitor", state.visitor);
          if (changed) resetConversation();
          return state.token;
        }
        if (answer.status >= 400 && answer.status < 500 && answer.status !== 429) {
          throw new Error(answer.data.message || "session refused");
        }
        if (answer.status === 0 || answer.status >= 500) setOffline(true);
        await sleep(answer.retryAfter ? answer.retryAfter * 1000 : backoff(attempt));
      }
    })();
    sessionPromise.then(
      function () {
        sessionPromise = null;
        startSync();
      },
      function () {
        sessionPromise = null;
      }
    );
    return sessionPromise;
  }

  // A new visitor (the old token no longer valid): nothing of the old thread shows.
  function resetConversation() {
    state.messages.forEach(function (message) {
      if (message.node && message.node.parentNode) message.node.parentNode.removeChild(message.node);
    });
    state.messages = new Map();
    state.lastSeq = 0;
    state.readPosted = 0;
    save("read", 0);
    updateBadge();
  }

  // ---------------------------------------------------------------- receiving
  function receive(list) {
    list.forEach(function (message) {
      if (!message || typeof message.seq !== "number") return;
      if (message.seq > state.lastSeq) state.lastSeq = message.seq;
      if (state.messages.has(message.seq)) return; // resumed stream, second tab: once only
      var bubble = message.client_id ? state.pending.get(message.client_id) : null;
      if (bubble) {
        // our optimistic bubble: the stored message takes its place
        if (bubble.parentNode) bubble.parentNode.removeChild(bubble);
        state.pending.delete(message.client_id);
        dropFromOutbox(message.client_id);
      }
      message.node = renderMessage(message);
      state.messages.set(message.seq, message);
      placeMessage(message);
    });
    if (list.length) {
      updateBadge();
      markRead();
      refreshChoices();
    }
  }

  function handleAuthFailure(answer) {
    if (answer.status === 401) {
      session(true).catch(function () {});
      return true;
    }
    return false;
  }

  // Server-sent events read from a fetch() body: the header carries the
  // token (EventSource cannot send one, and a token in a URL reaches logs).
  async function streamOnce() {
    var controller = (state.live = new AbortController());
    var watchdog = null;
    function arm() {
      clearTimeout(watchdog);
      // pings come every 15 s: a silent minute is a dead connection
      watchdog = setTimeout(function () {
        controller.abort();
      }, 45000);
    }
    arm();
    try {
      var hdrs = headers(false);
      hdrs["Last-Event-ID"] = String(state.lastSeq);
      var response = await fetch(API + "/stream?after=" + state.lastSeq, {
        headers: hdrs,
        credentials: "omit",
        cache: "no-store",
        mode: "cors",
        signal: controller.signal,
      });
      if (!response.ok || !response.body) {
        if (response.body) response.body.cancel().catch(function () {});
        if (response.status === 401) handleAuthFailure({ status: 401 });
        return { ok: false, status: response.status };
      }
      setOffline(false);
      var reader = response.body.getReader();
      var decoder = new TextDecoder();
      var buffer = "";
      var retry = 1000;
      for (;;) {
        var chunk = await reader.read();
        if (chunk.done) break;
        arm();
        buffer += decoder.decode(chunk.value, { stream: true }).replace(/\r\n?/g, "\n");
        var cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          var block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          var event = parseEvent(block);
          if (event.retry) retry = event.retry;
          if (event.data && event.event === "message") {
            try {
              receive([JSON.parse(event.data)]);
            } catch (e) {
              /* a malformed event is skipped; the seq resumes the rest */
            }
          }
        }
      }
      return { ok: true, retry: retry };
    } catch (e) {
      return { ok: false, status: 0 };
    } finally {
      clearTimeout(watchdog);
    }
  }

  function parseEvent(block) {
    var event = { event: "message", data: "", retry: 0 };
    var data = [];
    block.split("\n").forEach(function (line) {
      if (!line || line.charAt(0) === ":") return; // a comment: the ping
      var colon = line.indexOf(":");
      var field = colon < 0 ? line : line.slice(0, colon);
      var value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "data") data.push(value);
      else if (field === "event") event.event = value;
      else if (field === "retry" && /^\d+$/.test(value)) event.retry = Number(value);
    });
    event.data = data.join("\n");
    return event;
  }

  // The long poll: GET /messages?after=<seq>&wait=25.
  async function pollOnce(wait) {
    var controller = (state.live = new AbortController());
    var timer = setTimeout(function () {
      controller.abort();
    }, (wait + 15) * 1000);
    try {
      var answer = await call(
        "GET",
        "/messages?after=" + state.lastSeq + (wait ? "&wait=" + wait : ""),
        undefined,
        { signal: controller.signal }
      );
      if (answer.status === 200) {
        setOffline(false);
        receive(answer.data.messages || []);
        return { ok: true, more: (answer.data.messages || []).length > 0 && answer.data.last > state.lastSeq };
      }
      handleAuthFailure(answer);
      return { ok: false, status: answer.status, retryAfter: answer.retryAfter };
    } catch (e) {
      return { ok: false, status: 0 };
    } finally {
      clearTimeout(timer);
    }
  }

  // History first (a plain GET), then live: the stream, or the long poll
  // after two stream attempts in a row failed (a proxy that buffers or cuts it).
  async function sync() {
    for (var page = 0; page < 50; page++) {
      var first = await pollOnce(0);
      if (!first.ok || !first.more) break;
    }
    var streamFailures = 0;
    var errors = 0;
    var polls = 0;
    var canStream = typeof ReadableStream !== "undefined" && typeof TextDecoder !== "undefined";
    for (;;) {
      if (!state.token) return;
      var result;
      if (canStream && streamFailures < 2) {
        result = await streamOnce();
        if (result.ok) {
          streamFailures = 0;
          errors = 0;
          // a stream ends every stream_seconds by design: back at once (a reply
          // in the gap would wait), never sooner than the server asks after errors
          await sleep(Math.min(result.retry, 250));
          continue;
        }
        // failures while the browser is offline say nothing about the stream
        if (navigator.onLine !== false) streamFailures++;
      } else {
        result = await pollOnce(25);
        if (result.ok) {
          errors = 0;
          // now and then give the stream another chance
          if (++polls >= 20) {
            polls = 0;
            streamFailures = 0;
          }
          continue;
        }
      }
      errors++;
      if (result.status === 0 || result.status >= 500) setOffline(true);
      await sleep(result.retryAfter ? result.retryAfter * 1000 : backoff(errors));
    }
  }

  function startSync() {
    if (state.syncing || !state.token || !state.config) return;
    state.syncing = true;
    sync().then(
      function () {
        state.syncing = false;
      },
      function () {
        state.syncing = false;
      }
    );
  }

  // ---------------------------------------------------------------- reading
  function operatorSeqs() {
    var out = [];
    state.messages.forEach(function (message) {
      if (message.from === "operator" || message.direction === "out") out.push(message.seq);
    });
    return out;
  }

  function updateBadge() {
    if (!ui.badge) return;
    var read = Number(load("read", 0)) || 0;
    var unread = state.open
      ? 0
      : operatorSeqs().filter(function (seq) {
          return seq > read;
        }).length;
    ui.badge.textContent = unread > 99 ? "99+" : String(unread);
    ui.badge.hidden = unread === 0;
    var label = state.open ? T.close : T.open;
    ui.launcher.setAttribute("aria-label", unread ? label + " (" + T.unread(unread) + ")" : label);
  }

  // Operator messages seen in the open panel: "read" for the CRM.
  function markRead() {
    if (!state.open || document.visibilityState === "hidden" || !state.token) return;
    var seqs = operatorSeqs();
    if (!seqs.length) return;
    var top = Math.max.apply(null, seqs);
    if (top > (Number(load("read", 0)) || 0)) save("read", top);
    if (top <= state.readPosted) return;
    state.readPosted = top;
    call("POST", "/read", { seq: top }).then(
      function (answer) {
        if (answer.status >= 300 && state.readPosted === top) state.readPosted = 0;
      },
      function () {
        if (state.readPosted === top) state.readPosted = 0; // the next look posts it again
      }
    );
  }

  // ---------------------------------------------------------------- sending
  function dropFromOutbox(id) {
    state.outbox = state.outbox.filter(function (item) {
      return item.id !== id;
    });
    save("outbox", state.outbox);
  }

  function consentGiven() {
    var cfg = state.config;
    if (!cfg || cfg.consent !== "checkbox") return true;
    var given = load("consent", null);
    return !!(given && given.version === (cfg.consent_version || ""));
  }

  function introDone() {
    var cfg = state.config;
    if (!cfg || cfg.prechat === "off" || !fields().length) return true;
    var profile = load("profile", null);
    if (!profile) return false;
    if (cfg.prechat === "required") return !!(profile.phone || profile.email);
    return true;
  }

  function fields() {
    var cfg = state.config;
    return (cfg.prechat_fields || []).filter(function (name) {
      return name === "name" || name === "phone" || name === "email";
    });
  }

  // A message to send; a pressed choice is its id alone (choice: true): the
  // files waiting in the composer stay for the next typed message.
  function queue(text, choice) {
    if (!consentGiven() || !introDone()) {
      showIntro();
      return false; // no message leaves before the visitor agreed
    }
    var item = {
      id: clientId(),
      text: text,
      files: choice ? [] : state.files.slice(),
      context: context(),
      at: new Date().toISOString(),
    };
    if (!choice) {
      state.files = [];
      renderFiles();
    }
    state.outbox.push(item);
    save("outbox", state.outbox);
    showPending(item);
    flush();
    return true;
  }

  // The outbox, oldest first, each message retried with its own id until the
  // API takes it (2xx): a retry is the same message, never a second one.
  async function flush() {
    if (state.sending) return;
    state.sending = true;
    try {
      var attempt = 0;
      while (state.outbox.length) {
        var item = state.outbox[0];
        try {
          await session(false);
        } catch (e) {
          markPending(item.id, "failed", T.failed);
          return;
        }
        var body = {
          id: item.id,
          text: item.text,
          files: item.files.map(function (file) {
            return file.ref;
          }),
          context: item.context,
        };
        var profile = load("profile", null);
        if (profile && !profile.sent && (profile.name || profile.phone || profile.email)) {
          body.profile = { name: profile.name || "", phone: profile.phone || "", email: profile.email || "" };
        }
        var consent = load("consent", null);
        if (consent && !consent.sent) {
          body.consent = { given: true, version: consent.version, at: consent.at, page: consent.page };
        }
        var answer;
        try {
          answer = await call("POST", "/messages", body);
        } catch (e) {
          answer = { status: 0, data: {} };
        }
        if (answer.status >= 200 && answer.status < 300) {
          attempt = 0;
          if (body.profile) save("profile", Object.assign({}, profile, { sent: true }));
          if (body.consent) save("consent", Object.assign({}, consent, { sent: true }));
          dropFromOutbox(item.id); // by id: the stream may have taken it off already
          markPending(item.id, "sent", T.sent);
          setOffline(false);
          continue;
        }
        var code = answer.data.error;
        if (answer.status === 401) {
          await session(true).catch(function () {});
          continue;
        }
        if (code === "consent_required" || code === "prechat_required") {
          // the server forgot or never had it: ask again, then this message goes
          if (code === "consent_required") save("consent", null);
          else save("profile", null);
          markPending(item.id, "waiting", T.notSent);
          showIntro();
          return;
        }
        if (answer.status >= 400 && answer.status < 500 && answer.status !== 429 && answer.status !== 408) {
          // refused for good (too long, a bad file): say so, keep the rest going
          dropFromOutbox(item.id);
          markPending(item.id, "failed", answer.data.error === "text_too_long" ? T.tooLong : T.notSent);
          continue;
        }
        attempt++;
        markPending(item.id, "retrying", answer.status === 429 ? T.tooMany : T.retrying);
        if (answer.status === 0 || answer.status >= 500) setOffline(true);
        await sleep(answer.retryAfter ? answer.retryAfter * 1000 : backoff(attempt));
      }
    } finally {
      state.sending = false;
    }
  }

  // ---------------------------------------------------------------- files
  function acceptTypes() {
    return (state.config.file_types || []).join(",");
  }

  async function upload(file) {
    showError("");
    var limit = Number(state.config.max_file_bytes) || 0;
    if (limit && file.size > limit) {
      showError(T.tooLarge(formatSize(limit)));
      return;
    }
    try {
      await session(false);
    } catch (e) {
      showError(T.uploadFailed);
      return;
    }
    ui.status.textContent = T.uploading;
    var form = new FormData();
    form.append("file", file, file.name);
    var answer;
    try {
      answer = await call("POST", "/uploads", form);
    } catch (e) {
      answer = { status: 0, data: {} };
    }
    ui.status.textContent = "";
    if (answer.status === 201 || answer.status === 200) {
      state.files.push({ ref: answer.data.ref, name: answer.data.name || file.name, size: answer.data.size || file.size });
      renderFiles();
      return;
    }
    var code = answer.data.error;
    if (answer.status === 413 || code === "file_too_large") showError(T.tooLarge(formatSize(limit || 10485760)));
    else if (answer.status === 415 || code === "file_type_not_allowed") showError(T.badType);
    else if (answer.status === 429) showError(T.tooMany);
    else showError(answer.data.message ? T.uploadFailed + " (" + String(answer.data.message) + ")" : T.uploadFailed);
  }

  // ---------------------------------------------------------------- UI
  var ui = {};

  var CSS = [
    ":host{all:initial!important;display:block!important;position:static!important}",
    "*,*::before,*::after{box-sizing:border-box}",
    ".root{font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,Arial,sans-serif;color:#1f2933;",
    "-webkit-text-size-adjust:100%}",
    "[hidden]{display:none!important}",
    "button,input,textarea{font:inherit;color:inherit;margin:0}",
    "button{cursor:pointer}",
    ":focus-visible{outline:3px solid #0b57d0;outline-offset:2px}",
    ".launcher{position:fixed;right:20px;bottom:20px;z-index:2147483000;width:60px;height:60px;",
    "border:0;border-radius:50%;background:var(--c);color:var(--fg);display:flex;align-items:center;",
    "justify-content:center;box-shadow:0 4px 16px rgba(0,0,0,.25)}",
    ".launcher svg{width:28px;height:28px;fill:currentColor}",
    ".launcher .when-open,.is-open .launcher svg{display:none}.is-open .launcher .when-open{display:block}",
    ".badge{position:absolute;top:-4px;right:-4px;min-width:22px;height:22px;padding:0 6px;",
    "border-radius:11px;background:#c5221f;color:#fff;font-size:12px;font-weight:700;line-height:22px;",
    "text-align:center;border:2px solid #fff}",
    ".panel{position:fixed;right:20px;bottom:92px;z-index:2147483001;width:370px;height:560px;",
    "max-height:calc(100vh - 112px);background:#fff;border-radius:14px;display:flex;flex-direction:column;",
    "overflow:hidden;box-shadow:0 8px 32px rgba(0,0,0,.28)}",
    ".head{display:flex;align-items:center;gap:8px;padding:12px 8px 12px 16px;background:var(--c);color:var(--fg)}",
    ".title{flex:1;font-size:16px;font-weight:600;margin:0;overflow-wrap:break-word}",
    ".icon-btn{width:40px;height:40px;flex:none;border:0;border-radius:8px;background:transparent;",
    "display:flex;align-items:center;justify-content:center;padding:0}",
    ".icon-btn svg{width:22px;height:22px;fill:currentColor}",
    ".head .icon-btn{color:var(--fg)}",
    ".notice{margin:0;padding:6px 16px;background:#fff4ce;color:#4d3800;font-size:13px}",
    ".log{flex:1;overflow-y:auto;padding:12px;display:flex;flex-direction:column;gap:8px;background:#fff}",
    ".list,.pending{display:flex;flex-direction:column;gap:8px}",
    ".msg{max-width:85%;padding:8px 12px;border-radius:14px;white-space:pre-wrap;overflow-wrap:anywhere}",
    ".msg.op{align-self:flex-start;background:#eef1f4;color:#1f2933;border-bottom-left-radius:4px}",
    ".msg.me{align-self:flex-end;background:var(--c);color:var(--fg);border-bottom-right-radius:4px}",
    ".msg.op a{color:#0b4fb3}",
    ".msg.me a{color:inherit}",
    ".meta{display:block;margin-top:2px;font-size:12px;white-space:normal}",
    ".msg.op .meta{color:#4a5563}",
    ".msg.failed .meta{font-weight:700}",
    ".files-in{display:block;margin-top:4px}",
    ".choices{display:flex;flex-wrap:wrap;gap:6px;margin-top:8px;white-space:normal}",
    ".choice{padding:6px 12px;border:1px solid var(--c);border-radius:16px;background:#fff;color:#1f2933;",
    "text-align:left;overflow-wrap:anywhere}",
    ".choice[aria-pressed=true]{background:var(--c);color:var(--fg)}",
    ".choice:disabled{cursor:default}",
    ".choice:disabled:not([aria-pressed=true]){border-color:#b8c1cb;color:#4a5563}",
    ".files-in a,.files-in span{display:block}",
    ".sr{position:absolute!important;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}",
    ".intro{padding:12px 16px;border-top:1px solid #d5dbe1;display:flex;flex-direction:column;gap:8px;",
    "overflow-y:auto;max-height:70%}",
    ".intro p{margin:0}",
    ".intro .error{padding:0}",
    ".intro label.field{display:flex;flex-direction:column;gap:2px;font-size:13px;color:#3b4651}",
    ".intro input[type=text],.intro input[type=tel],.intro input[type=email]{width:100%;padding:8px 10px;",
    "border:1px solid #8a96a3;border-radius:8px;background:#fff;color:#1f2933}",
    ".consent{display:flex;gap:8px;align-items:flex-start;font-size:13px}",
    ".consent input{margin-top:3px;width:18px;height:18px;flex:none}",
    ".consent a{color:#0b4fb3}",
    ".row{display:flex;gap:8px}",
    ".primary{flex:1;padding:9px 12px;border:0;border-radius:8px;background:var(--c);color:var(--fg);font-weight:600}",
    ".secondary{padding:9px 12px;border:1px solid #8a96a3;border-radius:8px;background:#fff;color:#1f2933}",
    ".error{margin:0;padding:6px 16px;color:#b3261e;font-size:13px}",
    ".status{margin:0;padding:0 16px;color:#4a5563;font-size:13px}",
    ".chips{display:flex;flex-wrap:wrap;gap:6px;padding:0 12px}",
    ".chips:empty{display:none}",
    ".chip{display:flex;align-items:center;gap:4px;padding:2px 4px 2px 10px;border-radius:14px;",
    "background:#eef1f4;font-size:13px;max-width:100%}",
    ".chip span{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}",
    ".chip .icon-btn{width:28px;height:28px;color:#3b4651}",
    ".chip .icon-btn svg{width:16px;height:16px}",
    ".composer{display:flex;align-items:flex-end;gap:4px;padding:8px;border-top:1px solid #d5dbe1}",
    ".composer textarea{flex:1;min-width:0;resize:none;border:1px solid #8a96a3;border-radius:10px;",
    "padding:8px 10px;max-height:120px;background:#fff;color:#1f2933;line-height:1.4}",
    ".composer .attach{color:#3b4651}",
    ".composer .send{background:var(--c);color:var(--fg);border-radius:50%}",
    "@media (max-width:480px){.panel{top:0;left:0;right:0;bottom:0;width:100%;height:100%;max-height:none;",
    "border-radius:0}.root.is-open .launcher{display:none}}",
    "@media (prefers-reduced-motion:no-preference){.launcher{transition:transform .15s}",
    ".launcher:hover{transform:scale(1.05)}}",
  ].join("");

  function build(cfg) {
    var host = document.createElement("crm-bridge-chat");
    var root = host.attachShadow({ mode: "open" });
    var color = /^#[0-9a-fA-F]{6}$/.test(cfg.color || "") ? cfg.color : "#1f6feb";
    var style = document.createElement("style");
    // the colour is checked above: nothing but #rrggbb reaches the stylesheet
    style.textContent = ":host{--c:" + color + ";--fg:" + textOn(color) + "}" + CSS;
    root.appendChild(style);

    var title = String(cfg.title || "").trim() || T.title;
    var greeting = (cfg.greeting && cfg.greeting[LANG]) || T.greeting;

    ui.wrap = el("div", { className: "root", lang: LANG });
    ui.badge = el("span", { className: "badge", hidden: true, "aria-hidden": "true" });
    ui.launcher = el(
      "button",
      { type: "button", className: "launcher", "aria-label": T.open, "aria-expanded": "false", "aria-controls": "panel" },
      [icon(ICON_CHAT), icon(ICON_CLOSE), ui.badge]
    );
    ui.launcher.lastChild.previousSibling.setAttribute("class", "when-open");
    ui.close = el("button", { type: "button", className: "icon-btn close", "aria-label": T.close }, [icon(ICON_CLOSE)]);
    ui.notice = el("p", { className: "notice", role: "status", hidden: true, text: T.offline });
    ui.list = el("div", { className: "list" }, [
      el("div", { className: "msg op greeting" }, [
        el("span", { className: "sr", text: T.operator + ": " }),
        el("span", { className: "text", text: greeting }),
      ]),
    ]);
    ui.pendingList = el("div", { className: "pending" });
    ui.log = el("div", { className: "log", role: "log", "aria-live": "polite", "aria-label": T.log, tabindex: "0" }, [
      ui.list,
      ui.pendingList,
    ]);
    ui.intro = el("form", { className: "intro", hidden: true, novalidate: true });
    ui.chips = el("div", { className: "chips" });
    ui.error = el("p", { className: "error", role: "alert", hidden: true });
    ui.status = el("p", { className: "status", role: "status" });
    ui.file = el("input", { type: "file", hidden: true, accept: acceptTypes(), tabindex: "-1", "aria-hidden": "true" });
    ui.attach = el("button", { type: "button", className: "icon-btn attach", "aria-label": T.attach }, [icon(ICON_ATTACH)]);
    ui.text = el("textarea", {
      rows: "1",
      maxlength: "4000",
      "aria-label": T.message,
      placeholder: T.placeholder,
      enterkeyhint: "send",
    });
    ui.send = el("button", { type: "submit", className: "icon-btn send", "aria-label": T.send }, [icon(ICON_SEND)]);
    ui.composer = el("form", { className: "composer" }, [ui.attach, ui.file, ui.text, ui.send]);
    ui.panel = el("div", { className: "panel", id: "panel", role: "dialog", "aria-label": title, hidden: true }, [
      el("div", { className: "head" }, [el("h2", { className: "title", text: title }), ui.close]),
      ui.notice,
      ui.log,
      ui.intro,
      ui.chips,
      ui.error,
      ui.status,
      ui.composer,
    ]);
    ui.wrap.appendChild(ui.panel);
    ui.wrap.appendChild(ui.launcher);
    root.appendChild(ui.wrap);

    ui.launcher.addEventListener("click", function () {
      setOpen(!state.open);
    });
    ui.close.addEventListener("click", function () {
      setOpen(false);
    });
    ui.panel.addEventListener("keydown", function (event) {
      if (event.key === "Escape") {
        event.stopPropagation();
        setOpen(false);
      }
    });
    ui.text.addEventListener("keydown", function (event) {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        submit();
      }
    });
    ui.text.addEventListener("input", autosize);
    ui.composer.addEventListener("submit", function (event) {
      event.preventDefault();
      submit();
    });
    ui.attach.addEventListener("click", function () {
      ui.file.click();
    });
    ui.file.addEventListener("change", function () {
      var chosen = Array.prototype.slice.call(ui.file.files || []);
      ui.file.value = "";
      chosen.slice(0, Math.max(0, 5 - state.files.length)).forEach(function (file) {
        upload(file);
      });
    });
    document.addEventListener("visibilitychange", markRead);
    window.addEventListener("storage", onStorage);

    (document.body || document.documentElement).appendChild(host);
    state.outbox.forEach(showPending); // left by a reload or another page: still sent once
    updateBadge();
  }

  function autosize() {
    ui.text.style.height = "auto";
    ui.text.style.height = Math.min(120, ui.text.scrollHeight + 2) + "px";
  }

  function submit() {
    var text = ui.text.value.replace(/^\s+|\s+$/g, "");
    if (!text && !state.files.length) return;
    if (text.length > 4000) {
      showError(T.tooLong);
      return;
    }
    showError("");
    if (queue(text)) {
      ui.text.value = "";
      autosize();
      ui.text.focus();
      refreshChoices(); // a typed answer: the menu above is done
    }
  }

  function setOpen(open) {
    state.open = open;
    ui.panel.hidden = !open;
    ui.wrap.classList.toggle("is-open", open);
    ui.launcher.setAttribute("aria-expanded", open ? "true" : "false");
    if (open) {
      if (!consentGiven() || !introDone()) showIntro();
      else hideIntro();
      scrollDown();
      var target = ui.intro.hidden ? ui.text : ui.intro.querySelector("input");
      if (target) target.focus();
      markRead();
    } else {
      ui.launcher.focus();
    }
    updateBadge();
  }

  function scrollDown() {
    ui.log.scrollTop = ui.log.scrollHeight;
  }

  function setOffline(offline) {
    if (ui.notice) ui.notice.hidden = !offline;
  }

  function showError(text) {
    ui.error.textContent = text;
    ui.error.hidden = !text;
  }

  // The pre-chat form and the consent box, in place of the composer.
  function showIntro() {
    var cfg = state.config;
    // a fresh form each time: one submit listener, no stale inputs
    var form = el("form", { className: "intro", novalidate: true });
    ui.panel.replaceChild(form, ui.intro);
    ui.intro = form;
    var askFields = !introDone();
    var askConsent = !consentGiven();
    var inputs = {};
    var saved = load("profile", null) || {};
    ui.intro.appendChild(el("p", { text: askFields ? T.introText : T.introConsentOnly }));
    if (askFields) {
      fields().forEach(function (name) {
        var type = name === "phone" ? "tel" : name === "email" ? "email" : "text";
        var input = el("input", {
          type: type,
          name: name,
          autocomplete: name === "phone" ? "tel" : name,
          maxlength: name === "name" ? "100" : "200",
          inputmode: name === "phone" ? "tel" : null,
        });
        input.value = saved[name] || "";
        inputs[name] = input;
        ui.intro.appendChild(el("label", { className: "field" }, [el("span", { text: T[name] }), input]));
      });
    }
    var box = null;
    if (askConsent) {
      box = el("input", { type: "checkbox", name: "consent" });
      var words = el("span", { text: ((cfg.consent_text && cfg.consent_text[LANG]) || T.consent) + " " });
      var privacy = safeUrl(cfg.privacy_url || "");
      if (privacy) {
        words.appendChild(el("a", { href: privacy, target: "_blank", rel: "noopener noreferrer", text: T.privacy }));
      }
      ui.intro.appendChild(el("label", { className: "consent" }, [box, words]));
    }
    var problem = el("p", { className: "error", role: "alert", hidden: true });
    var start = el("button", { type: "submit", className: "primary", text: T.start });
    var row = el("div", { className: "row" }, [start]);
    if (askFields && cfg.prechat === "optional") {
      var skip = el("button", { type: "button", className: "secondary", text: T.skip });
      skip.addEventListener("click", function () {
        finish({ skipped: true });
      });
      row.appendChild(skip);
    }
    ui.intro.appendChild(problem);
    ui.intro.appendChild(row);

    function finish(profile) {
      if (box && !box.checked) {
        problem.textContent = T.needConsent;
        problem.hidden = false;
        box.focus();
        return;
      }
      if (box) save("consent", { version: cfg.consent_version || "", at: new Date().toISOString(), page: String(window.location.href).slice(0, 2000) });
      if (askFields) save("profile", profile);
      hideIntro();
      ui.text.focus();
      flush(); // a message held for the form goes now
    }

    ui.intro.addEventListener("submit", function (event) {
      event.preventDefault();
      var profile = {};
      Object.keys(inputs).forEach(function (name) {
        profile[name] = inputs[name].value.replace(/^\s+|\s+$/g, "");
      });
      var complaint = "";
      if (profile.phone && !/^\+?[\d\s().-]{5,25}$/.test(profile.phone)) complaint = T.badPhone;
      else if (profile.email && !/^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(profile.email)) complaint = T.badEmail;
      else if (askFields && cfg.prechat === "required" && !profile.phone && !profile.email) complaint = T.needContact;
      if (complaint) {
        problem.textContent = complaint;
        problem.hidden = false;
        return;
      }
      finish(profile);
    });
    ui.intro.hidden = false;
    ui.composer.hidden = true;
    ui.chips.hidden = true;
  }

  function hideIntro() {
    ui.intro.hidden = true;
    ui.composer.hidden = false;
    ui.chips.hidden = false;
  }

  function renderFiles() {
    while (ui.chips.firstChild) ui.chips.removeChild(ui.chips.firstChild);
    state.files.forEach(function (file, index) {
      var remove = el("button", { type: "button", className: "icon-btn", "aria-label": T.removeFile + " " + file.name }, [
        icon(ICON_CLOSE),
      ]);
      remove.addEventListener("click", function () {
        state.files.splice(index, 1);
        renderFiles();
        ui.text.focus();
      });
      ui.chips.appendChild(el("div", { className: "chip" }, [el("span", { text: file.name + " · " + formatSize(file.size) }), remove]));
    });
  }

  function renderAttachments(list) {
    if (!list || !list.length) return null;
    var box = el("span", { className: "files-in" });
    list.forEach(function (file) {
      var name = String(file.file_name || file.name || file.kind || "file");
      var label = "📎 " + name + (file.size ? " · " + formatSize(Number(file.size)) : "");
      var href = file.url ? safeUrl(file.url) : null;
      box.appendChild(
        href ? el("a", { href: href, target: "_blank", rel: "noopener noreferrer", text: label }) : el("span", { text: label })
      );
    });
    return box;
  }

  function renderMessage(message) {
    var mine = message.from ? message.from === "visitor" : message.direction === "in";
    var node = el("div", { className: "msg " + (mine ? "me" : "op"), "data-seq": message.seq });
    node.appendChild(el("span", { className: "sr", text: (mine ? T.you : T.operator) + ": " }));
    var text = String(message.text || "");
    if (text) node.appendChild(el("span", { className: "text" }, [mine ? document.createTextNode(text) : linkified(text)]));
    var files = renderAttachments(message.attachments);
    if (files) node.appendChild(files);
    if (!mine) {
      var choices = renderChoices(message.buttons);
      if (choices) node.appendChild(choices);
    }
    var time = formatTime(message.sent_at);
    if (time) node.appendChild(el("span", { className: "meta", text: time }));
    return node;
  }

  // A reply's choices (a menu, a rating) as buttons: a press sends the
  // choice's id as the visitor's message, exactly what they would type.
  function renderChoices(list) {
    if (!Array.isArray(list) || !list.length || list.length > 10) return null;
    var group = el("div", { className: "choices", role: "group", "aria-label": T.choices });
    list.forEach(function (choice) {
      var id = choice && typeof choice.id === "string" ? choice.id : "";
      if (!id || id.length > 64) return;
      var label = String(choice.label || id).slice(0, 100);
      var button = el("button", { type: "button", className: "choice", "data-id": id, "aria-pressed": "false", text: label });
      button.addEventListener("click", function () {
        choose(group, button);
      });
      group.appendChild(button);
    });
    return group.childNodes.length ? group : null;
  }

  function choose(group, button) {
    if (button.disabled || group.getAttribute("data-done")) return;
    showError("");
    if (!queue(button.getAttribute("data-id"), true)) return; // the form first
    group.setAttribute("data-done", "true");
    markChoice(group, button.getAttribute("data-id"));
  }

  // The pressed one shown pressed; none of the group's can be pressed again.
  function markChoice(group, id) {
    Array.prototype.forEach.call(group.querySelectorAll(".choice"), function (button) {
      button.disabled = true;
      if (id !== null) button.setAttribute("aria-pressed", button.getAttribute("data-id") === id ? "true" : "false");
    });
  }

  // Only the last message's choices can be pressed, while nothing is
  // pending; a choice answered (the visitor's next message is one of the
  // ids, pressed or typed) shows which.
  function refreshChoices() {
    var ordered = [];
    state.messages.forEach(function (message) {
      ordered.push(message);
    });
    ordered.sort(function (a, b) {
      return a.seq - b.seq;
    });
    ordered.forEach(function (message, index) {
      var group = message.node && message.node.querySelector(".choices");
      if (!group) return;
      var next = ordered[index + 1];
      if (!next && !group.getAttribute("data-done") && !state.pending.size) {
        Array.prototype.forEach.call(group.querySelectorAll(".choice"), function (button) {
          button.disabled = false;
        });
        return;
      }
      var answered = next && next.from === "visitor" ? String(next.text || "") : null;
      group.setAttribute("data-done", "true");
      markChoice(group, answered !== null && hasChoice(group, answered) ? answered : null);
    });
  }

  function hasChoice(group, id) {
    return Array.prototype.some.call(group.querySelectorAll(".choice"), function (button) {
      return button.getAttribute("data-id") === id;
    });
  }

  // In seq order: a late-arriving older message goes before newer ones.
  function placeMessage(message) {
    var atBottom = ui.log.scrollHeight - ui.log.scrollTop - ui.log.clientHeight < 40;
    var after = null;
    state.messages.forEach(function (other) {
      if (other.seq > message.seq && other.node && other.node.parentNode === ui.list) {
        if (!after || other.seq < Number(after.getAttribute("data-seq"))) after = other.node;
      }
    });
    ui.list.insertBefore(message.node, after);
    if (atBottom || !message.from || message.from === "visitor") scrollDown();
  }

  function showPending(item) {
    if (state.pending.has(item.id)) return;
    var node = el("div", { className: "msg me pending-msg", "data-client-id": item.id });
    node.appendChild(el("span", { className: "sr", text: T.you + ": " }));
    if (item.text) node.appendChild(el("span", { className: "text", text: item.text }));
    var files = renderAttachments(
      item.files.map(function (file) {
        return { file_name: file.name, size: file.size };
      })
    );
    if (files) node.appendChild(files);
    node.appendChild(el("span", { className: "meta", text: T.sending }));
    state.pending.set(item.id, node);
    ui.pendingList.appendChild(node);
    scrollDown();
  }

  function markPending(id, status, text) {
    var node = state.pending.get(id);
    if (!node) return;
    node.classList.toggle("failed", status === "failed");
    node.setAttribute("data-status", status);
    var meta = node.querySelector(".meta");
    if (meta) meta.textContent = text;
  }

  function onStorage(event) {
    if (!event.key || event.key.indexOf(NS) !== 0) return;
    var name = event.key.slice(NS.length);
    if (name === "token") {
      // another tab started (or renewed) the conversation: follow it here
      var token = load("token", null);
      if (token && token !== state.token) {
        var visitor = load("visitor", null);
        if (visitor !== state.visitor) resetConversation();
        state.token = token;
        state.visitor = visitor;
        startSync();
      }
    } else if (name === "read") {
      updateBadge();
    }
  }

  // ---------------------------------------------------------------- start
  async function start() {
    for (var attempt = 1; attempt < 8; attempt++) {
      try {
        // the config is public: no token (and, cross-origin, no preflight)
        var answer = await call("GET", "/config", undefined, { anonymous: true });
        if (answer.status === 200) {
          state.config = answer.data;
          build(answer.data);
          startSync();
          if (state.outbox.length) flush();
          return;
        }
        if (answer.status >= 400 && answer.status < 500 && answer.status !== 429) {
          // a key or an origin this bridge does not serve: nothing to show
          if (window.console) window.console.warn("chat widget: " + (answer.data.message || answer.status));
          return;
        }
      } catch (e) {
        /* the bridge unreachable: try again a little later */
      }
      await sleep(backoff(attempt));
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
