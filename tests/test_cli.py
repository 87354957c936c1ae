"""python -m minimalsgd: config, paths, and the bench (the README's main job) on one small case."""

from __future__ import annotations

import json
import subprocess
import sys

import minimalsgd


def _run(*args: str) -> str:
    return subprocess.run([sys.executable, "-m", "minimalsgd", *args], capture_output=True, text=True, check=True).stdout


def test_config_version_and_paths():
    out = _run("config")
    assert "backend" in out and "native" in out and "isa" in out
    assert _run("--version").strip() == minimalsgd.__version__
    assert _run("--includes").strip() == f"-I{minimalsgd.get_include()}"


def test_bench_runs_and_writes_json(tmp_path):
    path = tmp_path / "bench.json"
    out = _run("bench", "--quick", "--case", "4K", "--no-torch", "--json", str(path))
    assert "limit: plain C stream loop (yardstick)" in out and "minimalsgd SGD.step" in out
    data = json.loads(path.read_text())
    assert data["machine"]["isa"] == minimalsgd.backend_info()["isa"]
    rows = {r["backend"]: r for r in data["rows"]}
    limit = rows["limit: plain C stream loop (yardstick)"]
    step = next(r for name, r in rows.items() if name.startswith("minimalsgd SGD.step ("))
    assert limit["numel"] == step["numel"] == 4096
    assert step["seconds"] > 0 and step["gbps"] > 0 and step["pct_of_limit"] > 0
    assert rows["classic NumPy param-dict (baseline)"]["speedup_vs_numpy"] == 1.0
