"""The MPI cases of minimalsgd.distributed, run on every rank by
``mpiexec -n N python tests/distributed/mpi_cases.py``.

``tests/distributed/test_distributed.py`` starts the runs and reads the verdicts; this file is not
collected by pytest (it needs MPI). Rank 0 prints one JSON line per case: ``{"case": name,
"failures": {rank: message}}``. ``--case NAME`` runs one case; ``--chain`` one link of the
checkpoint chain. The cases live in modules by concern:

``cases_equality``     the sharded step == allreduce_grads + the plain optimizer, == one process
``cases_half``         16-bit params, stochastic rounding across ranks and slicings
``cases_collectives``  allreduce_grads, broadcast_params, shared_seed on their own
``cases_state``        state slices, skip, state dicts, resharding, the checkpoint chain
``cases_agreement``    bad input and disagreeing ranks: the same error everywhere; argument forwarding

``mpi_common`` holds the registry, the params and gradients, and the comparisons.
"""

from __future__ import annotations

import json
import os
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cases_agreement  # noqa: E402,F401  (each module registers its cases)
import cases_collectives  # noqa: E402,F401
import cases_equality  # noqa: E402,F401
import cases_half  # noqa: E402,F401
import cases_state  # noqa: E402,F401
from cases_state import CHAIN_CFG, chain, chain_config, chain_dtype  # noqa: E402,F401
from mpi_common import CASES, HALF_SHAPES, SHAPES, Skip, _exact_grads, local_grad, make_params  # noqa: E402,F401


def main() -> None:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    args = sys.argv[1:]
    if args and args[0] == "--chain":
        path_in = args[1] if args[1] != "-" else None
        chain(comm, path_in, args[2], int(args[3]), int(args[4]), *args[5:6])
        return
    names = [args[1]] if args and args[0] == "--case" else list(CASES)
    for name in names:
        failure = skipped = None
        try:
            CASES[name](comm)
        except Skip as why:
            skipped = str(why)
        except Exception:  # noqa: BLE001 - reported per rank
            failure = traceback.format_exc()
        failures = comm.gather(failure, root=0)
        if comm.rank == 0:
            report = {"case": name, "failures": {r: f for r, f in enumerate(failures) if f is not None}, "skipped": skipped}
            print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
