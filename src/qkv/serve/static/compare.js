// qkv serve, /compare: a minimal pair (two texts that differ in one word) through POST /api/compare; the table lists
// every head's preference diff = measure(query -> prefer) - measure(query -> over) in text A and in text B, the
// heads that flip first. Text from the user or the server is written with textContent only.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const api = window.qkvApi;

  const setError = api.setError;
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
  const fmt = (x) => (x >= 0 ? "+" : "") + x.toFixed(3);

  function show(r) {
    $("summary").textContent = r.summary;
    const list = $("summaries");
    clear(list);
    r.summaries.forEach((s, k) => {
      const li = document.createElement("li");
      li.textContent = (k === 0 ? "A" : "B") + " (" + r.texts[k] + "): " + s;
      list.appendChild(li);
    });
    $("heads-title").textContent = "Every head: " + r.measure + "('" + r.query + "' → '" + r.prefer + "') − " +
      r.measure + "('" + r.query + "' → '" + r.over + "'), in A and in B (" + r.heads.length + " heads, flips first)";
    const body = $("heads-body");
    clear(body);
    for (const h of r.heads) {
      const tr = document.createElement("tr");
      if (h.flipped) tr.className = "flipped";
      api.cell(tr, "L" + h.layer + " H" + h.head, "token");
      api.cell(tr, fmt(h.diff_a));
      api.cell(tr, fmt(h.diff_b));
      api.cell(tr, fmt(h.diff_b - h.diff_a));
      const clear = h.clear === true ? " (clear: ≥ 0.05 on both sides)" : "";  // servers that say so
      api.cell(tr, h.flipped ? (h.diff_a > 0 ? "'" + r.prefer + "' → '" + r.over + "'"
        : "'" + r.over + "' → '" + r.prefer + "'") + clear : "", "token");
      body.appendChild(tr);
    }
    $("result").hidden = false;
  }

  $("compare").addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = { measure: $("measure").value };
    for (const f of ["text_a", "text_b", "query", "prefer", "over"]) body[f] = $(f).value.trim();
    const empty = ["text_a", "text_b", "prefer", "over"].filter((f) => !body[f]);
    if (empty.length) { setError("fill in " + empty.join(", ") + " (e.g. " + $(empty[0]).placeholder + ")"); return; }
    if (!body.query) delete body.query;  // the server's default query, as the CLI's
    else if (/^-?\d+$/.test(body.query)) body.query = parseInt(body.query, 10);  // a token index, as in the CLI
    await api.submit("/api/compare", body, show, "comparing", "compared");
  });
  document.body.dataset.ready = "1";
})();
