"""Alignment: global phase, scale, phase ramps (wrapping), sub-pixel shifts, twin, windows."""

import numpy as np
import pytest
from scipy import ndimage

from xrayflow.evaluate import alignment as al


def _smooth(rng, shape, sigma=2.5):
    return ndimage.gaussian_filter(rng.standard_normal(shape), sigma)


def _object(rng, shape, sigma=2.5):
    """A smooth complex object: amplitude ~ 0.6-1, phase of a few radians."""
    amp = 0.8 + 2.0 * _smooth(rng, shape, sigma)
    return np.clip(amp, 0.3, 1.2) * np.exp(1j * 3.0 * _smooth(rng, shape, sigma) * 4)


def test_remove_global_phase_closed_form():
    rng = np.random.default_rng(0)
    ref = _object(rng, (48, 40))
    est = ref * np.exp(1j * 2.3)
    out = al.remove_global_phase(est, ref)
    np.testing.assert_allclose(out, ref, atol=1e-12)
    # c = <est, ref>/|<est, ref>| is unit modulus: the amplitude is untouched
    np.testing.assert_allclose(np.abs(out), np.abs(est), atol=1e-12)


def test_complex_scale_least_squares():
    rng = np.random.default_rng(1)
    ref = _object(rng, (32, 32))
    est = ref / (0.7 * np.exp(-0.4j))
    c = al.complex_scale(est, ref)
    assert c == pytest.approx(0.7 * np.exp(-0.4j), rel=1e-12)
    np.testing.assert_allclose(al.remove_scale(est, ref), ref, atol=1e-12)


def test_phase_ramp_removed_exactly():
    rng = np.random.default_rng(2)
    ref = _object(rng, (64, 80))
    y, x = np.mgrid[:64, :80]
    est = ref * np.exp(1j * (0.4 + 0.05 * y - 0.03 * x))
    c = al.fit_phase_ramp(est, ref)
    np.testing.assert_allclose(c[1:], [0.05, -0.03], atol=1e-9)
    out = al.remove_phase_ramp(est, ref)
    np.testing.assert_allclose(out, ref, atol=1e-9)


def test_wrapping_phase_ramp_with_noise():
    """A ramp of several cycles across the field (wraps many times) plus phase noise."""
    rng = np.random.default_rng(3)
    ref = _object(rng, (96, 96))
    y, x = np.mgrid[:96, :96]
    slopes = (0.61, -0.83)  # rad/px: ~9 and ~13 wraps across the image
    noise = 0.3 * rng.standard_normal(ref.shape)
    est = ref * np.exp(1j * (slopes[0] * y + slopes[1] * x + 1.0 + noise))
    c = al.fit_phase_ramp(est, ref)
    np.testing.assert_allclose(c[1:], slopes, atol=2e-4)
    resid = np.angle(al.remove_phase_ramp(est, ref) * np.conj(ref))
    assert np.sqrt(np.mean((resid - noise) ** 2)) < 0.01


def test_phase_ramp_magnitude_weighting():
    """Pixels with zero weight (amplitude) do not influence the fit."""
    rng = np.random.default_rng(4)
    ref = _object(rng, (64, 64))
    y, x = np.mgrid[:64, :64]
    est = ref * np.exp(1j * (0.02 * y + 0.07 * x))
    est[:, :20] = 5.0 * np.exp(1j * rng.uniform(-np.pi, np.pi, (64, 20)))  # garbage
    w = np.ones(ref.shape)
    w[:, :20] = 0.0
    c = al.fit_phase_ramp(est, ref, weights=w)
    np.testing.assert_allclose(c[1:], [0.02, 0.07], atol=1e-9)


def test_shared_ramp_over_slices():
    rng = np.random.default_rng(5)
    ref = _object(rng, (3, 40, 48))
    y, x = np.mgrid[:40, :48]
    est = ref * np.exp(1j * (0.1 * y - 0.2 * x))[None]
    c = al.fit_phase_ramp(est, ref, axes=(-2, -1))
    np.testing.assert_allclose(c[1:], [0.1, -0.2], atol=1e-9)


def test_fourier_shift_integer_is_roll():
    a = np.random.default_rng(6).standard_normal((16, 20))
    np.testing.assert_allclose(
        al.fourier_shift(a, [3, -5]), np.roll(a, (3, -5), (0, 1)), atol=1e-12
    )


@pytest.mark.parametrize("shift", [(0.37, -1.21), (-3.73, 2.06), (5.5, 0.013)])
def test_register_subpixel_recovers_shift(shift):
    """Non-periodic crops of a shifted complex object: shift recovered to 0.02 px."""
    rng = np.random.default_rng(7)
    big = _object(rng, (192, 192), sigma=3)
    moved = al.fourier_shift(big, shift)
    ref = big[32:160, 32:160]
    est = moved[32:160, 32:160]
    aligned, s = al.register_subpixel(est, ref, upsample=100)
    np.testing.assert_allclose(s, -np.asarray(shift), atol=0.02)
    inner = (slice(12, -12), slice(12, -12))
    err = np.linalg.norm(aligned[inner] - ref[inner]) / np.linalg.norm(ref[inner])
    assert err < 0.02


