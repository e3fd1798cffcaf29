"""Every documented import path works in a fresh interpreter, and names mean one thing:
``qkv.attention``/``qkv.steps``/``qkv.merge`` are functions, ``qkv.masks``/``qkv.mods`` are modules."""

import importlib
import inspect
import pkgutil
import subprocess
import sys
import types

import pytest

import qkv

DOCUMENTED = [
    "import qkv; assert callable(qkv.attention) and inspect.isfunction(qkv.attention)",
    "import qkv.masks; assert isinstance(qkv.masks, types.ModuleType) and qkv.masks.causal",
    "import qkv.mods; assert isinstance(qkv.mods, types.ModuleType) and qkv.mods.alibi",
    "from qkv import attention, steps, merge, masks, mods, Steps, implementations; "
    "assert all(inspect.isfunction(f) for f in (attention, steps, merge))",
    "from qkv.masks import causal, sliding_window, global_window, padding, document, prefix_lm, from_function, Mask",
    "from qkv.mods import alibi, alibi_slopes, softcap, bias, compose, ScoreMod",
    "import qkv.core; from qkv.core import attention, steps, merge, compute_scores, scale_scores, modify_scores, "
    "apply_mask, softmax_weights, weigh_values; assert inspect.isfunction(merge)",
    "import qkv.core.merging as m; assert inspect.isfunction(m.merge)",
    "import qkv.core.engines.tiled as t; assert t.tiled_forward",
    "import qkv.core.engines.tiled.plan, qkv.core.engines.tiled.kernels, qkv.core.engines.tiled.fused_op",
    "import qkv.core.engines.reference as r; assert r.compute_scores",
    "import qkv.core.engines.sdpa",
    "from qkv.core.registry import Supports, Implementation, select",
    "import qkv.nn; from qkv.nn import MultiHeadAttention, KVCache, RotaryEmbedding",
    "import qkv.models; from qkv.models import load",
    "import qkv, qkv.lens.trace as m; assert inspect.isfunction(m.trace); assert inspect.isfunction(qkv.trace)",
    "from qkv.lens.heads import choose_head",
    "import qkv.claims; from qkv.claims import evaluate",
    "import qkv.view; from qkv.view.html import write_html",
    "import qkv.distributed; from qkv.distributed import ring_attention",
    "import qkv.cli; assert qkv.cli.main",
    "from qkv.cli import main, COMMANDS, DEFAULT_TEXT, FLAG_WORDS, cli_words; import qkv.cli.explain, qkv.cli._support",
    "from qkv.lens import ESSAY_SENTENCE; from qkv.lens.summary import preference_summary, explanation, HeadFlip",
    "from qkv.view.terminal import preference_summary, attention_summary, head_caveat, head_flips, HeadFlip; "
    "import qkv.lens.summary as s; assert preference_summary is s.preference_summary and HeadFlip is s.HeadFlip",
    "from qkv.serve.schemas import DEFAULT_TEXT; from qkv.lens import ESSAY_SENTENCE; assert DEFAULT_TEXT == "
    "ESSAY_SENTENCE",
    "import sys, qkv.cli; assert 'qkv.lens' not in sys.modules and 'torch' in sys.modules",
    "import qkv; assert 'trace' in dir(qkv)",
]


@pytest.mark.parametrize("stmt", DOCUMENTED)
def test_documented_import_path_works_in_a_fresh_interpreter(stmt):
    code = "import inspect, types\n" + stmt
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


def _all_modules():
    return [m.name for m in pkgutil.walk_packages(qkv.__path__, "qkv.")]


def test_names_mean_one_thing_after_every_module_is_imported_and_reloaded():
    for name in _all_modules():
        importlib.import_module(name)
    importlib.reload(importlib.import_module("qkv.core"))
    for fn in ("attention", "steps", "merge"):
        assert inspect.isfunction(getattr(qkv, fn)), fn
    for mod in ("masks", "mods"):
        assert isinstance(getattr(qkv, mod), types.ModuleType)
    assert not any(n == "qkv.attention" or n.startswith("qkv.attention.") for n in _all_modules())


def test_import_qkv_needs_none_of_the_optional_or_upper_layers():
    code = (
        "import sys, qkv\n"
        "bad = [m for m in ('transformers', 'fastapi', 'uvicorn', 'matplotlib', 'qkv.lens', 'qkv.models', "
        "'qkv.view', 'qkv.cli', 'qkv.distributed') if m in sys.modules]\n"
        "assert not bad, bad"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
