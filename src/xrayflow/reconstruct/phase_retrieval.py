"""The reconstruct stage with the phase-retrieval solver: one 3D pattern, one rank.

Reads the 3D volume (:func:`read_volume`: a CXI file of the simulate stage, or a measured
volume as ``.npy``, ``.npz``, TIFF stack or HDF5 dataset, :mod:`xrayflow.io.volumes`; the
settings of the config's ``data`` and ``geometry`` sections), builds the modality's model
(``build_model``), runs :mod:`xrayflow.solvers.phase_retrieval` from random starts (seed
``optimizer.seed``) or from the prediction of the network ``model.network``, with the
settings of the ``cdi`` section, centres the result (:func:`~xrayflow.solvers.
phase_retrieval.centre`), estimates the oversampling from the object's extent and writes it
(:func:`reconstruct_file`; layout in docs/data-format.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xrayflow.backend import get_backend
from xrayflow.errors import ConfigError, DataError
from xrayflow.io.cxi import MAX_DISTANCE_M, MAX_PIXEL_M
from xrayflow.io.hdf5 import write_h5
from xrayflow.io.volumes import GEOMETRY_DATASETS, read_mask_file, read_volume_file
from xrayflow.io.vtk import centred_grid, density_fields, write_vti
from xrayflow.modalities import get_modality
from xrayflow.optics.constants import wavelength, xray_energy_problem
from xrayflow.provenance import provenance
from xrayflow.solvers.phase_retrieval import centre, oversampling, refine, refine_from_network

log = logging.getLogger(__name__)

#: The geometry a voxel size in metres needs (config keys of the ``geometry`` section).
GEOMETRY_KEYS = ("energy_ev", "distance", "detector_pixel_size")


@dataclass(frozen=True)
class Volume:
    """A measured 3D pattern.

    Attributes:
        counts: (Z, Y, X) float32 intensities, >= 0: photon counts, or values in any unit
            (e.g. a volume normalised to max 1); 0 at bad voxels.
        mask: (Z, Y, X) bool, True = good voxel, or None (all good).
        centred: the zero frequency is in the middle of the array.
        voxel_size: object voxel (m): one number, or (Z, Y, X) when the axes differ; None:
            unknown, the result is in voxel units.
        geometry: the ``energy_ev`` (eV), ``distance`` (m) and ``detector_pixel_size``
            ((y, x), m) the voxel size was derived from (empty when it was not).
        attrs: the data file's ``entry_1/xrayflow_attrs`` (CXI; else empty).
    """

    counts: np.ndarray
    mask: np.ndarray | None
    centred: bool
    voxel_size: float | tuple | None = None
    geometry: dict = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)

    @property
    def units(self) -> str:
        """``metres`` when the voxel size is known, else ``voxels``."""
        return "voxels" if self.voxel_size is None else "metres"


def read_volume(data_path, cfg: dict) -> Volume:
    """The 3D volume ``data_path`` read as the validated reconstruct config ``cfg`` says.

    ``data``: ``format`` and ``keys.data`` (:func:`xrayflow.io.volumes.read_volume_file`),
    ``quantity`` (``amplitude``: the values are squared), ``centred`` (null: what the file
    records, else True), ``mask`` (a good-voxel file, nonzero = good, and ``keys.mask``);
    ``geometry``: the voxel size (:func:`voxel_size`). Values at bad voxels are ignored;
    elsewhere they must be finite and >= 0. DataError naming the file (and key) otherwise.
    """
    d, g = cfg["data"], cfg["geometry"]
    for key in GEOMETRY_KEYS:  # before reading the data
        problem = None if g[key] is None else _geometry_problem(key, g[key])
        if problem:
            raise ConfigError(f"geometry.{key}: {problem}")
    path = Path(data_path)
    vf = read_volume_file(path, d["format"], d["keys"]["data"])
    values = np.asarray(vf.data, dtype=np.float64)
    mask = vf.mask
    if d["mask"] is not None:
        extra = read_mask_file(d["mask"], values.shape, key=d["keys"]["mask"])
        mask = extra if mask is None else mask & extra
    good = np.ones(values.shape, bool) if mask is None else np.asarray(mask, bool)
    bad = good & ~(np.isfinite(values) & (values >= 0))
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataError(
            f"{str(path)!r}: {int(bad.sum())} good voxels hold NaN/inf or negative values (the "
            f"first at (z, y, x) = {where}: {values[where]}); mask them (data.mask) or fix them"
        )
    values = np.where(good, values, 0.0)
    counts = values * values if d["quantity"] == "amplitude" else values
    if not counts.any():
        raise DataError(f"{str(path)!r}: the 3D pattern is zero everywhere (no counts to fit)")
    centred = d["centred"]
    if centred is None:
        centred = True if vf.centred is None else vf.centred
    voxel, geometry = voxel_size(g, vf.geometry, values.shape, path)
    return Volume(
        counts.astype(np.float32),
        None if mask is None else np.asarray(mask, bool),
        bool(centred),
        voxel,
        geometry,
        dict(vf.attrs),
    )


def voxel_size(g: dict, recorded: dict, shape, path) -> tuple[float | tuple | None, dict]:
    """The object voxel (m) of a far-field 3D pattern of ``shape`` (Z, Y, X) and the
    geometry it came from.

    ``g`` is the config's ``geometry`` section, ``recorded`` what the data file records
    (:attr:`xrayflow.io.volumes.VolumeFile.geometry`). In order: ``units: pixels``: None
    (voxel units); ``object_pixel_size``; else the photon energy, distance and detector
    pixel, each from the config or else from the file, give ``lambda z / (N p)`` per axis
    (the rocking axis Z taken to sample q like a detector pixel, as the simulate stage does;
    the file's own object voxel when the config gives none of the three). With one of them
    unknown the result is in voxel units (None; a warning when some were given). Returns
    ``(voxel size, geometry used)``: one number when every axis has the same, else
    (Z, Y, X).
    """
    if g["units"] == "pixels":
        return None, {}
    if g["object_pixel_size"] is not None:
        return float(g["object_pixel_size"]), {}
    given = {k: g[k] for k in GEOMETRY_KEYS if g[k] is not None}
    if not given and "object_pixel_size" in recorded:
        return float(np.mean(recorded["object_pixel_size"])), {}
    values = {**{k: recorded[k] for k in GEOMETRY_KEYS if k in recorded}, **given}
    missing = [k for k in GEOMETRY_KEYS if k not in values]
    if missing:
        if given or recorded:
            log.warning(
                "%s: no %s (geometry.%s or the CXI file): the result is in voxel units",
                path,
                ", ".join(missing),
                ", geometry.".join(missing),
            )
        return None, {}
    for key in GEOMETRY_KEYS:  # the config's values are checked by read_volume
        problem = None if key in given else _geometry_problem(key, values[key])
        if problem:
            raise DataError(f"{path}: {GEOMETRY_DATASETS[key]}: {problem}; set geometry.{key}")
    p = np.broadcast_to(np.asarray(values["detector_pixel_size"], dtype=np.float64), (2,))
    pitch = (float(p.mean()), float(p[0]), float(p[1]))  # Z: the rocking axis
    lam_z = float(wavelength(values["energy_ev"])) * float(values["distance"])
    vox = tuple(lam_z / (n * q) for n, q in zip(shape, pitch, strict=True))
    used = {k: values[k] for k in GEOMETRY_KEYS}
    return (vox[0] if np.allclose(vox, vox[0], rtol=1e-9) else vox), used


def _geometry_problem(key: str, value) -> str | None:
    """Why ``value`` is not a plausible ``geometry.<key>`` (None when it is)."""
    v = np.asarray(value, dtype=np.float64)
    if not (np.all(np.isfinite(v)) and np.all(v > 0)):
        return f"{value!r} must be positive"
    if key == "energy_ev":
        return xray_energy_problem(float(v))
    limit = MAX_DISTANCE_M if key == "distance" else MAX_PIXEL_M
    if np.any(v > limit):
        return f"{value!r} m is not plausible (> {limit:g} m; metres expected)"
    return None


def _check_loss(cfg: dict, volume: Volume, data_path) -> None:
    """The Poisson data term needs photon counts: ConfigError for non-integer intensities
    (e.g. a normalised volume)."""
    if cfg["cdi"]["loss"] != "poisson":
        return
    c = volume.counts.astype(np.float64)
    off = np.abs(c - np.rint(c)) > np.maximum(1e-2, 1e-6 * c)
    if off.any():
        where = tuple(int(i) for i in np.argwhere(off)[0])
        raise ConfigError(
            f"cdi.loss: poisson needs photon counts, but {str(data_path)!r} holds non-integer "
            f"intensities (at (z, y, x) = {where}: {c[where]:g}; maximum {c.max():g}); "
            "normalised data carry no photon statistics: use cdi.loss: gaussian"
        )


def reconstruct_file(cfg: dict, data_path, out_path) -> dict:
    """Phase retrieval of the 3D volume ``data_path`` into the HDF5 ``out_path`` (atomic).

    ``cfg`` is the validated reconstruct config: ``data`` and ``geometry`` (how the volume
    is read, :func:`read_volume`), ``model.type`` (the modality), ``model.network`` (a
    trained network to start from; null: random starts from ``optimizer.seed``),
    ``run.device``/``run.precision`` and the solver settings ``cdi``. Returns the solver's
    result dict (:func:`xrayflow.solvers.phase_retrieval.refine`) with the result as
    written: ``object`` and ``support`` centred, ``phase_ramp`` and ``shift``
    (:func:`~xrayflow.solvers.phase_retrieval.centre`), ``oversampling`` (per axis,
    :func:`~xrayflow.solvers.phase_retrieval.oversampling`), ``units`` and ``voxel_size``.
    """
    volume = read_volume(data_path, cfg)
    _check_loss(cfg, volume, data_path)

    backend = get_backend(cfg["run"]["device"], cfg["run"]["precision"])
    model = get_modality(cfg["model"]["type"], "model.type").build_model(cfg, volume, backend)
    seed, network = int(cfg["optimizer"]["seed"]), cfg["model"]["network"]
    if network is None:
        res = refine(model, None, None, cfg["cdi"], np.random.default_rng(seed))
    else:
        res = refine_from_network(model, network, cfg["cdi"])
    obj, support, layout = centre(res["object"], res["support"])
    ratio = oversampling(obj)
    res = {
        **res,
        **layout,
        "object": obj,
        "support": support,
        "oversampling": ratio,
        "units": volume.units,
        "voxel_size": volume.voxel_size,
    }
    if np.any(ratio < 2):
        log.warning(
            "%s: oversampling %s (Z, Y, X; array size / extent of the object) is below 2 on "
            "an axis: the pattern may be undersampled there and the solution not unique",
            data_path,
            "/".join(f"{r:.2f}" for r in ratio),
        )
    full = {**res["config"], "seed": seed}
    tree = {
        **model.result_entries(res, volume),
        "phase_ramp": np.asarray(res["phase_ramp"], np.float64),
        "shift": np.asarray(res["shift"], np.int64),
        "oversampling": np.asarray(ratio, np.float64),
        "loss": res["loss"],
        "r_factor": float(res["r_factor"]),
        "iterations": int(res["iterations"]),
        "hio_iterations": int(res["hio_iterations"]),
        "starts": int(res["starts"]),
        "shrinkwrap": {
            "threshold": float(res["threshold"]),
            "rejected": int(res["rejected_shrinkwraps"]),
        },
        "timings": {"total_s": res["time_s"], "network_s": res.get("network_time_s", 0.0)},
        "start": "random" if network is None else "network",
        "model": None if network is None else str(network),
        "network": None
        if network is None
        else {"support": res["network_support"], "phase": res["network_phase"]},
        "geometry": volume.geometry or None,
        "config": full,
        "provenance": provenance(full, seed, data=str(data_path)),
    }
    if cfg["cdi"]["vtk"]:  # before the HDF5 result, the last file written
        write_vti(
            vtk_path(out_path), density_fields(tree), *centred_grid(volume.voxel_size, obj.shape)
        )
    attrs = {"model": cfg["model"]["type"], "centred": True, "units": volume.units}
    plot = {"signal": "/object", "pixel_size": volume.voxel_size, "title": "Bragg CDI density"}
    write_h5(out_path, tree, attrs=attrs, default_plot=plot)
    return res


def vtk_path(out_path) -> Path:
    """The VTK file written next to the HDF5 result ``out_path`` (``cdi.vtk``)."""
    return Path(out_path).with_suffix(".vti")


def reconstruct(cfg: dict, data_path, out_path, comm) -> str:
    """:func:`reconstruct_file` on one rank; returns a one-line summary (iterations,
    R-factor, oversampling per axis, voxel size or voxel units, time)."""
    kind = cfg["model"]["type"]
    if comm.size > 1:
        raise ConfigError(
            f"model.type: {kind} reconstructs one 3D pattern on one rank; got {comm.size} "
            "ranks (run it without mpiexec)"
        )
    res = reconstruct_file(cfg, data_path, out_path)
    voxel = res["voxel_size"]
    if voxel is None:
        units = "voxel units"
    else:
        units = "voxel " + " x ".join(f"{v * 1e9:.3g}" for v in np.atleast_1d(voxel)) + " nm"
    ratio = "/".join(f"{r:.2f}" for r in res["oversampling"])
    return (
        f"{kind}, {res['iterations']} iterations, R {res['r_factor']:.4f}, oversampling "
        f"{ratio} (Z/Y/X), {units}, {res['time_s']:.1f} s"
    )
