"""The seed notebook: five optimizers on a NumPy MLP
==================================================

The seed notebook as a runnable comparison: vanilla SGD, momentum, Nesterov, Adam and AdamW
training one small multilayer perceptron, written in plain NumPy, on scikit-learn's digits. Run it with::

    python examples/notebook_comparison.py            # full run, writes notebook_comparison.png
    python examples/notebook_comparison.py --quick    # a few seconds (what CI runs)

What it shows, in the notebook's order:

1. Weight initialization (Kaiming/He): with weights drawn with variance 2 / fan_in, the variance
   of ReLU activations stays steady from layer to layer; with a naive small constant scale it
   collapses. A short check prints both.
2. The same network, the same initial weights and the same minibatches, trained with each
   optimizer (``minimalsgd.SGD`` / ``Adam`` / ``AdamW``): the loss curves go to a PNG.
3. The optimizer's share of each training step (forward + backward + optimizer step), minimalsgd
   against the classic NumPy implementations of the same optimizers (the notebook's loops).

The forward and backward passes are written by hand: two hidden ReLU layers, softmax
cross-entropy. Only NumPy, scikit-learn (the dataset, bundled with the package: nothing is
downloaded) and matplotlib (Agg backend) are needed.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

import minimalsgd

# --------------------------------------------------------------------------------------------
# Data and model


def load_data(dtype: type = np.float32) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits, standardized, split 80/20."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.data.astype(np.float64)
    x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-8)
    y = digits.target.astype(np.int64)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    x, y = x[order].astype(dtype), y[order]
    cut = int(0.8 * len(x))
    return x[:cut], y[:cut], x[cut:], y[cut:]


def he_init(sizes: list[int], rng: np.random.Generator, dtype: type = np.float32) -> dict[str, dict[str, np.ndarray]]:
    """Kaiming/He initialization for ReLU layers: W ~ N(0, 2 / fan_in), b = 0."""
    params: dict[str, dict[str, np.ndarray]] = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)
        params[f"W{i}"] = {"value": w.astype(dtype), "grad": np.zeros((fan_in, fan_out), dtype)}
        params[f"b{i}"] = {"value": np.zeros(fan_out, dtype), "grad": np.zeros(fan_out, dtype)}
    return params


def forward_backward(params: dict[str, dict[str, np.ndarray]], x: np.ndarray, y: np.ndarray) -> float:
    """Mean softmax cross-entropy of the MLP on (x, y); writes every param's grad in place."""
    n_layers = len(params) // 2
    acts = [x]
    h = x
    for i in range(n_layers):
        z = h @ params[f"W{i}"]["value"] + params[f"b{i}"]["value"]
        h = np.maximum(z, 0) if i < n_layers - 1 else z
        acts.append(h)
    logits = acts[-1]
    logits = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    m = len(x)
    loss = float(-np.log(p[np.arange(m), y] + 1e-12).mean())
    d = p
    d[np.arange(m), y] -= 1
    d /= m
    for i in reversed(range(n_layers)):
        np.matmul(acts[i].T, d, out=params[f"W{i}"]["grad"])
        np.sum(d, axis=0, out=params[f"b{i}"]["grad"])
        if i > 0:
            d = (d @ params[f"W{i}"]["value"].T) * (acts[i] > 0)
    return loss


def accuracy(params: dict[str, dict[str, np.ndarray]], x: np.ndarray, y: np.ndarray) -> float:
    n_layers = len(params) // 2
    h = x
    for i in range(n_layers):
        h = h @ params[f"W{i}"]["value"] + params[f"b{i}"]["value"]
        if i < n_layers - 1:
            h = np.maximum(h, 0)
    return float((h.argmax(axis=1) == y).mean())


