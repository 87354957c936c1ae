"""minimalsgd.distributed under real MPI: pytest starts ``mpiexec -n 1``, ``-n 2`` and ``-n 3`` runs of
``tests/distributed/mpi_cases.py`` (loopback only, with a timeout) and turns each case's verdict into a test.

Skipped, with the reason, where mpi4py or mpiexec is missing (``pip install '.[mpi]'``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
import mpi_cases  # noqa: E402

TIMEOUT = 120  # seconds per mpiexec run (a whole run takes a few seconds; a hung collective is caught)


def _mpiexec() -> str | None:
    """The mpiexec next to this Python (the mpich wheel installs it there), else the one on PATH."""
    here = shutil.which("mpiexec", path=str(Path(sys.executable).parent))
    return here or shutil.which("mpiexec")


def _skip_reason() -> str | None:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed (pip install '.[mpi]' installs mpi4py and mpich)"
    if _mpiexec() is None:
        return "no mpiexec found next to the Python executable or on PATH (pip install mpich)"
    return None


SKIP = _skip_reason()
needs_mpi = pytest.mark.skipif(SKIP is not None, reason=SKIP or "")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("MINIMALSGD_BACKEND", None)
    env["OMP_NUM_THREADS"] = "1"  # N ranks on a small machine: no thread oversubscription
    env.pop("HYDRA_HOST_FILE", None)  # every rank on this machine ("-host localhost"), over loopback
    return env


def run_mpi(n: int, *args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    mpiexec = _mpiexec()
    assert mpiexec is not None
    cmd = [mpiexec, "-n", str(n), "-host", "localhost", sys.executable, *args]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env(), cwd=str(ROOT))
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"{' '.join(cmd)} timed out after {timeout} s (a rank is probably waiting in a collective)\n"
                    f"stdout: {err.stdout!r}\nstderr: {err.stderr!r}")


_RESULTS: dict[int, dict[str, dict[str, Any]]] = {}


def _results(n: int) -> dict[str, dict[str, Any]]:
    """Run every case once on ``n`` ranks; case name -> {"failures": {rank: traceback}, "skipped": reason}."""
    if n not in _RESULTS:
        proc = run_mpi(n, str(HERE / "mpi_cases.py"))
        out: dict[str, dict[str, Any]] = {}
        for line in proc.stdout.splitlines():
            if line.startswith("{"):
                rec = json.loads(line)
                out[rec["case"]] = rec
        if proc.returncode != 0 or not out:
            pytest.fail(f"mpiexec -n {n} failed (rc {proc.returncode})\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        _RESULTS[n] = out
    return _RESULTS[n]


@needs_mpi
@pytest.mark.parametrize("case", list(mpi_cases.CASES))
@pytest.mark.parametrize("ranks", [1, 2, 3])
def test_under_mpiexec(ranks: int, case: str) -> None:
    results = _results(ranks)
    assert case in results, f"case {case} did not report on {ranks} ranks"
    if results[case].get("skipped"):
        pytest.skip(results[case]["skipped"])
    failures = results[case]["failures"]
    assert not failures, "\n".join(f"rank {r}:\n{tb}" for r, tb in failures.items())


@needs_mpi
def test_checkpoint_reshards_3_to_2_to_1(tmp_path: Path) -> None:
    """Save on 3 ranks, resume on 2, resume in a plain single-process SGD: bit for bit the
    uninterrupted single-process run (gradients chosen so that their mean is exact on any N)."""
    import minimalsgd

    first, second = tmp_path / "ckpt3.npz", tmp_path / "ckpt2.npz"
    for n, src, dst, start, steps in ((3, "-", first, 0, 3), (2, str(first), second, 3, 3)):
        proc = run_mpi(n, str(HERE / "mpi_cases.py"), "--chain", src, str(dst), str(start), str(steps))
        assert proc.returncode == 0, proc.stderr
        assert dst.exists()
    data = np.load(second)
    params = mpi_cases.make_params()
    for k, p in params.items():
        p["value"][...] = data[f"value/{k}"]
    resumed = minimalsgd.SGD(params, lr=1.0)
    resumed.load_state_dict({k: data[k] for k in data.files if not k.startswith("value/")})
    assert resumed.state["w1"]["step"] == 6
    ref = mpi_cases.make_params()
    single = minimalsgd.SGD(ref, **mpi_cases.CHAIN_CFG)
    for t in range(9):
        for k, p in ref.items():
            p["grad"] = mpi_cases.local_grad(k, p["value"].shape, np.float32, 0, t, exact=True)
        single.step()
        if t >= 6:
            for k, p in params.items():
                p["grad"] = ref[k]["grad"]
            resumed.step()
    for k in ref:
        assert params[k]["value"].tobytes() == ref[k]["value"].tobytes(), k
        if resumed.state.get(k, {}).get("momentum_buffer") is not None:
            assert resumed.state[k]["momentum_buffer"].tobytes() == single.state[k]["momentum_buffer"].tobytes(), k


@needs_mpi
@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16"])
def test_checkpoint_16bit_stochastic_reshards_3_to_2_to_1(tmp_path: Path, dtype_name: str) -> None:
    """16-bit params with stochastic rounding (momentum, Nesterov, weight decay, clip; seed given):
    3 ranks save, 2 ranks resume and save, a plain single-process SGD resumes: bit for bit the
    uninterrupted single-process run, values and momentum buffers. Each run also checks that its
    replicas and their state dicts are identical on every rank. Rounding keys that depended on the
    slicing would make the 3-, 2- and 1-rank steps round differently."""
    import minimalsgd

    dtype = mpi_cases.chain_dtype(dtype_name)
    cfg = mpi_cases.chain_config(dtype)
    first, second = tmp_path / "ckpt3.npz", tmp_path / "ckpt2.npz"
    for n, src, dst, start, steps in ((3, "-", first, 0, 3), (2, str(first), second, 3, 3)):
        proc = run_mpi(n, str(HERE / "mpi_cases.py"), "--chain", src, str(dst), str(start), str(steps), dtype_name)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert dst.exists()
    data = np.load(second)
    params = mpi_cases.make_params(dtype, mpi_cases.HALF_SHAPES)
    for k, p in params.items():
        p["value"][...] = data[f"value/{k}"].view(dtype)
    resumed = minimalsgd.SGD(params, lr=1.0)
    resumed.load_state_dict({k: data[k] for k in data.files if not k.startswith("value/")})
    assert resumed.seed == cfg["seed"] and resumed.stochastic_rounding and resumed.applied_steps == 6
    ref = mpi_cases.make_params(dtype, mpi_cases.HALF_SHAPES)
    single = minimalsgd.SGD(ref, **cfg)
    nearest = mpi_cases.make_params(dtype, mpi_cases.HALF_SHAPES)
    plain_nearest = minimalsgd.SGD(nearest, **{**cfg, "stochastic_rounding": False})
    for t in range(9):
        mpi_cases._exact_grads(ref, t)
        mpi_cases._exact_grads(nearest, t)
        single.step()
        plain_nearest.step()
        if t >= 6:
            mpi_cases._exact_grads(params, t)
            resumed.step()
    for k in ref:
        assert params[k]["value"].tobytes() == ref[k]["value"].tobytes(), k
        if single.state.get(k, {}).get("momentum_buffer") is not None:
            assert resumed.state[k]["momentum_buffer"].tobytes() == single.state[k]["momentum_buffer"].tobytes(), k
    assert any(ref[k]["value"].tobytes() != nearest[k]["value"].tobytes() for k in ref), "no stochastic rounding seen"


@needs_mpi
def test_example_trains(tmp_path: Path) -> None:
    """examples/mpi_train.py on 2 ranks: the loss falls, and both ranks end with the same weights."""
    proc = run_mpi(2, str(ROOT / "examples" / "mpi_train.py"), "--epochs", "3")
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("epoch")]
    assert len(lines) == 3, proc.stdout
    losses = [float(ln.split("loss")[1].split()[0]) for ln in lines]
    assert losses[-1] < losses[0], proc.stdout
    assert "weights identical on all 2 ranks: True" in proc.stdout, proc.stdout


def test_import_does_not_import_mpi4py() -> None:
    code = "import sys, minimalsgd; minimalsgd.SGD; assert 'mpi4py' not in sys.modules, 'mpi4py imported'; print('ok')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr


def test_distributed_is_a_lazy_attribute() -> None:
    import minimalsgd

    mod = minimalsgd.distributed
    assert mod.__name__ == "minimalsgd.distributed"
    assert {"ShardedSGD", "allreduce_grads", "broadcast_params", "partition"} <= set(mod.__all__)


def test_partition() -> None:
    from minimalsgd.distributed import partition

    assert partition(10, 3) == ([4, 3, 3], [0, 4, 7])
    assert partition(2, 3) == ([1, 1, 0], [0, 1, 2])
    assert partition(0, 2) == ([0, 0], [0, 0])
    for total in range(0, 40):
        for n in range(1, 9):
            counts, displs = partition(total, n)
            assert sum(counts) == total and max(counts) - min(counts) <= 1
            assert displs == [sum(counts[:r]) for r in range(n)]
