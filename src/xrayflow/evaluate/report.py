"""The evaluate stage: load objects, align, compute metrics, write JSON and figures.

Two comparisons:

* ``mode="truth"``: a reconstruction against the ground truth of simulated data. The
  reported FRC resolutions use the fixed thresholds 0.5 and 1/7 (primary: 0.5).
* ``mode="pair"``: two independent reconstructions (two half-datasets of real data). The
  primary FRC resolution uses the half-bit curve (van Heel & Schatz 2005).

All thresholds are computed in both modes; ``frc.primary`` names the one to quote.

Kinds of object (``kind``; ``auto``: from the datasets, the shapes and how the files'
modality is evaluated, :attr:`xrayflow.modalities.Modality.evaluate`; files without a known
modality, e.g. measured data from elsewhere, by the datasets and shapes alone):

* ``image``: 2D ``(Ny, Nx)`` (a ``(1, Ny, Nx)`` stack is squeezed);
* ``slices``: multislice ``(S, Ny, Nx)``; the primary comparison is on the projected
  transmission ``prod_s O_s`` (the quantity the data determine best), plus per-slice numbers
  when both have the same number of slices (the projection's shift applied to every slice,
  phase ramp and scale per slice);
* ``volume``: 3D complex density (modalities evaluated as ``density``): full 3D alignment
  including the conjugate twin, 3D Fourier shell correlation, SSIM on 3D volumes;
* ``refractive``: 3D refractive-index decrements delta and beta (datasets ``delta``/``beta``,
  modalities evaluated as ``refractive``): quantitative and on the truth's voxel grid, so
  nothing is aligned; SSIM, PSNR, RMSE and NRMSE of delta and of beta on the 3D volumes (data
  range: the reference's peak-to-peak), the Fourier shell correlation of delta;
* ``element_maps``: real element maps ``(E, Ny, Nx)`` in g/cm² (modalities evaluated as
  ``element_maps``; a result's ``maps`` against the truth's ``element_maps``, matched by the
  names in ``elements``): quantitative, nothing aligned; per element SSIM, PSNR, RMSE, NRMSE
  and the sub-lattice FRC of the map (one image: even against odd pixels, thresholds 1/7
  and half-bit), and the same for the truth's raster-scan maps at equal dose.

The pixel size (m) of a data file is the object pixel its geometry records
(:func:`xrayflow.io.cxi.read_object_pixel`); of a result file, ``pixel_size`` or
``voxel_size`` beside the object or above it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from scipy import ndimage

from xrayflow.backend import to_numpy
from xrayflow.config import load_config
from xrayflow.errors import ConfigError, DataError
from xrayflow.evaluate import alignment as al
from xrayflow.evaluate import frc as frcmod
from xrayflow.evaluate import metrics as me
from xrayflow.evaluate.figures import FIGURE_FILES, write_figures
from xrayflow.geometry import pixel_pair
from xrayflow.io.atomic import atomic_path, remove_stale_temporaries, temporary_prefix
from xrayflow.io.cxi import read_object_pixel
from xrayflow.modalities import get_modality
from xrayflow.provenance import provenance

__all__ = [
    "ELEMENT_MAP_PATHS",
    "ElementMaps",
    "ObjectData",
    "RESULT_PATHS",
    "TRUTH_PATHS",
    "evaluate",
    "evaluate_element_maps",
    "evaluate_files",
    "read_element_maps",
    "read_object",
]

SCHEMA_VERSION = 1

# Where the complex object is looked for, in order (first hit wins).
RESULT_PATHS = (
    "object",
    "reconstruction/object",
    "entry_1/reconstruction/object",
    "entry_1/xrayflow_truth/object",
    "entry_1/xrayflow_truth/transmission",
)
TRUTH_PATHS = (
    "entry_1/xrayflow_truth/object",
    "entry_1/xrayflow_truth/transmission",
    "entry_1/xrayflow_truth/density",
    "xrayflow_truth/object",
    "truth/object",
    "object",
)
# names of the pixel size (m) in result files (reconstruct stage: pixel_size; volumes: voxel_size)
RESULT_PIXEL_NAMES = ("pixel_size", "voxel_size")
# delta volumes (compared as 'refractive'), read when no complex object is found; beta is the
# sibling dataset "beta" (zero when absent)
DELTA_RESULT_PATHS = ("delta", "reconstruction/delta")
DELTA_TRUTH_PATHS = ("entry_1/xrayflow_truth/delta", "xrayflow_truth/delta", "delta")
# the modality: a dataset (data files), else a root attribute (result files: model)
MODALITY_PATHS = ("entry_1/xrayflow_attrs/modality", "modality")
MODALITY_ATTRS = ("modality", "model")
# element maps (kind element_maps): the maps, with the dataset `elements` beside them
ELEMENT_MAP_PATHS = {
    "result": ("maps", "reconstruction/maps"),
    "truth": ("entry_1/xrayflow_truth/element_maps",),
}
RASTER_PATH = "entry_1/xrayflow_truth/raster_maps"  # the raster scan at equal dose
PATTERNS_PATH = "entry_1/data_1/data"  # the recorded illumination patterns (K, Ny, Nx)
TRANSMISSION_PATH = "entry_1/xrayflow_signals/transmission"
SUBLATTICE_THRESHOLDS = ("1/7", "half_bit")  # of the element maps' sub-lattice FRC
SSIM_WINDOW = 11  # pixels per axis the SSIM's Gaussian window needs (metrics.ssim)
SSIM_NOTE = "array smaller than the 11-pixel SSIM window"


@dataclass
class ObjectData:
    """A complex object read from a file, with what the evaluation needs besides it."""

    object: np.ndarray
    pixel_size: float | None = None
    loss_history: dict[str, np.ndarray] = field(default_factory=dict)
    modality: str | None = None
    path: str = ""
    dataset: str = ""
    illumination: np.ndarray | None = None  # (Ny, Nx) sum over positions of |P|^2, or None
    refractive: bool = False  # object holds delta + i beta (3D), not a complex transmission


@dataclass
class ElementMaps:
    """Element maps read from a file (``maps`` (E, Ny, Nx), g/cm²), with what the
    evaluation needs besides them; the truth's also the raster scan and an example pattern."""

    maps: np.ndarray
    elements: list[str]
    pixel_size: float | None = None
    loss_history: dict[str, np.ndarray] = field(default_factory=dict)
    path: str = ""
    dataset: str = ""
    method: str | None = None  # the result's reconstruction method (ad, siren)
    raster: np.ndarray | None = None  # (E, Ny, Nx) raster-scan maps at equal dose, g/cm²
    pattern: np.ndarray | None = None  # (Ny, Nx) the first illumination pattern, photons/px
    transmission: np.ndarray | None = None  # (Ny, Nx) the transmission image


