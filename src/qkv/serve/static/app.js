// qkv serve: the form that asks the server for a trace and hands it to the shared view (view.js, window.qkvView).
// The server picks the query (when none is given) and the head shown first, by the rule the CLI uses; the page
// shows what it answers. Every piece of text from the user or the server is written with textContent.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const view = window.qkvView, api = window.qkvApi;
  let current = null;   // {text, query, measure} of the trace on screen
  let summarySeq = 0;   // drop answers that arrive after a newer question

  function setError(msg) {
    $("error").textContent = msg || "";
    $("error").hidden = !msg;
  }
  function setStatus(msg, busy) {
    $("status").textContent = msg || "";
    $("status").classList.toggle("busy", !!busy);
  }
  const busy = (msg) => setStatus(msg, true);

  // what the server chose: the resolved query index and the head shown first (older servers: query.index)
  function chosen(r) {
    const q = r.query_index ?? (r.query && r.query.index) ?? 0;
    return { query: q, layer: r.layer ?? (r.head_shown && r.head_shown.layer) ?? 0,
             head: r.head ?? (r.head_shown && r.head_shown.head) ?? 0, measure: r.measure };
  }

  async function traceText(text, query) {
    const go = $("go");
    go.disabled = true;
    setStatus("tracing…");
    const started = performance.now();
    try {
      const body = { text: text, include_trace: true, measure: view.state().measure };
      if (query !== undefined && query !== null && query !== "") body.query = query;
      const r = await api.post("/api/trace", body, busy);
      setError("");
      const first = chosen(r);
      current = { text: r.text, query: first.query, measure: first.measure };
      view.show({ trace: r.trace, masked: r.masked, labels: r.labels, summary: r.summary, initial: first });
      setStatus(r.tokens.length + " tokens traced in " + Math.round(performance.now() - started) + " ms");
    } catch (e) {
      setError(e.message);
      setStatus("");
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
      const r = await api.post("/api/trace", { text: current.text, query: s.query, measure: s.measure }, (m) => {
        if (seq === summarySeq) busy(m);
      });
      if (seq === summarySeq) {
        view.setSummary(r.summary, s.query, s.measure);
        if ($("status").classList.contains("busy")) setStatus("");
      }
    } catch (e) {
      if (seq === summarySeq) { setError(e.message); setStatus(""); }
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
