"""The inline stylesheet, markup and script of the HTML view (see :mod:`qkv.view.html`; ``qkv serve`` serves them too).

The script reads the data ``{"trace": Trace.to_dict(), "summary", "initial": {query, layer, head, measure},
"masked": [[key indices] per query] | absent}`` from ``<script type="application/json" id="qkv-data">`` when the
page has one, and exposes ``window.qkvView.show(data)`` for pages that fetch it. It writes every piece of user
text with ``textContent`` (never ``innerHTML``). No network: everything is inline.

The scaling slider multiplies the scaled scores ``q.k/sqrt(d)`` of the shown rows by ``t`` in ``[1/4, sqrt(d)]``
(``t = sqrt(d)`` is softmax of the raw ``q.k``: no scaling) and recomputes softmax in the page; keys listed in
``masked`` stay at weight 0.
"""

__all__ = ["CSS", "JS", "BODY"]

CSS = """
:root { --ink:#1d2330; --muted:#6b7280; --line:#e5e7eb; --accent:#d9480f; --blue:#1c4f8f; --bg:#fbfbfd; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
       background: var(--bg); }
header { padding: 18px 28px 10px; border-bottom: 1px solid var(--line); background: #fff; }
h1 { font-size: 18px; margin: 0 0 4px; font-weight: 650; }
h2 { font-size: 15px; margin: 0 0 8px; font-weight: 650; }
.sub { color: var(--muted); font-size: 13px; }
#sentence { margin: 12px 0 6px; font-size: 20px; line-height: 2.1; word-spacing: 4px; }
.tok { border: 1px solid transparent; border-radius: 6px; padding: 2px 1px; cursor: pointer; background: none;
       font: inherit; color: inherit; }
.tok:hover { border-color: #c7cdd8; background: #f3f4f6; }
.tok.special { font-size: 12px; color: var(--muted); font-family: ui-monospace, Menlo, monospace; }
.tok.selected { background: var(--accent); color: #fff; border-color: var(--accent); }
#summary { margin: 6px 0 0; padding: 8px 10px; background: #fff7ed; border-left: 3px solid var(--accent);
           font-size: 13px; min-height: calc(2 * 1.45em + 16px); }
#summary.stale { opacity: 0.55; }
/* Steady layout: the grid card is as wide as its maps (the note below them never widens it), the lines card takes
   the rest and its drawing is never scaled (labels keep their size), titles never wrap, notes keep their height. */
main { display: grid; grid-template-columns: minmax(360px, max-content) minmax(494px, 1fr); gap: 22px;
       padding: 18px 28px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 14px 16px; min-width: 0; }
.one-line { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
#grid { display: grid; gap: 3px; align-items: center; }
.axis { font-size: 11px; color: var(--muted); text-align: center; }
.map { padding: 0; border: 2px solid transparent; border-radius: 3px; background: #fff; cursor: pointer;
       line-height: 0; }
.map:hover { border-color: #94a3b8; }
.map.selected { border-color: var(--accent); }
.map canvas { width: 46px; height: 46px; image-rendering: pixelated; display: block; }
.controls { display: flex; gap: 6px; align-items: center; margin-bottom: 8px; flex-wrap: wrap; }
.measure { border: 1px solid #cbd5e1; background: #fff; border-radius: 999px; padding: 3px 12px; cursor: pointer;
           font: inherit; font-size: 13px; }
.measure[aria-pressed="true"] { background: var(--blue); color: #fff; border-color: var(--blue); }
#lines-box { overflow-x: auto; }
#lines { display: block; }
#lines text { font-size: 13px; cursor: pointer; fill: var(--ink); }
#lines text.special { fill: var(--muted); font-size: 11px; }
#grid-note { width: 0; min-width: 100%; height: calc(3 * 1.45em); overflow: hidden; }
#lines text.selected { fill: var(--accent); font-weight: 700; }
.note { color: var(--muted); font-size: 12px; margin: 6px 0 0; }
#breakdown-wrap { grid-column: 1 / -1; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { padding: 3px 8px; border-bottom: 1px solid var(--line); text-align: right; white-space: nowrap; }
th { font-size: 12px; color: var(--muted); font-weight: 600; }
td.token, th.token { text-align: left; }
td.bar { width: 22%; text-align: left; }
.barfill { height: 10px; border-radius: 2px; display: inline-block; vertical-align: middle; }
.w .barfill { background: var(--blue); } .v .barfill { background: #2f9e44; }
tr.top td { font-weight: 700; }
.scaling { display: flex; gap: 10px; align-items: center; flex-wrap: wrap; margin: 0 0 8px; padding: 8px 10px;
           background: #f8fafc; border: 1px solid var(--line); border-radius: 8px; }
.scaling input[type=range] { width: 240px; accent-color: var(--accent); }
.scaling output { font-variant-numeric: tabular-nums; width: 14em; font-weight: 600; white-space: nowrap; }
.readout { font-variant-numeric: tabular-nums; padding: 2px 8px; border-radius: 999px; background: #fff;
           border: 1px solid var(--line); white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
#scale-max { width: 16.5em; } #scale-entropy { width: 20em; }
#scale-reset { border: 1px solid #cbd5e1; background: #fff; border-radius: 6px; padding: 2px 8px; cursor: pointer;
               font: inherit; font-size: 12px; }
footer { padding: 0 28px 24px; color: var(--muted); font-size: 12px; }
"""

