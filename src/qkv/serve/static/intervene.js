// qkv serve: interventions on the trace page. Knock out a head (Alt- or Shift-click its map, or turn on "knock out
// heads" and click), swap two tokens' K, V or Q, pick the metric's pair; the page asks POST /api/intervene and
// draws the intervened run in the shared view (window.qkvView), with the metric before and after. Reset shows the
// plain run again (no request). Every text is written with textContent; the panel is built here, so the page's
// markup needs only this script (and its stylesheet, intervene.css, linked from here).
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const view = window.qkvView, api = window.qkvApi;
  if (!view || !api || !$("grid")) return;

  const link = document.createElement("link");
  link.rel = "stylesheet";
  link.href = "/static/intervene.css";
  document.head.appendChild(link);

  let plain = null;      // the data of the plain run last shown by the page: {trace, masked, labels, summary}
  let summary = null;    // [text, query, measure] of the summary line the page last set
  let specs = [];        // the interventions, in order (the request's "interventions")
  let applied = [];      // the interventions of the run on screen (a refused change falls back to them)
  let seq = 0, answers = 0, own = false, showing = false;
  const setSummary = view.setSummary;  // the view's own (wrapped below)

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "cls") e.className = v; else e.setAttribute(k, v);
    }
    if (text !== undefined) e.textContent = String(text);
    return e;
  }
  function option(value, text) { const o = el("option", { value: String(value) }, text); return o; }

  // -- the panel ------------------------------------------------------------------------------------------
  const panel = el("section", { id: "iv", "aria-label": "interventions" });
  const row = el("div", { cls: "iv-row" });
  const ko = el("button", { type: "button", id: "iv-ko", "aria-pressed": "false",
                            title: "then click a map to knock that head out (zero its output); Alt-click works always" },
                "knock out heads: off");
  const step = el("select", { id: "iv-step", "aria-label": "what to swap" });
  [["k", "K"], ["v", "V"], ["q", "Q"]].forEach(([v, t]) => step.appendChild(option(v, t)));
  const tokA = el("select", { id: "iv-a", "aria-label": "first token to swap" });
  const tokB = el("select", { id: "iv-b", "aria-label": "second token to swap" });
  const layer = el("select", { id: "iv-layer", "aria-label": "layer of the swap" });
  const swapBtn = el("button", { type: "button", id: "iv-swap" }, "swap");
  const prefer = el("select", { id: "iv-prefer", "aria-label": "the metric: the query prefers this token" });
  const over = el("select", { id: "iv-over", "aria-label": "over this token" });
  const reset = el("button", { type: "button", id: "iv-reset" }, "reset");
  row.append(el("strong", {}, "Intervene"), ko, el("span", { cls: "iv-sep" }, "·"),
             el("label", { for: "iv-step" }, "swap"), step, el("label", { for: "iv-a" }, "of"), tokA,
             el("label", { for: "iv-b" }, "and"), tokB, el("label", { for: "iv-layer" }, "in"), layer, swapBtn,
             el("span", { cls: "iv-sep" }, "·"), el("label", { for: "iv-prefer" }, "metric: the query prefers"),
             prefer, el("label", { for: "iv-over" }, "over"), over, reset);
  const list = el("ul", { id: "iv-list", "aria-label": "interventions applied, in order" });
  const metric = el("p", { id: "iv-metric", role: "status" });
  const error = el("p", { id: "iv-error", role: "alert" });
  error.hidden = true;
  panel.append(row, list, metric, error);
  const anchor = $("summary") || $("sentence");
  anchor.parentNode.insertBefore(panel, anchor.nextSibling);

  const IDLE = "Alt-click a map (or turn on \"knock out heads\") to zero that head's output, or swap two tokens' " +
    "K or V: the maps, lines and table then show the intervened run, and this line the metric before and after.";
  metric.textContent = IDLE;

  function setError(msg) { error.textContent = msg || ""; error.hidden = !msg; }
  const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

  // -- what the page shows: marks on knocked-out heads and swapped tokens, the list of interventions ----------
  function mark() {
    const off = new Set(specs.filter((s) => s.kind === "ablate").map((s) => s.layer + ":" + s.head));
    document.querySelectorAll("#grid .map").forEach((b) => {
      const on = off.has(b.dataset.layer + ":" + b.dataset.head);
      b.classList.toggle("iv-off", on);
      b.setAttribute("aria-pressed", String(on));
    });
    const swapped = new Set(specs.filter((s) => s.kind === "swap").flatMap((s) => s.tokens));
    document.querySelectorAll("#sentence .tok").forEach((b) =>
      b.classList.toggle("iv-swapped", swapped.has(+b.dataset.index)));
    $("grid-wrap") && $("grid-wrap").classList.toggle("iv-on", specs.length > 0);
  }
  function drawList(labels) {
    while (list.firstChild) list.removeChild(list.firstChild);
    specs.forEach((s, k) => {
      const li = el("li", { cls: "iv-chip" }, (labels && labels[k]) || describe(s));
      const x = el("button", { type: "button", "aria-label": "remove " + li.textContent, title: "remove" }, "×");
      x.addEventListener("click", () => { specs.splice(k, 1); changed(); });
      li.appendChild(x);
      list.appendChild(li);
    });
  }
  function tokenLabel(j) { return plain ? (plain.labels || [])[j] || plain.trace.tokens[j].text : String(j); }
  function describe(s) {
    if (s.kind === "ablate") return "zero-ablate L" + s.layer + " H" + s.head;
    const where = s.layer === null ? "every layer" : "L" + s.layer;
    return "swap " + s.step + " of '" + tokenLabel(s.tokens[0]) + "' and '" + tokenLabel(s.tokens[1]) + "' in " + where;
  }
  function showMetric(r) {
    const m = r.metric, f = (x) => (x >= 0 ? "+" : "") + x.toFixed(4);
    metric.textContent = m.name + " = " + m.description + ": " + f(m.base) + " plain → " + f(m.value) +
      " intervened (effect " + f(m.effect) + ")";
    metric.title = r.summary;
  }

  // -- asking the server ----------------------------------------------------------------------------------
  function pairOf() {
    if (prefer.value === "" || over.value === "") return {};
    return { prefer: +prefer.value, over: +over.value };
  }
  async function ask() {
    if (!plain) return;
    const mine = ++seq, s = view.state();
    const body = Object.assign({ text: plain.trace.text, interventions: specs.slice(), query: s.query,
                                 layer: s.layer, head: s.head, include_trace: true }, pairOf());
    metric.classList.add("iv-busy");
    try {
      const r = await api.post("/api/intervene", body, (msg) => { if (mine === seq) metric.textContent = msg; });
      if (mine !== seq) return;
      setError("");
      applied = body.interventions;
      showRun(r.trace, r.masked, r.labels);
      drawList(r.interventions.map((a) => a.label));
      showMetric(r);
      answers += 1;
      document.body.dataset.iv = String(answers);
    } catch (e) {
      if (mine === seq) {  // the server refused the change: keep the run on screen and what it applies
        specs = applied.slice();
        drawList(null);
        mark();
        setError(e.message);
        document.body.dataset.ivError = String(+(document.body.dataset.ivError || 0) + 1);
      }
    } finally {
      if (mine === seq) metric.classList.remove("iv-busy");
    }
  }
  function showRun(trace, masked, labels) {  // redraw the view with another run, keeping what the user chose
    const s = view.state();
    own = true;
    try {
      view.show({ trace: trace, masked: masked, labels: labels, summary: summary ? summary[0] : plain.summary,
                  initial: { query: s.query, layer: s.layer, head: s.head, measure: s.measure } });
    } finally { own = false; }
    if (summary && setSummary) setSummary(honest(summary[0]), summary[1], summary[2]);
    mark();
  }
  // the summary line is the page's (/api/trace, the plain run): say so while the view shows an intervened run
  const honest = (text) => (applied.length && text ? "In the plain run (no interventions): " + text : text);
  function changed() {
    drawList(null);
    mark();
    if (specs.length === 0) {  // nothing to ask: the plain run, as the page traced it
      ++seq;
      applied = [];
      if (plain) showRun(plain.trace, plain.masked, plain.labels);
      metric.textContent = IDLE;
      metric.title = "";
      setError("");
      return;
    }
    ask();
  }

  // -- the user's controls ----------------------------------------------------------------------------------
  function toggleHead(n, h) {
    const k = specs.findIndex((s) => s.kind === "ablate" && s.layer === n && s.head === h);
    if (k >= 0) specs.splice(k, 1); else specs.push({ kind: "ablate", layer: n, head: h, how: "zero" });
    changed();
  }
  $("grid").addEventListener("click", (e) => {  // capture: runs before the map's own click (select the head)
    const b = e.target.closest && e.target.closest(".map");
    if (!b || !(e.altKey || e.shiftKey || ko.getAttribute("aria-pressed") === "true")) return;
    e.stopPropagation();
    e.preventDefault();
    toggleHead(+b.dataset.layer, +b.dataset.head);
  }, true);
  ko.addEventListener("click", () => {
    const on = ko.getAttribute("aria-pressed") !== "true";
    ko.setAttribute("aria-pressed", String(on));
    ko.textContent = "knock out heads: " + (on ? "on" : "off");
    $("grid").classList.toggle("iv-knocking", on);
  });
  swapBtn.addEventListener("click", () => {
    const a = +tokA.value, b = +tokB.value;
    if (a === b) { setError("pick two different tokens to swap (both are '" + tokenLabel(a) + "')"); return; }
    specs.push({ kind: "swap", layer: layer.value === "" ? null : +layer.value, step: step.value, tokens: [a, b],
                 head: null });
    changed();
  });
  prefer.addEventListener("change", () => { if (specs.length) ask(); });
  over.addEventListener("change", () => { if (specs.length) ask(); });
  reset.addEventListener("click", () => { specs = []; changed(); });

  // -- following the page: a new text resets the interventions; a new query asks again -----------------------
  function fill(select, labels, none) {
    while (select.firstChild) select.removeChild(select.firstChild);
    if (none) select.appendChild(option("", none));
    labels.forEach((t, j) => select.appendChild(option(j, j + ": " + t)));
  }
  function find(labels, word) {
    return labels.findIndex((t) => t.trim().toLowerCase() === word);
  }
  function newText(D) {
    const labels = D.labels || D.trace.tokens.map((t) => t.text), words = D.trace.tokens.map((t) => !t.special);
    fill(tokA, labels); fill(tokB, labels); fill(prefer, labels, "(none)"); fill(over, labels, "(none)");
    const first = words.indexOf(true), second = words.indexOf(true, first + 1);
    const cat = find(labels, "cat"), mat = find(labels, "mat");
    tokA.value = String(cat >= 0 && mat >= 0 ? cat : Math.max(0, first));
    tokB.value = String(cat >= 0 && mat >= 0 ? mat : Math.max(0, second));
    prefer.value = cat >= 0 && mat >= 0 ? String(cat) : "";
    over.value = cat >= 0 && mat >= 0 ? String(mat) : "";
    while (layer.firstChild) layer.removeChild(layer.firstChild);
    layer.appendChild(option("", "every layer"));
    D.trace.layers.forEach((_, n) => layer.appendChild(option(n, "layer " + n)));
  }
  const show = view.show;
  view.show = function (D) {
    showing = true;
    try { show(D); } finally { showing = false; }
    if (own) return;
    const fresh = !plain || plain.trace.text !== D.trace.text;
    plain = { trace: D.trace, masked: D.masked, labels: D.labels, summary: D.summary };
    summary = [D.summary || "", view.state().query, view.state().measure];
    if (fresh) {
      newText(D);
      specs = [];
      applied = [];
      ++seq;
      drawList(null);
      metric.textContent = IDLE;
      setError("");
    }
    mark();
    if (specs.length) ask();  // the same text traced again: keep its interventions
  };
  if (setSummary) {
    view.setSummary = function (text, query, measure) {
      summary = [text, query, measure];
      setSummary(honest(text), query, measure);
    };
  }
  const onchange = view.onchange;  // app.js's: the summary follows the query; here the metric does too
  let lastQuery = null;
  view.onchange = function (s) {
    if (typeof onchange === "function") onchange(s);
    const moved = s.query !== lastQuery;
    lastQuery = s.query;
    if (!own && !showing && moved && specs.length) ask();
  };
})();
