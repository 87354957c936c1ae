"""The seed notebook's Nesterov form (Sutskever et al. 2013) against minimalsgd's nesterov=True.

Sutskever:  v <- mu v - lr grad L(theta + mu v);   theta <- theta + v
minimalsgd and torch step the look-ahead point phi = theta + mu v with the buffer b = -v / lr:
            b <- mu b + grad L(phi);               phi <- phi - lr (grad L(phi) + mu b)
With weight decay wd (torch's: g = grad L(phi) + wd phi), the Sutskever form is the same with the
L2 term's gradient taken at the look-ahead point too: grad L(x) + wd x at x = theta + mu v.
Both start from v = 0 (so phi_0 = theta_0 and b after the first step is the gradient, torch's
first step); the identity needs a constant lr (b = -v / lr).
"""

from __future__ import annotations

import numpy as np
import pytest

import minimalsgd
from minimalsgd import SGD

BACKENDS = ["numpy"] + (["native"] if minimalsgd.backend_info()["backend"] == "native" else [])


def _problem(seed=0, m=40, n=6):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, n))
    y = a @ rng.standard_normal(n) + 0.1 * rng.standard_normal(m)
    return a, y, rng.standard_normal(n)


def _grad(a, y, x):
    """Gradient of the least-squares loss 0.5 * |a x - y|^2 / m."""
    return a.T @ (a @ x - y) / len(y)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("wd", [0.0, 0.05])
def test_sutskever_form_and_minimalsgd_follow_one_trajectory(backend, wd):
    a, y, theta0 = _problem()
    lr, mu, steps = 0.05, 0.9, 60

    # The notebook's form, written here.
    theta, v = theta0.copy(), np.zeros_like(theta0)
    sutskever = []
    for _ in range(steps):
        look = theta + mu * v
        v = mu * v - lr * (_grad(a, y, look) + wd * look)
        theta = theta + v
        sutskever.append(theta + mu * v)  # phi after the step

    # minimalsgd, stepping phi.
    phi = theta0.copy()
    params = {"x": {"value": phi, "grad": None}}
    opt = SGD(params, lr=lr, momentum=mu, nesterov=True, weight_decay=wd, backend=backend)
    ours = []
    for _ in range(steps):
        params["x"]["grad"] = _grad(a, y, phi)
        opt.step()
        ours.append(phi.copy())
        # ... and the buffer is -v / lr
    np.testing.assert_allclose(opt.state["x"]["momentum_buffer"], -v / lr, rtol=1e-9, atol=1e-12)
    for t, (s, o) in enumerate(zip(sutskever, ours)):
        np.testing.assert_allclose(o, s, rtol=1e-11, atol=1e-13, err_msg=f"step {t}")
    # The run really trains (the comparison is not between two trajectories that stand still).
    loss = lambda x: 0.5 * float(np.sum((a @ x - y) ** 2)) / len(y)  # noqa: E731
    assert loss(ours[-1]) < 0.2 * loss(theta0)
