"""examples/bf16_rounding.py --quick: pure-bfloat16 training stalls with round-to-nearest and
tracks float32 with stochastic rounding (scikit-learn's digits, shipped with scikit-learn)."""

from __future__ import annotations

import importlib.util
import pathlib

import pytest

pytest.importorskip("sklearn")
pytest.importorskip("ml_dtypes")

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "bf16_rounding.py"


def _load():
    spec = importlib.util.spec_from_file_location("bf16_rounding", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod


def test_quick_run_prints_and_plots(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    mod = _load()
    png = tmp_path / "curves.png"
    assert mod.main(["--quick", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "bfloat16, stochastic rounding" in out and "test accuracy" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_stochastic_rounding_tracks_float32_and_nearest_stalls():
    mod = _load()
    f32, acc32 = mod.train(mod.np.dtype(mod.np.float32), False, epochs=6, lr=0.005)
    near, acc_near = mod.train(mod.BF16, False, epochs=6, lr=0.005)
    sr, acc_sr = mod.train(mod.BF16, True, epochs=6, lr=0.005)
    assert abs(sr[-1] - f32[-1]) < 0.02 * f32[-1]
    assert near[-1] > f32[-1] + 0.05
    assert acc_sr > acc_near + 0.2
