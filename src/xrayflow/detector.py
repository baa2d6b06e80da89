"""Pixel-array detector: Poisson counting, read noise, saturation, binning, gaps and beamstop.

Layout. The far-field model keeps the zero frequency at index ``(0, 0)`` (docs/physics.md);
a physical detector has its direct beam near the middle. :class:`Detector` stores its
``mask`` in the **physical (centred) layout** — the layout of CXI files — and
:meth:`Detector.measure` takes and returns arrays in the layout named by its ``centred``
field (default ``False``: DC at the corner, as the model produces them). Internally the
frame is ``fftshift``-ed to the physical layout, detected, binned and shifted back.

Order of operations in :meth:`Detector.measure` (per physical pixel, then per binned pixel):
Poisson counts at the expected value -> optional Gaussian read noise (clipped at 0) ->
saturation clip -> dead pixels (mask False) set to 0 -> binning (sum over
``binning × binning`` blocks) -> binned pixels containing any dead pixel set to 0.
The result is float32 counts, deterministic for a given ``rng`` seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from xrayflow.backend import fftshift, ifftshift, to_numpy
from xrayflow.errors import PhysicsError

__all__ = ["Detector", "bin_frames", "make_mask", "poisson_counts"]


def poisson_counts(expected, rng) -> np.ndarray:
    """Poisson-distributed counts (float32) with mean ``expected`` (any shape, >= 0).

    ``rng`` is a ``numpy.random.Generator`` or a seed. CuPy input is copied to the host
    (the NumPy generator keeps results identical on CPU and GPU runs).
    """
    lam = np.asarray(to_numpy(expected), dtype=np.float64)
    if not np.all(np.isfinite(lam)):
        raise PhysicsError("expected counts contain NaN or infinity")
    if np.any(lam < 0):
        raise PhysicsError(f"expected counts must be >= 0 (min {lam.min():.3g})")
    rng = np.random.default_rng(rng)
    return rng.poisson(lam).astype(np.float32)


def bin_frames(frames, binning: int) -> np.ndarray:
    """Sum ``binning × binning`` blocks of the last two axes (sizes must divide exactly)."""
    a = np.asarray(frames)
    b = int(binning)
    if b == 1:
        return a
    ny, nx = a.shape[-2:]
    if ny % b or nx % b:
        raise PhysicsError(f"detector shape {ny}x{nx} is not divisible by binning {b}")
    s = a.reshape(*a.shape[:-2], ny // b, b, nx // b, b)
    return s.sum(axis=(-3, -1))


def make_mask(
    shape,
    gaps: Sequence[tuple[int, int, int]] = (),
    beamstop_radius_px: float = 0.0,
    beamstop_center=None,
    dead_pixels=None,
) -> np.ndarray:
    """Good-pixel mask (bool, True = good) in the physical (centred) layout.

    Args:
        shape: ``(ny, nx)``.
        gaps: ``(axis, start, width)`` triples: ``width`` insensitive rows (axis 0) or
            columns (axis 1) from index ``start`` (module gaps between sensor tiles).
        beamstop_radius_px: pixels within this distance of ``beamstop_center`` are blocked.
        beamstop_center: ``(y, x)`` pixel; default ``(ny // 2, nx // 2)``, the zero
            frequency after ``fftshift``.
        dead_pixels: optional ``(K, 2)`` integer indices of dead pixels.
    """
    ny, nx = (int(s) for s in shape)
    mask = np.ones((ny, nx), dtype=bool)
    for gap in gaps:
        axis, start, width = (int(v) for v in gap)
        if axis not in (0, 1):
            raise PhysicsError(f"gap axis must be 0 (rows) or 1 (columns), got {axis}")
        n = (ny, nx)[axis]
        if width < 0 or not 0 <= start < n:
            raise PhysicsError(f"gap {gap!r} lies outside the {ny}x{nx} detector")
        if axis == 0:
            mask[start : start + width, :] = False
        else:
            mask[:, start : start + width] = False
    if beamstop_radius_px > 0:
        cy, cx = (ny // 2, nx // 2) if beamstop_center is None else beamstop_center
        y = np.arange(ny)[:, None] - float(cy)
        x = np.arange(nx)[None, :] - float(cx)
        mask &= y * y + x * x > float(beamstop_radius_px) ** 2
    if dead_pixels is not None:
        idx = np.asarray(dead_pixels, dtype=int).reshape(-1, 2)
        mask[idx[:, 0], idx[:, 1]] = False
    return mask


@dataclass
class Detector:
    """A pixel-array detector.

    Attributes:
        shape: physical pixels ``(ny, nx)`` (before binning).
        pixel_size: physical pixel pitch in m, scalar or ``(py, px)``.
        distance: sample-detector distance in m.
        binning: sum ``binning × binning`` pixels (shape must be divisible by it).
        mask: good pixels (True), physical centred layout, shape ``shape``; None = all good.
        saturation: counts at which a physical pixel saturates (clip); None = no limit.
        read_noise: Gaussian read noise (standard deviation in counts) per physical pixel.
        centred: layout of the arrays :meth:`measure` takes and returns (False = zero
            frequency at index (0, 0), as the far-field model produces them).
    """

    shape: tuple[int, int]
    pixel_size: float | tuple[float, float]
    distance: float
    binning: int = 1
    mask: np.ndarray | None = None
    saturation: float | None = None
    read_noise: float = 0.0
    centred: bool = False

    def __post_init__(self):
        self.shape = tuple(int(s) for s in self.shape)
        if len(self.shape) != 2 or min(self.shape) < 1:
            raise PhysicsError(f"detector shape must be (ny, nx), got {self.shape!r}")
        self.binning = int(self.binning)
        if self.binning < 1:
            raise PhysicsError(f"binning must be >= 1, got {self.binning}")
        if self.shape[0] % self.binning or self.shape[1] % self.binning:
            raise PhysicsError(
                f"detector shape {self.shape} is not divisible by binning {self.binning}"
            )
        if (
            self.binning > 1
            and not self.centred
            and (self.shape[0] % (2 * self.binning) or self.shape[1] % (2 * self.binning))
        ):
            raise PhysicsError(
                f"with frames in DC-at-corner layout (centred=False) the detector shape "
                f"{self.shape} must be divisible by 2*binning = {2 * self.binning}, so that the "
                f"zero frequency stays at binned pixel (0, 0)"
            )
        p = np.broadcast_to(np.asarray(self.pixel_size, dtype=np.float64), (2,))
        if not np.all(p > 0) or not np.all(np.isfinite(p)):
            raise PhysicsError(f"pixel_size must be positive, got {self.pixel_size!r}")
        if not (np.isfinite(self.distance) and self.distance > 0):
            raise PhysicsError(f"detector distance must be positive, got {self.distance!r}")
        if self.mask is not None:
            self.mask = np.asarray(self.mask, dtype=bool)
            if self.mask.shape != self.shape:
                raise PhysicsError(
                    f"mask shape {self.mask.shape} differs from detector shape {self.shape}"
                )
        if self.saturation is not None and not self.saturation > 0:
            raise PhysicsError(f"saturation must be > 0 counts, got {self.saturation!r}")
        if self.read_noise < 0:
            raise PhysicsError(f"read_noise must be >= 0, got {self.read_noise!r}")

    @property
    def pixel_size_yx(self) -> tuple[float, float]:
        """Physical pixel pitch ``(py, px)`` in m."""
        p = np.broadcast_to(np.asarray(self.pixel_size, dtype=np.float64), (2,))
        return float(p[0]), float(p[1])

    @property
    def binned_shape(self) -> tuple[int, int]:
        """Shape of the measured frames ``(ny // binning, nx // binning)``."""
        return self.shape[0] // self.binning, self.shape[1] // self.binning

    @property
    def binned_pixel_size(self) -> tuple[float, float]:
        """Effective pixel pitch ``(py, px)·binning`` of the measured frames, m."""
        py, px = self.pixel_size_yx
        return py * self.binning, px * self.binning

    def object_pixel_size(self, wavelength: float) -> tuple[float, float]:
        """Far-field object pixel ``λz/(N p)`` per axis for the binned frames, m."""
        (ny, nx), (py, px) = self.binned_shape, self.binned_pixel_size
        return (
            wavelength * self.distance / (ny * py),
            wavelength * self.distance / (nx * px),
        )

    def good_pixels(self, centred: bool | None = None) -> np.ndarray:
        """Binned good-pixel mask (True where every physical pixel of the bin is good).

        ``centred`` picks the layout (default: this detector's ``centred`` field).
        """
        centred = self.centred if centred is None else centred
        m = np.ones(self.shape, dtype=bool) if self.mask is None else self.mask
        if self.binning > 1:
            m = bin_frames(m.astype(np.int32), self.binning) == self.binning**2
        return m if centred else ifftshift(m, axes=(-2, -1))

    def measure(self, expected, rng) -> np.ndarray:
        """Detected counts (float32, ``(..., ny/b, nx/b)``) for expected counts ``(..., ny, nx)``.

        See the module docstring for the order of operations. ``rng``: Generator or seed.
        """
        lam = np.asarray(to_numpy(expected), dtype=np.float64)
        if lam.shape[-2:] != self.shape:
            raise PhysicsError(
                f"expected intensity has frame shape {lam.shape[-2:]}, detector is {self.shape}"
            )
        rng = np.random.default_rng(rng)
        if not self.centred:
            lam = fftshift(lam, axes=(-2, -1))
        counts = poisson_counts(lam, rng).astype(np.float64)
        if self.read_noise > 0:
            counts += rng.normal(0.0, self.read_noise, size=counts.shape)
            np.maximum(counts, 0.0, out=counts)
        if self.saturation is not None:
            np.minimum(counts, float(self.saturation), out=counts)
        if self.mask is not None:
            counts *= self.mask
        counts = bin_frames(counts, self.binning)
        if self.mask is not None and self.binning > 1:
            counts *= self.good_pixels(centred=True)
        if not self.centred:
            counts = ifftshift(counts, axes=(-2, -1))
        return counts.astype(np.float32)

    def expected_binned(self, expected) -> np.ndarray:
        """Noise-free counterpart of :meth:`measure`: binned expected counts, masked (float64).

        No saturation is applied (it acts on the random counts).
        """
        lam = np.asarray(to_numpy(expected), dtype=np.float64)
        if not self.centred:
            lam = fftshift(lam, axes=(-2, -1))
        if self.mask is not None:
            lam = lam * self.mask
        lam = bin_frames(lam, self.binning)
        if self.mask is not None and self.binning > 1:
            lam = lam * self.good_pixels(centred=True)
        return lam if self.centred else ifftshift(lam, axes=(-2, -1))
