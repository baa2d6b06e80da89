"""VTK image files (``.vti``) of 3D results, for ParaView and VisIt.

The file format is :mod:`xrayflow.io.vtk` (VTK XML ImageData 1.0, raw little-endian appended
data; point data x fastest, which is the C order of our (Z, Y, X) arrays; VTK lists spacing
and origin as x y z). The grid: spacing the voxel (m; 1 in voxel units), origin such that
the middle voxel (index N//2 along each axis) sits at 0.

* Bragg CDI (:func:`write_density`): the point data of ``cdi.vtk`` (the same function
  makes both): ``amplitude`` |ρ| and ``phase`` arg ρ (rad) float32, ``support`` uint8 and,
  when the result has a ``strain`` group, ``displacement`` (m) and ``strain`` float32.
* Ptycho-tomography (:func:`write_refractive`): ``delta`` and ``beta`` float32, the
  refractive-index decrement and absorption index of the volume (z along the beam at angle
  0, rotation about y).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from xrayflow.errors import DataError
from xrayflow.export.result import ResultFile
from xrayflow.io.vtk import centred_grid, density_fields, write_vti

__all__ = ["grid", "write_density", "write_refractive"]


def grid(result: ResultFile, shape) -> tuple:
    """(spacing, origin), each (z, y, x), of a volume of ``shape``: the voxel (m; 1 when the
    result is in voxel or pixel units), the middle voxel at 0."""
    step = None
    if result.metric:
        for name in ("voxel_size", "pixel_size"):
            if result.has(name):
                step = result.array(name)
                break
    return centred_grid(step, shape)


def _volume(result: ResultFile, name: str) -> np.ndarray:
    a = result.array(name)
    if a.ndim != 3:
        raise DataError(f"{result.label}: {name!r} is not a 3D volume (shape {a.shape})")
    return a


def write_density(result: ResultFile, out: str | os.PathLike) -> Path:
    """Write the VTK image ``out`` of a Bragg CDI result (module docstring)."""
    rho = _volume(result, "object")
    tree = {"object": rho, "support": result.array("support")}
    if result.has("strain/displacement") and result.has("strain/strain"):
        tree["strain"] = {k: result.array(f"strain/{k}") for k in ("displacement", "strain")}
    fields = density_fields(tree)
    fields = {k: (v if v.dtype == bool else np.asarray(v, np.float32)) for k, v in fields.items()}
    return write_vti(out, fields, *grid(result, rho.shape))


def write_refractive(result: ResultFile, out: str | os.PathLike) -> Path:
    """Write the VTK image ``out`` of a δ/β volume (ptycho-tomography; module docstring)."""
    delta, beta = _volume(result, "delta"), _volume(result, "beta")
    if beta.shape != delta.shape:
        raise DataError(f"{result.label}: delta {delta.shape} and beta {beta.shape} differ")
    fields = {"delta": np.asarray(delta, np.float32), "beta": np.asarray(beta, np.float32)}
    return write_vti(out, fields, *grid(result, delta.shape))
