"""qkv -- attention (queries, keys, values, scaled dot product, softmax, weighted sum of values),
exact, fast and visible inside real models.

Layers (data flows one way): ``qkv.attention`` <- ``qkv.nn`` / ``qkv.models`` <- ``qkv.lens`` /
``qkv.view`` / ``qkv.cli``.

Example:
    >>> import torch, qkv
    >>> q = k = v = torch.randn(1, 2, 4, 8)
    >>> qkv.attention(q, k, v, mask=qkv.masks.causal()).shape
    torch.Size([1, 2, 4, 8])
"""
from .attention import Steps, attention, implementations, masks, merge, mods, steps

__version__ = "0.1.0"
__all__ = ["attention", "steps", "Steps", "masks", "mods", "merge", "implementations", "trace", "__version__"]


def __getattr__(name):
    # The lens sits on top of the models; import it only when asked for (keeps `import qkv` light).
    if name == "trace":
        from .lens.trace import trace

        return trace
    raise AttributeError(f"module 'qkv' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
