"""The terms of a scattering image, one function each: ``(geom, params, rng) -> (array,
tags)``.

``geom`` is the image's :class:`~.detector.DetectorGeometry`, ``params`` the term's drawn
parameters (:func:`.generator.draw_spec`), ``rng`` a generator for what the term draws while
it renders (grain positions, speckle). The array is (ny, nx) float64: an intensity (sample
terms in relative units, scaled by the generator; background terms in expected photons per
pixel) or a multiplicative factor (:data:`SAMPLE_FACTORS`, :data:`FACTORS`). The tags are
those the term caused on this image, decided by the term itself (a ring outside the image
sets no ring tag); :data:`TERMS` maps the names to the functions.

Units: ``q`` in nm⁻¹, lengths of the sample (d-spacings, radii, lattice constants) in nm,
positions and widths on the detector in pixels, angles in rad. Isotropic profiles are
evaluated on the detector's radial grid (:meth:`~.detector.DetectorGeometry.radial`),
angular factors on its azimuth grid (:meth:`~.detector.DetectorGeometry.angular`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np
from scipy import ndimage
from scipy.special import expit

from xrayflow.modalities.scattering.detector import DetectorGeometry, beamstop_mask, gap_mask

Term = Callable[[DetectorGeometry, Mapping, np.random.Generator], tuple[np.ndarray, set[str]]]

#: Lattices: dimension, nearest-neighbour distance / a, first reflection |G₁|·a/2π. The 3D
#: ones are cubic; the 2D ones lie in the plane normal to the beam (a film).
LATTICES = {
    "sc": (3, 1.0, 1.0),
    "bcc": (3, math.sqrt(3.0) / 2.0, math.sqrt(2.0)),
    "fcc": (3, 1.0 / math.sqrt(2.0), math.sqrt(3.0)),
    "square": (2, 1.0, 1.0),
    "hexagonal": (2, 1.0, 2.0 / math.sqrt(3.0)),
}
#: Rings (and spots) below this share of the strongest one on the image are not counted.
VISIBLE_SHARE = 1e-2
#: Gaussian ring profiles are evaluated within this many standard deviations.
PROFILE_SIGMAS = 6.0
#: Smallest ring width, σ in pixels of radius.
MIN_RING_WIDTH_PX = 0.5


def sphere_form_factor(x):
    """Normalised amplitude of a homogeneous sphere, ``3(sin x − x cos x)/x³`` (1 at x = 0;
    ``x = qR``)."""
    x = np.asarray(x, dtype=np.float64)
    small = np.abs(x) < 1e-3
    xs = np.where(small, 1.0, x)
    return np.where(small, 1.0 - x * x / 10.0, 3.0 * (np.sin(xs) - xs * np.cos(xs)) / xs**3)


def reflections(kind: str, a: float, q_max: float) -> np.ndarray:
    """Reciprocal-lattice vectors G ≠ 0 (nm⁻¹, (N, dim) in the lattice frame) of lattice
    ``kind`` (:data:`LATTICES`) with constant ``a`` (nm) and ``|G| <= q_max`` (nm⁻¹); bcc and
    fcc by their extinction rules, hexagonal with ``a₁ = a(1, 0)``, ``a₂ = a(1/2, √3/2)``."""
    dim = LATTICES[kind][0]
    n = int(q_max * a / (2.0 * math.pi))
    axis = np.arange(-n, n + 1)
    hkl = np.stack(np.meshgrid(*([axis] * dim), indexing="ij"), axis=-1).reshape(-1, dim)
    hkl = hkl[np.any(hkl != 0, axis=1)]
    if kind == "bcc":
        hkl = hkl[hkl.sum(axis=1) % 2 == 0]
    elif kind == "fcc":
        hkl = hkl[np.all(hkl % 2 == hkl[:, :1] % 2, axis=1)]
    basis = np.eye(dim)
    if kind == "hexagonal":
        basis = np.array([[1.0, -1.0 / math.sqrt(3.0)], [0.0, 2.0 / math.sqrt(3.0)]])
    g = hkl @ basis * (2.0 * math.pi / a)
    return g[np.linalg.norm(g, axis=1) <= q_max]


def powder(g: np.ndarray, a: float) -> tuple[np.ndarray, np.ndarray]:
    """Distinct ``|G|`` (nm⁻¹, ascending) of the vectors ``g`` and their multiplicities."""
    norm = np.linalg.norm(g, axis=1)
    _, group, counts = np.unique(
        np.round(norm * a / (2.0 * math.pi), 8), return_inverse=True, return_counts=True
    )
    return np.bincount(group, norm) / counts, counts


def pixel_dq(geom: DetectorGeometry, q) -> np.ndarray:
    """Change of ``q`` (nm⁻¹) over one pixel of radius at ``q``."""
    r = geom.radius_m(q)
    return geom.q_of_radius(r + geom.pixel) - geom.q_of_radius(r)


def ring_widths(geom: DetectorGeometry, q, relative) -> np.ndarray:
    """σ (nm⁻¹) of rings at ``q``: ``relative × q``, at least :data:`MIN_RING_WIDTH_PX`."""
    q = np.asarray(q, dtype=np.float64)
    return np.maximum(np.asarray(relative) * q, MIN_RING_WIDTH_PX * pixel_dq(geom, q))


def gaussian_profile(grid: np.ndarray, q, sigma, intensity) -> np.ndarray:
    """``Σ_k I_k exp(−(q − q_k)²/2σ_k²)`` on the uniform ``grid`` (nm⁻¹)."""
    out = np.zeros_like(grid)
    step = grid[1] - grid[0]
    q, sigma, intensity = np.broadcast_arrays(q, sigma, intensity)
    for qk, sk, ik in zip(q, sigma, intensity, strict=True):
        lo = max(int((qk - PROFILE_SIGMAS * sk) / step), 0)
        hi = min(int((qk + PROFILE_SIGMAS * sk) / step) + 2, len(grid))
        if lo < hi:
            out[lo:hi] += ik * np.exp(-0.5 * ((grid[lo:hi] - qk) / sk) ** 2)
    return out


def arcs(chi: np.ndarray, fold: int, chi0: float, width: float, floor: float) -> np.ndarray:
    """Angular factor of ``fold`` arcs (texture): Gaussians of σ ``width`` (rad) in χ at
    ``chi0 + 2πk/fold`` (nearest arc only) on an isotropic ``floor`` (0–1)."""
    period = 2.0 * math.pi / fold
    d = np.mod(chi - chi0, period)
    d = np.minimum(d, period - d)
    return floor + (1.0 - floor) * np.exp(-0.5 * (d / width) ** 2)


def ring_image(geom: DetectorGeometry, q, sigma, intensity, oval=None, texture=None):
    """Rings at ``q`` (nm⁻¹) of widths ``sigma`` and peak ``intensity``; ``oval``
    ``(ε, χ_e)``: radii scaled by ``1/(1 + ε cos 2(χ − χ_e))`` (an ellipse); ``texture``
    ``(fold, χ₀, width, floor)``: :func:`arcs`."""
    profile = gaussian_profile(geom.q_grid(), q, sigma, intensity)
    q_eff = None
    if oval is not None:
        eps, chi_e = oval
        q_eff = geom.q_map() * geom.angular(1.0 + eps * np.cos(2.0 * (geom.chi_grid() - chi_e)))
    img = geom.radial(profile, q_eff)
    if texture is not None:
        img *= geom.angular(arcs(geom.chi_grid(), *texture))
    return img


def _visible(p: Mapping, q, intensity=None) -> np.ndarray:
    """Which of ``q`` lie in the image's visible range ``p["q_visible"]`` (and, given
    ``intensity``, reach :data:`VISIBLE_SHARE` of the strongest visible one)."""
    q = np.asarray(q)
    lo, hi = p["q_visible"]
    vis = (q > lo) & (q < hi)
    if intensity is not None and vis.any():
        vis &= intensity >= VISIBLE_SHARE * np.max(intensity[vis])
    return vis


# --------------------------------------------------------------------------- sample terms
def rings(geom, p, rng):
    """Sharp rings at ``q`` (e.g. ``2π/d``) with relative widths, intensities and orders
    (1: first order, k: the k-th multiple of a first order), optionally oval or textured.
    (``many_rings`` is set by the generator from :func:`ring_count` of all terms.)"""
    q = np.asarray(p["q"], dtype=np.float64)
    sigma = ring_widths(geom, q, p["relative_width"])
    img = ring_image(geom, q, sigma, p["intensity"], p["oval"], p["texture"])
    vis = _visible(p, q)
    tags = set()
    if vis.any():
        tags.add("features.main.ring")
        if (vis & (np.asarray(p["order"]) >= 2)).any():
            tags.add("features.variations.higher_orders")
        if p["oval"] is not None:
            tags.add("features.variations.oval_ring")
        if p["texture"] is not None:
            tags.add("features.variations.symmetry_ring")
    return img, tags


def halo(geom, p, rng):
    """An amorphous halo: one broad ring at ``q`` (relative width ~0.1–0.3), optionally made
    of n-fold arcs."""
    q = np.atleast_1d(np.asarray(p["q"], dtype=np.float64))
    sigma = ring_widths(geom, q, p["relative_width"])
    img = ring_image(geom, q, sigma, 1.0, None, p["texture"])
    tags = set()
    if _visible(p, q).any():
        tags |= {"features.main.halo", "sample.type.amorphous"}
        if p["texture"] is not None:
            tags.add("features.variations.symmetry_halo")
    return img, tags


def power_law(geom, p, rng):
    """``max(q, q_cut)^−n`` (Porod n = 4, ...), times ``1 + a cos 2(χ − χ₀)`` (anisotropy
    ``a``)."""
    grid = geom.q_grid()
    img = geom.radial(np.maximum(grid, p["q_cut"]) ** -p["exponent"])
    if p["anisotropy"] > 0:
        img *= geom.angular(1.0 + p["anisotropy"] * np.cos(2.0 * (geom.chi_grid() - p["chi0"])))
    return img, {"features.main.diffuse_low_q"}


def guinier(geom, p, rng):
    """``exp(−q²R_g²/3)``, radius of gyration ``R_g`` (nm)."""
    grid = geom.q_grid()
    return geom.radial(np.exp(-((grid * p["rg"]) ** 2) / 3.0)), {"features.main.diffuse_low_q"}


def ornstein_zernike(geom, p, rng):
    """``1/(1 + q²ξ²)``, correlation length ``ξ`` (nm)."""
    grid = geom.q_grid()
    return geom.radial(1.0 / (1.0 + (grid * p["xi"]) ** 2)), {"features.main.diffuse_low_q"}


def debye_bueche(geom, p, rng):
    """``1/(1 + q²a²)²``, correlation length ``a`` (nm)."""
    grid = geom.q_grid()
    return geom.radial(1.0 / (1.0 + (grid * p["a"]) ** 2) ** 2), {"features.main.diffuse_low_q"}


def high_q(geom, p, rng):
    """Diffuse scattering rising towards high q: ``exp(−(q − q_p)²/2w²)`` with its peak
    ``q_p`` (nm⁻¹) at or beyond the image edge and width ``w`` (nm⁻¹)."""
    grid = geom.q_grid()
    profile = np.exp(-0.5 * ((grid - p["q_peak"]) / p["width"]) ** 2)
    return geom.radial(profile), {"features.main.diffuse_high_q"}


#: Relative radii (in standard deviations) and weights of the size distribution.
_SIZE_NODES = np.linspace(-3.0, 3.0, 25)
_SIZE_WEIGHTS = np.exp(-0.5 * _SIZE_NODES**2)


def form_factor(geom, p, rng):
    """Dilute spheres of mean radius ``radius`` (nm) and relative Gaussian spread
    ``polydispersity``: ``Σ_j w_j R_j⁶ F(qR_j)²`` (:func:`sphere_form_factor`)."""
    grid = geom.q_grid()
    radii = p["radius"] * np.maximum(1.0 + p["polydispersity"] * _SIZE_NODES, 0.05)
    w = _SIZE_WEIGHTS * radii**6
    profile = (w[:, None] * sphere_form_factor(grid[None, :] * radii[:, None]) ** 2).sum(0)
    return geom.radial(profile / w.sum()), {"image.general.form_factor"}


def _peak_intensity(p: Mapping, g_norm: np.ndarray) -> np.ndarray:
    """Spheres of ``radius`` on the lattice, Debye–Waller ``sigma`` (nm):
    ``F(|G|R)² exp(−|G|²σ²)``."""
    return sphere_form_factor(g_norm * p["radius"]) ** 2 * np.exp(-((g_norm * p["sigma"]) ** 2))


def _powder_rings(p: Mapping) -> tuple[np.ndarray, np.ndarray]:
    """Rings of a powder of the lattice: ``|G|`` and ``m F² DW / |G|^(dim−1)`` (Lorentz)."""
    dim = LATTICES[p["lattice"]][0]
    q, mult = powder(reflections(p["lattice"], p["a"], p["q_visible"][1]), p["a"])
    return q, mult * _peak_intensity(p, q) / q ** (dim - 1)


def _crystal_tags(p: Mapping, q, intensity, kind: str, rings: bool) -> set[str]:
    vis = _visible(p, q, intensity)
    if not vis.any():
        return set()
    tags = {"image.general.structure_factor", f"sample.type.{kind}"}
    if rings:
        tags.add("features.main.ring")
    return tags


def polycrystalline(geom, p, rng):
    """Powder rings of a lattice of spheres (:data:`LATTICES`, constant ``a`` nm, sphere
    ``radius`` nm, Debye–Waller ``sigma`` nm) with multiplicities and the Lorentz factor."""
    q, intensity = _powder_rings(p)
    sigma = ring_widths(geom, q, p["relative_width"])
    img = ring_image(geom, q, sigma, intensity)
    return img, _crystal_tags(p, q, intensity, "polycrystalline", rings=True)


def spots(geom: DetectorGeometry, y, x, weight, sigma_px: float) -> np.ndarray:
    """Gaussian spots of σ ``sigma_px`` at pixel positions ``(y, x)``, integrated intensity
    ``weight`` each (bilinear deposit, then a Gaussian filter)."""
    ny, nx = geom.shape
    pad = int(math.ceil(4.0 * sigma_px)) + 1
    y = np.asarray(y, dtype=np.float64) + pad
    x = np.asarray(x, dtype=np.float64) + pad
    shape = (ny + 2 * pad, nx + 2 * pad)
    keep = (y >= 0) & (y < shape[0] - 1) & (x >= 0) & (x < shape[1] - 1)
    y, x, w = y[keep], x[keep], np.asarray(weight, dtype=np.float64)[keep]
    i, j = y.astype(np.intp), x.astype(np.intp)
    fy, fx = y - i, x - j
    canvas = np.zeros(shape[0] * shape[1])
    for di, dj, share in (
        (0, 0, (1 - fy) * (1 - fx)),
        (0, 1, (1 - fy) * fx),
        (1, 0, fy * (1 - fx)),
        (1, 1, fy * fx),
    ):
        canvas += np.bincount((i + di) * shape[1] + j + dj, w * share, minlength=canvas.size)
    out = ndimage.gaussian_filter(canvas.reshape(shape), sigma_px, mode="constant")
    return out[pad:-pad, pad:-pad]


def _spot_positions(geom: DetectorGeometry, q, chi) -> tuple[np.ndarray, np.ndarray]:
    r = geom.radius_m(q)
    return (
        geom.beam_center[0] + r * np.sin(chi) / geom.pixel_size[0],
        geom.beam_center[1] + r * np.cos(chi) / geom.pixel_size[1],
    )


def large_grains(geom, p, rng):
    """Powder rings of few large grains: each ring ``grains`` spots (and their Friedel
    mates at χ + π) at random azimuths with exponentially distributed intensities."""
    q, intensity = _powder_rings(p)
    n = int(p["grains"])
    chi = rng.uniform(0.0, 2.0 * math.pi, (len(q), n))
    w = rng.exponential(1.0, (len(q), n)) * (intensity / n)[:, None]
    qq = np.repeat(q, n)
    y, x = _spot_positions(
        geom, np.concatenate([qq, qq]), np.concatenate([chi, chi + math.pi], None)
    )
    img = spots(geom, y, x, np.concatenate([w.ravel(), w.ravel()]), p["spot_width_px"])
    return img, _crystal_tags(p, q, intensity, "large_grains", rings=True)


def single_crystal(geom, p, rng):
    """Bragg spots of one crystal in orientation ``rotation`` (3×3, lattice frame → lab,
    z along the beam): reflections near the Ewald sphere, weight ``exp(−s²/2δ²)`` for the
    excitation error ``s`` (nm⁻¹) and width ``excitation`` δ (2D lattices: rods, weight 1),
    at ``|q| = |G|`` and the azimuth of G's in-plane components."""
    g = reflections(p["lattice"], p["a"], p["q_visible"][1])
    dim = g.shape[1]
    g = np.pad(g, ((0, 0), (0, 3 - dim))) @ np.asarray(p["rotation"]).T
    norm = np.linalg.norm(g, axis=1)
    w = _peak_intensity(p, norm)
    if dim == 3:
        k = 2.0 * math.pi / (geom.wavelength * 1e9)
        s = np.sqrt((k + g[:, 2]) ** 2 + g[:, 0] ** 2 + g[:, 1] ** 2) - k
        w = w * np.exp(-0.5 * (s / p["excitation"]) ** 2)
    y, x = _spot_positions(geom, norm, np.arctan2(g[:, 1], g[:, 0]))
    img = spots(geom, y, x, w, p["spot_width_px"])
    ny, nx = geom.shape
    on = (y > -0.5) & (y < ny - 0.5) & (x > -0.5) & (x < nx - 0.5)
    return img, _crystal_tags(p, norm[on], w[on], "single_crystal", rings=False)


