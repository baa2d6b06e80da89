"""The scattering-image generator: rings where 2π/d says, every term's tags (present when
the term is, absent when it is not), Poisson counts, masks, determinism, an off-image beam,
closed forms of the diffuse terms and lattices."""

import copy
import math

import numpy as np
import pytest

from xrayflow.config import fill_defaults
from xrayflow.errors import ConfigError
from xrayflow.modalities.scattering import simulate as sim
from xrayflow.modalities.scattering import terms
from xrayflow.modalities.scattering.detector import DetectorGeometry
from xrayflow.modalities.scattering.generator import (
    ImageSpec,
    draw_spec,
    frame_mask,
    generate,
    measure,
    render,
)
from xrayflow.modalities.scattering.tags import TAGS, check_tags, tag_vector

#: hc in eV·nm (SI exact constants), for the independent geometry below.
HC_EV_NM = 6.62607015e-34 * 299792458.0 / 1.602176634e-19 * 1e9
ENERGY = 8900.0
PIXEL = 75e-6
GEOM = DetectorGeometry((96, 96), (PIXEL, PIXEL), 5.0, ENERGY, (47.3, 48.6))


def _set(d: dict, dotted: str, value) -> None:
    *head, last = dotted.split(".")
    for k in head:
        d = d[k]
    d[last] = value


def _quiet(node) -> None:
    for k, v in node.items():
        if isinstance(v, dict):
            _quiet(v)
        elif k.endswith("probability"):
            node[k] = 0.0


def section(overrides: dict | None = None) -> dict:
    """The ``scattering`` defaults with every probability 0, 50 photons per pixel (an
    intermediate level), no many_rings tag, and ``overrides`` (dotted keys) applied."""
    sec = fill_defaults({}, copy.deepcopy(sim.SIMULATE_SECTIONS["scattering"]))
    _quiet(sec)
    sec["counts"]["mean_per_pixel"] = [50.0, 50.0]
    sec["sample"]["many_rings"] = 1000
    for k, v in (overrides or {}).items():
        _set(sec, k, v)
    return sec


def image_tags(sec: dict, seed: int, geom: DetectorGeometry = GEOM) -> set[str]:
    spec = draw_spec(sec, geom, np.random.default_rng(seed))
    expected, tags = render(spec)
    _, more = measure(expected, spec, np.random.default_rng(seed + 100))
    return tags | more


def flat_radius_px(q: float, distance: float, pixel: float, energy: float) -> float:
    """r = D·tan(2·asin(qλ/4π)) / pixel, q in nm⁻¹."""
    lam = HC_EV_NM / energy
    return distance * math.tan(2.0 * math.asin(q * lam / (4.0 * math.pi))) / pixel


# --------------------------------------------------------------------------- geometry
@pytest.mark.parametrize(
    "distance, n, centre, two_theta_deg",
    [
        (5.0, 128, (60.3, 70.6), math.degrees(math.atan(40 * PIXEL / 5.0))),  # SAXS
        (0.05, 256, (20.4, 30.7), 15.0),  # WAXS: paraxial r = D·2θ is 4.6 px short
        (2.0, 128, (-30.2, 64.5), math.degrees(math.atan(70 * PIXEL / 2.0))),  # beam off image
    ],
    ids=["saxs", "waxs", "off_image"],
)
def test_a_ring_at_spacing_d_appears_at_q_2pi_over_d(distance, n, centre, two_theta_deg):
    lam = HC_EV_NM / ENERGY
    d = lam / (2.0 * math.sin(math.radians(two_theta_deg) / 2.0))
    q = 2.0 * math.pi / d
    expected_r = flat_radius_px(q, distance, PIXEL, ENERGY)
    geom = DetectorGeometry((n, n), (PIXEL, PIXEL), distance, ENERGY, (0.0, 0.0))
    assert float(geom.with_center(centre).radius_px(q)) == pytest.approx(expected_r, rel=1e-9)
    sec = section(
        {
            "beam_center.fixed": list(centre),
            "sample.rings.probability": 1.0,
            "sample.rings.number": [1, 1],
            "sample.rings.d_spacings": [d],
            "sample.rings.relative_width": [0.001, 0.001],
        }
    )
    spec = draw_spec(sec, geom, np.random.default_rng(0), poisson=False)
    image, tags = render(spec)
    assert "features.main.ring" in tags
    yy, xx = np.indices(image.shape)
    r = np.hypot(yy - centre[0], xx - centre[1]).ravel()
    bins = np.round(r * 10).astype(int)  # azimuthal average in 0.1 px bins
    count = np.bincount(bins)
    profile = np.bincount(bins, image.ravel()) / np.maximum(count, 1)
    k = int(np.argmax(profile))
    near = slice(max(k - 20, 0), k + 21)
    peak = float(np.sum(np.arange(len(profile))[near] * profile[near]) / profile[near].sum()) / 10
    assert abs(peak - expected_r) <= 1.0
    if distance < 1:  # the exact flat-detector geometry, not the paraxial one
        assert abs(peak - distance * math.radians(two_theta_deg) / PIXEL) > 3.0


