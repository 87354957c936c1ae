"""Pure-bfloat16 training with round-to-nearest vs stochastic rounding vs float32
===============================================================================

The same small MLP (64 -> 64 ReLU -> 10, softmax cross-entropy) trains on scikit-learn's digits
(shipped with scikit-learn: nothing is downloaded) three times with minimalsgd's ``SGD``:

* float32 weights (the reference);
* bfloat16 weights and grads, each update rounded to nearest (``stochastic_rounding=False``);
* bfloat16 weights and grads, each update rounded stochastically (``stochastic_rounding=True``).

Forward and backward passes compute in float32 from the stored weights; only the storage differs.
With a small learning rate most updates are below half a unit in the last place of a bfloat16
weight, so rounding to nearest drops them and training stalls; stochastic rounding keeps every
update in expectation and tracks float32. Run it with::

    python examples/bf16_rounding.py            # about 10 s; writes bf16_rounding.png
    python examples/bf16_rounding.py --quick    # a few seconds (the test suite runs this)
"""

from __future__ import annotations

import argparse
import sys

import ml_dtypes
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from minimalsgd import SGD

BF16 = np.dtype(ml_dtypes.bfloat16)
# The docstring's title (sphinx-gallery runs the script without its docstring).
DESCRIPTION = "Pure-bfloat16 training with round-to-nearest vs stochastic rounding vs float32."


def data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    return train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)


def init(seed: int = 0, hidden: int = 64) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "w1": (rng.standard_normal((64, hidden)) / 8.0).astype(np.float32),
        "b1": np.zeros(hidden, np.float32),
        "w2": (rng.standard_normal((hidden, 10)) / np.sqrt(hidden)).astype(np.float32),
        "b2": np.zeros(10, np.float32),
    }


def forward_backward(w: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
    """Mean cross-entropy and its gradients, in float32 from the (possibly bfloat16) weights."""
    f = {k: v.astype(np.float32) for k, v in w.items()}
    h_pre = x @ f["w1"] + f["b1"]
    h = np.maximum(h_pre, 0)
    logits = h @ f["w2"] + f["b2"]
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    n = x.shape[0]
    loss = float(-np.log(p[np.arange(n), y] + 1e-12).mean())
    d = p
    d[np.arange(n), y] -= 1
    d /= n
    grads = {"w2": h.T @ d, "b2": d.sum(axis=0)}
    dh = (d @ f["w2"].T) * (h_pre > 0)
    grads["w1"] = x.T @ dh
    grads["b1"] = dh.sum(axis=0)
    return loss, grads


def accuracy(w: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    f = {k: v.astype(np.float32) for k, v in w.items()}
    logits = np.maximum(x @ f["w1"] + f["b1"], 0) @ f["w2"] + f["b2"]
    return float((logits.argmax(axis=1) == y).mean())


def train(dtype: np.dtype, stochastic: bool, epochs: int, lr: float, batch: int = 32, seed: int = 0) -> tuple[list[float], float]:
    """Train one model; returns (train loss after each epoch, final test accuracy)."""
    x_tr, x_te, y_tr, y_te = data()
    params = {k: {"value": v.astype(dtype), "grad": None} for k, v in init(seed).items()}
    opt = SGD(params, lr=lr, momentum=0.0, stochastic_rounding=stochastic, seed=1234)
    rng = np.random.default_rng(seed)
    losses = []
    values = {k: p["value"] for k, p in params.items()}
    for _ in range(epochs):
        order = rng.permutation(len(x_tr))
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            _, grads = forward_backward(values, x_tr[idx], y_tr[idx])
            for k, g in grads.items():
                params[k]["grad"] = g.astype(dtype)
            opt.step()
        losses.append(forward_backward(values, x_tr, y_tr)[0])
    return losses, accuracy(values, x_te, y_te)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--quick", action="store_true", help="a few epochs (the test suite's run)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--lr", type=float, default=0.005)
    parser.add_argument("--plot", default="bf16_rounding.png", help="PNG of the three loss curves ('' for none)")
    args = parser.parse_args(argv)
    epochs = args.epochs or (6 if args.quick else 60)

    runs = {
        "float32": train(np.dtype(np.float32), False, epochs, args.lr),
        "bfloat16, round to nearest": train(BF16, False, epochs, args.lr),
        "bfloat16, stochastic rounding": train(BF16, True, epochs, args.lr),
    }
    print(f"digits, MLP 64-64-10, SGD lr={args.lr}, batch 32, {epochs} epochs")
    print(f"{'run':<32} {'final train loss':>16} {'test accuracy':>14}")
    for name, (losses, acc) in runs.items():
        print(f"{name:<32} {losses[-1]:>16.4f} {acc:>14.3f}")

    if args.plot:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("matplotlib is not installed: no plot", file=sys.stderr)
            return 0
        fig, ax = plt.subplots(figsize=(7.5, 4.5))
        styles = {"float32": dict(color="black", linewidth=2),
                  "bfloat16, round to nearest": dict(color="tab:red", linestyle="--"),
                  "bfloat16, stochastic rounding": dict(color="tab:blue")}
        for name, (losses, acc) in runs.items():
            ax.plot(range(1, len(losses) + 1), losses, label=f"{name} (test acc {acc:.3f})", **styles[name])
        ax.set_xlabel("epoch")
        ax.set_ylabel("training loss (cross-entropy)")
        ax.set_yscale("log")
        ax.set_title(f"digits MLP, SGD lr={args.lr}: bfloat16 storage, nearest vs stochastic rounding")
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
        print(f"plot written to {args.plot}")
    return 0


if __name__ == "__main__":
    # Not sys.exit(main()): main() returns 0, and SystemExit would also end a docs build that
    # runs this script (sphinx-gallery).
    main()
