"""Random tagged scattering images: draw what is in an image, render its expected
intensity, measure counts.

    spec = draw_spec(section, geom_base, rng)      # beam centre, terms and their parameters
    expected, tags = render(spec)                  # expected photons per pixel, tags
    counts, more_tags = measure(expected, spec, rng)   # Poisson, zingers, saturation
    good = frame_mask(spec)                        # False in gaps and behind the beamstop

``section`` is the validated ``scattering`` config section (``simulate.schema.json``). The
image: the sample terms (:data:`.terms.SAMPLE`), each normalised to mean 1 over the good
pixels and weighted, scaled together to the drawn level (mean expected photons per good
pixel, ``counts.mean_per_pixel``), times the coherent speckle, plus the backgrounds (photons
per pixel), times the factors (gaps, beamstop, obstruction, window); then Poisson counts,
zingers and the clip at saturation. Each tag comes from the term (or draw, for the beam
centre and the level) that caused it; ``many_rings`` from the rings of all the terms
together (:func:`.terms.ring_count`). Units as in :mod:`.terms`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from scipy.spatial.transform import Rotation

from xrayflow.modalities.scattering.detector import DetectorGeometry
from xrayflow.modalities.scattering.tags import TAGS, tag_vector
from xrayflow.modalities.scattering.terms import LATTICES, SAMPLE, TERMS, ring_count

#: Radius kept clear around the beam centre when there is no beamstop, px; with one, the
#: disc's radius plus :data:`BEAMSTOP_MARGIN_PX`.
CENTRE_CLEAR_PX = 3.0
BEAMSTOP_MARGIN_PX = 2.0
#: Rings, halos and the first reflection of lattices are drawn within this share of the
#: largest distance of a pixel from the beam centre.
DRAW_SHARE = 0.9
#: Range of the peak intensity of each first-order ring, relative (uniform).
RING_INTENSITY = (0.2, 1.0)
#: Largest Miller index of a lattice's reflections on the image (bounds the first
#: reflection's q from below: ``q₁ >= q_max·(|G₁|a/2π) / MAX_INDEX``).
MAX_INDEX = 20
#: Zone axes of single crystals (3D lattices).
ZONE_AXES = ((0.0, 0.0, 1.0), (0.0, 1.0, 1.0), (1.0, 1.0, 1.0))
#: ``qR`` at the first minimum of the sphere form factor.
SPHERE_FIRST_MINIMUM = 4.4934
#: Probability that a zinger also hits a neighbouring pixel.
ZINGER_PAIR = 0.3


@dataclass(frozen=True)
class ImageSpec:
    """What one image holds (drawn by :func:`draw_spec`).

    Attributes:
        geometry: the detector with this image's beam centre.
        level: mean expected photons per good pixel of the sample's scattering.
        strength_tag: the scattering-strength tag of ``level``.
        sample, sample_factors, backgrounds, factors: the present terms of each kind
            (:mod:`.terms`) as ``(name, params)``, in rendering order.
        zingers: ``{"number", "strength"}`` or None.
        saturation: share of the good pixels whose expectation exceeds the clip level, or
            None.
        detector_max: counts at which every pixel saturates (``geometry.saturation``), or
            None.
        poisson: Poisson counts (False: the expected intensities).
        seed: seed of the terms' own random draws while rendering.
    """

    geometry: DetectorGeometry
    level: float
    strength_tag: str
    sample: tuple[tuple[str, dict], ...] = ()
    sample_factors: tuple[tuple[str, dict], ...] = ()
    backgrounds: tuple[tuple[str, dict], ...] = ()
    factors: tuple[tuple[str, dict], ...] = ()
    zingers: dict | None = None
    saturation: float | None = None
    detector_max: float | None = None
    poisson: bool = True
    seed: int = 0
    term_names: tuple[str, ...] = field(default=(), init=False)

    def __post_init__(self):
        kinds = (self.sample, self.sample_factors, self.backgrounds, self.factors)
        object.__setattr__(self, "term_names", tuple(n for kind in kinds for n, _ in kind))

    @cached_property
    def good(self) -> np.ndarray:
        """:func:`frame_mask` (computed once, read-only)."""
        good = frame_mask(self)
        good.flags.writeable = False
        return good

    @property
    def beam_on_image(self) -> bool:
        """The beam centre lies on the image (within the outer pixels' edges)."""
        return on_image(self.geometry, self.geometry.beam_center)


@dataclass(frozen=True)
class Image:
    """One generated image: ``counts`` (ny, nx) float32, ``mask`` (ny, nx) bool (True =
    good pixel), ``beam_center`` ``(y, x)`` px, ``tags`` uint8 vector over the recorded
    names, ``q_range`` (nm⁻¹, smallest and largest q of a pixel), ``level`` (mean expected
    photons per good pixel of the scattering)."""

    counts: np.ndarray
    mask: np.ndarray
    beam_center: tuple[float, float]
    tags: np.ndarray
    q_range: tuple[float, float]
    level: float


def on_image(geom: DetectorGeometry, point) -> bool:
    """``point`` ``(y, x)`` (px) lies within the outer pixels' edges."""
    return all(-0.5 <= c <= n - 0.5 for c, n in zip(point, geom.shape, strict=True))


def strength_tag(level: float, counts: Mapping) -> str:
    """The scattering-strength tag of the level ``level`` (photons per pixel)."""
    if level < counts["weak_below"]:
        return "image.general.weak_scattering"
    if level > counts["strong_above"]:
        return "image.general.strong_scattering"
    return "image.general.intermediate_scattering"


def clear_radius_px(beamstop: Mapping | None) -> float:
    """Radius around the beam centre (px) inside which nothing is placed or counted."""
    if beamstop is None:
        return CENTRE_CLEAR_PX
    return float(beamstop["radius_px"]) + BEAMSTOP_MARGIN_PX


def visible_q(geom: DetectorGeometry, clear_px: float, share: float = 1.0):
    """``q`` range (nm⁻¹) of the image from the clear radius ``clear_px`` around the beam
    centre to ``share`` of the largest pixel distance (empty when ``lo >= hi``); with
    ``share`` :data:`DRAW_SHARE`, where rings and reflections are placed."""
    r_lo, r_hi = geom.pixel_radius_range()
    lo = float(geom.q_of_radius(max(r_lo, clear_px * geom.pixel)))
    return lo, float(geom.q_of_radius(share * r_hi))


# --------------------------------------------------------------------------- draws
def _uniform(rng, r, size=None):
    return rng.uniform(float(r[0]), float(r[1]), size)


def _log_uniform(rng, r, size=None):
    return np.exp(rng.uniform(math.log(float(r[0])), math.log(float(r[1])), size))


def _integer(rng, r) -> int:
    return int(rng.integers(int(r[0]), int(r[1]) + 1))


def _draw_q(rng, sec: Mapping, window, n: int = 1) -> np.ndarray | None:
    """``n`` positions (nm⁻¹) of rings in ``window``: among ``d_spacings`` (without
    repeats, fewer if fewer fit), in ``d_range`` or anywhere (log-uniform in q); None
    when none fits."""
    lo, hi = window
    if sec["d_spacings"] is not None:
        q = 2.0 * np.pi / np.asarray(sec["d_spacings"], dtype=np.float64)
        q = q[(q > lo) & (q < hi)]
        return rng.choice(q, min(n, q.size), replace=False) if q.size else None
    if sec["d_range"] is not None:
        lo = max(lo, 2.0 * np.pi / sec["d_range"][1])
        hi = min(hi, 2.0 * np.pi / sec["d_range"][0])
    return _log_uniform(rng, (lo, hi), n) if lo < hi else None


def _texture(rng, sec: Mapping) -> tuple[int, float, float, float]:
    fold = int(rng.choice(sec["folds"]))
    chi0 = rng.uniform(0.0, 2.0 * np.pi / fold)
    return (
        fold,
        chi0,
        math.radians(_uniform(rng, sec["arc_width_deg"])),
        _uniform(rng, sec["isotropic_floor"]),
    )


def _draw_rings(rng, sec, ctx):
    q = _draw_q(rng, sec, ctx["window"], _integer(rng, sec["number"]))
    if q is None:
        return None
    intensity = _uniform(rng, RING_INTENSITY, q.size)
    order = np.ones(q.size, dtype=int)
    if rng.random() < sec["higher_orders_probability"]:
        k = np.arange(2, _integer(rng, sec["orders"]) + 1)
        decay = _uniform(rng, sec["order_decay"])
        q = np.concatenate([q, k * q[0]])
        intensity = np.concatenate([intensity, intensity[0] * decay ** (k - 1)])
        order = np.concatenate([order, k])
    oval = None
    if rng.random() < sec["oval_probability"]:
        oval = (_uniform(rng, sec["eccentricity"]), rng.uniform(0.0, np.pi))
    texture = _texture(rng, sec) if rng.random() < sec["texture_probability"] else None
    return {
        "q": q,
        "relative_width": _uniform(rng, sec["relative_width"], q.size),
        "intensity": intensity,
        "order": order,
        "oval": oval,
        "texture": texture,
    }


def _draw_halo(rng, sec, ctx):
    q = _draw_q(rng, sec, ctx["window"])
    if q is None:
        return None
    texture = _texture(rng, sec) if rng.random() < sec["symmetry_probability"] else None
    return {"q": q[0], "relative_width": _uniform(rng, sec["relative_width"]), "texture": texture}


def _length(rng, configured, ctx, q_scale: float) -> float | None:
    """A length (nm): log-uniform in ``configured``, else ``q_scale / q`` for q
    log-uniform in the draw window."""
    if configured is not None:
        return float(_log_uniform(rng, configured))
    window = ctx["window"]
    return None if window[0] >= window[1] else q_scale / float(_log_uniform(rng, window))


def _draw_power_law(rng, sec, ctx):
    return {
        "exponent": _uniform(rng, sec["exponent"]),
        "q_cut": ctx["q_visible"][0],
        "anisotropy": _uniform(rng, sec["anisotropy"]),
        "chi0": rng.uniform(0.0, np.pi),
    }


def _draw_guinier(rng, sec, ctx):
    rg = _length(rng, sec["radius_of_gyration"], ctx, math.sqrt(3.0))
    return None if rg is None else {"rg": rg}


def _draw_oz(rng, sec, ctx):
    xi = _length(rng, sec["correlation_length"], ctx, 1.0)
    return None if xi is None else {"xi": xi}


def _draw_db(rng, sec, ctx):
    a = _length(rng, sec["correlation_length"], ctx, 1.0)
    return None if a is None else {"a": a}


def _draw_high_q(rng, sec, ctx):
    q_hi = ctx["q_visible"][1]
    return {
        "q_peak": _uniform(rng, sec["peak"]) * q_hi,
        "width": _uniform(rng, sec["width"]) * q_hi,
    }


def _draw_form_factor(rng, sec, ctx):
    radius = _length(rng, sec["radius"], ctx, SPHERE_FIRST_MINIMUM)
    if radius is None:
        return None
    return {"radius": radius, "polydispersity": _uniform(rng, sec["polydispersity"])}


def _draw_lattice(rng, lat: Mapping, ctx) -> dict | None:
    """A lattice whose first reflection lies in the draw window (and whose reflections on
    the image need Miller indices up to :data:`MAX_INDEX`)."""
    kind = str(rng.choice(lat["types"]))
    _, nn, g1 = LATTICES[kind]
    lo = max(ctx["window"][0], ctx["q_visible"][1] * g1 / MAX_INDEX)
    hi = ctx["window"][1]
    if lat["constant"] is not None:
        lo = max(lo, 2.0 * np.pi * g1 / lat["constant"][1])
        hi = min(hi, 2.0 * np.pi * g1 / lat["constant"][0])
    if lo >= hi:
        return None
    if lat["constant"] is None:  # leave room for several reflections
        hi = max(lo, hi / 3.0)
    q1 = float(_log_uniform(rng, (lo, hi)))
    a = 2.0 * np.pi * g1 / q1
    return {
        "lattice": kind,
        "a": a,
        "q1": q1,
        "radius": _uniform(rng, lat["sphere_radius"]) * nn * a,
        "sigma": _uniform(rng, lat["debye_waller"]) * a,
        "relative_width": _uniform(rng, lat["relative_width"]),
    }


def _orientation(rng, dim: int, tilt_deg) -> np.ndarray:
    """Lattice frame → lab (z along the beam): a zone axis along the beam (3D), a random
    rotation about it and a tilt up to ``tilt_deg`` about a random in-plane axis."""
    spin = Rotation.from_rotvec([0.0, 0.0, rng.uniform(0.0, 2.0 * np.pi)])
    if dim == 2:
        return spin.as_matrix()
    zone = np.asarray(ZONE_AXES[int(rng.integers(len(ZONE_AXES)))])
    zone = zone / np.linalg.norm(zone)
    axis = np.cross(zone, [0.0, 0.0, 1.0])
    angle = math.atan2(np.linalg.norm(axis), zone[2])
    align = Rotation.from_rotvec(axis / max(np.linalg.norm(axis), 1e-300) * angle)
    phi = rng.uniform(0.0, 2.0 * np.pi)
    tilt = math.radians(_uniform(rng, tilt_deg))
    tilt = Rotation.from_rotvec(np.array([math.cos(phi), math.sin(phi), 0.0]) * tilt)
    return (tilt * spin * align).as_matrix()


def _draw_single_crystal(rng, sec, ctx):
    p = _draw_lattice(rng, ctx["lattice"], ctx)
    if p is None:
        return None
    dim = LATTICES[p["lattice"]][0]
    p["rotation"] = _orientation(rng, dim, sec["tilt_deg"])
    p["excitation"] = _uniform(rng, sec["excitation_width"]) * p["q1"]
    p["spot_width_px"] = _uniform(rng, sec["spot_width_px"])
    return p


def _draw_polycrystalline(rng, sec, ctx):
    return _draw_lattice(rng, ctx["lattice"], ctx)


def _draw_large_grains(rng, sec, ctx):
    p = _draw_lattice(rng, ctx["lattice"], ctx)
    if p is None:
        return None
    p["grains"] = _integer(rng, sec["grains_per_ring"])
    p["spot_width_px"] = _uniform(rng, sec["spot_width_px"])
    return p


_SAMPLE_DRAWS = {
    "rings": _draw_rings,
    "halo": _draw_halo,
    "power_law": _draw_power_law,
    "guinier": _draw_guinier,
    "ornstein_zernike": _draw_oz,
    "debye_bueche": _draw_db,
    "high_q": _draw_high_q,
    "form_factor": _draw_form_factor,
    "polycrystalline": _draw_polycrystalline,
    "large_grains": _draw_large_grains,
    "single_crystal": _draw_single_crystal,
}


def draw_beam_center(section: Mapping, geom: DetectorGeometry, rng) -> tuple[float, float]:
    """``beam_center.fixed``, else fractions of ``(ny − 1, nx − 1)`` uniform in
    ``y_range``, ``x_range`` (px)."""
    bc = section["beam_center"]
    if bc["fixed"] is not None:
        return float(bc["fixed"][0]), float(bc["fixed"][1])
    ny, nx = geom.shape
    return _uniform(rng, bc["y_range"]) * (ny - 1), _uniform(rng, bc["x_range"]) * (nx - 1)


def _draw_beamstop(rng, bs: Mapping) -> dict | None:
    if rng.random() >= bs["probability"]:
        return None
    p = {"radius_px": _uniform(rng, bs["radius_px"]), "arm_width_px": 0.0, "arm_angle": 0.0}
    p["wedge_angle"] = 0.0
    if rng.random() < bs["arm_probability"]:
        p["arm_width_px"] = _uniform(rng, bs["arm_width_px"])
        angle = bs["arm_angle_deg"]
        p["arm_angle"] = rng.uniform(0, 2 * np.pi) if angle is None else math.radians(angle)
        if rng.random() < bs["wedge_probability"]:
            p["wedge_angle"] = math.radians(_uniform(rng, bs["wedge_angle_deg"]))
    return p


def _draw_backgrounds(rng, sec: Mapping, geom: DetectorGeometry, level: float, beamstop):
    out = []
    for name, key in (("background", "constant"), ("high_background", "high")):
        if rng.random() < sec[key]["probability"]:
            out.append((name, {"level": level * float(_log_uniform(rng, sec[key]["fraction"]))}))
    par = sec["parasitic"]
    (yc, xc), (ny, nx) = geom.beam_center, geom.shape
    axes = [a for a, c, n in (("x", yc, ny), ("y", xc, nx)) if -0.5 <= c <= n - 0.5]
    if axes and rng.random() < par["probability"]:
        if len(axes) == 2 and rng.random() >= par["both_probability"]:
            axes = [axes[int(rng.integers(2))]]
        out.append(
            (
                "parasitic",
                {
                    "axes": tuple(axes),
                    "amplitude": level * float(_log_uniform(rng, par["strength"])),
                    "width_px": _uniform(rng, par["width_px"]),
                    "decay_px": float(_log_uniform(rng, par["decay_px"])),
                    "exponent": _uniform(rng, par["exponent"]),
                },
            )
        )
    db = sec["direct_beam"]
    if beamstop is None and on_image(geom, geom.beam_center) and rng.random() < db["probability"]:
        amplitude = level * float(_log_uniform(rng, db["strength"]))
        out.append(
            ("direct_beam", {"amplitude": amplitude, "width_px": _uniform(rng, db["width_px"])})
        )
    return tuple(out)


def _draw_factors(rng, section: Mapping, geom: DetectorGeometry, beamstop):
    out = []
    det = section["detector"]
    if det["module_shape"] is not None:
        out.append(("gaps", {"module_shape": det["module_shape"], "gap_width": det["gap_width"]}))
    if beamstop is not None:
        out.append(("beamstop", beamstop))
    art = section["artefacts"]
    b = art["blocked"]
    if rng.random() < b["probability"]:
        p = {"angle": rng.uniform(0.0, 2.0 * np.pi), "fraction": _uniform(rng, b["fraction"])}
        p.update(transmission=_uniform(rng, b["transmission"]), edge_px=_uniform(rng, b["edge_px"]))
        out.append(("blocked", p))
    w = art["windowed"]
    if rng.random() < w["probability"]:
        r_lo, r_hi = (r / geom.pixel for r in geom.pixel_radius_range())
        radius = max(_uniform(rng, w["radius"]) * r_hi, r_lo + 0.25 * (r_hi - r_lo))
        p = {"radius_px": radius, "transmission": _uniform(rng, w["transmission"])}
        p["edge_px"] = _uniform(rng, w["edge_px"])
        out.append(("windowed", p))
    return tuple(out)


def draw_spec(
    section: Mapping,
    geom_base: DetectorGeometry,
    rng: np.random.Generator,
    *,
    detector_max: float | None = None,
    poisson: bool = True,
) -> ImageSpec:
    """Draw one image: the beam centre, the beamstop, the level, each term with its
    probability and its parameters (rings and reflections placed on the image), the
    artefacts. ``detector_max``: counts at which every pixel saturates (or None);
    ``poisson``: Poisson counts, else the expected intensities."""
    geom = geom_base.with_center(draw_beam_center(section, geom_base, rng))
    beamstop = _draw_beamstop(rng, section["detector"]["beamstop"])
    level = float(_log_uniform(rng, section["counts"]["mean_per_pixel"]))
    clear = clear_radius_px(beamstop)
    smp = section["sample"]
    ctx = {
        "window": visible_q(geom, clear, DRAW_SHARE),
        "q_visible": visible_q(geom, clear),
        "lattice": smp["lattice"],
    }
    sample = []
    for name, draw in _SAMPLE_DRAWS.items():
        if rng.random() < smp[name]["probability"]:
            p = draw(rng, smp[name], ctx)
            if p is not None:
                p.update(weight=_uniform(rng, smp["weight"]), q_visible=ctx["q_visible"])
                p["many"] = smp["many_rings"]
                sample.append((name, p))
    speckle = smp["coherent_speckle"]
    sample_factors = ()
    if rng.random() < speckle["probability"]:
        p = {
            "grain_px": _uniform(rng, speckle["grain_px"]),
            "contrast": _uniform(rng, speckle["contrast"]),
        }
        sample_factors = (("coherent_speckle", p),)
    backgrounds = _draw_backgrounds(rng, section["background"], geom, level, beamstop)
    factors = _draw_factors(rng, section, geom, beamstop)
    art = section["artefacts"]
    zingers = saturation = None
    if rng.random() < art["zingers"]["probability"]:
        z = art["zingers"]
        zingers = {
            "number": _integer(rng, z["number"]),
            "strength": float(_log_uniform(rng, z["strength"])),
        }
    if rng.random() < art["saturation"]["probability"]:
        saturation = float(_log_uniform(rng, art["saturation"]["fraction"]))
    return ImageSpec(
        geometry=geom,
        level=level,
        strength_tag=strength_tag(level, section["counts"]),
        sample=tuple(sample),
        sample_factors=sample_factors,
        backgrounds=backgrounds,
        factors=factors,
        zingers=zingers,
        saturation=saturation,
        detector_max=detector_max,
        poisson=poisson,
        seed=int(rng.integers(2**63)),
    )


# --------------------------------------------------------------------------- render, measure
def frame_mask(spec: ImageSpec) -> np.ndarray:
    """(ny, nx) bool, True = good pixel: False in the module gaps and behind the beamstop
    (its disc and arm)."""
    good = np.ones(spec.geometry.shape, dtype=bool)
    for name, p in spec.factors:
        if name in ("gaps", "beamstop"):
            good &= TERMS[name](spec.geometry, p, None)[0] > 0
    return good


def render(spec: ImageSpec) -> tuple[np.ndarray, set[str]]:
    """Expected photons per pixel (ny, nx) float64 and the tags of the image."""
    geom = spec.geometry
    rngs = iter(np.random.default_rng(spec.seed).spawn(len(spec.term_names)))
    tags = set()
    if not spec.beam_on_image:
        tags.add("instrumental.beam.off_image")
    good = spec.good
    image = np.zeros(geom.shape)
    total = 0.0
    n_rings, many = 0, math.inf
    for name, p in spec.sample:
        arr, t = SAMPLE[name](geom, p, next(rngs))
        mean = float(arr[good].mean()) if good.any() else 0.0
        if mean > 0 and math.isfinite(mean):
            image += (p["weight"] / mean) * arr
            total += p["weight"]
            tags |= t
            n_rings += ring_count(name, geom, p)
            many = p["many"]
    if n_rings >= many:  # the rings of all terms on the image
        tags.add("features.variations.many_rings")
    if total:  # the level scales the sample's scattering: its strength
        image *= spec.level / total
        tags.add(spec.strength_tag)
    for kinds, add in (
        (spec.sample_factors, False),
        (spec.backgrounds, True),
        (spec.factors, False),
    ):
        for name, p in kinds:
            arr, t = TERMS[name](geom, p, next(rngs))
            image = image + arr if add else image * arr
            tags |= t
    return image, tags


def measure(expected: np.ndarray, spec: ImageSpec, rng: np.random.Generator):
    """Counts (ny, nx) float32 of ``expected`` and the tags this caused: Poisson (if
    ``spec.poisson``), then zingers on good pixels (``strength`` × the largest expected
    count, some on two neighbouring pixels), then the clip at the saturation level
    (``spec.saturation``'s quantile of the good pixels' expectation, rounded down, and
    ``spec.detector_max``)."""
    counts = rng.poisson(expected).astype(np.float64) if spec.poisson else expected.copy()
    tags = set()
    good = spec.good
    if spec.zingers is not None:
        idx = np.flatnonzero(good)
        n = min(int(spec.zingers["number"]), idx.size)
        hit = rng.choice(idx, n, replace=False)
        nx = spec.geometry.shape[1]
        pair = hit[rng.random(n) < ZINGER_PAIR]
        pair = pair[(pair % nx) < nx - 1] + 1
        hit = np.concatenate([hit, pair[good.flat[pair]]])
        value = spec.zingers["strength"] * max(float(expected[good].max(initial=0.0)), 1.0)
        counts.flat[hit] += rng.uniform(0.5, 1.0, hit.size) * value
        if hit.size:
            tags.add("image.problem.zingers")
    clip = spec.detector_max
    if spec.saturation is not None and good.any():
        level = max(math.floor(float(np.quantile(expected[good], 1.0 - spec.saturation))), 1)
        clip = level if clip is None else min(clip, level)
    if clip is not None and (counts >= clip).any():
        counts = np.minimum(counts, clip)
        tags.add("image.problem.saturation")
    return counts.astype(np.float32), tags


def generate(
    section: Mapping,
    geom_base: DetectorGeometry,
    n: int,
    rng: np.random.Generator,
    *,
    detector_max: float | None = None,
    poisson: bool = True,
) -> Iterator[Image]:
    """``n`` images (:class:`Image`), tags recorded over ``section["tags"]`` (all of
    :data:`~.tags.TAGS` when null); image i depends only on ``rng`` and i."""
    names = tuple(section["tags"] or TAGS)
    for child in rng.spawn(int(n)):
        draw_rng, noise_rng = child.spawn(2)
        spec = draw_spec(section, geom_base, draw_rng, detector_max=detector_max, poisson=poisson)
        expected, tags = render(spec)
        counts, more = measure(expected, spec, noise_rng)
        yield Image(
            counts=counts,
            mask=spec.good,
            beam_center=spec.geometry.beam_center,
            tags=tag_vector(tags | more, names),
            q_range=spec.geometry.q_range(),
            level=spec.level,
        )
