"""The ptychodus product file (HDF5), which ptychodus opens and hands to pty-chi.

Layout followed: ptychodus 1.7.0, ``ptychodus.api.io.save_product``/``load_product`` (the
"Ptychodus Product Files (*.h5 *.hdf5)" reader). pty-chi has no file format of its own: it
is run through ptychodus, which maps the positions below to pty-chi's object pixels.

================================  ==========================================================
root attribute ``name``           str, the result file's stem
``comments``                      str, which xrayflow result it came from
``detector_object_distance_m``    float, m: far field the sample-detector distance; near
                                  field the sample-plane (effective) propagation distance
``photon_energy_eV``              float, eV
``probe_photon_count``            float, Σ|P|² over the probe modes (counts per exposure)
``exposure_time_s``, ``mass_attenuation_m2_per_kg``, ``tomography_angle_deg``,
``tilt_angle_deg``                float, 0 (not recorded by xrayflow)
``focus_object_distance_m``       float, 0 (near field: the frames are magnification-corrected,
                                  the geometry is the equivalent parallel beam)
``far_field``                     bool, False for near-field (real-space) frames
``probe``                         complex64 (M, n, n): probe modes (ptychodus reads a 3D
                                  probe as M incoherent modes); attributes ``pixel_width_m``,
                                  ``pixel_height_m`` (m, the object pixel)
``object``                        complex64 (S, Ny, Nx): the object layers (slices along the
                                  beam, upstream first); attributes ``pixel_width_m``,
                                  ``pixel_height_m`` (m) and ``center_x_m``, ``center_y_m``
                                  (m, see below)
``object_layer_spacing_m``        float64 (S-1,): distance between consecutive layers, m
``probe_position_indexes``        int64 (P,): the frames of the data file used
``probe_position_x_m``,           float64 (P,): the probe centres (xrayflow's ``positions``
``probe_position_y_m``            x and y), m
``loss_epochs``, ``loss_values``  int64 / float64 (iterations,): the loss per iteration
================================  ==========================================================

Positions and object centre: ptychodus places the world centre of the object at pixel
``(N - 1)/2`` shifted by ``center_*_m`` and a probe position at the probe array's pixel
``(n - 1)/2``; xrayflow puts the object centre at pixel ``N//2`` and the probe centre at
pixel ``n//2``. The positions are written unchanged and the object centre is set to
``pixel × (e(n) − e(N))`` (``e(k)`` = 0.5 for even k, else 0; zero when both are even), so
that the probe window lands on the same object pixels in ptychodus and pty-chi as in
xrayflow (the top-left corner ``N//2 − n//2 + position/pixel``, the result's
``positions_px``).
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from xrayflow.errors import DataError
from xrayflow.export.result import ResultFile
from xrayflow.io.atomic import atomic_path
from xrayflow.io.hdf5 import open_h5

__all__ = ["read_product", "write_product"]

#: The layout version this module writes (the ptychodus release it was read from).
LAYOUT = "ptychodus 1.7.0 product file (ptychodus.api.io.save_product)"


def _half(n: int) -> float:
    return 0.5 if n % 2 == 0 else 0.0


def object_center(pixel: float, object_n: int, probe_n: int) -> float:
    """``center_*_m`` (m) along one axis for an object of ``object_n`` pixels and a probe of
    ``probe_n`` pixels (module docstring)."""
    return pixel * (_half(probe_n) - _half(object_n))


def ptycho_arrays(result: ResultFile, fmt: str) -> dict:
    """The arrays both ptychography exports need, checked: ``object`` (S, Ny, Nx) complex64,
    ``probe`` (M, n, n) complex64, ``positions`` (P, 2) (y, x) m, ``indices`` (P,) int64,
    ``loss`` float64, ``pixel`` (m), ``energy_ev``, ``near_field``, ``slice_spacing`` (m)."""
    result.require_metres(fmt)
    obj = result.array("object")
    obj = obj[None] if obj.ndim == 2 else obj
    probe = result.array("probe")
    probe = probe[None] if probe.ndim == 2 else probe
    pos = np.asarray(result.array("positions"), np.float64)
    if obj.ndim != 3 or probe.ndim != 3 or pos.ndim != 2 or pos.shape[1] != 2:
        raise DataError(
            f"{result.label}: expected object (S, Ny, Nx), probe (M, n, n) and positions "
            f"(P, 2); got {obj.shape}, {probe.shape}, {pos.shape}"
        )
    if str(result.attrs.get("positions_units", "m")) != "m":
        raise DataError(f"{result.label}: positions are not in metres")
    n_pos = len(pos)
    idx = result.array("indices") if result.has("indices") else np.arange(n_pos)
    loss = result.array("loss") if result.has("loss") else np.zeros(0)
    spacing = float(result.attrs.get("slice_spacing", 0.0) or 0.0)
    if obj.shape[0] > 1 and not (np.isfinite(spacing) and spacing > 0):
        raise DataError(f"{result.label}: {obj.shape[0]} slices but no slice_spacing attribute")
    from xrayflow.modalities import get_modality

    return {
        "object": np.asarray(obj, np.complex64),
        "probe": np.asarray(probe, np.complex64),
        "positions": pos,
        "indices": np.asarray(idx, np.int64),
        "loss": np.asarray(loss, np.float64).ravel(),
        "pixel": result.pixel_size(),
        "energy_ev": result.energy_ev(),
        "near_field": not get_modality(result.modality, "model attribute").far_field,
        "slice_spacing": spacing,
    }


def write_product(result: ResultFile, out: str | os.PathLike) -> Path:
    """Write the ptychodus product file ``out`` (atomically) of the ptychography result
    ``result`` (layout in the module docstring); returns ``out``."""
    a = ptycho_arrays(result, "ptychodus")
    distance = result.distance(near_field=a["near_field"])
    obj, probe, pix = a["object"], a["probe"], a["pixel"]
    S, Ny, Nx = obj.shape
    n_y, n_x = probe.shape[-2:]
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["name"] = result.path.stem
        f.attrs["comments"] = result.source()
        f.attrs["detector_object_distance_m"] = float(distance)
        f.attrs["photon_energy_eV"] = float(a["energy_ev"])
        f.attrs["probe_photon_count"] = float(np.sum(np.abs(probe.astype(np.complex128)) ** 2))
        for key in (
            "exposure_time_s",
            "mass_attenuation_m2_per_kg",
            "tomography_angle_deg",
            "focus_object_distance_m",
            "tilt_angle_deg",
        ):
            f.attrs[key] = 0.0
        f.attrs["far_field"] = not a["near_field"]
        f.create_dataset("probe_position_indexes", data=a["indices"])
        f.create_dataset("probe_position_x_m", data=a["positions"][:, 1])
        f.create_dataset("probe_position_y_m", data=a["positions"][:, 0])
        p = f.create_dataset("probe", data=probe)
        p.attrs["pixel_width_m"] = pix
        p.attrs["pixel_height_m"] = pix
        o = f.create_dataset("object", data=obj)
        o.attrs["center_x_m"] = object_center(pix, Nx, n_x)
        o.attrs["center_y_m"] = object_center(pix, Ny, n_y)
        o.attrs["pixel_width_m"] = pix
        o.attrs["pixel_height_m"] = pix
        f.create_dataset(
            "object_layer_spacing_m", data=np.full(S - 1, a["slice_spacing"], np.float64)
        )
        f.create_dataset("loss_epochs", data=np.arange(len(a["loss"]), dtype=np.int64))
        f.create_dataset("loss_values", data=a["loss"])
    return Path(out)


def read_product(path: str | os.PathLike) -> dict:
    """The datasets and root attributes of a product file (this module's layout) as a dict:
    the root attributes by name, ``object``, ``probe`` and the position and loss arrays by
    dataset name, ``object_attrs`` and ``probe_attrs`` (pixel sizes, centre)."""
    out: dict = {}
    with open_h5(path) as f:
        out.update({k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()})
        for name, ds in f.items():
            out[name] = ds[()]
        out["object_attrs"] = {k: float(v) for k, v in f["object"].attrs.items()}
        out["probe_attrs"] = {k: float(v) for k, v in f["probe"].attrs.items()}
    return out


def corners_px(product: dict) -> np.ndarray:
    """Top-left corners (P, 2) (y, x) of the probe window on the object grid, in object
    pixels, where ptychodus and pty-chi place it for the product ``product``
    (:func:`read_product`): position pixel ``(pos − centre)/pixel + (N − 1)/2`` minus
    ``(n − 1)/2``. Equals the result's ``positions_px`` for an xrayflow export."""
    oa = product["object_attrs"]
    Ny, Nx = product["object"].shape[-2:]
    n_y, n_x = product["probe"].shape[-2:]
    y = (product["probe_position_y_m"] - oa["center_y_m"]) / oa["pixel_height_m"] + (Ny - 1) / 2
    x = (product["probe_position_x_m"] - oa["center_x_m"]) / oa["pixel_width_m"] + (Nx - 1) / 2
    return np.stack([y - (n_y - 1) / 2, x - (n_x - 1) / 2], axis=-1)
