"""16-bit storage in NumPy: bfloat16 (``ml_dtypes.bfloat16``) and float16, computed in float32.

The same definitions as the C++ core (``csrc/include/minimalsgd/half.hpp``), bit for bit:

* **Round to nearest even**: NumPy's float16 conversion and ml_dtypes' bfloat16 conversion
  (``astype``), which the native kernel reproduces exactly.
* **Stochastic rounding** of a float32 ``x`` with 32 random bits ``r``: the neighbour toward zero,
  plus one unit in the last place when ``r < floor(frac * 2**32)`` (``frac`` = the exact position
  of ``|x|`` between its two neighbours), so the expected result is ``x``. NaN and infinity convert
  as with nearest rounding; float16 magnitudes >= 65536 give infinity.
* **Random bits**: element ``i`` of the tensor with key ``key`` at step ``step`` of a run seeded
  with ``seed`` (wrapping unsigned arithmetic; ``G = 0x9E3779B97F4A7C15``; ``mix64`` is
  SplitMix64's finalizer, ``fmix32`` MurmurHash3's)::

      k = mix64(mix64(mix64(seed + G) ^ step) ^ key)                       # uint64, per tensor
      h = fmix32((lo32(k) | 1) * lo32(i) + hi32(k) + 0x9E3779B9 * hi32(i))  # uint32, per element
      r_value = h & 0xffff0000;  r_buffer = (h << 16) mod 2**32

  ``i`` counts elements in the value's memory order: C order, or F order for an array that is
  F-contiguous and not C-contiguous (the order the native kernel walks), from ``index0`` (0 for a
  whole tensor; a piece of a larger tensor, such as a rank's slice of a sharded param, passes its
  offset in that tensor, so it rounds with the bits the whole tensor would).
"""

from __future__ import annotations

from typing import Any

import numpy as np

try:
    import ml_dtypes as _ml_dtypes
except ImportError:  # pragma: no cover - ml_dtypes is a dependency; float16 works without it
    _ml_dtypes = None

__all__ = [
    "BFLOAT16",
    "DEFAULT_SEED",
    "FLOAT16",
    "is_half",
    "mix64",
    "rounding_step_key",
    "rounding_tensor_key",
    "rounding_bits",
    "round_nearest",
    "round_stochastic",
    "name_key",
    "step_one",
]

#: numpy.dtype of ml_dtypes.bfloat16 (None without ml_dtypes) and of float16.
BFLOAT16: np.dtype | None = np.dtype(_ml_dtypes.bfloat16) if _ml_dtypes is not None else None
FLOAT16 = np.dtype(np.float16)

#: The stochastic-rounding seed of an optimizer built without ``seed=`` (``SGD``,
#: ``minimalsgd.torch.SGD``): one fixed, documented number -- the one torch seeds its default
#: generator with -- so that runs are reproducible by default and every process of a data-parallel
#: run derives the same seed without communicating. Pass ``seed=`` for another rounding stream
#: (``minimalsgd.distributed.shared_seed()`` draws one at random, the same on every rank).
DEFAULT_SEED = 67280421310721

_MASK64 = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB


def is_half(dtype: np.dtype) -> bool:
    """Whether ``dtype`` is float16 or bfloat16 (any byte order)."""
    d = np.dtype(dtype)
    if d.kind == "f" and d.itemsize == 2:
        return True
    return BFLOAT16 is not None and d.kind == BFLOAT16.kind and d.itemsize == 2 and d.name == BFLOAT16.name


def _mix64_int(z: int) -> int:
    z &= _MASK64
    z = ((z ^ (z >> 30)) * _M1) & _MASK64
    z = ((z ^ (z >> 27)) * _M2) & _MASK64
    return z ^ (z >> 31)


def mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer on a uint64 array (wrapping multiplication)."""
    z = z ^ (z >> np.uint64(30))
    z = z * np.uint64(_M1)
    z = z ^ (z >> np.uint64(27))
    z = z * np.uint64(_M2)
    return z ^ (z >> np.uint64(31))


def rounding_step_key(seed: int, step: int) -> int:
    """``mix64(mix64(seed + G) ^ step)``."""
    return _mix64_int(_mix64_int(seed + _GAMMA) ^ step)


def rounding_tensor_key(step_key: int, key: int) -> int:
    """``mix64(step_key ^ key)``."""
    return _mix64_int(step_key ^ key)


def fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's finalizer on a uint32 array (wrapping multiplication)."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def rounding_bits(k: int, n: int, index0: int = 0) -> np.ndarray:
    """The 32 random bits (uint32) of elements ``index0 .. index0 + n - 1`` of the tensor whose key
    is ``k``: the value rounds with the high 16, the momentum buffer with the low 16."""
    idx = np.arange(n, dtype=np.uint64) + np.uint64(index0)
    lo = (idx & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    hi = (idx >> np.uint64(32)).astype(np.uint32)
    mul = np.uint32((k & 0xFFFFFFFF) | 1)
    add = np.uint32(k >> 32) + np.uint32(0x9E3779B9) * hi
    return fmix32(mul * lo + add)


def name_key(name: Any) -> int:
    """A stable 64-bit key of a parameter name: FNV-1a over its UTF-8 (for ``SGD``'s tensors)."""
    h = 0xCBF29CE484222325
    for byte in str(name).encode("utf-8"):
        h = ((h ^ byte) * 0x100000001B3) & _MASK64
    return h


def round_nearest(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """float32 ``x`` to ``dtype`` (float16/bfloat16), round to nearest even."""
    with np.errstate(over="ignore", invalid="ignore"):
        return x.astype(np.dtype(dtype).newbyteorder("="))


def round_stochastic(x: np.ndarray, r: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """float32 ``x`` to ``dtype`` (float16/bfloat16) stochastically with uint32 random bits ``r``."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    r = r.astype(np.uint32, copy=False)
    a = u & np.uint32(0x7FFFFFFF)
    is_nan = a > np.uint32(0x7F800000)
    d = np.dtype(dtype)
    if d.kind == "f":  # float16
        sign = (u >> np.uint32(16)) & np.uint32(0x8000)
        nan = np.uint32(0x7C00) + ((a & np.uint32(0x7FFFFF)) >> np.uint32(13))
        nan = np.where(nan == np.uint32(0x7C00), np.uint32(0x7C01), nan)
        normal = ((a - np.uint32(112 << 23)) >> np.uint32(13)) + (r < ((a & np.uint32(0x1FFF)) << np.uint32(19)))
        e = np.clip(a >> np.uint32(23), 1, 112).astype(np.uint32)
        shift = np.minimum(np.uint32(126) - e, np.uint32(63)).astype(np.uint64)
        m = ((a & np.uint32(0x7FFFFF)) | np.where((a >> np.uint32(23)) != 0, np.uint32(0x800000), np.uint32(0)))
        scaled = (m.astype(np.uint64) << np.uint64(32)) >> shift
        sub = (scaled >> np.uint64(32)).astype(np.uint32) + (r < (scaled & np.uint64(0xFFFFFFFF)).astype(np.uint32))
        out = np.where(a < np.uint32(0x38800000), sub, normal).astype(np.uint32)
        out = np.where(a >= np.uint32(0x47800000), np.uint32(0x7C00), out)
        out = np.where(is_nan, nan, out)
        bits = (sign | out).astype(np.uint16)
        return bits.view(np.float16).reshape(np.shape(x))
    assert BFLOAT16 is not None
    up = (r < ((u & np.uint32(0xFFFF)) << np.uint32(16))).astype(np.uint32)
    out = (u >> np.uint32(16)) + up
    nan = ((u >> np.uint32(16)) & np.uint32(0x8000)) | np.uint32(0x7FC0)
    bits = np.where(is_nan, nan, out).astype(np.uint16)
    return bits.view(BFLOAT16).reshape(np.shape(x))


def walk_order(a: np.ndarray) -> str:
    """The order in which elements are counted: 'F' for F- but not C-contiguous arrays, else 'C'."""
    return "F" if a.flags.f_contiguous and not a.flags.c_contiguous else "C"


def _store(dst: np.ndarray, x: np.ndarray, r: np.ndarray | None, order: str) -> None:
    if dst.dtype.kind == "f" and dst.dtype.itemsize == 4:  # a float32 momentum buffer: unrounded
        np.copyto(dst, x)
        return
    if r is None:
        np.copyto(dst, round_nearest(x, dst.dtype))
    else:
        flat = np.ravel(x, order=order)
        np.copyto(dst, round_stochastic(flat, r, dst.dtype).reshape(x.shape, order=order))


def step_one(
    w: np.ndarray,
    grad: np.ndarray,
    buf: np.ndarray | None,
    first: bool,
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
    grad_scale: float,
    stochastic_rounding: bool = False,
    seed: int = 0,
    rounding_step: int = 0,
    key: int = 0,
    index0: int = 0,
) -> None:
    """The fused step on one 16-bit tensor: float32 temporaries in the kernel's order, each stored
    result rounded once (the buffer not at all when it is float32); element ``i`` rounds with the
    random bits of element ``index0 + i`` of the tensor whose key is ``key``."""
    f32 = np.float32
    wf = w.astype(f32)
    g = grad.astype(f32) * f32(-grad_scale if maximize else grad_scale)
    if weight_decay != 0:
        g = g + f32(weight_decay) * wf
    r_w = r_b = None
    order = walk_order(w)
    if stochastic_rounding:
        k = rounding_tensor_key(rounding_step_key(seed, rounding_step), key)
        bits = rounding_bits(k, w.size, index0)
        r_w = bits & np.uint32(0xFFFF0000)
        r_b = bits << np.uint32(16)
    if momentum != 0:
        assert buf is not None
        mu = f32(momentum)
        if first:
            v = g.copy()
        else:
            v = mu * buf.astype(f32) + f32(1.0 - dampening) * g
        _store(buf, v, r_b, order)
        g = g + mu * v if nesterov else v
    _store(w, wf - f32(lr) * g, r_w, order)
