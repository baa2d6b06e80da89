"""Diffuse intensity: the Warren–Cowley sum equals the lattice-averaged |F(q)|² (FFT),
the flat Laue level of an uncorrelated lattice, centrosymmetry, the Bragg mask, form
factors, Poisson counts, the closed-form forward map, and bad inputs."""

import numpy as np
import pytest

from xrayflow.errors import ConfigError, DataError
from xrayflow.modalities.diffuse.diffraction import (
    DiffuseConfig,
    bragg_mask,
    diffuse_intensity,
    expected_image,
    form_factor_contrast,
    normalise,
    observe,
    pixel_centres,
    sampling,
    simulate_image,
    warren_cowley_intensity,
)
from xrayflow.modalities.diffuse.encoding import (
    correlation_map,
    measure_correlations,
    neighbour_vectors,
)
from xrayflow.modalities.diffuse.lattice import monte_carlo, random_encoding


def _mc_lattices(dim=8, shape=(32, 32), seed=0):
    v = neighbour_vectors(dim)
    rng = np.random.default_rng(seed)
    return monte_carlo(random_encoding(v, rng), v, rng=rng, shape=shape, n_lattices=2), v


def _direct_intensity(lattices, h, k):
    """(1/N)|Σ_i σ_i exp(2πi(h m_i + k n_i))|², mean over the lattices, at points h × k."""
    s = np.asarray(lattices, float)
    sigma = s - s.mean(axis=(1, 2), keepdims=True)
    m, n = np.arange(s.shape[1]), np.arange(s.shape[2])
    ph = np.exp(2j * np.pi * np.outer(h, m))
    pk = np.exp(2j * np.pi * np.outer(k, n))
    amp = np.einsum("hm,lmn,kn->lhk", ph, sigma, pk)
    return np.mean(np.abs(amp) ** 2, axis=0) / (s.shape[1] * s.shape[2])


@pytest.mark.parametrize("size, h_max", [(32, 1.0), (64, 1.0), (16, 0.5)])
def test_warren_cowley_sum_over_all_displacements_equals_the_fft_intensity(size, h_max):
    mc, _ = _mc_lattices()
    lat = mc.lattices
    amap = correlation_map(lat)
    l0, l1 = amap.shape
    disp = np.array([(m, n) for m in range(l0) for n in range(l1) if (m, n) != (0, 0)])
    c = float(lat.mean())
    closed = warren_cowley_intensity(
        amap[disp[:, 0], disp[:, 1]], disp, c, 3.0, 1.0, size=size, h_max=h_max,
        lattice_shape=lat.shape[1:], mates=False,
    )  # fmt: skip
    fft = diffuse_intensity(lat, 3.0, 1.0, size=size, h_max=h_max)
    np.testing.assert_allclose(closed, fft, rtol=1e-9, atol=1e-9 * fft.max())
    # and both equal the direct sum over the sites at the sampled points, averaged per pixel
    (h, wh), (k, wk) = (sampling(size, h_max, side) for side in lat.shape[1:])
    direct = wh @ (4.0 * _direct_intensity(lat, h, k)) @ wk.T
    np.testing.assert_allclose(fft, direct, rtol=1e-9, atol=1e-9 * fft.max())


def test_uncorrelated_lattice_gives_the_flat_laue_level():
    rng = np.random.default_rng(1)
    c, fa, fb = 0.3, 5.0, 2.0
    lat = (rng.random((8, 64, 64)) < c).astype(np.uint8)
    img = diffuse_intensity(lat, fa, fb, size=64)
    laue = float(np.mean(lat.mean(axis=(1, 2)) * (1 - lat.mean(axis=(1, 2))))) * (fa - fb) ** 2
    keep = ~bragg_mask(64)
    # each pixel: a weighted mean over 8 lattices and 3 × 3 points of independent,
    # exponentially distributed |F|² (relative std 1): relative std sqrt(Σw² / 8)
    w = sampling(64, 1.0, 64)[1][10]
    rel = np.sqrt(np.sum(w**2) ** 2 / 8)
    assert img[keep].mean() == pytest.approx(laue, rel=0.02)
    assert img[keep].std() / laue == pytest.approx(rel, rel=0.1)
    # no structure: nothing beyond the noise
    assert img[keep].max() < laue * (1 + 6 * rel) and img[keep].min() > laue * (1 - 6 * rel)
    # the diffuse intensity vanishes at the Bragg points (Σσ = 0)
    # (at one point a pixel: size 128 samples a 64-site lattice at h = j/64 exactly)
    h = pixel_centres(128, 1.0)
    at_points = diffuse_intensity(lat, size=128)
    integer = np.isclose(h, np.round(h))
    assert np.allclose(at_points[np.ix_(integer, integer)], 0.0, atol=1e-20)
    assert at_points[~bragg_mask(128)].min() > 0