def ring_count(name: str, geom: DetectorGeometry, p: Mapping) -> int:
    """Rings that the sample term ``name`` puts on the image: those for which it sets
    ``features.main.ring`` (:func:`rings`: every ring in the visible q range; the powder
    rings of :func:`polycrystalline` and :func:`large_grains`: those that also reach
    :data:`VISIBLE_SHARE` of the strongest); 0 for terms without rings.

    The generator sums them over the terms of an image for ``features.variations.many_rings``
    (at least ``many_rings`` rings on the image, whichever terms drew them: an image shows
    its rings, not the terms that made them)."""
    if name == "rings":
        return int(_visible(p, p["q"]).sum())
    if name in ("polycrystalline", "large_grains"):
        q, intensity = _powder_rings(p)
        return int(_visible(p, q, intensity).sum())
    return 0


# --------------------------------------------------------------------------- factors on the sample
def coherent_speckle(geom, p, rng):
    """Factor ``1 − c + c·S``: fully developed speckle ``S`` (mean 1, exponential
    statistics) of grains ``grain_px`` (σ of the field's correlation, px), contrast ``c``."""
    field = ndimage.gaussian_filter(rng.standard_normal(geom.shape), p["grain_px"])
    imag = ndimage.gaussian_filter(rng.standard_normal(geom.shape), p["grain_px"])
    s = field**2 + imag**2
    s /= s.mean()
    return 1.0 - p["contrast"] + p["contrast"] * s, {"features.other.coherent_speckle"}


