from collections.abc import Sequence

import numpy as np

openmp: bool
compiled_isas: tuple[str, ...]
processor: str
baseline_simd: str
__version__: str
#: Whether ml_dtypes could be imported: bfloat16 arrays reach the kernels only then.
bfloat16_available: bool
#: A PyCapsule holding the kernel table, for minimalsgd._bench_core (csrc/python/kernel_api.hpp).
_kernel_api: object

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
    stochastic_rounding: bool = False,
    seed: int = 0,
    rounding_step: int = 0,
    rounding_keys: Sequence[int] | None = None,
) -> None: ...
def sum_of_squares(arrays: Sequence[np.ndarray]) -> float: ...
def get_isa() -> str: ...
def set_isa(isa: str) -> None: ...
def supported_isas() -> list[str]: ...
def get_num_threads() -> int: ...
def get_num_threads_setting() -> int: ...
def set_num_threads(n: int) -> None: ...
def get_grain() -> int: ...
def set_grain(grain: int) -> None: ...
def try_sgd_step(
    values: object, grads: object, momentum_buffers: object, first_step: object, lr: object, momentum: object,
    dampening: object, weight_decay: object, nesterov: object, maximize: object, grad_scale: object,
    stochastic_rounding: object = False, seed: object = 0, rounding_step: object = 0, rounding_keys: object = None, /,
) -> bool: ...

class SgdPlan:
    def __init__(
        self, outers: list[dict], keys: list[list], inners: list[list], index: list[list[int]], values: list[np.ndarray],
        grads: list[np.ndarray], states: list[list[np.ndarray | None]], steps: list[int], group_of: list[int],
        options: list[tuple[float, float, float, float, bool, bool]], clip: float, skip_nonfinite: bool,
    ) -> None: ...
    def step(self, grad_scale: float = 1.0) -> int: ...
    def set_lr(self, group: int, lr: float) -> bool: ...
    @property
    def lrs(self) -> list[float]: ...
    @property
    def last_lrs(self) -> list[float]: ...
    @property
    def applied(self) -> int: ...
    def reset_applied(self) -> None: ...
    @property
    def last_norm(self) -> float: ...
    @property
    def spans(self) -> int: ...
class AdamPlan(SgdPlan):
    """The cached plan of Adam/AdamW.step(); options are (lr, beta1, beta2, eps, weight_decay,
    amsgrad, maximize, decoupled); states [exp_avg, exp_avg_sq, max_exp_avg_sq or None]."""

def sgd_step_groups(
    values: Sequence[np.ndarray], grads: Sequence[np.ndarray], momentum_buffers: Sequence[np.ndarray | None],
    first_step: Sequence[bool], group_of: Sequence[int], options: Sequence[tuple[float, float, float, float, bool, bool]],
    grad_scale: float, check_overlap: bool = True, stochastic_rounding: bool = False, seed: int = 0,
    rounding_step: int = 0, rounding_keys: Sequence[int] | None = None,
) -> None: ...
def sgd_step_ptrs(
    kinds: list[int], value_ptrs: list[int], grad_ptrs: list[int], buf_ptrs: list[int] | None, sizes: list[int],
    first_step: list[bool], lr: float, momentum: float, dampening: float, weight_decay: float, nesterov: bool,
    maximize: bool, grad_scale: float, stochastic_rounding: bool = False, seed: int = 0, rounding_step: int = 0,
    rounding_keys: Sequence[int] | None = None,
) -> bool: ...
def adam_step(
    values: Sequence[np.ndarray],
    grads: Sequence[np.ndarray],
    exp_avgs: Sequence[np.ndarray],
    exp_avg_sqs: Sequence[np.ndarray],
    max_exp_avg_sqs: Sequence[np.ndarray] | None,
    step: int | Sequence[int],
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    amsgrad: bool,
    maximize: bool,
    decoupled: bool,
    grad_scale: float,
    check_overlap: bool = True,
) -> None: ...
def adam_step_ptrs(
    kinds: list[int], value_ptrs: list[int], grad_ptrs: list[int], exp_avg_ptrs: list[int], exp_avg_sq_ptrs: list[int],
    max_exp_avg_sq_ptrs: list[int] | None, sizes: list[int], steps: list[int], lr: float, beta1: float, beta2: float,
    eps: float, weight_decay: float, amsgrad: bool, maximize: bool, decoupled: bool, grad_scale: float,
) -> bool: ...