def test_intensity_is_centrosymmetric():
    mc, _ = _mc_lattices(15, seed=3)
    img = diffuse_intensity(mc.lattices, size=64)
    # pixel i sits at h_i = -1 + i/32: -h_i is pixel (64 - i) mod 64
    flipped = np.roll(img[::-1, ::-1], shift=(1, 1), axis=(0, 1))
    np.testing.assert_allclose(img, flipped, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("size, h_max", [(64, 1.0), (48, 1.5), (32, 2.0), (30, 1.0)])
def test_bragg_mask_covers_the_integer_reciprocal_lattice_points(size, h_max):
    m = bragg_mask(size, h_max)
    h = pixel_centres(size, h_max)
    half = h_max / size
    integers = np.arange(np.ceil(-h_max), np.floor(h_max) + 1)
    integers = integers[integers < h_max]  # the grid ends before +h_max
    for g in integers:
        for q in integers:
            i = np.flatnonzero(np.abs(h - g) <= half + 1e-12)
            j = np.flatnonzero(np.abs(h - q) <= half + 1e-12)
            assert i.size and j.size and m[np.ix_(i, j)].all(), (g, q)
    cells = np.abs(h - np.round(h)) <= half + 1e-12
    assert m.sum() == cells.sum() ** 2  # nothing else


def test_form_factors_come_from_xraydb_for_elements():
    import xraydb

    h, k = np.array([0.0, 0.5]), np.array([0.25])
    a = 3.0e-10
    got = form_factor_contrast("Cu", "Au", h, k, a)
    stol = np.hypot(h[:, None], k[None, :]) / (2 * 3.0)
    np.testing.assert_allclose(got, (xraydb.f0("Cu", stol) - xraydb.f0("Au", stol)) ** 2)
    np.testing.assert_allclose(form_factor_contrast(3.0, 1.0, h, k), 4.0)
    with pytest.raises(ConfigError, match="unknown element or ion 'Xx'"):
        form_factor_contrast("Xx", 0.0, h, k, a)
    with pytest.raises(ConfigError, match="lattice_constant"):
        form_factor_contrast("Cu", 0.0, h, k)


def test_poisson_counts_have_the_expected_mean_and_total():
    rng = np.random.default_rng(2)
    intensity = rng.random((16, 16)) + 0.1
    mask = bragg_mask(16, 1.0)
    expected = observe(intensity, 5e4, None, mask)
    assert expected.sum() == pytest.approx(5e4) and np.all(expected[mask] == 0)
    draws = np.stack([observe(intensity, 5e4, rng, mask) for _ in range(400)])
    assert np.all(draws[:, mask] == 0) and np.all(draws == np.round(draws))
    se = np.sqrt(expected / 400)
    assert np.all(np.abs(draws.mean(axis=0) - expected) <= 5 * se + 1e-12)
    assert draws.var(axis=0)[~mask].mean() == pytest.approx(expected[~mask].mean(), rel=0.05)
    n = normalise(draws[0], mask)
    assert n[~mask].mean() == pytest.approx(1.0) and np.all(n[mask] == 0)


def test_expected_image_is_the_closed_form_over_the_encoded_vectors():
    v = neighbour_vectors(8)
    cfg = DiffuseConfig(shape=(32, 32), size=32, counts=1e5)
    alpha = random_encoding(v, np.random.default_rng(4))
    img = expected_image(alpha, v, cfg)
    mask = bragg_mask(32)
    assert img.sum() == pytest.approx(1e5) and np.all(img[mask] == 0)
    wc = warren_cowley_intensity(alpha, v, 0.5, size=32, lattice_shape=(32, 32))
    wc = np.where(mask, 0.0, np.maximum(wc, 0.0))
    np.testing.assert_allclose(img, wc * 1e5 / wc.sum(), rtol=1e-12)
    # zero encoding: the flat Laue pattern
    flat = expected_image(np.zeros(8), v, cfg)
    np.testing.assert_allclose(flat[~mask], 1e5 / (~mask).sum())


def test_simulate_image_matches_its_lattices_and_the_closed_form():
    v = neighbour_vectors(15)
    cfg = DiffuseConfig(shape=(64, 64), size=64, counts=1e7)
    rng = np.random.default_rng(5)
    alpha = random_encoding(v, rng)
    img, achieved, mc = simulate_image(alpha, v, cfg, rng)
    np.testing.assert_allclose(achieved, measure_correlations(mc.lattices, v))
    mask = bragg_mask(64)
    assert np.all(img[mask] == 0) and img.sum() == pytest.approx(1e7, rel=0.01)
    closed = expected_image(achieved, v, cfg)
    r = np.corrcoef(img[~mask], closed[~mask])[0, 1]
    assert r > 0.6  # the encoded vectors carry most of the pattern


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: DiffuseConfig(concentration=1.2), ConfigError, "concentration"),
        (lambda: DiffuseConfig(n_lattices=0), ConfigError, "n_lattices"),
        (lambda: DiffuseConfig(tolerance=0), ConfigError, "tolerance"),
        (lambda: DiffuseConfig(counts=float("inf")), ConfigError, "counts"),
        (lambda: DiffuseConfig(shape=(48, 48)), ConfigError, "lattice side 48"),
        (lambda: DiffuseConfig(f_a="Cu"), ConfigError, "lattice_constant"),
        (lambda: sampling(64, 0.0, 64), ConfigError, "h_max"),
        (lambda: observe(-np.ones((4, 4)), 10.0), DataError, "intensity must be >= 0"),
        (lambda: observe(np.ones((4, 4)), 0.0), ConfigError, "counts must be > 0"),
        (lambda: normalise(np.zeros((4, 4))), DataError, "no counts"),
        (lambda: diffuse_intensity(np.full((8, 8), 0.5)), DataError, "occupancies"),
        (lambda: warren_cowley_intensity([0.1], [[0, 0]], 0.5, mates=False), ConfigError,
         "origin"),
    ],
    ids=["c", "lattices", "tol", "counts", "sampling", "element", "hmax", "negative",
         "zero_counts", "empty", "occupancy", "origin"],
)  # fmt: skip
def test_bad_inputs_raise_naming_the_parameter(call, error, match):
    with pytest.raises(error, match=match):
        call()
