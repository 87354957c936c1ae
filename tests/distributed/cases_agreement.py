"""The agreement: bad input, and params or settings that differ between ranks, raise the same
error on every rank before anything is written; the sharded classes take every argument of the
optimizer they wrap."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from mpi_common import (HALF_CFG, Skip, _expect_same_error, _half_dtypes, _train, assert_bitwise, case, make_params,
                        set_grads, snapshot)


@case
def settings_that_differ_between_ranks_raise_everywhere(comm: Any) -> None:
    """The agreement covers every global setting: ranks given different seeds (or stochastic
    rounding on some ranks only) raise the same ValueError on every rank -- in ShardedSGD.step,
    ShardedSGD.state_dict and allreduce_grads(optimizer=) -- before anything is written."""
    import minimalsgd
    from minimalsgd.distributed import ShardedSGD, allreduce_grads

    if comm.size == 1:
        raise Skip("needs two ranks or more")
    last = comm.size - 1
    dtype = _half_dtypes()[1]
    for cfg, contains in ((dict(seed=5), "have different seed: 5 on rank"),
                          (dict(stochastic_rounding=False), "have different stochastic_rounding"),
                          (dict(state_dtype="float32"), "have different state_dtype"),
                          (dict(clip_grad_norm=2.0), "have different clip_grad_norm")):
        kw = dict(HALF_CFG, **(cfg if comm.rank == last else {}))
        a, b = make_params(dtype), make_params(dtype)
        set_grads(a, comm.rank, 0)
        set_grads(b, comm.rank, 0)
        before = snapshot(a), {k: p["grad"].copy() for k, p in b.items()}
        sharded = ShardedSGD(a, comm, **kw)
        _expect_same_error(comm, ValueError, sharded.step, contains)
        _expect_same_error(comm, ValueError, sharded.state_dict, contains)
        plain = minimalsgd.SGD(b, **kw)
        _expect_same_error(comm, ValueError, lambda: allreduce_grads(b, comm, optimizer=plain), contains)
        assert_bitwise(snapshot(a), before[0], "values written")
        assert_bitwise({k: p["grad"] for k, p in b.items()}, before[1], "grads written")
    seed_msg = _expect_same_error(comm, ValueError, ShardedSGD(make_params(), comm, seed=comm.rank).step, "seed")
    assert "shared_seed()" in seed_msg, seed_msg
    try:
        allreduce_grads(make_params(), comm, optimizer=object())
    except TypeError as err:
        assert "optimizer must be None or a minimalsgd optimizer" in str(err), err
    else:
        raise AssertionError("optimizer=object() accepted")


@case
def sharded_takes_every_argument_of_its_optimizer(comm: Any) -> None:
    """ShardedSGD and ShardedOptimizer forward their arguments: each argument of SGD's (and Adam's)
    signature, given by name, reaches the plain optimizer; SGD's positional order works too.
    An argument that SGD gains later is covered by the introspection (it fails here if refused)."""
    import inspect

    import minimalsgd
    from minimalsgd.distributed import ShardedOptimizer, ShardedSGD

    samples = dict(lr=0.25, momentum=0.5, nesterov=True, weight_decay=0.125, clip_grad_norm=3.0, dampening=0.0,
                   maximize=True, skip_nonfinite=True, backend="numpy", stochastic_rounding=True, seed=77,
                   state_dtype="float32", betas=(0.8, 0.9), eps=1e-6, amsgrad=True)
    for cls, make in ((minimalsgd.SGD, lambda p, **kw: ShardedSGD(p, comm, **kw)),
                      (minimalsgd.SGD, lambda p, **kw: ShardedOptimizer(minimalsgd.SGD, p, comm, **kw)),
                      (minimalsgd.Adam, lambda p, **kw: ShardedOptimizer(minimalsgd.Adam, p, comm, **kw))):
        params = [(n, p) for n, p in inspect.signature(cls).parameters.items()
                  if n != "params" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        assert params, cls
        everything = {}
        base = {"momentum": 0.5} if cls is minimalsgd.SGD else {}  # (Nesterov needs momentum)
        for name, p in params:
            value = samples.get(name, p.default)
            assert value is not inspect.Parameter.empty, f"{cls.__name__}.{name} has no default and no sample"
            everything[name] = value
            opt = make(make_params(), **{**base, name: value})  # a TypeError here: the sharded class refuses it
            got = opt.param_groups[0][name] if name in cls.hyperparameters else getattr(opt, name)
            assert got == value or (name == "state_dtype" and str(np.dtype(got)) == value), (cls.__name__, name, got)
        opt = make(make_params(), **everything)
        plain = cls(make_params(), **everything)
        assert repr(opt._opt) == repr(plain), (repr(opt._opt), repr(plain))
    positional = (0.25, 0.5, True, 0.125, 3.0)
    opt = ShardedSGD(make_params(), comm, *positional)
    plain = minimalsgd.SGD(make_params(), *positional)
    assert repr(opt._opt) == repr(plain)
    sig = inspect.signature(ShardedSGD)
    assert list(sig.parameters)[:2] == ["params", "comm"] and "pack" in sig.parameters
    assert set(inspect.signature(minimalsgd.SGD).parameters) <= set(sig.parameters)


# ---------------------------------------------------------------------------------------------
# Bad input: the same error on every rank, nothing written


@case
def bad_input_same_error_everywhere(comm: Any) -> None:
    """Names, shapes, dtypes, grad presence, hyperparameters or starting values that differ between
    ranks, and bad arrays on one rank: the same ValueError/TypeError on every rank, nothing written."""
    from minimalsgd.distributed import ShardedSGD, allreduce_grads

    last = comm.size - 1

    def attempt(mutate: Callable[[dict], None], kind: type, contains: str, cfg: dict | None = None, use_allreduce: bool = False) -> str:
        params = make_params()
        set_grads(params, comm.rank, 0)
        if comm.rank == last and comm.size > 1:
            mutate(params)
        elif comm.size == 1:
            mutate(params)
        before = {k: (None if p.get("value") is None else np.array(p["value"], copy=True),
                      None if not isinstance(p.get("grad"), np.ndarray) else p["grad"].copy()) for k, p in params.items()}
        kw = dict(lr=0.1, momentum=0.9)
        if cfg and comm.rank == last:
            kw.update(cfg)
        if use_allreduce:
            msg = _expect_same_error(comm, kind, lambda: allreduce_grads(params, comm), contains)
        else:
            opt = ShardedSGD(params, comm, **kw)
            msg = _expect_same_error(comm, kind, opt.step, contains)
            assert opt.state_bytes == 0 and opt.skipped_steps == 0
        for k, (v, g) in before.items():
            if k in params and isinstance(params[k].get("value"), np.ndarray) and v is not None and params[k]["value"].shape == v.shape:
                assert params[k]["value"].tobytes() == v.tobytes(), f"{k} value written"
            if k in params and isinstance(params[k].get("grad"), np.ndarray) and g is not None and params[k]["grad"].shape == g.shape:
                assert params[k]["grad"].tobytes() == g.tobytes(), f"{k} grad written"
        return msg

    def extra(p: dict) -> None:
        p["extra"] = {"value": np.zeros(3, np.float32), "grad": np.zeros(3, np.float32)}

    def reshape(p: dict) -> None:
        p["w1"] = {"value": np.zeros((5, 7), np.float32), "grad": np.zeros((5, 7), np.float32)}

    def retype(p: dict) -> None:
        p["b1"] = {"value": np.zeros(4, np.float64), "grad": np.zeros(4, np.float64)}

    def no_grad(p: dict) -> None:
        p["b1"]["grad"] = None

    def readonly(p: dict) -> None:
        p["w2"]["value"].flags.writeable = False

    def bad_grad_shape(p: dict) -> None:
        p["w2"]["grad"] = np.zeros((4, 3), np.float32)

    def ints(p: dict) -> None:
        p["b1"] = {"value": np.zeros(4, np.int32), "grad": np.zeros(4, np.int32)}

    def nudge(p: dict) -> None:
        p["w1"]["value"][0, 0] += 1

    if comm.size > 1:
        attempt(extra, ValueError, "only on rank 0: [], only on rank")
        attempt(extra, ValueError, "only on rank 0: [], only on rank", use_allreduce=True)
        attempt(reshape, ValueError, "disagree on params['w1']: shape (5, 7)")
        attempt(retype, ValueError, "dtype float64")
        attempt(retype, ValueError, "dtype float64", use_allreduce=True)
        attempt(no_grad, ValueError, "(no grad)")
        attempt(lambda p: None, ValueError, "have different lr in param group 0: 0.2 on rank", cfg=dict(lr=0.2))
        attempt(nudge, ValueError, "hold different values")
    attempt(readonly, ValueError, f"rank {last if comm.size > 1 else 0}: params['w2']: value is read-only")
    attempt(bad_grad_shape, ValueError, "grad shape (4, 3) does not match value shape (3, 4)")
    attempt(ints, TypeError, "dtype int32 is not supported over MPI")
    attempt(ints, TypeError, "dtype int32 is not supported over MPI", use_allreduce=True)

    # After an error, the same optimizer works once the input is fixed.
    params = make_params()
    opt = ShardedSGD(params, comm, lr=0.1)
    set_grads(params, comm.rank, 0)
    params["w2"]["grad"] = np.zeros((4, 3), np.float32)
    _expect_same_error(comm, ValueError, opt.step, "grad shape")
    set_grads(params, comm.rank, 0)
    assert opt.step() is True

    # Params whose structure changes after the first step.
    params["late"] = {"value": np.zeros(2, np.float32), "grad": np.zeros(2, np.float32)}
    _expect_same_error(comm, ValueError, opt.step, "names changed")

    # Not a communicator: TypeError before anything collective.
    for bad in (object(), "COMM_WORLD", 0):
        try:
            ShardedSGD(make_params(), bad)
        except TypeError as err:
            assert "comm must be an mpi4py communicator" in str(err)
        else:
            raise AssertionError("no TypeError")
        try:
            allreduce_grads(make_params(), bad)
        except TypeError:
            pass
        else:
            raise AssertionError("no TypeError")

    from mpi4py import MPI

    try:
        ShardedSGD(make_params(), MPI.COMM_NULL)
    except ValueError as err:
        assert "COMM_NULL" in str(err)
    else:
        raise AssertionError("COMM_NULL accepted")
    opt = ShardedSGD(make_params(), comm)
    for bad_root in (-1, comm.size, True, 0.0):
        try:
            opt.state_dict(root=bad_root)
        except ValueError as err:
            assert "root must be None or a rank" in str(err)
        else:
            raise AssertionError(f"root={bad_root!r} accepted")
    try:
        opt.state
    except AttributeError as err:
        assert "state_dict() gathers the full state" in str(err)
    else:
        raise AssertionError("opt.state did not explain itself")

    # A state dict that does not fit: same error, state unchanged.
    params = make_params()
    opt = ShardedSGD(params, comm, lr=0.1, momentum=0.9)
    _train(comm, params, opt, 1)
    good = opt.state_dict()
    bad_sd = dict(good)
    if comm.rank == last:
        bad_sd["state/w1/momentum_buffer"] = np.zeros((2, 2), np.float32)
    _expect_same_error(comm, ValueError, lambda: opt.load_state_dict(bad_sd), "momentum buffer shape (2, 2)")
    after = opt.state_dict()
    assert all(np.array_equal(after[k], good[k], equal_nan=isinstance(good[k], float)) for k in good)


@case
def memory_orders_that_differ_between_ranks_raise(comm: Any) -> None:
    """A param held in F order on one rank and in C order on another would be laid out (and, in
    16-bit, rounded) differently: the same ValueError on every rank, in ShardedSGD.step and in
    allreduce_grads, before anything is written."""
    from minimalsgd.distributed import ShardedSGD, allreduce_grads

    if comm.size == 1:
        raise Skip("needs two ranks or more")
    for use_allreduce in (False, True):
        params = make_params()
        if comm.rank == comm.size - 1:
            params["w1"]["value"] = np.asfortranarray(params["w1"]["value"])
        set_grads(params, comm.rank, 0)
        before = snapshot(params), {k: p["grad"].copy() for k, p in params.items()}
        if use_allreduce:
            msg = _expect_same_error(comm, ValueError, lambda: allreduce_grads(params, comm), "(F order)")
        else:
            msg = _expect_same_error(comm, ValueError, ShardedSGD(params, comm, lr=0.1).step, "(F order)")
        assert "disagree on params[" in msg and "w1" in msg, msg
        assert_bitwise(snapshot(params), before[0], "values written")
        assert_bitwise({k: p["grad"] for k, p in params.items()}, before[1], "grads written")


@case
def adam_settings_that_differ_are_named_by_their_fields(comm: Any) -> None:
    """The agreement compares each group's options by their field names: Adam's betas are
    beta1 and beta2 (not the group keys zipped with the options' values, which named them wrong)."""
    import minimalsgd
    from minimalsgd.distributed import ShardedOptimizer, allreduce_grads

    if comm.size == 1:
        raise Skip("needs two ranks or more")
    last = comm.size - 1
    mine = comm.rank == last
    for kw, contains in ((dict(betas=(0.8, 0.999) if mine else (0.9, 0.999)),
                          f"have different beta1 in param group 0: 0.8 on rank {last}, 0.9 on rank 0"),
                         (dict(betas=(0.9, 0.99) if mine else (0.9, 0.999)),
                          f"have different beta2 in param group 0: 0.99 on rank {last}, 0.999 on rank 0"),
                         (dict(eps=1e-6 if mine else 1e-8), "have different eps in param group 0: 1e-06 on rank")):
        a, b = make_params(), make_params()
        set_grads(a, comm.rank, 0)
        set_grads(b, comm.rank, 0)
        sharded = ShardedOptimizer(minimalsgd.Adam, a, comm, lr=1e-3, **kw)
        _expect_same_error(comm, ValueError, sharded.step, contains)
        plain = minimalsgd.Adam(b, lr=1e-3, **kw)
        _expect_same_error(comm, ValueError, lambda: allreduce_grads(b, comm, optimizer=plain), contains)
