"""Greedy decoding with the KV cache: qkv's Llama vs transformers' ``LlamaForCausalLM`` (sdpa), same weights.

A random Llama-like model (default 12 layers, hidden 768, 12 query / 4 key-value heads, intermediate 2048,
vocabulary 32,000) is built by transformers, saved, and loaded by qkv. For each prompt length:

* ``generate`` -- end to end (prefill + ``--new`` greedy tokens): ``model.generate`` of each library,
  tokens/s = new tokens / wall time;
* ``decode`` -- only the steps after the prefill (one token at a time over the cache), each library's
  own forward and cache, greedy; tokens/s = steps / wall time.

Contenders are interleaved round by round (background load hits both alike); medians; the 1-minute load
average is printed beside every row. Both must produce the same tokens (checked).

Run: ``python -m bench.decode [--prompts 256 4096] [--new 32] [--rounds 3]``; writes
``bench/results/decode.md``. transformers is imported here only (qkv never imports it).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

try:
    from bench.report import save
except ImportError:  # run as a script (python bench/NAME.py): bench/ itself is on sys.path
    from report import save

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

__all__ = ["run", "main"]

RESULTS = Path(__file__).resolve().parent / "results" / "decode.md"


def _models(layers: int, hidden: int, heads: int, kv_heads: int, inter: int, vocab: int, max_pos: int, tmp: str):
    import transformers

    import qkv.models

    cfg = transformers.LlamaConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        intermediate_size=inter,
        vocab_size=vocab,
        max_position_embeddings=max_pos,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM._from_config(cfg, attn_implementation="sdpa").eval()
    hf.save_pretrained(tmp)
    return qkv.models.load(tmp), hf


def _hf_generate(hf, ids, new):
    return hf.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=new,
        min_new_tokens=new,
        do_sample=False,
        pad_token_id=0,
        eos_token_id=None,
    )


def _qkv_decode(model, ids, new):
    """Prefill, then time ``new`` greedy steps over the cache: ``(seconds, tokens)``."""
    cache = model.new_cache()
    L = ids.shape[1]
    logits = model(ids, cache=cache).logits[:, -1]
    nxt = logits.argmax(-1, keepdim=True)
    out = [nxt]
    t = time.perf_counter()
    for i in range(new):
        nxt = model(nxt, positions=torch.tensor([L + i]), cache=cache).logits[:, -1].argmax(-1, keepdim=True)
        out.append(nxt)
    return time.perf_counter() - t, torch.cat(out, 1)


def _hf_decode(hf, ids, new):
    from transformers import DynamicCache

    cache = DynamicCache()
    res = hf(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
    nxt = res.logits[:, -1].argmax(-1, keepdim=True)
    out = [nxt]
    t = time.perf_counter()
    for _ in range(new):
        res = hf(input_ids=nxt, past_key_values=res.past_key_values, use_cache=True)
        nxt = res.logits[:, -1].argmax(-1, keepdim=True)
        out.append(nxt)
    return time.perf_counter() - t, torch.cat(out, 1)


def run(
    prompts=(256, 4096),
    new: int = 32,
    rounds: int = 3,
    layers: int = 12,
    hidden: int = 768,
    heads: int = 12,
    kv_heads: int = 4,
    inter: int = 2048,
    vocab: int = 32000,
) -> str:
    import transformers

    lines = [
        f"# Greedy decoding with the KV cache: qkv vs transformers (Llama-like, {layers} layers, hidden {hidden}, "
        f"GQA {heads}/{kv_heads}, fp32, batch 1)",
        "",
        f"- machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), transformers {transformers.__version__} "
        "(attn_implementation='sdpa')",
        f"- {new} new tokens; median of {rounds} interleaved rounds; tokens/s = new tokens / wall time; "
        "*speed-up* = qkv tokens/s over transformers' (> 1: qkv faster); load = 1-minute load average",
        "- command: `python -m bench.decode "
        + " ".join(["--prompts", *map(str, prompts), "--new", str(new), "--rounds", str(rounds)])
        + "`",
        "",
        "| prompt | what | qkv tok/s | transformers tok/s | speed-up | same tokens | load |",
        "|---:|---|---:|---:|---:|---|---:|",
    ]
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        ours, hf = _models(layers, hidden, heads, kv_heads, inter, vocab, max(prompts) + new + 8, tmp)
        g = torch.Generator().manual_seed(1)
        for P in prompts:
            ids = torch.randint(1, vocab, (1, P), generator=g)
            contenders = {
                "generate": {
                    "qkv": lambda: (None, ours.generate(ids, new)[:, P:]),
                    "hf": lambda: (None, _hf_generate(hf, ids, new)[:, P:]),
                },
                "decode": {"qkv": lambda: _qkv_decode(ours, ids, new), "hf": lambda: _hf_decode(hf, ids, new)},
            }
            for what, fns in contenders.items():
                times = {k: [] for k in fns}
                toks = {}
                for r in range(rounds + 1):  # round 0 warms up
                    for k, fn in fns.items():
                        t = time.perf_counter()
                        dt, tk = fn()
                        dt = time.perf_counter() - t if dt is None else dt
                        toks[k] = tk
                        if r:
                            times[k].append(dt)
                n_tok = new if what == "generate" else new
                tps = {k: n_tok / statistics.median(v) for k, v in times.items()}
                same = bool(torch.equal(toks["qkv"][:, :new], toks["hf"][:, :new]))
                lines.append(
                    f"| {P} | {what} | {tps['qkv']:.1f} | {tps['hf']:.1f} | {tps['qkv'] / tps['hf']:.2f}× "
                    f"| {'yes' if same else 'no'} | {os.getloadavg()[0]:.1f} |"
                )
                print(lines[-1], flush=True)
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, nargs="+", default=[256, 4096])
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    report = run(tuple(args.prompts), args.new, args.rounds, layers=args.layers)
    save(report, args.out)


if __name__ == "__main__":
    main()
