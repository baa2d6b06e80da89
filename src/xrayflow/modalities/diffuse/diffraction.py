"""Diffuse scattering of occupancy lattices, the Warren–Cowley closed form, detector counts.

Amplitude of a binary lattice (species A where ``s = 1``, B where ``s = 0``) at reciprocal
position ``(h, k)`` (reciprocal lattice units, ``h`` conjugate to axis 0, ``k`` to axis 1)::

    F = Σ_i f_i e^{2πi(h m_i + k n_i)} = F_Bragg + (f_A − f_B) Σ_i σ_i e^{2πi(h m_i + k n_i)}

with ``σ = s − c`` and ``F_Bragg`` the average lattice ``(c f_A + (1−c) f_B) Σ_i e^{…}``,
non-zero only at integer ``(h, k)``. The **diffuse intensity per site**
``I = (f_A − f_B)² |Σ_i σ_i e^{…}|² / N`` (:func:`diffuse_intensity`; FFT of ``σ`` by
:func:`xrayflow.backend.fft2`, averaged over the ``K`` lattices) drops the Bragg term
exactly: ``Σ σ = 0`` makes it vanish at every integer ``(h, k)``. Its mean over a zone is
the Laue level ``c(1−c)(f_A − f_B)²``, the whole pattern of an uncorrelated lattice. By the
Wiener–Khinchin theorem it equals the Warren–Cowley sum over all displacements ``r`` of
the periodic lattice (:func:`warren_cowley_intensity`)::

    I(h, k) = c(1−c)(f_A − f_B)² Σ_r α(r) cos 2π(h m + k n)

Evaluated over the encoded vectors and their mirror mates only, the same sum is the
forward map from an encoding to a pattern (:func:`expected_image`), for re-simulating
predicted encodings.

Sampling (:func:`sampling`): a ``size × size`` image over ``h, k ∈ [−h_max, h_max)``,
pixel ``i`` centred on ``h_i = −h_max + i·δ``, ``δ = 2h_max/size``: the origin is pixel
``size/2`` (FFT-shift layout). Default ``h_max = 1``, two Brillouin zones per axis at
``δ = 1/32``. A periodic lattice of ``L`` sites scatters only at ``h = j/L``; each pixel
is the average over its cell ``[h_i − δ/2, h_i + δ/2]`` of those points (trapezoidal:
``s = δL`` points apart, end points at half weight when ``s`` is even; ``s`` and
``h_max·L`` must be whole numbers, e.g. ``L = 64`` for the default: 2 points a pixel per
axis). The closed form is averaged over the same points, or taken at the pixel centres
without a lattice size. Bragg pixels (:func:`bragg_mask`): those whose cell holds an
integer ``(h, k)``.

Form factors: numbers (electrons, constant), or element symbols: ``f0(sin θ/λ)`` of
Waasmaier & Kirfel (1995) from xraydb at ``sin θ/λ = √(h² + k²)/(2a)`` for a square
lattice constant ``a``; anomalous terms are left out (energies away from edges).

Counts (:func:`observe`): the pattern scaled to ``counts`` expected photons over the
unmasked pixels, Poisson noise, masked pixels 0. For a network (:func:`normalise`): the
image divided by its unmasked mean, masked pixels 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from xrayflow.backend import fft2
from xrayflow.errors import ConfigError, DataError
from xrayflow.modalities.diffuse.encoding import (
    as_lattices,
    check_encoding,
    check_vectors,
    symmetry_mates,
)
from xrayflow.modalities.diffuse.lattice import MCResult, check_concentration, monte_carlo

#: Metres per ångström (xraydb's f0 takes sin θ/λ in 1/Å).
ANGSTROM = 1e-10


def _xraydb():
    """xraydb, imported on first use (its import takes about a second)."""
    import xraydb

    return xraydb


def pixel_centres(size: int, h_max: float) -> np.ndarray:
    """``h_i = −h_max + i·2h_max/size`` ``(size,)`` (r.l.u.)."""
    if size < 2 or not h_max > 0:
        raise ConfigError(f"size must be >= 2 and h_max > 0, got size={size}, h_max={h_max}")
    return -h_max + np.arange(size) * (2 * h_max / size)


def sampling(size: int, h_max: float, side: int | None) -> tuple[np.ndarray, np.ndarray]:
    """``(h (n,), W (size, n))`` along one axis: the points ``h`` the pattern is evaluated
    at and the weights that average them into pixels (module docstring); ``side`` the
    lattice's number of sites on this axis, or None for the pixel centres (``W = 1``)."""
    centres = pixel_centres(size, h_max)
    if side is None:
        return centres, np.eye(size)
    step = 2 * h_max * side / size
    if abs(step - round(step)) > 1e-9 or abs(h_max * side - round(h_max * side)) > 1e-9:
        raise ConfigError(
            f"lattice side {side} must make 2*h_max*L/size ({step:g}) and h_max*L "
            f"({h_max * side:g}) whole numbers (size={size}, h_max={h_max})"
        )
    step = round(step)
    half = step // 2
    taps = np.ones(2 * half + 1)
    if step % 2 == 0:
        taps[[0, -1]] = 0.5
    first = round(-h_max * side) - half
    n_points = (size - 1) * step + 2 * half + 1
    weights = np.zeros((size, n_points))
    for i in range(size):
        weights[i, i * step : i * step + len(taps)] = taps / step
    return (first + np.arange(n_points)) / side, weights


