"""qkv.serve -- ``qkv serve``: a local web app to type a sentence and watch attention (optional extra ``qkv[serve]``).

* :func:`qkv.serve.app.create_app` -- the FastAPI app (page + JSON API, OpenAPI at ``/openapi.json``).
* :func:`qkv.serve.server.serve` -- load the model, bind, run uvicorn until Ctrl-C.
* :mod:`qkv.serve.limits` -- text/body/concurrency limits (no web framework needed).
* :mod:`qkv.serve.intervene` -- ``POST /api/intervene``: interventions as data, the metric plain and intervened.

This package sits at the view level: it uses :mod:`qkv.lens`, :mod:`qkv.models` and :mod:`qkv.view`, and
nothing below it imports it; ``import qkv`` never imports FastAPI or uvicorn.
"""

from __future__ import annotations

__all__ = ["require_extra", "EXTRA_HINT"]

EXTRA_HINT = "pip install 'qkv[serve]'"


def require_extra() -> None:
    """Raise ``ValueError`` naming ``pip install 'qkv[serve]'`` when FastAPI or uvicorn is missing."""
    import importlib.util

    missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise ValueError(
            f"qkv serve needs the optional web stack ({' and '.join(missing)} not installed); "
            f"install it with: {EXTRA_HINT}"
        )
