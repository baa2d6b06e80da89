"""Free-space propagation physics: transfer functions, sampling limits, far-field sampling.

Conventions (docs/physics.md): arrays ``(..., y, x)``; frequencies from ``fftfreq(N, Δx)``
(cycles/m, zero frequency at index 0); the global phase ``exp(ikΔz)`` is dropped, so
``H(0, 0) = 1``; FFTs are ``norm="ortho"`` (unitary).

* Fresnel (paraxial): ``H = exp(−iπλΔz(fx² + fy²))``.
* Angular spectrum (exact): ``H = exp(i2πΔz(√(1/λ² − fx² − fy²) − 1/λ))``, evanescent
  components (``fx² + fy² > 1/λ²``) set to 0. The phase is evaluated as
  ``−2πΔz·f²/(√(1/λ² − f²) + 1/λ)``, which is the same number without the cancellation of
  two ~1e10 terms.

Sampling. A transfer function sampled on the FFT grid (frequency step ``1/(NΔx)``) is
free of aliasing while its local "position" ``(1/2π)∂φ/∂f`` stays within half the window
``NΔx/2``. For the Fresnel kernel that means ``|f| ≤ NΔx/(2λ|Δz|)``; for the angular
spectrum (Matsushima & Shimobaba 2009, Opt. Express 17, 19662, eq. 13, with the unpadded
window ``NΔx``) ``|f| ≤ 1/(λ√(1 + (2Δz/(NΔx))²))``. Both limits reach the Nyquist frequency
``1/(2Δx)`` at the **critical distance** ``z_c = NΔx²/λ`` (the angular-spectrum limit a
fraction ``λ²/(8Δx²)`` earlier, ~1e-5 for hard X-rays): for ``|Δz| ≤ z_c`` the band limit
removes nothing and the transfer-function method is exact (up to the periodic window);
beyond ``z_c`` the kernel is undersampled. By default the transfer functions call
:func:`check_propagation_sampling`, which raises :class:`~xrayflow.errors.PhysicsError`
beyond ``z_c``; with ``check=False`` they return the band-limited kernel (the band limit is
applied separably in fx and fy, as in Matsushima & Shimobaba), which avoids aliasing at the
price of resolution.

The operators that apply them (:class:`~xrayflow.operators.Propagation`,
:class:`~xrayflow.operators.FarField`, with their adjoints) are in :mod:`xrayflow.operators`.
"""

from __future__ import annotations

from collections import OrderedDict
from threading import Lock

import numpy as np

from xrayflow.backend import fftfreq
from xrayflow.errors import PhysicsError

KINDS = ("fresnel", "angular_spectrum")

__all__ = [
    "KINDS",
    "angular_spectrum_transfer",
    "band_limit_frequency",
    "cached_transfer_function",
    "check_propagation_sampling",
    "critical_distance",
    "depth_of_field",
    "far_field_pixel_size",
    "frequency_grid",
    "fresnel_number",
    "fresnel_transfer",
    "transfer_function",
]


def _pixel_pair(pixel_size) -> tuple[float, float]:
    """``pixel_size`` as ``(Δy, Δx)`` floats; a scalar means square pixels."""
    p = np.asarray(pixel_size, dtype=np.float64).ravel()
    if p.size == 1:
        p = np.array([p[0], p[0]])
    if p.size != 2 or not np.all(np.isfinite(p)) or np.any(p <= 0):
        raise PhysicsError(f"pixel_size must be positive (scalar or (dy, dx)), got {pixel_size!r}")
    return float(p[0]), float(p[1])