def bragg_mask(size: int = 64, h_max: float = 1.0) -> np.ndarray:
    """``(size, size)`` bool, True at pixels whose cell ``[h_i ± δ/2] × [k_j ± δ/2]`` holds
    an integer ``(h, k)`` (a Bragg peak of the square lattice)."""
    centres = pixel_centres(size, h_max)
    near = np.abs(centres - np.round(centres)) <= h_max / size + 1e-12
    return near[:, None] & near[None, :]


def form_factor_contrast(f_a, f_b, h, k, lattice_constant: float | None = None) -> np.ndarray:
    """``(f_A − f_B)²`` ``(len(h), len(k))`` (electrons²) on the grid ``h × k`` (r.l.u.):
    constant for numbers, xraydb ``f0`` for element symbols (module docstring)."""
    h, k = np.asarray(h, dtype=float), np.asarray(k, dtype=float)
    values = []
    for f in (f_a, f_b):
        if not isinstance(f, str):
            values.append(np.full((len(h), len(k)), float(f)))
            continue
        if lattice_constant is None or not lattice_constant > 0:
            raise ConfigError(
                f"lattice_constant (m) must be > 0 for element form factors, got "
                f"{lattice_constant!r}"
            )
        stol = np.hypot(h[:, None], k[None, :]) / (2 * lattice_constant / ANGSTROM)
        try:
            values.append(np.asarray(_xraydb().f0(f, stol), dtype=float))
        except (KeyError, ValueError) as exc:
            raise ConfigError(f"form factor: unknown element or ion {f!r}") from exc
    return (values[0] - values[1]) ** 2


def diffuse_intensity(
    lattices,
    f_a=1.0,
    f_b=0.0,
    *,
    size: int = 64,
    h_max: float = 1.0,
    lattice_constant: float | None = None,
) -> np.ndarray:
    """The diffuse intensity per site ``(size, size)`` (electrons²) of ``(L0, L1)`` or
    ``(K, L0, L1)`` 0/1 lattices (1: species A), averaged over the lattices, by FFT
    (module docstring)."""
    s = as_lattices(lattices)
    sigma = s - s.mean(axis=(1, 2), keepdims=True)
    power = np.mean(np.abs(fft2(sigma, norm="ortho")) ** 2, axis=0)
    (h, w_h), (k, w_k) = (sampling(size, h_max, side) for side in power.shape)
    l0, l1 = power.shape
    points = power[np.ix_(np.round(h * l0).astype(int) % l0, np.round(k * l1).astype(int) % l1)]
    points = points * form_factor_contrast(f_a, f_b, h, k, lattice_constant)
    return w_h @ points @ w_k.T


