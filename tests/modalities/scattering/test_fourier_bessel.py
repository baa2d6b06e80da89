"""Fourier–Bessel coefficients of scattering images: accuracy, rotation, missing data."""

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.special import jn_zeros, jv

from xrayflow.modalities.scattering.fourier_bessel import FourierBessel


def polar_grid(shape, center):
    """Radius (px) and angle (rad, from +x towards +y) of every pixel about ``center``."""
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(float)
    return np.hypot(yy - center[0], xx - center[1]), np.arctan2(yy - center[0], xx - center[1])


def basis_image(c, shape, center, radius):
    """Re Σ (2 - δ_m0) c_mn J_m(j_mn r/R) e^{imθ} inside the disc, from scipy's J_m."""
    r, theta = polar_grid(shape, center)
    out = np.zeros(shape)
    for m, n in zip(*np.nonzero(c), strict=True):
        j = jn_zeros(m, n + 1)[n]
        term = c[m, n] * jv(m, j * r / radius) * np.exp(1j * m * theta)
        out += (1.0 if m == 0 else 2.0) * term.real
    out[r >= radius] = 0.0
    return out


def ring(r, r0, sigma):
    return np.exp(-((r - r0) ** 2) / (2.0 * sigma**2))


def test_band_limited_coefficients_are_recovered_and_reconstructed():
    rng = np.random.default_rng(1)
    fb = FourierBessel(m_orders=6, n_orders=8)
    shape, center, radius = (256, 256), (128.3, 126.6), 120.0
    c = np.zeros((6, 8), complex)
    c[:4, :5] = rng.standard_normal((4, 5)) + 1j * rng.standard_normal((4, 5))
    c[0] = c[0].real
    image = basis_image(c, shape, center, radius)
    est = fb.coefficients(image, center, radius=radius)
    assert est.shape == (6, 8) and est.dtype == np.complex128
    # bilinear resampling shrinks order (m, n) by about (j_mn / R)² / 12 <= 2.5e-3 here
    assert np.abs(est - c).max() <= 5e-3 * np.abs(c).max()
    rec = fb.reconstruct(c, center, shape, radius)
    assert np.abs(rec - image).max() <= 1e-5 * np.abs(image).max()


def test_reconstruction_of_rings_and_dipole():
    fb = FourierBessel(m_orders=4, n_orders=30)
    shape, center, radius = (256, 256), (127.6, 128.2), 120.0
    r, theta = polar_grid(shape, center)
    image = (
        ring(r, 40.0, 6.0) + 0.7 * ring(r, 75.0, 5.0) + ring(r, 55.0, 10.0) * np.cos(theta - 0.7)
    )
    rec = fb.reconstruct(fb.coefficients(image, center, radius=radius), center, shape, radius)
    inside = r < radius
    err = np.linalg.norm((rec - image)[inside]) / np.linalg.norm(image[inside])
    assert err < 1e-2
    assert np.all(rec[~inside] == 0.0)


def anisotropic_image(shape, center, phi):
    """Rings with 2- and 3-fold modulation plus a spot, rotated by ``phi`` about ``center``."""
    r, theta = polar_grid(shape, center)
    t = theta - phi
    spot = np.exp(-((r * np.cos(t) - 30.0) ** 2 + (r * np.sin(t) + 45.0) ** 2) / (2.0 * 6.0**2))
    return (
        ring(r, 35.0, 5.0) * (1.0 + 0.6 * np.cos(2.0 * (t - 0.3)))
        + ring(r, 70.0, 7.0) * (0.5 + 0.4 * np.cos(3.0 * (t + 0.5)))
        + 0.8 * spot
    )


def test_rotation_changes_only_phases():
    fb = FourierBessel(m_orders=8, n_orders=20)
    shape, center, radius, phi = (256, 256), (127.4, 128.8), 110.0, 0.9
    c0 = fb.coefficients(anisotropic_image(shape, center, 0.0), center, radius=radius)
    c1 = fb.coefficients(anisotropic_image(shape, center, phi), center, radius=radius)
    scale = np.abs(c0).max()
    assert np.abs(np.abs(c1) - np.abs(c0)).max() <= 5e-4 * scale
    m = np.arange(8)[:, None] * np.ones((1, 20), int)
    big = (np.abs(c0) > 0.02 * scale) & (m >= 1)
    assert set(m[big]) == set(range(1, 8))
    shift = np.angle(c1 * np.conj(c0) * np.exp(1j * m * phi))  # c_mn -> c_mn e^{-imφ}
    assert np.abs(shift[big]).max() <= 3e-3
    f0, f1 = fb.features(c0, phase=True), fb.features(c1, phase=True)
    assert f0.shape == (2, 8, 20) and f0.dtype == np.float32
    np.testing.assert_allclose(
        fb.features(c0[None])[0, 0], np.log1p(np.abs(c0)) / np.log(65536), rtol=1e-6
    )
    np.testing.assert_allclose(f1[0], f0[0], atol=5e-5)
    both = big & np.roll(big, 1, axis=1)
    both[:, 0] = False
    np.testing.assert_allclose(f1[1][both], f0[1][both], atol=1e-3)