BODY = """<main>
  <section id="grid-wrap">
    <h2>Every layer × head (click a map)</h2>
    <div id="grid"></div>
    <p class="note" id="grid-note"></p>
  </section>
  <section id="lines-wrap">
    <div class="controls">
      <button type="button" class="measure" data-measure="weights" aria-pressed="false">weights</button>
      <button type="button" class="measure" data-measure="values" aria-pressed="false">values ‖α·f(v)‖</button>
      <button type="button" class="measure" data-measure="rollout" aria-pressed="false">rollout</button>
    </div>
    <h2 id="lines-title" class="one-line"></h2>
    <div id="lines-box">
      <svg id="lines" role="img" aria-label="lines from the selected token to every token"></svg>
    </div>
    <p class="note">weights: softmax(q·kᵀ/√d), who is matched. values: ‖α·f(v)‖ normalised per row, what
      actually arrives (Kobayashi et al. 2020). rollout: heads averaged with the residual, multiplied through
      the layers (Abnar &amp; Zuidema 2020). Click a token to make it the query.</p>
  </section>
  <section id="breakdown-wrap">
    <div class="scaling">
      <label for="scale">Scaling: softmax(t · q·k/√d) with t</label>
      <input type="range" id="scale" min="-2" max="3" step="any" value="0"
             aria-label="multiply the scaled scores by t (log scale, from 1/4 to the square root of d)">
      <output id="scale-t" for="scale"></output>
      <button type="button" id="scale-reset">t = 1</button>
      <span class="readout" id="scale-max"></span>
      <span class="readout" id="scale-entropy"></span>
    </div>
    <p class="note" id="scale-note">The essay's claim 2: without 1/√d the dot products grow with d, softmax saturates
      and one key takes everything. t = 1 is the model as trained; t = √d removes the scaling (softmax of the raw
      q·k); t &lt; 1 flattens the row. Maps, lines and this table follow t; rollout stays at t = 1.</p>
    <h2 id="breakdown-title" class="one-line"></h2>
    <table id="breakdown">
      <thead><tr><th>key</th><th class="token">token</th><th>q·k</th><th>scaled (÷√d)</th><th>weight</th>
        <th class="token">softmax</th><th>‖α·f(v)‖</th><th>share</th><th class="token">what arrives</th></tr></thead>
      <tbody id="breakdown-body"></tbody>
    </table>
  </section>
</main>"""