# --------------------------------------------------------------------------- loading
def illumination_map(probe: np.ndarray, corners: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum over scan positions of the probe intensity on the object grid, shape ``shape``.

    ``probe`` is (M, n, n) or (n, n) (modes add in intensity); ``corners`` (P, 2) are the
    top-left window corners in object pixels (rounded to the nearest pixel; windows are
    clipped at the grid edges).
    """
    power = np.abs(np.asarray(probe)) ** 2
    power = power.reshape(-1, *power.shape[-2:]).sum(axis=0)
    n_y, n_x = power.shape
    out = np.zeros(shape, dtype=np.float64)
    for cy, cx in np.rint(np.asarray(corners, dtype=np.float64)).astype(int):
        y0, x0 = max(cy, 0), max(cx, 0)
        y1, x1 = min(cy + n_y, shape[0]), min(cx + n_x, shape[1])
        if y1 > y0 and x1 > x0:
            out[y0:y1, x0:x1] += power[y0 - cy : y1 - cy, x0 - cx : x1 - cx]
    return out


def _read_illumination(f, shape: tuple) -> np.ndarray | None:
    """Illumination of a reconstruction file that stores ``probe`` and ``positions_px``."""
    if "probe" not in f or "positions_px" not in f or len(shape) < 2:
        return None
    corners = np.asarray(f["positions_px"][()], dtype=np.float64)
    if corners.ndim != 2 or corners.shape[1] != 2:
        return None
    return illumination_map(f["probe"][()], corners, shape[-2:])


def _as_str(v: Any) -> str:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, np.ndarray) and v.size == 1:
        return _as_str(v.ravel()[0])
    return str(v)


def _pixel_from(value: Any) -> float | None:
    """A stored pixel size (m): one number, or the mean of a ``(y, x)`` pair (equal in
    practice); None when absent or not positive."""
    yx = pixel_pair(value)
    return None if yx is None else (yx[0] + yx[1]) / 2


def _complex_from_node(node, label: str) -> np.ndarray:
    if isinstance(node, h5py.Group):
        keys = set(node.keys())
        if {"real", "imag"} <= keys:
            return np.asarray(node["real"][()]) + 1j * np.asarray(node["imag"][()])
        if {"amplitude", "phase"} <= keys:
            return np.asarray(node["amplitude"][()]) * np.exp(1j * np.asarray(node["phase"][()]))
        raise DataError(f"{label} is a group without real/imag or amplitude/phase datasets")
    arr = node[()]
    if arr.dtype.names and {"r", "i"} <= set(arr.dtype.names):
        arr = arr["r"] + 1j * arr["i"]
    arr = np.asarray(arr)
    if not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"{label} has non-numeric dtype {arr.dtype}")
    return arr.astype(np.complex128)


def _loss_history(f) -> dict[str, np.ndarray]:
    for key in ("loss_history", "loss", "history/loss"):
        if key not in f:
            continue
        node = f[key]
        out: dict[str, np.ndarray] = {}
        if isinstance(node, h5py.Group):
            for name, ds in node.items():
                if isinstance(ds, h5py.Dataset) and np.issubdtype(ds.dtype, np.number):
                    out[name] = np.asarray(ds[()], dtype=np.float64).ravel()
        else:
            arr = node[()]
            if arr.dtype.names:
                for name in arr.dtype.names:
                    out[name] = np.asarray(arr[name], dtype=np.float64).ravel()
            else:
                arr = np.asarray(arr, dtype=np.float64)
                if arr.ndim == 2:
                    cols = node.attrs.get("columns")
                    names = [_as_str(c) for c in cols] if cols is not None else None
                    for j in range(arr.shape[1]):
                        out[names[j] if names and j < len(names) else f"loss_{j}"] = arr[:, j]
                else:
                    out["loss"] = arr.ravel()
        return {k: v for k, v in out.items() if v.size}
    return {}


def read_object(path: str | os.PathLike, role: str = "result") -> ObjectData:
    """Read the complex object (and pixel size, loss history, modality) from an HDF5 file.

    ``role`` is ``"result"`` (a reconstruction: ``object`` first) or ``"truth"`` (simulated
    data: ``entry_1/xrayflow_truth/object`` first); see ``RESULT_PATHS`` / ``TRUTH_PATHS``.
    The pixel size (m) is the object pixel a data file's geometry records, else (result
    files) the attribute or sibling dataset ``pixel_size`` or ``voxel_size`` of the object,
    its parent groups or the file; None in pixel units (root attribute ``units``). The
    modality is the data file's ``modality`` or the result file's root attribute ``model``.
    Raises DataError with the tried paths when something is missing.
    """
    candidates = TRUTH_PATHS if role == "truth" else RESULT_PATHS
    deltas = DELTA_TRUTH_PATHS if role == "truth" else DELTA_RESULT_PATHS
    with _reading(path, role) as (f, label):
        name = next((c for c in candidates if c in f), None)
        refractive = name is None and any(c in f for c in deltas)
        if refractive:
            name = next(c for c in deltas if c in f)
        if name is None:
            top = ", ".join(sorted(f.keys())) or "nothing"
            raise DataError(
                f"{label} has no object dataset (looked for {', '.join(candidates)}, and "
                f"for delta volumes {', '.join(deltas)}; the file holds: {top})"
            )
        try:
            if refractive:
                obj = _refractive_from(f, name, label)
            else:
                obj = _complex_from_node(f[name], f"{label}: {name}")
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{label}: {name} cannot be read ({exc})") from None
        pixel = _pixel_from(read_object_pixel(f, label)) or _result_pixel(f[name])
        if _as_str(f.attrs.get("units", "")) in ("pixels", "px"):
            pixel = None  # a reconstruction in pixel units: no physical pixel size
        modality = _modality(f)
        losses = _loss_history(f) if role == "result" else {}
        with_illum = role == "result" and not refractive
        illum = _read_illumination(f, obj.shape) if with_illum else None
    if obj.ndim not in (2, 3) or min(obj.shape) < 1 or (refractive and obj.ndim != 3):
        want = "(Z, Y, X)" if refractive else "(Ny, Nx) or (S, Ny, Nx)"
        raise DataError(f"{label}: {name} has shape {obj.shape}, expected {want}")
    if not np.all(np.isfinite(obj)):
        raise DataError(f"{label}: {name} contains NaN or infinite values")
    return ObjectData(obj, pixel, losses, modality, str(Path(path)), name, illum, refractive)


@contextlib.contextmanager
def _reading(path: str | os.PathLike, role: str):
    """Open the HDF5 file ``path`` (the ``role`` file: result or truth) for reading; yields
    ``(file, label)``. A missing, unreadable or damaged file is a DataError naming it."""
    p = Path(path)
    label = f"{role} file {str(p)!r}"
    if not p.exists():
        raise DataError(f"{label} does not exist")
    if p.is_dir():
        raise DataError(f"{label} is a directory, expected an HDF5 file")
    try:
        f = h5py.File(p, "r")
    except OSError as exc:
        raise DataError(f"{label} is not a readable HDF5 file ({exc})") from None
    try:
        with f:
            yield f, label
    except DataError:
        raise
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as exc:
        # a damaged file (corrupt B-tree, heap or header) fails only when it is walked
        raise DataError(f"{label} cannot be read (truncated or corrupt?): {exc}") from None


def _result_pixel(node) -> float | None:
    """The first :data:`RESULT_PIXEL_NAMES` attribute or dataset of ``node`` (attributes
    only), its parent groups or the file root."""
    pixel = next((_pixel_from(node.attrs[k]) for k in RESULT_PIXEL_NAMES if k in node.attrs), None)
    grp = node.parent
    while pixel is None:
        for k in RESULT_PIXEL_NAMES:
            if k in grp.attrs:
                pixel = _pixel_from(grp.attrs[k])
            elif k in grp and isinstance(grp[k], h5py.Dataset):
                pixel = _pixel_from(grp[k][()])
            if pixel is not None:
                break
        if grp.name == "/":
            break
        grp = grp.parent
    return pixel


def _modality(f) -> str | None:
    """The modality a file records (:data:`MODALITY_PATHS`, :data:`MODALITY_ATTRS`)."""
    for mp in MODALITY_PATHS:
        if mp in f and isinstance(f[mp], h5py.Dataset):
            return _as_str(f[mp][()])
    return next((_as_str(f.attrs[a]) for a in MODALITY_ATTRS if a in f.attrs), None)


def _refractive_from(f, name: str, label: str) -> np.ndarray:
    """``delta + i beta`` from the real dataset ``name`` and its sibling ``beta``."""
    delta = np.asarray(f[name][()])
    beta_name = name.rsplit("/", 1)[0] + "/beta" if "/" in name else "beta"
    beta = np.asarray(f[beta_name][()]) if beta_name in f else np.zeros_like(delta)
    for arr, what in ((delta, name), (beta, beta_name)):
        if not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype, np.integer):
            raise DataError(f"{label}: {what} must be real numbers, got dtype {arr.dtype}")
    if beta.shape != delta.shape:
        raise DataError(f"{label}: {beta_name} {beta.shape} and {name} {delta.shape} differ")
    return delta.astype(np.float64) + 1j * beta.astype(np.float64)


def read_element_maps(path: str | os.PathLike, role: str = "result") -> ElementMaps:
    """Read element maps (:data:`ELEMENT_MAP_PATHS`) and their ``elements`` from an HDF5 file.

    ``role`` ``"result"``: a reconstruction (``maps``, ``elements``, ``loss``, ``method``);
    ``"truth"``: a simulated data file (``entry_1/xrayflow_truth/element_maps``, plus the
    raster maps, the first illumination pattern and the transmission image where present).
    Pixel size as :func:`read_object`. Without ``elements`` the maps are named by index.
    """
    with _reading(path, role) as (f, label):
        name = next((c for c in ELEMENT_MAP_PATHS[role] if c in f), None)
        if name is None:
            top = ", ".join(sorted(f.keys())) or "nothing"
            looked = ", ".join(ELEMENT_MAP_PATHS[role])
            raise DataError(f"{label} has no element maps (looked for {looked}; it holds: {top})")
        maps = _real_maps(f[name][()], f"{label}: {name}")
        names = name.rsplit("/", 1)[0] + "/elements" if "/" in name else "elements"
        if names in f:
            elements = [_as_str(e) for e in np.atleast_1d(f[names][()])]
        else:
            elements = [f"map {i}" for i in range(maps.shape[0])]
        if len(elements) != maps.shape[0]:
            raise DataError(
                f"{label}: {names} names {len(elements)} elements for {name} "
                f"of {maps.shape[0]} maps"
            )
        pixel = _pixel_from(read_object_pixel(f, label)) or _result_pixel(f[name])
        out = ElementMaps(maps, elements, pixel, path=str(Path(path)), dataset=name)
        if role == "result":
            out.loss_history = _loss_history(f)
            out.method = _as_str(f["method"][()]) if "method" in f else None
        else:
            if RASTER_PATH in f:
                out.raster = _real_maps(f[RASTER_PATH][()], f"{label}: {RASTER_PATH}")
            if PATTERNS_PATH in f and f[PATTERNS_PATH].ndim == 3 and len(f[PATTERNS_PATH]):
                out.pattern = np.asarray(f[PATTERNS_PATH][0], dtype=np.float64)
            if TRANSMISSION_PATH in f:
                out.transmission = np.asarray(f[TRANSMISSION_PATH][()], dtype=np.float64)
    return out


def _real_maps(arr: np.ndarray, label: str) -> np.ndarray:
    """Finite real maps as float64 ``(E, Ny, Nx)`` (one 2D map gets a leading axis)."""
    arr = np.asarray(arr)
    if arr.dtype.kind not in "iuf":
        raise DataError(f"{label} must be real numbers, got dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or min(arr.shape) < 1:
        raise DataError(f"{label} has shape {arr.shape}, expected (E, Ny, Nx)")
    if not np.all(np.isfinite(arr)):
        raise DataError(f"{label} contains NaN or infinite values")
    return arr.astype(np.float64)


# --------------------------------------------------------------------------- evaluation
def _evaluated_as(modality: str | None) -> str | None:
    """:attr:`Modality.evaluate` of a registered modality; None without one (or for a name
    the registry does not know: files from elsewhere)."""
    if not modality:
        return None
    try:
        return get_modality(modality).evaluate
    except ConfigError:
        return None


def modality_evaluator(files):
    """The evaluation module of the first of ``files`` (``(path, role)``) that records a
    registered modality with its own evaluation (:attr:`Modality.evaluator`), or None."""
    for path, role in files:
        with _reading(path, role) as (f, _):
            name = _modality(f)
        if name:
            try:
                module = get_modality(name).evaluator_module()
            except ConfigError:  # a name the registry does not know: files from elsewhere
                continue
            if module is not None:
                return module
    return None


def _element_maps(requested: str, files) -> bool:
    """Whether the comparison is of element maps: kind ``element_maps``, or ``auto`` and one
    of ``files`` (``(path, role)``) records a modality evaluated as ``element_maps`` or, as
    a result, holds element maps and no object."""
    if requested != "auto":
        return requested == "element_maps"
    for path, role in files:
        with _reading(path, role) as (f, _):
            if _evaluated_as(_modality(f)) == "element_maps":
                return True
            maps_only = not any(c in f for c in (*RESULT_PATHS, *DELTA_RESULT_PATHS))
            if role == "result" and maps_only and any(c in f for c in ELEMENT_MAP_PATHS[role]):
                return True
    return False


def _kind(result: ObjectData, ref: ObjectData, requested: str) -> str:
    shapes = (result.object.shape, ref.object.shape)
    if result.refractive != ref.refractive:
        which = "result" if result.refractive else "reference"
        raise DataError(
            f"the {which} holds delta/beta volumes ({(result if result.refractive else ref).path})"
            " and the other a complex object: they cannot be compared"
        )
    if result.refractive:
        if requested not in ("auto", "refractive"):
            raise DataError(f"kind {requested!r}: delta/beta volumes compare as 'refractive'")
        return "refractive"
    if requested == "refractive":
        raise DataError("kind 'refractive' needs delta/beta volumes (datasets delta and beta)")
    if requested == "element_maps":
        raise DataError("kind 'element_maps' compares element-map files (evaluate_element_maps)")
    if requested != "auto":
        return requested
    if all(len(s) == 2 or s[0] == 1 for s in shapes):
        return "image"
    if "density" in {_evaluated_as(result.modality), _evaluated_as(ref.modality)}:
        return "volume"
    return "slices"


def _prepare(obj: np.ndarray, kind: str) -> np.ndarray:
    if kind in ("volume", "refractive"):
        if obj.ndim != 3:
            raise DataError(f"kind {kind!r} needs a 3D object, got shape {obj.shape}")
        return obj
    if obj.ndim == 3:
        return obj[0] if obj.shape[0] == 1 else np.prod(obj, axis=0)
    return obj


def _pad_to_common(a: np.ndarray, shape: tuple | None = None) -> np.ndarray:
    """Zero-pad ``a`` symmetrically (centred) to ``shape`` where ``shape`` is larger."""
    if shape is None or len(shape) != a.ndim:
        return a
    pad = [max(0, t - n) for n, t in zip(a.shape, shape, strict=True)]
    return np.pad(a, [(p // 2, p - p // 2) for p in pad]) if any(pad) else a


#: Relative difference of two pixel sizes above which a result is resampled.
PIXEL_TOLERANCE = 1e-6


def _fit(a: np.ndarray, shape: tuple, mode: str) -> np.ndarray:
    """``a`` centre-cropped or padded (``np.pad`` ``mode``) to ``shape``."""
    out = a
    for ax, (n, t) in enumerate(zip(a.shape, shape, strict=True)):
        if n > t:
            out = np.take(out, np.arange((n - t) // 2, (n - t) // 2 + t), axis=ax)
        elif n < t:
            width = [(0, 0)] * a.ndim
            width[ax] = ((t - n) // 2, t - n - (t - n) // 2)
            out = np.pad(out, width, mode=mode)
    return out


def _onto_reference_grid(est: np.ndarray, res: ObjectData, ref: ObjectData, shape: tuple):
    """A 2D result whose pixel size differs from the reference's (e.g. another code's
    reconstruction): resampled by the ratio of the two pixel sizes (linear interpolation of
    the real and imaginary parts; its illumination likewise) and centre-cropped or
    edge-padded to the reference's ``shape``; registration then aligns it. Returns
    ``(est, res, record or None)``; unchanged when a pixel size is unknown or both agree."""
    a, b = res.pixel_size, ref.pixel_size
    if a is None or b is None or abs(a / b - 1) <= PIXEL_TOLERANCE:
        return est, res, None
    zoom = a / b
    out = ndimage.zoom(est.real, zoom, order=1) + 1j * ndimage.zoom(est.imag, zoom, order=1)
    illum = res.illumination
    if illum is not None:
        illum = _fit(ndimage.zoom(illum, zoom, order=1), shape, "constant")
    record = {"from_shape": list(est.shape), "from_pixel_m": a, "to_pixel_m": b, "zoom": zoom}
    moved = dataclasses.replace(res, illumination=illum, pixel_size=b)
    return _fit(out, shape, "edge"), moved, record


def _illuminated_box(res: ObjectData, kind: str, shape: tuple, fraction: float):
    """Slices (y, x) of the bounding box where the result's illumination >= fraction x max.

    None when the fraction is 0, the kind is a volume, or the result has no probe/positions.
    """
    if fraction <= 0 or kind in ("volume", "refractive") or res.illumination is None:
        return None
    illum = res.illumination
    if illum.shape != tuple(shape[-2:]) or not np.any(illum > 0):
        return None
    ys, xs = np.nonzero(illum >= fraction * illum.max())
    return (slice(int(ys.min()), int(ys.max()) + 1), slice(int(xs.min()), int(xs.max()) + 1))


def _finite(x: Any) -> Any:
    """JSON-safe copy: numpy -> python, non-finite floats -> None."""
    if isinstance(x, dict):
        return {str(k): _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    if isinstance(x, np.ndarray):
        return _finite(x.tolist())
    if isinstance(x, np.bool_ | bool):
        return bool(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, float | np.floating):
        v = float(x)
        return v if math.isfinite(v) else None
    return x


def _image_metrics(est: np.ndarray, ref: np.ndarray, cfg: dict) -> dict:
    """SSIM/PSNR/RMSE of amplitude and phase of aligned, cropped complex arrays."""
    out: dict[str, Any] = {"nrmse": me.nrmse(est, ref)}
    amp = _real_metrics(np.abs(est), np.abs(ref), "reference amplitude")
    mask = al.phase_mask(ref, cfg["amplitude_threshold"])
    dphi = np.angle(est * np.conj(ref))
    p_ref = np.angle(ref)
    p_est = p_ref + dphi  # unwrapped relative to the reference
    if cfg["phase_mapping"] == "unit":
        p_ref_m, p_est_m, prange = (p_ref + np.pi) / (2 * np.pi), (p_est + np.pi) / (2 * np.pi), 1.0
        mapping = "(phase + pi) / (2 pi), data_range 1"
    else:
        p_ref_m, p_est_m, prange = p_ref, p_est, 2 * np.pi
        mapping = "radians, data_range 2 pi"
    # The phase is undefined where the reference amplitude is below the threshold: there the
    # estimate takes the reference's value, so SSIM windows that straddle the mask edge compare
    # only phases that are defined.
    p_est_m = np.where(mask, p_est_m, p_ref_m)
    can_ssim = min(est.shape) >= SSIM_WINDOW
    pmse = float(np.mean((p_est_m - p_ref_m)[mask] ** 2)) if mask.any() else float("nan")
    phase: dict[str, Any] = {
        "mapping": mapping,
        "data_range": prange,
        "mask_threshold": cfg["amplitude_threshold"],
        "mask_fraction": float(mask.mean()),
        "rmse_rad": float(np.sqrt(np.mean(dphi[mask] ** 2))) if mask.any() else None,
        "psnr_db": (10 * math.log10(prange**2 / pmse) if pmse > 0 else float("inf"))
        if mask.any()
        else None,
        "ssim": me.ssim(p_ref_m, p_est_m, prange, mask=None if mask.all() else mask)
        if can_ssim
        else None,
    }
    if not can_ssim:
        phase["ssim_note"] = SSIM_NOTE
    out["amplitude"] = amp
    out["phase"] = phase
    return out


def _real_metrics(est: np.ndarray, ref: np.ndarray, what: str = "reference") -> dict:
    """SSIM/PSNR/RMSE of a real image or volume against ``ref`` (``what`` names it in
    ``data_range_source``); data range: the reference's peak-to-peak, or its peak when flat."""
    rng = float(ref.max() - ref.min())
    note = f"max - min of the {what}"
    if rng <= 1e-12 * max(float(np.abs(ref).max()), 1e-300):
        rng, note = float(np.abs(ref).max()) or 1.0, f"max of the {what} (its range is zero)"
    can_ssim = min(est.shape) >= SSIM_WINDOW
    out: dict[str, Any] = {
        "data_range": rng,
        "data_range_source": note,
        "psnr_db": me.psnr(ref, est, rng),
        "rmse": float(np.sqrt(np.mean((est - ref) ** 2))),
        "ssim": me.ssim(ref, est, rng) if can_ssim else None,
    }
    if not can_ssim:
        out["ssim_note"] = SSIM_NOTE
    return out


