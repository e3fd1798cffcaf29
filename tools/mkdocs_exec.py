"""MkDocs hook: run the Python blocks of a page at build time and show what they print and draw.

A page opts in with ``execute: true`` in its front matter. Its fenced blocks tagged ``python`` then run in
order in one namespace per page (like the cells of a notebook; the page stays plain markdown that jupytext
opens as one). Under each block come what it printed and the ``repr`` of its last expression (when not
``None``), in a block titled "output", and every matplotlib figure it left open, saved as a PNG beside the
page (``figures/<page>-<n>.png``) and shown as an image. A block tagged ``python no-exec`` is shown, not run.

A block that raises, or emits a warning, fails the build, naming the page and the block's line: every
number a page shows comes from code that ran on this build. Blocks run in a temporary working directory,
so files they write never land in the source tree.

Also (for every page): Sphinx-style roles left in docstrings (``:func:`x```) lose their role prefix, so the
API pages read ``x`` rather than ``:func:x``.
"""

from __future__ import annotations

import ast
import contextlib
import io
import logging
import os
import re
import tempfile
import time
import traceback
import warnings

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

log = logging.getLogger("mkdocs.hooks.exec")

FENCE = re.compile(
    r"^(?P<indent>[ ]*)```python(?P<noexec>[ \t]+no-exec)?[ \t]*\n(?P<code>.*?)^(?P=indent)```[ \t]*$", re.M | re.S
)
ROLE = re.compile(r":(?:py:)?(?:func|mod|class|meth|attr|data|exc|obj|const):(?=<code)")


def on_config(config):
    import matplotlib

    matplotlib.use("Agg")  # figures are drawn to PNG; never open a window
    return config


def on_page_content(html, page, config, files):
    return ROLE.sub("", html)


def on_page_markdown(markdown, page, config, files):
    if not page.meta.get("execute"):
        return markdown.replace("```python no-exec", "```python")
    start = time.perf_counter()
    runner = _PageRunner(page.file.src_uri, config, files)
    with tempfile.TemporaryDirectory(prefix="qkv-docs-") as tmp, _cwd(tmp):
        out = FENCE.sub(runner.replace, markdown)
    log.info("executed %d blocks of %s in %.1f s", runner.count, page.file.src_uri, time.perf_counter() - start)
    return out


@contextlib.contextmanager
def _cwd(path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


class _PageRunner:
    """Runs the blocks of one page in one namespace; ``replace`` is the regex substitution callback."""

    def __init__(self, src_uri: str, config, files):
        self.src_uri, self.config, self.files = src_uri, config, files
        self.namespace: dict = {"__name__": "__main__"}
        self.count = self.figures = 0
        self.markdown = ""

    def replace(self, m: re.Match) -> str:
        indent, code = m.group("indent"), m.group("code")
        shown = f"{indent}```python\n{code}{indent}```"
        if m.group("noexec"):
            return shown
        self.count += 1
        line = m.string.count("\n", 0, m.start()) + 1
        code = "\n".join(s[len(indent) :] for s in code.splitlines())
        text = self.run(code, line)
        parts = [shown]
        if text.strip():
            fence = "````" if "```" in text else "```"
            body = "\n".join(indent + s for s in text.rstrip("\n").splitlines())
            parts.append(f'{indent}{fence}text title="output"\n{body}\n{indent}{fence}')
        parts += [indent + img for img in self.save_figures()]
        return "\n\n".join(parts)

    def run(self, code: str, line: int) -> str:
        """Execute one block; returns its printed output (+ the repr of a last expression)."""
        where = f"{self.src_uri}, the python block at line {line}"
        tree = ast.parse(code, filename=where)
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        buf = io.StringIO()
        try:
            with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(buf):
                warnings.simplefilter("always")
                exec(compile(tree, where, "exec"), self.namespace)
                if last is not None:
                    value = eval(compile(ast.Expression(last.value), where, "eval"), self.namespace)
                    if value is not None and not type(value).__module__.startswith("matplotlib"):
                        print(repr(value))  # as a notebook shows it; a plot call's artist is not news
        except Exception:
            raise PluginError(f"{where} raised:\n{traceback.format_exc(limit=-6)}") from None
        caught = [w for w in caught if not issubclass(w.category, DeprecationWarning)]
        if caught:
            raise PluginError(f"{where} warned: " + "; ".join(f"{w.category.__name__}: {w.message}" for w in caught))
        return buf.getvalue()

    def save_figures(self) -> list[str]:
        """Every open matplotlib figure as a PNG file of the site; markdown images pointing at them."""
        import matplotlib.pyplot as plt

        images = []
        stem = self.src_uri.rsplit("/", 1)[-1].removesuffix(".md")
        folder = self.src_uri.rsplit("/", 1)[0] + "/" if "/" in self.src_uri else ""
        for num in plt.get_fignums():
            fig = plt.figure(num)
            self.figures += 1
            name = f"figures/{stem}-{self.figures}.png"
            png = io.BytesIO()
            fig.savefig(png, format="png", dpi=110, bbox_inches="tight")
            plt.close(fig)
            self.files.append(File.generated(self.config, folder + name, content=png.getvalue()))
            titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
            alt = (fig._suptitle.get_text() if fig._suptitle else "; ".join(titles)) or f"figure {self.figures}"
            images.append(f"![{alt}]({name}){{ .qkv-figure }}")
        return images
