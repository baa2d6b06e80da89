"""Scan trajectories (raster, Fermat spiral, rotation series) and pixel conversions.

Conventions (docs/physics.md): positions are ``(y, x)`` pairs in metres of the **probe
centre** relative to the **centre of the object array**. Pixel ``i`` has its centre at index
``i``, and index ``N // 2`` is coordinate 0 of an ``N``-pixel axis, as with ``fftshift`` and
:func:`xrayflow.optics.gaussian.centred_coordinates` (the probe generators put the beam axis
at index ``n // 2`` of the probe window). Hence the fractional index of the window's
top-left corner is

    corner = N // 2 − n // 2 + position / pixel_size

so position 0 puts the probe axis on the object centre, and the corner is an integer.
:func:`object_shape_for_scan` returns shapes with ``N − n`` even (``N // 2 − n // 2 =
(N − n) / 2``).
"""

from __future__ import annotations

import math

import numpy as np

from xrayflow.errors import PhysicsError

GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))  # 137.507...°, in radians

# Fermat spiral r = c·sqrt(k), θ = k·golden angle: each point occupies an area π c².
# The median nearest-neighbour distance is FERMAT_NN_FACTOR · c (measured numerically for
# 100..10000 points; within about 1 %), so c = step / FERMAT_NN_FACTOR.
FERMAT_NN_FACTOR = 1.69


def _pair(value, name: str) -> tuple[float, float]:
    arr = np.broadcast_to(np.asarray(value, dtype=np.float64), (2,))
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise PhysicsError(f"{name} must be positive and finite, got {value!r}")
    return float(arr[0]), float(arr[1])


def raster_scan(n_y: int, n_x: int, step, snake: bool = False) -> np.ndarray:
    """Rectangular grid of ``n_y × n_x`` positions, ``(P, 2)`` (y, x) in metres, mean 0.

    ``step`` is a scalar or a ``(step_y, step_x)`` pair in metres. Rows are ordered
    along y, positions within a row along +x (or alternating with ``snake=True``).
    """
    n_y, n_x = int(n_y), int(n_x)
    if n_y < 1 or n_x < 1:
        raise PhysicsError(f"raster scan needs at least one row and column, got {n_y}×{n_x}")
    sy, sx = _pair(step, "step")
    y = (np.arange(n_y) - (n_y - 1) / 2.0) * sy
    x = (np.arange(n_x) - (n_x - 1) / 2.0) * sx
    yy, xx = np.meshgrid(y, x, indexing="ij")
    if snake:
        xx[1::2] = xx[1::2, ::-1]
    return np.stack([yy.ravel(), xx.ravel()], axis=-1)


def fermat_spiral(n_points: int, step: float, centre: bool = False) -> np.ndarray:
    """Fermat-spiral scan (Huang et al., Opt. Express 22, 12634 (2014)), ``(P, 2)`` metres.

    Point ``k`` sits at radius ``c·sqrt(k)`` and angle ``k·137.5°``; ``c`` is chosen so
    that the median nearest-neighbour distance is ``step``. The spiral is centred on 0
    (point 0 at the origin); with ``centre=True`` the positions' mean is subtracted instead.
    The scan covers a disc of radius ``c·sqrt(n_points)`` with one point per ``π c²``.
    """
    n_points = int(n_points)
    if n_points < 1:
        raise PhysicsError(f"fermat_spiral needs n_points >= 1, got {n_points}")
    (step, _) = _pair(step, "step")
    c = step / FERMAT_NN_FACTOR
    k = np.arange(n_points, dtype=np.float64)
    r = c * np.sqrt(k)
    theta = k * GOLDEN_ANGLE
    pos = np.stack([r * np.sin(theta), r * np.cos(theta)], axis=-1)
    if centre:
        pos -= pos.mean(axis=0)
    return pos


def fermat_spiral_radius(n_points: int, step: float) -> float:
    """Radius in metres of the disc a :func:`fermat_spiral` of ``n_points`` covers."""
    return step / FERMAT_NN_FACTOR * math.sqrt(n_points)


def add_jitter(positions, sigma: float, rng) -> np.ndarray:
    """Positions plus independent Gaussian errors of standard deviation ``sigma`` (m) per axis.

    ``rng`` is a ``numpy.random.Generator`` or a seed; the input is not modified.
    """
    pos = np.asarray(positions, dtype=np.float64)
    if sigma < 0 or not math.isfinite(sigma):
        raise PhysicsError(f"jitter sigma must be >= 0, got {sigma!r}")
    rng = np.random.default_rng(rng)
    return pos + rng.normal(0.0, float(sigma), size=pos.shape)


