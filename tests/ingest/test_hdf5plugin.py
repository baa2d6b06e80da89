"""CXI files whose frames are compressed with the filters detectors use (bitshuffle/LZ4 as
an Eiger writes it, Blosc) read with ``read_cxi``: ``xrayflow.io`` registers hdf5plugin, so
a process that never imports it itself reads them."""

from __future__ import annotations

import subprocess
import sys

import h5py
import hdf5plugin
import numpy as np
import pytest

from xrayflow.io.cxi import DiffractionData, write_cxi

FRAMES = "entry_1/instrument_1/detector_1/data"

BARE = """
import sys, h5py
h5py.File(sys.argv[1])["entry_1/instrument_1/detector_1/data"][()]
"""
READ = """
import sys
from xrayflow.io.cxi import read_cxi
d = read_cxi(sys.argv[1])
print(float(d.data.sum()), d.data.shape)
"""


def recompress(src, dst, filter_kw: dict) -> None:
    """Copy ``src`` to ``dst`` with the frames rewritten under ``filter_kw``."""
    with h5py.File(src) as fi, h5py.File(dst, "w") as fo:
        for name in fi:
            fi.copy(name, fo)
        frames = fi[FRAMES]
        attrs = dict(frames.attrs)
        del fo[FRAMES]
        fo.create_dataset(FRAMES, data=frames[()], chunks=frames.chunks, **filter_kw)
        fo[FRAMES].attrs.update(attrs)


@pytest.mark.parametrize(
    "filter_kw",
    [hdf5plugin.Bitshuffle(cname="lz4"), hdf5plugin.Blosc(cname="zstd")],
    ids=["bitshuffle-lz4", "blosc-zstd"],
)
def test_read_cxi_of_detector_compressed_frames(tmp_path, filter_kw):
    rng = np.random.default_rng(0)
    frames = rng.poisson(20.0, (4, 16, 16)).astype(np.float32)
    d = DiffractionData(data=frames, energy_ev=8000.0, distance=2.0, pixel_size=(75e-6, 75e-6))
    write_cxi(tmp_path / "plain.cxi", d)
    recompress(tmp_path / "plain.cxi", tmp_path / "eiger.cxi", dict(filter_kw))
    with h5py.File(tmp_path / "eiger.cxi") as f:
        assert f[FRAMES].id.get_create_plist().get_filter(0)[0] == filter_kw["compression"]

    def child(code: str) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-c", code, str(tmp_path / "eiger.cxi")]
        return subprocess.run(argv, capture_output=True, text=True)

    bare = child(BARE)  # h5py alone cannot decode the frames
    assert bare.returncode != 0 and "OSError" in bare.stderr
    run = child(READ)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split()[0] == str(float(frames.sum()))
