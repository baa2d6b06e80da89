"""3D volumes from files: a 3D diffraction pattern (Bragg CDI) and its mask, axes (Z, Y, X).

Formats (:data:`FORMATS`; ``auto``: from the file name, :func:`volume_format`):

* ``npy``: a NumPy array file (``.npy``);
* ``npz``: a NumPy archive (``.npz``), the array named by a key;
* ``tiff``: a multi-page TIFF stack (``.tif``, ``.tiff``), one page per Z slice;
* ``hdf5``: one dataset of an HDF5 or NeXus file (``.h5``, ``.hdf5``, ``.hdf``, ``.nxs``),
  named by its path in the file (e.g. ``/entry/data/data``); with ``auto``, an HDF5 file
  without that dataset but with the CXI layout is read as ``cxi``;
* ``cxi``: the CXI layout of the simulate stage (``entry_1/data_1/data`` (Z, Y, X)), with
  what it records, all of it optional: the photon energy, the sample-detector distance and
  the detector pixel (``entry_1/instrument_1``), the object voxel
  (``entry_1/xrayflow_attrs``), the detector mask (CXI convention: 0 = good pixel; (Y, X) for
  every Z slice, or (Z, Y, X)) and the attribute ``centred`` of the data.

Leading axes of length 1 are dropped; what remains must be 3D with at least 2 voxels per
axis. Values are returned as stored (any real dtype); the caller decides what they are
(intensities or amplitudes) and where the zero frequency is. A file that cannot be read,
a key it does not hold, or an array that is not a 3D volume is a DataError naming the file
(and the key and its config key).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import tifffile

from xrayflow.errors import DataError
from xrayflow.io.cxi import (
    ATTRS_GROUP,
    DATA_PATHS,
    DETECTOR,
    SOURCE,
    TRANSLATION_PATHS,
    _data_dataset,
    _find,
    _read_group,
    _scalar,
    check_real_counts,
    is_centred,
    read_object_pixel,
    recorded_centring,
)
from xrayflow.io.hdf5 import open_h5
from xrayflow.optics.constants import energy_ev_from_wavelength, joule_to_energy_ev

__all__ = [
    "FORMATS",
    "GEOMETRY_DATASETS",
    "VolumeFile",
    "read_mask_file",
    "read_volume_file",
    "volume_format",
]

#: The formats a volume can be read from.
FORMATS = ("npy", "npz", "tiff", "hdf5", "cxi")
#: File-name endings of each format, for ``auto``.
SUFFIXES = {
    "npy": (".npy",),
    "npz": (".npz",),
    "tiff": (".tif", ".tiff"),
    "cxi": (".cxi",),
    "hdf5": (".h5", ".hdf5", ".hdf", ".nxs"),
}
#: Where a CXI file records each geometry entry of :attr:`VolumeFile.geometry`.
GEOMETRY_DATASETS = {
    "energy_ev": f"{SOURCE}/energy (J) or wavelength (m)",
    "distance": f"{DETECTOR}/distance (m)",
    "detector_pixel_size": f"{DETECTOR}/y_pixel_size, x_pixel_size (m)",
    "object_pixel_size": f"{ATTRS_GROUP}/object_pixel_size (m)",
}
CXI_MASK = f"{DETECTOR}/mask"


@dataclass(frozen=True)
class VolumeFile:
    """A volume as a file holds it.

    Attributes:
        data: (Z, Y, X) values as stored (real dtype).
        format: the format it was read as (one of :data:`FORMATS`).
        centred: True/False when the file records whether the zero frequency is in the
            middle (CXI, or an HDF5 dataset's attribute ``centred``); None when it does not.
        mask: (Z, Y, X) bool, True = good voxel, from the file itself (CXI detector mask),
            or None.
        geometry: what the file records of ``energy_ev`` (eV), ``distance`` (m),
            ``detector_pixel_size`` ((y, x), m) and ``object_pixel_size`` ((y, x), m):
            recorded entries only, as stored (unchecked; :data:`GEOMETRY_DATASETS` says where).
        attrs: the CXI file's ``entry_1/xrayflow_attrs`` (empty for other formats).
    """

    data: np.ndarray
    format: str
    centred: bool | None = None
    mask: np.ndarray | None = None
    geometry: dict = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)


def volume_format(path, fmt: str = "auto", setting: str | None = "data.format") -> str:
    """``fmt``, or for ``auto`` the format its name ends with (:data:`SUFFIXES`, any case);
    DataError for a name without a known ending (naming the config key ``setting`` that
    sets the format, if any)."""
    if fmt != "auto":
        return fmt
    name = Path(path).name.lower()
    for kind, endings in SUFFIXES.items():
        if name.endswith(endings):
            return kind
    known = ", ".join(e for endings in SUFFIXES.values() for e in endings)
    hint = f"set {setting} to one of {', '.join(FORMATS)}" if setting else "rename it"
    raise DataError(
        f"{str(path)!r}: cannot tell the volume format from the file name (known endings: "
        f"{known}); {hint}"
    )


def read_volume_file(
    path, fmt: str = "auto", key: str = "data", key_name: str = "data.keys.data"
) -> VolumeFile:
    """The volume in ``path``: format ``fmt`` (``auto``: :func:`volume_format`); ``key``
    names the array of an ``npz`` archive or the dataset of an ``hdf5`` file (the config
    key ``key_name`` sets it; errors name both)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{str(path)!r}: data file does not exist")
    kind = volume_format(path, fmt)
    if kind == "cxi" or (
        kind == "hdf5" and fmt == "auto" and not _has_dataset(path, key) and _is_cxi(path)
    ):
        return _read_cxi(path)
    arr, centred = _read_array(path, kind, key, key_name)
    check_real_counts(arr.dtype, f"{str(path)!r}")
    return VolumeFile(_as_volume(arr, path), kind, centred)


def read_mask_file(path, shape, key: str = "mask", key_name: str = "data.keys.mask") -> np.ndarray:
    """The good-voxel mask in ``path`` (bool (Z, Y, X): True where the stored value is
    nonzero), which must have the volume's ``shape``; the format from the file name and
    ``key`` as :func:`read_volume_file` (a ``.cxi`` file: the dataset ``key``). DataError
    naming the file for a mask of another shape, NaN values or no good voxel."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{str(path)!r}: mask file (data.mask) does not exist")
    kind = volume_format(path, setting=None)
    arr, _ = _read_array(path, "hdf5" if kind == "cxi" else kind, key, key_name)
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{str(path)!r}: mask holds values of dtype {arr.dtype}; expected 0/1")
    m = np.asarray(arr)
    while m.ndim > len(shape) and m.shape[0] == 1:
        m = m[0]
    if m.shape != tuple(shape):
        raise DataError(
            f"{str(path)!r}: the mask (data.mask) has shape {m.shape}, the data {tuple(shape)}; "
            "it must have the data's shape (Z, Y, X)"
        )
    if m.dtype.kind == "f" and not np.isfinite(m).all():
        raise DataError(f"{str(path)!r}: the mask holds NaN/inf; expected 0 (bad) / 1 (good)")
    good = m != 0
    if not good.any():
        raise DataError(
            f"{str(path)!r}: the mask marks every voxel as bad (convention: nonzero = good voxel)"
        )
    return good


# ----------------------------------------------------------------------------- arrays
def _read_array(path: Path, kind: str, key: str, key_name: str) -> tuple[np.ndarray, bool | None]:
    """The array of ``path`` read as ``kind`` (not ``cxi``) and the ``centred`` attribute
    an HDF5 dataset records (else None)."""
    source = f"{str(path)!r}"
    if kind == "npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise DataError(f"{source}: cannot read as a NumPy .npy file: {exc}") from None
        if not isinstance(arr, np.ndarray):  # an archive under a .npy name
            arr.close()
            raise DataError(f"{source}: is a NumPy archive (.npz), not an array; set data.format")
        return arr, None
    if kind == "npz":
        try:
            with np.load(path, allow_pickle=False) as arc:
                if key not in arc.files:
                    raise DataError(
                        f"{source}: no array {key!r} ({key_name}); the archive holds "
                        f"{sorted(arc.files)}"
                    )
                return arc[key], None
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise DataError(f"{source}: cannot read as a NumPy archive (.npz): {exc}") from None
    if kind == "tiff":
        try:
            return np.asarray(tifffile.imread(path)), None
        except (OSError, ValueError, tifffile.TiffFileError) as exc:
            raise DataError(f"{source}: cannot read as a TIFF stack: {exc}") from None
    with open_h5(path) as f:
        node = f.get(key)
        if isinstance(node, h5py.Group):
            raise DataError(
                f"{source}: {key!r} ({key_name}) is a group, not a dataset; it holds "
                f"{sorted(node.keys())[:20]}"
            )
        if node is None:
            found = _datasets(f)
            raise DataError(
                f"{source}: no dataset {key!r} ({key_name}); datasets of 3 or more dimensions "
                f"in the file: {found[:10] or 'none'}"
            )
        try:
            arr = node[()]
        except (OSError, RuntimeError, TypeError, ValueError) as exc:
            raise DataError(f"{source}: cannot read {node.name} (corrupt?): {exc}") from None
        return np.asarray(arr), recorded_centring(node)


def _as_volume(arr: np.ndarray, path: Path, what: str = "the data") -> np.ndarray:
    """``arr`` without leading axes of length 1: 3D with at least 2 voxels per axis, else
    DataError."""
    a = arr
    while a.ndim > 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 3 or min(a.shape) < 2:
        raise DataError(
            f"{str(path)!r}: {what} (shape {arr.shape}) is not a 3D Bragg CDI volume; expected "
            "(Z, Y, X) with at least 2 voxels per axis"
        )
    return a


def _has_dataset(path: Path, key: str) -> bool:
    with open_h5(path) as f:
        return isinstance(f.get(key), h5py.Dataset)


def _is_cxi(path: Path) -> bool:
    with open_h5(path) as f:
        return _find(f, DATA_PATHS) is not None


def _datasets(f: h5py.File) -> list[str]:
    """Paths of the datasets of 3 or more dimensions in ``f``."""
    found = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and obj.ndim >= 3:
            found.append("/" + name)

    f.visititems(visit)
    return found


# ----------------------------------------------------------------------------- CXI
def _read_cxi(path: Path) -> VolumeFile:
    source = f"{str(path)!r}"
    with open_h5(path) as f:
        ds = _data_dataset(f, source)
        check_real_counts(ds.dtype, f"{source}: {ds.name}")
        attrs = _read_group(f, ATTRS_GROUP)
        fft_ndim = attrs.get("fft_ndim")
        if (fft_ndim is not None and fft_ndim != 3) or _find(f, TRANSLATION_PATHS):
            raise DataError(
                f"{source}: not a 3D Bragg CDI volume (data shape {ds.shape}, attrs fft_ndim "
                f"{fft_ndim}, scan positions: {_find(f, TRANSLATION_PATHS) is not None}; "
                "expected one 3D pattern, as the simulate stage writes with fft_ndim 3)"
            )
        try:
            data = _as_volume(ds[()], path, ds.name)
        except (OSError, RuntimeError, ValueError) as exc:
            raise DataError(
                f"{source}: cannot read {ds.name} (truncated or corrupt): {exc}"
            ) from None
        return VolumeFile(
            data,
            "cxi",
            is_centred(ds),
            _cxi_mask(f, data.shape, source),
            _cxi_geometry(f, source),
            attrs,
        )


def _cxi_mask(f: h5py.File, shape, source: str) -> np.ndarray | None:
    """The detector mask of a CXI file as good voxels (0 or 0x1000 = good), (Y, X) repeated
    along Z or (Z, Y, X); None when there is none."""
    if CXI_MASK not in f:
        return None
    m = np.asarray(f[CXI_MASK][()])
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    if m.shape not in (tuple(shape), tuple(shape[1:])):
        raise DataError(f"{source}: {CXI_MASK} has shape {m.shape}, the data {tuple(shape)}")
    m = m.astype(np.uint32)
    return np.broadcast_to((m == 0) | (m == 0x1000), shape)


def _cxi_geometry(f: h5py.File, source: str) -> dict:
    """The geometry entries a CXI file records (see :attr:`VolumeFile.geometry`)."""
    out = {}
    energy_j = _scalar(f, f"{SOURCE}/energy", source)
    wl = _scalar(f, f"{SOURCE}/wavelength", source)
    if energy_j is not None:
        out["energy_ev"] = float(joule_to_energy_ev(energy_j))
    elif wl is not None and wl > 0:
        out["energy_ev"] = float(energy_ev_from_wavelength(wl))
    distance = _scalar(f, f"{DETECTOR}/distance", source)
    if distance is not None:
        out["distance"] = distance
    px = _scalar(f, f"{DETECTOR}/x_pixel_size", source)
    py = _scalar(f, f"{DETECTOR}/y_pixel_size", source)
    if px is not None or py is not None:
        out["detector_pixel_size"] = (py if py is not None else px, px if px is not None else py)
    obj = read_object_pixel(f, source)
    if obj is not None:
        out["object_pixel_size"] = obj
    return out
