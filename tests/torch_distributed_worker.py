"""One rank of the torch.distributed checks of tests/test_torch_distributed.py (not collected by pytest).

Run as ``python torch_distributed_worker.py RANK WORLD STORE_FILE SETUP``: joins a gloo process group
on loopback (a FileStore rendezvous, no port to pick), then trains the same small model twice under
SETUP, once with ``torch.optim.SGD`` and once with ``minimalsgd.torch.SGD``, on rank-specific data:

- ``ddp``: ``DistributedDataParallel`` (grads as separate tensors, then as views of DDP's buckets);
- ``zero``: ``DistributedDataParallel`` + ``ZeroRedundancyOptimizer(optimizer_class=...)`` (params as
  separate tensors, then as views of ZeRO's per-rank buckets).

It asserts: every rank holds bit-identical params after every step (per optimizer class); the
drop-in's params, losses and momentum buffers equal torch's to float rounding (float32; 10 steps
through backward: rtol 1e-5, atol 1e-6); the drop-in really ran the native kernel; for ZeRO, the
consolidated checkpoint has torch's format and torch's values, and loads into the other class.
A failed assertion exits non-zero with a traceback; rank 0 prints ``OK <setup> <native calls>``.
"""

from __future__ import annotations

import copy
import datetime
import sys

import torch
import torch.distributed as dist
from torch.distributed.optim import ZeroRedundancyOptimizer
from torch.nn.parallel import DistributedDataParallel as DDP

import minimalsgd._functional as F
from minimalsgd.torch import SGD

STEPS = 10
TOL = dict(rtol=1e-5, atol=1e-6)
KW = dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)


def model() -> torch.nn.Module:
    torch.manual_seed(0)  # the same initial model on every rank and for both classes
    return torch.nn.Sequential(
        torch.nn.Linear(10, 32), torch.nn.Tanh(), torch.nn.Linear(32, 17), torch.nn.Tanh(), torch.nn.Linear(17, 3)
    )


def batch(step: int, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 * step + rank)  # each rank its own data
    x = torch.randn(16, 10, generator=g)
    return x, x[:, :3].sin()


def same_on_every_rank(tensors: list[torch.Tensor]) -> None:
    flat = torch.cat([t.detach().reshape(-1) for t in tensors])
    gathered = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, flat)
    for other in gathered[1:]:
        assert torch.equal(gathered[0].view(torch.int32), other.view(torch.int32)), "ranks disagree"


def train(cls: type, setup: str, bucket_view: bool, rank: int):
    net = model()
    if setup == "ddp":
        ddp = DDP(net, gradient_as_bucket_view=bucket_view)
        opt = cls(ddp.parameters(), **KW)
    else:
        ddp = DDP(net)
        opt = ZeroRedundancyOptimizer(
            ddp.parameters(), optimizer_class=cls, parameters_as_bucket_view=bucket_view, **KW
        )
        assert type(opt.optim) is cls
    losses = []
    for step in range(STEPS):
        x, y = batch(step, rank)
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(ddp(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
        same_on_every_rank(list(net.parameters()))
    if setup == "ddp":
        state = opt.state_dict()
    else:
        opt.consolidate_state_dict(to=0)
        state = opt.state_dict() if rank == 0 else None
    return ddp, opt, losses, state


def check(setup: str, bucket_view: bool, rank: int) -> int:
    calls = []
    real = F._core.sgd_step_ptrs

    def spy(kinds, *args, **kwargs):
        calls.append(len(kinds))
        return real(kinds, *args, **kwargs)

    ddp_ref, opt_ref, loss_ref, sd_ref = train(torch.optim.SGD, setup, bucket_view, rank)
    assert not calls
    F._core.sgd_step_ptrs = spy
    try:
        ddp, opt, losses, sd = train(SGD, setup, bucket_view, rank)
    finally:
        F._core.sgd_step_ptrs = real
    net_ref, net = ddp_ref.module, ddp.module
    n_params = len(list(net.parameters()))
    if setup == "ddp":
        assert calls == [n_params] * STEPS, calls  # every param, one native call per step
    else:
        assert len(calls) == STEPS and 0 < calls[0] < n_params, calls  # this rank's shard only
    torch.testing.assert_close(torch.stack(losses), torch.stack(loss_ref), **TOL)
    for a, b in zip(net_ref.parameters(), net.parameters()):
        torch.testing.assert_close(b.detach(), a.detach(), **TOL)
    if sd is not None:
        assert sd["param_groups"] == sd_ref["param_groups"]
        assert sd["state"].keys() == sd_ref["state"].keys()
        for k in sd["state"]:
            assert sd["state"][k].keys() == {"momentum_buffer"}
            torch.testing.assert_close(sd["state"][k]["momentum_buffer"], sd_ref["state"][k]["momentum_buffer"], **TOL)
        if setup == "zero":
            assert len(sd["state"]) == n_params  # the whole model's state, gathered on rank 0
    if setup == "zero":
        # A checkpoint of one class resumes in the other: load torch's consolidated state into the
        # drop-in's ZeRO (every rank loads the full dict and keeps its shard), step once more on both.
        full = [sd_ref]
        dist.broadcast_object_list(full, src=0)
        # (deep copies: ZeRO's load keeps the given tensors and edits the dict)
        opt.load_state_dict(copy.deepcopy(full[0]))
        opt_ref.load_state_dict(copy.deepcopy(full[0]))
        with torch.no_grad():
            for a, b in zip(net_ref.parameters(), net.parameters()):
                b.copy_(a)
        for d, o in ((ddp_ref, opt_ref), (ddp, opt)):
            x, y = batch(STEPS, rank)
            o.zero_grad()
            torch.nn.functional.mse_loss(d(x), y).backward()
            o.step()
        for a, b in zip(net_ref.parameters(), net.parameters()):
            torch.testing.assert_close(b.detach(), a.detach(), **TOL)
        same_on_every_rank(list(net.parameters()))
    return len(calls)


def main() -> None:
    rank, world, store_file, setup = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    dist.init_process_group(
        "gloo", init_method=f"file://{store_file}", rank=rank, world_size=world,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        counts = [check(setup, bucket_view, rank) for bucket_view in (False, True)]
        dist.barrier()
    finally:
        dist.destroy_process_group()
    if rank == 0:
        print("OK", setup, counts)


if __name__ == "__main__":
    main()
