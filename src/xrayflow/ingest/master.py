"""NeXus/HDF5 master files: frames behind external links, detector geometry and masks.

Datasets are looked up by path; a broken external link is reported with its target
(``DataError`` naming the file, the link and the linked file). Values carry NeXus ``units``
attributes, converted here to SI (m, eV); a field without units gets the default of
:data:`DEFAULT_UNITS` (those of DECTRIS Eiger master files).
"""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np

from xrayflow.errors import DataError
from xrayflow.io.cxi import check_real_counts
from xrayflow.optics.constants import EV_TO_J, energy_ev_from_wavelength

#: metres per unit of length (NeXus ``units`` attribute, lower case)
LENGTH_UNITS = {
    "m": 1.0,
    "mm": 1e-3,
    "um": 1e-6,
    "µm": 1e-6,
    "micron": 1e-6,
    "microns": 1e-6,
    "nm": 1e-9,
    "angstrom": 1e-10,
    "a": 1e-10,
    "å": 1e-10,
}
#: eV per unit of energy
ENERGY_UNITS = {"ev": 1.0, "kev": 1e3, "j": 1.0 / EV_TO_J}
#: units assumed for a field without a ``units`` attribute
DEFAULT_UNITS = {"length": "m", "wavelength": "angstrom", "energy": "ev"}

DETECTOR = "/entry/instrument/detector"
#: (group path, field, kind) of the photon energy, in the order tried
ENERGY_FIELDS = (
    ("/entry/instrument/beam", "incident_energy", "energy"),
    ("/entry/instrument/monochromator", "energy", "energy"),
    ("/entry/instrument/beam", "incident_wavelength", "wavelength"),
    ("/entry/instrument/monochromator", "wavelength", "wavelength"),
)
DISTANCE_FIELDS = ("detector_distance", "distance")  # DECTRIS name first, then NXdetector
PIXEL_MASK_FIELDS = ("pixel_mask", "detectorSpecific/pixel_mask")
LINKED_FRAMES = re.compile(r"data_\d+$")


def dataset(f: h5py.File, key: str, source: str) -> h5py.Dataset:
    """Dataset ``key`` of the open file ``f`` (``source``: its name in messages)."""
    try:
        link = f.get(key, getlink=True)
    except (KeyError, OSError, ValueError):
        link = None
    if link is None:
        raise DataError(f"{source}: no dataset {key!r}")
    try:
        node = f[key]
    except (KeyError, OSError) as exc:
        if isinstance(link, h5py.ExternalLink):
            target = Path(link.filename)
            if not target.is_absolute():
                target = Path(source).parent / target
            why = "file not found" if not target.exists() else str(exc).strip()
            raise DataError(
                f"{source}: {key} is an external link to {link.filename}:{link.path}, "
                f"which cannot be opened ({why})"
            ) from None
        raise DataError(f"{source}: cannot open {key} ({exc})") from None
    if not isinstance(node, h5py.Dataset):
        raise DataError(f"{source}: {key} is a group, not a dataset")
    return node


def frame_datasets(f: h5py.File, source: str, key: str) -> list[tuple[str, h5py.Dataset]]:
    """The frame datasets of a master file, in frame order, as ``(label, dataset)``.

    ``key`` ``"auto"``: the ``/entry/data/data_NNNNNN`` entries (external links to the
    data files, in name order), else ``/entry/data/data``; otherwise the dataset ``key``.
    """
    if key == "auto":
        group = f.get("/entry/data")
        names = sorted(n for n in group if LINKED_FRAMES.match(n)) if group is not None else []
        if not names:
            if "/entry/data/data" not in f:
                raise DataError(
                    f"{source}: no frames (looked for /entry/data/data_NNNNNN links and "
                    "/entry/data/data); set frames.dataset"
                )
            names = ["data"]
        keys = [f"/entry/data/{n}" for n in names]
    else:
        keys = [key]
    return [(f"{source}:{k}", frames_dataset(f, k, source)) for k in keys]


def frames_dataset(f: h5py.File, key: str, source: str) -> h5py.Dataset:
    """Dataset ``key`` checked as frames: 3D ``(frames, ny, nx)`` (or one 2D frame) of real
    numbers."""
    ds = dataset(f, key, source)
    if ds.ndim not in (2, 3):
        raise DataError(f"{source}: {key} must be (frames, ny, nx), got shape {ds.shape}")
    check_real_counts(ds.dtype, f"{source}: {key}")
    return uncached(ds)


def uncached(ds: h5py.Dataset) -> h5py.Dataset:
    """``ds`` opened again without a chunk cache (the caller drops ``ds``). The ingest
    reads every chunk once per pass; h5py's default cache (8 MiB per dataset, kept while
    the file is open) would hold 8 MiB more per data file. HDF5 shares one cache among the
    handles of a dataset, so the new one is opened after the old one is closed."""
    file, name = ds.file, ds.name.encode()  # the data file, also behind an external link
    ds.id.close()
    dapl = h5py.h5p.create(h5py.h5p.DATASET_ACCESS)
    dapl.set_chunk_cache(0, 0, 1.0)
    return h5py.Dataset(h5py.h5d.open(file.id, name, dapl))


