"""The served pages in a real headless Chromium: the trace page holds still and shows what the API chose, the
compare and probe pages, and every page waits and retries (saying "busy, retrying") while the server is busy.

The server runs in this process (uvicorn in a thread, on a free loopback port) around a tracer that the tests
can hold, so that "busy" is a state the test sets up, not a race.
"""

import json
import threading
import time

import httpx
import pytest

from qkv.lens.probe_io import twins_path
from qkv.lens.trace import trace as lens_trace

from ..view.steady import STEADY, boxes, covered_labels, label_sizes
from .conftest import SENTENCE

pytestmark = pytest.mark.browser

DOG = "The dog chased the ball because it was fast."
SOFT = "The cat sat on the mat because it was soft."
HOLD = "Hold the server busy."


class Held:
    """A tracer the test can hold: a trace of :data:`HOLD` waits inside the slot until ``release()``."""

    def __init__(self):
        self.inside, self.gate = threading.Semaphore(0), threading.Event()

    def __call__(self, text, model):
        if text == HOLD:
            self.inside.release()
            self.gate.wait(60)
        return lens_trace(text, model)

    def hold(self, url) -> threading.Thread:
        """Send a trace of HOLD from a thread and return once it holds the server's only slot."""
        self.gate.clear()
        t = threading.Thread(target=lambda: httpx.post(url + "/api/trace", json={"text": HOLD}, timeout=90))
        t.start()
        assert self.inside.acquire(timeout=30), "the held request never reached the tracer"
        return t

    def release(self, t: threading.Thread):
        self.gate.set()
        t.join(60)


@pytest.fixture(scope="module")
def app_server(minilm):
    """``(url, held)``: the app with one trace slot and no queue (a second request gets 503 + Retry-After: 1)."""
    import uvicorn

    from qkv.serve.app import create_app
    from qkv.serve.limits import Limits
    from qkv.serve.server import bind

    held = Held()
    app = create_app(minilm, limits=Limits(running=1, waiting=0, retry_after=1), tracer=held)
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    for _ in range(200):
        if server.started:
            break
        thread.join(0.05)
    yield url, held
    held.gate.set()
    server.should_exit = True
    thread.join(30)
    sock.close()


def open_page(browser, url, path="/", ready="body[data-shown='1']"):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(20000)
    seen = {"errors": [], "outside": []}
    page.on("console", lambda m: m.type in ("error", "warning") and seen["errors"].append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: seen["errors"].append(f"pageerror: {e}"))
    page.on("request", lambda r: r.url.startswith((url + "/", "data:")) or seen["outside"].append(r.url))
    page.goto(url + path)
    page.wait_for_selector(ready, timeout=30000)
    return page, seen


def api(url, path, body):
    """The oracle: the API's own answer (retried after Retry-After: the page may hold the only slot)."""
    for _ in range(60):
        r = httpx.post(url + path, json=body, timeout=60)
        if r.status_code != 503:
            break
        time.sleep(int(r.headers["retry-after"]))
    assert r.status_code == 200, r.text
    return r.json()


def shown(page):
    """(query index, 'layer L head H') the page shows."""
    q = int(page.get_attribute(".tok.selected", "data-index"))
    return q, page.get_attribute(".map.selected", "aria-label")


# ------------------------------------------------------------------------------------------------- the trace page
def test_the_page_shows_the_query_and_head_the_api_chose(browser, app_server):
    url, _ = app_server
    page, seen = open_page(browser, url)
    first = api(url, "/api/trace", {"text": SENTENCE, "query": "it"})  # what the page asked on load
    assert shown(page) == (first["query"]["index"], f"layer {first['layer']} head {first['head']}")
    page.fill("#text", DOG)
    page.click("#go")
    page.wait_for_selector("body[data-shown='2']")
    dog = api(url, "/api/trace", {"text": DOG})  # no query: the server's rule, as the CLI's
    assert shown(page) == (dog["query"]["index"], f"layer {dog['layer']} head {dog['head']}")
    assert page.inner_text("#summary") == dog["summary"]
    assert seen == {"errors": [], "outside": []}
    page.close()


