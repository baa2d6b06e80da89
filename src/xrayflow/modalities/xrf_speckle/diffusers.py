"""Sandpaper diffusers in series upstream of the sample and the speckle they make there.

Grain size: the median grain diameter ``d50`` of the FEPA P-grit of a coated abrasive
(:data:`FEPA_P_GRIT_D50_M`: FEPA 43-1:2006 for the macrogrits P12-P220, FEPA 43-2:2006 for
the microgrits P240-P2500; the same grades as ISO 6344-2 and -3).

Screen: the projected abrasive thickness of one paper is a Gaussian random field
``h(r) = T + σ_h·g(r)`` clipped at 0, with ``T`` the mean thickness, ``g`` of unit variance
and Gaussian autocorrelation of FWHM ``ℓ = d50``
(:func:`xrayflow.illumination.random_phase_screen`) and ``σ_h = √(T·d50/12)``: ``T/d50``
independent layers of grains, each adding a height uniform over one grain diameter
(variance ``d50²/12``). Its transmission is ``t = exp(−ik(δ − iβ)h)`` with δ, β of the
grains (SiC, 3.21 g/cm³, or Al2O3, 3.95 g/cm³, from xraydb); binder and backing paper (low
Z, smooth) are left out. The paper is periodic over a square sheet of S pixels and moved by
whole object pixels between patterns.

Illumination: a plane wave through the diffusers in series, the field propagated with the
Fresnel transfer function over the gap to the next diffuser and from the last one to the
sample (:class:`xrayflow.operators.Propagation`); each diffuser has its own random lateral
offset per pattern (:class:`SpeckleIllumination`).

Expected speckle size (:func:`expected_speckle_size`, the FWHM of the intensity
autocovariance). One screen, Gaussian statistics: the field correlation
``μ_j(Δ) = exp(−σ_j²(1 − ρ_j(Δ)))`` with ``σ_j = kσ_h√(δ² + β²)`` and
``ρ_j = exp(−4 ln2 Δ²/ℓ_j²)``; independent screens in series multiply,
``μ = Π μ_j``, and leave the unscattered fraction ``|a|² = exp(−Σ σ_j²)``. Free-space
propagation leaves the correlation of a statistically homogeneous field unchanged. Once the
scattered field is circular (``z ≳ ℓ²/λ``), the intensity autocovariance is
``C(Δ) = 2|a|²Γ(Δ) + Γ(Δ)²`` with ``Γ = μ − |a|²`` (heterodyne plus homodyne speckle), and
the speckle size ``s∞`` its FWHM. Close behind weak screens (σ ≪ 1) ``s∞ → ℓ``, the grain
correlation length (near-field speckle, Cerbino et al., Nat. Phys. 4, 238 (2008)); strong
screens scatter into an angular envelope ``≈ √2·σλ/ℓ`` (``≈ λ/ℓ`` for σ ≈ 1), i.e.
``s∞ → ℓ/(√2σ)``. Far away the illuminated width ``D`` of the last diffuser, seen from the
sample, limits it: ``s = max(s∞, λz/D)`` (Goodman, *Speckle Phenomena in Optics*, 2007,
ch. 4). Closer than ``ℓ²/λ`` the intensity follows the Laplacian of the phase (transport of
intensity) and the speckle is finer than ``s∞`` (by up to 35 % at 0.1-0.4 ``ℓ²/λ`` in
simulations).
:func:`measure_speckle_size` measures it (autocorrelation FWHM of patterns).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from xrayflow.backend import fft2, ifft2
from xrayflow.errors import PhysicsError
from xrayflow.illumination import random_phase_screen
from xrayflow.operators import Propagation, transmission
from xrayflow.optics.constants import wavelength
from xrayflow.optics.materials import Material, refractive_index
from xrayflow.optics.propagation import transfer_function

#: FEPA P-grit -> median grain diameter d50 (m) of coated abrasives (FEPA 43-1:2006,
#: 43-2:2006; ISO 6344-2/-3).
FEPA_P_GRIT_D50_M = {
    grit: um * 1e-6
    for grit, um in {
        12: 1815.0, 16: 1324.0, 20: 1000.0, 24: 764.0, 30: 642.0, 36: 538.0, 40: 425.0,
        50: 336.0, 60: 269.0, 80: 201.0, 100: 162.0, 120: 125.0, 150: 100.0, 180: 82.0,
        220: 68.0, 240: 58.5, 280: 52.2, 320: 46.2, 360: 40.5, 400: 35.0, 500: 30.2,
        600: 25.8, 800: 21.8, 1000: 18.3, 1200: 15.3, 1500: 12.6, 2000: 10.3, 2500: 8.4,
    }.items()
}  # fmt: skip


@dataclass(frozen=True)
class Abrasive:
    """Grain material of a sandpaper and the element whose K line it fluoresces in."""

    material: Material
    line_element: str


#: Abrasive grains by config name: silicon carbide (Si Kα) and fused alumina (Al Kα).
ABRASIVES = {
    "SiC": Abrasive(Material("silicon_carbide", "SiC", 3.21, "abrasive grains"), "Si"),
    "Al2O3": Abrasive(Material("aluminium_oxide", "Al2O3", 3.95, "fused alumina"), "Al"),
}


def grain_size(grit: int) -> float:
    """Median grain diameter d50 (m) of FEPA P-grit ``grit`` (PhysicsError if not a grade)."""
    if grit not in FEPA_P_GRIT_D50_M:
        raise PhysicsError(
            f"P{grit} is not a FEPA P-grit (known: {', '.join(map(str, FEPA_P_GRIT_D50_M))})"
        )
    return FEPA_P_GRIT_D50_M[grit]


@dataclass(frozen=True)
class Diffuser:
    """One sandpaper: FEPA P-``grit``, abrasive ``material`` (a key of :data:`ABRASIVES`),
    ``distance`` upstream of the sample (m), mean projected abrasive ``thickness`` (m;
    None: one layer of grains, ``d50``)."""

    grit: int
    material: str
    distance: float
    thickness: float | None = None

    @property
    def grain_size(self) -> float:
        """Grain correlation length ``ℓ = d50``, m."""
        return grain_size(self.grit)

    @property
    def mean_thickness(self) -> float:
        """``T``, m."""
        return self.grain_size if self.thickness is None else float(self.thickness)

    @property
    def roughness(self) -> float:
        """rms thickness ``σ_h = √(T·d50/12)``, m."""
        return math.sqrt(self.mean_thickness * self.grain_size / 12.0)

    @property
    def abrasive(self) -> Abrasive:
        return ABRASIVES[self.material]

    def phase_rms(self, energy_ev: float) -> float:
        """``σ = kσ_h√(δ² + β²)`` (rad), the rms of the complex phase of the screen."""
        delta, beta = refractive_index(self.abrasive.material, energy_ev)
        return (
            2.0 * math.pi / float(wavelength(energy_ev)) * self.roughness * math.hypot(delta, beta)
        )

    def thickness_map(self, n: int, pixel: float, rng) -> np.ndarray:
        """Projected abrasive thickness ``h`` (n, n) float64 (m) of a periodic sheet."""
        g = random_phase_screen((n, n), pixel, self.grain_size, rng)
        return np.maximum(self.mean_thickness + self.roughness * g, 0.0)


def sheet_size(diffusers, shape, pixel: float, energy_ev: float) -> int:
    """Pixels S of the periodic diffuser sheet: a power of two, at least twice the map,
    eight grains, and ``λΔz/Δx²`` for the longest propagation step (no aliasing of the
    transfer function)."""
    z = [d.distance for d in sorted(diffusers, key=lambda d: -d.distance)]
    steps = [a - b for a, b in zip(z, z[1:] + [0.0], strict=True)]
    need = max(
        2 * max(shape),
        8.0 * max(d.grain_size for d in diffusers) / pixel,
        max(steps) * float(wavelength(energy_ev)) / pixel**2,
    )
    return 1 << math.ceil(math.log2(need))


class SpeckleIllumination:
    """The intensity at the sample behind ``diffusers`` in series on a periodic sheet of
    ``sheet`` pixels of ``pixel`` m; the sample sees the sheet's top-left ``shape`` window.
    ``self.diffusers``: the diffusers farthest first (the order of the offsets). Screens
    from ``rng``; arrays on ``backend``."""

    def __init__(self, diffusers, shape, pixel: float, energy_ev: float, sheet: int, rng, backend):
        self.diffusers = sorted(diffusers, key=lambda d: -d.distance)
        self.shape = tuple(int(s) for s in shape)
        self.backend = backend
        xp, cdt = backend.xp, backend.complex_dtype
        lam = float(wavelength(energy_ev))
        streams = rng.spawn(len(self.diffusers))
        self.thickness, self.screens = [], []
        for d, r in zip(self.diffusers, streams, strict=True):
            h = xp.asarray(d.thickness_map(sheet, pixel, r))
            delta, beta = refractive_index(d.abrasive.material, energy_ev)
            self.thickness.append(h)
            self.screens.append(transmission(delta, beta, lam, h, xp=xp, dtype=cdt))
        z = [d.distance for d in self.diffusers] + [0.0]
        self.steps = [
            Propagation(
                transfer_function("fresnel", (sheet, sheet), pixel, lam, a - b, xp=xp, dtype=cdt),
                backend.workers,
            )
            for a, b in zip(z, z[1:], strict=False)
        ]
        self.first = self.steps[0].fwd(self.screens[0])
        #: mean intensity behind all the screens (the patterns are divided by it)
        self.mean_transmission = math.prod(float(xp.mean(xp.abs(t) ** 2)) for t in self.screens)

    def _rolled(self, a, offsets):
        xp = self.backend.xp
        return xp.stack([xp.roll(a, (int(o[0]), int(o[1])), axis=(0, 1)) for o in offsets])

    def intensities(self, offsets) -> tuple[np.ndarray, np.ndarray]:
        """Patterns for ``offsets`` (B, J, 2) (whole sheet pixels (y, x), one per diffuser of
        ``self.diffusers``): the intensity at the sample (B, ny, nx) float64, mean 1 over
        diffuser positions, and each diffuser's thickness in the window weighted by its
        incident intensity (unit incident beam), ``Σ_r |u_in(r)|²·h(r)`` (B, J) in m."""
        xp = self.backend.xp
        ny, nx = self.shape
        offsets = np.asarray(offsets)
        exposure = np.empty(offsets.shape[:2])
        u = self._rolled(self.first, offsets[:, 0])
        incident = xp.ones((len(offsets), ny, nx))
        for j in range(len(self.diffusers)):
            h = self._rolled(self.thickness[j], offsets[:, j])[:, :ny, :nx]
            exposure[:, j] = self.backend.to_numpy((incident * h).sum(axis=(1, 2)))
            if j + 1 < len(self.diffusers):
                incident = xp.abs(u[:, :ny, :nx]) ** 2
                u *= self._rolled(self.screens[j + 1], offsets[:, j + 1])
                u = self.steps[j + 1].fwd(u, u)
        intensity = xp.abs(u[:, :ny, :nx]).astype(xp.float64) ** 2 / self.mean_transmission
        return self.backend.to_numpy(intensity), exposure


def expected_speckle_size(diffusers, energy_ev: float, beam_width: float) -> float:
    """Expected speckle size (m) at the sample, ``max(s∞, λ·z_min/D)`` (module docstring;
    ``D = beam_width``, ``z_min`` the distance of the last diffuser); ``s∞`` solved on a
    grid of lags 1e-5 of the largest grain apart."""
    params = [(d.phase_rms(energy_ev) ** 2, d.grain_size) for d in diffusers]
    lag = np.linspace(0.0, 10.0, 1_000_001) * max(ell for _, ell in params)
    a2 = math.exp(-sum(s2 for s2, _ in params))
    # 1 − ρ_j = −expm1(−4 ln2 Δ²/ℓ_j²); Γ = Π μ_j − |a|²
    log_mu = sum(s2 * np.expm1(-4.0 * math.log(2.0) * (lag / ell) ** 2) for s2, ell in params)
    gamma = np.exp(log_mu) - a2
    cov = 2.0 * a2 * gamma + gamma**2  # decreasing from cov[0] to ~0
    s_inf = 2.0 * float(np.interp(0.5 * cov[0], cov[::-1], lag[::-1]))
    z_min = min(d.distance for d in diffusers)
    return max(s_inf, float(wavelength(energy_ev)) * z_min / float(beam_width))


class SpeckleSize:
    """FWHM of the intensity autocovariance of (ny, nx) patterns, accumulated batch by
    batch: each pattern less its mean, zero-padded (no wrap-around), each lag divided by
    the pixel pairs it holds; the mean of the y and x cuts through zero lag, interpolated
    linearly at half the zero-lag value."""

    def __init__(self, shape):
        self.shape = tuple(int(s) for s in shape)
        self.power = np.zeros((2 * self.shape[0], 2 * self.shape[1]))

    def add(self, patterns) -> None:
        p = np.asarray(patterns, dtype=np.float64)
        padded = np.zeros((len(p), *self.power.shape))
        padded[:, : p.shape[1], : p.shape[2]] = p - p.mean(axis=(1, 2), keepdims=True)
        f = fft2(padded, norm="backward")
        self.power += (f.real**2 + f.imag**2).sum(axis=0)

    def fwhm(self, pixel: float) -> float:
        """In m (``pixel`` the pattern pixel, m); NaN when the autocovariance stays above half
        over half the window."""
        ny, nx = self.shape
        acf = ifft2(self.power, norm="backward").real
        cy = acf[: ny // 2, 0] / (nx * (ny - np.arange(ny // 2)))
        cx = acf[0, : nx // 2] / (ny * (nx - np.arange(nx // 2)))
        n = min(len(cy), len(cx))
        c = 0.5 * (cy[:n] + cx[:n]) / (0.5 * (cy[0] + cx[0]))
        below = np.flatnonzero(c < 0.5)
        if below.size == 0:
            return float("nan")
        i = int(below[0])
        return 2.0 * pixel * (i - 1 + (c[i - 1] - 0.5) / (c[i - 1] - c[i]))


def measure_speckle_size(patterns, pixel: float) -> float:
    """Speckle size (m) of patterns (K, ny, nx) of pixel ``pixel`` m (:class:`SpeckleSize`)."""
    m = SpeckleSize(np.shape(patterns)[1:])
    m.add(patterns)
    return m.fwhm(pixel)
