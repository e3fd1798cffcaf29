"""Implementations declare what they support; refusal reasons and `auto`'s choice come from the declarations."""

import pytest
import torch

from qkv import attention, masks, mods
from qkv.core import registry
from qkv.core.engines.reference import reference_forward
from qkv.core.inputs import check_inputs
from qkv.core.registry import Implementation, Supports, not_supported_reasons


@pytest.fixture
def fake():
    impl = Implementation(
        "fake",
        reference_forward,
        Supports(
            devices=frozenset({"cuda"}), score_mods=False, lse=False, gqa=False, dtypes=frozenset({torch.float16})
        ),
        cost={"cpu": lambda inp: 1.0},
        description="declares little",
    )
    registry.register(impl)
    yield impl
    registry._REGISTRY.pop("fake")


def test_every_reason_comes_from_a_declaration(fake):
    q, k = torch.randn(1, 4, 5, 8), torch.randn(1, 2, 5, 8)
    why = fake.not_supported_reasons(check_inputs(q, k, k, score_mod=mods.softcap(5.0), return_lse=True))
    assert len(why) == 5
    for word in ("device 'cpu'", "dtype torch.float32", "no score mods", "log-sum-exp", "no GQA"):
        assert any(word in w for w in why), (word, why)
    with pytest.raises(ValueError, match="impl='fake' cannot run these inputs: device 'cpu'"):
        attention(q, k, k, impl="fake")


def test_auto_never_picks_an_implementation_with_reasons_even_at_the_lowest_cost(fake):
    q = torch.randn(1, 2, 300, 8)
    inp = check_inputs(q, q, q, mask=masks.causal())
    assert fake.rank(inp) < registry.get("sdpa").rank(inp)
    assert registry.select("auto", inp).name != "fake"


def test_a_device_without_its_own_costs_uses_the_cpu_costs():
    impl = Implementation("x", reference_forward, Supports(), cost={"cpu": lambda inp: 7.0})
    inp = check_inputs(*(torch.randn(1, 1, 2, 4) for _ in range(3)))
    assert impl.rank(inp) == 7.0
    assert Implementation("y", reference_forward, Supports(), cost={"cuda": lambda inp: 1.0}).rank(inp) == float("inf")


def test_priority_is_a_deprecated_alias_of_cost():
    inp = check_inputs(*(torch.randn(1, 1, 2, 4) for _ in range(3)))
    with pytest.warns(DeprecationWarning, match="pass cost="):
        impl = Implementation("x", reference_forward, Supports(), priority={"cpu": lambda inp: 3.0})
    assert impl.rank(inp) == 3.0 and set(impl.cost) == {"cpu"}


def test_declared_mask_predicate_and_empty_problems():
    q, k = torch.randn(1, 1, 3, 4), torch.randn(1, 1, 0, 4)
    sdpa = registry.get("sdpa").supports
    assert any("empty problem" in r for r in not_supported_reasons(sdpa, check_inputs(q, k, k)))
    q = torch.randn(1, 1, 5, 4)
    why = not_supported_reasons(sdpa, check_inputs(q, q, q, mask=masks.sliding_window(2)))
    assert why and "neither SDPA's is_causal nor key padding" in why[0]