def variance_check(depth: int = 10, width: int = 256, n: int = 1000, seed: int = 0) -> dict[str, list[float]]:
    """The variance of ReLU activations through ``depth`` layers, He init against a naive scale."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, width))
    out = {}
    for name, std in (("He: sqrt(2/fan_in)", np.sqrt(2.0 / width)), ("naive: 0.01", 0.01)):
        h = x
        variances = []
        for _ in range(depth):
            h = np.maximum(h @ (rng.standard_normal((width, width)) * std), 0)
            variances.append(float(h.var()))
        out[name] = variances
    return out


# --------------------------------------------------------------------------------------------
# The classic NumPy optimizers (the notebook's loops), for the timing comparison


class ClassicSGD:
    """The textbook param-dict SGD: g += wd*w; v = mu*v + g; w -= lr*(g + mu*v if nesterov else v)."""

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0):  # type: ignore[no-untyped-def]
        self.params, self.lr, self.mu, self.nesterov, self.wd = params, lr, momentum, nesterov, weight_decay
        self.v = {k: np.zeros_like(p["value"]) for k, p in params.items()}

    def step(self) -> None:
        for k, p in self.params.items():
            g = p["grad"] + self.wd * p["value"] if self.wd else p["grad"]
            if self.mu:
                self.v[k] = self.mu * self.v[k] + g
                g = g + self.mu * self.v[k] if self.nesterov else self.v[k]
            p["value"] -= self.lr * g


class ClassicAdam:
    """The textbook param-dict Adam/AdamW: m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
    w -= lr * m_hat / (sqrt(v_hat) + eps); weight decay in g (Adam) or w *= 1 - lr*wd (AdamW)."""

    def __init__(self, params, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False):  # type: ignore[no-untyped-def]
        self.params, self.lr, self.betas, self.eps, self.wd, self.decoupled = params, lr, betas, eps, weight_decay, decoupled
        self.m = {k: np.zeros_like(p["value"]) for k, p in params.items()}
        self.v = {k: np.zeros_like(p["value"]) for k, p in params.items()}
        self.t = 0

    def step(self) -> None:
        self.t += 1
        b1, b2 = self.betas
        for k, p in self.params.items():
            g = p["grad"]
            if self.wd and self.decoupled:
                p["value"] *= 1 - self.lr * self.wd
            elif self.wd:
                g = g + self.wd * p["value"]
            self.m[k] = b1 * self.m[k] + (1 - b1) * g
            self.v[k] = b2 * self.v[k] + (1 - b2) * g * g
            m_hat = self.m[k] / (1 - b1**self.t)
            v_hat = self.v[k] / (1 - b2**self.t)
            p["value"] -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


# name -> (minimalsgd optimizer, classic optimizer), each built on a params dict
OPTIMIZERS: dict[str, tuple[Callable, Callable]] = {
    "SGD": (lambda p: minimalsgd.SGD(p, lr=0.1), lambda p: ClassicSGD(p, lr=0.1)),
    "momentum": (lambda p: minimalsgd.SGD(p, lr=0.05, momentum=0.9),
                 lambda p: ClassicSGD(p, lr=0.05, momentum=0.9)),
    "Nesterov": (lambda p: minimalsgd.SGD(p, lr=0.05, momentum=0.9, nesterov=True),
                 lambda p: ClassicSGD(p, lr=0.05, momentum=0.9, nesterov=True)),
    "Adam": (lambda p: minimalsgd.Adam(p, lr=2e-3), lambda p: ClassicAdam(p, lr=2e-3)),
    "AdamW": (lambda p: minimalsgd.AdamW(p, lr=2e-3, weight_decay=1e-2),
              lambda p: ClassicAdam(p, lr=2e-3, weight_decay=1e-2, decoupled=True)),
}


def copy_params(params: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, np.ndarray]]:
    return {k: {"value": p["value"].copy(), "grad": p["grad"].copy()} for k, p in params.items()}


def train(name: str, init: dict, data: tuple, epochs: int, batch: int, seed: int = 1) -> dict:
    """Train a copy of ``init`` with the minimalsgd optimizer ``name``; time it against the
    classic optimizer stepping a twin copy on the same grads."""
    x_train, y_train, x_test, y_test = data
    params = copy_params(init)
    twin = copy_params(init)
    opt = OPTIMIZERS[name][0](params)
    classic = OPTIMIZERS[name][1](twin)
    rng = np.random.default_rng(seed)
    losses, t_fb, t_opt, t_classic = [], 0.0, 0.0, 0.0
    clock = time.perf_counter
    for _ in range(epochs):
        order = rng.permutation(len(x_train))
        for start in range(0, len(order) - batch + 1, batch):
            idx = order[start : start + batch]
            t0 = clock()
            loss = forward_backward(params, x_train[idx], y_train[idx])
            t1 = clock()
            opt.step()
            t2 = clock()
            for k in twin:  # the classic optimizer steps its twin on the same grads
                twin[k]["grad"] = params[k]["grad"]
            t3 = clock()
            classic.step()
            t4 = clock()
            t_fb += t1 - t0
            t_opt += t2 - t1
            t_classic += t4 - t3
            losses.append(loss)
    steps = len(losses)
    return {
        "losses": losses,
        "test_accuracy": accuracy(params, x_test, y_test),
        "fb_us": 1e6 * t_fb / steps,
        "opt_us": 1e6 * t_opt / steps,
        "classic_us": 1e6 * t_classic / steps,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description="The seed notebook as a runnable comparison of five optimizers.")
    ap.add_argument("--quick", action="store_true", help="a short run (CI): 2 epochs, a smaller net")
    ap.add_argument("--out", default="notebook_comparison.png", help="where to write the loss curves")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1,
                    help="threads for NumPy's BLAS and minimalsgd (default 1: a network this small only pays "
                         "for waking threads, the matmuls and the optimizer alike)")
    args = ap.parse_args(argv)
    try:  # limits OpenBLAS/MKL and OpenMP (minimalsgd's kernels) alike
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=args.threads)
    except ImportError:
        minimalsgd.set_num_threads(args.threads)
    epochs = args.epochs or (2 if args.quick else 30)
    sizes = [64, 64, 32, 10] if args.quick else [64, 256, 128, 10]

    print("Activation variance through 10 ReLU layers of width 256 (input variance 1):")
    for name, variances in variance_check(depth=6 if args.quick else 10).items():
        print(f"  {name:20s} " + " ".join(f"{v:.2g}" for v in variances))

    data = load_data()
    init = he_init(sizes, np.random.default_rng(42))
    n_params = sum(p["value"].size for p in init.values())
    print(f"\nMLP {sizes} ({n_params} params), {len(data[0])} training digits, batch 64, {epochs} epochs, "
          f"{args.threads} thread(s)")
    results = {name: train(name, init, data, epochs, batch=64) for name in OPTIMIZERS}

    print(f"\n{'optimizer':10s} {'final loss':>10s} {'test acc':>9s} {'fwd+bwd':>9s} "
          f"{'minimalsgd step':>20s} {'classic NumPy step':>22s}")
    for name, r in results.items():
        total = r["fb_us"] + r["opt_us"]
        total_c = r["fb_us"] + r["classic_us"]
        print(f"{name:10s} {np.mean(r['losses'][-10:]):10.4f} {r['test_accuracy']:9.3f} {r['fb_us']:7.0f}us "
              f"{r['opt_us']:8.0f}us ({100 * r['opt_us'] / total:4.1f}%) "
              f"{r['classic_us']:8.0f}us ({100 * r['classic_us'] / total_c:4.1f}%)")
    print("(per training step; the optimizer's share of fwd+bwd+step in parentheses)")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, r in results.items():
        loss = np.asarray(r["losses"])
        k = max(1, len(loss) // 50)
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
        ax.plot(np.arange(len(smooth)) + k - 1, smooth, label=f"{name} (test acc {r['test_accuracy']:.3f})")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("cross-entropy (moving average)")
    ax.set_title(f"MLP {sizes} on digits, He init, minimalsgd optimizers")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"\nloss curves: {args.out}")
    return results


if __name__ == "__main__":
    main()
