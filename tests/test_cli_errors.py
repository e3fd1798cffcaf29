"""The ``qkv`` command fails cleanly: one line ``qkv <command>: error: ...`` and status 2, never a traceback --
for outputs that cannot be written (disk full, EIO), damaged ``--model`` directories, argv bytes that are not
UTF-8; library messages name no flags, the command maps them to its own (issue 11)."""

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import qkv.cli
from qkv.cli import FLAG_WORDS, cli_words, main

CAFE = "caf\udce9"  # what Python makes of the argv bytes b"caf\xe9" (latin-1) under a UTF-8 locale


def error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith(f"qkv {command}: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err[len(f"qkv {command}: error: ") :].strip()


def test_docstring_documents_the_prefix_the_code_prints(capsys):
    assert "``qkv <command>: error: ...``" in qkv.cli.__doc__
    assert "qkv: error:" not in qkv.cli.__doc__
    readme = Path(__file__).resolve().parents[1] / "README.md"
    if readme.is_file():
        assert "`qkv <command>: error: ...`" in readme.read_text(encoding="utf-8")
    assert main(["explain", "--top", "0"]) == 2
    assert error_line(capsys, "explain") == "--top must be at least 1, got 0"


# ---------------------------------------------------------------------------------------------- outputs
@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="/dev/full (ENOSPC on write) is Linux only")
@pytest.mark.parametrize("flag", ["--json", "--html"])
def test_disk_full_on_an_output(capsys, flag):
    path = "/dev/full"  # every write fails with ENOSPC
    assert main(["explain", flag, path]) == 2
    msg = error_line(capsys, "explain")
    assert msg == (
        f"{flag}: cannot write '/dev/full': [ENOSPC] No space left on device: the disk is full: "
        "free some space or write elsewhere"
    )


@pytest.mark.parametrize(
    "code, hint",
    [
        (errno.ENOSPC, "the disk is full"),
        (errno.EIO, "input/output error"),
        (errno.EACCES, "permission denied"),
        (errno.EROFS, "read-only"),
        (errno.ENAMETOOLONG, "too long"),
        (errno.ESTALE, "check the path"),
    ],
)
@pytest.mark.parametrize(
    "flag, target",
    [
        ("--json", "pathlib.Path.write_text"),
        ("--html", "qkv.view.html.write_html"),
        ("--png", "qkv.view.png.save_heatmap"),
    ],
)
def test_os_errors_while_writing(tmp_path, monkeypatch, capsys, code, hint, flag, target):
    out = tmp_path / ("out.png" if flag == "--png" else "out")

    def fail(*args, **kwargs):
        out.write_bytes(b"partial")  # what a write interrupted by the error leaves behind
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(target, fail)
    assert main(["explain", flag, str(out)]) == 2
    msg = error_line(capsys, "explain")
    assert msg.startswith(f"{flag}: cannot write '{out}': [{errno.errorcode[code]}] {os.strerror(code)}: "), msg
    assert hint in msg and msg.endswith("(the partial file was removed)")
    assert not out.exists()


def test_claims_json_on_a_full_disk(monkeypatch, capsys):
    import qkv.claims

    monkeypatch.setattr(qkv.claims, "evaluate", lambda model, **kw: type("R", (), {"to_json": lambda s: "{}"})())
    monkeypatch.setattr("qkv.view.claims_view.report_renderable", lambda report: "report")
    monkeypatch.setattr("pathlib.Path.write_text", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.EIO, "EIO")))
    assert main(["claims", "--json", "c.json"]) == 2
    assert error_line(capsys, "claims").startswith("--json: cannot write 'c.json': [EIO] EIO: input/output error")


