// qkv serve: the one way the pages ask the server (window.qkvApi.post). A 503 with Retry-After means every trace
// slot and queue place is taken: the page waits what the server asks (1 s when it does not say), says "busy,
// retrying" where the user looks, and tries again (for at most MAX_WAIT_S seconds in all); any other error is
// thrown with the server's own words.
"use strict";
(function () {
  const MAX_WAIT_S = 120;
  const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

  function retryAfter(r) {  // seconds: an integer header (qkv's), else 1; at most 30 per wait
    const s = parseInt(r.headers.get("Retry-After") || "", 10);
    return Math.min(30, Math.max(1, isNaN(s) ? 1 : s));
  }

  // post(path, body, busy): the JSON answer; busy(text) is called with "busy, retrying ..." before each wait
  async function post(path, body, busy) {
    let waited = 0;
    for (let attempt = 1; ; attempt++) {
      let r;
      try {
        r = await fetch(path, {
          method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
        });
      } catch (e) {
        throw new Error("cannot reach the server (" + e.message + "); is qkv serve still running?");
      }
      if (r.status === 503 && waited < MAX_WAIT_S) {  // without Retry-After (a proxy's, uvicorn's own): 1 s
        const s = retryAfter(r);
        if (busy) busy("busy, retrying in " + s + " s (the server is working on other requests; try " + attempt + ")");
        await sleep(1000 * s);
        waited += s;
        continue;
      }
      let doc = null;
      try { doc = await r.json(); } catch (e) { doc = { error: "the server answered " + r.status + " without JSON" }; }
      if (!r.ok) {
        const text = (doc && doc.error) || ("HTTP " + r.status);
        throw new Error(r.status === 503 ? text + " (still busy after " + waited + " s of retries; try again later)"
          : text);
      }
      return doc;
    }
  }

  // cell(tr, text, cls): append a table cell written with textContent
  function cell(tr, text, cls) {
    const td = document.createElement("td");
    if (cls) td.className = cls;
    td.textContent = String(text);
    tr.appendChild(td);
    return td;
  }

  // The form pages (/compare, /probe) share one layout: a #go button, a #status line and an #error line.
  const $ = (id) => document.getElementById(id);
  function setError(msg) { $("error").textContent = msg || ""; $("error").hidden = !msg; }
  function setStatus(msg, busy) { $("status").textContent = msg || ""; $("status").classList.toggle("busy", !!busy); }

  // submit(path, body, show, doing, done): post with #go disabled, "<doing>…" then "<done> in N ms" in #status, the
  // answer drawn by show(answer), or the error in #error
  async function submit(path, body, show, doing, done) {
    $("go").disabled = true;
    setStatus(doing + "…");
    const started = performance.now();
    try {
      const r = await post(path, body, (m) => setStatus(m, true));
      setError("");
      show(r);
      setStatus(done + " in " + Math.round(performance.now() - started) + " ms");
      document.body.dataset.shown = String(+(document.body.dataset.shown || 0) + 1);
    } catch (err) {
      setError(err.message);
      setStatus("");
    } finally {
      $("go").disabled = false;
    }
  }

  window.qkvApi = {
    post: post, cell: cell, submit: submit, setError: setError, setStatus: setStatus, MAX_WAIT_S: MAX_WAIT_S,
  };
})();