def test_q_and_azimuth_of_a_pixel_follow_the_flat_detector_formulas():
    lam = HC_EV_NM / ENERGY
    for y, x in ((0, 0), (47, 95), (90, 10)):
        dy, dx = (y - GEOM.beam_center[0]) * PIXEL, (x - GEOM.beam_center[1]) * PIXEL
        two_theta = math.atan(math.hypot(dy, dx) / GEOM.distance)
        q = 4.0 * math.pi * math.sin(two_theta / 2.0) / lam
        assert GEOM.q_map()[y, x] == pytest.approx(q, rel=1e-12)
        assert GEOM.chi_map()[y, x] == pytest.approx(math.atan2(dy, dx), abs=1e-12)
    q_lo, q_hi = GEOM.q_range()
    assert q_lo == pytest.approx(float(GEOM.q_map().min()), rel=1e-12)
    assert q_hi == pytest.approx(float(GEOM.q_map().max()), rel=1e-12)


def test_radius_beyond_90_degrees_is_infinite_and_beyond_the_ewald_sphere_nan():
    lam = HC_EV_NM / ENERGY
    q_100 = 4.0 * math.pi * math.sin(math.radians(50.0)) / lam
    assert np.isinf(GEOM.radius_px(q_100))
    assert np.isnan(GEOM.radius_px(4.0 * math.pi / lam * 1.01))


# --------------------------------------------------------------------------- closed forms
def test_diffuse_terms_follow_their_closed_forms():
    q = GEOM.q_map()
    idx = (np.array([5, 30, 47, 80, 95]), np.array([90, 10, 70, 47, 0]))
    qs = q[idx]
    cases = [
        (terms.guinier, {"rg": 40.0}, np.exp(-(qs**2) * 40.0**2 / 3.0)),
        (terms.ornstein_zernike, {"xi": 25.0}, 1.0 / (1.0 + (qs * 25.0) ** 2)),
        (terms.debye_bueche, {"a": 30.0}, 1.0 / (1.0 + (qs * 30.0) ** 2) ** 2),
    ]
    p = {"exponent": 3.3, "q_cut": 0.005, "anisotropy": 0.0, "chi0": 0.0}
    cases.append((terms.power_law, p, np.maximum(qs, 0.005) ** -3.3))
    for term, params, closed in cases:
        img, tags = term(GEOM, params, None)
        assert img[idx] == pytest.approx(closed, rel=1e-3), term.__name__
        assert tags == {"features.main.diffuse_low_q"}


def test_sphere_form_factor():
    assert terms.sphere_form_factor(math.pi) == pytest.approx(3.0 / math.pi**2, rel=1e-12)
    assert terms.sphere_form_factor(4.4934) == pytest.approx(0.0, abs=1e-4)
    assert terms.sphere_form_factor(1e-5) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize(
    "kind, rings",
    [
        ("sc", [(1.0, 6), (math.sqrt(2), 12), (math.sqrt(3), 8)]),
        ("bcc", [(math.sqrt(2), 12), (2.0, 6), (math.sqrt(6), 24)]),
        ("fcc", [(math.sqrt(3), 8), (2.0, 6), (math.sqrt(8), 12)]),
        ("square", [(1.0, 4), (math.sqrt(2), 4), (2.0, 4)]),
        ("hexagonal", [(2 / math.sqrt(3), 6), (2.0, 6), (4 / math.sqrt(3), 6)]),
    ],
)
def test_lattice_reflections_and_multiplicities(kind, rings):
    a = 20.0
    g = terms.reflections(kind, a, 2.0 * math.pi / a * 2.9)
    q, mult = terms.powder(g, a)
    assert q[:3] * a / (2.0 * math.pi) == pytest.approx([r for r, _ in rings], rel=1e-9)
    assert list(mult[:3]) == [m for _, m in rings]
    assert terms.LATTICES[kind][2] == pytest.approx(rings[0][0])