def test_claims_plots_on_a_full_disk(tmp_path, monkeypatch, capsys):
    import qkv.claims

    def save_figures(report, plots):
        raise OSError(errno.ENOSPC, "No space left on device", str(Path(plots) / "claim1_variance.png"))

    monkeypatch.setattr(qkv.claims, "evaluate", lambda model, **kw: type("R", (), {"to_json": lambda s: "{}"})())
    monkeypatch.setattr("qkv.view.claims_view.save_figures", save_figures)
    monkeypatch.setattr("qkv.view.claims_view.report_renderable", lambda report: "report")
    assert main(["claims", "--plots", str(tmp_path / "figs")]) == 2
    msg = error_line(capsys, "claims")
    assert msg.startswith(f"--plots: cannot write '{tmp_path / 'figs'}': [ENOSPC]") and "the disk is full" in msg


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="/dev/full is Linux only")
def test_stdout_on_a_full_disk(tmp_path):
    """The real entry point, stdout redirected to /dev/full: one error line on stderr, status 2."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with open("/dev/full", "w") as full:
        r = subprocess.run(
            [sys.executable, "-m", "qkv.cli", "explain", "--top", "1"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
            cwd=tmp_path,
            env=env,
        )
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("qkv explain: error: cannot write the output (stdout): [ENOSPC]"), r.stderr
    assert "Traceback" not in r.stderr


# ---------------------------------------------------------------------------------------------- --model
@pytest.fixture
def damaged(minilm_dir, tmp_path):
    dst = tmp_path / "minilm-copy"
    shutil.copytree(minilm_dir, dst)
    return dst


@pytest.fixture(scope="module")
def minilm_dir():
    import qkv.models

    return qkv.models.resolve("minilm")


@pytest.mark.parametrize(
    "damage, says",
    [
        (lambda d: (d / "config.json").write_text("[1, 2]"), "config.json: expected a JSON object"),
        (lambda d: (d / "config.json").write_text("{"), "config.json is not valid JSON"),
        (lambda d: (d / "config.json").unlink(), "config.json is missing"),
        (lambda d: (d / "model.safetensors").write_bytes(b"\x00" * 10), "is not a readable safetensors file"),
        (lambda d: (d / "model.safetensors").unlink(), "no weights in"),
        (lambda d: (d / "tokenizer.json").write_text('"x"'), "cannot read tokenizer"),
        (lambda d: (d / "modules.json").write_text("{"), "modules.json is not valid JSON"),
        (lambda d: (d / "1_Pooling" / "config.json").write_text("[]"), "expected an object such as"),
        (
            lambda d: json.dump(
                {**json.load(open(d / "config.json")), "num_attention_heads": 0}, open(d / "config.json", "w")
            ),
            "'num_attention_heads' must be an integer >= 1",
        ),
        (
            lambda d: json.dump(
                {**json.load(open(d / "config.json")), "hidden_size": "384"}, open(d / "config.json", "w")
            ),
            "'hidden_size' must be an integer >= 1, got the string",
        ),
    ],
)
def test_damaged_model_directory(damaged, capsys, damage, says):
    damage(damaged)
    assert main(["explain", "--model", str(damaged)]) == 2
    msg = error_line(capsys, "explain")
    assert msg.startswith("--model: ") and says in msg, msg


def test_a_failure_inside_qkv_while_loading_is_qkvs_not_a_damaged_checkpoint(damaged, monkeypatch, capsys):
    """A bug in qkv's loader (here a RuntimeError) is reported as qkv's failure, with its traceback and status 1."""

    def boom(name, **kw):
        raise RuntimeError("Error(s) in loading state_dict: size mismatch")

    monkeypatch.setattr("qkv.models.load", boom)
    assert main(["heads", "a cat", "--query", "a", "--prefer", "cat", "--over", "a", "--model", str(damaged)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: Error(s) in loading state_dict" in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"qkv heads: internal error: loading --model '{damaged}' failed inside qkv (RuntimeError")
    assert "this is a bug in qkv, not a damaged checkpoint" in last and "damaged or of an unsupported kind" not in err


@pytest.mark.parametrize(
    "error",
    [OSError(5, "Input/output error"), json.JSONDecodeError("Expecting value", "{", 1)],
    ids=["OSError", "JSONDecodeError"],
)
def test_file_problems_while_loading_are_a_damaged_checkpoint(damaged, monkeypatch, capsys, error):
    def unreadable(name, **kw):
        raise error

    monkeypatch.setattr("qkv.models.load", unreadable)
    assert main(["explain", "--model", str(damaged)]) == 2
    msg = error_line(capsys, "explain")
    assert msg.startswith(f"--model: cannot load '{damaged}' ({type(error).__name__}: ")
    assert msg.endswith(
        "the checkpoint is damaged or of an unsupported kind: restore its files or pass another --model"
    )


def test_a_safetensors_error_is_a_damaged_checkpoint(damaged, monkeypatch, capsys):
    from safetensors import SafetensorError

    def unreadable(name, **kw):
        raise SafetensorError("Error while deserializing header: HeaderTooLarge")

    monkeypatch.setattr("qkv.models.load", unreadable)
    assert main(["explain", "--model", str(damaged)]) == 2
    msg = error_line(capsys, "explain")
    assert msg.startswith(f"--model: cannot load '{damaged}' (SafetensorError: Error while deserializing header")
    assert msg.endswith("restore its files or pass another --model")


def test_damaged_model_for_claims(damaged, capsys):
    (damaged / "config.json").write_text("null")
    assert main(["claims", "--model", str(damaged)]) == 2
    assert "config.json: expected a JSON object" in error_line(capsys, "claims")


# ---------------------------------------------------------------------------------------------- argv bytes
@pytest.mark.parametrize(
    "args, name",
    [
        (["explain", CAFE], "TEXT"),
        (["explain", "--query", CAFE], "--query"),
        (["explain", "--prefer", CAFE, "--over", "mat"], "--prefer"),
        (["heads", "a cat", "--query", "a", "--prefer", "cat", "--over", CAFE], "--over"),
        (["compare", "a cat", CAFE, "--prefer", "cat", "--over", "a"], "TEXT_B"),
    ],
)
def test_undecodable_argv_bytes_are_an_error_not_replaced(args, name, capsys):
    assert main(args) == 2
    msg = error_line(capsys, args[0])
    assert msg.startswith(f"{name} contains bytes that are not valid UTF-8 (b'\\xe9' at character 3 of 'caf\\xe9')")
    assert "LANG=C.UTF-8" in msg and "iconv" in msg


def test_undecodable_argv_bytes_through_the_real_entry_point(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "LC_ALL": "C.UTF-8"}
    r = subprocess.run(
        [sys.executable, "-m", "qkv.cli", "explain", b"caf\xe9 au lait"],
        capture_output=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    assert r.returncode == 2
    assert r.stderr.startswith(b"qkv explain: error: TEXT contains bytes that are not valid UTF-8 (b'\\xe9'")
    assert b"Traceback" not in r.stderr


def test_undecodable_output_path_is_written_and_shown(tmp_path, capsys):
    """A file name with non-UTF-8 bytes is a legal path: written, and echoed with the byte escaped."""
    out = tmp_path / "caf\udce9.json"
    assert main(["explain", "--top", "1", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["command"] == "explain"
    assert f"wrote {tmp_path}/caf\\xe9.json" in capsys.readouterr().out.replace("\n", "")


# ---------------------------------------------------------------------------------------------- flag words
def test_library_messages_name_no_flags():
    """Views and the lens speak Python; only the CLI's modules speak flags."""
    root = Path(qkv.__file__).parent
    assert (root / "cli" / "__init__.py").is_file()
    for path in sorted(root.rglob("*.py")):
        if path.parent.name == "cli" or path.name == "demo.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if "raise ValueError" in line or line.strip().startswith(('f"', '"')):
                for flag in ("--png", "--plots", "--json", "--html", "--truncate", "--model", "--query"):
                    assert flag not in line, f"{path.name}:{n} mentions {flag}: {line.strip()}"


