"""mkdocs hook: serve MathJax from the site itself, so the equations render with no network.

MathJax 3 comes from the ``django-static-mathjax`` package on PyPI (a plain copy of MathJax's
``es5`` build; the ``dev`` extra installs it). Its files join the site under
``javascripts/mathjax/``, where ``mkdocs.yml``'s ``extra_javascript`` loads
``tex-mml-chtml.js``; MathJax finds its fonts and lazily loaded TeX extensions next to it.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

TARGET = "javascripts/mathjax"


def _es5() -> Path:
    try:
        import mathjax
    except ImportError:
        raise PluginError(
            "the docs need MathJax from PyPI: pip install django-static-mathjax (in the dev extra)"
        ) from None
    return Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"


def on_files(files, config):
    root = _es5()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            uri = f"{TARGET}/{path.relative_to(root).as_posix()}"
            files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files
