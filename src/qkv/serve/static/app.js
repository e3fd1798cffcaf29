// qkv serve: the form that asks the server for a trace and hands it to the shared view (view.js, window.qkvView).
// Every piece of text from the user or the server is written with textContent, never as HTML.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const view = window.qkvView;
  let current = null;   // {text, query, measure} of the trace on screen
  let summarySeq = 0;   // drop answers that arrive after a newer question

  function setError(msg) {
    $("error").textContent = msg || "";
    $("error").hidden = !msg;
  }
  async function post(path, body) {
    const r = await fetch(path, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    let doc = null;
    try { doc = await r.json(); } catch (e) { doc = { error: "the server answered " + r.status + " without JSON" }; }
    if (!r.ok) throw new Error((doc && doc.error) || ("HTTP " + r.status));
    return doc;
  }

  async function traceText(text, query) {
    const go = $("go");
    go.disabled = true;
    $("status").textContent = "tracing…";
    const started = performance.now();
    try {
      const body = { text: text, include_trace: true, measure: view.state().measure };
      if (query !== undefined && query !== null) body.query = query;
      const r = await post("/api/trace", body);
      setError("");
      current = { text: r.text, query: r.query.index, measure: r.measure };
      view.show({ trace: r.trace, masked: r.masked, labels: r.labels, summary: r.summary,
                  initial: { query: r.query.index, layer: r.layer, head: r.head, measure: r.measure } });
      $("status").textContent = r.tokens.length + " tokens traced in " +
        Math.round(performance.now() - started) + " ms";
    } catch (e) {
      setError(e.message);
      $("status").textContent = "";
    } finally {
      go.disabled = false;
    }
  }

  // the summary line follows the query token and the measure the user picks in the view
  view.onchange = async (s) => {
    if (!current || (s.query === current.query && s.measure === current.measure)) return;
    current.query = s.query; current.measure = s.measure;
    const seq = ++summarySeq;
    try {
      const r = await post("/api/trace", { text: current.text, query: s.query, measure: s.measure });
      if (seq === summarySeq) { $("summary").textContent = r.summary; $("summary").hidden = !r.summary; }
    } catch (e) {
      if (seq === summarySeq) setError(e.message);
    }
  };

  $("ask").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("text").value;
    if (!text.trim()) { setError("type a sentence first, e.g. " + $("text").placeholder); return; }
    traceText(text, null);
  });
  traceText($("text").value, document.body.dataset.query || null);
})();
