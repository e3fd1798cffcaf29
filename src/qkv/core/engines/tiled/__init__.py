"""``impl="tiled"``: exact attention in O(N) memory that skips what the mask forbids.

* :mod:`.plan` -- which rectangles of the score matrix to compute (from the mask's public description);
* :mod:`.kernels` -- gather a group of segments, compute them (fused CPU kernel or PyTorch tiles), scatter;
* :mod:`.engine` -- the forward, the O(N)-memory backward (a custom autograd function) and the plan cache;
* :mod:`.fused_op` -- the one adapter to PyTorch's private fused CPU kernel (looked up lazily, probed once);
* :mod:`.ops` -- the forward and backward as registered PyTorch ops (what ``torch.compile`` sees), with
  :mod:`.spec` describing a mask and score mod as a string and tensors.
"""

from .engine import tiled_plan_for
from .ops import compile_reason, tiled_forward
from .plan import Plan, make_plan

__all__ = ["tiled_forward", "tiled_plan_for", "compile_reason", "Plan", "make_plan"]