# --------------------------------------------------------------------------- backgrounds
def background(geom, p, rng):
    """A flat background of ``level`` expected photons per pixel."""
    return np.full(geom.shape, float(p["level"])), {"features.other.background"}


def high_background(geom, p, rng):
    """A flat background of ``level`` photons per pixel above the mean scattering."""
    tags = {"features.other.background", "features.other.high_background"}
    return np.full(geom.shape, float(p["level"])), tags


def parasitic(geom, p, rng):
    """Parasitic slit scattering: streaks through the beam centre along ``axes`` (``x``:
    horizontal, ``y``: vertical), ``amplitude`` photons per pixel at the centre, Gaussian
    cross-section σ ``width_px``, decaying as ``(1 + s/decay_px)^−exponent`` along them."""
    dy, dx = geom.offsets_px
    img = np.zeros(geom.shape)
    for axis in p["axes"]:
        across, along = (dy, dx) if axis == "x" else (dx, dy)
        profile = np.exp(-0.5 * (across / p["width_px"]) ** 2)
        img += profile * (1.0 + np.abs(along) / p["decay_px"]) ** -p["exponent"]
    return p["amplitude"] * img, {"image.problem.parasitic_slit_scattering"}


def direct_beam(geom, p, rng):
    """The direct beam: a Gaussian of σ ``width_px`` and peak ``amplitude`` (photons per
    pixel) at the beam centre."""
    dy, dx = geom.offsets_px
    img = p["amplitude"] * np.exp(-0.5 * (dy * dy + dx * dx) / p["width_px"] ** 2)
    return img, {"instrumental.beam.direct_beam"}


