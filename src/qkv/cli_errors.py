"""How ``qkv`` (:mod:`qkv.cli`) words its errors: library messages mapped to flags, OSErrors on outputs named
by their flag, text arguments that are not valid Unicode refused.

Library messages speak Python (``pass truncate=True``, ``save_heatmap wants ...``); :func:`cli_words` turns
them into the command's flags with :data:`FLAG_WORDS`. Every OSError while writing an output becomes a
ValueError naming the flag, the path, the errno and the fix (:func:`writing`). Undecodable argv bytes
(kept by Python as lone surrogates, ``"caf\\udce9"``) are an error, not silently replaced
(:func:`check_text_args`).
"""

from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from pathlib import Path

__all__ = ["FLAG_WORDS", "cli_words", "show", "os_reason", "writing", "check_text_args"]

#: The library's words for an option -> the command's flag (library messages never mention flags).
FLAG_WORDS = (
    ("pass truncate=True", "pass --truncate"),
    ('pass model="DIR" with DIR a local checkpoint directory', "use --model DIR with DIR a local checkpoint directory"),
    ("save_heatmap wants", "--png wants"),
    ("save_figures wants", "--plots wants"),
    ("save the trace as JSON (Trace.to_dict) or a heatmap (qkv.view.png.save_heatmap)", "use --json or --png"),
)
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
    hint = _OS_HINTS.get(e.errno or 0, "check the path and the disk, or write elsewhere")  # errno None: no hint
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