def test_library_words_map_to_flags(tiny_png_trace, tmp_path):
    from qkv.view.claims_view import save_figures
    from qkv.view.png import save_heatmap

    with pytest.raises(ValueError) as e:
        save_heatmap(tiny_png_trace, tmp_path / "x.jpg", 0, 0, "weights")
    assert str(e.value).startswith("save_heatmap wants a path ending in .png")
    assert cli_words(str(e.value)).startswith("--png wants a path ending in .png")
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError) as e:
        save_figures(None, tmp_path / "file")
    assert cli_words(str(e.value)).startswith("--plots wants a directory")
    assert cli_words("too long; pass truncate=True to keep") == "too long; pass --truncate to keep"
    assert all(lib != flag for lib, flag in FLAG_WORDS)


def test_html_size_limit_is_mapped_to_flags(monkeypatch, capsys):
    monkeypatch.setattr("qkv.view.html.MAX_NUMBERS", 10)
    assert main(["explain", "--html", "x.html"]) == 2
    msg = error_line(capsys, "explain")
    assert "shorten the text, or use --json or --png instead" in msg and "Trace.to_dict" not in msg


@pytest.fixture
def tiny_png_trace():
    import torch

    from qkv.lens.trace import Trace

    return Trace.from_tensors(
        "a b", ["a", "b"], weights=torch.tensor([[[[1.0, 0.0], [0.5, 0.5]]]]), offsets=[(0, 1), (2, 3)]
    )
