"""Token labels in the HTML page are the right substrings for every Unicode text: astral characters (emoji,
mathematical letters), ZWJ sequences, skin tones and flags, combining marks, right-to-left scripts.

The offsets count code points; JavaScript strings count UTF-16 units, so the page used to cut "😴😴 The cat"
into '😴' and '\\ude34 T'. The labels are now sliced in Python and embedded (fast tests below), and the page shows
exactly them (Chromium test at the end; skipped without Chromium, failed under CI).
"""

import pytest

from qkv.view.html import extract_json, render_html, token_labels, write_html

TEXTS = {
    "emoji": "😴😴 The cat sat on the mat because it was tired.",
    "zwj": "The family 👨\u200d👩\u200d👧 sat on the mat 👍🏽 and 🇫🇷.",
    "astral letters": "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 text sat on the mat.",
    "combining": "Le cafe\u0301 e\u0301tait ferme\u0301, n\u0303o.",
    "rtl": "שלום עולם, القطة جلست on the mat.",
}


@pytest.fixture(scope="module")
def traces():
    import qkv

    return {name: qkv.trace(text) for name, text in TEXTS.items()}


def expected_labels(t) -> list[str]:
    """The label of a token: its span of the text (trimmed), its token string for specials."""
    return [
        tok if sp or e <= s else t.text[s:e].strip() or tok for tok, (s, e), sp in zip(t.tokens, t.offsets, t.special)
    ]


def utf16_labels(t) -> list[str]:
    """What slicing the text by the same offsets in UTF-16 units (JavaScript) gives: the old, wrong labels."""
    units = t.text.encode("utf-16-le")
    return [
        tok if sp or e <= s else units[2 * s : 2 * e].decode("utf-16-le", "replace").strip() or tok
        for tok, (s, e), sp in zip(t.tokens, t.offsets, t.special)
    ]


@pytest.mark.parametrize("name", sorted(TEXTS))
def test_embedded_labels_are_the_code_point_substrings(traces, name):
    t = traces[name]
    data = extract_json(render_html(t))
    assert data["labels"] == token_labels(t) == expected_labels(t)
    assert data["trace"]["text"] == TEXTS[name]
    assert all(lab and not any(0xD800 <= ord(c) <= 0xDFFF for c in lab) for lab in data["labels"])


def test_the_emoji_case_from_the_issue(traces):
    t = traces["emoji"]
    labels = token_labels(t)
    assert labels[:4] == ["[CLS]", "😴😴", "The", "cat"]
    assert utf16_labels(t)[1:3] == ["😴", "\ufffd T"]  # what the page showed before ('\ude34 T')


def test_zwj_rtl_and_combining_keep_whole_graphemes(traces):
    assert "👨\u200d👩\u200d👧" in token_labels(traces["zwj"]) and "🇫🇷" in token_labels(traces["zwj"])
    assert "👍🏽" in token_labels(traces["zwj"])
    assert "e\u0301ta" in token_labels(traces["combining"])  # the combining acute stays with its letter
    rtl = token_labels(traces["rtl"])
    assert "".join(rtl[1:5]) == "שלום" and "mat" in rtl


def test_the_page_no_longer_slices_text():
    from qkv.view.html_assets import JS

    assert "T.text.slice" not in JS and "LABELS[j]" in JS and "LABELS = D.labels" in JS


# ---------------------------------------------------------------------------------------------- Chromium
@pytest.mark.browser
@pytest.mark.parametrize("name", sorted(TEXTS))
def test_chromium_shows_the_expected_labels(browser, traces, tmp_path, name):
    t = traces[name]
    want = expected_labels(t)
    path = write_html(t, tmp_path / f"{name.replace(' ', '_')}.html")
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=15000)
    assert page.evaluate("() => [...document.querySelectorAll('#sentence .tok')].map(b => b.textContent)") == want
    rows = page.evaluate(
        "() => [...document.querySelectorAll('#breakdown-body tr')].map(r => r.querySelectorAll('td')[1].textContent)"
    )
    assert rows == want  # the breakdown's token column
    q = t.resolve().query  # the page opens on the shared default query (the first pronoun, else token 1)
    assert f"'{want[q]}' (token {q})" in page.inner_text("#breakdown-title")
    page.locator("#sentence .tok").nth(len(want) - 2).click()  # select another token: its label in the title
    assert f"'{want[-2]}' (token {len(want) - 2})" in page.inner_text("#breakdown-title")
    assert errors == []
    page.close()
