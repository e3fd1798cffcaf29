"""`qkv.attention` is callable whether the name holds the function or the package."""
import importlib

import torch

import qkv


def test_package_and_function_compute_the_same():
    pkg = importlib.import_module("qkv.attention")
    q = k = v = torch.randn(1, 2, 5, 8, dtype=torch.float64)
    a = pkg(q, k, v, mask=qkv.masks.causal())
    b = pkg.attention(q, k, v, mask=qkv.masks.causal())
    assert torch.equal(a, b)
    assert callable(qkv.attention) and torch.equal(qkv.attention(q, k, v, mask=qkv.masks.causal()), a)
