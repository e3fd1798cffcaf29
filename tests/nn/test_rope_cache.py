"""RotaryEmbedding against closed-form rotations and transformers' Llama RoPE; KVCache bookkeeping."""

import pytest
import torch

from qkv.nn import KVCache, RotaryEmbedding
from qkv.nn.rope import rope_frequencies


def rotate_pairs(x, positions, theta):
    """Closed form: dims (i, i + D/2) form a complex number rotated by angle p * theta^(-2i/D)."""
    D = x.shape[-1]
    inv = theta ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)  # (D/2,)
    ang = positions.double()[:, None] * inv  # (L, D/2)
    z = torch.complex(x[..., : D // 2], x[..., D // 2 :]) * torch.polar(torch.ones_like(ang), ang)
    return torch.cat([z.real, z.imag], dim=-1)


def test_equals_complex_rotation():
    rope = RotaryEmbedding(8, theta=10000.0)
    x = torch.randn(2, 3, 5, 8, dtype=torch.float64)
    pos = torch.tensor([0, 1, 2, 7, 100])
    torch.testing.assert_close(rope(x, pos), rotate_pairs(x, pos, 10000.0), rtol=1e-6, atol=1e-6)


def test_position_zero_is_identity_and_norm_is_kept():
    rope = RotaryEmbedding(16)
    x = torch.randn(1, 2, 4, 16)
    torch.testing.assert_close(rope(x, torch.zeros(4, dtype=torch.long)), x)
    torch.testing.assert_close(rope(x, torch.arange(4)).norm(dim=-1), x.norm(dim=-1))


def test_scores_depend_on_relative_position_only():
    rope = RotaryEmbedding(32, theta=500.0)
    q, k = torch.randn(1, 1, 1, 32, dtype=torch.float64), torch.randn(1, 1, 1, 32, dtype=torch.float64)

    def score(pq, pk):
        return (rope(q, torch.tensor([pq])) * rope(k, torch.tensor([pk]))).sum().item()

    assert score(9, 4) == pytest.approx(score(25, 20), abs=1e-9)
    assert score(9, 4) != pytest.approx(score(9, 5), abs=1e-6)


def test_batched_positions():
    rope = RotaryEmbedding(8)
    x = torch.randn(2, 3, 4, 8)
    pos = torch.tensor([[0, 1, 2, 3], [5, 6, 7, 8]])
    out = rope(x, pos)
    torch.testing.assert_close(out[1:], rope(x[1:], pos[1]))
    torch.testing.assert_close(out[:1], rope(x[:1], pos[0]))


@pytest.mark.parametrize(
    "params",
    [
        {"rope_type": "default", "rope_theta": 10000.0},
        {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0},
        {
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
    ],
)
def test_frequencies_match_transformers(params):
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    cfg = transformers.LlamaConfig(
        hidden_size=256, num_attention_heads=2, rope_parameters=dict(params), max_position_embeddings=8192
    )
    ref = (
        LlamaRotaryEmbedding(cfg).inv_freq
        if params["rope_type"] == "default"
        else ROPE_INIT_FUNCTIONS[params["rope_type"]](cfg)[0]
    )
    ours = rope_frequencies(128, params["rope_theta"], None if params["rope_type"] == "default" else params)
    torch.testing.assert_close(ours, ref)


def test_rope_errors():
    with pytest.raises(ValueError, match="head_dim must be a positive even int"):
        RotaryEmbedding(7)
    with pytest.raises(ValueError, match="rope_scaling type 'yarn' is not supported; known: default, linear, llama3"):
        RotaryEmbedding(8, scaling={"rope_type": "yarn", "factor": 2.0})
    with pytest.raises(ValueError, match="lacks the key 'low_freq_factor'"):
        RotaryEmbedding(8, scaling={"rope_type": "llama3", "factor": 2.0})
    with pytest.raises(ValueError, match="positions must be an integer tensor"):
        RotaryEmbedding(8)(torch.randn(1, 1, 2, 8), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="3 positions for length 2"):
        RotaryEmbedding(8)(torch.randn(1, 1, 2, 8), torch.arange(3))


def test_cache_appends_and_grows():
    cache = KVCache(capacity=2)
    ks, vs = [], []
    for n in (3, 1, 1, 4, 1):
        k, v = torch.randn(2, 2, n, 4), torch.randn(2, 2, n, 6)
        ks.append(k)
        vs.append(v)
        K, V = cache.append(k, v)
    assert len(cache) == 10
    torch.testing.assert_close(K, torch.cat(ks, 2), rtol=0, atol=0)
    torch.testing.assert_close(V, torch.cat(vs, 2), rtol=0, atol=0)
    cache.reset()
    assert len(cache) == 0 and cache.keys is None


def test_cache_errors():
    cache = KVCache()
    cache.append(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4))
    with pytest.raises(ValueError, match=r"cache holds \(B, Hkv, D\) = \(1, 2, 4\)"):
        cache.append(torch.zeros(1, 3, 1, 4), torch.zeros(1, 3, 1, 4))
    with pytest.raises(ValueError, match="expected k .* and v .* with matching B, Hkv, L"):
        cache.append(torch.zeros(1, 2, 1, 4), torch.zeros(1, 2, 2, 4))
    with pytest.raises(ValueError, match="keep one dtype/device per cache"):
        cache.append(torch.zeros(1, 2, 1, 4, dtype=torch.float64), torch.zeros(1, 2, 1, 4, dtype=torch.float64))


def test_cos_sin_reuse_notices_in_place_changes():
    rope = RotaryEmbedding(8)
    x = torch.randn(1, 1, 3, 8)
    pos = torch.arange(3)
    rope(x, pos)
    pos += 5  # same tensor object, new values
    torch.testing.assert_close(rope(x, pos), RotaryEmbedding(8)(x, torch.arange(5, 8)))


def test_rope_under_inference_mode():
    rope = RotaryEmbedding(8)
    x = torch.randn(1, 2, 3, 8)
    want = rope(x, torch.arange(3))
    with torch.inference_mode():
        pos = torch.arange(3)
        torch.testing.assert_close(rope(x, pos), want)
        torch.testing.assert_close(rope(x, pos), want)  # reused cos/sin
