"""Fourier ring (2D) and shell (3D) correlation, information thresholds, resolution.

``FRC(r) = |sum_ring F1 conj(F2)| / sqrt(sum_ring |F1|^2 * sum_ring |F2|^2)``

Rings are one Fourier pixel wide (of the shortest axis): ring ``i`` holds the frequencies
``|f|`` (cycles per pixel) that round to ``i / n_min``, for ``i = 0 .. n_min // 2``
(frequencies beyond Nyquist, the corners, are left out). ``n_per_ring`` counts the Fourier
pixels of the whole plane (both half planes) in each ring, as in van Heel & Schatz (2005).

Resolution units: a crossing at spatial frequency ``f`` cycles/pixel (Nyquist = 0.5) is a
**half-period** resolution of ``1/(2f)`` pixels (``dx/(2f)`` metres) and a **full-period**
resolution of ``1/f`` pixels. :func:`resolution` returns both, labelled.

:func:`sublattice_frc` correlates one image with itself: its two diagonal sub-lattices
(even rows and columns against odd rows and columns), a resolution estimate without a
reference or a second measurement (the NxSCI recipe of Li et al., PNAS 2023).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from xrayflow.backend import fftfreq, fftn, ifftn

__all__ = [
    "FRC",
    "CONVENTION",
    "FRC_HALF",
    "FRC_ONE_SEVENTH",
    "Resolution",
    "THRESHOLDS",
    "frc",
    "fsc",
    "half_bit_threshold",
    "one_bit_threshold",
    "resolution",
    "ring_frequencies",
    "sublattice_frc",
    "threshold_curve",
]

FRC_HALF = 0.5
FRC_ONE_SEVENTH = 1.0 / 7.0


class FRC(NamedTuple):
    """``radii`` (ring index = radius in Fourier pixels of the shortest axis), ``curve``,
    ``n_per_ring``. Unpacks as ``radii, curve, n = frc(a, b)``."""

    radii: np.ndarray
    curve: np.ndarray
    n_per_ring: np.ndarray


def ring_frequencies(radii, shape) -> np.ndarray:
    """Spatial frequency of each ring in cycles per pixel: ``radii / min(shape)``."""
    return np.asarray(radii, dtype=np.float64) / float(min(shape))


def _ring_index(shape) -> np.ndarray:
    nmin = min(shape)
    f2 = np.zeros(shape)
    for ax, n in enumerate(shape):
        f = fftfreq(n)
        s = [1] * len(shape)
        s[ax] = n
        f2 = f2 + (f.reshape(s)) ** 2
    return np.rint(np.sqrt(f2) * nmin).astype(np.int64)


def frc(a, b, *, real: bool = False) -> FRC:
    """Fourier ring/shell correlation of two arrays of the same shape (2D or 3D, or any N-D).

    Args:
        a, b: real or complex arrays (already aligned and apodised).
        real: use the real part of the ring sum in the numerator instead of its modulus
            (some codes do; the modulus is the default, as in van Heel & Schatz).

    Returns:
        :class:`FRC` ``(radii, curve, n_per_ring)`` for rings ``0 .. min(shape)//2``. A
        ring whose denominator is zero gets 0.
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {a.shape} vs {b.shape}")
    if a.ndim < 1:
        raise ValueError("frc needs arrays with at least one axis")
    fa = fftn(a, norm="backward")
    fb = fftn(b, norm="backward")
    idx = _ring_index(a.shape).ravel()
    nring = min(a.shape) // 2 + 1
    keep = idx < nring
    idx = idx[keep]
    cross = (fa * np.conj(fb)).ravel()[keep]
    pa = (np.abs(fa) ** 2).ravel()[keep]
    pb = (np.abs(fb) ** 2).ravel()[keep]
    num_re = np.bincount(idx, weights=cross.real, minlength=nring)
    num_im = np.bincount(idx, weights=cross.imag, minlength=nring)
    den = np.sqrt(
        np.bincount(idx, weights=pa, minlength=nring)
        * np.bincount(idx, weights=pb, minlength=nring)
    )
    n = np.bincount(idx, minlength=nring).astype(np.int64)
    num = num_re if real else np.hypot(num_re, num_im)
    with np.errstate(invalid="ignore", divide="ignore"):
        curve = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    return FRC(np.arange(nring, dtype=np.float64), curve, n)


