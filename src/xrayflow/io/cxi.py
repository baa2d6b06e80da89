"""CXI files (Coherent X-ray Imaging format, HDF5) for diffraction data.

:func:`write_cxi` writes the layout documented in ``docs/data-format.md``;
:func:`read_cxi` reads it back and also opens CXI files written by cdtools, PtyPy-style
converters and CXIDB depositions. Anything that cannot be used (missing energy, pixel size
or data, truncated or corrupt file, NaN or negative counts, inconsistent shapes) raises
:class:`~xrayflow.errors.DataError` with a message naming the dataset.

Conventions (in memory, see docs/physics.md):

* ``data`` (P, ny, nx) float32 counts exactly as stored; ``centred=True`` means the zero
  frequency is at the array centre (``fftshift``), which is how diffraction patterns are
  stored in files. :meth:`DiffractionData.uncentred` gives patterns with DC at (0, 0).
* ``positions`` (P, 2) metres, ``(y, x)``: probe centre relative to the object centre.
  In the file, ``entry_1/sample_1/geometry_1/translation`` is (P, 3) ``(x, y, z)`` with
  detector basis vectors ``[[0, -py, 0], [-px, 0, 0]]`` (cdtools' default), for which the
  CXI sample translation equals ``(x, y, 0)`` of the probe position on the object grid.
  Files with other basis vectors are converted by projecting on them.
* ``mask`` (ny, nx) bool, True = good pixel (in the file: CXI convention, nonzero = bad).
* energy in eV in memory, joules in the file.

The geometry (:class:`xrayflow.geometry.Geometry`: energy, detector, object pixel, slice
spacing, near-field distances) is written by :func:`write_geometry` and read by
:func:`read_geometry`, also from plain CXI files that record only the energy, the distance
and the pixel size.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from xrayflow.backend import ifftshift
from xrayflow.errors import DataError
from xrayflow.geometry import (
    ATTR_NAMES,
    LEGACY_ATTR_NAMES,
    LEGACY_TRUTH_NAMES,
    Geometry,
    recorded_geometry,
)
from xrayflow.io.atomic import atomic_path
from xrayflow.io.hdf5 import STR_DTYPE, open_h5, read_node, write_node
from xrayflow.optics.constants import (
    EV_TO_J,
    XRAY_ENERGY_RANGE_EV,
    energy_ev_from_wavelength,
    energy_ev_to_joule,
    joule_to_energy_ev,
    wavelength,
)

CXI_VERSION = 160

DATA_PATHS = ("entry_1/data_1/data", "entry_1/instrument_1/detector_1/data")
TRANSLATION_PATHS = (
    "entry_1/sample_1/geometry_1/translation",
    "entry_1/data_1/translation",
    "entry_1/instrument_1/detector_1/translation",
)
TRUTH_GROUP = "entry_1/xrayflow_truth"
SIGNALS_GROUP = "entry_1/xrayflow_signals"
PROV_GROUP = "entry_1/xrayflow_provenance"
ATTRS_GROUP = "entry_1/xrayflow_attrs"
SOURCE = "entry_1/instrument_1/source_1"
DETECTOR = "entry_1/instrument_1/detector_1"
# plausible geometry when reading (outside: a unit slip such as keV for eV, or um for m)
MAX_DISTANCE_M = 1e3
MAX_PIXEL_M = 1e-2

__all__ = [
    "EV_TO_J",  # re-exported; its home is xrayflow.optics.constants
    "CXIStream",
    "DiffractionData",
    "StreamedFrames",
    "check_counts",
    "check_real_counts",
    "cxi_stream",
    "read_cxi",
    "read_cxi_geometry",
    "read_cxi_meta",
    "read_geometry",
    "read_object_pixel",
    "read_signal_rows",
    "read_truth",
    "write_cxi",
    "write_geometry",
]


@dataclass
class DiffractionData:
    """Diffraction (or near-field) intensities plus geometry, ground truth and provenance.

    Attributes:
        data: (P, ny, nx) float32 counts as stored (``centred`` says where DC sits).
        energy_ev: photon energy, eV.
        distance: sample-detector distance, m.
        pixel_size: detector pixel pitch ``(y, x)``, m.
        centred: True when patterns are ``fftshift``-ed (zero frequency at the centre).
        positions: (P, 2) probe positions ``(y, x)`` in m, or None.
        mask: (ny, nx) bool, True = good pixel, or None (all good).
        angles: (P,) sample rotation angle in rad per frame (tomography), or None.
        truth: ground-truth arrays and scalars (simulated data only), see data-format.md.
        config: the configuration that produced the data.
        provenance: versions, seed, git commit, time, command.
        attrs: further metadata (``modality``, the geometry entries of
            :data:`xrayflow.geometry.ATTR_NAMES`, ...).
        signals: further measured datasets by name (e.g. fluorescence counts per frame),
            arrays; strings as arrays of ``str``. Read whole: ``indices`` and
            :meth:`subset` select frames only; their consumers check their values.
    """

    data: np.ndarray
    energy_ev: float
    distance: float
    pixel_size: tuple[float, float]
    centred: bool = True
    positions: np.ndarray | None = None
    mask: np.ndarray | None = None
    angles: np.ndarray | None = None
    truth: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)
    signals: dict = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return int(self.data.shape[0])

    @property
    def frame_shape(self) -> tuple[int, int]:
        return tuple(int(s) for s in self.data.shape[-2:])

    @property
    def wavelength(self) -> float:
        """Wavelength in m (from ``energy_ev``)."""
        return float(wavelength(self.energy_ev))

    @property
    def geometry(self) -> Geometry:
        """The :class:`~xrayflow.geometry.Geometry` of the frames and the entries recorded in
        ``attrs`` and ``truth``."""
        return Geometry.from_frames(
            self.energy_ev, self.distance, self.pixel_size, self.frame_shape, self.attrs, self.truth
        )

    @property
    def modality(self) -> str | None:
        return self.attrs.get("modality")

    def uncentred(self) -> np.ndarray:
        """Patterns with the zero frequency at index (0, 0) (``ifftshift`` of the frames)."""
        if not self.centred:
            return self.data
        axes = (0, 1, 2) if self.attrs.get("fft_ndim", 2) == 3 else (-2, -1)
        return ifftshift(self.data, axes=axes)

    def good_mask(self) -> np.ndarray:
        """The mask as a bool array, all True when there is none."""
        if self.mask is None:
            return np.ones(self.frame_shape, dtype=bool)
        return self.mask

    def subset(self, indices) -> DiffractionData:
        """A copy holding only frames ``indices`` (positions and angles follow)."""
        idx = np.asarray(indices)
        return replace(
            self,
            data=self.data[idx],
            positions=None if self.positions is None else self.positions[idx],
            angles=None if self.angles is None else self.angles[idx],
        )

    def validate(self, source: str = "data") -> None:
        """Raise DataError if shapes, values or geometry are inconsistent."""
        _check_arrays(self, source)


# --------------------------------------------------------------------------- checks
def _check_counts(arr: np.ndarray, source: str) -> None:
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise DataError(f"{source}: counts must be real numbers, got dtype {arr.dtype}")
    if arr.size == 0:
        return
    finite = np.isfinite(arr)
    if not finite.all():
        bad = np.argwhere(~finite)[0]
        raise DataError(
            f"{source}: {int((~finite).sum())} non-finite counts (NaN/inf), first at index "
            f"{tuple(int(i) for i in bad)}"
        )
    mn = arr.min()
    if mn < 0:
        bad = np.argwhere(arr < 0)[0]
        raise DataError(
            f"{source}: {int((arr < 0).sum())} negative counts (min {float(mn):g}), first at "
            f"index {tuple(int(i) for i in bad)}"
        )


def _check_arrays(d: DiffractionData, source: str) -> None:
    if d.data.ndim != 3:
        raise DataError(f"{source}: data must be (frames, ny, nx), got shape {d.data.shape}")
    _check_counts(d.data, f"{source}: data")
    p = d.data.shape[0]
    if not (np.isfinite(d.energy_ev) and d.energy_ev > 0):
        raise DataError(f"{source}: energy must be positive, got {d.energy_ev} eV")
    if not (np.isfinite(d.distance) and d.distance > 0):
        raise DataError(f"{source}: detector distance must be positive, got {d.distance} m")
    if len(d.pixel_size) != 2 or not all(np.isfinite(s) and s > 0 for s in d.pixel_size):
        raise DataError(f"{source}: pixel size must be two positive numbers, got {d.pixel_size}")
    if d.positions is not None:
        pos = np.asarray(d.positions)
        if pos.shape != (p, 2):
            raise DataError(
                f"{source}: positions must have shape ({p}, 2) to match {p} frames, got {pos.shape}"
            )
        if not np.isfinite(pos).all():
            raise DataError(f"{source}: positions contain NaN/inf")
    if d.angles is not None and np.asarray(d.angles).shape != (p,):
        raise DataError(
            f"{source}: angles must have shape ({p},) to match {p} frames, "
            f"got {np.asarray(d.angles).shape}"
        )
    if d.mask is not None and np.asarray(d.mask).shape != d.data.shape[-2:]:
        raise DataError(
            f"{source}: mask shape {np.asarray(d.mask).shape} does not match frame shape "
            f"{d.data.shape[-2:]}"
        )


# --------------------------------------------------------------------------- write
def write_cxi(
    path: str | os.PathLike,
    d: DiffractionData,
    compression: str | None = "gzip",
    compression_opts: int | None = 4,
) -> Path:
    """Write ``d`` to a CXI file at ``path`` atomically (nothing is left on failure).

    Frames are chunked one per chunk, so :func:`read_cxi` with ``indices`` touches only
    those frames.
    """
    d.validate(str(path))
    data = np.ascontiguousarray(d.data, dtype=np.float32)
    path = Path(path)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            _write_cxi_file(f, d, data, compression, compression_opts)
    return path


def _frame_kw(ny: int, nx: int, compression: str | None, compression_opts: int | None) -> dict:
    """Dataset options of the frames: one frame per chunk, optional compression."""
    kw: dict[str, Any] = {"chunks": (1, ny, nx)}
    if compression:
        kw["compression"] = compression
        if compression == "gzip" and compression_opts is not None:
            kw["compression_opts"] = compression_opts
    return kw


def _write_cxi_file(f: h5py.File, d: DiffractionData, data, compression, compression_opts):
    """Everything of the CXI layout; ``data`` is an array or the already written frames
    dataset (:class:`CXIStream`)."""
    p, ny, nx = data.shape
    f.create_dataset("cxi_version", data=CXI_VERSION)
    f.create_dataset("number_of_entries", data=1)
    e = f.require_group("entry_1")
    e.create_dataset("program_name", data="xrayflow", dtype=STR_DTYPE)
    if d.modality:
        e.create_dataset("experiment_description", data=f"xrayflow {d.modality}", dtype=STR_DTYPE)
    start = d.provenance.get("start_time", d.provenance.get("time_utc"))
    if start:
        e.create_dataset("start_time", data=str(start), dtype=STR_DTYPE)
    write_geometry(f, d.geometry)
    det = f[DETECTOR]
    if isinstance(data, h5py.Dataset):  # streamed by CXIStream
        ds = data
    else:
        kw = _frame_kw(ny, nx, compression, compression_opts)
        ds = det.create_dataset("data", data=data, **kw)
    ds.attrs["axes"] = "translation:y:x"
    ds.attrs["centred"] = bool(d.centred)
    ds.attrs["units"] = "counts"
    if d.mask is not None:
        m = np.where(np.asarray(d.mask, dtype=bool), 0, 1).astype(np.uint32)
        det.create_dataset("mask", data=m)
        det["mask"].attrs["convention"] = "CXI: nonzero = bad pixel"
    # data_1 links
    d1 = e.create_group("data_1")
    d1["data"] = h5py.SoftLink("/entry_1/instrument_1/detector_1/data")
    # sample translations
    s1 = e.create_group("sample_1")
    g1 = s1.create_group("geometry_1")
    if d.positions is not None:
        pos = np.asarray(d.positions, dtype=np.float64)
        tr = np.zeros((p, 3))
        tr[:, 0] = pos[:, 1]
        tr[:, 1] = pos[:, 0]
        g1.create_dataset("translation", data=tr)
        g1["translation"].attrs["units"] = "m"
        g1["translation"].attrs["axes"] = "x:y:z"
        d1["translation"] = h5py.SoftLink("/entry_1/sample_1/geometry_1/translation")
    if d.angles is not None:
        g1.create_dataset("rotation_angle", data=np.asarray(d.angles, dtype=np.float64))
        g1["rotation_angle"].attrs["units"] = "rad"
        g1["rotation_angle"].attrs["axis"] = "y"
    # xrayflow extras (the geometry entries were written by write_geometry)
    ag = e.require_group("xrayflow_attrs")
    for k, v in d.attrs.items():
        if k not in ATTR_NAMES + LEGACY_ATTR_NAMES:
            write_node(ag, str(k), v)
    if d.truth:
        tg = e.create_group("xrayflow_truth")
        for k, v in d.truth.items():
            if k not in LEGACY_TRUTH_NAMES:
                write_node(tg, str(k), v)
    if d.signals:
        sg = e.create_group("xrayflow_signals")
        for k, v in d.signals.items():
            arr = np.asarray(v)
            write_node(sg, str(k), arr.astype(object) if arr.dtype.kind in "US" else arr)
    pg = e.create_group("xrayflow_provenance")
    prov = {k: v for k, v in d.provenance.items() if k != "config"}
    for k, v in prov.items():
        write_node(pg, str(k), v)
    write_node(pg, "config", dict(d.config))


def write_geometry(f: h5py.File, geo: Geometry) -> None:
    """Write ``geo`` into an open CXI file: ``source_1/energy`` (J) and ``wavelength`` (m);
    ``detector_1/distance``, ``x_pixel_size``/``y_pixel_size`` (m, the stored frames' pitch)
    and ``basis_vectors``; the entries of :meth:`Geometry.attrs` in ``xrayflow_attrs``."""
    src = f.require_group(SOURCE)
    src.create_dataset("energy", data=energy_ev_to_joule(geo.energy_ev))
    src["energy"].attrs["units"] = "J"
    src.create_dataset("wavelength", data=geo.wavelength)
    src["wavelength"].attrs["units"] = "m"
    det = f.require_group(DETECTOR)
    det.create_dataset("distance", data=float(geo.distance))
    det["distance"].attrs["units"] = "m"
    py, px = geo.frame_pixel_size
    det.create_dataset("x_pixel_size", data=px)
    det.create_dataset("y_pixel_size", data=py)
    det["x_pixel_size"].attrs["units"] = "m"
    det["y_pixel_size"].attrs["units"] = "m"
    det.create_dataset("basis_vectors", data=np.array([[0.0, -py, 0.0], [-px, 0.0, 0.0]]).T)
    ag = f.require_group(ATTRS_GROUP)
    for k, v in geo.attrs().items():
        write_node(ag, k, v)


class StreamedFrames:
    """Frames written batch by batch into a CXI file being created (:class:`CXIStream`).

    Stands in for ``DiffractionData.data`` (``shape``, ``dtype``, ``sum()``; ``np.asarray``
    reads the frames back from the file) without holding the frames in memory.
    ``frames[a:b] = batch`` checks the batch (finite, non-negative), writes it, and keeps
    the total counts and the number of pixels at or above ``saturation`` (None: not
    counted) for the stage's all-zero / saturation checks.
    """

    ndim = 3
    dtype = np.dtype(np.float32)

    def __init__(self, ds: h5py.Dataset, source: str, saturation: float | None = None):
        self.ds = ds
        self.source = source
        self.shape = tuple(int(s) for s in ds.shape)
        self.saturation = saturation
        self.total = 0.0
        self.n_saturated = 0
        self.written = 0
        self.path: Path | None = None  # set when the file is complete

    def __len__(self) -> int:
        return self.shape[0]

    def __setitem__(self, idx: slice, frames) -> None:
        a = np.ascontiguousarray(frames, dtype=np.float32)
        start = idx.start or 0
        check_counts(a, np.arange(start, start + len(a)), f"{self.source}: data")
        self.ds[idx] = a
        self.total += float(a.sum(dtype=np.float64))
        self.written += a.shape[0]
        if self.saturation is not None:
            self.n_saturated += int(np.count_nonzero(a >= self.saturation))

    def sum(self) -> float:
        return self.total

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """The frames, read back from the finished file (or the file being written)."""
        if self.path is None:
            a = self.ds[()]
        else:
            with h5py.File(self.path, "r") as f:
                a = f["entry_1/instrument_1/detector_1/data"][()]
        return a if dtype is None else a.astype(dtype)

    def __getitem__(self, idx) -> np.ndarray:
        """Frames read back (all of them are read: for convenience, not for large data)."""
        return np.asarray(self)[idx]


def _check_meta(d: DiffractionData, shape, source: str) -> None:
    """The checks of :meth:`DiffractionData.validate` except the counts (streamed frames
    are checked batch by batch)."""
    p = shape[0]
    probe = replace(d, data=np.zeros((p, 0, 0), dtype=np.float32), mask=None)
    _check_arrays(probe, source)
    if d.mask is not None and np.asarray(d.mask).shape != tuple(shape[-2:]):
        raise DataError(
            f"{source}: mask shape {np.asarray(d.mask).shape} does not match frame shape "
            f"{tuple(shape[-2:])}"
        )


class CXIStream:
    """A CXI file being written: frames first (:meth:`create_frames`, then batches), the
    rest of the layout at the end (:meth:`finish`). Made by :func:`cxi_stream`."""

    def __init__(self, f: h5py.File, path: Path, compression, compression_opts):
        self.f = f
        self.path = path
        self.compression = compression
        self.compression_opts = compression_opts
        self.frames: StreamedFrames | None = None
        self.finished = False

    def create_frames(self, n: int, ny: int, nx: int, saturation=None) -> StreamedFrames:
        """The frames dataset ``(n, ny, nx)`` float32 (one frame per chunk, compressed)."""
        if self.frames is not None:
            raise RuntimeError("the frames of this CXI file were already created")
        det = self.f.require_group("entry_1/instrument_1/detector_1")
        kw = _frame_kw(int(ny), int(nx), self.compression, self.compression_opts)
        ds = det.create_dataset("data", shape=(int(n), int(ny), int(nx)), dtype=np.float32, **kw)
        self.frames = StreamedFrames(ds, str(self.path), saturation)
        return self.frames

    def finish(self, d: DiffractionData) -> None:
        """Write everything else of ``d``; ``d.data`` is the streamed frames or an array."""
        source = str(self.path)
        if isinstance(d.data, StreamedFrames):
            fr = d.data
            if fr is not self.frames or fr.written != fr.shape[0]:
                raise DataError(f"{source}: {fr.written} of {fr.shape[0]} frames were written")
            _check_meta(d, fr.shape, source)
            _write_cxi_file(self.f, d, fr.ds, self.compression, self.compression_opts)
        else:
            if self.frames is not None:
                raise RuntimeError("streamed frames were created but not returned")
            d.validate(source)
            data = np.ascontiguousarray(d.data, dtype=np.float32)
            _write_cxi_file(self.f, d, data, self.compression, self.compression_opts)
        self.finished = True


@contextlib.contextmanager
def cxi_stream(
    path: str | os.PathLike, compression: str | None = "gzip", compression_opts: int | None = 4
) -> Iterator[CXIStream]:
    """Write a CXI file whose frames arrive in batches, atomically::

        with cxi_stream("out.cxi") as s:
            frames = s.create_frames(n, ny, nx)
            frames[0:64] = batch ...
            s.finish(DiffractionData(data=frames, ...))

    The file appears under ``path`` only when the block ends after :meth:`CXIStream.finish`;
    on any error (or without ``finish``) nothing is left. Same layout as :func:`write_cxi`.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            stream = CXIStream(f, path, compression, compression_opts)
            yield stream
            if not stream.finished:
                raise RuntimeError("cxi_stream: the block ended without finish()")
    if stream.frames is not None:
        stream.frames.path = path


# --------------------------------------------------------------------------- read
def _scalar(f: h5py.File, path: str, source: str) -> float | None:
    if path not in f:
        return None
    try:
        v = np.asarray(f[path][()], dtype=np.float64)
    except (TypeError, ValueError, OSError) as exc:
        raise DataError(f"{source}: {path} is not a number ({exc})") from None
    if v.size != 1:
        v = v.ravel()
        if v.size == 0:
            return None
        if not np.allclose(v, v[0]):
            raise DataError(f"{source}: {path} varies per frame; only a single value is supported")
    return float(v.ravel()[0])


def _find(f: h5py.File, paths) -> str | None:
    for p in paths:
        try:
            if p in f and isinstance(f[p], h5py.Dataset):
                return p
        except (KeyError, OSError):
            continue
    return None


def _basis_units(f: h5py.File) -> tuple[np.ndarray, np.ndarray, tuple[float, float] | None]:
    """Unit vectors of the detector row (y) and column (x) axes, and (py, px) if known."""
    det = "entry_1/instrument_1/detector_1/basis_vectors"
    if det in f:
        b = np.asarray(f[det][()], dtype=np.float64)
        if b.shape == (2, 3):
            b = b.T
        if b.shape == (3, 2):
            ny, nx = np.linalg.norm(b[:, 0]), np.linalg.norm(b[:, 1])
            if ny > 0 and nx > 0:
                return b[:, 0] / ny, b[:, 1] / nx, (float(ny), float(nx))
    return np.array([0.0, -1.0, 0.0]), np.array([-1.0, 0.0, 0.0]), None


def _detector(f: h5py.File, source: str) -> tuple[float, float, tuple[float, float]]:
    """Photon energy (eV), sample–detector distance (m) and the stored frames' pixel pitch
    ``(y, x)`` (m) from the CXI datasets, checked for plausibility (units)."""
    epath = f"{SOURCE}/energy"
    energy_j = _scalar(f, epath, source)
    if energy_j is None:
        wl = _scalar(f, f"{SOURCE}/wavelength", source)
        if wl is None or wl <= 0:
            raise DataError(f"{source}: no photon energy ({epath}, in J) or wavelength in the file")
        energy_ev = float(energy_ev_from_wavelength(wl))
        energy_j = energy_ev_to_joule(energy_ev)
    else:
        if not (np.isfinite(energy_j) and energy_j > 0):
            raise DataError(f"{source}: {epath} must be > 0 J")
        energy_ev = joule_to_energy_ev(energy_j)
    lo, hi = XRAY_ENERGY_RANGE_EV
    if 1.0 <= energy_ev < lo or hi < energy_ev <= 1e7:
        raise DataError(
            f"{source}: {epath} = {energy_j:g} J ({energy_ev / 1e3:g} keV) is outside the X-ray "
            f"range {lo / 1e3:g}-{hi / 1e3:g} keV"
        )
    if energy_ev < 1.0:  # some writers store eV or keV in the 'energy' field
        raise DataError(
            f"{source}: {epath} = {energy_j:g} J ({energy_ev:g} eV) is not a plausible X-ray "
            "energy; CXI stores joules"
        )
    if energy_ev > 1e7:
        raise DataError(
            f"{source}: {epath} = {energy_j:g} is not in joules (CXI stores the photon energy in J)"
        )
    dpath = f"{DETECTOR}/"
    distance = _scalar(f, dpath + "distance", source)
    if distance is None and dpath + "corner_position" in f:
        corner = np.asarray(f[dpath + "corner_position"][()], dtype=np.float64).ravel()
        by, bx, _ = _basis_units(f)
        normal = np.cross(by, bx)
        distance = float(abs(np.dot(corner[:3], normal))) if corner.size >= 3 else None
    if distance is None or not (np.isfinite(distance) and distance > 0):
        raise DataError(f"{source}: no positive sample-detector distance ({dpath}distance)")
    if distance > MAX_DISTANCE_M:
        raise DataError(
            f"{source}: {dpath}distance = {distance:g} m is not a plausible sample-detector "
            f"distance (> {MAX_DISTANCE_M:g} m; CXI stores metres)"
        )
    px = _scalar(f, dpath + "x_pixel_size", source)
    py = _scalar(f, dpath + "y_pixel_size", source)
    if px is None and py is None:
        _, _, sizes = _basis_units(f)
        if sizes is None:
            raise DataError(
                f"{source}: no detector pixel size ({dpath}x_pixel_size / y_pixel_size "
                "or basis_vectors)"
            )
        py, px = sizes
    px = py if px is None else px
    py = px if py is None else py
    if not (px > 0 and py > 0):
        raise DataError(f"{source}: detector pixel size must be > 0, got ({py}, {px})")
    if not (np.isfinite(px) and np.isfinite(py)) or max(px, py) > MAX_PIXEL_M:
        raise DataError(
            f"{source}: {dpath}x_pixel_size / y_pixel_size = ({py:g}, {px:g}) m is not a "
            f"plausible detector pixel (> {MAX_PIXEL_M:g} m; CXI stores metres)"
        )
    return float(energy_ev), float(distance), (float(py), float(px))


def _recorded_entries(f: h5py.File, source: str) -> tuple[dict, dict]:
    """The geometry entries of ``xrayflow_attrs`` and ``xrayflow_truth`` (current and older
    names, see :func:`xrayflow.geometry.recorded_geometry`), without the large truth arrays."""
    out = []
    for group, names in (
        (ATTRS_GROUP, ATTR_NAMES + LEGACY_ATTR_NAMES),
        (TRUTH_GROUP, LEGACY_TRUTH_NAMES),
    ):
        g = f.get(group)
        entries = {}
        if isinstance(g, h5py.Group):
            for name in names:
                if isinstance(g.get(name), h5py.Dataset):
                    entries[name] = read_node(g[name], f"{source}: {group}/{name}")
        out.append(entries)
    return out[0], out[1]


def read_geometry(
    f: h5py.File, source: str, frame_shape=None, far_field: bool | None = None
) -> Geometry:
    """The :class:`~xrayflow.geometry.Geometry` of an open CXI file.

    Energy from ``source_1/energy`` (J) or ``wavelength`` (m); distance from
    ``detector_1/distance`` or ``corner_position``; pixel pitch from ``x_pixel_size`` /
    ``y_pixel_size`` or ``basis_vectors`` (plain CXI files from other facilities have no
    more); object pixel, slice spacing, binning and near-field distances from
    ``xrayflow_attrs`` (older files: also ``xrayflow_truth``). ``far_field``: True derives
    the object pixel ``λz/(N·p)`` of far-field frames whose file records none, from
    ``frame_shape`` (y, x) (default: the frames dataset's); None: as
    :meth:`Geometry.from_frames`. DataError for missing or implausible values.
    """
    if frame_shape is None:
        frame_shape = _data_dataset(f, source).shape[-2:]
    return Geometry.from_frames(
        *_detector(f, source), frame_shape, *_recorded_entries(f, source), far_field=far_field
    )


def read_object_pixel(f: h5py.File, source: str) -> tuple[float, float] | None:
    """The object-plane pixel ``(y, x)`` (m) an xrayflow data file records (current or older
    names), None when it records none; needs no detector geometry (files holding only a
    ground truth)."""
    return recorded_geometry(*_recorded_entries(f, source))["object_pixel"]


def check_real_counts(dtype, where: str) -> None:
    """Counts must be stored as real numbers: refuse complex (or text, compound) data
    before anything casts them (a cast to float would drop the imaginary part). ``where``
    names the file and dataset or array."""
    dtype = np.dtype(dtype)
    if dtype.kind not in "iuf":
        what = "complex values" if dtype.kind == "c" else f"values of dtype {dtype}"
        raise DataError(f"{where} holds {what}; counts must be real numbers (int or float)")


def check_counts(arr: np.ndarray, frames: np.ndarray, source: str) -> None:
    """NaN/inf or negative counts: DataError naming the first bad frame by its index in the
    file (``frames[k]`` is the file index of row ``k``; global also when an MPI rank reads
    a slice)."""
    if arr.size == 0:
        return
    flat = arr.reshape(arr.shape[0], -1)
    bad = ~np.isfinite(flat.sum(axis=1, dtype=np.float64))
    what = "non-finite counts (NaN/inf)"
    if not bad.any():
        bad = flat.min(axis=1) < 0
        what = "negative counts"
        if not bad.any():
            return
    k = int(np.flatnonzero(bad)[0])
    pix = np.argwhere(~np.isfinite(arr[k]) if "NaN" in what else arr[k] < 0)
    at = f" at pixel {tuple(int(i) for i in pix[0])}" if pix.size else ""
    frame = int(frames[k]) if k < len(frames) else k
    raise DataError(f"{source}: {what} in {int(bad.sum())} frame(s); first in frame {frame}{at}")


def _normalise_indices(indices, n: int, source: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Sorted unique indices for h5py plus the permutation back to the requested order."""
    if isinstance(indices, slice):
        return np.arange(n)[indices], None
    idx = np.asarray(indices)
    if idx.dtype == bool:
        if idx.shape != (n,):
            raise DataError(f"{source}: boolean frame selection must have length {n}")
        return np.flatnonzero(idx), None
    idx = idx.astype(np.int64).ravel()
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise DataError(f"{source}: frame index out of range for {n} frames")
    idx = np.where(idx < 0, idx + n, idx)
    uniq, inverse = np.unique(idx, return_inverse=True)
    if uniq.size == idx.size and np.all(uniq == idx):
        return uniq, None
    return uniq, inverse


def _read_frames(ds: h5py.Dataset, indices, source: str) -> tuple[np.ndarray, np.ndarray]:
    n = ds.shape[0]
    if indices is None:
        sel = np.arange(n)
        try:
            return np.asarray(ds[()], dtype=np.float32), sel
        except (OSError, RuntimeError, ValueError) as exc:
            raise DataError(
                f"{source}: cannot read {ds.name} (truncated or corrupt): {exc}"
            ) from None
    uniq, inverse = _normalise_indices(indices, n, source)
    out = np.empty((uniq.size, *ds.shape[1:]), dtype=np.float32)
    try:
        # Contiguous runs are read as slices: one chunk per frame, only those chunks.
        start = 0
        while start < uniq.size:
            stop = start + 1
            while stop < uniq.size and uniq[stop] == uniq[stop - 1] + 1:
                stop += 1
            out[start:stop] = ds[int(uniq[start]) : int(uniq[stop - 1]) + 1]
            start = stop
    except (OSError, RuntimeError, ValueError) as exc:
        raise DataError(f"{source}: cannot read {ds.name} (truncated or corrupt): {exc}") from None
    if inverse is not None:
        out = out[inverse]
        uniq = uniq[inverse]
    return out, uniq


def _decode_attr(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace")
    if isinstance(v, np.generic):
        return v.item()
    return v


def recorded_centring(ds: h5py.Dataset) -> bool | None:
    """The data set's ``centred`` (or ``centered``) attribute, None when it records none."""
    for name in ("centred", "centered"):
        if name in ds.attrs:
            return bool(_decode_attr(ds.attrs[name]))
    return None


def is_centred(ds: h5py.Dataset) -> bool:
    """Whether the patterns of ``ds`` are centred (zero frequency in the middle); without an
    attribute True: CXI/cdtools/CXIDB store far-field patterns with the beam centre in the
    middle."""
    c = recorded_centring(ds)
    return True if c is None else c


def _data_dataset(f: h5py.File, source: str) -> h5py.Dataset:
    path = _find(f, DATA_PATHS)
    if path is None:
        if "entry_1" not in f:
            raise DataError(f"{source}: not a CXI file (no entry_1 group)")
        raise DataError(f"{source}: no diffraction data (looked for {' and '.join(DATA_PATHS)})")
    try:
        ds = f[path]
        _ = ds.shape
    except (OSError, RuntimeError, KeyError) as exc:
        raise DataError(f"{source}: cannot open {path} (truncated or corrupt): {exc}") from None
    if ds.ndim not in (2, 3):
        raise DataError(f"{source}: {path} must be 2D or 3D (frames, ny, nx), got {ds.shape}")
    return ds


def _positions(f: h5py.File, n: int, source: str) -> np.ndarray | None:
    path = _find(f, TRANSLATION_PATHS)
    if path is None:
        return None
    try:
        tr = np.asarray(f[path][()], dtype=np.float64)
    except (OSError, RuntimeError, ValueError, TypeError) as exc:
        raise DataError(f"{source}: cannot read {path}: {exc}") from None
    if tr.ndim == 1 and tr.size == 3 and n == 1:
        tr = tr[None]
    if tr.ndim != 2 or tr.shape[1] not in (2, 3):
        raise DataError(f"{source}: {path} must be (frames, 3) in (x, y, z) order, got {tr.shape}")
    if tr.shape[0] != n:
        raise DataError(f"{source}: {path} has {tr.shape[0]} positions but the data has {n} frames")
    if tr.shape[1] == 2:
        tr = np.concatenate([tr, np.zeros((n, 1))], axis=1)
    if not np.isfinite(tr).all():
        raise DataError(f"{source}: {path} contains NaN/inf")
    by, bx, _ = _basis_units(f)
    # probe position along an object-grid axis = -(sample translation . axis unit vector)
    return np.stack([-(tr @ by), -(tr @ bx)], axis=1)


def _angles(f: h5py.File, n: int, source: str) -> np.ndarray | None:
    path = "entry_1/sample_1/geometry_1/rotation_angle"
    if path not in f:
        return None
    angles = np.asarray(f[path][()], dtype=np.float64).ravel()
    if angles.shape != (n,):
        raise DataError(f"{source}: {path} has {angles.size} angles for {n} frames")
    return angles


def _mask(f: h5py.File, frame_shape, source: str) -> np.ndarray | None:
    path = "entry_1/instrument_1/detector_1/mask"
    if path not in f:
        return None
    try:
        m = np.asarray(f[path][()])
    except (OSError, RuntimeError) as exc:
        raise DataError(f"{source}: cannot read {path}: {exc}") from None
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    if m.shape != tuple(frame_shape):
        raise DataError(f"{source}: {path} has shape {m.shape}, frames are {tuple(frame_shape)}")
    m = m.astype(np.uint32)
    # CXI: 0 = good; 0x1000 ("pixel has signal above background") is also good.
    good = (m == 0) | (m == 0x1000)
    if good.size and not good.any():
        raise DataError(f"{source}: {path} marks every detector pixel as bad (nothing to fit)")
    return good


def _read_group(f: h5py.File, path: str) -> dict:
    if path not in f:
        return {}
    node = f[path]
    out = read_node(node, path)
    return out if isinstance(out, dict) else {}


def _open(path) -> tuple[h5py.File, str]:
    source = str(path)
    return open_h5(path), source


def read_cxi(
    path: str | os.PathLike,
    indices=None,
    truth: bool = True,
    check: bool = True,
    signals: bool = True,
) -> DiffractionData:
    """Read a CXI file into :class:`DiffractionData`.

    Args:
        path: CXI/HDF5 file (xrayflow, cdtools, CXIDB layouts).
        indices: frames to read (ints, slice or bool mask); only those chunks are read.
            Positions and angles are subset to match. Default: all frames.
        truth: also read the ground-truth group (can be large; MPI ranks may skip it).
        check: raise DataError for NaN/inf or negative counts in the frames read.
        signals: also read the further measured datasets (read whole; per-frame ones can
            be large: :func:`read_signal_rows` reads rows of one).
    """
    f, source = _open(path)
    with f:
        ds = _data_dataset(f, source)
        centred = is_centred(ds)
        energy_ev, distance, pixel_size = _detector(f, source)
        two_d = ds.ndim == 2
        n = 1 if two_d else ds.shape[0]
        check_real_counts(ds.dtype, f"{source}: {ds.name}")
        if two_d:
            try:
                data = np.asarray(ds[()], dtype=np.float32)[None]
            except (OSError, RuntimeError) as exc:
                raise DataError(f"{source}: cannot read {ds.name}: {exc}") from None
            sel = np.arange(1)
            if indices is not None:
                sel, inv = _normalise_indices(indices, 1, source)
                data = data[sel if inv is None else sel[inv]]
        else:
            data, sel = _read_frames(ds, indices, source)
        if check:
            check_counts(data, sel, f"{source}: {ds.name}")
        positions = _positions(f, n, source)
        angles = _angles(f, n, source)
        mask = _mask(f, data.shape[-2:], source)
        attrs = _read_group(f, ATTRS_GROUP)
        prov = _read_group(f, PROV_GROUP)
        config = prov.pop("config", {}) or {}
        if not isinstance(config, dict):
            config = {}
        tr = _read_group(f, TRUTH_GROUP) if truth else {}
        signals = (
            {k: np.asarray(v) for k, v in _read_group(f, SIGNALS_GROUP).items() if k[0] != "@"}
            if signals
            else {}
        )
        if "modality" not in attrs and "entry_1/experiment_description" in f:
            attrs.setdefault("description", _decode_attr(f["entry_1/experiment_description"][()]))
    d = DiffractionData(
        data=data,
        energy_ev=energy_ev,
        distance=distance,
        pixel_size=pixel_size,
        centred=centred,
        positions=None if positions is None else positions[sel],
        mask=mask,
        angles=None if angles is None else angles[sel],
        truth=tr,
        config=config,
        provenance=prov,
        attrs=attrs,
        signals=signals,
    )
    if check:
        _check_arrays(d, source)
    return d


def read_signal_rows(path: str | os.PathLike, name: str, rows: slice) -> np.ndarray | None:
    """Rows ``rows`` (frames) of the signal ``name`` (``entry_1/xrayflow_signals/<name>``),
    or None when the file has no such signal; DataError naming the file when it cannot be
    read."""
    f, source = _open(path)
    with f:
        key = f"{SIGNALS_GROUP}/{name}"
        if key not in f:
            return None
        try:
            return np.asarray(f[key][rows])
        except (OSError, RuntimeError, TypeError, ValueError) as exc:
            raise DataError(f"{source}: cannot read {key} rows {rows}: {exc}") from None


def read_truth(path: str | os.PathLike) -> dict:
    """Only the ground-truth group ``entry_1/xrayflow_truth`` (empty dict if absent)."""
    f, _ = _open(path)
    with f:
        return _read_group(f, TRUTH_GROUP)


def read_cxi_geometry(path: str | os.PathLike) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Probe positions (P, 2) ``(y, x)`` in m and sample rotation angles (P,) in rad of every
    frame, each None when the file has none; no frames are read (e.g. to plan which frames
    each MPI rank reads)."""
    f, source = _open(path)
    with f:
        ds = _data_dataset(f, source)
        n = 1 if ds.ndim == 2 else ds.shape[0]
        return _positions(f, n, source), _angles(f, n, source)


def read_cxi_meta(path: str | os.PathLike) -> dict:
    """Shape, frame count, geometry, attrs, truth field names and provenance, no frames.

    Returns a dict with keys ``shape`` (P, ny, nx), ``n_frames``, ``frame_shape``,
    ``dtype``, ``energy_ev``, ``wavelength``, ``distance``, ``pixel_size`` (y, x),
    ``geometry`` (:func:`read_geometry`), ``centred``, ``centring_recorded`` (the file has a
    ``centred`` attribute), ``modality``, ``has_positions``,
    ``has_angles``, ``has_mask``, ``truth_fields`` (name -> shape or value), ``attrs``,
    ``provenance``, ``config``.
    """
    f, source = _open(path)
    with f:
        ds = _data_dataset(f, source)
        shape = (1, *ds.shape) if ds.ndim == 2 else tuple(ds.shape)
        geo = read_geometry(f, source, shape[-2:])
        truth_fields: dict[str, Any] = {}
        if TRUTH_GROUP in f:

            def visit(name, obj):
                if isinstance(obj, h5py.Dataset):
                    if obj.shape == ():
                        truth_fields[name] = _decode_attr(obj[()])
                    elif h5py.check_string_dtype(obj.dtype) and obj.size <= 8:
                        truth_fields[name] = obj.asstr()[()].tolist()
                    else:
                        truth_fields[name] = tuple(obj.shape)

            f[TRUTH_GROUP].visititems(visit)
        attrs = _read_group(f, ATTRS_GROUP)
        prov = _read_group(f, PROV_GROUP)
        config = prov.pop("config", {}) or {}
        meta = {
            "path": source,
            "shape": tuple(int(s) for s in shape),
            "n_frames": int(shape[0]),
            "frame_shape": tuple(int(s) for s in shape[-2:]),
            "dtype": str(ds.dtype),
            "chunks": ds.chunks,
            "energy_ev": geo.energy_ev,
            "wavelength": geo.wavelength,
            "distance": geo.distance,
            "pixel_size": geo.frame_pixel_size,
            "geometry": geo,
            "centred": is_centred(ds),
            "centring_recorded": recorded_centring(ds) is not None,
            "modality": attrs.get("modality"),
            "has_positions": _find(f, TRANSLATION_PATHS) is not None,
            "has_angles": "entry_1/sample_1/geometry_1/rotation_angle" in f,
            "has_mask": "entry_1/instrument_1/detector_1/mask" in f,
            "truth_fields": truth_fields,
            "attrs": attrs,
            "provenance": prov,
            "config": config if isinstance(config, dict) else {},
        }
    return meta
