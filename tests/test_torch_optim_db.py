"""torch's own idea of SGD, from its test database, run against minimalsgd.torch.SGD.

``torch.testing._internal.common_optimizers.optim_db`` (installed with torch) holds, per optimizer,
the configurations torch's optimizer tests use (``optim_inputs_func``, with the ``foreach`` /
``fused`` / ``differentiable`` variants from ``_get_optim_inputs_including_global_cliquey_kwargs``),
its LR-scheduler combinations, its sparse-gradient setting and the inputs that must raise
(``optim_error_inputs_func``). Every CPU one for SGD runs here against ``torch.optim.SGD``: the same
errors (type and message), and the same params, momentum buffers and learning rates after each step,
to float rounding where the native kernel steps (rtol/atol 2e-6 float32, 1e-13 float64; torch fuses
multiply-adds) and bit for bit where torch's code steps (complex, sparse, differentiable).

CPU only: the database's device-specific entries (CUDA, MPS, ...) need a device this CI does not
have. torch's helpers import ``expecttest`` (in the ``test`` extra); without it or torch, skipped.
"""

from __future__ import annotations

import copy
import re
import warnings

import pytest

torch = pytest.importorskip("torch")
co = pytest.importorskip(
    "torch.testing._internal.common_optimizers",
    reason="torch's test database needs torch's test helpers and expecttest (pip install '.[test]')",
)

from minimalsgd.torch import SGD  # noqa: E402

INFO = next(i for i in co.optim_db if i.optim_cls is torch.optim.SGD)
DEVICE = "cpu"
TOL = {
    torch.float32: dict(rtol=2e-6, atol=2e-6),
    torch.float64: dict(rtol=1e-13, atol=1e-13),
    torch.complex64: dict(rtol=2e-6, atol=2e-6),
}


def _configs():
    """torch's configs with each global flag's variant; torch leaves out foreach on CPU (not a
    foreach device for its defaults), but torch.optim.SGD accepts it there: added here."""
    out = []
    for oi in co._get_optim_inputs_including_global_cliquey_kwargs(DEVICE, torch.float32, INFO):
        out.append(oi)
        if not any(oi.kwargs.get(f) for f in ("fused", "differentiable")):
            kw = dict(copy.deepcopy(oi.kwargs), foreach=True)
            out.append(co.OptimizerInput(params=None, kwargs=kw, desc=f"{oi.desc} & foreach"))
    return out


CONFIGS = _configs()


def _params(dtype, differentiable, seed=0):
    """A weight, a bias and a scalar, in two param groups (the second with its own lr); for
    differentiable=True non-leaf tensors, as torch's tests step them (autograd sees through)."""
    g = torch.Generator().manual_seed(seed)
    leaves = [torch.randn(s, generator=g, dtype=dtype) for s in [(10, 5), (10,), ()]]
    if differentiable:
        roots = [t.requires_grad_() for t in leaves]
        ps = [r.clone() for r in roots]
    else:
        ps = [torch.nn.Parameter(t) for t in leaves]
    return ps


def _set_grads(ps, gen):
    for p in ps:
        p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)


def _run(cls, oi, dtype, steps=5):
    diff = bool(oi.kwargs.get("differentiable"))
    ps = _params(dtype, diff)
    opt = cls([{"params": ps[:2]}, {"params": ps[2:], "lr": 0.03}], **oi.kwargs)
    gen = torch.Generator().manual_seed(1)
    trace = []
    for _ in range(steps):
        _set_grads(ps, gen)
        opt.step()
        trace.append(
            (
                [p.detach().clone() for p in ps],
                [opt.state[p]["momentum_buffer"].detach().clone() for p in ps if "momentum_buffer" in opt.state[p]],
            )
        )
    return trace


def _outcome(fn):
    try:
        return ("ok", fn())
    except Exception as e:  # noqa: BLE001 - compared with what torch raises
        return ("error", (type(e), str(e)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.complex64], ids=str)
