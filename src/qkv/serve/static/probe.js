// qkv serve, /probe: a small list of probe items (JSON lines in qkv's item schema, or one JSON array) through
// POST /api/probe: the verdict, the baselines, the held-out best head and every head's accuracy with its exact 95%
// interval. Text from the user or the server is written with textContent only.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const api = window.qkvApi;

  const setError = api.setError;
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
  const pct = (x) => (100 * x).toFixed(1) + "%";
  const ci = (s) => pct(s.ci_low) + " – " + pct(s.ci_high);

  // the items: one JSON array, or one JSON object per non-empty line; a bad line is named by its number
  function readItems(text) {
    const t = text.trim();
    if (!t) throw new Error("give at least one item, one JSON object per line (the box starts with an example)");
    if (t.startsWith("[")) {
      try { return JSON.parse(t); } catch (e) { throw new Error("the items are not a JSON array (" + e.message + ")"); }
    }
    return t.split("\n").map((line, k) => [line.trim(), k + 1]).filter(([line]) => line).map(([line, n]) => {
      try { return JSON.parse(line); } catch (e) {
        throw new Error("line " + n + " is not a JSON object (" + e.message + "); write one item per line, e.g. " +
          '{"text": "The cat sat on the mat because it was tired.", "query": "it", "candidates": ["cat", "mat"], ' +
          '"answer": "cat"}');
      }
    });
  }

  function scoreRow(body, name, s, extra) {
    const tr = document.createElement("tr");
    api.cell(tr, name, "token");
    api.cell(tr, pct(s.accuracy));
    api.cell(tr, ci(s));
    api.cell(tr, s.correct + " / " + s.n);
    api.cell(tr, extra || "", "token");
    body.appendChild(tr);
  }

  function show(r) {
    $("verdict").textContent = "Verdict: " + r.verdict + ". " + r.reason;
    const items = r.items;
    $("items-used").textContent = items.used + " of " + items.total + " items used (" + r.model + ", " + r.measure +
      ", " + r.layers + " layers × " + r.heads_per_layer + " heads)" +
      (items.skipped.length ? "; skipped: " + items.skipped.map((s) => s.id + " (" + s.reason + ")").join("; ") : "");
    const base = $("baselines-body");
    clear(base);
    if (r.heldout) {
      scoreRow(base, "held-out best head", r.heldout, "median of " + r.heldout.splits.n + " splits (range " +
        pct(r.heldout.splits.min) + " – " + pct(r.heldout.splits.max) + ")");
    }
    for (const [name, s] of Object.entries(r.baselines)) scoreRow(base, name + " candidate", s, "baseline");
    const heads = $("heads-body");
    clear(heads);
    r.heads.forEach((h, k) => scoreRow(heads, "L" + h.layer + " H" + h.head, h, k === 0 ? "best on all items" : ""));
    $("result").hidden = false;
  }

  $("probe").addEventListener("submit", async (e) => {
    e.preventDefault();
    let items;
    try { items = readItems($("items").value); } catch (err) { setError(err.message); return; }
    const seed = parseInt($("seed").value || "0", 10);
    const body = { items: items, measure: $("measure").value, seed: seed };
    await api.submit("/api/probe", body, show, "probing " + items.length + " items", "probed");
  });
  document.body.dataset.ready = "1";
})();