def isotropic_profile(r):
    return ring(r, 80.0, 5.0) + 0.6 * ring(r, 140.0, 8.0) + 0.3 * ring(r, 190.0, 6.0)


def test_masked_sector_off_image_centre_keeps_isotropic_coefficients():
    fb = FourierBessel(m_orders=5, n_orders=30)
    radius = 230.0
    big_center = (256.3, 255.7)
    full = isotropic_profile(polar_grid((512, 512), big_center)[0])
    ref = fb.coefficients(full, big_center, radius=radius)

    shape, center = (300, 400), (-25.5, 180.2)
    r, theta = polar_grid(shape, center)
    image = isotropic_profile(r)
    mask = ~((theta > 1.0) & (theta < 1.7))  # a 40° wedge (beamstop arm)
    mask[100:106] = False  # a detector gap
    image[~mask] = np.nan  # values in bad pixels must be ignored
    est = fb.coefficients(image, center, mask, radius=radius)
    assert np.abs(est[0] - ref[0]).max() <= 1e-3 * np.abs(ref[0]).max()

    polar = fb.polar(image, center, mask)
    assert polar.radius == pytest.approx(r[mask].max(), abs=1e-9)
    frac = fb.polar(image, center, mask, radius).valid_fraction
    radii = fb.polar(image, center, mask, radius).radii
    assert np.all(frac[radii < 25.0] == 0.0) and 0.1 < frac[radii > 60.0].min()
    assert frac.max() < 0.5  # the disc about an off-image centre is at most half on the detector


@pytest.mark.parametrize("n", [1, 4])
def test_m0_coefficients_match_a_numerical_hankel_projection(n):
    fb = FourierBessel(m_orders=2, n_orders=6)
    shape, center, radius = (256, 256), (127.3, 128.6), 100.0

    def profile(r):
        return ring(r, 50.0, 8.0) + 0.5 * np.exp(-(r**2) / (2.0 * 15.0**2))

    image = profile(polar_grid(shape, center)[0])
    c = fb.coefficients(image, center, radius=radius)
    j = jn_zeros(0, n)[-1]
    integral = quad(lambda r: profile(r) * jv(0, j * r / radius) * r, 0.0, radius, limit=200)[0]
    expected = 2.0 * integral / (radius**2 * jv(1, j) ** 2)
    bias = (j / radius) ** 2 / 12.0  # shrinkage by bilinear resampling at wavenumber j/R
    assert abs(c[0, n - 1] - expected) <= (3.0 * bias + 1e-4) * abs(expected)


