"""Per-rank reading of diffraction data: each rank reads only the frames it works on."""

from __future__ import annotations

import numpy as np

from .comm import Comm, get_comm, local_indices


class LocalFrames:
    """This rank's frames, indexed by *global* frame numbers: ``lf[global_indices]``.

    ``indices``: sorted global frame numbers held; ``array``: their data (first axis)."""

    def __init__(self, indices, array):
        self.indices = np.asarray(indices, dtype=np.int64)
        self.array = array

    def __getitem__(self, frames):
        frames = np.asarray(frames, dtype=np.int64)
        pos = np.searchsorted(self.indices, frames)
        ok = (pos < self.indices.size) & (
            self.indices[np.minimum(pos, self.indices.size - 1)] == frames
        )
        if not np.all(ok):
            raise IndexError(f"frames {frames[~ok][:5].tolist()} are not held by this rank")
        return self.array[pos]


def read_cxi_local(path, comm: Comm | None = None, blocks=None, truth: bool = False):
    """Read this rank's frames of a CXI file, touching only their chunks.

    Without ``blocks`` the rank takes its contiguous share of all frames; with ``blocks``
    (a list of global frame-index arrays, e.g. ``TomoModel.frame_blocks``) it takes the
    frames of its share of the blocks (``comm.partition(len(blocks))``), the same blocks
    :meth:`Comm.block_sum` will ask it for. Returns ``(indices, data)``: sorted global frame
    indices and the :class:`xrayflow.io.cxi.DiffractionData` of those frames (wrap
    ``data.data`` in :class:`LocalFrames` to index it by global frame). The ground truth is
    skipped unless ``truth``.
    """
    from xrayflow.io.cxi import read_cxi, read_cxi_meta  # noqa: PLC0415

    comm = comm or get_comm()
    if blocks is None:
        idx = local_indices(read_cxi_meta(path)["n_frames"], comm)
    else:
        mine = [np.asarray(blocks[k], dtype=np.int64) for k in comm.partition(len(blocks))]
        idx = np.unique(np.concatenate(mine)) if mine else np.zeros(0, np.int64)
    return idx, read_cxi(path, indices=idx, truth=truth)
