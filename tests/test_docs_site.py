"""The documentation site builds with ``mkdocs build --strict``: no broken links, no missing
pages, no docstring that mkdocstrings cannot parse; and it works offline: every script and
stylesheet is part of the site, MathJax included."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mkdocs")
pytest.importorskip("mkdocstrings")
pytest.importorskip("material")

ROOT = Path(__file__).resolve().parents[1]


def test_mkdocs_build_strict(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stderr}\n{proc.stdout}"
    assert (tmp_path / "index.html").is_file()
    assert (tmp_path / "api" / "sampling" / "index.html").is_file()
    # Every tutorial is a page (rendered from notebooks/ by mkdocs_hooks.py) and a download.
    for nb in sorted((ROOT / "notebooks").glob("*.py")):
        assert (tmp_path / "tutorials" / nb.stem / "index.html").is_file(), nb.name
        assert (tmp_path / "tutorials" / nb.name).read_bytes() == nb.read_bytes()

    # Offline: no page loads a script or a stylesheet from another host (a CDN's MathJax left
    # the theory page as raw LaTeX without a network), and the math script is in the site.
    external = re.compile(r"<(?:script|link)\b[^>]*(?:src|href)=\"(?:https?:)?//[^\"]*\"[^>]*>")
    for page in tmp_path.rglob("*.html"):
        tags = [
            t for t in external.findall(page.read_text()) if "stylesheet" in t or "<script" in t
        ]
        assert not tags, f"{page.relative_to(tmp_path)} loads {tags}"
    theory = (tmp_path / "theory" / "index.html").read_text()
    scripts = re.findall(r'<script[^>]*src="([^"]+)"', theory)
    mathjax = [s for s in scripts if s.endswith("mathjax/tex-mml-chtml.js")]
    assert mathjax, f"no local MathJax among the theory page's scripts {scripts}"
    local = (tmp_path / "theory" / mathjax[0]).resolve()
    assert local.is_file() and local.stat().st_size > 100_000  # the real thing, not a stub
    assert 'class="arithmatex"' in theory  # and there are equations for it to typeset