# --------------------------------------------------------------------------- tags
RING, MANY = "features.main.ring", "features.variations.many_rings"
HALO, AMORPH = "features.main.halo", "sample.type.amorphous"
LOWQ, HIGHQ = "features.main.diffuse_low_q", "features.main.diffuse_high_q"
SF, I = "image.general.structure_factor", "image.general.intermediate_scattering"
BG = "features.other.background"
CIRC = "instrumental.beamstop.circular"
RINGS = {"sample.rings.probability": 1.0, "sample.rings.number": [2, 2]}
HALO_ON = {"sample.halo.probability": 1.0}
BEAMSTOP = {"detector.beamstop.probability": 1.0, "detector.beamstop.arm_probability": 0.0}
ARM = {**BEAMSTOP, "detector.beamstop.arm_probability": 1.0}
R15 = 2.0 * math.pi / float(GEOM.q_of_radius(15 * PIXEL))  # d of a ring 15 px out

#: id: (overrides with the term, overrides without it, tags with, tags without)
CASES = {
    "rings": (RINGS, {"sample.rings.probability": 0.0}, {RING, I}, set()),
    "many_rings": (
        {**RINGS, "sample.rings.number": [4, 4], "sample.many_rings": 4},
        {"sample.rings.number": [3, 3]},
        {RING, MANY, I},
        {RING, I},
    ),
    "oval_ring": (
        {**RINGS, "sample.rings.oval_probability": 1.0},
        {"sample.rings.oval_probability": 0.0},
        {RING, "features.variations.oval_ring", I},
        {RING, I},
    ),
    "symmetry_ring": (
        {**RINGS, "sample.rings.texture_probability": 1.0},
        {"sample.rings.texture_probability": 0.0},
        {RING, "features.variations.symmetry_ring", I},
        {RING, I},
    ),
    "higher_orders": (
        {
            **RINGS,
            "sample.rings.number": [1, 1],
            "sample.rings.d_spacings": [R15],
            "sample.rings.higher_orders_probability": 1.0,
            "sample.rings.orders": [2, 2],
        },
        {"sample.rings.higher_orders_probability": 0.0},
        {RING, "features.variations.higher_orders", I},
        {RING, I},
    ),
    "halo": (HALO_ON, {"sample.halo.probability": 0.0}, {HALO, AMORPH, I}, set()),
    "symmetry_halo": (
        {**HALO_ON, "sample.halo.symmetry_probability": 1.0},
        {"sample.halo.symmetry_probability": 0.0},
        {HALO, AMORPH, "features.variations.symmetry_halo", I},
        {HALO, AMORPH, I},
    ),
    **{
        name: (
            {f"sample.{name}.probability": 1.0},
            {f"sample.{name}.probability": 0.0},
            tags,
            set(),
        )
        for name, tags in (
            ("power_law", {LOWQ, I}),
            ("guinier", {LOWQ, I}),
            ("ornstein_zernike", {LOWQ, I}),
            ("debye_bueche", {LOWQ, I}),
            ("high_q", {HIGHQ, I}),
            ("form_factor", {"image.general.form_factor", I}),
            ("polycrystalline", {RING, SF, "sample.type.polycrystalline", I}),
            ("large_grains", {RING, SF, "sample.type.large_grains", I}),
            ("single_crystal", {SF, "sample.type.single_crystal", I}),
        )
    },
    "coherent_speckle": (
        {"sample.power_law.probability": 1.0, "sample.coherent_speckle.probability": 1.0},
        {"sample.coherent_speckle.probability": 0.0},
        {LOWQ, "features.other.coherent_speckle", I},
        {LOWQ, I},
    ),
    "weak": (
        {"sample.power_law.probability": 1.0, "counts.mean_per_pixel": [5.0, 5.0]},
        {"sample.power_law.probability": 0.0},
        {LOWQ, "image.general.weak_scattering"},
        set(),
    ),
    "strong": (
        {"sample.power_law.probability": 1.0, "counts.mean_per_pixel": [500.0, 500.0]},
        {"sample.power_law.probability": 0.0},
        {LOWQ, "image.general.strong_scattering"},
        set(),
    ),
    "background": (
        {"background.constant.probability": 1.0},
        {"background.constant.probability": 0.0},
        {BG},
        set(),
    ),
    "high_background": (
        {"background.high.probability": 1.0},
        {"background.high.probability": 0.0},
        {BG, "features.other.high_background"},
        set(),
    ),
    "parasitic": (
        {"background.parasitic.probability": 1.0},
        {"background.parasitic.probability": 0.0},
        {"image.problem.parasitic_slit_scattering"},
        set(),
    ),
    "direct_beam": (
        {"background.direct_beam.probability": 1.0},
        {"background.direct_beam.probability": 0.0},
        {"instrumental.beam.direct_beam"},
        set(),
    ),
    "beamstop": (BEAMSTOP, {"detector.beamstop.probability": 0.0}, {CIRC}, set()),
    "beamstop_arm": (
        ARM,
        {"detector.beamstop.arm_probability": 0.0},
        {CIRC, "instrumental.beamstop.linear"},
        {CIRC},
    ),
    "beamstop_wedge": (
        {**ARM, "detector.beamstop.wedge_probability": 1.0},
        {"detector.beamstop.wedge_probability": 0.0},
        {CIRC, "instrumental.beamstop.wedge"},
        {CIRC, "instrumental.beamstop.linear"},
    ),
    "gaps": (
        {"detector.module_shape": [40, 40], "detector.gap_width": [4, 4]},
        {"detector.module_shape": None},
        {"instrumental.detector.gaps"},
        set(),
    ),
    "blocked": (
        {"artefacts.blocked.probability": 1.0},
        {"artefacts.blocked.probability": 0.0},
        {"image.problem.blocked"},
        set(),
    ),
    "windowed": (
        {"artefacts.windowed.probability": 1.0},
        {"artefacts.windowed.probability": 0.0},
        {"image.problem.windowed"},
        set(),
    ),
    "zingers": (
        {"artefacts.zingers.probability": 1.0},
        {"artefacts.zingers.probability": 0.0},
        {"image.problem.zingers"},
        set(),
    ),
    "saturation": (
        {"background.constant.probability": 1.0, "artefacts.saturation.probability": 1.0},
        {"artefacts.saturation.probability": 0.0},
        {BG, "image.problem.saturation"},
        {BG},
    ),
    "off_image": (
        {"beam_center.fixed": [-20.0, 40.0]},
        {"beam_center.fixed": [47.3, 48.6]},
        {"instrumental.beam.off_image"},
        set(),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_term_sets_its_tags_when_present_and_only_then(case):
    on, off, tags_on, tags_off = CASES[case]
    base = {"beam_center.fixed": [47.3, 48.6], **on}
    for seed in range(3):
        assert image_tags(section(base), seed) == tags_on, seed
        assert image_tags(section({**base, **off}), seed) == tags_off, seed


def _q_of_px(r_px: float) -> float:
    return float(GEOM.q_of_radius(r_px * PIXEL))


def _ring_spec(n_lattice_rings: int, many: int = 4) -> ImageSpec:
    """Two sharp rings (the rings term) and a square powder whose visible range holds
    exactly ``n_lattice_rings`` of its rings ((1,0), (1,1), (2,0): |G| = 1, √2, 2 × q₁)."""
    q1 = _q_of_px(12.0)
    hi = q1 * (1.2, 1.7, 2.1)[n_lattice_rings - 1]  # between the last ring kept and the next
    visible = (_q_of_px(2.0), hi)
    common = {"weight": 1.0, "q_visible": visible, "many": many}
    rings_p = {
        "q": np.array([_q_of_px(5.0), _q_of_px(8.0)]),
        "relative_width": np.array([0.01, 0.01]),
        "intensity": np.array([1.0, 1.0]),
        "order": np.array([1, 1]),
        "oval": None,
        "texture": None,
        **common,
    }
    powder_p = {
        "lattice": "square",
        "a": 2.0 * math.pi / q1,
        "q1": q1,
        "radius": 1e-3,  # point scatterers: F² ≈ 1, the rings' share set by multiplicity/|G|
        "sigma": 0.0,
        "relative_width": 0.005,
        **common,
    }
    return ImageSpec(
        geometry=GEOM,
        level=50.0,
        strength_tag=I,
        sample=(("rings", rings_p), ("polycrystalline", powder_p)),
    )


@pytest.mark.parametrize("n_lattice_rings, tagged", [(1, False), (2, True), (3, True)])
def test_many_rings_counts_the_rings_of_every_term_on_the_image(n_lattice_rings, tagged):
    # 2 sharp rings + n powder rings: 4 or more rings on the image set many_rings although
    # no single term has 4 (an image shows its rings, not the terms that drew them)
    spec = _ring_spec(n_lattice_rings)
    counts = {n: terms.ring_count(n, GEOM, p) for n, p in spec.sample}
    assert counts == {"rings": 2, "polycrystalline": n_lattice_rings}
    assert max(counts.values()) < 4
    _, tags = render(spec)
    assert RING in tags
    assert (MANY in tags) is tagged
    # a ring outside the visible range is not counted, and terms without rings count 0
    p = dict(spec.sample[0][1], q=np.array([_q_of_px(8.0), 10.0 * _q_of_px(60.0)]))
    assert terms.ring_count("rings", GEOM, p) == 1
    assert terms.ring_count("halo", GEOM, {"q": _q_of_px(20.0)}) == 0


def test_the_cases_cover_the_vocabulary_and_nothing_is_tagged_without_terms():
    assert set().union(*(c[2] for c in CASES.values())) == set(TAGS)
    assert len(set(TAGS)) == len(TAGS)
    for seed in range(3):
        assert image_tags(section({"beam_center.fixed": [47.3, 48.6]}), seed) == set()


def test_default_images_carry_only_known_tags_and_vary():
    sec = fill_defaults({}, copy.deepcopy(sim.SIMULATE_SECTIONS["scattering"]))
    seen = [image_tags(sec, seed) for seed in range(30)]
    assert set().union(*seen) <= set(TAGS)
    assert len({frozenset(s) for s in seen}) > 20


def test_tag_names_are_checked_and_vectors_follow_the_names():
    assert check_tags(["features.main.halo", "features.main.ring"], "k") == (1, 0)
    with pytest.raises(
        ConfigError,
        match=r"k\[0\]: unknown tag 'features.main.rings'.*"
        r"'features.main.ring'",
    ):
        check_tags(["features.main.rings"], "k")
    with pytest.raises(ConfigError, match=r"k\[1\]: .* listed twice"):
        check_tags([TAGS[0], TAGS[0]], "k")
    names = ("features.main.halo", "features.main.ring", "image.problem.zingers")
    v = tag_vector({"features.main.ring", "image.problem.zingers", "sample.type.amorphous"}, names)
    assert v.dtype == np.uint8 and list(v) == [0, 1, 1]


# --------------------------------------------------------------------------- counts, masks
def test_counts_are_poisson_around_the_expected_image():
    geom = DetectorGeometry((200, 200), (PIXEL, PIXEL), 5.0, ENERGY, (99.5, 99.5))
    sec = section(
        {"background.constant.probability": 1.0, "background.constant.fraction": [0.4, 0.4]}
    )
    spec = draw_spec(sec, geom, np.random.default_rng(1))
    expected, _ = render(spec)
    assert expected == pytest.approx(np.full(geom.shape, 20.0))
    counts, tags = measure(expected, spec, np.random.default_rng(2))
    assert counts.dtype == np.float32 and tags == set()
    assert np.array_equal(counts, np.round(counts))
    assert counts.mean() == pytest.approx(20.0, abs=0.1)  # sigma of the mean: 0.022
    assert counts.var() == pytest.approx(20.0, abs=0.6)  # sigma of the variance: 0.14
    no_noise = ImageSpec(geometry=geom, level=50.0, strength_tag=I, poisson=False)
    assert np.array_equal(measure(expected, no_noise, np.random.default_rng(2))[0], expected)


def test_beamstop_arm_and_gaps_are_masked_and_receive_nothing():
    sec = section(
        {
            **ARM,
            "beam_center.fixed": [47.3, 48.6],
            "detector.beamstop.radius_px": [6.0, 6.0],
            "detector.beamstop.arm_width_px": [4.0, 4.0],
            "detector.beamstop.arm_angle_deg": 0.0,
            "detector.module_shape": [40, 40],
            "detector.gap_width": [4, 4],
            "background.constant.probability": 1.0,
        }
    )
    spec = draw_spec(sec, GEOM, np.random.default_rng(0))
    good = frame_mask(spec)
    yy, xx = np.indices(GEOM.shape)
    dy, dx = yy - 47.3, xx - 48.6
    blocked = (dy**2 + dx**2 <= 36.0) | ((dx >= 0) & (np.abs(dy) <= 2.0))
    gap = (yy % 44 >= 40) | (xx % 44 >= 40)
    assert np.array_equal(good, ~blocked & ~gap)
    assert not good[47, 80] and good[47, 20] and not good[41, 20] and not good[20, 42]
    expected, _ = render(spec)
    assert np.all(expected[~good] == 0) and np.all(expected[good] > 0)


def test_the_same_seed_gives_the_same_images_another_seed_others():
    sec = fill_defaults({}, copy.deepcopy(sim.SIMULATE_SECTIONS["scattering"]))

    def run(seed):
        return list(generate(sec, GEOM, 4, np.random.default_rng(seed)))

    a, b, c = run(7), run(7), run(8)
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x.counts, y.counts) and np.array_equal(x.mask, y.mask)
        assert np.array_equal(x.tags, y.tags) and x.beam_center == y.beam_center
    assert not all(np.array_equal(x.counts, z.counts) for x, z in zip(a, c, strict=True))


def test_a_beam_centre_off_the_image():
    sec = section(
        {
            "beam_center.fixed": [-25.0, 140.0],
            "sample.power_law.probability": 1.0,
            "sample.rings.probability": 1.0,
        }
    )
    (img,) = generate(sec, GEOM, 1, np.random.default_rng(3))
    assert img.beam_center == (-25.0, 140.0)
    r_min = math.hypot(25.0, 140.0 - 95.0) * PIXEL
    assert img.q_range[0] == pytest.approx(float(GEOM.q_of_radius(r_min)), rel=1e-12)
    assert img.mask.all() and np.isfinite(img.counts).all() and img.counts.sum() > 0
    on = dict(zip(TAGS, img.tags, strict=True))
    assert on["instrumental.beam.off_image"] and on[RING] and on[LOWQ]


def test_single_crystal_spots_sit_at_their_reciprocal_lattice_points():
    q1 = float(GEOM.q_of_radius(20 * PIXEL))  # |G₁₀| 20 px from the beam centre
    p = {
        "lattice": "square",
        "a": 2.0 * math.pi / q1,
        "radius": 1e-3,
        "sigma": 0.0,
        "rotation": [
            [math.cos(0.35), -math.sin(0.35), 0],
            [math.sin(0.35), math.cos(0.35), 0],
            [0, 0, 1],
        ],
        "spot_width_px": 1.0,
        "q_visible": (0.0, GEOM.q_range()[1]),
        "many": 4,
    }
    img, tags = terms.single_crystal(GEOM, p, None)
    assert tags == {SF, "sample.type.single_crystal"}
    yc, xc = GEOM.beam_center
    for h, k in ((1, 0), (0, 1), (-1, 0), (0, -1), (1, 1)):  # G = (h, k)·2π/a turned 0.35
        r = flat_radius_px(q1 * math.hypot(h, k), GEOM.distance, PIXEL, ENERGY)
        chi = math.atan2(k, h) + 0.35
        y, x = yc + r * math.sin(chi), xc + r * math.cos(chi)
        y0, x0 = round(y), round(x)
        window = img[y0 - 3 : y0 + 4, x0 - 3 : x0 + 4]
        peak = np.array(np.unravel_index(np.argmax(window), window.shape)) + (y0 - 3, x0 - 3)
        assert math.hypot(peak[0] - y, peak[1] - x) <= 1.0, (h, k)
        assert window.max() > 0.1 * img.max(), (h, k)
