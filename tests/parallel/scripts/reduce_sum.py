"""Deterministic block sum of fixed pseudo-random partials; rank 0 saves the result and
every rank's block partition: ``reduce_sum.py OUT.npz N_BLOCKS [skew]`` (``skew``: explicit
spans giving every block to the last rank, rank 0 none)."""

import sys

import numpy as np

from xrayflow.io.atomic import atomic_write
from xrayflow.parallel import abort_on_error, get_comm, on_root

out, n_blocks = sys.argv[1], int(sys.argv[2])
skew = sys.argv[3:] == ["skew"]


def partial(k):
    rng = np.random.default_rng(1000 + k)  # depends only on the block index
    return {
        "loss": float(rng.random() * 1e3),
        "vol": rng.standard_normal((2, 5, 7, 3)).astype(np.float32) * 10.0 ** rng.integers(-3, 4),
        "probe": (rng.standard_normal((2, 6, 6)) + 1j * rng.standard_normal((2, 6, 6))).astype(
            np.complex64
        ),
    }


with abort_on_error() as comm:
    assert comm is get_comm()
    given = None
    if skew:
        given = [range(0, 0)] * (comm.size - 1) + [range(0, n_blocks)]
    total = comm.block_sum(n_blocks, partial, spans=given)
    mine = given[comm.rank] if skew else comm.partition(n_blocks)
    spans = comm.mpi.allgather((mine.start, mine.stop)) if comm.mpi else [(mine.start, mine.stop)]

    def save(tmp):
        with open(tmp, "wb") as f:
            np.savez(
                f,
                loss=total["loss"],
                vol=total["vol"],
                probe=total["probe"],
                spans=np.array(spans),
                size=comm.size,
                transport=comm.transport_name(),
            )

    on_root(lambda: atomic_write(out, save))
