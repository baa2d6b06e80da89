"""Illumination (probe) models: zone-plate focus, pinhole, diffuser speckle, coherent modes.

All probes are complex fields on an ``(ny, nx)`` grid of pixel ``pixel_size`` (m, scalar or
``(dy, dx)``) with the beam axis at index ``(ny//2, nx//2)`` (the layout of
:func:`xrayflow.optics.gaussian.centred_coordinates`; use that module's ``gaussian_beam``
for Gaussian beams). They are returned with unit power, ``Σ|P|² = 1``, so that
:func:`scale_to_photons` / :func:`scale_to_fluence` set the dose (docs/physics.md: probe
power = expected photon counts per pattern). Phases follow the propagators' convention
(``exp(+ikz)``, global phase dropped; a converging lens is ``exp(−iπr²/(λf))``).
Computations run in float64/complex128 and are cast to ``dtype`` (complex64 by default).
"""

from __future__ import annotations

import math

import numpy as np

from xrayflow.backend import fft2, fftfreq, fftshift, ifft2, ifftshift
from xrayflow.errors import PhysicsError
from xrayflow.operators import Propagation
from xrayflow.optics.propagation import fresnel_transfer

__all__ = [
    "coherent_modes",
    "diffuser_probe",
    "mode_powers",
    "pinhole_probe",
    "probe_power",
    "random_phase_screen",
    "scale_to_fluence",
    "scale_to_photons",
    "zone_plate_focal_length",
    "zone_plate_probe",
]

# |2 J1(v)/v|^2 = 1/2 at v = 1.6163: FWHM of the intensity autocorrelation peak of fully
# developed speckle from a circular pupil of radius rho (cycles/m) is 2·1.6163/(2π rho).
_JINC2_HALF = 1.616339948


def _pixel_pair(pixel_size) -> tuple[float, float]:
    p = np.asarray(pixel_size, dtype=np.float64).ravel()
    if p.size == 1:
        p = np.repeat(p, 2)
    if p.size != 2 or not np.all(np.isfinite(p)) or np.any(p <= 0):
        raise PhysicsError(f"pixel_size must be positive (scalar or (dy, dx)), got {pixel_size!r}")
    return float(p[0]), float(p[1])


def _shape2(shape) -> tuple[int, int]:
    s = tuple(int(v) for v in shape)
    if len(s) != 2 or min(s) < 2:
        raise PhysicsError(f"probe shape must be (ny, nx) with sizes >= 2, got {shape!r}")
    return s


def _positive(value, name) -> float:
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise PhysicsError(f"{name} must be positive and finite, got {value!r}")
    return v


