"""mkdocs hooks: MathJax served from the site itself, and the tutorials rendered as pages.

**MathJax.** So the equations render with no network.
MathJax 3 comes from the ``django-static-mathjax`` package on PyPI (a plain copy of MathJax's
``es5`` build; the ``dev`` extra installs it). Its files join the site under
``javascripts/mathjax/``, where ``mkdocs.yml``'s ``extra_javascript`` loads
``tex-mml-chtml.js``; MathJax finds its fonts and lazily loaded TeX extensions next to it.

**Tutorials.** Each ``notebooks/NAME.py`` (jupytext percent format) becomes the page
``tutorials/NAME.md`` (its markdown cells as text, its code cells as Python blocks; not
executed, so no figures: ``tests/test_notebooks.py`` executes them) and is served as it is at
``tutorials/NAME.py`` for download. ``jupytext`` comes with the ``dev`` extra.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

TARGET = "javascripts/mathjax"
TUTORIALS = "tutorials"
NOTEBOOKS = Path(__file__).resolve().parent / "notebooks"


def _es5() -> Path:
    try:
        import mathjax
    except ImportError:
        raise PluginError(
            "the docs need MathJax from PyPI: pip install django-static-mathjax (in the dev extra)"
        ) from None
    return Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"


def _markdown(path: Path) -> str:
    """A percent-format notebook as a Markdown page, without jupytext's YAML header."""
    try:
        import jupytext
    except ImportError:
        raise PluginError(
            "the docs render the tutorials with jupytext: pip install jupytext (in the dev extra)"
        ) from None
    text = jupytext.writes(jupytext.read(path), fmt="md")
    if text.startswith("---\n"):
        text = text[text.index("\n---\n", 4) + 5 :]
    download = f"[`notebooks/{path.name}`]({path.name})"
    return (
        text.lstrip()
        + f"\n---\n\nThe source of this page is {download}; run it as a notebook with jupytext.\n"
    )


def on_files(files, config):
    root = _es5()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            uri = f"{TARGET}/{path.relative_to(root).as_posix()}"
            files.append(File.generated(config, uri, abs_src_path=str(path)))
    for path in sorted(NOTEBOOKS.glob("*.py")):
        md = _markdown(path)
        files.append(File.generated(config, f"{TUTORIALS}/{path.stem}.md", content=md))
        files.append(File.generated(config, f"{TUTORIALS}/{path.name}", abs_src_path=str(path)))
    return files
