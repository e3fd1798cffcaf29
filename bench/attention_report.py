"""Writes the attention benchmark's results: ``attention.json`` (everything) and ``attention.md``
(a summary table for the README and one table per contender)."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["write_report", "summary_rows"]

PEERS = ["torch sdpa", "torch sdpa math", "naive", "flex compiled"]
QKV = ["qkv auto", "qkv tiled", "qkv sdpa", "qkv reference"]


def _key(r: dict) -> tuple:
    return (r["case"], r["n"], r["mode"])


def _merge(old: list[dict], new: list[dict]) -> list[dict]:
    """Keep earlier results for cases this run did not measure (subset runs update the table)."""
    seen = {_key(r) for r in new}
    return [r for r in old if _key(r) not in seen] + new


def summary_rows(results: list[dict]) -> list[dict]:
    """Per case: qkv auto's figures and its speed-up over the fastest peer that ran."""
    rows = []
    for r in results:
        if "error" in r:
            rows.append({"case": r["case"], "n": r["n"], "mode": r["mode"], "error": r["error"]})
            continue
        c = r["contenders"]
        auto = c.get("qkv auto", {})
        peers = {p: c[p]["ms"] for p in PEERS if "ms" in c.get(p, {})}
        best = min(peers, key=peers.get) if peers else None
        dense = c.get("torch sdpa", {}).get("ms") if r["case"] in ("window", "document", "causal_alibi") else None
        rows.append(
            {
                "case": r["case"],
                "n": r["n"],
                "mode": r["mode"],
                "auto_impl": r.get("auto_impl"),
                "ms": auto.get("ms"),
                "gflops": auto.get("gflops"),
                "gemm_fraction": auto.get("gemm_fraction"),
                "peak_rss_mb": auto.get("peak_rss_mb"),
                "best_peer": best,
                "best_peer_ms": peers.get(best),
                "speedup_vs_best_peer": (peers[best] / auto["ms"]) if best and auto.get("ms") else None,
                "speedup_vs_dense_sdpa": (dense / auto["ms"]) if dense and auto.get("ms") else None,
                "gemm_gflops": r["gemm_gflops"],
                "dense_fraction": auto.get("dense_fraction"),
                "tiled_dense_fraction": c.get("qkv tiled", {}).get("dense_fraction"),
                "load_avg": r.get("load_avg"),
            }
        )
    return rows


def _f(x, fmt="{:.1f}", none="–"):
    return none if x is None else fmt.format(x)