def _refractive_metrics(est: np.ndarray, ref: np.ndarray) -> dict:
    """``delta`` and ``beta`` blocks (:func:`_real_metrics` plus ``nrmse``) of
    ``delta + i beta`` volumes; the top-level ``nrmse`` is delta's."""
    out: dict[str, Any] = {}
    for name, e, r in (("delta", est.real, ref.real), ("beta", est.imag, ref.imag)):
        out[name] = {**_real_metrics(e, r), "nrmse": me.nrmse(e, r) if np.any(r) else None}
    out["nrmse"] = out["delta"]["nrmse"]
    return out


NOT_RESOLVED = "FRC below the threshold from the first ring on: not resolved"


def _resolution_dict(r) -> dict:
    """A :class:`~xrayflow.evaluate.frc.Resolution` as a dict with ``resolved``: False (and a
    ``note``) when the curve is below the threshold from the first ring on (crossing at zero
    frequency, infinite period): a reported result, not an error."""
    d = r.as_dict()
    d["resolved"] = not (d["crossed"] and not d["frequency"] > 0)
    if not d["resolved"]:
        d["note"] = NOT_RESOLVED
    return d


def _frc_block(est: np.ndarray, ref: np.ndarray, cfg: dict, pixel: float | None, mode: str):
    fc = cfg["frc"]
    on = fc["on"]
    a, b = est, ref
    if on == "delta":  # refractive volumes: the real part
        a, b = est.real, ref.real
    elif on == "phase":
        a, b = np.angle(est * np.conj(ref)) + np.angle(ref), np.angle(ref)
    elif on == "amplitude":
        a, b = np.abs(est), np.abs(ref)
    taper = [min(int(cfg["taper_px"]), n // 4) for n in a.shape]
    w = al.tukey_window(a.shape, taper)
    a = (a - a.mean()) * w
    b = (b - b.mean()) * w
    r = frcmod.frc(a, b, real=fc["numerator"] == "real")
    primary = fc["primary"]
    if primary == "auto":
        primary = "half_bit" if mode == "pair" else "0.5"
    return _curve_block(
        r,
        frcmod.ring_frequencies(r.radii, a.shape),
        [*map(str, fc["thresholds"]), primary],
        pixel,
        computed_on=on,
        numerator=fc["numerator"],
        taper_px=taper,
        primary=primary,
    )


def _curve_block(r: frcmod.FRC, freq, thresholds, pixel: float | None, **head) -> dict:
    """JSON block of one FRC curve: ``head`` (what it was computed on, ``primary``, ...),
    the resolution at each of ``thresholds`` (``freq``: cycles per pixel of each ring;
    ``pixel``: m or None), the curve and the Fourier pixels per ring."""
    res: dict[str, dict] = {}
    for name in thresholds:
        if name not in res:
            t = frcmod.threshold_curve(name, r.n_per_ring)
            res[name] = _resolution_dict(frcmod.resolution(r.curve, t, pixel, freq=freq))
    return {
        **head,
        "resolution_convention": frcmod.CONVENTION,
        "resolution": res,
        "frequency_cycles_per_px": freq,
        "curve": r.curve,
        "n_per_ring": r.n_per_ring,
    }


def evaluate(
    result: ObjectData | np.ndarray,
    reference: ObjectData | np.ndarray,
    config: dict | None = None,
    *,
    mode: str = "truth",
    return_arrays: bool = False,
):
    """Compare ``result`` with ``reference`` (ground truth or a second reconstruction).

    Args:
        result, reference: :class:`ObjectData` or complex arrays.
        config: the evaluate configuration (``load_config(..., "evaluate")``); None uses
            the schema defaults.
        mode: ``"truth"`` or ``"pair"`` (see the module docstring).
        return_arrays: also return the aligned arrays and FRC data for figures.

    Returns:
        The metrics dict (JSON-ready: plain Python types, non-finite values as None), or
        ``(metrics, arrays)`` with ``return_arrays``.
    """
    cfg = _default_config() if config is None else config
    res = result if isinstance(result, ObjectData) else ObjectData(to_numpy(result))
    ref = reference if isinstance(reference, ObjectData) else ObjectData(to_numpy(reference))
    if mode not in ("truth", "pair"):
        raise ValueError("mode must be 'truth' or 'pair'")
    kind = _kind(res, ref, cfg["kind"])
    e0 = np.asarray(res.object, dtype=np.complex128)
    r0 = np.asarray(ref.object, dtype=np.complex128)
    est = _prepare(e0, kind)
    tru = _prepare(r0, kind)
    resampled = None
    if kind == "volume":  # the truth's density box sits inside the oversampled data grid
        tru = _pad_to_common(tru, est.shape)
        est = _pad_to_common(est, tru.shape)
    elif kind in ("image", "slices"):
        est, res, resampled = _onto_reference_grid(est, res, ref, tru.shape)
    if est.shape != tru.shape:
        raise DataError(
            f"shape mismatch: result object {e0.shape} vs reference {r0.shape} "
            f"(compared as {kind}: {est.shape} vs {tru.shape}) on the same or an unknown "
            "pixel size (a result on another pixel size is resampled: record pixel_size)"
        )
    pixel = cfg.get("pixel_size") or res.pixel_size or ref.pixel_size
    box = _illuminated_box(res, kind, est.shape, cfg["illuminated_fraction"])
    if box is not None:
        est, tru = est[box], tru[box]
        e0, r0 = e0[(...,) + box], r0[(...,) + box]
    acfg = cfg["align"]
    twin_check = acfg["twin"] is True or (acfg["twin"] == "auto" and kind == "volume")
    if kind == "refractive":  # quantitative, on the truth's grid: nothing to remove
        aligned, info = est, {"enabled": False, "reason": "delta/beta are not aligned"}
    elif acfg["enabled"]:
        aligned, info = al.align(
            est,
            tru,
            global_phase=acfg["global_phase"],
            scale=acfg["scale"],
            ramp=acfg["ramp"],
            register=acfg["register"],
            twin_check=twin_check,
            upsample=int(acfg["upsample"]),
        )
    else:
        aligned, info = est, {"enabled": False}
    # Edges: crop_px, and at least the pixels the registration shift moved in (plus 2 for
    # the ringing of the circular Fourier shift).
    auto = [int(math.ceil(abs(v))) + 2 if v else 0 for v in info.get("shift_px", [])]
    margin = [max(int(cfg["crop_px"]), a) for a in auto] or [int(cfg["crop_px"])] * est.ndim
    if any(n - 2 * m < 11 for n, m in zip(aligned.shape, margin, strict=True)):
        why = ""
        if any(a > int(cfg["crop_px"]) for a in auto):
            shift = [round(float(v), 1) for v in info["shift_px"]]
            why = (
                f" (the registration shift {shift} px sets the margin: the result may not "
                "resemble the reference; align.register: false compares it unshifted)"
            )
        raise DataError(
            f"cropping {margin} px per side leaves too little of an object of shape "
            f"{est.shape}{why}"
        )
    ec = al.crop(aligned, margin)
    rc = al.crop(tru, margin)
    metrics: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "mode": mode,
        "kind": kind,
        "result": res.path or None,
        "reference": ref.path or None,
        "result_dataset": res.dataset or None,
        "reference_dataset": ref.dataset or None,
        "shape": list(est.shape),
        "evaluated_shape": list(ec.shape),
        "illuminated_box": None if box is None else [[b.start, b.stop] for b in box],
        "crop_px": margin,  # per axis, applied after alignment
        "pixel_size_m": pixel,
        "resampled": resampled,
        "alignment": info,
    }
    fcfg = cfg
    if kind == "refractive":  # FSC of delta
        metrics.update(_refractive_metrics(ec, rc))
        fcfg = {**cfg, "frc": {**cfg["frc"], "on": "delta"}}
    else:
        metrics.update(_image_metrics(ec, rc, cfg))
    metrics["frc"] = _frc_block(ec, rc, fcfg, pixel, mode)
    if kind == "slices" and e0.ndim == 3 and e0.shape == r0.shape and e0.shape[0] > 1:
        per = []
        shift = info.get("shift_px", [0.0, 0.0])
        for s in range(e0.shape[0]):
            xs = al.fourier_shift(e0[s], shift) if acfg["enabled"] else e0[s]
            if acfg["enabled"]:
                xs, _ = al.align(
                    xs,
                    r0[s],
                    register=False,
                    scale=acfg["scale"],
                    ramp=acfg["ramp"],
                    upsample=int(acfg["upsample"]),
                )
            xs = al.crop(xs, margin)
            rs = al.crop(r0[s], margin)
            im = _image_metrics(xs, rs, cfg)
            per.append(
                {
                    "index": s,
                    "nrmse": im["nrmse"],
                    "amplitude_ssim": im["amplitude"]["ssim"],
                    "phase_ssim": im["phase"]["ssim"],
                    "phase_rmse_rad": im["phase"]["rmse_rad"],
                }
            )
        metrics["slices"] = per
    if res.loss_history:
        metrics["loss"] = _loss_summary(res.loss_history)
    metrics = _finite(metrics)
    if not return_arrays:
        return metrics
    arrays = {
        "est": ec,
        "ref": rc,
        "loss_history": res.loss_history,
        "loss_history_ref": ref.loss_history if mode == "pair" else {},
    }
    return metrics, arrays


def evaluate_element_maps(
    result: ElementMaps, reference: ElementMaps, config: dict | None = None
) -> tuple[dict, dict]:
    """Compare element maps with the truth: per element (matched by name) SSIM, PSNR (dB),
    RMSE and NRMSE (data range: the truth map's peak-to-peak) and the sub-lattice FRC of the
    result's map (:func:`~xrayflow.evaluate.frc.sublattice_frc`; thresholds 1/7 and
    half-bit, primary 1/7 unless ``frc.primary`` names another); the same for the truth's
    raster-scan maps at equal dose (``raster``). ``crop_px`` is removed from every edge.

    Returns ``(metrics, arrays)``: the JSON-ready metrics (``maps`` and ``raster``:
    ``{element: {ssim, psnr_db, rmse, nrmse, data_range, frc}}``) and the cropped maps
    (``est``, ``ref``, ``raster``), the example pattern, the transmission and the loss
    history for the figures.
    """
    cfg = _default_config() if config is None else config
    missing = [e for e in reference.elements if e not in result.elements]
    if missing:
        raise DataError(
            f"the result {result.path or ''} has no map of {', '.join(missing)} "
            f"(it holds {', '.join(result.elements)}; the truth: {', '.join(reference.elements)})"
        )
    est = result.maps[[result.elements.index(e) for e in reference.elements]]
    for what, arr in (("result maps", est), ("raster maps", reference.raster)):
        if arr is not None and arr.shape != reference.maps.shape:
            raise DataError(
                f"shape mismatch: {what} {arr.shape} vs truth maps {reference.maps.shape}"
            )
    margin = int(cfg["crop_px"])
    if min(reference.maps.shape[1:]) - 2 * margin < SSIM_WINDOW:
        raise DataError(
            f"cropping {margin} px per side leaves too little of maps of shape "
            f"{reference.maps.shape[1:]} (at least {SSIM_WINDOW} px per axis)"
        )
    pixel = cfg.get("pixel_size") or result.pixel_size or reference.pixel_size

    def crop(a):
        return al.crop(a, [0, margin, margin])

    ec, rc = crop(est), crop(reference.maps)
    metrics: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "mode": "truth",
        "kind": "element_maps",
        "result": result.path or None,
        "reference": reference.path or None,
        "result_dataset": result.dataset or None,
        "reference_dataset": reference.dataset or None,
        "method": result.method,
        "elements": list(reference.elements),
        "shape": list(reference.maps.shape),
        "evaluated_shape": list(ec.shape),
        "crop_px": margin,
        "pixel_size_m": pixel,
        "maps": _element_blocks(ec, rc, reference.elements, cfg, pixel),
    }
    arrays: dict[str, Any] = {
        "est": ec,
        "ref": rc,
        "raster": None,
        "elements": list(reference.elements),
        "pattern": reference.pattern,
        "transmission": reference.transmission,
        "loss_history": result.loss_history,
    }
    if reference.raster is not None:
        arrays["raster"] = crop(reference.raster)
        metrics["raster"] = _element_blocks(arrays["raster"], rc, reference.elements, cfg, pixel)
    if result.loss_history:
        metrics["loss"] = _loss_summary(result.loss_history)
    return _finite(metrics), arrays


