"""minimalsgd.torch.SGD under torch.distributed: DistributedDataParallel and ZeroRedundancyOptimizer.

Two processes on loopback with the gloo backend (tests/torch_distributed_worker.py does the
training and the comparisons with torch.optim.SGD; see its docstring for what it asserts). Each run
has a timeout, so a hang fails the test instead of stalling the suite. Skipped without torch or
without gloo.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
    pytest.skip("torch.distributed with the gloo backend is not available", allow_module_level=True)

WORKER = Path(__file__).parent / "torch_distributed_worker.py"
WORLD = 2
TIMEOUT = 240  # seconds for the whole run (two processes); a hang fails here


@pytest.mark.parametrize("setup", ["ddp", "zero"])
def test_drop_in_under_torch_distributed_equals_torch_sgd(setup, tmp_path):
    env = dict(os.environ)
    if sys.platform.startswith("linux"):
        env["GLOO_SOCKET_IFNAME"] = "lo"  # loopback only
    env["OMP_NUM_THREADS"] = "1"  # two ranks on a small machine
    store = tmp_path / "store"
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(rank), str(WORLD), str(store), setup],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        for rank in range(WORLD)
    ]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=TIMEOUT))
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail(f"{setup}: the ranks did not finish within {TIMEOUT} s (hang?)")
    for rank, (p, (out, err)) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, f"rank {rank} failed:\n{out}\n{err}"
    assert outs[0][0].startswith(f"OK {setup}"), outs[0]