def _centred(n: int, d: float) -> np.ndarray:
    return (np.arange(n) - n // 2) * d


def _centred_grid(ny: int, nx: int, dy: float, dx: float) -> tuple[np.ndarray, np.ndarray]:
    """Sparse centred coordinates ``(y[:, None], x[None, :])`` (units of ``dy``/``dx``);
    the origin is at index ``(ny//2, nx//2)``."""
    return _centred(ny, dy)[:, None], _centred(nx, dx)[None, :]


def _chirp(ny: int, nx: int, dy: float, dx: float, lam_z: float) -> np.ndarray:
    """Quadratic phase ``exp(iπ(y² + x²)/(λz))`` on the centred grid of pitch ``(dy, dx)``
    (m); ``lam_z = λz`` (m²)."""
    y, x = _centred_grid(ny, nx, dy, dx)
    return np.exp(1j * np.pi * (y * y + x * x) / lam_z)


def _soft_disc(rho, radius, edge):
    """Anti-aliased disc: 1 inside, 0 outside, linear over one ``edge`` width at the rim."""
    return np.clip((radius - rho) / edge + 0.5, 0.0, 1.0)


def _cfft2(a):
    """Centred unitary 2D DFT (index n//2 is the origin in both domains)."""
    return fftshift(fft2(ifftshift(a)))


def _normalise(field):
    p = float(np.sum(np.abs(field) ** 2))
    if not p > 0:
        raise PhysicsError("the probe has zero power in the window")
    return field / math.sqrt(p)


def _fresnel(field, pixel_size, wavelength, distance):
    """Band-limited Fresnel transfer-function propagation (complex128)."""
    if distance == 0:
        return field
    H = fresnel_transfer(
        field.shape, pixel_size, wavelength, distance, dtype=np.complex128, check=False
    )
    # the propagator works on fftfreq grids: move the axis to index 0 and back
    out = Propagation(H).fwd(ifftshift(field))
    return fftshift(out)


# ---------------------------------------------------------------------------------------
# Fresnel zone plate


def zone_plate_focal_length(diameter, outer_zone_width, wavelength) -> float:
    """First-order focal length ``f = D·Δr/λ`` (m) of a Fresnel zone plate."""
    return (
        _positive(diameter, "diameter")
        * _positive(outer_zone_width, "outer_zone_width")
        / _positive(wavelength, "wavelength")
    )


def zone_plate_probe(
    shape,
    pixel_size,
    wavelength,
    diameter,
    outer_zone_width,
    central_stop: float = 0.0,
    defocus: float = 0.0,
    osa_diameter: float | None = None,
    osa_distance: float | None = None,
    dtype=np.complex64,
):
    """First-order focus of a Fresnel zone plate, at the focal plane or ``defocus`` from it.

    The zone plate is modelled as an ideal thin lens of focal length ``f = D·Δr/λ`` with a
    circular pupil of diameter ``D`` (first diffraction order; the zero and higher orders are
    taken as blocked by the central stop and the order-sorting aperture, OSA).

    Method: the focal-plane field is the Fraunhofer transform of the pupil,
    ``U(x) ∝ exp(iπx²/(λf)) Σ_u P(u) exp(−2πi x·u/(λf))``, evaluated with one centred FFT on
    a pupil grid of pitch ``λf/(NΔx)`` so that the focal-plane pixel is exactly ``pixel_size``
    (the pupil edge is anti-aliased). The field at ``defocus`` (m, positive = downstream of
    the focus) is then obtained by Fresnel transfer-function propagation of the focal field;
    its band limit (:func:`xrayflow.optics.propagation.fresnel_transfer`) leaves the beam's
    angular spectrum intact as long as the defocused beam (diameter ``D·|defocus|/f``) fits
    in the window, which is checked.

    Args:
        shape: ``(ny, nx)``; pixel_size: focal-plane pixel (m), must be ``<= Δr`` so the
            lens's numerical aperture is representable (``<= Δr/2`` samples the intensity
            without aliasing).
        wavelength, diameter, outer_zone_width: m.
        central_stop: diameter of the central stop as a **fraction** of ``D`` (0 = none).
        osa_diameter, osa_distance: OSA diameter and its distance upstream of the focus (m);
            in the geometric approximation it clips pupil radii beyond
            ``(osa_diameter/2)·f/osa_distance``.
        dtype: complex dtype of the result.

    Returns:
        ``(ny, nx)`` complex probe with unit power (before any OSA/defocus losses are
        renormalised: the result always has ``Σ|P|² = 1``).
    """
    ny, nx = _shape2(shape)
    dy, dx = _pixel_pair(pixel_size)
    lam = _positive(wavelength, "wavelength")
    D = _positive(diameter, "diameter")
    dr = _positive(outer_zone_width, "outer_zone_width")
    f = D * dr / lam
    if not 0.0 <= central_stop < 1.0:
        raise PhysicsError(
            f"central_stop is a fraction of the diameter in [0, 1), got {central_stop}"
        )
    if max(dy, dx) > dr:
        raise PhysicsError(
            f"probe pixel ({dy:.3g}, {dx:.3g}) m is coarser than the outer zone width "
            f"{dr:.3g} m: the focus (≈1.22·Δr) cannot be sampled; use pixel_size <= Δr/2"
        )
    zc = min(ny * dy * dy, nx * dx * dx) / lam
    if zc > f:
        raise PhysicsError(
            f"focal length {f:.3g} m is shorter than N·Δx²/λ = {zc:.3g} m: the focal-plane "
            f"phase curvature is undersampled; use a smaller window or pixel"
        )
    # pupil grid: pitch λf/(NΔx) per axis, centred
    py, px = lam * f / (ny * dy), lam * f / (nx * dx)
    uy, ux = _centred_grid(ny, nx, py, px)
    rho = np.hypot(uy, ux)
    edge = min(py, px)
    pupil = _soft_disc(rho, D / 2.0, edge)
    if central_stop > 0:
        pupil *= 1.0 - _soft_disc(rho, central_stop * D / 2.0, edge)
    if osa_diameter is not None:
        if osa_distance is None:
            raise PhysicsError("osa_diameter needs osa_distance (m upstream of the focus)")
        r_osa = (
            0.5
            * _positive(osa_diameter, "osa_diameter")
            * f
            / _positive(osa_distance, "osa_distance")
        )
        pupil *= _soft_disc(rho, r_osa, edge)
    if not pupil.any():
        raise PhysicsError("the zone-plate pupil is fully blocked (central stop / OSA)")
    field = _cfft2(pupil.astype(np.complex128))
    field *= _chirp(ny, nx, dy, dx, lam * f)
    field = _normalise(field)
    if defocus:
        size = D * abs(float(defocus)) / f
        if size > min(ny * dy, nx * dx):
            raise PhysicsError(
                f"at defocus {defocus:.3g} m the beam is {size:.3g} m wide, larger than the "
                f"{ny * dy:.3g} x {nx * dx:.3g} m window: use a larger shape or less defocus"
            )
        field = _normalise(_fresnel(field, (dy, dx), lam, float(defocus)))
    return field.astype(dtype)


# ---------------------------------------------------------------------------------------
# Pinhole


def pinhole_probe(
    shape, pixel_size, wavelength, diameter, distance, dtype=np.complex64, min_samples: int = 32
):
    """Field at ``distance`` (m) behind a circular pinhole of ``diameter`` (m) under a plane wave.

    Fresnel diffraction, computed by whichever method samples it properly:

    * **single-FFT Fresnel transform** (impulse response) when ``λz/Δx >= 2·diameter``
      (far/intermediate field, includes the Fraunhofer Airy limit): the aperture is
      sampled on an ``M = s·N`` grid of pitch ``λz/(MΔx)`` (``s`` chosen so the pinhole
      spans at least ``min_samples`` pixels), so that the output pitch is exactly ``Δx``;
      the central ``N`` pixels are kept;
    * otherwise (near field) the aperture is sampled at ``Δx`` on a 2× padded grid and
      propagated with the Fresnel transfer function.

    Returns a unit-power ``(ny, nx)`` field with the axis at ``(ny//2, nx//2)``.
    """
    ny, nx = _shape2(shape)
    dy, dx = _pixel_pair(pixel_size)
    lam = _positive(wavelength, "wavelength")
    a = _positive(diameter, "diameter")
    z = float(distance)
    if z < 0 or not math.isfinite(z):
        raise PhysicsError(f"pinhole distance must be >= 0, got {distance!r}")
    if z > 0 and lam * z / max(dy, dx) >= 2.0 * a:
        s = max(1, math.ceil(min_samples * lam * z / (a * min(ny * dy, nx * dx))))
        # the input chirp exp(iπξ²/λz) must be sampled across the aperture: a <= MΔx
        s = max(s, math.ceil(a / min(ny * dy, nx * dx)))
        my, mx = s * ny, s * nx
        if my * mx > 8192 * 8192:
            raise PhysicsError(
                f"pinhole of {a:.3g} m at {z:.3g} m needs a {my}x{mx} grid; use a larger "
                f"probe pixel or a bigger window"
            )
        gy, gx = lam * z / (my * dy), lam * z / (mx * dx)
        ey, ex = _centred_grid(my, mx, gy, gx)
        r2 = ey * ey + ex * ex
        ap = _soft_disc(np.sqrt(r2), a / 2.0, min(gy, gx)) * np.exp(1j * np.pi * r2 / (lam * z))
        out = _cfft2(ap)
        oy, ox = my // 2 - ny // 2, mx // 2 - nx // 2
        out = out[oy : oy + ny, ox : ox + nx]
        out = out * _chirp(ny, nx, dy, dx, lam * z)
        return _normalise(out).astype(dtype)
    if a > min(ny * dy, nx * dx):
        raise PhysicsError(f"pinhole diameter {a:.3g} m is larger than the probe window")
    py_, px_ = 2 * ny, 2 * nx
    y, x = _centred_grid(py_, px_, dy, dx)
    ap = _soft_disc(np.hypot(y, x), a / 2.0, min(dy, dx)).astype(np.complex128)
    out = _fresnel(ap, (dy, dx), lam, z)
    oy, ox = py_ // 2 - ny // 2, px_ // 2 - nx // 2
    return _normalise(out[oy : oy + ny, ox : ox + nx]).astype(dtype)


# ---------------------------------------------------------------------------------------
# Diffuser


def random_phase_screen(shape, pixel_size, grain_size, rng) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian random field with a Gaussian autocorrelation whose
    full width at half maximum is ``grain_size`` (m); periodic; deterministic from ``rng``.
    """
    ny, nx = _shape2(shape)
    dy, dx = _pixel_pair(pixel_size)
    g = _positive(grain_size, "grain_size")
    rng = np.random.default_rng(rng)
    # |G(f)|² = exp(−f²/σf²)  ->  autocorrelation exp(−π²σf²r²), FWHM = 2√ln2/(πσf)
    sigma_f = 2.0 * math.sqrt(math.log(2.0)) / (math.pi * g)
    fy = fftfreq(ny, dy)[:, None]
    fx = fftfreq(nx, dx)[None, :]
    filt = np.exp(-(fy * fy + fx * fx) / (2.0 * sigma_f**2))
    noise = rng.standard_normal((ny, nx))
    field = ifft2(fft2(noise, norm="backward") * filt, norm="backward").real
    std = field.std()
    if not std > 0:
        raise PhysicsError(
            f"grain_size {g:.3g} m is too large for a {ny}x{nx} window of pixel {dx:.3g} m"
        )
    return (field - field.mean()) / std


def diffuser_probe(
    shape,
    pixel_size,
    wavelength,
    grain_size,
    strength,
    rng,
    envelope=None,
    distance: float = 0.0,
    dtype=np.complex64,
):
    """Speckle illumination from a sandpaper-like diffuser (random phase screen).

    1. Phase screen ``φ = strength · g`` with ``g`` from :func:`random_phase_screen` (grain
       ``grain_size``, ``strength`` = rms phase in rad).
    2. The scattered field ``exp(iφ)`` is band-limited by a circular pupil of radius
       ``0.5145/grain_size`` cycles/m — the numerical aperture of the optics between diffuser
       and sample — so that fully developed speckle (``strength`` ≳ 3 rad) has an intensity
       autocorrelation peak of FWHM ``grain_size``. Weak screens give low-contrast speckle
       on top of the unscattered beam.
    3. Multiplied by ``envelope``: None (a soft disc of half the window's width), a diameter
       in m (soft disc), or a complex/real ``(ny, nx)`` array (e.g. a zone-plate or Gaussian
       probe).
    4. Optionally Fresnel-propagated by ``distance`` (m).

    Returns a unit-power ``(ny, nx)`` field; deterministic from ``rng`` (Generator or seed).
    """
    ny, nx = _shape2(shape)
    dy, dx = _pixel_pair(pixel_size)
    lam = _positive(wavelength, "wavelength")
    g = _positive(grain_size, "grain_size")
    if not (math.isfinite(strength) and strength >= 0):
        raise PhysicsError(f"diffuser strength (rms phase, rad) must be >= 0, got {strength!r}")
    if g < 2.0 * max(dy, dx):
        raise PhysicsError(
            f"grain_size {g:.3g} m is below two pixels ({2 * max(dy, dx):.3g} m): speckle "
            f"would be undersampled"
        )
    phi = float(strength) * random_phase_screen((ny, nx), (dy, dx), g, rng)
    u = np.exp(1j * phi)
    fy = fftfreq(ny, dy)[:, None]
    fx = fftfreq(nx, dx)[None, :]
    rho_c = _JINC2_HALF / (math.pi * g)
    pupil = np.hypot(fy, fx) <= rho_c
    u = ifft2(fft2(u, norm="backward") * pupil, norm="backward")
    if envelope is None or np.ndim(envelope) == 0:
        diam = 0.5 * min(ny * dy, nx * dx) if envelope is None else _positive(envelope, "envelope")
        y, x = _centred_grid(ny, nx, dy, dx)
        env = _soft_disc(np.hypot(y, x), diam / 2.0, 2.0 * g)
    else:
        env = np.asarray(envelope)
        if env.shape != (ny, nx):
            raise PhysicsError(f"envelope shape {env.shape} differs from probe shape {(ny, nx)}")
    u = u * env
    if distance:
        u = _fresnel(u, (dy, dx), lam, float(distance))
    return _normalise(u).astype(dtype)


# ---------------------------------------------------------------------------------------
# Partial coherence: mixed states


def mode_powers(n_modes: int, coherence_fraction: float) -> np.ndarray:
    """Power fractions ``p_m = p_0·q^m`` (sum 1) with ``p_0 = coherence_fraction``.

    ``coherence_fraction`` is the fraction of the power in the dominant (coherent) mode; it
    must lie in ``[1/n_modes, 1]`` (1 = fully coherent: all power in mode 0).
    """
    m = int(n_modes)
    if m < 1:
        raise PhysicsError(f"n_modes must be >= 1, got {n_modes}")
    p0 = float(coherence_fraction)
    if not (1.0 / m - 1e-12 <= p0 <= 1.0):
        raise PhysicsError(
            f"coherence_fraction must be in [1/n_modes, 1] = [{1.0 / m:.3g}, 1], got {p0}"
        )
    if m == 1 or p0 >= 1.0:
        out = np.zeros(m)
        out[0] = 1.0
        return out
    # solve (1 − q^m)/(1 − q) = 1/p0 for q in (0, 1] by bisection (monotone in q)
    target = 1.0 / p0
    lo, hi = 0.0, 1.0
    for _ in range(200):
        q = 0.5 * (lo + hi)
        s = m if q == 1.0 else (1.0 - q**m) / (1.0 - q)
        if s < target:
            lo = q
        else:
            hi = q
    q = 0.5 * (lo + hi)
    p = q ** np.arange(m)
    return p / p.sum()


def coherent_modes(probe, n_modes: int, coherence_fraction: float, rng=None, dtype=None):
    """Orthogonal probe modes for a partially coherent beam, ``(M, ny, nx)``.

    Mode 0 is ``probe`` itself. Further modes are Hermite-Gaussian-like modulations of the
    probe, ``P·x̃^a·ỹ^b`` (x̃, ỹ: coordinates about the intensity centroid in units of the
    rms width; orders 1, 2, ... in turn), orthogonalised by Gram-Schmidt (QR) in order.
    With ``rng`` the higher candidates are replaced by random complex combinations of
    themselves before orthogonalisation (deterministic from the seed). Mode ``m`` carries
    the power fraction :func:`mode_powers` ``[m]`` of the input probe's power
    ``Σ|probe|²``, so ``Σ_m Σ|P_m|²`` equals the input power and the Gram matrix
    ``⟨P_i, P_j⟩`` is diagonal.
    """
    P = np.asarray(probe)
    if P.ndim == 3:
        P = P[0]
    if P.ndim != 2:
        raise PhysicsError(f"probe must be (ny, nx) (or (M, ny, nx)), got shape {P.shape}")
    out_dtype = np.result_type(P.dtype, np.complex64) if dtype is None else dtype
    P = P.astype(np.complex128)
    power = float(np.sum(np.abs(P) ** 2))
    if not power > 0:
        raise PhysicsError("probe has zero power")
    powers = mode_powers(n_modes, coherence_fraction)
    m = len(powers)
    ny, nx = P.shape
    if m > ny * nx // 4:
        raise PhysicsError(f"{m} modes are too many for a {ny}x{nx} probe")
    I = np.abs(P) ** 2 / power
    yy = np.arange(ny, dtype=np.float64)[:, None]
    xx = np.arange(nx, dtype=np.float64)[None, :]
    cy, cx = float((I * yy).sum()), float((I * xx).sum())
    sy = math.sqrt(max(float((I * (yy - cy) ** 2).sum()), 1e-12))
    sx = math.sqrt(max(float((I * (xx - cx) ** 2).sum()), 1e-12))
    ty, tx = (yy - cy) / sy, (xx - cx) / sx
    cands = [P]
    order = 1
    while len(cands) < m + 2:
        for b in range(order + 1):
            a = order - b
            cands.append(P * tx**a * ty**b)
        order += 1
    cands = cands[: m + 2]
    A = np.stack([c.ravel() for c in cands], axis=1)  # (n², K)
    if rng is not None and m > 1:
        rng = np.random.default_rng(rng)
        k = A.shape[1] - 1
        mix = rng.normal(size=(k, k)) + 1j * rng.normal(size=(k, k))
        A = np.concatenate([A[:, :1], A[:, 1:] @ mix], axis=1)
    Q, R = np.linalg.qr(A)
    # fix the phase so that mode 0 is the probe itself (R[0,0] real positive)
    Q = Q * (np.diag(R) / np.abs(np.where(np.diag(R) == 0, 1, np.diag(R))))[None, :]
    modes = Q[:, :m].T.reshape(m, ny, nx)
    modes *= np.sqrt(powers * power)[:, None, None]
    return modes.astype(out_dtype)


# ---------------------------------------------------------------------------------------
# Dose


def probe_power(modes) -> float:
    """Total power ``Σ_m Σ|P_m|²`` (= expected photons per pattern after scaling)."""
    return float(np.sum(np.abs(np.asarray(modes)) ** 2))


def scale_to_photons(modes, photons: float):
    """Scale ``modes`` (``(ny, nx)`` or ``(M, ny, nx)``) so that ``Σ_m Σ|P_m|² = photons``."""
    photons = float(photons)
    if not (math.isfinite(photons) and photons >= 0):
        raise PhysicsError(f"photons must be >= 0, got {photons!r}")
    a = np.asarray(modes)
    p = probe_power(a)
    if not p > 0:
        raise PhysicsError("cannot scale a probe with zero power")
    return (a * math.sqrt(photons / p)).astype(a.dtype)


def scale_to_fluence(modes, photons_per_m2: float, pixel_size, reference: str = "peak"):
    """Scale ``modes`` to a fluence in photons/m².

    ``reference="peak"``: the brightest pixel of ``Σ_m |P_m|²`` receives
    ``photons_per_m2·Δy·Δx`` photons; ``"mean"``: the mean fluence over the pixels above
    half the peak intensity (the FWHM area) equals ``photons_per_m2``.
    """
    dy, dx = _pixel_pair(pixel_size)
    f = float(photons_per_m2)
    if not (math.isfinite(f) and f >= 0):
        raise PhysicsError(f"photons_per_m2 must be >= 0, got {photons_per_m2!r}")
    a = np.asarray(modes)
    inten = np.abs(a) ** 2
    if inten.ndim == 3:
        inten = inten.sum(axis=0)
    peak = float(inten.max())
    if not peak > 0:
        raise PhysicsError("cannot scale a probe with zero power")
    if reference == "peak":
        current = peak
    elif reference == "mean":
        current = float(inten[inten >= 0.5 * peak].mean())
    else:
        raise PhysicsError(f"reference must be 'peak' or 'mean', got {reference!r}")
    return (a * math.sqrt(f * dy * dx / current)).astype(a.dtype)