def test_signed_m0_row_keeps_the_radial_profile_that_magnitudes_lose():
    fb = FourierBessel(m_orders=3, n_orders=30)
    shape, center, radius = (256, 256), (127.6, 128.2), 120.0
    r, theta = polar_grid(shape, center)
    image = 50.0 * ring(r, 40.0, 6.0) + 20.0 * ring(r, 85.0, 9.0) * (1.0 + 0.5 * np.cos(theta))
    c = fb.coefficients(image, center, radius=radius)
    signed, plain = fb.features(c, signed=True)[0], fb.features(c)[0]
    np.testing.assert_array_equal(signed[1:], plain[1:])  # m >= 1 rows: magnitudes only
    np.testing.assert_array_equal(np.abs(signed[0]), plain[0])
    assert (signed[0] < 0).sum() >= 5  # the m = 0 coefficients of rings change sign

    def profile(f0):  # m = 0 coefficients back from the features, then the radial profile
        c0 = np.zeros_like(c)
        c0[0] = np.sign(f0) * np.expm1(np.abs(f0).astype(np.float64) * np.log(65536.0))
        return fb.reconstruct(c0, center, shape, radius)

    average = 50.0 * ring(r, 40.0, 6.0) + 20.0 * ring(r, 85.0, 9.0)  # azimuthal mean
    inside = r < radius
    err = [
        np.linalg.norm((profile(f) - average)[inside]) / np.linalg.norm(average[inside])
        for f in (signed[0], plain[0])
    ]
    assert err[0] < 0.01 < 0.5 < err[1]  # float32 features: ~1e-6 relative per coefficient
    # a rotation leaves the signed row unchanged (c_0n is real and rotation invariant)
    c_rot = fb.coefficients(
        50.0 * ring(r, 40.0, 6.0) + 20.0 * ring(r, 85.0, 9.0) * (1.0 + 0.5 * np.cos(theta - 1.1)),
        center,
        radius=radius,
    )
    np.testing.assert_allclose(fb.features(c_rot, signed=True)[0, 0], signed[0], atol=2e-4)
    # units: log(1 + |c|/unit)/log(full_scale/unit)
    np.testing.assert_allclose(
        fb.features(c, full_scale=1.0, unit=1e-3)[0],
        np.log1p(np.abs(c) / 1e-3) / np.log(1e3),
        rtol=1e-6,
    )


def test_views_of_one_frame_equal_their_separate_coefficients():
    rng = np.random.default_rng(4)
    fb = FourierBessel(m_orders=5, n_orders=9)
    counts = rng.poisson(50.0, (3, 60, 80)).astype(float)
    views = np.stack([counts, np.log1p(counts)], axis=1)
    centers = np.array([[30.2, 40.7], [-8.0, 50.0], [25.5, 90.0]])
    masks = rng.random((3, 60, 80)) > 0.1
    both = fb.coefficients(views, centers, masks, workers=2)
    assert both.shape == (3, 2, 5, 9)
    for k in range(2):
        np.testing.assert_array_equal(both[:, k], fb.coefficients(views[:, k], centers, masks))
    views[1, 1, 3, 4] = np.nan
    with pytest.raises(ValueError, match="image 1 has non-finite"):
        fb.coefficients(views, centers)


def test_batch_equals_single_and_is_deterministic():
    rng = np.random.default_rng(3)
    fb = FourierBessel(m_orders=6, n_orders=10)
    images = rng.random((3, 90, 120)) * 100.0
    centers = np.array([[40.2, 60.7], [-10.0, 50.0], [45.5, 130.0]])
    masks = rng.random((3, 90, 120)) > 0.05
    batch = fb.coefficients(images, centers, masks, workers=2)
    assert batch.shape == (3, 6, 10)
    for b in range(3):
        np.testing.assert_array_equal(batch[b], fb.coefficients(images[b], centers[b], masks[b]))
    np.testing.assert_array_equal(fb.coefficients(images, centers, masks, workers=1), batch)
    shared = fb.coefficients(images, centers, masks[0], radius=[70.0, 80.0, 90.0])
    alone = fb.coefficients(images[2], centers[2], masks[0], radius=90.0)
    np.testing.assert_array_equal(shared[2], alone)


def test_errors_name_the_problem():
    fb = FourierBessel(m_orders=3, n_orders=4)
    images = np.ones((2, 32, 32))
    images[1, 5, 7] = np.inf
    with pytest.raises(ValueError, match="image 1 has non-finite"):
        fb.coefficients(images, (16.0, 16.0))
    mask = np.ones((32, 32), bool)
    mask[5, 7] = False
    assert np.all(np.isfinite(fb.coefficients(images, (16.0, 16.0), mask)))
    with pytest.raises(ValueError, match="image 0 has no good pixel"):
        fb.coefficients(images[0], (16.0, 16.0), np.zeros((32, 32), bool))
    with pytest.raises(ValueError, match="masks must be"):
        fb.coefficients(images, (16.0, 16.0), np.ones((2, 32, 31), bool))
    with pytest.raises(ValueError, match="centers must be"):
        fb.coefficients(images, np.zeros((3, 2)))
    with pytest.raises(ValueError, match="radius must be"):
        fb.coefficients(images, (16.0, 16.0), radius=[10.0, 20.0, 30.0])
    with pytest.raises(ValueError, match="coeffs must be"):
        fb.reconstruct(np.zeros((4, 3)), (16.0, 16.0), (32, 32), 10.0)
    with pytest.raises(ValueError, match="n_theta"):
        FourierBessel(m_orders=10, n_theta=16)
