r"""Data parallel training over MPI, with optimizer state sharded across ranks (ZeRO stage 1).

Every rank runs the same script on its own part of the data (``mpiexec -n N python train.py``),
holds the same params, and computes its own gradients. Two ways to keep the ranks in step:

* :func:`allreduce_grads` then a plain :class:`minimalsgd.SGD` on every rank: each rank ends the
  reduction with the mean gradient :math:`\bar g = \frac1N \sum_r g_r` and steps all of it.
* :class:`ShardedSGD`: rank ``r`` owns one contiguous slice (about ``1/N``) of all elements of
  each dtype and keeps momentum buffers only for that slice. A step reduce-scatters the
  gradients (rank ``r`` receives the mean over ranks of its slice), measures the clip norm from
  the local sums of squares plus one collective, steps its slice with the wrapped optimizer's own
  step (an SGD over the slice's pieces), and allgathers the values, so every rank ends the step
  with identical full values.

One reduction path serves both: a ``Reduce_scatter`` whose slice boundaries are the sharded
optimizer's, a division by ``N`` (when averaging), and, for :func:`allreduce_grads`, an
``Allgatherv``. The same MPI call on the same layout sums each element in the same order, so the
two ways give bit-identical values on any number of ranks (an ``Allreduce`` would sum in another
order than a ``Reduce_scatter`` once ``N >= 3``, and floating-point addition is not associative).

Stochastic rounding (16-bit params) rounds alike on every rank, and alike however the elements
are sliced: an optimizer built without ``seed=`` uses :data:`minimalsgd.DEFAULT_SEED` on every
rank (:func:`shared_seed` draws a random seed shared by all ranks), the sharded step's agreement
compares the seed with every other setting, and each element rounds with its param's key and its
index within the param (never a slice's), counted in the order the plain step walks the param.

``mpi4py`` is imported on first use, never by ``import minimalsgd``. Install it with
``pip install 'minimalsgd[mpi]'`` (mpi4py and the mpich wheel).

The package, one concern per module: ``layout`` (which elements each rank owns:
:func:`partition`, the per-dtype flat layouts), ``collectives`` (the one reduction path,
:func:`allreduce_grads`, :func:`broadcast_params`, :func:`shared_seed`; the only importer of
mpi4py), ``agreement`` (the check that all ranks are about to do the same thing, or the same
error everywhere), ``sharded`` (:class:`ShardedOptimizer`, :class:`ShardedSGD`, written against
the public step protocol and optimizer members only).
"""

from __future__ import annotations

import numpy as np  # noqa: F401  (tests patch minimalsgd.distributed.np.empty to count allocations)

from .collectives import allreduce_grads, broadcast_params, shared_seed
from .layout import flat_view as _flat_view  # noqa: F401  (tests check which params tile one buffer)
from .layout import partition
from .sharded import ShardedOptimizer, ShardedSGD

__all__ = ["ShardedOptimizer", "ShardedSGD", "allreduce_grads", "broadcast_params", "partition", "shared_seed"]
