"""Traces for the view tests: MiniLM (loaded once per process) and a synthetic one; headless Chromium.

Browser tests use the session's ``browser`` fixture (tests/conftest.py).
"""

import pytest
import torch

SENTENCE = "The cat sat on the mat because it was tired."
XSS = 'The cat </script><script>window.__pwned = 1</script> sat on <img src=x onerror="window.__pwned = 2"> it.'


@pytest.fixture(scope="session")
def cat_trace():
    import qkv

    return qkv.trace(SENTENCE)


@pytest.fixture(scope="session")
def xss_trace():
    import qkv

    return qkv.trace(XSS)


@pytest.fixture
def tiny_trace():
    """Three tokens, one layer, two heads: 'it' (row 2) prefers 'cat' in head 0 and 'mat' in head 1."""
    from qkv.lens.trace import Trace

    w = torch.tensor(
        [[[[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.6, 0.3, 0.1]], [[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.1, 0.7, 0.2]]]]
    )  # (N=1, H=2, L=3, L=3)
    return Trace.from_tensors("cat mat it", ["cat", "mat", "it"], weights=w, offsets=[(0, 3), (4, 7), (8, 10)])
