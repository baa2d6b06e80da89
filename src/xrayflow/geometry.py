"""The imaging geometry of a data set, derived once: :class:`Geometry`.

One frozen value object holds the photon energy (eV) and wavelength (m), the detector
(pixel pitch ``(y, x)`` in m before binning, pixel count, distance in m, binning), the
object-plane pixel ``(y, x)`` (m), the slice spacing (m) and, for near-field (Fresnel) data,
the sample–detector distances z2 (m, one per distance), the source distance z1 of a cone beam
(m), the effective distances ``z1·z2/(z1 + z2)`` and the magnifications ``(z1 + z2)/z1``
(Fresnel scaling theorem). Derived quantities are computed in ``__post_init__``:

* far field: object pixel ``λz/(N·p)`` per axis (N detector pixels of pitch p; binning
  leaves it unchanged);
* near field: object pixel ``p/M₁`` (``M₁`` the magnification of the first distance; a plane
  wave has ``M = 1`` and ``z_eff = z2``).

Constructors: :meth:`Geometry.from_config` (a simulate config) and :meth:`Geometry.from_frames`
(stored frames plus the entries a data file records). :func:`recorded_geometry` is the one
place that knows the names of those entries, the current ones (:data:`ATTR_NAMES`, written
by :meth:`Geometry.attrs`) and the older ones still read (:data:`LEGACY_ATTR_NAMES`,
:data:`LEGACY_TRUTH_NAMES`). The CXI file layout is :func:`xrayflow.io.cxi.write_geometry` /
:func:`xrayflow.io.cxi.read_geometry`; ``docs/data-format.md`` documents both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xrayflow.optics.constants import wavelength as energy_to_wavelength
from xrayflow.optics.propagation import far_field_pixel_size

#: Names of the geometry entries xrayflow writes in ``entry_1/xrayflow_attrs`` (one per
#: quantity; m unless noted): object-plane pixel, slice spacing, binning (int), source
#: distance z1, sample–detector distances z2 (near field), and, derived from the last two,
#: effective distances and magnifications (written for readers, recomputed when read).
OBJECT_PIXEL = "object_pixel_size"
SLICE_SPACING = "slice_spacing"
BINNING = "binning"
SOURCE_DISTANCE = "source_distance"
DISTANCES = "distances"
EFFECTIVE_DISTANCES = "effective_distances"
MAGNIFICATIONS = "magnifications"
ATTR_NAMES = (
    OBJECT_PIXEL,
    SLICE_SPACING,
    BINNING,
    SOURCE_DISTANCE,
    DISTANCES,
    EFFECTIVE_DISTANCES,
    MAGNIFICATIONS,
)
#: Older attribute names, read but no longer written: ``frame_pixel_size`` (object pixel ×
#: binning of near-field frames).
LEGACY_ATTR_NAMES = ("frame_pixel_size",)
#: Older ground-truth entries holding geometry, read but no longer written: ``pixel_size`` and
#: ``voxel_size`` (object pixel), ``slice_spacing`` and ``slice_thickness`` (per-slab
#: thicknesses; the first is the slice spacing).
LEGACY_TRUTH_NAMES = ("pixel_size", "voxel_size", "slice_spacing", "slice_thickness")


def _positive(value: Any) -> np.ndarray | None:
    """``value`` as a flat float64 array, None when absent, empty, non-finite or not > 0."""
    if value is None:
        return None
    try:
        arr = np.asarray(value, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        return None
    if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        return None
    return arr


def _first(*values: Any) -> float | None:
    """The first element of the first usable value (positive, finite)."""
    for v in values:
        arr = _positive(v)
        if arr is not None:
            return float(arr[0])
    return None


def pixel_pair(value: Any) -> tuple[float, float] | None:
    """A pixel size stored as one number (square) or ``(y, x)``, as ``(y, x)``; None when
    absent or not positive and finite."""
    arr = _positive(value)
    if arr is None or arr.size > 2:
        return None
    return (float(arr[0]), float(arr[-1]))


def recorded_geometry(attrs: Mapping, truth: Mapping | None = None) -> dict:
    """The geometry entries a data file records, under the current names whatever its age.

    ``attrs``: the ``entry_1/xrayflow_attrs`` entries; ``truth``: the ground truth (older
    files kept the object pixel and the slab thicknesses there). Returns the keyword
    arguments ``object_pixel`` ((y, x) m or None), ``slice_spacing`` (m or None), ``binning``
    (int), ``source_distance`` (m or None) and ``distances`` (tuple of m or None) of
    :class:`Geometry`. Absent, non-finite or non-positive entries count as not recorded.
    """
    truth = truth or {}
    binning = int(_first(attrs.get(BINNING)) or 1)
    pixel = (
        pixel_pair(attrs.get(OBJECT_PIXEL))
        or pixel_pair(truth.get("pixel_size"))
        or pixel_pair(truth.get("voxel_size"))
    )
    frame = pixel_pair(attrs.get("frame_pixel_size"))
    if pixel is None and frame is not None:
        pixel = (frame[0] / binning, frame[1] / binning)
    spacing = _first(
        attrs.get(SLICE_SPACING), truth.get("slice_spacing"), truth.get("slice_thickness")
    )
    distances = _positive(attrs.get(DISTANCES))
    return {
        "object_pixel": pixel,
        "slice_spacing": spacing,
        "binning": binning,
        "source_distance": _first(attrs.get(SOURCE_DISTANCE)),
        "distances": None if distances is None else tuple(float(z) for z in distances),
    }


def _pair(value: Any, kind: type) -> tuple:
    """One value or a ``(y, x)`` pair (a config entry) as a ``(y, x)`` tuple of ``kind``."""
    return tuple(kind(v) for v in np.broadcast_to(np.asarray(value, dtype=object), (2,)))


@dataclass(frozen=True)
class Geometry:
    """Energy, detector, sample-plane sampling and near-field distances of a data set.

    Attributes:
        energy_ev: photon energy, eV.
        distance: sample–detector distance, m (near field: the first of ``distances``).
        pixel_size: detector pixel pitch ``(y, x)`` before binning, m.
        binning: detector pixels summed per stored pixel along each axis.
        frame_pixel_size: pixel pitch ``(y, x)`` of the stored frames, m; None: derived,
            ``pixel_size × binning`` (given when read, so that it is kept bit for bit).
        shape: detector pixels ``(y, x)`` before binning (the simulation window), or None.
        object_pixel: object-plane pixel ``(y, x)`` of the unbinned grid, m; None: derived
            (far field: ``λz/(N·p)``, needs ``shape``; near field: ``p/M₁``), or unknown.
        slice_spacing: distance between consecutive slices of a multislice sample, m.
        source_distance: source–sample distance z1 of a cone beam, m (None: plane wave).
        distances: sample–detector distances z2 of near-field frames, m (None: far field).
        far_field: the detector is in the far field (diffraction patterns); False for
            near-field (real-space) frames; None: not known (the object pixel is not derived).
        wavelength: ``hc/E``, m (derived).
        effective_distances: ``z1·z2/(z1 + z2)`` per distance, m (``z2`` for a plane wave;
            None in the far field) (derived).
        magnifications: ``(z1 + z2)/z1`` per distance (1 for a plane wave) (derived).
    """

    energy_ev: float
    distance: float
    pixel_size: tuple[float, float]
    binning: int = 1
    frame_pixel_size: tuple[float, float] | None = None
    shape: tuple[int, int] | None = None
    object_pixel: tuple[float, float] | None = None
    slice_spacing: float | None = None
    source_distance: float | None = None
    distances: tuple[float, ...] | None = None
    far_field: bool | None = True
    wavelength: float = field(init=False)
    effective_distances: tuple[float, ...] | None = field(init=False)
    magnifications: tuple[float, ...] | None = field(init=False)

    def __post_init__(self):
        if self.frame_pixel_size is None:
            frame = (self.pixel_size[0] * self.binning, self.pixel_size[1] * self.binning)
            object.__setattr__(self, "frame_pixel_size", frame)
        lam = float(energy_to_wavelength(self.energy_ev))
        object.__setattr__(self, "wavelength", lam)
        zeff = mag = None
        if self.distances is not None:
            z2 = np.asarray(self.distances, dtype=np.float64)
            z1 = self.source_distance
            zeff = z2 if z1 is None else z1 * z2 / (z1 + z2)
            mag = np.ones_like(z2) if z1 is None else (z1 + z2) / z1
            zeff, mag = tuple(float(z) for z in zeff), tuple(float(m) for m in mag)
        object.__setattr__(self, "effective_distances", zeff)
        object.__setattr__(self, "magnifications", mag)
        if self.object_pixel is None:
            object.__setattr__(self, "object_pixel", self._derived_object_pixel())

    def _derived_object_pixel(self) -> tuple[float, float] | None:
        if self.far_field and self.shape is not None:
            return tuple(
                float(far_field_pixel_size(self.wavelength, self.distance, n, p))
                for n, p in zip(self.shape, self.pixel_size, strict=True)
            )
        if self.far_field is False and self.magnifications is not None:
            m = self.magnifications[0]
            return (self.pixel_size[0] / m, self.pixel_size[1] / m)
        return None

    @classmethod
    def from_config(
        cls,
        cfg: Mapping,
        distances: Sequence[float] | None = None,
        source_distance: float | None = None,
    ) -> Geometry:
        """The geometry of a (validated) simulate config: ``energy_ev`` and the ``geometry``
        section (``shape``, ``pixel_size``, ``distance``, ``binning``). Near field: the
        sample–detector ``distances`` (they replace ``geometry.distance``) and the cone
        beam's ``source_distance`` (None: plane wave)."""
        g = cfg["geometry"]
        near = distances is not None
        return cls(
            energy_ev=float(cfg["energy_ev"]),
            distance=float(distances[0]) if near else float(g["distance"]),
            pixel_size=_pair(g["pixel_size"], float),
            binning=int(g["binning"]),
            shape=_pair(g["shape"], int),
            source_distance=None if source_distance is None else float(source_distance),
            distances=tuple(float(z) for z in distances) if near else None,
            far_field=not near,
        )

    @classmethod
    def from_frames(
        cls,
        energy_ev: float,
        distance: float,
        frame_pixel_size: Sequence[float],
        frame_shape: Sequence[int] | None,
        attrs: Mapping,
        truth: Mapping | None = None,
        far_field: bool | None = None,
        source_distance: float | None = None,
    ) -> Geometry:
        """The geometry of stored frames: their pixel pitch ``(y, x)`` (m, after binning)
        and shape, with the entries a data file records (``attrs``, ``truth``: see
        :func:`recorded_geometry`). ``far_field`` None: near field when the file records
        sample–detector distances, else not known (only a recorded object pixel then).

        Near field (``far_field`` False) from a file that records no sample–detector
        distances (one written elsewhere): one distance, ``distance``. ``source_distance``
        (m) replaces the recorded one (a cone beam's focus the file does not record, or a
        correction); the object pixel is then derived from it, not read."""
        rec = recorded_geometry(attrs, truth)
        b = rec["binning"]
        if far_field is None and rec["distances"] is not None:
            far_field = False
        if far_field is False and rec["distances"] is None:
            rec["distances"] = (float(distance),)
        if source_distance is not None:
            rec["source_distance"] = float(source_distance)
            rec["object_pixel"] = None
        return cls(
            energy_ev=float(energy_ev),
            distance=float(distance),
            pixel_size=tuple(float(p) / b for p in frame_pixel_size),
            frame_pixel_size=tuple(float(p) for p in frame_pixel_size),
            shape=None if frame_shape is None else tuple(int(n) * b for n in frame_shape),
            far_field=far_field,
            **rec,
        )

    @property
    def frame_shape(self) -> tuple[int, int] | None:
        """Stored frame shape ``(y, x)`` (detector pixels after binning)."""
        if self.shape is None:
            return None
        return (self.shape[0] // self.binning, self.shape[1] // self.binning)

    @property
    def binned_object_pixel(self) -> tuple[float, float] | None:
        """Sample-plane pixel ``(y, x)`` of near-field (real-space) frames, whose pixels are
        binned detector pixels: ``object_pixel × binning``, m."""
        if self.object_pixel is None:
            return None
        return (self.object_pixel[0] * self.binning, self.object_pixel[1] * self.binning)

    def attrs(self) -> dict:
        """The entries of :data:`ATTR_NAMES` this geometry defines (absent ones left out):
        the object pixel as one number when square, else ``(y, x)``; distances as arrays."""
        out: dict[str, Any] = {BINNING: int(self.binning)}
        if self.object_pixel is not None:
            py, px = self.object_pixel
            out[OBJECT_PIXEL] = px if py == px else np.array([py, px])
        if self.slice_spacing is not None:
            out[SLICE_SPACING] = float(self.slice_spacing)
        if self.source_distance is not None:
            out[SOURCE_DISTANCE] = float(self.source_distance)
        if self.distances is not None:
            out[DISTANCES] = np.asarray(self.distances, dtype=np.float64)
            out[EFFECTIVE_DISTANCES] = np.asarray(self.effective_distances, dtype=np.float64)
            out[MAGNIFICATIONS] = np.asarray(self.magnifications, dtype=np.float64)
        return out
