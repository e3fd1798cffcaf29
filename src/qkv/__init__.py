"""qkv -- attention (queries, keys, values, scaled dot product, softmax, weighted sum of values),
exact, fast and visible inside real models.

The tree (data flows one way; ``make lint`` enforces it with import-linter)::

    qkv.core            the mechanism: attention/steps/merge, masks, mods, engines (reference, sdpa, tiled, flex)
    qkv.masks, qkv.mods the public modules of masks and score mods
    qkv.nn              multi-head attention, KV cache, RoPE, the recording hooks
    qkv.models          model families loaded from safetensors (BERT/MiniLM, GPT-2, Llama)
    qkv.lens            traces of every step on a real model, attribution, head choice
    qkv.claims          the essay's claims measured (an application of the lens)
    qkv.view            terminal tables, the self-contained HTML page, PNG figures
    qkv.cli             the ``qkv`` command
    qkv.distributed     ring attention over torch.distributed (uses the mechanism only)

Example:
    >>> import torch, qkv
    >>> q = k = v = torch.randn(1, 2, 4, 8)
    >>> qkv.attention(q, k, v, mask=qkv.masks.causal()).shape
    torch.Size([1, 2, 4, 8])
"""

try:
    from . import masks, mods
    from .core import Steps, attention, implementations, merge, steps
except KeyboardInterrupt:  # Ctrl-C while torch loads: the `qkv` command says one line, not a traceback
    import sys as _sys

    def _is_the_command() -> bool:
        """This process is the ``qkv`` command: its console script, ``python -m qkv`` or ``python -m qkv.cli``."""
        import os

        argv = getattr(_sys, "orig_argv", _sys.argv)
        if os.path.basename(_sys.argv[0]) in ("qkv", "qkv.exe"):
            return True
        return "-m" in argv[:-1] and argv[argv.index("-m") + 1] in ("qkv", "qkv.cli")

    if _is_the_command():
        print("qkv: interrupted", file=_sys.stderr, flush=True)
        raise SystemExit(130) from None
    raise

__version__ = "0.1.0"
__all__ = ["attention", "steps", "Steps", "masks", "mods", "merge", "implementations", "trace", "__version__"]


def __getattr__(name):
    # The lens sits on top of the models; import it only when asked for (keeps `import qkv` light).
    if name == "trace":
        from . import view  # noqa: F401 -- the composition root wires the view's notebook display into Trace
        from .lens.tracing import trace

        return trace
    raise AttributeError(f"module 'qkv' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), "trace"])
