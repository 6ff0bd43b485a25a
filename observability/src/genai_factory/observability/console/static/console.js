// GenAI Factory console: plain JS, inline SVG charts, data from the JSON APIs beside this file.
// Every value from the API is written with textContent or an SVG attribute, never as HTML.
"use strict";

(function () {
  const SVG_NS = "http://www.w3.org/2000/svg";
  const COLORS = ["#3461d1", "#e07b39", "#2f8a4c", "#9b51e0", "#c9352b", "#1b998b", "#b7791f", "#6b7385"];
  const TOKEN_KEY = "gf-console-token";
  const state = { live: true, window: 3600, groupBy: "team", selected: null, timer: null };

  // A token passed as /console/#token=... is kept for this tab only and removed from the URL.
  const fragment = new URLSearchParams(window.location.hash.slice(1));
  if (fragment.get("token")) {
    sessionStorage.setItem(TOKEN_KEY, fragment.get("token"));
    history.replaceState(null, "", window.location.pathname + window.location.search);
  }

  async function api(path) {
    const token = sessionStorage.getItem(TOKEN_KEY);
    const headers = token ? { Authorization: "Bearer " + token } : {};
    const response = await fetch("api/" + path, { headers: headers, cache: "no-store" });
    const body = await response.json();
    if (!response.ok) {
      throw new Error(body && body.error ? body.error.message : response.statusText);
    }
    return body;
  }

  // ---- DOM helpers ---------------------------------------------------------------------------
  function $(id) { return document.getElementById(id); }

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const key in attrs) node.setAttribute(key, String(attrs[key]));
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

  function swatch(color) {
    const box = svg("svg", { width: 10, height: 10, class: "swatch" });
    box.appendChild(svg("rect", { width: 10, height: 10, rx: 2, fill: color }));
    return box;
  }

  function legend(container, names) {
    clear(container);
    names.forEach(function (name, i) {
      const item = el("span");
      item.appendChild(swatch(COLORS[i % COLORS.length]));
      item.appendChild(document.createTextNode(name));
      container.appendChild(item);
    });
  }

  // ---- formatting ----------------------------------------------------------------------------
  function fmtMs(ms) {
    if (ms === null || ms === undefined) return "–";
    return ms >= 1000 ? (ms / 1000).toFixed(2) + " s" : ms.toFixed(ms < 10 ? 1 : 0) + " ms";
  }
  function fmtUsd(v) {
    if (v === null || v === undefined) return "–";
    return "$" + (v < 0.01 && v > 0 ? v.toFixed(6) : v.toFixed(2));
  }
  function fmtUsdAxis(v) { return v === 0 ? "$0" : "$" + (v < 1 ? v.toPrecision(2) : v.toFixed(2)); }
  function fmtInt(v) { return v === null || v === undefined ? "–" : Math.round(v).toLocaleString("en-US"); }
  function fmtPct(v) { return v === null || v === undefined ? "–" : (v * 100).toFixed(1) + "%"; }
  function fmtClock(seconds) {
    const d = new Date(seconds * 1000);
    return d.toISOString().slice(11, 16);
  }
  function fmtTime(ns) { return new Date(ns / 1e6).toISOString().replace("T", " ").slice(0, 19); }

  // ---- charts --------------------------------------------------------------------------------
  const W = 600, H = 220, PAD = { left: 64, right: 12, top: 12, bottom: 26 };

  function emptyChart(root, message) {
    clear(root);
    root.appendChild(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }, message));
  }

  function axes(root, x0, x1, yMax, yFormat) {
    const innerW = W - PAD.left - PAD.right, innerH = H - PAD.top - PAD.bottom;
    for (let i = 0; i <= 4; i++) {
      const y = PAD.top + innerH - (innerH * i) / 4;
      root.appendChild(svg("line", { x1: PAD.left, x2: W - PAD.right, y1: y, y2: y, class: "axis" }));
      root.appendChild(svg("text", { x: PAD.left - 6, y: y + 4, "text-anchor": "end" }, yFormat((yMax * i) / 4)));
    }
    const span = Math.max(x1 - x0, 60);
    for (let i = 0; i <= 4; i++) {
      const t = x0 + (span * i) / 4;
      const x = PAD.left + (innerW * i) / 4;
      root.appendChild(svg("text", { x: x, y: H - 8, "text-anchor": "middle" }, fmtClock(t)));
    }
    return {
      x: function (t) { return PAD.left + ((t - x0) / span) * innerW; },
      y: function (v) { return PAD.top + innerH - (yMax > 0 ? (v / yMax) * innerH : 0); },
      barWidth: function (step) { return Math.max(2, (step / span) * innerW - 2); },
    };
  }

  // series: [{name, points: [[t, value], ...]}]
  function lineChart(root, series, yFormat) {
    const points = series.flatMap(function (s) { return s.points; }).filter(function (p) { return p[1] !== null; });
    if (!points.length) return emptyChart(root, "no data in this window");
    clear(root);
    const ts = points.map(function (p) { return p[0]; });
    const yMax = Math.max.apply(null, points.map(function (p) { return p[1]; })) * 1.1 || 1;
    const scale = axes(root, Math.min.apply(null, ts), Math.max.apply(null, ts), yMax, yFormat);
    series.forEach(function (s, i) {
      const valid = s.points.filter(function (p) { return p[1] !== null; });
      if (!valid.length) return;
      const d = valid.map(function (p, j) { return (j ? "L" : "M") + scale.x(p[0]).toFixed(1) + "," + scale.y(p[1]).toFixed(1); }).join(" ");
      const color = COLORS[i % COLORS.length];
      root.appendChild(svg("path", { d: d, fill: "none", stroke: color, "stroke-width": 2, class: "series", "data-series": s.name }));
      valid.forEach(function (p) {
        const dot = svg("circle", { cx: scale.x(p[0]), cy: scale.y(p[1]), r: 2.5, fill: color, class: "point" });
        dot.appendChild(svg("title", {}, s.name + ": " + yFormat(p[1])));
        root.appendChild(dot);
      });
    });
  }

  // buckets: [{t, values: {group: number}}], stacked per bucket
  function stackedBars(root, buckets, groups, step, yFormat) {
    if (!buckets.length) return emptyChart(root, "no spend recorded in this window");
    clear(root);
    const totals = buckets.map(function (b) { return groups.reduce(function (s, g) { return s + (b.values[g] || 0); }, 0); });
    const ts = buckets.map(function (b) { return b.t; });
    const scale = axes(root, Math.min.apply(null, ts), Math.max.apply(null, ts) + step, Math.max.apply(null, totals) * 1.1 || 1, yFormat);
    const width = scale.barWidth(step);
    buckets.forEach(function (b) {
      let base = 0;
      groups.forEach(function (g, i) {
        const v = b.values[g] || 0;
        if (v <= 0) return;
        const yTop = scale.y(base + v), yBottom = scale.y(base);
        const bar = svg("rect", { x: scale.x(b.t), y: yTop, width: width, height: Math.max(1, yBottom - yTop), fill: COLORS[i % COLORS.length], class: "bar", "data-group": g });
        bar.appendChild(svg("title", {}, g + " " + fmtClock(b.t) + ": " + yFormat(v)));
        root.appendChild(bar);
        base += v;
      });
    });
  }

  // items: [{label, value, color}] as horizontal bars
  function barChart(root, items) {
    if (!items.length) return emptyChart(root, "no guard verdicts in this window");
    clear(root);
    const max = Math.max.apply(null, items.map(function (i) { return i.value; })) || 1;
    const rowH = Math.min(28, (H - 10) / items.length);
    items.forEach(function (item, i) {
      const y = 5 + i * rowH;
      const w = ((W - 220) * item.value) / max;
      root.appendChild(svg("text", { x: 150, y: y + rowH / 2 + 4, "text-anchor": "end" }, item.label));
      root.appendChild(svg("rect", { x: 160, y: y + 3, width: Math.max(2, w), height: rowH - 6, fill: item.color, class: "bar" }));
      root.appendChild(svg("text", { x: 166 + w, y: y + rowH / 2 + 4 }, fmtInt(item.value)));
    });
  }

  // ---- panels --------------------------------------------------------------------------------
  const windowQuery = function () { return "window=" + state.window; };
  // Windows of 6 h or more step in whole hours, which the store answers from hourly rollups.
  const stepFor = function () {
    if (state.window >= 21600) return Math.max(3600, Math.round(state.window / 48 / 3600) * 3600);
    return Math.max(60, Math.round(state.window / 60 / 60) * 60);
  };

  async function refreshSummary() {
    const s = await api("summary?" + windowQuery());
    $("t-calls").textContent = fmtInt(s.model_calls);
    $("t-errors").textContent = fmtPct(s.error_rate);
    $("t-tokens").textContent = fmtInt(s.input_tokens) + " / " + fmtInt(s.output_tokens);
    $("t-cost").textContent = fmtUsd(s.cost_usd);
    $("t-cache").textContent = fmtPct(s.cache_hit_rate);
  }

  async function refreshRequests() {
    const body = await api("requests?limit=100");
    const tbody = $("requests").querySelector("tbody");
    clear(tbody);
    body.requests.forEach(function (r) {
      const row = el("tr");
      row.dataset.traceId = r.trace_id;
      if (r.trace_id === state.selected) row.className = "selected";
      const tokens = (r.input_tokens || 0) + (r.output_tokens || 0);
      [fmtTime(r.start_ns), r.name, r.model || "–", r.team_id || "–"].forEach(function (v) { row.appendChild(el("td", v)); });
      row.appendChild(el("td", fmtMs(r.duration_ms), "num"));
      row.appendChild(el("td", tokens ? fmtInt(tokens) : "–", "num"));
      row.appendChild(el("td", r.cost_usd ? fmtUsd(r.cost_usd) : "–", "num"));
      const failed = r.status === "ERROR" || r.errors > 0;
      row.appendChild(el("td", failed ? (r.error_type || "error") : "ok", failed ? "status-ERROR" : "status-OK"));
      row.addEventListener("click", function () { openTrace(r.trace_id); });
      tbody.appendChild(row);
    });
    if (!body.requests.length) {
      const row = el("tr");
      const cell = el("td", "no requests recorded yet", "muted");
      cell.colSpan = 8;
      row.appendChild(cell);
      tbody.appendChild(row);
    }
  }

  function showSpan(span) {
    const tbody = $("span-detail").querySelector("tbody");
    clear(tbody);
    const rows = [["name", span.name], ["span id", span.span_id], ["kind", span.kind], ["status", span.status],
      ["duration", fmtMs(span.duration_ms)]];
    Object.keys(span.attributes).sort().forEach(function (k) {
      const v = span.attributes[k];
      rows.push([k, typeof v === "object" ? JSON.stringify(v) : v]);
    });
    span.events.forEach(function (e) { rows.push(["event " + e.name, JSON.stringify(e.attributes)]); });
    rows.forEach(function (pair) {
      const row = el("tr");
      row.appendChild(el("td", pair[0]));
      row.appendChild(el("td", pair[1]));
      tbody.appendChild(row);
    });
  }

  async function openTrace(traceId) {
    state.selected = traceId;
    document.querySelectorAll("#requests tbody tr").forEach(function (tr) {
      tr.className = tr.dataset.traceId === traceId ? "selected" : "";
    });
    const body = await api("traces/" + encodeURIComponent(traceId));
    $("trace-id").textContent = traceId;
    const spans = body.spans;
    const byId = {};
    spans.forEach(function (s) { byId[s.span_id] = s; });
    const depth = function (s) {
      let d = 0, cur = s;
      while (cur.parent_span_id && byId[cur.parent_span_id] && d < 50) { cur = byId[cur.parent_span_id]; d++; }
      return d;
    };
    const start = Math.min.apply(null, spans.map(function (s) { return s.start_ns; }));
    const end = Math.max.apply(null, spans.map(function (s) { return s.end_ns; }));
    const total = Math.max(end - start, 1);
    const root = $("waterfall");
    clear(root);
    const rowH = 22, labelW = 300, width = root.clientWidth || 1000;
    root.setAttribute("height", String(spans.length * rowH + 8));
    root.setAttribute("viewBox", "0 0 " + width + " " + (spans.length * rowH + 8));
    const barSpace = width - labelW - 80;
    spans.forEach(function (s, i) {
      const y = 4 + i * rowH;
      const x = labelW + ((s.start_ns - start) / total) * barSpace;
      const w = Math.max(2, ((s.end_ns - s.start_ns) / total) * barSpace);
      const group = svg("g", { class: "span-row", "data-span-id": s.span_id });
      group.appendChild(svg("text", { x: 4 + depth(s) * 14, y: y + 15, class: "span-label" }, s.name));
      const color = s.status === "ERROR" ? "#c9352b" : COLORS[depth(s) % COLORS.length];
      const bar = svg("rect", { x: x, y: y + 3, width: w, height: rowH - 6, rx: 3, fill: color, class: "span-bar" });
      bar.appendChild(svg("title", {}, s.name + " · " + fmtMs(s.duration_ms)));
      group.appendChild(bar);
      group.appendChild(svg("text", { x: x + w + 6, y: y + 15 }, fmtMs(s.duration_ms)));
      group.addEventListener("click", function () { showSpan(s); });
      root.appendChild(group);
    });
    showSpan(spans[0]);
    document.body.dataset.traceOpen = traceId;
  }

  async function refreshLatency() {
    const body = await api("latency?" + windowQuery() + "&step=" + stepFor());
    const names = ["p50", "p95", "p99"];
    lineChart($("latency-chart"), names.map(function (q) {
      return { name: q, points: body.series.map(function (p) { return [p.t, p[q]]; }) };
    }), fmtMs);
    legend($("latency-legend"), names);
    const tbody = $("latency-models").querySelector("tbody");
    clear(tbody);
    Object.keys(body.by_model).forEach(function (model) {
      const m = body.by_model[model];
      const row = el("tr");
      row.appendChild(el("td", model));
      row.appendChild(el("td", fmtInt(m.count), "num"));
      [m.p50, m.p95, m.p99].forEach(function (v) { row.appendChild(el("td", fmtMs(v), "num")); });
      tbody.appendChild(row);
    });
  }

  async function refreshCost() {
    const step = stepFor();
    const body = await api("cost?" + windowQuery() + "&step=" + step + "&group_by=" + state.groupBy);
    stackedBars($("cost-chart"), body.series, body.groups, step, fmtUsdAxis);
    legend($("cost-legend"), body.groups);
  }

  async function refreshCache() {
    const body = await api("cache?" + windowQuery());
    lineChart($("cache-chart"), [{ name: "hit rate", points: body.series.map(function (p) { return [p.t, p.hit_rate]; }) }], fmtPct);
  }

  async function refreshGuard() {
    const body = await api("guard?" + windowQuery());
    const palette = { allow: "#2f8a4c", redact: "#b7791f", block: "#c9352b" };
    const items = [];
    Object.keys(body.guards).sort().forEach(function (guard) {
      Object.keys(body.guards[guard]).sort().forEach(function (decision) {
        items.push({ label: guard + " " + decision, value: body.guards[guard][decision], color: palette[decision] || "#6b7385" });
      });
    });
    barChart($("guard-chart"), items);
  }

  async function refreshAlerts() {
    const body = await api("alerts?limit=50");
    const tbody = $("alerts").querySelector("tbody");
    clear(tbody);
    body.alerts.forEach(function (a) {
      const row = el("tr");
      row.appendChild(el("td", fmtTime(a.ts_ns)));
      row.appendChild(el("td", a.severity, "sev-" + a.severity));
      row.appendChild(el("td", a.rule));
      row.appendChild(el("td", a.scope));
      row.appendChild(el("td", a.message));
      tbody.appendChild(row);
    });
    if (!body.alerts.length) {
      const row = el("tr");
      const cell = el("td", "no alerts", "muted");
      cell.colSpan = 5;
      row.appendChild(cell);
      tbody.appendChild(row);
    }
  }

  async function refreshAll() {
    const results = await Promise.allSettled([refreshSummary(), refreshRequests(), refreshLatency(),
      refreshCost(), refreshCache(), refreshGuard(), refreshAlerts()]);
    const failed = results.filter(function (r) { return r.status === "rejected"; });
    $("status").textContent = failed.length ? "error: " + failed[0].reason.message : "updated " + new Date().toLocaleTimeString();
    document.body.dataset.ready = failed.length ? "error" : "1";
  }

  function schedule() {
    if (state.timer) clearInterval(state.timer);
    state.timer = setInterval(function () { if (state.live) refreshAll(); }, 5000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    $("window").addEventListener("change", function (e) { state.window = Number(e.target.value); refreshAll(); });
    $("group-by").addEventListener("change", function (e) { state.groupBy = e.target.value; refreshCost(); });
    $("live").addEventListener("change", function (e) { state.live = e.target.checked; });
    refreshAll();
    schedule();
  });
})();
