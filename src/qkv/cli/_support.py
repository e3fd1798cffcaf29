"""What every ``qkv`` command shares: the console, loading ``--model``, checking and writing outputs, and how
errors are worded (library messages mapped to flags, OSErrors on outputs named by their flag, text arguments
that are not valid Unicode refused). The command modules import this module, never :mod:`qkv.cli` itself.

Loading (:func:`load`) tells a damaged checkpoint from a bug: qkv's own loader errors and file problems
(OSError, safetensors and JSON errors) are bad input, any other exception is qkv's failure
(:class:`InternalError`, printed with its traceback and status 1).

Library messages speak Python (``pass truncate=True``, ``save_heatmap wants ...``); :func:`cli_words` turns
them into the command's flags with :data:`FLAG_WORDS`. Every OSError while writing an output becomes a
ValueError naming the flag, the path, the errno and the fix (:func:`writing`). Undecodable argv bytes
(kept by Python as lone surrogates, ``"caf\\udce9"``) are an error, not silently replaced
(:func:`check_text_args`).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, NamedTuple

__all__ = [
    "Command",
    "InternalError",
    "console",
    "load",
    "write_json",
    "check_outputs",
    "FLAG_WORDS",
    "cli_words",
    "show",
    "os_reason",
    "writing",
    "check_text_args",
]


class Command(NamedTuple):
    """One subcommand: a help line, a function adding its arguments, and a function running it."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, object], int]


class InternalError(Exception):
    """A failure inside qkv (not the user's input): reported with the exception that caused it."""


#: The library's words for an option -> the command's flag (library messages never mention flags).
FLAG_WORDS = (
    ("pass truncate=True", "pass --truncate"),
    ('pass model="DIR" with DIR a local checkpoint directory', "use --model DIR with DIR a local checkpoint directory"),
    ("save_heatmap wants", "--png wants"),
    ("save_figures wants", "--plots wants"),
    ("save the trace as JSON (Trace.to_dict) or a heatmap (qkv.view.png.save_heatmap)", "use --json or --png"),
    (
        "give both prefer and over (e.g. prefer='cat', over='mat')",
        "give both --prefer and --over (e.g. --prefer cat --over mat)",
    ),
    ("prefer and over name the same token", "--prefer and --over name the same token"),
    ("do not pass a head with measure='rollout'", "drop --head or use --measure weights/values"),
)
#: Library messages that start with an argument's name (``prefer: token 'cow' is not in the text``).
_LEADING = {"prefer: ": "--prefer: ", "over: ": "--over: "}
#: Arguments that reach the tokenizer (and so must be valid Unicode): attribute -> how the user wrote it.
_TEXT_ARGS = {
    "text": "TEXT",
    "text_a": "TEXT_A",
    "text_b": "TEXT_B",
    "query": "--query",
    "prefer": "--prefer",
    "over": "--over",
}
_OS_HINTS = {
    errno.ENOSPC: "the disk is full: free some space or write elsewhere",
    errno.EDQUOT: "the disk quota is exceeded: free some space or write elsewhere",
    errno.EACCES: "permission denied: pick a path you may write",
    errno.EPERM: "operation not permitted: pick a path you may write",
    errno.EROFS: "the file system is read-only: write elsewhere",
    errno.EIO: "input/output error (a failing disk or network mount): write elsewhere",
    errno.ENAMETOOLONG: "the file name is too long: pick a shorter one",
}


def cli_words(message: str) -> str:
    """A library message in the command's words: one line, Python options replaced by flags (:data:`FLAG_WORDS`)."""
    message = " ".join(message.split())
    for library, flag in FLAG_WORDS:
        message = message.replace(library, flag)
    for library, flag in _LEADING.items():
        if message.startswith(library):
            message = flag + message[len(library) :]
    return message


def show(path) -> str:
    """Text as printable text: undecodable bytes (kept as lone surrogates) shown as ``\\xe9``, never an encoding
    error."""
    text = os.fspath(path)
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # surrogates that are not escaped bytes
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def os_reason(e: OSError) -> str:
    """``"[ENOSPC] No space left on device: the disk is full: ..."`` for an OSError."""
    code = errno.errorcode.get(e.errno, "") if e.errno is not None else ""
    hint = _OS_HINTS.get(e.errno, "check the path and the disk, or write elsewhere")
    return f"{'[' + code + '] ' if code else ''}{e.strerror or e}: {hint}"


