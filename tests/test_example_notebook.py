"""examples/notebook_comparison.py runs in its short mode (CI) and does what it says: the
variance check, five optimizers trained and timed against classic NumPy, a PNG of the curves."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "notebook_comparison.py"


def test_quick_run_prints_the_comparison_and_writes_the_plot(tmp_path):
    out = tmp_path / "curves.png"
    proc = subprocess.run([sys.executable, str(EXAMPLE), "--quick", "--out", str(out)], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "He: sqrt(2/fan_in)" in text and "naive: 0.01" in text
    rows = {line.split()[0]: line.split() for line in text.splitlines()
            if line.split() and line.split()[0] in ("SGD", "momentum", "Nesterov", "Adam", "AdamW")}
    assert set(rows) == {"SGD", "momentum", "Nesterov", "Adam", "AdamW"}
    for name, cols in rows.items():
        loss, acc = float(cols[1]), float(cols[2])
        assert 0 < loss < 2.3, name  # below chance level's log(10) after two epochs
        assert 0.5 < acc <= 1.0, name
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_he_init_keeps_the_variance_steady_and_a_naive_scale_does_not():
    sys.path.insert(0, str(EXAMPLE.parent))
    try:
        import notebook_comparison as nb
    finally:
        sys.path.remove(str(EXAMPLE.parent))
    v = nb.variance_check(depth=8, width=128, n=500)
    he, naive = v["He: sqrt(2/fan_in)"], v["naive: 0.01"]
    assert max(he) / min(he) < 2.0  # steady through the layers
    assert naive[-1] < 1e-6 * naive[0]  # collapses


def test_hand_written_backward_matches_finite_differences():
    import numpy as np

    sys.path.insert(0, str(EXAMPLE.parent))
    try:
        import notebook_comparison as nb
    finally:
        sys.path.remove(str(EXAMPLE.parent))
    rng = np.random.default_rng(3)
    params = nb.he_init([5, 7, 4, 3], rng, dtype=np.float64)
    for p in params.values():
        p["value"] += 0.1 * rng.standard_normal(p["value"].shape)  # nonzero biases too
    x, y = rng.standard_normal((6, 5)), rng.integers(0, 3, 6)
    for name, p in params.items():
        nb.forward_backward(params, x, y)  # at the unperturbed point
        analytic = p["grad"].copy()
        numeric = np.zeros_like(analytic)
        for idx in np.ndindex(p["value"].shape):
            old = p["value"][idx]
            p["value"][idx] = old + 1e-6
            up = nb.forward_backward(params, x, y)
            p["value"][idx] = old - 1e-6
            down = nb.forward_backward(params, x, y)
            p["value"][idx] = old
            numeric[idx] = (up - down) / 2e-6
        np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7, err_msg=name)
