/* The console's charts, drawn as SVG by hand: no library, nothing fetched.

   The page embeds its figures as JSON (<script type="application/json"
   id="kpi-charts">: {name: chart}) and marks where each chart goes
   (<div data-chart="name">). A chart is
     {kind: "line" | "bar", title, labels: [...], series: [{name, values}],
      unit?: "min", empty?: "Nothing in this period."}
   A line chart draws one polyline per series (a dot per point); a bar chart
   one group of bars per label, one bar per series (a null value draws no
   bar). Every point and bar carries its numbers (data-series, data-label,
   data-value, and a <title> tooltip); bars also show their value as text.
   The page's tables show the same figures. */
(function () {
  "use strict";

  var NS = "http://www.w3.org/2000/svg";
  var COLORS = ["#2456d6", "#e07a10", "#1a9b5b", "#b42318", "#7a4cc2", "#0f8a9d", "#8a6d1f", "#c2417a"];
  /* drawn at the box's own width (text stays 11 px), redrawn when it changes */
  var H = 240;
  var PAD = { left: 48, right: 20, top: 30, bottom: 34 };

  function el(name, attrs, parent, text) {
    var node = document.createElementNS(NS, name);
    Object.keys(attrs || {}).forEach(function (key) {
      node.setAttribute(key, String(attrs[key]));
    });
    if (text !== undefined) node.textContent = String(text);
    if (parent) parent.appendChild(node);
    return node;
  }

  /* 0, step, 2 step … up to at least max: a step of 1, 2 or 5 × 10^k, about four steps. */
  function ticks(max) {
    if (!(max > 0)) return [0, 1];
    var raw = max / 4;
    var power = Math.pow(10, Math.floor(Math.log(raw) / Math.LN10));
    var step = [1, 2, 5, 10].map(function (m) { return m * power; }).filter(function (s) { return s >= raw; })[0];
    var out = [];
    for (var v = 0; v < max + step / 2; v += step) out.push(+v.toFixed(6));
    if (out[out.length - 1] < max) out.push(+(out[out.length - 1] + step).toFixed(6));
    return out;
  }

  function number(v) {
    if (v === null || v === undefined) return "—";
    return Math.round(v) === v ? String(v) : v.toFixed(1);
  }

  /* "2026-12-07 10:00" -> "10:00" (the date when it changes), "2026-12-07" -> "12-07". */
  function shortLabels(labels) {
    var lastDay = null;
    return labels.map(function (label) {
      var parts = String(label).split(" ");
      if (parts.length === 2 && /^\d{4}-\d{2}-\d{2}$/.test(parts[0])) {
        var day = parts[0];
        var shown = day !== lastDay ? day.slice(5) + " " + parts[1] : parts[1];
        lastDay = day;
        return shown;
      }
      return /^\d{4}-\d{2}-\d{2}$/.test(label) ? String(label).slice(5) : String(label);
    });
  }

  function frame(box, chart, max) {
    box.textContent = "";
    var W = Math.max(280, Math.round(box.clientWidth || 720));
    var svg = el("svg", { viewBox: "0 0 " + W + " " + H, width: W, height: H, role: "img", "aria-label": chart.title || "", class: "chart chart-" + chart.kind }, box);
    el("title", {}, svg, chart.title || "");
    var plot = { x: PAD.left, y: PAD.top, w: W - PAD.left - PAD.right, h: H - PAD.top - PAD.bottom };
    var scale = ticks(max);
    var top = scale[scale.length - 1];
    var axis = el("g", { class: "axis y" }, svg);
    scale.forEach(function (v) {
      var y = plot.y + plot.h - (v / top) * plot.h;
      el("line", { x1: plot.x, x2: plot.x + plot.w, y1: y, y2: y, stroke: v === 0 ? "#9aa3b2" : "#e6e9ef", "stroke-width": 1 }, axis);
      el("text", { x: plot.x - 6, y: y + 4, "text-anchor": "end", fill: "#5d6678" }, axis, number(v));
    });
    if (chart.unit) el("text", { x: 4, y: PAD.top - 12, fill: "#5d6678" }, axis, chart.unit);
    legend(svg, chart.series);
    return { svg: svg, plot: plot, top: top };
  }

  function legend(svg, series) {
    var g = el("g", { class: "legend" }, svg);
    var x = PAD.left;
    series.forEach(function (s, i) {
      var item = el("g", { class: "legend-item", "data-series": s.name }, g);
      el("rect", { x: x, y: 8, width: 12, height: 12, rx: 2, fill: COLORS[i % COLORS.length] }, item);
      el("text", { x: x + 16, y: 18, fill: "#1d2330" }, item, s.name);
      x += 28 + String(s.name).length * 7;
    });
  }

  /* the x axis' labels, as many as fit (about 70 px each); a label at an
     edge of the plot is anchored inside it */
  function xLabels(svg, plot, labels, centre) {
    var g = el("g", { class: "axis x" }, svg);
    var shown = shortLabels(labels);
    var every = Math.max(1, Math.ceil(labels.length / Math.max(2, Math.floor(plot.w / 70))));
    labels.forEach(function (label, i) {
      if (i % every !== 0) return;
      var x = centre(i);
      var anchor = x - plot.x < 24 ? "start" : plot.x + plot.w - x < 24 ? "end" : "middle";
      el("text", { x: x, y: plot.y + plot.h + 16, "text-anchor": anchor, fill: "#5d6678", "data-label": label }, g, shown[i]);
    });
  }

  function emptyNote(svg, plot, chart) {
    el("text", { x: plot.x + plot.w / 2, y: plot.y + plot.h / 2, "text-anchor": "middle", fill: "#5d6678", class: "empty" }, svg, chart.empty || "—");
  }

  function maxOf(series) {
    var max = 0;
    series.forEach(function (s) {
      s.values.forEach(function (v) { if (v !== null && v > max) max = v; });
    });
    return max;
  }

  function drawLine(box, chart) {
    var f = frame(box, chart, maxOf(chart.series));
    var n = chart.labels.length;
    var plot = f.plot;
    if (!n || !chart.series.length) { emptyNote(f.svg, plot, chart); return f.svg; }
    function x(i) { return n === 1 ? plot.x + plot.w / 2 : plot.x + (i / (n - 1)) * plot.w; }
    function y(v) { return plot.y + plot.h - (v / f.top) * plot.h; }
    xLabels(f.svg, plot, chart.labels, x);
    chart.series.forEach(function (s, j) {
      var colour = COLORS[j % COLORS.length];
      var g = el("g", { class: "series", "data-series": s.name }, f.svg);
      var points = s.values.map(function (v, i) { return v === null ? null : x(i).toFixed(1) + "," + y(v).toFixed(1); });
      el("polyline", { points: points.filter(Boolean).join(" "), fill: "none", stroke: colour, "stroke-width": 2, "stroke-linejoin": "round" }, g);
      s.values.forEach(function (v, i) {
        if (v === null) return;
        var dot = el("circle", { class: "point", cx: x(i).toFixed(1), cy: y(v).toFixed(1), r: n > 60 ? 1.5 : 3, fill: colour, "data-series": s.name, "data-label": chart.labels[i], "data-value": v }, g);
        el("title", {}, dot, s.name + " · " + chart.labels[i] + ": " + number(v));
      });
    });
    return f.svg;
  }

  function drawBar(box, chart) {
    var f = frame(box, chart, maxOf(chart.series));
    var n = chart.labels.length;
    var plot = f.plot;
    if (!n || !chart.series.length) { emptyNote(f.svg, plot, chart); return f.svg; }
    var slot = plot.w / n;
    var k = chart.series.length;
    var bar = Math.max(2, Math.min(48, (slot * 0.8) / k));
    function centre(i) { return plot.x + slot * (i + 0.5); }
    xLabels(f.svg, plot, chart.labels, centre);
    chart.series.forEach(function (s, j) {
      var colour = COLORS[j % COLORS.length];
      var g = el("g", { class: "series", "data-series": s.name }, f.svg);
      s.values.forEach(function (v, i) {
        if (v === null || v === undefined) return;
        var h = (v / f.top) * plot.h;
        var x = centre(i) - (bar * k) / 2 + bar * j;
        var rect = el("rect", { class: "bar", x: x.toFixed(1), y: (plot.y + plot.h - h).toFixed(1), width: (bar - 1).toFixed(1), height: h.toFixed(1), fill: colour, "data-series": s.name, "data-label": chart.labels[i], "data-value": v }, g);
        el("title", {}, rect, s.name + " · " + chart.labels[i] + ": " + number(v) + (chart.unit ? " " + chart.unit : ""));
        el("text", { class: "value", x: (x + bar / 2).toFixed(1), y: (plot.y + plot.h - h - 4).toFixed(1), "text-anchor": "middle", fill: "#1d2330", "data-series": s.name, "data-label": chart.labels[i] }, g, number(v));
      });
    });
    return f.svg;
  }

  var KINDS = { line: drawLine, bar: drawBar };

  var drawnWidth = {};

  function drawAll(force) {
    var source = document.getElementById("kpi-charts");
    if (!source) return;
    var charts = JSON.parse(source.textContent || "{}");
    Array.prototype.forEach.call(document.querySelectorAll("[data-chart]"), function (box) {
      var name = box.getAttribute("data-chart");
      var chart = charts[name];
      if (!chart || !KINDS[chart.kind]) return;
      if (!force && drawnWidth[name] === box.clientWidth) return;
      drawnWidth[name] = box.clientWidth;
      KINDS[chart.kind](box, chart);
    });
  }

  var pending = null;
  function onResize() {
    if (pending) clearTimeout(pending);
    pending = setTimeout(function () { pending = null; drawAll(false); }, 150);
  }

  /* The period form: a date typed in means the "Dates" period. */
  function linkForm() {
    var form = document.getElementById("kpi-form");
    var period = document.getElementById("kpi-period");
    if (!form || !period) return;
    Array.prototype.forEach.call(form.querySelectorAll("input[type=date]"), function (input) {
      input.addEventListener("change", function () { period.value = "dates"; });
    });
  }

  window.ConsoleCharts = { line: drawLine, bar: drawBar, drawAll: drawAll, ticks: ticks };

  function start() {
    drawAll(true);
    linkForm();
    window.addEventListener("resize", onResize);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