def rotation_series(
    n_angles: int, start_deg: float = 0.0, stop_deg: float = 180.0, endpoint: bool = False
) -> np.ndarray:
    """Evenly spaced tomography angles in **radians** (``n_angles`` from start to stop)."""
    n_angles = int(n_angles)
    if n_angles < 1:
        raise PhysicsError(f"rotation_series needs n_angles >= 1, got {n_angles}")
    return np.deg2rad(np.linspace(start_deg, stop_deg, n_angles, endpoint=endpoint))


def _shape2(shape, name: str) -> tuple[int, int]:
    s = tuple(int(v) for v in np.broadcast_to(np.asarray(shape), (2,)))
    if min(s) < 1:
        raise PhysicsError(f"{name} must be positive, got {shape!r}")
    return s


def positions_to_pixels(positions_m, pixel_size, object_shape, probe_shape) -> np.ndarray:
    """Fractional (y, x) index of each probe window's top-left corner on the object grid.

    ``corner = N//2 − n//2 + position/pixel_size`` per axis (see module docstring).
    ``pixel_size`` is a scalar or a (y, x) pair in metres.
    """
    pos = np.asarray(positions_m, dtype=np.float64).reshape(-1, 2)
    py, px = _pair(pixel_size, "pixel_size")
    ny, nx = _shape2(object_shape, "object_shape")
    my, mx = _shape2(probe_shape, "probe_shape")
    offset = np.array([ny // 2 - my // 2, nx // 2 - mx // 2], dtype=np.float64)
    return offset + pos / np.array([py, px])


def pixels_to_positions(corners, pixel_size, object_shape, probe_shape) -> np.ndarray:
    """Inverse of :func:`positions_to_pixels`: corners (px) -> positions (m)."""
    c = np.asarray(corners, dtype=np.float64).reshape(-1, 2)
    py, px = _pair(pixel_size, "pixel_size")
    ny, nx = _shape2(object_shape, "object_shape")
    my, mx = _shape2(probe_shape, "probe_shape")
    offset = np.array([ny // 2 - my // 2, nx // 2 - mx // 2], dtype=np.float64)
    return (c - offset) * np.array([py, px])


def object_shape_for_scan(positions_m, pixel_size, probe_shape, margin_px: int = 0) -> tuple:
    """Smallest object shape ``(Ny, Nx)`` holding every probe window plus ``margin_px``.

    ``N - n`` is always even, so position 0 maps to an integer corner. One extra pixel per
    side is kept for sub-pixel shifts (a window at a fractional corner touches
    ``floor(corner) .. ceil(corner) + n - 1``).
    """
    pos = np.asarray(positions_m, dtype=np.float64).reshape(-1, 2)
    py, px = _pair(pixel_size, "pixel_size")
    my, mx = _shape2(probe_shape, "probe_shape")
    margin = int(margin_px)
    if margin < 0:
        raise PhysicsError(f"margin_px must be >= 0, got {margin_px}")
    extent = np.abs(pos).max(axis=0) / np.array([py, px]) if len(pos) else np.zeros(2)
    half = np.ceil(extent - 1e-9).astype(int) + 1 + margin
    return (int(my + 2 * half[0]), int(mx + 2 * half[1]))


def check_positions_fit(corners, object_shape, probe_shape, tol: float = 1e-6) -> None:
    """Raise :class:`PhysicsError` when a probe window falls (partly) off the object grid.

    A window at fractional corner ``c`` needs ``floor(c) >= 0`` and ``ceil(c) + n <= N``
    (sub-pixel shifts touch one extra pixel); ``tol`` forgives rounding noise.
    """
    c = np.asarray(corners, dtype=np.float64).reshape(-1, 2)
    ny, nx = _shape2(object_shape, "object_shape")
    my, mx = _shape2(probe_shape, "probe_shape")
    if my > ny or mx > nx:
        raise PhysicsError(f"probe window {my}×{mx} is larger than the object grid {ny}×{nx}")
    if not np.all(np.isfinite(c)):
        raise PhysicsError("scan positions contain NaN or infinity")
    lo = np.floor(c + tol)
    hi = np.ceil(c - tol) + np.array([my, mx])
    bad = np.any(lo < 0, axis=1) | (hi[:, 0] > ny) | (hi[:, 1] > nx)
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0])
        raise PhysicsError(
            f"{int(bad.sum())} of {len(c)} probe windows fall off the {ny}×{nx} object grid "
            f"(first: position {i}, corner (y, x) = ({c[i, 0]:.2f}, {c[i, 1]:.2f}) px, "
            f"probe {my}×{mx}); enlarge the object (object_shape_for_scan) or shrink the scan"
        )