def _displacements(vectors) -> np.ndarray:
    """``vectors`` as a ``(U, 2)`` int array without the origin (any signs)."""
    v = np.asarray(vectors)
    if v.ndim != 2 or v.shape[1] != 2 or not np.issubdtype(v.dtype, np.integer):
        raise ConfigError(f"displacements must be a (U, 2) integer array, got shape {v.shape}")
    if (~v.any(axis=1)).any():
        raise ConfigError("displacements must not include the origin (α(0, 0) = 1 is implied)")
    return v.astype(np.int64)


def warren_cowley_intensity(
    encoding,
    vectors,
    concentration: float,
    f_a=1.0,
    f_b=0.0,
    *,
    size: int = 64,
    h_max: float = 1.0,
    lattice_shape=None,
    lattice_constant: float | None = None,
    mates: bool = True,
) -> np.ndarray:
    """``c(1−c)(f_A − f_B)² [1 + Σ_u α_u cos 2π(h m_u + k n_u)]`` ``(size, size)``
    (electrons² per site).

    ``mates=True``: ``encoding`` on quadrant ``vectors``, each value applied to all the
    vector's mirror mates; ``mates=False``: one ``α`` per displacement of ``vectors`` as
    given (e.g. every displacement of a periodic lattice but the origin). Sampled as
    :func:`diffuse_intensity` samples a lattice of ``lattice_shape``, or at the pixel
    centres if None.
    """
    c = check_concentration(concentration)
    if mates:
        v = check_vectors(vectors)
        alpha = check_encoding(encoding, v)
        u, owner = symmetry_mates(v)
        alpha = alpha[owner]
    else:
        u = _displacements(vectors)
        alpha = check_encoding(encoding, u)
    sides = (None, None) if lattice_shape is None else tuple(lattice_shape)
    (h, w_h), (k, w_k) = (sampling(size, h_max, side) for side in sides)
    phase_h = np.exp(2j * np.pi * np.outer(h, u[:, 0]))
    phase_k = np.exp(2j * np.pi * np.outer(k, u[:, 1]))
    pattern = 1.0 + ((phase_h * alpha) @ phase_k.T).real
    points = c * (1 - c) * pattern * form_factor_contrast(f_a, f_b, h, k, lattice_constant)
    return w_h @ points @ w_k.T


def observe(intensity, counts: float, rng: np.random.Generator | None = None, mask=None):
    """Detector counts ``(size, size)``: ``intensity`` scaled to ``counts`` expected photons
    in all over the pixels outside ``mask`` (bool, True: masked), Poisson noise drawn
    with ``rng`` (its expectation if None), masked pixels 0."""
    i = np.asarray(intensity, dtype=float)
    keep = np.ones(i.shape, bool) if mask is None else ~np.asarray(mask, bool)
    if not counts > 0:
        raise ConfigError(f"counts must be > 0, got {counts!r}")
    if (i[keep] < 0).any() or not i[keep].sum() > 0:
        raise DataError("intensity must be >= 0 and not all zero outside the mask")
    expected = np.where(keep, i * (counts / i[keep].sum()), 0.0)
    return expected if rng is None else rng.poisson(expected).astype(float)


def normalise(image, mask=None) -> np.ndarray:
    """``image`` divided by its mean over the pixels outside ``mask``; masked pixels 0."""
    x = np.asarray(image, dtype=float)
    keep = np.ones(x.shape, bool) if mask is None else ~np.asarray(mask, bool)
    mean = x[keep].mean()
    if not mean > 0:
        raise DataError("image has no counts outside the mask")
    return np.where(keep, x / mean, 0.0)