def test_the_served_page_holds_still_and_its_banner_follows_the_query(browser, app_server):
    url, _ = app_server
    page, seen = open_page(browser, url)
    before, sizes = boxes(page), label_sizes(page)
    for kind, arg in [
        ("slider", "3"),
        ("measure", "values"),
        ("slider", "-2"),
        ("measure", "rollout"),
        ("measure", "weights"),
        ("reset", None),
    ]:
        if kind == "slider":
            page.locator("#scale").fill(arg)
        elif kind == "measure":
            page.locator(f".measure[data-measure='{arg}']").click()
            want = api(url, "/api/trace", {"text": SENTENCE, "query": "it", "measure": arg})["summary"]
            page.wait_for_function("s => document.getElementById('summary').textContent === s", arg=want)
        else:
            page.click("#scale-reset")
        after = boxes(page)
        assert {s: (before[s], after[s]) for s in STEADY if before[s] != after[s]} == {}, (kind, arg)
        assert label_sizes(page) == sizes and covered_labels(page) == []
    page.locator(".tok", has_text="sat").first.click()  # another token: the banner is about it, not about 'it'
    i = int(page.locator(".tok", has_text="sat").first.get_attribute("data-index"))
    want = api(url, "/api/trace", {"text": SENTENCE, "query": i})["summary"]
    page.wait_for_function("s => document.getElementById('summary').textContent === s", arg=want)
    assert "'sat'" in want and not page.locator("#summary.stale").count()
    assert seen == {"errors": [], "outside": []}
    page.close()


def test_the_page_retries_while_the_server_is_busy(browser, app_server):
    url, held = app_server
    page, seen = open_page(browser, url)
    refused = httpx.get(url + "/api/health").json()["refused"]
    t = held.hold(url)
    try:
        page.fill("#text", DOG)
        page.click("#go")
        page.wait_for_selector("#status.busy", timeout=10000)  # the 503 is not shown as an error: it waits
        assert page.inner_text("#status").startswith("busy, retrying in 1 s")
        assert page.locator("#error").is_hidden()
        page.wait_for_function(
            "() => /try [2-9]/.test(document.getElementById('status').textContent)", timeout=10000
        )  # still busy: it asked again after Retry-After and was refused again
    finally:
        held.release(t)
    page.wait_for_selector("body[data-shown='2']", timeout=30000)  # the slot is free: the retry gets its answer
    assert not page.locator("#status.busy").count() and "tokens traced" in page.inner_text("#status")
    assert page.locator("#error").is_hidden() and page.locator(".tok").count() == len(
        api(url, "/api/trace", {"text": DOG})["tokens"]
    )
    assert httpx.get(url + "/api/health").json()["refused"] >= refused + 2
    assert [e for e in seen["errors"] if "status of 503" not in e] == [] and seen["outside"] == []
    page.close()