# --------------------------------------------------------------------------- factors
def beamstop(geom, p, rng):
    """0 behind the beamstop (:func:`~.detector.beamstop_mask`), 1 elsewhere."""
    disc, arm = beamstop_mask(
        geom, p["radius_px"], p["arm_width_px"], p["arm_angle"], p["wedge_angle"]
    )
    tags = set()
    if disc.any():
        tags.add("instrumental.beamstop.circular")
    if (arm & ~disc).any():
        tags.add(f"instrumental.beamstop.{'wedge' if p['wedge_angle'] > 0 else 'linear'}")
    return (~(disc | arm)).astype(np.float64), tags


def gaps(geom, p, rng):
    """0 in the gaps between detector modules (:func:`~.detector.gap_mask`), 1 elsewhere."""
    good = gap_mask(geom.shape, p["module_shape"], p["gap_width"])
    return good.astype(np.float64), set() if good.all() else {"instrumental.detector.gaps"}


def blocked(geom, p, rng):
    """The shadow of an obstruction: transmission ``transmission`` beyond a straight edge
    (normal at azimuth ``angle``) that cuts off ``fraction`` of the image, soft over
    ``edge_px``."""
    ny, nx = geom.shape
    y = (np.arange(ny) - 0.5 * (ny - 1))[:, None]
    x = (np.arange(nx) - 0.5 * (nx - 1))[None, :]
    proj = x * math.cos(p["angle"]) + y * math.sin(p["angle"])
    offset = np.quantile(proj, 1.0 - p["fraction"])
    t = p["transmission"]
    return t + (1.0 - t) * expit((offset - proj) / p["edge_px"]), {"image.problem.blocked"}


