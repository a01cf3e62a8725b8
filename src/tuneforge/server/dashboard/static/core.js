/* tuneforge dashboard: shared helpers (requests, elements, SVG charts, formatting). No dependencies. */
"use strict";
const TF = (() => {
  const HEADER = { "X-Tuneforge-Dashboard": "1" };

  class ApiError extends Error {
    constructor(message, status, param) { super(message); this.status = status; this.param = param; }
  }

  /** fetch a dashboard JSON route; on 401 go to the login page; errors raise ApiError(message, status, param). */
  async function api(path, options = {}) {
    const init = { credentials: "same-origin", ...options, headers: { ...HEADER, ...(options.headers || {}) } };
    if (options.json !== undefined) {
      init.body = JSON.stringify(options.json);
      init.headers["Content-Type"] = "application/json";
      init.method = init.method || "POST";
      delete init.json;
    }
    const response = await fetch(path, init);
    if (response.status === 401 && !path.startsWith("/ui/login")) { location.href = "/login"; throw new ApiError("log in", 401); }
    const text = await response.text();
    let body = null;
    try { body = text ? JSON.parse(text) : null; } catch (e) { body = null; }
    if (!response.ok) {
      const error = (body && body.error) || {};
      throw new ApiError(error.message || `${response.status} ${response.statusText}`, response.status, error.param);
    }
    return body;
  }

  /** el("p", {class: "x", onclick: f}, "text", child...) */
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function main() { return document.getElementById("main"); }
  function args() { return JSON.parse(main().dataset.args || "{}"); }

  /** Replace the page body below its <h1> with nodes. */
  function render(...nodes) {
    const m = main();
    const title = m.querySelector("h1");
    m.replaceChildren(title, ...nodes.flat().filter(n => n !== null && n !== undefined && n !== false));
  }

  function toast(message) { const t = document.getElementById("toast"); if (t) t.textContent = message; }

  function fmt(value, digits = 4) {
    if (value === null || value === undefined || value === "") return "—";
    if (typeof value === "number") {
      if (!isFinite(value)) return String(value);
      if (Number.isInteger(value)) return value.toLocaleString("en");
      return Math.abs(value) >= 1000 ? value.toLocaleString("en", { maximumFractionDigits: 1 }) : value.toPrecision(digits);
    }
    return String(value);
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    const s = Math.round(seconds);
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
  }

  function when(unix) { return unix ? new Date(unix * 1000).toLocaleString() : "—"; }

  function table(caption, headers, rows, attrs = {}) {
    return el("table", attrs, caption ? el("caption", {}, caption) : null,
      el("thead", {}, el("tr", {}, headers.map(h => el("th", { scope: "col" }, h)))),
      el("tbody", {}, rows.map(r => r instanceof Node ? r : el("tr", {}, r.map(c => el("td", {}, c instanceof Node ? c : fmt(c)))))));
  }

  /** A model's answer as text, with an empty or whitespace-only answer made visible. */
  function answer(text) {
    if (text === null || text === undefined) return el("span", { class: "muted" }, "—");
    if (String(text).trim() !== "") return String(text);
    return el("span", { class: "muted" }, text ? `(only whitespace: ${String(text).length} characters, ${JSON.stringify(String(text).slice(0, 12))}…)` : "(empty answer)");
  }

  function statusBadge(status) { return el("span", { class: `badge status-${status}` }, status); }

  function errorBox(error) { return el("p", { class: "error", role: "alert" }, String(error.message || error)); }

  const COLOURS = ["#2563eb", "#dc2626", "#059669", "#7c3aed", "#d97706", "#0891b2", "#db2777", "#475569"];
  const SVGNS = "http://www.w3.org/2000/svg";
  function svg(tag, attrs = {}, ...children) {
    const node = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  }

  /** A line chart that can be redrawn as points arrive: chart.set(series) with [{label, colour, points: [[x, y]]}]. */
  function lineChart(title, options = {}) {
    const width = options.width || 460, height = options.height || 240;
    const left = 60, right = 12, top = 28, bottom = 34;
    const box = el("figure", { class: "chart" });
    const caption = el("figcaption", {}, title);
    const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": title });
    const summary = el("p", { class: "sr-only", "aria-live": "off" });
    const legend = el("p", { class: "legend", "aria-hidden": "true" });
    box.append(caption, legend, root, summary);
    function set(series) {
      root.replaceChildren();
      legend.replaceChildren();
      const drawn = series.filter(s => s.points && s.points.length);
      const pts = drawn.flatMap(s => s.points);
      box.dataset.points = String(pts.length);
      if (!pts.length) {
        root.append(svg("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "muted-text" }, "no points yet"));
        summary.textContent = `${title}: no points yet`;
        return;
      }
      const xs = pts.map(p => p[0]), ys = pts.map(p => p[1]);
      let x0 = Math.min(...xs), x1 = Math.max(...xs); if (x1 <= x0) x1 = x0 + 1;
      let y0 = Math.min(...ys), y1 = Math.max(...ys);
      if (y1 <= y0) { const pad = Math.abs(y0) * 0.1 || 1; y0 -= pad; y1 += pad; }
      const sx = x => left + (x - x0) / (x1 - x0) * (width - left - right);
      const sy = y => height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom);
      root.append(svg("line", { x1: left, y1: height - bottom, x2: width - right, y2: height - bottom, class: "axis" }),
                  svg("line", { x1: left, y1: top, x2: left, y2: height - bottom, class: "axis" }));
      for (const f of [0, 0.5, 1]) {
        const v = y0 + f * (y1 - y0);
        root.append(svg("text", { x: left - 4, y: sy(v) + 4, "text-anchor": "end", class: "tick" }, Number(v.toPrecision(3))));
      }
      for (const v of [x0, (x0 + x1) / 2, x1]) {
        root.append(svg("text", { x: sx(v), y: height - bottom + 14, "text-anchor": "middle", class: "tick" }, Number(v.toPrecision(4))));
      }
      root.append(svg("text", { x: (left + width) / 2, y: height - 4, "text-anchor": "middle", class: "tick" }, options.xLabel || "step"));
      drawn.forEach((s, i) => {
        const colour = s.colour || COLOURS[i % COLOURS.length];
        root.append(svg("polyline", { fill: "none", stroke: colour, "stroke-width": 1.8, class: "series",
          points: s.points.map(p => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" ") }));
        if (s.points.length <= 60) {
          for (const p of s.points) root.append(svg("circle", { cx: sx(p[0]).toFixed(1), cy: sy(p[1]).toFixed(1), r: 2.2, fill: colour },
            svg("title", {}, `${s.label} ${Number(p[1].toPrecision(4))} at ${options.xLabel || "step"} ${p[0]}`)));
        }
      });
      legend.replaceChildren(...drawn.map((s, i) => el("span", {}, el("i", { class: "swatch" }), s.label)));
      legend.querySelectorAll("i").forEach((node, i) => { node.style.background = drawn[i].colour || COLOURS[i % COLOURS.length]; });
      summary.textContent = drawn.map(s => `${s.label}: ${s.points.length} points, last ${fmt(s.points[s.points.length - 1][1])}`).join("; ");
    }
    set([]);
    return { node: box, set };
  }

  function bootLogout() {
    const button = document.getElementById("logout");
    if (button) button.addEventListener("click", async () => { await api("/ui/logout", { method: "POST" }); location.href = "/login"; });
  }

  /** Run a page's start(): show its error instead of a blank page. */
  function page(start) {
    bootLogout();
    const run = async () => {
      try { await start(args()); } catch (error) { if (error.status !== 401) render(errorBox(error)); }
      main().dataset.ready = "1";
    };
    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", run); else run();
  }

  /** Server-sent events of an OpenAI streaming response read from fetch: calls onData(json) for each data line. */
  async function readSSE(response, onData) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
        for (const line of block.split("\n")) {
          if (!line.startsWith("data: ")) continue;
          const data = line.slice(6);
          if (data === "[DONE]") return;
          onData(JSON.parse(data));
        }
      }
    }
  }

  return { api, el, answer, render, toast, fmt, duration, when, table, statusBadge, errorBox, lineChart, page, readSSE, COLOURS, ApiError, HEADER };
})();