@contextmanager
def writing(flag: str, path):
    """Turn any OSError while writing ``path`` (disk full, EIO, permissions...) into a ValueError naming the flag.

    A partly written regular file is removed, so that no truncated output is left behind.
    """
    try:
        yield
    except OSError as e:
        removed = ""
        p = Path(path)
        try:
            if p.is_file() and flag != "plots":
                p.unlink()
                removed = " (the partial file was removed)"
        except OSError:
            pass
        raise ValueError(f"--{flag}: cannot write '{show(path)}': {os_reason(e)}{removed}") from None


def check_text_args(args) -> None:
    """Text that reaches the tokenizer must be Unicode: bytes that were not UTF-8 (kept by Python as lone
    surrogates, ``"caf\\udce9"``) are an error, not silently replaced."""
    for attr, name in _TEXT_ARGS.items():
        value = getattr(args, attr, None)
        if not isinstance(value, str):
            continue
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raw = (
                os.fsencode(value[e.start : e.end])
                if all(0xDC80 <= ord(c) <= 0xDCFF for c in value[e.start : e.end])
                else value[e.start : e.end].encode("utf-8", "backslashreplace")
            )
            raise ValueError(
                f"{name} contains bytes that are not valid UTF-8 ({raw!r} at character {e.start} of "
                f"'{show(value)}'); qkv reads text as UTF-8: type it in a UTF-8 terminal "
                "(e.g. LANG=C.UTF-8) or convert it first (iconv -f latin1 -t utf-8)"
            ) from None


# ------------------------------------------------------------------------------------------- console, model, outputs
def console(stderr: bool = False):
    """A rich console (120 columns when not a terminal, so that piped output keeps its tables)."""
    from rich.console import Console

    probe = Console(stderr=stderr)
    return probe if probe.is_terminal else Console(stderr=stderr, width=120)


def _file_errors() -> tuple[type[BaseException], ...]:
    """What a damaged or unreadable checkpoint raises (besides qkv's own ValueErrors)."""
    errors: list[type[BaseException]] = [OSError, json.JSONDecodeError, UnicodeDecodeError]
    try:
        from safetensors import SafetensorError

        errors.append(SafetensorError)
    except ImportError:  # pragma: no cover - safetensors is a dependency
        pass
    return tuple(errors)


def load(args):
    """The model of ``--model``.

    Raises:
        ValueError: qkv's loader refuses it or its files cannot be read (named by the flag; a damaged checkpoint).
        InternalError: anything else went wrong inside qkv while loading (with the exception as its cause).
    """
    from ..lens.loading import load_model

    try:
        return load_model(args.model)
    except _file_errors() as e:  # before ValueError: JSON and Unicode decoding errors are ValueErrors too
        raise ValueError(
            f"--model: cannot load '{show(args.model)}' ({type(e).__name__}: {e}); the checkpoint is "
            "damaged or of an unsupported kind: restore its files or pass another --model"
        ) from None
    except ValueError as e:
        raise ValueError(f"--model: {e}") from None
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as e:
        raise InternalError(
            f"loading --model '{show(args.model)}' failed inside qkv ({type(e).__name__}: {e}); this is a bug "
            "in qkv, not a damaged checkpoint: please report it with the traceback above"
        ) from e


def write_json(path: str, doc: dict, out) -> None:
    """Write ``doc`` as UTF-8 JSON to ``path`` (errors named by ``--json``) and say so on ``out``."""
    with writing("json", path):
        Path(path).write_text(json.dumps(doc, indent=1, ensure_ascii=False), encoding="utf-8")
    out.print(f"wrote {show(path)}", style="dim", markup=False, highlight=False)


def check_outputs(args, flags=("json", "html", "png")) -> None:
    """Fail before the model loads if an output file cannot be written where asked."""
    for flag in flags:
        path = getattr(args, flag, None)
        if path is None:
            continue
        p = Path(path)
        if p.is_dir():
            raise ValueError(f"--{flag} wants a file path, but {path!r} is a directory")
        if not p.resolve().parent.is_dir():
            raise ValueError(f"--{flag}: the directory of {path!r} does not exist; create it or pick another path")
        if flag == "png" and p.suffix.lower() != ".png":
            raise ValueError(f"--png wants a path ending in .png, got {path!r}")