def _element_blocks(est: np.ndarray, ref: np.ndarray, elements, cfg: dict, pixel) -> dict:
    """``{element: metrics}`` of maps ``est`` against ``ref`` (both (E, Ny, Nx))."""
    fc = cfg["frc"]
    primary = "1/7" if fc["primary"] == "auto" else str(fc["primary"])
    taper = [min(int(cfg["taper_px"]), n // 4) for n in est.shape[1:]]
    window = al.tukey_window(est.shape[1:], taper)
    out = {}
    for e, r, name in zip(est, ref, elements, strict=True):
        block = {**_real_metrics(e, r, f"truth {name} map"), "nrmse": me.nrmse(e, r)}
        sub, freq = frcmod.sublattice_frc((e - e.mean()) * window, real=fc["numerator"] == "real")
        block["frc"] = _curve_block(
            sub,
            freq,
            [*SUBLATTICE_THRESHOLDS, primary],
            pixel,
            computed_on="sub-lattices: even vs odd rows and columns of the map",
            numerator=fc["numerator"],
            taper_px=taper,
            primary=primary,
        )
        out[name] = block
    return out


def _loss_summary(history: dict[str, np.ndarray]) -> dict:
    """Final value, minimum and length of each loss history."""
    return {
        k: {"final": float(v[-1]), "min": float(np.min(v)), "n": int(v.size)}
        for k, v in history.items()
    }


def _default_config() -> dict:
    return load_config({}, "evaluate")


def evaluate_files(
    result_path: str | os.PathLike,
    reference_path: str | os.PathLike,
    out: str | os.PathLike,
    config: dict | None = None,
    *,
    mode: str = "truth",
    figures: str | os.PathLike | None = None,
) -> dict:
    """Read both files, :func:`evaluate` (element maps: :func:`evaluate_element_maps`),
    write ``out`` (JSON) and optional figures."""
    cfg = _default_config() if config is None else config
    ref_role = "truth" if mode == "truth" else "result"
    files = ((result_path, "result"), (reference_path, ref_role))
    own = modality_evaluator(files) if cfg["kind"] == "auto" else None
    writer = None
    if own is not None:
        if mode != "truth":
            raise DataError(
                "this modality's results are compared with their truth: --result R --truth D"
            )
        metrics, arrays = own.evaluate(result_path, reference_path, cfg)
        writer = own.write_figures
    elif _element_maps(cfg["kind"], files):
        if mode != "truth":
            raise DataError("element maps are compared with their truth: --result R --truth D")
        metrics, arrays = evaluate_element_maps(
            read_element_maps(result_path, "result"),
            read_element_maps(reference_path, "truth"),
            cfg,
        )
    else:
        res = read_object(result_path, "result")
        ref = read_object(reference_path, ref_role)
        metrics, arrays = evaluate(res, ref, cfg, mode=mode, return_arrays=True)
    try:
        metrics["provenance"] = _finite(provenance(cfg))
    except Exception:
        metrics["provenance"] = None
    metrics["config"] = _finite(cfg)
    names = getattr(own, "FIGURE_NAMES", ())
    publish(out, metrics, figures, arrays, cfg, writer=writer, figure_names=names)
    return metrics


def publish(
    out: str | os.PathLike,
    metrics: dict,
    figures: str | os.PathLike | None = None,
    arrays: dict | None = None,
    config: dict | None = None,
    writer=None,
    figure_names: tuple[str, ...] = (),
) -> None:
    """Write the metrics JSON and the figures together or not at all.

    ``writer``: ``(directory, metrics, arrays, config) -> [paths]``, the figures of a
    modality's own evaluation (default :func:`write_figures`), whose names are
    ``figure_names``.

    Figures are rendered into a temporary folder beside ``figures`` and the JSON text is
    made first; only then are the figures moved into place (a rename of the whole folder
    when it does not exist yet) and the JSON renamed onto ``out``. A failure before or
    during that leaves neither (an earlier run's figures are put back).
    """
    fdir = None if figures is None else Path(figures)
    tmpdir: Path | None = None
    undo: list = []
    try:
        if fdir is not None:
            remove_stale_temporaries(fdir)  # folders of killed runs
            tmpdir = Path(tempfile.mkdtemp(prefix=temporary_prefix(fdir), dir=fdir.parent))
            written = (writer or write_figures)(tmpdir, metrics, arrays or {}, config)
            metrics["figures"] = [str(fdir / p.name) for p in written]
        text = json.dumps(_finite(metrics), indent=2, allow_nan=False, default=str) + "\n"
        with atomic_path(out) as tmp:
            tmp.write_text(text, encoding="utf-8")
            if fdir is not None and tmpdir is not None:
                _move_figures(tmpdir, fdir, undo, (*FIGURE_NAMES, *figure_names))
    except BaseException:
        for step in reversed(undo):
            with contextlib.suppress(OSError):
                step()
        raise
    finally:
        if tmpdir is not None and tmpdir.exists():
            shutil.rmtree(tmpdir, ignore_errors=True)


FIGURE_NAMES = FIGURE_FILES  # every file write_figures may write


def _move_figures(tmpdir: Path, fdir: Path, undo: list, names=FIGURE_NAMES) -> None:
    """Move the figures of ``tmpdir`` into ``fdir``, appending the undo steps to ``undo``.

    A missing ``fdir`` is created by renaming ``tmpdir`` (atomic). Into an existing folder
    each figure is renamed in, and a figure of an earlier evaluation that this one does not
    make (``loss.png``) is moved aside, so the folder never mixes two runs; the replaced
    files are kept in ``tmpdir`` until the metrics are in place, for the undo.
    """
    if not fdir.exists():
        os.rename(tmpdir, fdir)
        undo.append(lambda: shutil.rmtree(fdir))
        return
    old = tmpdir / ".previous"
    old.mkdir()
    new = {p.name for p in tmpdir.iterdir() if p.is_file()}
    for name in names:
        target = fdir / name
        if target.is_file():
            os.replace(target, old / name)
            undo.append(lambda n=name: os.replace(old / n, fdir / n))
        if name in new:
            os.replace(tmpdir / name, target)
            undo.append(lambda t=target: t.unlink())
