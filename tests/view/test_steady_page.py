"""The static page (`qkv explain --html`) holds still: no layout shift when the scaling slider or the measure moves,
labels keep their size and are never covered by a line's end, and the summary line follows the query."""

import pytest

from qkv.view.html import write_html
from qkv.view.terminal import preference_summary

from .steady import STEADY, boxes, covered_labels, label_sizes, one_line

pytestmark = pytest.mark.browser

#: slider positions (log2 t) and measures, in the order a user might try them
MOVES = [
    ("slider", "3"),
    ("slider", "-2"),
    ("slider", "0.7"),
    ("measure", "values"),
    ("measure", "rollout"),
    ("slider", "2.5"),
    ("measure", "weights"),
    ("reset", None),
]


def _open(browser, path, width):
    page = browser.new_page(viewport={"width": width, "height": 1000})
    errors = []
    page.on("console", lambda m: m.type in ("error", "warning") and errors.append(m.text))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.as_uri())
    page.wait_for_selector("body[data-ready='1']")
    return page, errors


def _move(page, kind, arg):
    if kind == "slider":
        page.locator("#scale").fill(arg)
    elif kind == "measure":
        page.locator(f".measure[data-measure='{arg}']").click()
    else:
        page.click("#scale-reset")


@pytest.mark.parametrize("width", [1400, 1100])
def test_nothing_moves_when_the_slider_or_the_measure_moves(browser, cat_trace, tmp_path, width):
    path = write_html(cat_trace, tmp_path / "e.html", query="it", layer=5, head=11, summary="it -> cat")
    page, errors = _open(browser, path, width)
    before, sizes = boxes(page), label_sizes(page)
    assert min(sizes) >= 11 and max(sizes) == 13  # drawn 1:1 (11 px special tokens, 13 px words), never scaled
    for kind, arg in MOVES:
        _move(page, kind, arg)
        after = boxes(page)
        moved = {s: (before[s], after[s]) for s in STEADY if before[s] != after[s]}
        assert moved == {}, f"after {kind} {arg}: {moved}"
        assert label_sizes(page) == sizes, f"labels changed size after {kind} {arg}"
        for title in ("#lines-title", "#breakdown-title"):
            assert one_line(page, title), f"{title} wraps after {kind} {arg}: {page.inner_text(title)!r}"
    assert page.locator("#lines-title").get_attribute("title") == page.inner_text("#lines-title")  # on hover
    assert errors == []
    page.close()


def test_the_grid_note_never_widens_its_card(browser, cat_trace, tmp_path):
    path = write_html(cat_trace, tmp_path / "e.html", query="because", layer=0, head=2)
    page, errors = _open(browser, path, 1400)
    card = page.locator("#grid-wrap").bounding_box()
    maps = page.locator("#grid").bounding_box()
    assert card["width"] <= maps["width"] + 2 * 17 + 1  # the card is as wide as its maps, padding included
    page.locator("#scale").fill("2.5")  # the longest note: a long query label and "Scores multiplied by t"
    assert page.inner_text("#grid-note").endswith("Scores multiplied by t = 5.66.")
    assert page.locator("#grid-wrap").bounding_box() == card
    assert errors == []
    page.close()


@pytest.mark.parametrize("query", ["it", "capital", "[CLS]"])
def test_no_line_end_covers_a_label(browser, tmp_path, query):
    import qkv

    t = qkv.trace("Paris is the capital of France and it is big.")
    path = write_html(t, tmp_path / "p.html", query=query)
    page, errors = _open(browser, path, 1400)
    heaviest = 0.0
    for n in range(t.num_layers):  # every head of every layer, every measure: thick lines included
        for h in range(t.num_heads):
            page.locator(f".map[aria-label='layer {n} head {h}']").click()
            for measure in ("weights", "values") if (n + h) % 3 == 0 else ("weights",):
                page.locator(f".measure[data-measure='{measure}']").click()
                assert covered_labels(page) == [], f"layer {n} head {h} {measure}"
                heaviest = max(
                    heaviest,
                    max(
                        float(x)
                        for x in page.eval_on_selector_all(
                            "#lines line", "ls => ls.map(l => l.getAttribute('stroke-width'))"
                        )
                    ),
                )
    assert heaviest > 12  # the test saw lines thick enough to reach a label with a round end
    assert errors == []
    page.close()


def test_the_summary_follows_the_query_and_the_measure(browser, cat_trace, tmp_path):
    i = cat_trace.index("it")
    summary = preference_summary(cat_trace, i, "cat", "mat", "weights")
    path = write_html(cat_trace, tmp_path / "e.html", query="it", layer=5, head=11, summary=summary)
    page, errors = _open(browser, path, 1400)
    assert page.inner_text("#summary") == summary
    page.locator(".tok", has_text="sat").first.click()  # another query: the comparison no longer describes it
    text = page.inner_text("#summary")
    assert "'cat' vs 'mat'" not in text and "written for 'it' with weights, not 'sat' with weights" in text
    assert "click 'it'" in text
    page.locator(".tok", has_text="it").first.click()
    assert page.inner_text("#summary") == summary
    page.locator(".measure[data-measure='values']").click()  # another measure: the numbers were for weights
    assert "not 'it' with values: press weights" in page.inner_text("#summary")
    page.locator(".measure[data-measure='weights']").click()
    assert page.inner_text("#summary") == summary
    assert errors == []
    page.close()
