"""The offline link checker on small hand-made sites: it finds what it claims to find."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("check_site", ROOT / "tools" / "check_site.py")
check_site = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_site)


def make_site(tmp_path, pages: dict[str, str], css: str = "") -> Path:
    for name, body in pages.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"<html><head></head><body>{body}</body></html>", encoding="utf-8")
    (tmp_path / "style.css").write_text(css, encoding="utf-8")
    return tmp_path


def test_a_clean_site_passes(tmp_path):
    site = make_site(
        tmp_path,
        {
            "index.html": '<a href="guide/a.html#part">a</a> <a href="https://example.org/">out</a> '
            '<link rel="stylesheet" href="style.css"> <img src="data:image/png;base64,AA=="> '
            '<a href="mailto:x@example.org">mail</a> <a href="#top" id="top">top</a>',
            "guide/a.html": '<h2 id="part">part</h2><a href="../index.html">home</a><a href="./">folder</a>',
            "guide/index.html": "",
        },
        css="body { background: url(img/bg.png) }",
    )
    problems, pages, links = check_site.check_site(site)
    assert problems == [] and pages == 3 and links == 8


@pytest.mark.parametrize(
    "body, fragment",
    [
        ('<a href="missing.html">x</a>', "no such file"),
        ('<a href="index.html#nowhere">x</a>', "no element with id 'nowhere'"),
        ('<script src="https://cdn.example.org/lib.js"></script>', "loads from outside"),
        ('<link rel="stylesheet" href="//fonts.example.org/css">', "loads from outside"),
        ('<img src="http://example.org/a.png">', "loads from outside"),
        ('<a href="../../etc/passwd">x</a>', "outside the site folder"),
        ('<div style="background: url(https://example.org/a.png)"></div>', "style loads"),
    ],
)
def test_each_kind_of_problem_is_reported(tmp_path, body, fragment):
    site = make_site(tmp_path, {"index.html": body})
    problems, _, _ = check_site.check_site(site)
    assert len(problems) == 1 and fragment in problems[0], problems


def test_css_loading_fonts_from_outside_is_reported(tmp_path):
    site = make_site(tmp_path, {"index.html": ""}, css="@import 'https://fonts.example.org/css'; a { }")
    problems, _, _ = check_site.check_site(site)
    assert problems == ["style.css: loads https://fonts.example.org/css from outside"]


def test_no_site_is_a_problem_and_main_exits_1(tmp_path, capsys):
    assert check_site.main([str(tmp_path)]) == 1
    assert "no index.html" in capsys.readouterr().out