def _markdown(results: list[dict], info: dict) -> str:
    order = {c: i for i, c in enumerate(["full", "causal", "window", "document", "causal_alibi"])}
    results = sorted(results, key=lambda r: (r["mode"], order.get(r["case"], 9), r["n"]))
    lines = [
        "# Attention benchmark (CPU)",
        "",
        f"B=1, H=8, D=64, fp32; torch {info['torch']}, {info['threads']} threads, {info['cpu_capability']}; "
        f"load average {info['load_avg_start'][0]:.1f} at start, {info.get('load_avg_end', [float('nan')])[0]:.1f} "
        "at the end of the last run (a shared machine: compare figures within a row, not across rows; rows of "
        "one table may come from several runs -- each row is one process).",
        "Each case runs in its own process; contenders are timed in interleaved rounds, in a new seeded order "
        "each round (median); GFLOP/s count "
        "4·B·H·D per attended pair forward (×3.5 with the backward); *% GEMM* is that over a 2048³ fp32 matmul "
        "timed in the same rounds. *vs best peer* = fastest of torch SDPA / SDPA math / naive / FlexAttention "
        "(compiled) divided by qkv auto (>1: qkv faster). *vs dense SDPA* = torch SDPA given the equivalent dense "
        "mask. *per pair vs dense SDPA* (block-sparse cases) = qkv auto's GFLOP/s per attended pair over the GFLOP/s "
        "of SDPA without a mask (N ≤ 4,096) timed in the same rounds: 1.0× = each kept pair costs what a dense pair "
        "costs in the fused kernel. *load* = 1-minute load average at the end of the case. "
        "Regenerate: `python -m bench` (subset: `--quick`, `--n`, `--case`, `--mode`).",
        "",
        "| case | N | pass | qkv auto → | ms | GFLOP/s | % GEMM | per pair vs dense SDPA | peak RSS MB | best peer "
        "| peer ms | vs best peer | vs dense SDPA | load |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for s in summary_rows(results):
        if "error" in s:
            lines.append(f"| {s['case']} | {s['n']} | {s['mode']} | error: {s['error']} |||||||||||")
            continue
        lines.append(
            f"| {s['case']} | {s['n']} | {s['mode']} | {s['auto_impl']} | {_f(s['ms'])} | {_f(s['gflops'], '{:.0f}')} "
            f"| {_f(s['gemm_fraction'] and 100 * s['gemm_fraction'], '{:.0f}%')} "
            f"| {_f(s['dense_fraction'], '{:.2f}×')} | {_f(s['peak_rss_mb'], '{:.0f}')} "
            f"| {s['best_peer'] or '–'} | {_f(s['best_peer_ms'])} | {_f(s['speedup_vs_best_peer'], '{:.2f}×')} "
            f"| {_f(s['speedup_vs_dense_sdpa'], '{:.1f}×')} | {_f(s['load_avg'])} |"
        )
    lines += ["", "## Every contender (median ms; GFLOP/s; peak RSS MB; max |out − qkv tiled|)", ""]
    names = QKV + PEERS
    lines.append("| case | N | pass | " + " | ".join(names) + " |")
    lines.append("|---|---:|---|" + "---|" * len(names))
    notes: dict[str, str] = {}
    for r in results:
        if "error" in r:
            continue
        cells = []
        for nm in names:
            c = r["contenders"].get(nm)
            if c is None:
                cells.append("")
            elif "skipped" in c:
                tag = notes.setdefault(c["skipped"], f"s{len(notes) + 1}")
                cells.append(f"skip ({tag})")
            else:
                diff = c.get("max_abs_diff")
                extra = f", compile {c['compile_s']:.0f} s" if "compile_s" in c else ""
                cells.append(
                    f"{c['ms']:.1f} ms, {c['gflops']:.0f} GF/s, {c['peak_rss_mb']:.0f} MB"
                    + (f", Δ {diff:.0e}" if diff is not None else "")
                    + extra
                )
        lines.append(f"| {r['case']} | {r['n']} | {r['mode']} | " + " | ".join(cells) + " |")
    if notes:
        lines += ["", "Skipped:"] + [f"- **{tag}**: {reason}" for reason, tag in notes.items()]
    return "\n".join(lines) + "\n"


def _small_markdown(small: list[dict]) -> str:
    lines = [
        "",
        "## Small problems: reference vs tiled (padding mask, fwd; sets tiled's priority)",
        "",
        "| B | H | L | D | B·H·L² | reference ms | tiled ms |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in small:
        lines.append(
            f"| {s['B']} | {s['H']} | {s['L']} | {s['D']} | {s['scores']} | {s['reference_ms']:.2f} "
            f"| {s['tiled_ms']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def write_report(
    results: list[dict], info: dict, out: Path, merge: bool = False, small: list[dict] | None = None
) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "attention.json", out / "attention.md"
    old = json.loads(json_path.read_text()) if merge and json_path.exists() else {}
    if old:
        results = _merge(old.get("results", []), results)
        if small is not None:  # a --small run: the matrix's machine line stays
            info = old.get("machine", info)
    small = small if small is not None else old.get("small")
    data = {"machine": info, "results": results}
    if small:
        data["small"] = small
    json_path.write_text(json.dumps(data, indent=1))
    md_path.write_text(_markdown(results, info) + (_small_markdown(small) if small else ""))
    return json_path, md_path
