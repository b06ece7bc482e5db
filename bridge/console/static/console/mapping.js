/* The mapping editor: line numbers beside the textarea, problems at their
   lines, checked while the admin types (POST .../mapping/validate, JSON,
   600 ms after the last key), a click on a problem selects its line.
   No library; the page works without this script (save checks again). */
(function () {
  "use strict";

  var form = document.getElementById("mapping-form");
  var text = document.getElementById("mapping-text");
  var gutter = document.getElementById("mapping-gutter");
  var list = document.getElementById("mapping-problems");
  var status = document.getElementById("mapping-status");
  var none = document.getElementById("mapping-no-problems");
  if (!form || !text || !gutter) {
    return;
  }
  var words = JSON.parse(form.getAttribute("data-words") || "{}");
  var url = form.getAttribute("data-validate-url");
  var tokenMeta = document.querySelector('meta[name="csrf-token"]');
  var token = tokenMeta ? tokenMeta.getAttribute("content") : "";
  var marks = {}; // line -> "bad" | "warn"
  var timer = null;
  var sent = 0; // the latest request's number: older answers are dropped

  function lineCount() {
    return text.value.split("\n").length;
  }

  function drawGutter() {
    var count = lineCount();
    var parts = [];
    for (var n = 1; n <= count; n += 1) {
      parts.push(marks[n] ? '<div class="' + marks[n] + '">' + n + "</div>" : "<div>" + n + "</div>");
    }
    gutter.innerHTML = parts.join("");
    gutter.scrollTop = text.scrollTop;
  }

  function selectLine(line) {
    var lines = text.value.split("\n");
    var start = 0;
    for (var i = 0; i < line - 1 && i < lines.length; i += 1) {
      start += lines[i].length + 1;
    }
    var end = start + (lines[line - 1] || "").length;
    text.focus();
    text.setSelectionRange(start, end);
    var height = parseFloat(getComputedStyle(text).lineHeight) || 19;
    text.scrollTop = Math.max(0, (line - 3) * height);
    gutter.scrollTop = text.scrollTop;
  }

  function onWhere(event) {
    var link = event.target.closest("[data-line]");
    if (!link || link.tagName !== "A") {
      return;
    }
    event.preventDefault();
    selectLine(parseInt(link.getAttribute("data-line"), 10) || 1);
  }

  function show(problems) {
    marks = {};
    list.textContent = "";
    problems.forEach(function (p) {
      if (!marks[p.line] || p.blocking) {
        marks[p.line] = p.blocking ? "bad" : "warn";
      }
      var item = document.createElement("li");
      item.className = p.blocking ? "blocking" : "advisory";
      item.setAttribute("data-line", p.line);
      var where = document.createElement("a");
      where.href = "#mapping-text";
      where.className = "where";
      where.setAttribute("data-line", p.line);
      where.textContent = (words.line || "line {line}").replace("{line}", p.line);
      item.appendChild(where);
      if (p.key) {
        item.appendChild(document.createTextNode(": "));
        var key = document.createElement("code");
        key.textContent = p.key;
        item.appendChild(key);
      }
      if (p.also && p.also.length) {
        var also = document.createElement("small");
        also.className = "muted";
        also.textContent = " (" + (words.also || "{keys}").replace("{keys}", p.also.join(", ")) + ")";
        item.appendChild(also);
      }
      var rest = (p.exact ? "" : " " + (words.missing || "")) + " \u2014 " + p.message;
      item.appendChild(document.createTextNode(rest));
      if (!p.blocking) {
        var tag = document.createElement("span");
        tag.className = "tag";
        tag.textContent = words.advisory || "advice";
        item.appendChild(document.createTextNode(" "));
        item.appendChild(tag);
      }
      list.appendChild(item);
    });
    if (none) {
      none.hidden = problems.length > 0;
    }
    drawGutter();
  }

  function validate() {
    if (!url || text.readOnly) {
      return;
    }
    var mine = (sent += 1);
    status.textContent = words.checking || "";
    fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: {
        "Content-Type": "application/json",
        Accept: "application/json",
        "X-CSRFToken": token,
      },
      body: JSON.stringify({ text: text.value }),
    })
      .then(function (response) {
        if (!response.ok) {
          throw new Error(String(response.status));
        }
        return response.json();
      })
      .then(function (answer) {
        if (mine !== sent) {
          return;
        }
        status.textContent = "";
        show(answer.problems || []);
      })
      .catch(function () {
        if (mine === sent) {
          status.textContent = words.failed || "";
        }
      });
  }

  // the marks the server drew
  Array.prototype.forEach.call(list.querySelectorAll("li[data-line]"), function (item) {
    var line = parseInt(item.getAttribute("data-line"), 10);
    var bad = item.classList.contains("blocking");
    if (!marks[line] || bad) {
      marks[line] = bad ? "bad" : "warn";
    }
  });

  text.addEventListener("input", function () {
    drawGutter();
    clearTimeout(timer);
    timer = setTimeout(validate, 600);
  });
  text.addEventListener("scroll", function () {
    gutter.scrollTop = text.scrollTop;
  });
  var escaped = false;
  text.addEventListener("keydown", function (event) {
    // Tab indents by two spaces (YAML has no tabs); after Escape, Tab leaves the editor
    if (event.key === "Escape") {
      escaped = true;
      return;
    }
    var indent = event.key === "Tab" && !event.shiftKey && !escaped && !text.readOnly;
    escaped = false;
    if (indent) {
      event.preventDefault();
      var start = text.selectionStart;
      text.setRangeText("  ", start, text.selectionEnd, "end");
      text.dispatchEvent(new Event("input"));
    }
  });
  document.addEventListener("click", onWhere);
  drawGutter();
})();