JS = r"""
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const SVG_NS = $("lines").namespaceURI;
  const S = { query: 0, layer: 0, head: 0, measure: "weights", t: 1 };
  let T = null, L = 0, N = 0, H = 0, MASK = [], LABELS = [], SUMMARY = { text: "", query: 0, measure: "weights" };
  const view = { show: show, state: () => Object.assign({}, S), setSummary: setSummary,
                 onchange: null };
  window.qkvView = view;

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = String(text);
    return e;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
  function label(j) {  // sliced in Python: offsets count code points, JS strings count UTF-16 units
    return LABELS[j];
  }
  function colour(x) {
    const t = Math.sqrt(Math.max(0, Math.min(1, x)));
    const a = [247, 251, 255], b = [8, 48, 107];
    return "rgb(" + a.map((v, i) => Math.round(v + (b[i] - v) * t)).join(",") + ")";
  }

  // -- the scaling slider: softmax(t * scaled) recomputed from the stored scaled scores --------------
  function tMax() { const d = T.model.head_dim; return d > 1 ? Math.sqrt(d) : 4; }
  function softmaxRow(scaled, i, t) {
    const z = scaled.map((s, j) => (MASK[i].has(j) ? -Infinity : t * s));
    const m = Math.max(...z);
    if (m === -Infinity) return z.map(() => 0);
    const e = z.map((x) => Math.exp(x - m)), sum = e.reduce((a, b) => a + b, 0);
    return e.map((x) => x / sum);
  }
  function weightsRow(n, h, i) {
    const lay = T.layers[n];
    return S.t === 1 ? lay.weights[h][i] : softmaxRow(lay.scaled[h][i], i, S.t);
  }
  function valuesRow(n, h, i) {
    const lay = T.layers[n];
    if (S.t === 1) return lay.values[h][i];
    const fv = lay.value_norms[h], x = weightsRow(n, h, i).map((w, j) => w * fv[j]);
    const sum = x.reduce((a, b) => a + b, 0);
    return x.map((v) => (sum > 0 ? v / sum : 0));
  }
  function row(n, h, i, measure) {
    if (measure === "rollout") return T.layers[n].rollout[i];
    return measure === "values" ? valuesRow(n, h, i) : weightsRow(n, h, i);
  }
  function entropy(w) { return -w.reduce((a, x) => a + (x > 0 ? x * Math.log(x) : 0), 0); }
  function setT(t) {
    S.t = Math.abs(t - 1) < 1e-9 ? 1 : t;
    $("scale").value = String(Math.log2(S.t));
    update();
  }
  function drawScale() {
    const w = weightsRow(S.layer, S.head, S.query), top = w.indexOf(Math.max(...w));
    const at = Math.abs(S.t - tMax()) < 1e-6 ? " = √d (no scaling)" : S.t === 1 ? " (as trained)" : "";
    $("scale-t").textContent = "t = " + S.t.toFixed(2) + at;
    $("scale-max").textContent = "max weight " + w[top].toFixed(3) + " on '" + label(top) + "'";
    $("scale-entropy").textContent = "entropy " + entropy(w).toFixed(3) + " nats (uniform " +
      Math.log(L - MASK[S.query].size).toFixed(3) + ")";
  }

  // -- the sentence: one button per token, original spelling and spacing -------------------------
  function buildSentence() {
    const box = $("sentence");
    clear(box);
    let prevEnd = null;
    T.tokens.forEach((t, j) => {
      if (!t.special && prevEnd !== null && t.start > prevEnd) box.appendChild(document.createTextNode(" "));
      const b = el("button", "tok" + (t.special ? " special" : ""), label(j));
      b.type = "button";
      b.dataset.index = String(j);
      b.title = "token " + j + ": " + t.text;
      b.addEventListener("click", () => { S.query = j; update(); });
      box.appendChild(b);
      if (!t.special) prevEnd = t.end;
    });
  }

  // -- the layer x head grid of small maps ----------------------------------------------------------
  function buildGrid() {
    const g = $("grid");
    clear(g);
    g.style.gridTemplateColumns = "28px repeat(" + H + ", 50px)";
    g.appendChild(el("div", "axis", ""));
    for (let h = 0; h < H; h++) g.appendChild(el("div", "axis", "H" + h));
    for (let n = 0; n < N; n++) {
      g.appendChild(el("div", "axis", "L" + n));
      for (let h = 0; h < H; h++) {
        const b = el("button", "map");
        b.type = "button";
        b.dataset.layer = String(n);
        b.dataset.head = String(h);
        b.setAttribute("aria-label", "layer " + n + " head " + h);
        b.title = "layer " + n + ", head " + h;
        const c = document.createElement("canvas");
        const cell = Math.max(1, Math.floor(92 / L));
        c.width = c.height = cell * L;
        b.appendChild(c);
        b.addEventListener("click", () => { S.layer = n; S.head = h; update(); });
        g.appendChild(b);
      }
    }
  }
  function drawMaps() {
    const m = S.measure === "rollout" ? "weights" : S.measure;
    document.querySelectorAll(".map").forEach((b) => {
      const n = +b.dataset.layer, h = +b.dataset.head, c = b.firstChild, ctx = c.getContext("2d");
      const cell = c.width / L;
      for (let i = 0; i < L; i++) {
        const r = row(n, h, i, m);
        for (let j = 0; j < L; j++) {
          ctx.fillStyle = colour(r[j]);
          ctx.fillRect(j * cell, i * cell, cell, cell);
        }
      }
      ctx.strokeStyle = "#d9480f";
      ctx.lineWidth = Math.max(1, cell / 5);
      ctx.strokeRect(0, S.query * cell, c.width, cell);
      b.classList.toggle("selected", n === S.layer && h === S.head);
    });
    $("grid-note").textContent = (S.measure === "rollout"
      ? "Maps show weights (rollout mixes all heads of a layer: see the lines)."
      : "Row = query, column = key; darker = more " + S.measure + " (colour ∝ √value). The outlined row is '" +
        label(S.query) + "'.") + (S.t === 1 ? "" : " Scores multiplied by t = " + S.t.toFixed(2) + ".");
  }

  // -- lines from the selected token to every token (thickness = measure) ---------------------------
  function drawLines() {
    const svg = $("lines");
    clear(svg);
    const rowH = 22, top = 14, W = 460, xl = 150, xr = 310;
    svg.setAttribute("viewBox", "0 0 " + W + " " + (top + rowH * L));
    svg.setAttribute("width", String(W));  // drawn 1:1, never scaled: labels keep their size
    svg.setAttribute("height", String(top + rowH * L));
    const r = row(S.layer, S.head, S.query, S.measure);
    const y = (j) => top + rowH * j + rowH / 2;
    for (let j = 0; j < L; j++) {
      const v = r[j], width = Math.max(0.3, 14 * v), gap = 6 + width / 2;  // a round end reaches width/2 past
      const line = document.createElementNS(SVG_NS, "line");                // its point: it stops before labels
      line.setAttribute("x1", String(xl + gap)); line.setAttribute("y1", String(y(S.query)));
      line.setAttribute("x2", String(xr - gap)); line.setAttribute("y2", String(y(j)));
      line.setAttribute("stroke", S.measure === "values" ? "#2f9e44" : "#1c4f8f");
      line.setAttribute("stroke-width", String(width));
      line.setAttribute("stroke-opacity", String(0.15 + 0.85 * Math.min(1, v * 2)));
      line.setAttribute("stroke-linecap", "round");
      const tip = document.createElementNS(SVG_NS, "title");
      tip.textContent = label(S.query) + " → " + label(j) + ": " + v.toFixed(3);
      line.appendChild(tip);
      svg.appendChild(line);
    }
    for (const side of ["left", "right"]) {
      for (let j = 0; j < L; j++) {
        const t = document.createElementNS(SVG_NS, "text");
        t.setAttribute("x", String(side === "left" ? xl : xr));
        t.setAttribute("y", String(y(j) + 4));
        t.setAttribute("text-anchor", side === "left" ? "end" : "start");
        let cls = T.tokens[j].special ? "special" : "";
        if (side === "left" && j === S.query) cls += " selected";
        t.setAttribute("class", cls.trim());
        t.textContent = side === "right" ? label(j) + "  " + r[j].toFixed(2) : label(j);
        t.addEventListener("click", () => { S.query = j; update(); });
        svg.appendChild(t);
      }
    }
    const where = S.measure === "rollout" ? "rollout after layer " + S.layer + " (all heads)"
      : "layer " + S.layer + ", head " + S.head + (S.t === 1 ? "" : ", t = " + S.t.toFixed(2));
    $("lines-title").textContent = "'" + label(S.query) + "' → every token: " + S.measure + ", " + where;
    $("lines-title").title = $("lines-title").textContent;
  }

  // -- the breakdown table: q.k -> scaled -> softmax weight -> ||a f(v)|| ---------------------------
  function barCell(cls, x, max) {
    const td = el("td", "bar " + cls);
    const f = el("span", "barfill");
    f.style.width = (max > 0 ? Math.round(100 * x / max) : 0) + "%";
    td.appendChild(f);
    return td;
  }
  function drawBreakdown() {
    const lay = T.layers[S.layer], h = S.head, i = S.query;
    const w = weightsRow(S.layer, h, i), sh = valuesRow(S.layer, h, i);
    const sc = lay.scores[h][i], sd = lay.scaled[h][i], fv = lay.value_norms[h];
    const maxW = Math.max(...w), maxV = Math.max(...sh);
    const body = $("breakdown-body");
    clear(body);
    for (let j = 0; j < L; j++) {
      const tr = el("tr", w[j] === maxW || sh[j] === maxV ? "top" : "");
      tr.appendChild(el("td", "", j));
      tr.appendChild(el("td", "token", label(j)));
      tr.appendChild(el("td", "", sc[j].toFixed(2)));
      tr.appendChild(el("td", "", sd[j].toFixed(2)));
      tr.appendChild(el("td", "", w[j].toFixed(3)));
      tr.appendChild(barCell("w", w[j], maxW));
      tr.appendChild(el("td", "", (w[j] * fv[j]).toFixed(3)));
      tr.appendChild(el("td", "", sh[j].toFixed(3)));
      tr.appendChild(barCell("v", sh[j], maxV));
      body.appendChild(tr);
    }
    $("breakdown-title").textContent = "Step by step for '" + label(i) + "' (token " + i + ") in layer " +
      S.layer + ", head " + h + (S.t === 1 ? "" : " — weight = softmax(t · scaled), t = " + S.t.toFixed(2));
    $("breakdown-title").title = $("breakdown-title").textContent;
  }

  // -- the summary describes one query and measure: for another, say so instead of showing a stale line ---------
  function drawSummary() {
    if (!SUMMARY.text) return;
    const same = S.query === SUMMARY.query && S.measure === SUMMARY.measure;
    $("summary").classList.toggle("stale", !same);
    const was = "'" + label(SUMMARY.query) + "' with " + SUMMARY.measure, now = "'" + label(S.query) + "' with " +
      S.measure, back = [S.query === SUMMARY.query ? "" : "click '" + label(SUMMARY.query) + "'",
                         S.measure === SUMMARY.measure ? "" : "press " + SUMMARY.measure].filter((x) => x);
    $("summary").textContent = same ? SUMMARY.text : "The summary was written for " + was + ", not " + now + ": " +
      back.join(" and ") + " to read it again.";
  }
  // setSummary(text, query, measure): the page that fetched a new summary hands it over (qkv serve)
  function setSummary(text, query, measure) {
    SUMMARY = { text: text || "", query: query, measure: measure };
    $("summary").textContent = SUMMARY.text;
    $("summary").hidden = !SUMMARY.text;
    drawSummary();
  }

  function update() {
    if (!T) return;
    document.querySelectorAll(".tok").forEach((b) => b.classList.toggle("selected", +b.dataset.index === S.query));
    document.querySelectorAll(".measure").forEach((b) =>
      b.setAttribute("aria-pressed", String(b.dataset.measure === S.measure)));
    drawMaps(); drawLines(); drawBreakdown(); drawScale(); drawSummary();
    if (typeof view.onchange === "function") view.onchange(Object.assign({}, S));
  }

  // show(data): draw a trace; data = {trace, summary, initial: {query, layer, head, measure}, masked}
  function show(D) {
    T = D.trace; L = T.tokens.length; N = T.layers.length; H = T.model.num_heads;
    MASK = T.tokens.map((_, i) => new Set((D.masked && D.masked[i]) || []));
    LABELS = D.labels || T.tokens.map((t) => t.text);
    const init = D.initial || {};
    S.query = init.query || 0; S.layer = init.layer || 0; S.head = init.head || 0;
    if (init.measure) S.measure = init.measure;
    const slider = $("scale");
    slider.min = "-2";
    slider.max = String(Math.log2(tMax()));
    S.t = Math.min(S.t, tMax());
    slider.value = String(Math.log2(S.t));
    document.title = "qkv · " + T.text;
    $("model").textContent = (D.model_name || T.model.name) + " · " + T.model.model_type + " · " + N +
      " layers × " + H + " heads · head_dim " + T.model.head_dim + " · " + L + " tokens";
    SUMMARY = { text: D.summary || "", query: S.query, measure: S.measure };
    $("summary").textContent = SUMMARY.text;
    $("summary").hidden = !SUMMARY.text;
    buildSentence(); buildGrid(); update();
    document.body.dataset.ready = "1";
    document.body.dataset.shown = String(+(document.body.dataset.shown || 0) + 1);
  }

  document.querySelectorAll(".measure").forEach((b) =>
    b.addEventListener("click", () => { S.measure = b.dataset.measure; update(); }));
  $("scale").addEventListener("input", (e) => {
    const x = +e.target.value, top = Math.log2(tMax());
    setT(x >= top - 1e-6 ? tMax() : Math.pow(2, x));
  });
  $("scale-reset").addEventListener("click", () => setT(1));
  const data = document.getElementById("qkv-data");
  if (data) show(JSON.parse(data.textContent));
})();
"""