@dataclass(frozen=True)
class DiffuseConfig:
    """Everything :func:`simulate_image` needs: the lattice (``shape``, ``n_lattices``,
    ``concentration``), the Monte Carlo (``tolerance``, ``max_sweeps``, feedback ``gain``,
    ``sweeps_per_round``), the species'
    form factors ``f_a``, ``f_b`` (electrons or element symbols) and ``lattice_constant``
    (m), the image (``size``, ``h_max`` r.l.u.) and the expected total ``counts``."""

    shape: tuple[int, int] = (64, 64)
    n_lattices: int = 3
    concentration: float = 0.5
    tolerance: float = 0.02
    max_sweeps: int = 200
    gain: float = 0.7
    sweeps_per_round: int = 3
    f_a: float | str = 1.0
    f_b: float | str = 0.0
    lattice_constant: float | None = None
    size: int = 64
    h_max: float = 1.0
    counts: float = 1e6

    def __post_init__(self):
        check_concentration(self.concentration)
        for name in ("n_lattices", "max_sweeps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if not self.tolerance > 0:
            raise ConfigError(f"tolerance must be > 0, got {self.tolerance!r}")
        if not self.counts > 0 or not math.isfinite(self.counts):
            raise ConfigError(f"counts must be a positive number, got {self.counts!r}")
        for side in self.shape:
            sampling(self.size, self.h_max, side)
        form_factor_contrast(self.f_a, self.f_b, [0.5], [0.5], self.lattice_constant)


def lattices_for(target, vectors, cfg: DiffuseConfig, rng: np.random.Generator) -> MCResult:
    """:func:`monte_carlo` lattices reaching ``target`` with the settings of ``cfg``."""
    return monte_carlo(
        target,
        vectors,
        rng=rng,
        shape=cfg.shape,
        concentration=cfg.concentration,
        n_lattices=cfg.n_lattices,
        tolerance=cfg.tolerance,
        gain=cfg.gain,
        sweeps_per_round=cfg.sweeps_per_round,
        max_sweeps=cfg.max_sweeps,
    )


def lattice_intensity(lattices, cfg: DiffuseConfig) -> np.ndarray:
    """:func:`diffuse_intensity` of ``lattices`` with the species and image of ``cfg``."""
    return diffuse_intensity(
        lattices,
        cfg.f_a,
        cfg.f_b,
        size=cfg.size,
        h_max=cfg.h_max,
        lattice_constant=cfg.lattice_constant,
    )


def lattice_image(
    target, vectors, cfg: DiffuseConfig, rng: np.random.Generator, mask=None
) -> tuple[np.ndarray, MCResult]:
    """Monte Carlo lattices with ``target`` as their encoding and their diffuse intensity
    scaled to ``cfg.counts`` expected photons over the pixels outside ``mask`` (True:
    masked; those 0), without noise: ``(expected counts (size, size), the MCResult)``."""
    mc = lattices_for(target, vectors, cfg, rng)
    return observe(lattice_intensity(mc.lattices, cfg), cfg.counts, None, mask), mc


def simulate_image(
    encoding, vectors, cfg: DiffuseConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, MCResult]:
    """The full forward map: Monte Carlo lattices with ``encoding`` as target, their
    diffuse intensity, Poisson counts with the Bragg pixels masked. Returns ``(image
    (size, size) counts, achieved encoding (dim,), the MCResult)``."""
    mask = bragg_mask(cfg.size, cfg.h_max)
    expected, mc = lattice_image(encoding, vectors, cfg, rng, mask)
    return observe(expected, cfg.counts, rng, mask), mc.achieved, mc


def closed_form_intensity(encoding, vectors, cfg: DiffuseConfig) -> np.ndarray:
    """:func:`warren_cowley_intensity` of ``encoding`` with the physics of ``cfg``
    (sampled like a lattice of ``cfg.shape``)."""
    return warren_cowley_intensity(
        encoding,
        vectors,
        cfg.concentration,
        cfg.f_a,
        cfg.f_b,
        size=cfg.size,
        h_max=cfg.h_max,
        lattice_shape=cfg.shape,
        lattice_constant=cfg.lattice_constant,
    )


def expected_image(encoding, vectors, cfg: DiffuseConfig) -> np.ndarray:
    """The noise-free image ``(size, size)`` of an encoding by the closed form (no Monte
    Carlo): :func:`warren_cowley_intensity` over the encoded vectors, sampled like a
    lattice of ``cfg.shape``, negative values of the truncated sum set to 0, scaled to
    ``cfg.counts``; for re-simulating predicted encodings."""
    intensity = closed_form_intensity(encoding, vectors, cfg)
    return observe(np.maximum(intensity, 0.0), cfg.counts, None, bragg_mask(cfg.size, cfg.h_max))