# ------------------------------------------------------------------------------------------------- compare
def test_compare_page_shows_every_head_and_errors(browser, app_server, minilm):
    url, held = app_server
    page, seen = open_page(browser, url, "/compare", ready="body[data-ready='1']")
    assert page.locator("nav a[aria-current='page']").inner_text() == "Compare"
    page.click("#go")
    page.wait_for_selector("body[data-shown='1']")
    oracle = api(url, "/api/compare", {"text_a": SENTENCE, "text_b": SOFT, "prefer": "cat", "over": "mat"})
    assert page.inner_text("#summary") == oracle["summary"]
    rows = page.locator("#heads-body tr")
    assert rows.count() == 72
    first = [c.strip() for c in rows.nth(0).locator("td").all_inner_texts()]
    h = oracle["heads"][0]
    assert first[:4] == [
        f"L{h['layer']} H{h['head']}",
        f"{h['diff_a']:+.3f}",
        f"{h['diff_b']:+.3f}",
        f"{h['diff_b'] - h['diff_a']:+.3f}",
    ]
    assert page.locator("#heads-body tr.flipped").count() == sum(x["flipped"] for x in oracle["heads"])
    assert len(page.locator("#summaries li").all()) == 2

    page.fill("#text_b", "The dog sat.")  # the server's error, in its words
    page.click("#go")
    page.wait_for_selector("#error:not([hidden])")
    assert "text B: token 'it' is not in the text" in page.inner_text("#error")
    page.fill("#over", "")  # the page's own check: nothing sent
    page.click("#go")
    assert page.inner_text("#error").startswith("fill in over")

    page.fill("#text_b", SOFT)
    page.fill("#over", "mat")
    page.fill("#query", "")  # no query: the server's default (the pronoun), as the CLI's
    page.click("#go")
    page.wait_for_selector("body[data-shown='2']")
    assert "('it' → 'cat')" in page.inner_text("#heads-title") and page.locator("#error").is_hidden()
    t = held.hold(url)  # busy: the compare page waits and retries too
    try:
        page.click("#go")
        page.wait_for_selector("#status.busy", timeout=10000)
        assert "busy, retrying" in page.inner_text("#status")
    finally:
        held.release(t)
    page.wait_for_selector("body[data-shown='3']", timeout=30000)
    assert page.locator("#error").is_hidden() and rows.count() == 72
    assert [e for e in seen["errors"] if "status of 422" not in e and "status of 503" not in e] == []
    assert seen["outside"] == []
    page.close()


# ------------------------------------------------------------------------------------------------- probe
def test_probe_page_runs_the_shipped_items_and_shows_errors(browser, app_server, minilm):
    url, _ = app_server
    page, seen = open_page(browser, url, "/probe", ready="body[data-ready='1']")
    lines = [x for x in twins_path().read_text(encoding="utf-8").splitlines() if x.strip()][:8]
    assert [json.loads(x) for x in page.input_value("#items").splitlines()] == [json.loads(x) for x in lines]
    page.click("#go")
    page.wait_for_selector("body[data-shown='1']", timeout=60000)
    oracle = api(url, "/api/probe", {"items": [json.loads(x) for x in lines]})
    assert page.inner_text("#verdict") == f"Verdict: {oracle['verdict']}. {oracle['reason']}"
    assert page.locator("#heads-body tr").count() == 72
    best = oracle["heads"][0]
    cells = page.locator("#heads-body tr").nth(0).locator("td").all_inner_texts()
    assert cells[:4] == [
        f"L{best['layer']} H{best['head']}",
        f"{100 * best['accuracy']:.1f}%",
        f"{100 * best['ci_low']:.1f}% – {100 * best['ci_high']:.1f}%",
        f"{best['correct']} / {best['n']}",
    ]
    names = page.locator("#baselines-body tr td:first-child").all_inner_texts()
    assert names == ["held-out best head"] + [f"{k} candidate" for k in oracle["baselines"]]
    assert "8 of 8 items used" in page.inner_text("#items-used")

    page.fill("#items", lines[0] + "\n{not json")  # the page names the bad line
    page.click("#go")
    assert page.inner_text("#error").startswith("line 2 is not a JSON object")
    bad = dict(json.loads(lines[0]), answer=5)  # the server's words for a bad item
    page.fill("#items", json.dumps(bad))
    page.click("#go")
    page.wait_for_function("() => document.getElementById('error').textContent.includes('items[0]')")
    assert [e for e in seen["errors"] if "status of 422" not in e] == [] and seen["outside"] == []
    page.close()


def test_every_page_links_to_the_others(app_server):
    url, _ = app_server
    for path, name in (("/", "Trace"), ("/compare", "Compare"), ("/probe", "Probe")):
        r = httpx.get(url + path)
        assert r.status_code == 200 and "script-src 'self'" in r.headers["content-security-policy"]
        for other in ('href="/"', 'href="/compare"', 'href="/probe"'):
            assert other in r.text
        assert f'aria-current="page">{name}<' in r.text