def sublattice_frc(image, *, real: bool = False) -> tuple[FRC, np.ndarray]:
    """FRC between the two diagonal sub-lattices of one 2D image, and its ring frequencies.

    ``a = image[0::2, 0::2]`` (even rows and columns) against ``b = image[1::2, 1::2]`` (odd
    ones), each of half the size and twice the pixel. ``b`` samples the image one pixel
    further along both axes; it is moved onto ``a``'s lattice by a Fourier shift of half a
    sub-lattice pixel per axis before the correlation (uncorrected, that offset lowers the
    correlation at frequency ``f`` by about ``J0(2 pi sqrt(2) f)``, to 0.35 at 0.2 cycles per
    pixel). Independent noise in neighbouring pixels decorrelates, structure wider than a
    pixel does not. Mean removal and tapering are the caller's (apply them to ``image``).

    Returns:
        ``(FRC, freq)``: the :func:`frc` of the sub-lattices (rings of the sub-lattice) and
        the frequency of each ring in cycles per pixel of ``image`` (at most 0.25: half the
        image's Nyquist frequency), for :func:`resolution`'s ``freq``.
    """
    img = np.asarray(image)
    if img.ndim != 2 or min(img.shape) < 4:
        raise ValueError(f"sublattice_frc needs a 2D image of at least 4 x 4, got {img.shape}")
    ny, nx = (n // 2 for n in img.shape)
    a = img[0 : 2 * ny : 2, 0 : 2 * nx : 2]
    b = img[1 : 2 * ny : 2, 1 : 2 * nx : 2]
    ramp = np.exp(-1j * np.pi * (fftfreq(ny)[:, None] + fftfreq(nx)[None, :]))
    b = ifftn(fftn(b, norm="backward") * ramp, norm="backward")
    if not np.iscomplexobj(img):
        b = b.real
    r = frc(a, b, real=real)
    return r, ring_frequencies(r.radii, a.shape) / 2.0


def fsc(a, b, *, real: bool = False) -> FRC:
    """Fourier shell correlation (3D): the same computation as :func:`frc`."""
    return frc(a, b, real=real)


def half_bit_threshold(n) -> np.ndarray:
    """van Heel & Schatz (2005) half-bit curve (0.2071 + 1.9102/sqrt(n))/(1.2071 + 0.9102/sqrt(n)).

    ``n`` is the number of Fourier pixels in the ring/shell. T(1) = 1; T -> 0.1716 as
    n -> infinity. Rings with n = 0 give 1 (no information).
    """
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = 1.0 / np.sqrt(n)
        t = (0.2071 + 1.9102 * s) / (1.2071 + 0.9102 * s)
    return np.where(n > 0, t, 1.0)


def one_bit_threshold(n) -> np.ndarray:
    """One-bit curve (0.5 + 2.4142/sqrt(n))/(1.5 + 1.4142/sqrt(n)); T -> 1/3 for large n."""
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = 1.0 / np.sqrt(n)
        t = (0.5 + 2.4142 * s) / (1.5 + 1.4142 * s)
    return np.where(n > 0, t, 1.0)


THRESHOLDS = {
    "half_bit": "van Heel & Schatz half-bit curve (two independent noisy reconstructions)",
    "one_bit": "one-bit curve",
    "0.5": "fixed 0.5 (FRC50; against ground truth)",
    "1/7": "fixed 1/7 = 0.1429 (against ground truth)",
}


def threshold_curve(name: str, n_per_ring) -> np.ndarray:
    """The threshold ``name`` (``half_bit``, ``one_bit``, ``0.5``, ``1/7`` or a number) per ring."""
    n = np.asarray(n_per_ring)
    if name == "half_bit":
        return half_bit_threshold(n)
    if name == "one_bit":
        return one_bit_threshold(n)
    if name in ("1/7", "0.143", "one_seventh"):
        return np.full(n.shape, FRC_ONE_SEVENTH)
    try:
        value = float(name)
    except (TypeError, ValueError):
        raise ValueError(
            f"unknown FRC threshold {name!r} (use half_bit, one_bit, 0.5, 1/7 or a number)"
        ) from None
    return np.full(n.shape, value)


class Resolution(NamedTuple):
    """First crossing of a FRC curve with a threshold.

    ``crossed`` is False when the curve stays above the threshold up to Nyquist; the values
    are then the Nyquist limit (a lower bound on the resolution the data support).
    ``frequency`` is in cycles per pixel; ``fraction_of_nyquist = frequency / 0.5``.
    ``*_m`` are None when no pixel size is known.
    """

    crossed: bool
    frequency: float
    fraction_of_nyquist: float
    half_period_px: float
    full_period_px: float
    half_period_m: float | None
    full_period_m: float | None

    def as_dict(self) -> dict:
        return self._asdict()


CONVENTION = (
    "frequency f in cycles/pixel at the first crossing (Nyquist = 0.5); "
    "half_period = 1/(2 f) px = pixel / fraction_of_nyquist; "
    "full_period = 1/f px = 2 pixel / fraction_of_nyquist; *_m = *_px times the pixel size"
)


def resolution(
    curve,
    threshold,
    pixel_size: float | None = None,
    *,
    freq=None,
    n_per_ring=None,
) -> Resolution:
    """First crossing of ``curve`` below ``threshold``, with linear sub-ring interpolation.

    Args:
        curve: FRC values per ring (ring 0 = DC).
        threshold: a number, an array (one value per ring), or a name accepted by
            :func:`threshold_curve` (then ``n_per_ring`` is needed for the bit curves).
        pixel_size: real-space pixel size in metres (None: no metric values).
        freq: frequency of each ring in cycles/pixel; default ``i / (2*(len(curve)-1))``
            (exact for an even shortest axis; pass ``ring_frequencies(radii, shape)``
            otherwise).
        n_per_ring: pixels per ring, for named bit thresholds.

    The search starts at ring 1 (the DC ring has one pixel and correlation 1). The crossing
    frequency interpolates ``curve - threshold`` linearly between the last ring above and
    the first ring below.
    """
    c = np.asarray(curve, dtype=np.float64)
    if c.ndim != 1 or c.size < 2:
        raise ValueError("curve must be 1D with at least two rings")
    if isinstance(threshold, str):
        if threshold in ("half_bit", "one_bit") and n_per_ring is None:
            raise ValueError(f"threshold {threshold!r} needs n_per_ring")
        t = threshold_curve(threshold, n_per_ring if n_per_ring is not None else np.ones(c.size))
    else:
        t = np.broadcast_to(np.asarray(threshold, dtype=np.float64), c.shape)
    f = (
        np.arange(c.size) / (2.0 * (c.size - 1))
        if freq is None
        else np.asarray(freq, dtype=np.float64)
    )
    d = c - t
    below = np.nonzero(d[1:] < 0)[0]
    if below.size == 0:
        fc, crossed = float(f[-1]), False
    else:
        i = int(below[0]) + 1
        d0, d1 = d[i - 1], d[i]
        frac = d0 / (d0 - d1) if d0 > 0 else 0.0
        fc, crossed = float(f[i - 1] + frac * (f[i] - f[i - 1])), True
    if fc <= 0:
        half_px = full_px = float("inf")
    else:
        half_px, full_px = 1.0 / (2.0 * fc), 1.0 / fc
    px = None if pixel_size is None else float(pixel_size)
    return Resolution(
        crossed,
        fc,
        fc / 0.5,
        half_px,
        full_px,
        None if px is None else half_px * px,
        None if px is None else full_px * px,
    )
