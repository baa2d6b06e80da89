"""A flat area detector normal to the beam: scattering vector and azimuth of every pixel,
module gaps and the beamstop.

Units: lengths in m, except the scattering vector ``q`` in nm⁻¹ and pixel positions and
radii in pixels; angles in rad. The beam hits the detector at ``beam_center`` (pixel
coordinates ``(y, x)``, row and column, possibly outside the image). A pixel at distance
``r`` (m) from it sees the scattering angle ``2θ = atan(r/D)`` and ``q = 4π sin(θ)/λ``; its
azimuth is ``χ = atan2(y, x)`` in the pixel axes (from the +x column axis towards +y rows).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from xrayflow.optics.constants import wavelength as energy_to_wavelength

#: Samples of a radial profile per pixel of radius (at the largest radius on the image).
RADIAL_OVERSAMPLING = 8
#: The radial grid reaches this multiple of the largest q on the image (distorted rings).
RADIAL_SPAN = 1.3
#: Samples of an angular profile over the full circle.
ANGULAR_SAMPLES = 4096


@dataclass(frozen=True)
class DetectorGeometry:
    """The detector of one image.

    Attributes:
        shape: pixels ``(ny, nx)``.
        pixel_size: pixel pitch ``(py, px)``, m.
        distance: sample–detector distance, m.
        energy_ev: photon energy, eV.
        beam_center: where the direct beam hits the detector, ``(y, x)`` in pixels (pixel
            centres at integers; may lie outside the image).
    """

    shape: tuple[int, int]
    pixel_size: tuple[float, float]
    distance: float
    energy_ev: float
    beam_center: tuple[float, float]

    @property
    def wavelength(self) -> float:
        """``hc/E``, m."""
        return float(energy_to_wavelength(self.energy_ev))

    @property
    def pixel(self) -> float:
        """Geometric mean of the pixel pitch, m (the pitch of square pixels)."""
        return math.sqrt(self.pixel_size[0] * self.pixel_size[1])

    def with_center(self, beam_center) -> DetectorGeometry:
        """The same detector with the beam at ``beam_center`` ``(y, x)``, px."""
        return dataclasses.replace(self, beam_center=(float(beam_center[0]), float(beam_center[1])))

    def q_of_radius(self, r):
        """``q`` (nm⁻¹) at distance ``r`` (m) from the beam centre."""
        theta = 0.5 * np.arctan(np.asarray(r, dtype=np.float64) / self.distance)
        return 4.0 * np.pi * np.sin(theta) / (self.wavelength * 1e9)

    def radius_m(self, q):
        """Distance (m) from the beam centre at which ``q`` (nm⁻¹) meets the detector,
        ``D·tan(2·asin(qλ/4π))``; inf where ``2θ >= 90°``, nan where ``qλ/4π > 1``."""
        s = np.asarray(q, dtype=np.float64) * self.wavelength * 1e9 / (4.0 * np.pi)
        with np.errstate(invalid="ignore"):
            two_theta = 2.0 * np.arcsin(s)
            return np.where(
                two_theta < 0.5 * np.pi,
                self.distance * np.tan(two_theta),
                np.where(s <= 1, np.inf, np.nan),
            )

    def radius_px(self, q):
        """:meth:`radius_m` in pixels (of :attr:`pixel`)."""
        return self.radius_m(q) / self.pixel

    def pixel_radius_range(self) -> tuple[float, float]:
        """Smallest and largest distance (m) of a pixel centre from the beam centre."""
        lo, hi = [], []
        for c, n, p in zip(self.beam_center, self.shape, self.pixel_size, strict=True):
            lo.append(abs(min(max(round(c), 0), n - 1) - c) * p)  # the nearest pixel centre
            hi.append(max(abs(c), abs(c - (n - 1))) * p)
        return math.hypot(*lo), math.hypot(*hi)

    def q_range(self) -> tuple[float, float]:
        """Smallest and largest ``q`` (nm⁻¹) over the pixel centres."""
        r_lo, r_hi = self.pixel_radius_range()
        return float(self.q_of_radius(r_lo)), float(self.q_of_radius(r_hi))

    @cached_property
    def offsets_px(self) -> tuple[np.ndarray, np.ndarray]:
        """Pixel offsets from the beam centre: ``dy`` (ny, 1) and ``dx`` (1, nx), px."""
        ny, nx = self.shape
        dy = (np.arange(ny, dtype=np.float64) - self.beam_center[0])[:, None]
        dx = (np.arange(nx, dtype=np.float64) - self.beam_center[1])[None, :]
        return dy, dx

    @cached_property
    def _q(self) -> np.ndarray:
        dy, dx = self.offsets_px
        q = self.q_of_radius(np.hypot(dy * self.pixel_size[0], dx * self.pixel_size[1]))
        q.flags.writeable = False
        return q

    @cached_property
    def _chi(self) -> np.ndarray:
        dy, dx = self.offsets_px
        chi = np.arctan2(dy * self.pixel_size[0], dx * self.pixel_size[1])
        chi.flags.writeable = False
        return chi

    @cached_property
    def _radial_step(self) -> tuple[float, int]:
        r_hi = self.pixel_radius_range()[1]
        q_hi = float(self.q_of_radius(r_hi))
        dq = q_hi - float(self.q_of_radius(max(r_hi - self.pixel, 0.0)))
        step = dq / RADIAL_OVERSAMPLING
        return step, int(math.ceil(RADIAL_SPAN * q_hi / step)) + 2

    def _radial_index(self, q) -> tuple[np.ndarray, np.ndarray]:
        step, n = self._radial_step
        x = np.asarray(q, dtype=np.float64) / step
        i = np.minimum(x.astype(np.intp), n - 2)
        return i, np.minimum(x - i, 1.0)

    @cached_property
    def _q_index(self) -> tuple[np.ndarray, np.ndarray]:
        return self._radial_index(self._q)

    def q_grid(self) -> np.ndarray:
        """The 1D grid of ``q`` (nm⁻¹, from 0) on which :meth:`radial` takes profiles:
        :data:`RADIAL_OVERSAMPLING` samples per pixel of radius, up to :data:`RADIAL_SPAN`
        × the largest ``q`` on the image."""
        step, n = self._radial_step
        return np.arange(n) * step

    def radial(self, profile: np.ndarray, q=None) -> np.ndarray:
        """``profile`` (given on :meth:`q_grid`) linearly interpolated at ``q`` (nm⁻¹; default
        every pixel's, :meth:`q_map`); clamped at the grid's end."""
        i, f = self._q_index if q is None else self._radial_index(q)
        return profile[i] * (1.0 - f) + profile[i + 1] * f

    @cached_property
    def _chi_index(self) -> tuple[np.ndarray, np.ndarray]:
        x = (self._chi + np.pi) * (ANGULAR_SAMPLES / (2.0 * np.pi))
        i = np.minimum(x.astype(np.intp), ANGULAR_SAMPLES - 1)
        return i, np.minimum(x - i, 1.0)

    def chi_grid(self) -> np.ndarray:
        """The 1D grid of ``χ`` (rad, ``-π`` to ``π`` inclusive, :data:`ANGULAR_SAMPLES`
        steps) on which :meth:`angular` takes profiles."""
        return np.linspace(-np.pi, np.pi, ANGULAR_SAMPLES + 1)

    def angular(self, profile: np.ndarray) -> np.ndarray:
        """``profile`` (given on :meth:`chi_grid`; periodic, equal at both ends) linearly
        interpolated at every pixel's azimuth."""
        i, f = self._chi_index
        return profile[i] * (1.0 - f) + profile[i + 1] * f

    def q_map(self) -> np.ndarray:
        """(ny, nx) ``q`` of every pixel centre, nm⁻¹ (read-only, computed once)."""
        return self._q

    def chi_map(self) -> np.ndarray:
        """(ny, nx) azimuth ``χ`` of every pixel centre in ``(-π, π]``, rad (read-only)."""
        return self._chi


def gap_mask(shape, module_shape, gap_width) -> np.ndarray:
    """(ny, nx) bool, False in the insensitive gaps between detector modules: modules of
    ``module_shape`` ``(my, mx)`` pixels tile the image from pixel (0, 0), separated by
    ``gap_width`` ``(gy, gx)`` pixels (a Pilatus 2M: modules 195 × 487, gaps 17 × 7)."""
    axes = []
    for n, m, g in zip(shape, module_shape, gap_width, strict=True):
        axes.append(np.arange(int(n)) % (int(m) + int(g)) < int(m))
    return axes[0][:, None] & axes[1][None, :]


def beamstop_mask(
    geom: DetectorGeometry,
    radius_px: float,
    arm_width_px: float = 0.0,
    arm_angle: float = 0.0,
    wedge_angle: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Pixels behind the beamstop, (ny, nx) bool each: its disc of ``radius_px`` at the beam
    centre, and its arm (none for ``arm_width_px`` 0) from the beam centre to the image
    edge at azimuth ``arm_angle`` (rad, as χ), ``arm_width_px`` wide at the centre and
    widening by the full angle ``wedge_angle`` (rad; 0: a straight arm)."""
    dy, dx = geom.offsets_px
    disc = dy * dy + dx * dx <= radius_px * radius_px
    if arm_width_px <= 0:
        return disc, np.zeros(geom.shape, dtype=bool)
    c, s = math.cos(arm_angle), math.sin(arm_angle)
    along = dx * c + dy * s
    across = np.abs(dy * c - dx * s)
    half = 0.5 * arm_width_px + np.maximum(along, 0.0) * math.tan(0.5 * wedge_angle)
    return disc, (along >= 0) & (across <= half)
