"""Results whose large arrays are distributed over MPI ranks in row slabs
(:mod:`xrayflow.solvers.distributed_reconstructor`): written without any rank holding a
whole array.

The pip builds of h5py have no parallel HDF5, so the ranks write one after the other: rank 0
writes the replicated part of the result and creates every distributed dataset at its full
shape, then each rank in turn opens the file and writes its own rows. All of it goes into
rank 0's temporary file (:func:`xrayflow.io.atomic.atomic_path`), renamed onto the target
when every rank has written, so a reader never sees a partial result. The file is the same
as a replicated run's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import h5py

from xrayflow.backend import to_numpy
from xrayflow.io.atomic import atomic_path
from xrayflow.io.hdf5 import write_h5
from xrayflow.io.nexus import write_default_plot
from xrayflow.parallel import Comm


def write_row_slabs(
    path: str | os.PathLike,
    tree: Mapping,
    slabs: Mapping,
    rows: range,
    n_rows: int,
    comm: Comm,
    attrs: Mapping = (),
    default_plot: Mapping | None = None,
) -> None:
    """Write ``tree`` plus the distributed arrays ``slabs`` to ``path`` (collective).

    Args:
        tree: the replicated datasets (the same on every rank; rank 0's are written).
        slabs: top-level dataset name -> this rank's rows ``(..., len(rows), Nx)`` of an
            array ``(..., n_rows, Nx)`` (same names, leading shape and dtype on every rank).
        rows: the global rows this rank owns (ranks own consecutive, disjoint ranges).
        n_rows: rows of the whole arrays.
        attrs, default_plot: as :func:`xrayflow.io.hdf5.write_h5` (the plot may name a
            distributed dataset).
    """
    if comm.is_root:
        with atomic_path(path) as tmp:
            write_h5(tmp, tree, attrs=attrs)
            with h5py.File(tmp, "r+") as f:
                for name, v in slabs.items():
                    shape = (*v.shape[:-2], n_rows, v.shape[-1])
                    chunk = (*(1,) * (len(shape) - 2), min(n_rows, 256), shape[-1])
                    f.create_dataset(name, shape=shape, dtype=v.dtype, chunks=chunk)
                if default_plot is not None:
                    write_default_plot(f, **default_plot)
            comm.bcast(str(tmp))
            _write_in_turn(tmp, slabs, rows, comm)
    else:
        _write_in_turn(comm.bcast(None), slabs, rows, comm)


def _write_in_turn(tmp, slabs: Mapping, rows: range, comm: Comm) -> None:
    """Every rank writes its rows of ``slabs`` into ``tmp``, in rank order."""
    for r in range(comm.size):
        if r == comm.rank and len(rows):
            with h5py.File(tmp, "r+") as f:
                for name, v in slabs.items():
                    f[name][..., rows.start : rows.stop, :] = to_numpy(v)
        comm.barrier()