@pytest.mark.parametrize("oi", CONFIGS, ids=lambda oi: oi.desc.replace(" ", "_"))
def test_optim_db_inputs(oi, dtype):
    ref = _outcome(lambda: _run(torch.optim.SGD, oi, dtype))
    ours = _outcome(lambda: _run(SGD, oi, dtype))
    if ref[0] == "error":  # e.g. fused=True with complex params: torch's error, type and message
        assert ours == ref
        return
    assert ours[0] == "ok", ours
    for (v_ref, b_ref), (v_ours, b_ours) in zip(ref[1], ours[1]):
        assert len(b_ref) == len(b_ours)
        for a, b in zip(v_ref + b_ref, v_ours + b_ours):
            if dtype.is_complex or oi.kwargs.get("differentiable"):
                assert torch.equal(a, b)  # torch's own code stepped it
            else:
                torch.testing.assert_close(b, a, **TOL[dtype])


@pytest.mark.parametrize("make_scheds", INFO.scheduler_inputs, ids=lambda s: f"{len(s)}-schedulers")
def test_optim_db_scheduler_inputs(make_scheds):
    """torch's LR-scheduler combinations for SGD, 12 steps (ReduceLROnPlateau reads the loss)."""
    results = []
    for cls in (torch.optim.SGD, SGD):
        torch.manual_seed(0)
        model = torch.nn.Linear(5, 3, dtype=torch.float64)
        opt = cls(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)
        scheds = [make(opt) for make in make_scheds]
        gen = torch.Generator().manual_seed(2)
        lrs = []
        for _ in range(12):
            x = torch.randn(8, 5, generator=gen, dtype=torch.float64)
            opt.zero_grad()
            loss = model(x).pow(2).sum()
            loss.backward()
            opt.step()
            for s in scheds:
                if isinstance(s, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    s.step(loss.item())
                else:
                    s.step()
            lrs.append(opt.param_groups[0]["lr"])
        results.append(([p.detach().clone() for p in model.parameters()], lrs))
    (p_ref, lr_ref), (p_ours, lr_ours) = results
    assert lr_ours == lr_ref
    for a, b in zip(p_ref, p_ours):
        torch.testing.assert_close(b, a, **TOL[torch.float64])


@pytest.mark.parametrize("fused", [False, True])
def test_optim_db_sparse_setting(fused):
    """torch's sparse-gradient hyperparameters and scheduler for SGD (supports_sparse); with
    fused=True both raise torch's error."""
    kwargs, make_scheds = INFO.metadata_for_sparse
    assert INFO.supports_sparse
    outcomes = []
    for cls in (torch.optim.SGD, SGD):
        torch.manual_seed(0)
        emb = torch.nn.Embedding(20, 4, sparse=True, dtype=torch.float64)

        def run():
            opt = cls(emb.parameters(), fused=fused, **kwargs)
            scheds = [make(opt) for make in make_scheds]
            for step in range(10):
                opt.zero_grad()
                emb(torch.tensor([step % 20, (3 * step) % 20, 7])).pow(2).sum().backward()
                opt.step()
                for s in scheds:
                    s.step()
            return emb.weight.detach().clone()

        outcomes.append(_outcome(run))
    assert outcomes[0][0] == outcomes[1][0]
    if outcomes[0][0] == "ok":
        assert torch.equal(outcomes[0][1], outcomes[1][1])  # torch's code steps sparse grads
    else:
        assert outcomes[0] == outcomes[1]
    assert (outcomes[0][0] == "error") == fused


def _error_inputs():
    out = []
    for dtype in (torch.float32, torch.float64):
        for e in INFO.optim_error_inputs_func(DEVICE, dtype):
            out.append(pytest.param(e, dtype, id=f"{e.optimizer_error_input.desc}-{dtype}".replace(" ", "_")))
    return out


@pytest.mark.parametrize("err,dtype", _error_inputs())
def test_optim_db_error_inputs(err, dtype):
    oi = err.optimizer_error_input
    params = oi.params if oi.params is not None else [torch.nn.Parameter(torch.randn(2, 2, dtype=dtype))]
    seen = []
    for cls in (torch.optim.SGD, SGD):
        def act():
            opt = cls(params, **oi.kwargs)
            if err.error_on == co.OptimizerErrorEnum.STEP_ERROR:
                for p in opt.param_groups[0]["params"]:
                    p.grad = torch.ones_like(p)
                opt.step()

        if issubclass(err.error_type, Warning):
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                act()
            msgs = [str(x.message) for x in w if issubclass(x.category, err.error_type)]
            assert any(re.search(err.error_regex, m) for m in msgs), msgs
            seen.append(msgs)
        else:
            with pytest.raises(err.error_type, match=err.error_regex) as info:
                act()
            seen.append(str(info.value))
    assert seen[0] == seen[1]
