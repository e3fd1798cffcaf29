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

from typing import TYPE_CHECKING, Any

from ._startup import command_imports

with command_imports():  # Ctrl-C while the `qkv` command loads torch: one line and status 130 (qkv._startup)
    from . import masks, mods
    from .core import Steps, attention, implementations, merge, steps

if TYPE_CHECKING:  # for type checkers; at run time `qkv.trace` is imported on first use (__getattr__)
    from .lens.tracing import trace

__version__ = "0.1.0"
__all__ = ["attention", "steps", "Steps", "masks", "mods", "merge", "implementations", "trace", "__version__"]


def __getattr__(name: str) -> Any:
    # The lens sits on top of the models; import it only when asked for (keeps `import qkv` light).
    if name == "trace":
        from . import view  # noqa: F401 -- the composition root wires the view's notebook display into Trace
        from .lens.tracing import trace

        return trace
    raise AttributeError(f"module 'qkv' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), "trace"])