def nx_group(f: h5py.File, path: str, nx_class: str) -> h5py.Group | None:
    """Group ``path``, else the first ``nx_class`` group beside it (same parent), or None."""
    node = f.get(path)
    if isinstance(node, h5py.Group):
        return node
    parent = f.get(path.rsplit("/", 1)[0] or "/")
    if not isinstance(parent, h5py.Group):
        return None
    for child in parent.values():
        if isinstance(child, h5py.Group) and _text(child.attrs.get("NX_class")) == nx_class:
            return child
    return None


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray) and value.size == 1:
        return _text(value.ravel()[0])
    return "" if value is None else str(value)


def _field(group: h5py.Group | None, name: str, source: str) -> tuple[float, str, str] | None:
    """``(value, units, where)`` of the scalar field ``name`` of ``group`` (units lower case,
    ``""`` when not given), None when absent."""
    if group is None or name not in group:
        return None
    ds = group[name]
    where = f"{source}:{ds.name}"
    try:
        value = float(np.asarray(ds[()], dtype=np.float64).ravel()[0])
    except (TypeError, ValueError, IndexError, OSError) as exc:
        raise DataError(f"{where} is not a number ({exc})") from None
    return value, _text(ds.attrs.get("units")).strip().lower(), where


def _convert(field: tuple[float, str, str], table: dict, default: str) -> float:
    """The field's value times the factor of its units in ``table`` (``default`` when it
    has none)."""
    value, units, where = field
    units = units or default
    if units not in table:
        raise DataError(f"{where}: unknown units {units!r} (known: {', '.join(table)})")
    return value * table[units]


def _length(group, name: str, source: str) -> tuple[float, str] | None:
    """``(metres, where)`` of a length field, None when absent."""
    field = _field(group, name, source)
    if field is None:
        return None
    return _convert(field, LENGTH_UNITS, DEFAULT_UNITS["length"]), field[2]


def _energy(f: h5py.File, source: str) -> tuple[float, str] | None:
    """``(eV, where)`` of the first of :data:`ENERGY_FIELDS` present, None if none is."""
    for path, name, kind in ENERGY_FIELDS:
        field = _field(nx_group(f, path, "NX" + path.rsplit("/", 1)[1]), name, source)
        if field is None:
            continue
        if kind == "energy":
            return _convert(field, ENERGY_UNITS, DEFAULT_UNITS["energy"]), field[2]
        wl = _convert(field, LENGTH_UNITS, DEFAULT_UNITS["wavelength"])
        if not wl > 0:
            raise DataError(f"{field[2]}: wavelength must be > 0, got {field[0]}")
        return float(energy_ev_from_wavelength(wl)), field[2]
    return None


def master_geometry(f: h5py.File, source: str) -> dict:
    """What the master file records, each ``(value, where)`` or None: ``energy_ev`` (eV),
    ``distance`` (m), ``pixel_size`` ``(y, x)`` (m; one of the two fields suffices),
    ``centre`` ``(y, x)`` (detector pixels; a length is divided by the pixel size) and
    ``saturation`` (the detector's ``saturation_value``, in its raw units, ADU)."""
    det = nx_group(f, DETECTOR, "NXdetector")
    distance = None
    for name in DISTANCE_FIELDS:
        distance = distance or _length(det, name, source)
    py, px = (_length(det, f"{a}_pixel_size", source) for a in "yx")
    py, px = py or px, px or py
    pixel = None if py is None else ((py[0], px[0]), f"{py[1]}, {px[1]}")
    sat = _field(det, "saturation_value", source)
    return {
        "energy_ev": _energy(f, source),
        "distance": distance,
        "pixel_size": pixel,
        "centre": _beam_centre(det, None if pixel is None else pixel[0], source),
        "saturation": None if sat is None else (sat[0], sat[2]),
    }


def _beam_centre(det, pixel, source: str) -> tuple[tuple[float, float], str] | None:
    """``((cy, cx), where)`` in detector pixels from ``beam_center_y``/``_x``, or None."""
    fields = [_field(det, f"beam_center_{a}", source) for a in "yx"]
    if None in fields:
        return None
    centre = []
    for axis, (value, units, where) in enumerate(fields):
        if units not in ("", "pixel", "pixels"):
            if pixel is None:
                raise DataError(f"{where} is a length but the file records no pixel size")
            value = _convert((value, units, where), LENGTH_UNITS, "m") / pixel[axis]
        centre.append(value)
    return (centre[0], centre[1]), f"{fields[0][2]}, {fields[1][2]}"


def pixel_mask(f: h5py.File, source: str) -> tuple[np.ndarray, str] | None:
    """The NXdetector ``pixel_mask`` (nonzero = bad) as a bool array True = bad, and where it
    was found; None when the file has none."""
    det = nx_group(f, DETECTOR, "NXdetector")
    if det is None:
        return None
    for name in PIXEL_MASK_FIELDS:
        if name in det:
            ds = det[name]
            return np.asarray(ds[()]) != 0, f"{source}:{ds.name}"
    return None
