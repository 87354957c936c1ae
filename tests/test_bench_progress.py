"""The bench's progress bar: one line redrawn in place on a terminal, nothing otherwise."""

from __future__ import annotations

import io
import sys

import pytest

pytest.importorskip("tqdm")

from minimalsgd._bench import Progress  # noqa: E402


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run(monkeypatch, out_tty: bool, err_tty: bool, enabled: bool = True) -> str:
    out = _Tty() if out_tty else io.StringIO()
    err = _Tty() if err_tty else io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setenv("COLUMNS", "100")
    p = Progress(enabled)
    for case in ("one 4K tensor", "one 1M tensor"):
        for r in range(27):
            p(f"{case} (float32): yardstick and minimalsgd", r, 27)
        p.clear()
    p.close()
    return out.getvalue() + err.getvalue()


def test_one_redrawn_line_on_a_terminal(monkeypatch):
    text = _run(monkeypatch, True, True)
    assert "one 1M tensor (float32): yardstick and minimalsgd" in text
    assert text.count("\r") >= 54  # every round redraws...
    assert "\n" not in text  # ...the same line


@pytest.mark.parametrize("out_tty,err_tty,enabled", [(False, True, True), (True, False, True), (True, True, False)])
def test_quiet_when_not_a_terminal_or_disabled(monkeypatch, out_tty, err_tty, enabled):
    assert _run(monkeypatch, out_tty, err_tty, enabled) == ""
