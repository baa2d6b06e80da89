"""Each rank reads its share of a CXI file; the frames it touched are recorded by
instrumenting h5py: ``read_part.py FILE.cxi OUTDIR``. Two reads: the rank's share of all
frames, then its share of blocks of two frames (one angle each), indexed by global frame."""

import json
import sys
from pathlib import Path

import h5py
import numpy as np

from xrayflow.parallel import LocalFrames, abort_on_error, read_cxi_local

path, outdir = sys.argv[1], Path(sys.argv[2])
touched: list[int] = []
_getitem = h5py.Dataset.__getitem__


def spy(self, key):
    if self.ndim == 3 and self.name.endswith("/data"):
        frames = np.arange(self.shape[0])[key[0] if isinstance(key, tuple) else key]
        touched.extend(int(i) for i in np.atleast_1d(frames))
    return _getitem(self, key)


h5py.Dataset.__getitem__ = spy
with abort_on_error() as comm:
    idx, data = read_cxi_local(path, comm)
    rec = {"indices": idx.tolist(), "touched": list(touched), "first": data.data[:, 0, 0].tolist()}
    touched.clear()
    blocks = [np.arange(b, b + 2) for b in range(0, 10, 2)]
    bidx, bdata = read_cxi_local(path, comm, blocks=blocks)
    local = LocalFrames(bidx, bdata.data)
    rec["block_indices"], rec["block_touched"] = bidx.tolist(), list(touched)
    rec["global_last"] = float(local[bidx[-1:]][0, 0, 0])
    try:
        local[[0 if comm.rank else 9]]
        rec["foreign"] = "read"
    except IndexError:
        rec["foreign"] = "refused"
    (outdir / f"rank{comm.rank}.json").write_text(json.dumps(rec))
