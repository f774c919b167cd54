"""Every Python example in the docs runs as written, so the examples cannot rot.

Pages: README.md and every ``docs/**/*.md``. A page's fenced ```` ```python ```` blocks run in
order in one shared namespace (later blocks use earlier names), in a fresh temporary working
directory, with matplotlib's Agg backend; one test per page, and a failure names the page, the
block and its line. Blocks in other languages (bash, text, console, bare fences) are not run.

Opt-out: an HTML comment ``<!-- no-run -->`` as the last non-blank line before a block keeps
that block from running. The comment is invisible on GitHub and in mkdocs-material but plain in
the Markdown source; use it only for a block that truly cannot run in a test (it needs a GPU, a
download, minutes), since ``MAX_NO_RUN`` caps how many there may be.

Docstring examples (``>>>``) in ``scoresde/`` are run by ``doctest`` as well.
"""

from __future__ import annotations

import doctest
import importlib
import re
import traceback
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
#: Pages that must have runnable examples (guards the parser against silently finding none).
PAGES_WITH_EXAMPLES = ["README.md", "docs/training.md", "docs/guidance.md"]
NO_RUN = "<!-- no-run -->"
MAX_NO_RUN = 3
PYTHON = {"python", "py", "python3"}

# A fence: up to any indentation (fences inside list items), 3+ backticks or tildes, info string.
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    no_run: bool


def _lang(info: str) -> str:
    """The language of a fence's info string: ``python``, ``python title="x"``, ``{.python}``."""
    word = info.strip().split(maxsplit=1)[0] if info.strip() else ""
    return word.lstrip("{").lstrip(".").rstrip("}").lower()


