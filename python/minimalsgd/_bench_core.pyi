"""minimalsgd._bench_core: the bench's yardstick loops and the bare kernel call, timed in C++
(private: ``python -m minimalsgd bench`` and bench/). It uses minimalsgd._core's kernel table,
instruction set and threads."""

import numpy as np

def _time_calls(
    kind: str, w: np.ndarray, g: np.ndarray, v: np.ndarray, reps: int, inner: int, threads: int = 0,
    m: np.ndarray | None = None,
) -> list[float]: ...
