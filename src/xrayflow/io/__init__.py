"""File input/output: atomic writes, generic HDF5 trees, CXI diffraction data.

``xrayflow.io.cxi`` (DiffractionData, read_cxi, write_cxi) and ``xrayflow.io.hdf5``
(write_h5, read_h5) are imported lazily so that ``import xrayflow.io`` stays cheap.
"""

import importlib

from xrayflow.io.atomic import atomic_path, atomic_write_bytes, atomic_write_text

_LAZY = {
    "DiffractionData": "xrayflow.io.cxi",
    "read_cxi": "xrayflow.io.cxi",
    "read_cxi_geometry": "xrayflow.io.cxi",
    "read_cxi_meta": "xrayflow.io.cxi",
    "read_truth": "xrayflow.io.cxi",
    "write_cxi": "xrayflow.io.cxi",
    "read_h5": "xrayflow.io.hdf5",
    "write_h5": "xrayflow.io.hdf5",
    "open_h5": "xrayflow.io.hdf5",
}

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'xrayflow.io' has no attribute {name!r}")
