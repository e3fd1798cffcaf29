"""The self-contained HTML page: no network references, user text escaped, data round-trips."""

import base64
import hashlib
import re

import pytest
import torch

from qkv.view.html import embed_json, extract_json, render_html, write_html
from qkv.view.html_assets import JS

from .conftest import XSS


def test_page_has_no_network_references(cat_trace):
    page = render_html(cat_trace, query="it")
    assert not re.search(r"https?://", page, re.IGNORECASE)
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:)""", page)  # only the data: favicon
    assert "default-src 'none'" in page


def test_embedded_data_round_trips_and_initial_state(cat_trace):
    page = render_html(cat_trace, query="it", layer=5, head=11, measure="values", summary="a <b> summary")
    data = extract_json(page)
    assert data["trace"] == cat_trace.to_dict(4)
    assert data["initial"] == {"query": 8, "layer": 5, "head": 11, "measure": "values"}
    assert data["summary"] == "a <b> summary"


def test_user_text_cannot_break_out_of_the_data_block(xss_trace):
    page = render_html(xss_trace, query="it")
    block = page.split('<script type="application/json" id="qkv-data">', 1)[1].split("</script>", 1)[0]
    assert "<" not in block and ">" not in block  # so no </script> or <img> can end or open a tag
    assert page.count("<script") == 2  # the data block and qkv's own script, nothing from the text
    assert "onerror" not in page.replace(block, "")
    assert extract_json(page)["trace"]["text"] == XSS


def test_csp_allows_exactly_the_inline_script():
    page = render_html(_tiny())
    digest = base64.b64encode(hashlib.sha256(JS.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in page
    assert f"<script>{JS}</script>" in page


def test_embed_json_escapes_line_separators():
    s = embed_json({"t": "a\u2028b</script>&"})
    assert "\u2028" not in s and "<" not in s and "&" not in s
    assert s == '{"t":"a\\u2028b\\u003c/script\\u003e\\u0026"}'


def test_bad_options_raise(tmp_path):
    with pytest.raises(ValueError, match="measure must be one of"):
        render_html(_tiny(), measure="grad")
    with pytest.raises(ValueError, match="1 layers"):
        render_html(_tiny(), layer=3)
    from qkv.lens.trace import Trace

    big = Trace.from_tensors("x", ["x"] * 300, weights=torch.full((6, 12, 300, 300), 1 / 300))
    with pytest.raises(ValueError, match="shorten the text"):
        render_html(big)
    path = write_html(_tiny(), tmp_path / "p.html")
    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def _tiny():
    from qkv.lens.trace import Trace

    return Trace.from_tensors("a b", ["a", "b"], weights=torch.tensor([[[[1.0, 0.0], [0.3, 0.7]]]]))


def test_png_heatmap(cat_trace, tmp_path):
    from qkv.view.png import save_heatmap

    path = save_heatmap(cat_trace, tmp_path / "head.png", 5, 11, query="it")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    save_heatmap(cat_trace, tmp_path / "roll.png", 2, None, measure="rollout")
    with pytest.raises(ValueError, match="ending in .png"):
        save_heatmap(cat_trace, tmp_path / "head.jpg", 0, 0)