def parse_blocks(page: Path) -> list[Block]:
    """Every fenced block of a Markdown page (a CommonMark-style line scanner, not a regex)."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m is None or ("`" in m["info"] and m["fence"][0] == "`"):
            i += 1
            continue
        indent, fence, start = len(m["indent"]), m["fence"], i
        body: list[str] = []
        i += 1
        while i < len(lines):
            close = FENCE.match(lines[i])
            if (
                close
                and close["fence"][0] == fence[0]
                and len(close["fence"]) >= len(fence)
                and not close["info"].strip()
            ):
                break
            line = lines[i]
            # Strip the opening fence's indentation from the body (as Markdown does).
            body.append(line[min(indent, len(line) - len(line.lstrip())) :])
            i += 1
        i += 1  # past the closing fence (or the end of an unclosed one)
        prev = next((lines[j].strip() for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        blocks.append(
            Block(page, start + 1, _lang(m["info"]), "\n".join(body) + "\n", prev == NO_RUN)
        )
    return blocks


def python_blocks(page: Path) -> list[Block]:
    return [b for b in parse_blocks(page) if b.lang in PYTHON]


def _rel(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


RUNNABLE = [p for p in PAGES if any(not b.no_run for b in python_blocks(p))]


@pytest.fixture
def agg(monkeypatch):
    """matplotlib on the Agg backend, figures closed afterwards."""
    monkeypatch.setenv("MPLBACKEND", "Agg")
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    monkeypatch.setattr(plt, "show", lambda *args, **kwargs: None)
    yield
    plt.close("all")


@pytest.mark.parametrize("page", RUNNABLE, ids=[_rel(p) for p in RUNNABLE])
def test_page_examples_run(page, tmp_path, monkeypatch, agg):
    monkeypatch.syspath_prepend(str(ROOT))  # the package, whatever the working directory
    monkeypatch.chdir(tmp_path)  # files the examples write land in a fresh directory
    torch.manual_seed(0)
    namespace: dict = {"__name__": "__main__"}
    blocks = python_blocks(page)
    for k, block in enumerate(blocks, 1):
        if block.no_run:
            continue
        # Pad with blank lines so tracebacks show the page's own line numbers.
        source = "\n" * block.line + block.code
        try:
            exec(compile(source, str(page), "exec"), namespace)
        except Exception:
            error = traceback.format_exc()
        else:
            continue
        pytest.fail(
            f"{_rel(page)}: python block {k} of {len(blocks)} (fence at line {block.line}) "
            f"raised:\n{error}",
            pytrace=False,
        )


def test_pages_with_examples_are_found():
    found = {_rel(p) for p in RUNNABLE}
    for rel in PAGES_WITH_EXAMPLES:
        assert (ROOT / rel).is_file(), f"{rel} is listed in PAGES_WITH_EXAMPLES but is missing"
        assert rel in found, f"no runnable ```python block found in {rel}"
    for page in PAGES:
        # An independent count of opening ```python fences: the scanner must see every one.
        text = page.read_text(encoding="utf-8")
        naive = len(re.findall(r"^[ \t]*(?:`{3,}|~{3,})[ \t]*\{?\.?(?:python3?|py)\b", text, re.M))
        assert len(python_blocks(page)) == naive, f"{_rel(page)}: fence scanner missed a block"


def test_no_run_opt_outs_are_few():
    skipped = [f"{_rel(b.page)}:{b.line}" for p in PAGES for b in python_blocks(p) if b.no_run]
    assert len(skipped) <= MAX_NO_RUN, f"too many {NO_RUN} blocks ({len(skipped)}): {skipped}"
    # A marker must sit right before a python block, else it is a typo or a stale marker.
    for page in PAGES:
        lines = page.read_text(encoding="utf-8").splitlines()
        starts = {b.line for b in python_blocks(page) if b.no_run}
        for n, line in enumerate(lines, 1):
            if line.strip() == NO_RUN:
                nxt = next((j for j in range(n, len(lines)) if lines[j].strip()), None)
                assert nxt is not None and nxt + 1 in starts, (
                    f"{_rel(page)}:{n}: {NO_RUN} is not followed by a python block"
                )


def test_parser_handles_fence_forms(tmp_path):
    page = tmp_path / "p.md"
    page.write_text(
        'text\n```python\na = 1\n```\n\n<!-- no-run -->\n\n```python title="x"\nb = 2\n```\n'
        "```bash\nls\n```\n- item\n\n    ```py\n    c = 3\n    ```\n````python\n```\n````\n"
        "```\nplain\n```\n"
    )
    blocks = parse_blocks(page)
    assert [b.lang for b in blocks] == ["python", "python", "bash", "py", "python", ""]
    assert [b.no_run for b in blocks] == [False, True, False, False, False, False]
    assert [b.line for b in blocks] == [2, 8, 11, 16, 19, 22]
    assert blocks[3].code == "c = 3\n"
    assert blocks[4].code == "```\n"


def _nav_pages() -> list[str]:
    mkdocs = ROOT / "mkdocs.yml"
    if not mkdocs.is_file():
        return []
    nav = mkdocs.read_text(encoding="utf-8").split("\nnav:", 1)
    return (
        re.findall(r"^\s*-\s*(?:[^:\n]+:\s*)?([\w./-]+\.md)\s*$", nav[1], re.M)
        if len(nav) > 1
        else []
    )


def _page_exists(path: Path) -> bool:
    """A Markdown page on disk, or a tutorial page ``docs/tutorials/NAME.md`` that
    ``mkdocs_hooks.py`` renders from ``notebooks/NAME.py``."""
    path = path.resolve()
    if path.is_file():
        return True
    tutorials = (ROOT / "docs" / "tutorials").resolve()
    return path.parent == tutorials and (ROOT / "notebooks" / f"{path.stem}.py").is_file()


@pytest.mark.parametrize("rel", _nav_pages())
def test_nav_page_exists(rel):
    assert _page_exists(ROOT / "docs" / rel), f"mkdocs.yml's nav names docs/{rel}, which is missing"


LINK = re.compile(r"\]\(([^)\s]+?\.md)(?:#[^)\s]*)?\)")


def test_linked_pages_exist():
    """Relative Markdown links to other pages (``[x](docs/guidance.md#anchor)``) resolve."""
    broken = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for target in LINK.findall(text):
            if "://" in target:
                continue
            if not _page_exists(page.parent / target):
                broken.append(f"{_rel(page)} -> {target}")
    assert not broken, f"links to missing pages: {broken}"


def _doctest_modules() -> list[str]:
    names = []
    for path in sorted((ROOT / "scoresde").rglob("*.py")):
        if ">>>" in path.read_text(encoding="utf-8"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


DOCTEST_MODULES = _doctest_modules() or [
    pytest.param(None, marks=pytest.mark.skip(reason="no >>> examples in scoresde/ yet"))
]


@pytest.mark.parametrize("name", DOCTEST_MODULES)
def test_docstring_examples(name, tmp_path, monkeypatch, agg):
    monkeypatch.chdir(tmp_path)
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} doctest failure(s) in {name}"
