from collections.abc import Sequence

import numpy as np

openmp: bool
compiled_isas: tuple[str, ...]
__version__: str

def sgd_step(
    values: Sequence[np.ndarray],
    grads: Sequence[np.ndarray],
    momentum_buffers: Sequence[np.ndarray] | None,
    first_step: bool | Sequence[bool],
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
    grad_scale: float,
    check_overlap: bool = True,
) -> None: ...
def sum_of_squares(arrays: Sequence[np.ndarray]) -> float: ...
def get_isa() -> str: ...
def set_isa(isa: str) -> None: ...
def supported_isas() -> list[str]: ...
def get_num_threads() -> int: ...
def set_num_threads(n: int) -> None: ...
def get_grain() -> int: ...
def set_grain(grain: int) -> None: ...
