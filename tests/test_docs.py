"""Every Python block of README.md and docs/*.md runs.

The blocks of one page run in order in one namespace (a block may use what an earlier one made), in a fresh temporary
folder, offline. A block preceded by an HTML comment `<!-- skip: REASON -->` (it needs a GPU, the network, several
processes or large real weights) is not run, and the test reports it as skipped with its reason.
"""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(?:<!--\s*skip:\s*(?P<skip>.*?)\s*-->\s*\n)?```python\n(?P<code>.*?)\n```", re.S)


def python_blocks(text: str) -> list[tuple[int, str, str | None]]:
    """(line number, code, skip reason or None) of each ```python block."""
    return [
        (text.count("\n", 0, m.start("code")) + 1, m.group("code"), m.group("skip")) for m in BLOCK.finditer(text)
    ]


def test_block_parser_reads_code_lines_and_skip_reasons():
    text = "intro\n```python\nx = 1\n```\n<!-- skip: needs a GPU -->\n```python\ny = 2\n```\n```bash\nls\n```\n"
    assert python_blocks(text) == [(3, "x = 1", None), (7, "y = 2", "needs a GPU")]


GUIDE = ["getting-started", "directions", "objectives", "honest-plots", "llm-scale", "curvature", "trajectories"]
GUIDE += ["comparing-fine-tunes", "hub", "viewer", "troubleshooting"]


@pytest.mark.parametrize("name", ["README", *GUIDE])
def test_guide_pages_have_code_that_runs(name):
    page = ROOT / f"{name}.md" if name == "README" else ROOT / "docs" / f"{name}.md"
    assert any(skip is None for _, _, skip in python_blocks(page.read_text()))


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_python_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    module = types.ModuleType(f"docs_{page.stem.replace('-', '_')}")  # dataclasses look their module up
    monkeypatch.setitem(sys.modules, module.__name__, module)
    namespace = module.__dict__
    for line, code, skip in python_blocks(page.read_text()):
        if skip:
            continue  # reported by test_marked_blocks_are_skipped
        try:
            exec(compile(code, f"{page.relative_to(ROOT)}:{line}", "exec"), namespace)
        except Exception as err:
            raise AssertionError(f"{page.relative_to(ROOT)}, the block at line {line} failed: {err!r}") from err


MARKED = [(page, line, reason) for page in PAGES for line, _, reason in python_blocks(page.read_text()) if reason]


@pytest.mark.parametrize(
    ("page", "line", "reason"), MARKED, ids=[f"{p.relative_to(ROOT)}:{line}" for p, line, _ in MARKED]
)
def test_marked_blocks_are_skipped(page, line, reason):
    pytest.skip(reason)
