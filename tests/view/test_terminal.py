"""Terminal views: tables carry the trace's numbers; summaries say only what the numbers show."""

import pytest
from rich.console import Console

from qkv.lens.trace import HeadPreference, Trace
from qkv.view.terminal import (
    attention_summary,
    breakdown_table,
    compare_table,
    head_flips,
    heads_table,
    preference_summary,
    top_table,
)


def render(renderable) -> str:
    console = Console(width=160, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_preference_summary_reports_best_head_mean_and_count(tiny_trace):
    s = preference_summary(tiny_trace, "it", "cat", "mat")
    # head 0: cat .6 vs mat .3 (+.3); head 1: .1 vs .7 (-.6); mean .35 vs .5 -> on average mat.
    assert "(L0 H0) gives 0.600 vs 0.300" in s
    assert "averaged over all 2 heads 0.350 vs 0.500, so on average 'it' prefers 'mat'" in s
    assert "1 of 2 heads prefer 'cat'" in s


def test_preference_summary_admits_when_no_head_prefers(tiny_trace):
    s = preference_summary(tiny_trace, "it", "cat", "it")
    assert s.startswith("'it' -> 'cat' vs 'it' (weights):")
    s = preference_summary(tiny_trace, "mat", "mat", "cat")  # row 1: .5 vs .5 in both heads
    assert "no head gives 'mat' more weights than 'cat'" in s and "a tie" in s and "0 of 2 heads" in s


def test_attention_summary_names_the_top_content_token(tiny_trace):
    s = attention_summary(tiny_trace, "it")
    assert "gives the most weight to 'mat' (token 1: 0.500)" in s  # mean over heads of row 2: cat .35, mat .5


def test_breakdown_table_shows_the_chain(cat_trace):
    text = render(breakdown_table(cat_trace, "it", 5, 11))
    rows = cat_trace.breakdown("it", 5, 11)
    cat = rows[2]
    assert "Step by step: 'it' in layer 5 head 11" in text
    line = next(row for row in text.splitlines() if " cat " in row)
    for number in (f"{cat.score:.2f}", f"{cat.scaled:.2f}", f"{cat.weight:.3f}", f"{cat.value_share:.3f}"):
        assert number in line


def test_top_table_lists_every_layer(cat_trace):
    text = render(top_table(cat_trace, "it", k=3, prefer="cat", over="mat"))
    best = cat_trace.heads("it", "cat", "mat")
    for n in range(6):
        h = max((p for p in best if p.layer == n), key=lambda p: p.diff).head
        assert any(r.split("│")[1].strip() == str(n) and f"H{h} " in r for r in text.splitlines() if "│" in r)
    assert "rollout" in render(top_table(cat_trace, "it", measure="rollout"))


def test_user_text_is_never_rich_markup():
    import torch

    t = Trace.from_tensors("x", ["[bold red]boom[/]", "b"], weights=torch.full((1, 1, 2, 2), 0.5))
    assert "[bold red]boom[/]" in render(breakdown_table(t, 1, 0, 0))


def test_heads_and_compare_tables():
    a = [HeadPreference(0, 0, 0.6, 0.1, 0.5), HeadPreference(0, 1, 0.2, 0.3, -0.1)]
    b = [HeadPreference(0, 0, 0.1, 0.5, -0.4), HeadPreference(0, 1, 0.1, 0.3, -0.2)]
    flips = head_flips(a, b)
    assert [(f.layer, f.head, f.flipped) for f in flips] == [(0, 0, True), (0, 1, False)]
    assert flips[0].change == pytest.approx(-0.9)
    text = render(compare_table(flips, "cat", "mat"))
    assert "flips: cat -> mat" in text and "keeps mat" in text
    import torch

    t = Trace.from_tensors("x", ["a", "b"], weights=torch.full((1, 2, 2, 2), 0.5))
    text = render(heads_table(t, a, "cat", "mat"))
    assert "+0.500" in text and "-0.100" in text


def test_head_caveat_only_when_every_token_attends_alike():
    import torch

    from qkv.view.terminal import head_caveat

    w = torch.tensor([[[[0.1, 0.9, 0.0], [0.0, 1.0, 0.0], [0.8, 0.1, 0.1]]]])  # (1, 1, 3, 3): only 'it' -> cat
    t = Trace.from_tensors("cat mat it", ["cat", "mat", "it"], weights=w)
    assert head_caveat(t, "it", "cat", 0, 0) is None  # column mean 0.3 < half of 0.8
    s = head_caveat(t, "it", "mat", 0, 0)  # column mean 0.667 vs 0.1 from 'it'
    assert s.startswith("Note: L0 H0 gives 'mat' 0.667 on average from all 3 tokens (vs 0.100 from 'it')")
