"""README.md's Python examples run as written (a stale example fails here), in the order they
appear, each block in a fresh namespace, in a scratch directory. The PyTorch block needs torch."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8") if README.is_file() else "", re.S)


def test_readme_has_the_examples():
    if not README.is_file():
        pytest.skip("README.md is not next to the tests (an installed-wheel run)")
    assert len(BLOCKS) >= 2, "README.md should show a NumPy and a PyTorch example"


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, tmp_path, monkeypatch):
    code = BLOCKS[index]
    if "import torch" in code:
        pytest.importorskip("torch")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"README.md python block {index}", "exec"), {"__name__": "__readme__"})
