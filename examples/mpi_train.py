"""Data parallel over MPI with sharded optimizer state (ZeRO-1)
==============================================================

Data-parallel training of a small NumPy MLP over MPI, with sharded optimizer state (ZeRO-1).
Run it with::

    mpiexec -n 2 python examples/mpi_train.py            # ShardedSGD (default)
    mpiexec -n 2 python examples/mpi_train.py --plain    # allreduce_grads + plain SGD on every rank

Each rank takes its own share of scikit-learn's digits (8x8 images, 10 classes; bundled with
scikit-learn, no download), computes gradients on its mini-batches, and the optimizer averages
them across ranks. Rank 0 prints the loss and accuracy, which are global (averaged over all ranks'
data). Without scikit-learn it falls back to synthetic 10-class data and says so.
"""

from __future__ import annotations

import argparse
import hashlib
import time

import numpy as np
from mpi4py import MPI

import minimalsgd
from minimalsgd.distributed import ShardedSGD, allreduce_grads, broadcast_params


def load_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    try:
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        x = x / 16.0
        name = "digits"
    except ImportError:
        rng = np.random.default_rng(seed)
        centers = rng.standard_normal((10, 64)) * 2
        y = rng.integers(0, 10, 1797)
        x = centers[y] + rng.standard_normal((1797, 64))
        name = "synthetic 10-class blobs (scikit-learn not installed)"
    perm = np.random.default_rng(seed).permutation(len(y))
    x, y = x[perm].astype(np.float32), y[perm]
    n_test = len(y) // 5
    return x[n_test:], y[n_test:], x[:n_test], y[:n_test], name


def init_params(n_in: int, n_hidden: int, n_out: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    shapes = {"w1": (n_in, n_hidden), "b1": (n_hidden,), "w2": (n_hidden, n_out), "b2": (n_out,)}
    params = {}
    for name, shape in shapes.items():
        scale = 1.0 / np.sqrt(shape[0]) if len(shape) == 2 else 0.0
        params[name] = {"value": (rng.standard_normal(shape) * scale).astype(np.float32),
                        "grad": np.zeros(shape, np.float32)}
    return params


def forward_backward(params: dict, x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
    """Cross-entropy loss of a tanh MLP; writes the gradients of the batch mean into params."""
    w1, b1, w2, b2 = (params[k]["value"] for k in ("w1", "b1", "w2", "b2"))
    h = np.tanh(x @ w1 + b1)
    logits = h @ w2 + b2
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    n = len(y)
    loss = float(-np.log(p[np.arange(n), y] + 1e-12).sum())
    correct = int((p.argmax(axis=1) == y).sum())
    d = p
    d[np.arange(n), y] -= 1
    d /= n
    params["w2"]["grad"][...] = h.T @ d
    params["b2"]["grad"][...] = d.sum(axis=0)
    dh = (d @ w2.T) * (1 - h * h)
    params["w1"]["grad"][...] = x.T @ dh
    params["b1"]["grad"][...] = dh.sum(axis=0)
    return loss, correct


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=32, help="mini-batch per rank")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--plain", action="store_true", help="allreduce_grads + SGD instead of ShardedSGD")
    args = ap.parse_args()

    comm = MPI.COMM_WORLD
    rank, size = comm.rank, comm.size
    x_train, y_train, x_test, y_test, name = load_data()
    # Every rank gets an equal share (the remainder is dropped) so all ranks take the same steps.
    share = len(y_train) // size
    x_mine, y_mine = x_train[rank * share : (rank + 1) * share], y_train[rank * share : (rank + 1) * share]

    params = init_params(x_train.shape[1], args.hidden, 10, seed=rank)  # different on purpose...
    broadcast_params(params, comm)  # ...then every rank starts from rank 0's values
    # One buffer per dtype for values and one for grads: the collectives then run in place and
    # each rank's slice is one slice of it. forward_backward reads params[...] and writes the
    # grads in place, so it keeps working on the packed arrays.
    minimalsgd.pack_params(params)
    hyper = dict(lr=args.lr, momentum=0.9, nesterov=True, weight_decay=1e-4, clip_grad_norm=5.0)
    opt = minimalsgd.SGD(params, **hyper) if args.plain else ShardedSGD(params, comm, **hyper)
    if rank == 0:
        kind = "allreduce_grads + SGD" if args.plain else "ShardedSGD (ZeRO-1)"
        print(f"{size} ranks, {name}: {share} training examples per rank, {kind}", flush=True)

    rng = np.random.default_rng(1234 + rank)
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        order = rng.permutation(share)
        totals = np.zeros(3)  # loss sum, correct, examples
        for start in range(0, share - args.batch + 1, args.batch):
            idx = order[start : start + args.batch]
            loss, correct = forward_backward(params, x_mine[idx], y_mine[idx])
            totals += (loss, correct, len(idx))
            if args.plain:
                allreduce_grads(params, comm, optimizer=opt)  # also checks that every rank steps alike
            opt.step()
        comm.Allreduce(MPI.IN_PLACE, totals, op=MPI.SUM)
        _, test_correct = forward_backward(params, x_test, y_test)
        if rank == 0:
            print(f"epoch {epoch + 1:2d}  loss {totals[0] / totals[2]:.4f}  train acc {totals[1] / totals[2]:.3f}  "
                  f"test acc {test_correct / len(y_test):.3f}", flush=True)
    elapsed = time.perf_counter() - t0
    digest = hashlib.sha256(b"".join(params[k]["value"].tobytes() for k in sorted(params))).hexdigest()
    same = len(set(comm.allgather(digest))) == 1
    if rank == 0:
        print(f"weights identical on all {size} ranks: {same}", flush=True)
        if not args.plain:
            print(f"optimizer state on rank 0: {opt.state_bytes} bytes "
                  f"(a single-process SGD holds {sum(p['value'].nbytes for p in params.values())})", flush=True)
        print(f"{elapsed:.2f} s", flush=True)


if __name__ == "__main__":
    main()