def windowed(geom, p, rng):
    """A round window at the beam centre (flight-tube exit): transmission ``transmission``
    beyond ``radius_px``, soft over ``edge_px``."""
    dy, dx = geom.offsets_px
    r = np.sqrt(dy * dy + dx * dx)
    t = p["transmission"]
    return t + (1.0 - t) * expit((p["radius_px"] - r) / p["edge_px"]), {"image.problem.windowed"}


#: Sample terms: relative intensities, each scaled to its share of the image's level.
SAMPLE = {
    "rings": rings,
    "halo": halo,
    "power_law": power_law,
    "guinier": guinier,
    "ornstein_zernike": ornstein_zernike,
    "debye_bueche": debye_bueche,
    "high_q": high_q,
    "form_factor": form_factor,
    "polycrystalline": polycrystalline,
    "large_grains": large_grains,
    "single_crystal": single_crystal,
}
#: Factors on the sample's scattering.
SAMPLE_FACTORS = {"coherent_speckle": coherent_speckle}
#: Additive terms in expected photons per pixel.
BACKGROUNDS = {
    "background": background,
    "high_background": high_background,
    "parasitic": parasitic,
    "direct_beam": direct_beam,
}
#: Factors on everything that reaches the detector.
FACTORS = {"gaps": gaps, "beamstop": beamstop, "blocked": blocked, "windowed": windowed}
#: Every term by name.
TERMS: dict[str, Term] = {**SAMPLE, **SAMPLE_FACTORS, **BACKGROUNDS, **FACTORS}
