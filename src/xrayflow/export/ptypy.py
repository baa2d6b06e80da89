"""The PtyPy reconstruction file ``.ptyr`` (HDF5 in PtyPy's ``h5rw`` encoding).

Layout followed: PtyPy 0.9.0 (``ptypy/core/ptycho.py``: ``Ptycho.save_run(kind='minimal')``
and ``Ptycho.load_run``; ``ptypy/io/h5rw.py``: ``h5write``/``h5read``, encoding version
``h5rw_version = 0.1``; ``ptypy/core/classes.py``: ``Storage`` and its ``_to_dict``). Every
node carries the attribute ``type`` that ``h5read`` dispatches on: ``dict``/``param``
(groups), ``array``, ``arraytuple``, ``arraylist``, ``scalar``, ``string``, ``None``.

==============================  ============================================================
root attributes                 ``h5rw_version`` ``"0.1"``, ``ctime``, ``mtime``
``header/kind``                 ``"minimal"`` (what ``load_run`` looks for)
``header/description``          str
``content/obj/S00G00``          the object storage (below), data (1, Ny, Nx) complex64; for
                                S > 1 slices their product (the projection approximation
                                PtyPy's single-slice engines use); the slices themselves are
                                in ``content/xrayflow/slices``
``content/probe/S00G00``        the probe storage, data (M, n, n) complex64: the probe modes
                                are the storage's layers (PtyPy's incoherent probe modes)
``content/positions/S00G00``    float64 (P, 2): the probe positions (view coordinates) (y, x),
                                m, relative to the object storage's centre
``content/pars/scans/scan00``   ``data/energy`` (keV), ``data/distance`` (m), ``data/psize``
                                (detector pixel, m; far field ``λz/(n·Δx)``, near field the
                                sample-plane pixel Δx), ``data/shape`` (n), ``propagation``
                                (``farfield`` or ``nearfield``)
``content/xrayflow``            ``source`` (str), ``indices`` (P,) frames used, ``loss``
                                (iterations,), ``slices`` (S, Ny, Nx) complex64 and
                                ``slice_spacing`` (m) for S > 1
==============================  ============================================================

A storage is the dict PtyPy's ``Storage._to_dict`` produces, restricted to what
``Storage._from_dict`` needs: ``ID``, ``data`` (layers, Ny, Nx), ``shape``, ``layermap``,
``nlayers``, ``fill_value``, ``padding``, ``padonly``, ``model_initialized``,
``DataTooSmall``, ``_is_scattered``, ``_psize`` (y, x) m, ``_center`` (y, x) pixels and
``_origin = −_center·_psize`` (y, x) m. ``_center`` is ``(N//2, N//2)`` of the array (PtyPy's
default, and the pixel xrayflow measures positions from): PtyPy places a view of n pixels at
coordinate ``c`` with its low corner at pixel ``round(c/Δx + N//2) − n//2``, which is
xrayflow's window corner ``N//2 − n//2 + position/Δx``.

Reading the file back: ``ptypy.io.h5read(path, 'content')['content']`` (no PtyPy needed
here: :func:`read_ptyr` decodes the same encoding).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import h5py
import numpy as np

from xrayflow.errors import DataError
from xrayflow.export.ptychodus import ptycho_arrays
from xrayflow.export.result import ResultFile
from xrayflow.io.atomic import atomic_path
from xrayflow.io.hdf5 import open_h5
from xrayflow.optics.constants import wavelength

__all__ = ["read_ptyr", "write_ptyr"]

#: The layout version this module writes.
LAYOUT = "PtyPy 0.9.0 .ptyr, save_run(kind='minimal'), h5rw 0.1"
STORAGE_ID = "S00G00"
_STR = h5py.string_dtype(encoding="utf-8")


def _store(group: h5py.Group, name: str, value, kind: str | None = None) -> None:
    """Write ``value`` as h5rw does, with its ``type`` attribute (``kind`` overrides the
    group type: ``param`` for PtyPy's parameter trees)."""
    if isinstance(value, dict):
        g = group.create_group(name)
        g.attrs["type"] = kind or "dict"
        for k, v in value.items():
            _store(g, str(k), v)
        return
    if value is None:
        ds = group.create_dataset(name, data=np.zeros((1,)))
        ds.attrs["type"] = "None"
        return
    if isinstance(value, str):
        ds = group.create_dataset(name, data=value, dtype=_STR)
        ds.attrs["type"] = "string"
        return
    if isinstance(value, tuple | list):
        ds = group.create_dataset(name, data=np.asarray(value))
        ds.attrs["type"] = "arraytuple" if isinstance(value, tuple) else "arraylist"
        return
    if isinstance(value, np.ndarray):
        kw = {"compression": "gzip"} if value.ndim and value.size >= 1024 else {}
        ds = group.create_dataset(name, data=value, **kw)
        ds.attrs["type"] = "array"
        return
    ds = group.create_dataset(name, data=np.asarray(value))
    ds.attrs["type"] = "scalar"


def _storage(data: np.ndarray, pixel: float) -> dict:
    """A PtyPy storage dict of ``data`` (layers, Ny, Nx) on square pixels of ``pixel`` m,
    centred at pixel (Ny//2, Nx//2)."""
    centre = np.asarray(data.shape[-2:], np.float64) // 2
    psize = np.full(2, pixel, np.float64)
    return {
        "ID": STORAGE_ID,
        "data": data,
        "shape": tuple(int(v) for v in data.shape),
        "layermap": list(range(data.shape[0])),
        "nlayers": int(data.shape[0]),
        "fill_value": 0.0,
        "padding": 0,
        "padonly": False,
        "model_initialized": True,
        "DataTooSmall": False,
        "_is_scattered": False,
        "_center": centre,
        "_psize": psize,
        "_origin": -centre * psize,
    }


def write_ptyr(result: ResultFile, out: str | os.PathLike) -> Path:
    """Write the PtyPy ``.ptyr`` file ``out`` (atomically) of the ptychography result
    ``result`` (layout in the module docstring); returns ``out``."""
    a = ptycho_arrays(result, "ptypy")
    obj, probe, pix = a["object"], a["probe"], a["pixel"]
    near = a["near_field"]
    distance = result.distance(near_field=near)
    n = int(probe.shape[-1])
    lam = float(wavelength(a["energy_ev"]))  # hc/E, m
    det_psize = pix if near else lam * distance / (n * pix)
    projected = np.prod(obj.astype(np.complex128), axis=0, keepdims=True).astype(np.complex64)
    extra = {
        "source": result.source(),
        "indices": a["indices"],
        "loss": a["loss"],
    }
    if obj.shape[0] > 1:
        extra |= {"slices": obj, "slice_spacing": float(a["slice_spacing"])}
    content = {
        "obj": {STORAGE_ID: _storage(projected, pix)},
        "probe": {STORAGE_ID: _storage(probe, pix)},
        "positions": {STORAGE_ID: a["positions"]},
        "xrayflow": extra,
    }
    pars = {
        "scans": {
            "scan00": {
                "propagation": "nearfield" if near else "farfield",
                "data": {
                    "energy": a["energy_ev"] / 1000.0,
                    "distance": float(distance),
                    "psize": float(det_psize),
                    "shape": n,
                },
            }
        }
    }
    now = time.asctime()
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["h5rw_version"] = "0.1"
        f.attrs["ctime"] = now
        f.attrs["mtime"] = now
        _store(f, "header", {"kind": "minimal", "description": "xrayflow export (PtyPy .ptyr)"})
        _store(f, "content", content, kind="param")
        _store(f["content"], "pars", pars, kind="param")
    return Path(out)


def _load(node):
    kind = node.attrs.get("type")
    kind = kind.decode() if isinstance(kind, bytes) else kind
    if isinstance(node, h5py.Group):
        return {k: _load(v) for k, v in node.items()}
    if kind == "None":
        return None
    if kind == "string":
        v = node[()]
        return v.decode("utf-8") if isinstance(v, bytes) else str(v)
    if kind == "scalar":
        return node[()].item()
    if kind == "arraytuple":
        return tuple(node[()].tolist())
    if kind == "arraylist":
        return list(node[()])
    return node[()]


def read_ptyr(path: str | os.PathLike) -> dict:
    """``{"header": ..., "content": ..., "attrs": ...}`` of a ``.ptyr`` file, decoded as
    PtyPy's ``h5read`` decodes it (nested dicts, arrays, scalars, strings)."""
    with open_h5(path) as f:
        if "content" not in f or "header" not in f:
            raise DataError(f"{str(path)!r}: not a PtyPy .ptyr file (no header/content)")
        return {
            "attrs": {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()},
            "header": _load(f["header"]),
            "content": _load(f["content"]),
        }