def _shape2(shape) -> tuple[int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2 or shape[-1] < 1 or shape[-2] < 1:
        raise PhysicsError(f"shape must end in (ny, nx) with positive sizes, got {shape!r}")
    return shape[-2], shape[-1]


def frequency_grid(shape, pixel_size) -> tuple[np.ndarray, np.ndarray]:
    """Spatial frequencies (cycles/m) of an FFT grid: ``(fy[:, None], fx[None, :])``, float64.

    ``shape`` ends in ``(ny, nx)``; ``pixel_size`` is a scalar or ``(dy, dx)`` in metres.
    Zero frequency at index 0 (``numpy.fft.fftfreq``).
    """
    ny, nx = _shape2(shape)
    dy, dx = _pixel_pair(pixel_size)
    fy = fftfreq(ny, dy)[:, None]
    fx = fftfreq(nx, dx)[None, :]
    return fy, fx


def critical_distance(n, pixel_size, wavelength) -> float:
    """Critical distance ``z_c = N·Δx²/λ`` (m) up to which the sampled transfer function is exact.

    ``n`` and ``pixel_size`` may be ``(ny, nx)`` / ``(dy, dx)`` pairs; then the smaller of the
    two axes' distances is returned.
    """
    n_arr = np.atleast_1d(np.asarray(n, dtype=np.float64))
    if n_arr.size == 1:
        n_arr = np.repeat(n_arr, 2)
    dy, dx = _pixel_pair(pixel_size)
    lam = float(wavelength)
    if not lam > 0:
        raise PhysicsError(f"wavelength must be positive, got {wavelength!r}")
    return float(min(n_arr[-2] * dy * dy, n_arr[-1] * dx * dx) / lam)


def fresnel_number(width, wavelength, distance) -> float:
    """Fresnel number ``F = a²/(λz)`` for a feature or aperture of size ``a`` (m)."""
    return float(width) ** 2 / (float(wavelength) * abs(float(distance)))


def check_propagation_sampling(shape, pixel_size, wavelength, distance) -> None:
    """Raise :class:`PhysicsError` when ``|distance|`` exceeds the critical distance ``NΔx²/λ``.

    Beyond it the transfer function (Fresnel or angular spectrum) sampled on the FFT grid
    aliases; use a larger window (N), a coarser pixel, or several shorter steps on a padded
    grid (or a far-field / single-FFT propagator).
    """
    ny, nx = _shape2(shape)
    zc = critical_distance((ny, nx), pixel_size, wavelength)
    if not np.isfinite(distance):
        raise PhysicsError(f"propagation distance must be finite, got {distance!r}")
    if abs(float(distance)) > zc * (1.0 + 1e-12):
        dy, dx = _pixel_pair(pixel_size)
        raise PhysicsError(
            f"propagation distance {float(distance):.6g} m exceeds the critical distance "
            f"z_c = N*dx^2/lambda = {zc:.6g} m for a {ny}x{nx} grid with pixel "
            f"({dy:.4g}, {dx:.4g}) m at wavelength {float(wavelength):.6g} m: the transfer "
            f"function would be undersampled (aliased). Use a larger grid, a coarser pixel, "
            f"or shorter steps on a padded grid."
        )


def band_limit_frequency(kind: str, n, pixel_size, wavelength, distance) -> tuple[float, float]:
    """Band limits ``(fy_max, fx_max)`` (cycles/m) beyond which the kernel would alias.

    Fresnel: ``NΔx/(2λ|Δz|)``; angular spectrum: ``1/(λ√(1 + (2Δz/(NΔx))²))``.
    ``inf`` for ``Δz = 0``.
    """
    _check_kind(kind)
    n_arr = np.atleast_1d(np.asarray(n, dtype=np.float64))
    if n_arr.size == 1:
        n_arr = np.repeat(n_arr, 2)
    dy, dx = _pixel_pair(pixel_size)
    lam = float(wavelength)
    z = abs(float(distance))
    out = []
    for nn, d in ((n_arr[-2], dy), (n_arr[-1], dx)):
        width = nn * d
        if z == 0:
            out.append(np.inf)
        elif kind == "fresnel":
            out.append(width / (2.0 * lam * z))
        else:
            out.append(1.0 / (lam * np.sqrt(1.0 + (2.0 * z / width) ** 2)))
    return float(out[0]), float(out[1])


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise PhysicsError(f"propagator must be one of {KINDS}, got {kind!r}")


def _transfer_numpy(kind, shape, pixel_size, wavelength, distance, band_limit, check):
    """float64 phase -> complex128 NumPy transfer function."""
    _check_kind(kind)
    ny, nx = _shape2(shape)
    lam = float(wavelength)
    z = float(distance)
    if not lam > 0:
        raise PhysicsError(f"wavelength must be positive, got {wavelength!r}")
    if check:
        check_propagation_sampling((ny, nx), pixel_size, lam, z)
    fy, fx = frequency_grid((ny, nx), pixel_size)
    f2 = fy * fy + fx * fx  # (ny, nx) float64
    if kind == "fresnel":
        phase = (-np.pi * lam * z) * f2
        H = np.exp(1j * phase)
    else:
        inv2 = 1.0 / (lam * lam)
        arg = inv2 - f2
        prop = arg >= 0
        root = np.sqrt(np.where(prop, arg, 0.0))
        # sqrt(a^2 - f^2) - a == -f^2 / (sqrt(a^2 - f^2) + a): no cancellation
        phase = (-2.0 * np.pi * z) * f2 / (root + 1.0 / lam)
        H = np.where(prop, np.exp(1j * phase), 0.0)
    if band_limit and z != 0.0:
        fy_max, fx_max = band_limit_frequency(kind, (ny, nx), pixel_size, lam, z)
        tol = 1.0 + 1e-9  # keep the Nyquist row at exactly z_c despite rounding
        mask = (np.abs(fy) <= fy_max * tol) & (np.abs(fx) <= fx_max * tol)
        if not mask.all():
            H = H * mask
    return H


def fresnel_transfer(
    shape,
    pixel_size,
    wavelength,
    distance,
    xp=np,
    dtype=np.complex64,
    band_limit: bool = True,
    check: bool = True,
):
    """Paraxial (Fresnel) transfer function ``exp(−iπλΔz(fx² + fy²))`` on the FFT grid.

    Args:
        shape: ends in ``(ny, nx)``.
        pixel_size: scalar or ``(dy, dx)``, m.
        wavelength: m. distance: m (negative = back-propagation).
        xp: array namespace of the result (numpy or cupy). dtype: complex dtype of the result.
        band_limit: zero the frequencies beyond :func:`band_limit_frequency` (no-op for
            ``|Δz| ≤ z_c``).
        check: raise :class:`PhysicsError` for ``|Δz| > z_c = NΔx²/λ``.
    """
    return transfer_function(
        "fresnel", shape, pixel_size, wavelength, distance, xp, dtype, band_limit, check
    )


def angular_spectrum_transfer(
    shape,
    pixel_size,
    wavelength,
    distance,
    xp=np,
    dtype=np.complex64,
    band_limit: bool = True,
    check: bool = True,
):
    """Exact (angular-spectrum) transfer function ``exp(i2πΔz(√(1/λ² − f²) − 1/λ))``.

    Evanescent components are set to zero; band limit after Matsushima & Shimobaba (2009).
    Arguments as :func:`fresnel_transfer`.
    """
    return transfer_function(
        "angular_spectrum", shape, pixel_size, wavelength, distance, xp, dtype, band_limit, check
    )


def transfer_function(
    kind: str,
    shape,
    pixel_size,
    wavelength,
    distance,
    xp=np,
    dtype=np.complex64,
    band_limit: bool = True,
    check: bool = True,
):
    """Transfer function of ``kind`` in ``{"fresnel", "angular_spectrum"}`` (see those)."""
    H = _transfer_numpy(kind, shape, pixel_size, wavelength, distance, band_limit, check)
    return xp.asarray(H.astype(dtype))


# ---------------------------------------------------------------------------------------
# cache: (kind, shape, Δ, λ, Δz, band_limit, check, dtype, namespace, device) -> array
_CACHE: OrderedDict = OrderedDict()
_CACHE_LOCK = Lock()
_CACHE_SIZE = 64


def _device_key(xp) -> object:
    if xp is np:
        return "cpu"
    try:
        return ("gpu", int(xp.cuda.Device().id))
    except Exception:  # pragma: no cover - exotic namespaces
        return getattr(xp, "__name__", repr(xp))


def cached_transfer_function(
    kind: str,
    shape,
    pixel_size,
    wavelength,
    distance,
    xp=np,
    dtype=np.complex64,
    band_limit: bool = True,
    check: bool = True,
):
    """Like :func:`transfer_function`, memoised per (kind, shape, Δx, λ, Δz, dtype, device).

    The returned array is shared: do not modify it (NumPy results are read-only).
    """
    key = (
        kind,
        _shape2(shape),
        _pixel_pair(pixel_size),
        float(wavelength),
        float(distance),
        bool(band_limit),
        bool(check),
        np.dtype(dtype).str,
        getattr(xp, "__name__", repr(xp)),
        _device_key(xp),
    )
    with _CACHE_LOCK:
        H = _CACHE.get(key)
        if H is not None:
            _CACHE.move_to_end(key)
            return H
    H = transfer_function(
        kind, shape, pixel_size, wavelength, distance, xp, dtype, band_limit, check
    )
    if isinstance(H, np.ndarray):
        H.flags.writeable = False
    with _CACHE_LOCK:
        _CACHE[key] = H
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return H


def far_field_pixel_size(wavelength, distance, n_pixels, detector_pixel_size):
    """Object-plane pixel ``Δx = λz/(N·p)`` (m) matching a detector of ``N`` pixels of pitch
    ``p`` at distance ``z``. Detector pixel ``k`` (fftfreq index) collects the spatial
    frequency ``f = k/(NΔx) = k·p/(λz)``, i.e. scattering angle ``θ ≈ k·p/z``.

    ``n_pixels`` and ``detector_pixel_size`` may be ``(ny, nx)`` pairs; then a ``(dy, dx)``
    tuple is returned.
    """
    lam = float(wavelength)
    z = float(distance)
    if not (lam > 0 and z > 0):
        raise PhysicsError(
            f"wavelength and detector distance must be positive, got {wavelength!r}, {distance!r}"
        )
    n = np.asarray(n_pixels, dtype=np.float64)
    p = np.asarray(detector_pixel_size, dtype=np.float64)
    if np.any(n <= 0) or np.any(p <= 0):
        raise PhysicsError("n_pixels and detector_pixel_size must be positive")
    dx = lam * z / (n * p)
    if dx.ndim == 0:
        return float(dx)
    dx = np.broadcast_to(dx, (2,))
    return float(dx[0]), float(dx[1])


def depth_of_field(pixel_size, wavelength, factor: float = 2.0) -> float:
    """Depth of field ``factor·Δx²/λ`` (m), default ``2Δx²/λ``: the thickness over which the
    Fresnel phase ``πλT f²`` at the Nyquist frequency ``1/(2Δx)`` stays below π/2. Samples
    thinner than this fit the projection approximation; thicker ones need multislice with
    slice spacing ≤ this (docs/physics.md). Uses the smaller pixel of ``(dy, dx)``."""
    dy, dx = _pixel_pair(pixel_size)
    lam = float(wavelength)
    if not lam > 0:
        raise PhysicsError(f"wavelength must be positive, got {wavelength!r}")
    return float(factor) * min(dy, dx) ** 2 / lam