def test_register_subpixel_matches_skimage():
    reg = pytest.importorskip("skimage.registration")
    rng = np.random.default_rng(8)
    ref = ndimage.gaussian_filter(rng.standard_normal((128, 128)), 3, mode="wrap")
    est = al.fourier_shift(ref, (1.42, -2.77))  # periodic: both methods are exact here
    _, s = al.register_subpixel(est, ref)
    sk, _, _ = reg.phase_cross_correlation(ref, est, upsample_factor=100, normalization=None)
    np.testing.assert_allclose(s, sk, atol=0.011)
    np.testing.assert_allclose(s, (-1.42, 2.77), atol=0.006)


def test_register_3d():
    rng = np.random.default_rng(9)
    big = _object(rng, (48, 48, 48), sigma=2)
    ref = big[8:40, 8:40, 8:40]
    est = al.fourier_shift(big, (0.6, -1.3, 2.25))[8:40, 8:40, 8:40]
    _, s = al.register_subpixel(est, ref)
    np.testing.assert_allclose(s, (-0.6, 1.3, -2.25), atol=0.03)


def test_align_removes_everything():
    rng = np.random.default_rng(10)
    big = _object(rng, (160, 160), sigma=3)
    ref = big[16:144, 16:144]
    y, x = np.mgrid[:128, :128]
    est = al.fourier_shift(big, (2.31, -0.64))[16:144, 16:144]
    est = 1.7 * np.exp(0.9j) * est * np.exp(1j * (0.21 * y - 0.12 * x))
    out, info = al.align(est, ref)
    np.testing.assert_allclose(info["shift_px"], (-2.31, 0.64), atol=0.02)
    np.testing.assert_allclose(info["ramp_rad_per_px"], (0.21, -0.12), atol=1e-3)  # removed
    assert info["scale"] == pytest.approx(1 / 1.7, rel=1e-2)
    inner = (slice(10, -10), slice(10, -10))
    err = np.linalg.norm(out[inner] - ref[inner]) / np.linalg.norm(ref[inner])
    assert err < 0.02


def test_twin_definition():
    a = np.random.default_rng(11).standard_normal((5, 6, 7)) + 0j
    t = al.twin(a)
    i, j, k = 1, 4, 6
    assert t[i, j, k] == np.conj(a[-i % 5, -j % 6, -k % 7])
    np.testing.assert_allclose(al.twin(t), a)
    # the Fourier transform of the twin is the conjugate of the transform
    np.testing.assert_allclose(np.fft.fftn(t), np.conj(np.fft.fftn(a)), atol=1e-10)


def _crystal(n=32):
    z, y, x = np.mgrid[:n, :n, :n] - n / 2
    shape = (np.abs(z) + np.abs(0.8 * y) + np.abs(1.3 * x) < 9) & (x + 2 * y < 8)
    rho = ndimage.gaussian_filter(shape.astype(float), 0.7)
    return rho * np.exp(1j * (0.0125 * x * y + 0.3 * np.sin(z / 3)))


def test_conjugate_twin_recovered_3d():
    rho = _crystal()
    est = al.fourier_shift(al.twin(rho), (1.3, -2.2, 0.6)) * np.exp(1.1j)
    chosen, is_twin = al.remove_twin(est, rho)
    assert is_twin
    out, info = al.align(est, rho, twin_check=True)
    assert info["twin"] is True
    assert np.linalg.norm(out - rho) / np.linalg.norm(rho) < 1e-6
    # the direct solution is kept when it is the better one
    out2, info2 = al.align(al.fourier_shift(rho, (0.4, 0.0, -1.0)), rho, twin_check=True)
    assert info2["twin"] is False
    assert np.linalg.norm(out2 - rho) / np.linalg.norm(rho) < 1e-6


def test_tukey_window_crop_mask():
    w = al.tukey_window((32, 40), 8)
    assert w.shape == (32, 40)
    assert w[16, 20] == 1.0
    assert 0 < w[0, 20] < 0.05 and w[8:24, 8:32].min() == 1.0
    np.testing.assert_allclose(w, w[::-1, ::-1])
    assert al.tukey_window((10,), 0).min() == 1.0
    a = np.arange(100).reshape(10, 10)
    assert al.crop(a, 2).shape == (6, 6)
    assert al.crop(a, (1, 3)).shape == (8, 4)
    with pytest.raises(ValueError):
        al.crop(a, 5)
    ref = np.ones((4, 4)) * 1.0
    ref[0, 0] = 0.01
    m = al.phase_mask(ref, 0.05)
    assert not m[0, 0] and m.sum() == 15


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape mismatch"):
        al.remove_global_phase(np.ones((4, 4)), np.ones((4, 5)))
