"""Closed-form paraxial Gaussian beam (TEM00), written from the textbook formula.

With the wave convention ``exp(+i(kz − ωt))`` and the global ``exp(ikz)`` dropped (as the
propagators drop it), a beam with waist ``w0`` at ``z = 0`` is

    u(r, z) = (w0 / w(z)) · exp(−r² / w(z)²) · exp(i k r² / (2 R(z))) · exp(−i ζ(z))

with Rayleigh range ``z_R = π w0² / λ``, radius ``w(z) = w0 √(1 + (z/z_R)²)``, wavefront
curvature radius ``R(z) = z (1 + (z_R/z)²)`` (``1/R = 0`` at the waist) and Gouy phase
``ζ(z) = arctan(z / z_R)``. The peak amplitude at the waist is 1; ``Σ|u|²Δx² = π w0²/2``
(independent of z).

The grid is centred like ``fftshift``: pixel index ``N//2`` is at coordinate 0.
"""

from __future__ import annotations

import numpy as np

from xrayflow.errors import PhysicsError

__all__ = [
    "gaussian_beam",
    "gouy_phase",
    "rayleigh_range",
    "beam_radius",
    "curvature_radius",
    "centred_coordinates",
]


def rayleigh_range(waist, wavelength) -> float:
    """``z_R = π w0² / λ`` (m)."""
    return float(np.pi * float(waist) ** 2 / float(wavelength))


def beam_radius(z, waist, wavelength):
    """1/e² intensity radius ``w(z) = w0 √(1 + (z/z_R)²)`` (m)."""
    zr = rayleigh_range(waist, wavelength)
    return float(waist) * np.sqrt(1.0 + (np.asarray(z, dtype=np.float64) / zr) ** 2)


def curvature_radius(z, waist, wavelength):
    """Wavefront radius of curvature ``R(z) = z (1 + (z_R/z)²)``; ``inf`` at the waist."""
    zr = rayleigh_range(waist, wavelength)
    z = np.asarray(z, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.where(z == 0, np.inf, z * (1.0 + (zr / np.where(z == 0, 1.0, z)) ** 2))


def gouy_phase(z, waist, wavelength):
    """Gouy phase ``ζ(z) = arctan(z / z_R)`` (rad)."""
    return np.arctan(np.asarray(z, dtype=np.float64) / rayleigh_range(waist, wavelength))


def centred_coordinates(shape, pixel_size):
    """Coordinates ``(y[:, None], x[None, :])`` in m with index ``N//2`` at 0 (float64)."""
    ny, nx = int(shape[-2]), int(shape[-1])
    p = np.asarray(pixel_size, dtype=np.float64).ravel()
    dy, dx = (float(p[0]), float(p[0])) if p.size == 1 else (float(p[0]), float(p[1]))
    y = (np.arange(ny) - ny // 2) * dy
    x = (np.arange(nx) - nx // 2) * dx
    return y[:, None], x[None, :]


def gaussian_beam(
    shape,
    pixel_size,
    wavelength,
    waist,
    z=0.0,
    xp=np,
    dtype=np.complex128,
    center=(0.0, 0.0),
):
    """Paraxial Gaussian beam ``u(y, x; z)`` on a ``shape`` grid (see module docstring).

    Args:
        shape: ``(ny, nx)``. pixel_size: scalar or ``(dy, dx)``, m.
        wavelength, waist (1/e² intensity radius at the waist), z (distance from the waist;
            negative = before the focus), all in m.
        center: beam axis ``(y, x)`` in m relative to the grid centre.
    """
    lam = float(wavelength)
    w0 = float(waist)
    if not (lam > 0 and w0 > 0):
        raise PhysicsError(f"wavelength and waist must be positive, got {wavelength!r}, {waist!r}")
    z = float(z)
    k = 2.0 * np.pi / lam
    zr = rayleigh_range(w0, lam)
    w = w0 * np.sqrt(1.0 + (z / zr) ** 2)
    inv_r = z / (z * z + zr * zr)  # 1/R(z), 0 at the waist
    zeta = np.arctan(z / zr)
    y, x = centred_coordinates(shape, pixel_size)
    r2 = (y - float(center[0])) ** 2 + (x - float(center[1])) ** 2
    u = (w0 / w) * np.exp(-r2 / (w * w) + 1j * (0.5 * k * inv_r * r2 - zeta))
    return xp.asarray(u.astype(dtype))
