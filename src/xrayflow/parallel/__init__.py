"""MPI data parallelism (mpi4py): partitions, deterministic gradient sums, GPU transports
(NCCL / CUDA-aware MPI / host staging), rank-0 output and abort-on-error.

Typical use in an iterative solver (every rank holds the same parameters)::

    comm = get_comm()                                  # size 1 without mpiexec
    blocks = block_ranges(len(batch), 16)              # independent of the rank count
    def partial(k):
        value, (g_obj, g_probe) = vg(obj, probe, batch[blocks[k]])  # one block
        return {"loss": value, "object": g_obj, "probe": g_probe}
    total = comm.block_sum(len(blocks), partial)      # bit-identical for any rank count
    step(obj, probe, total)                            # same step on every rank

Wrap a rank's work in ``with abort_on_error(comm):`` so one failing rank stops all.
"""

from .comm import (
    Comm,
    abort_on_error,
    block_ranges,
    get_comm,
    launched_by_mpi,
    local_indices,
    on_root,
    partition,
    sum_over_blocks,
)
from .transport import GPU_TRANSPORTS, gpu_transport_name

__all__ = [
    "GPU_TRANSPORTS",
    "Comm",
    "abort_on_error",
    "block_ranges",
    "get_comm",
    "gpu_transport_name",
    "launched_by_mpi",
    "local_indices",
    "on_root",
    "partition",
    "sum_over_blocks",
]
