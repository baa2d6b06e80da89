"""Fourier ring/shell correlation, thresholds and resolution against closed forms."""

import numpy as np
import pytest

from xrayflow.evaluate import frc as F


def test_frc_self_is_one_everywhere():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((64, 64)) + 1j * rng.standard_normal((64, 64))
    radii, curve, n = F.frc(a, a)
    assert len(curve) == 33 and radii[-1] == 32
    np.testing.assert_allclose(curve, 1.0, atol=1e-12)
    assert n[0] == 1 and n.sum() == np.sum(F._ring_index((64, 64)) <= 32)
    # real images, 3D shells, non-square arrays, and scaled copies
    b = rng.standard_normal((40, 48))
    np.testing.assert_allclose(F.frc(b, 3.0 * b).curve, 1.0, atol=1e-12)
    v = rng.standard_normal((24, 24, 24))
    r3, c3, n3 = F.fsc(v, v)
    np.testing.assert_allclose(c3, 1.0, atol=1e-12)
    assert n3[1] == 6 + 12 + 8 - 8  # |k| rounds to 1 for the 6 faces and 12 edges (sqrt 2)


def test_frc_ring_counts_approx_2_pi_r():
    _, _, n = F.frc(np.ones((256, 256)), np.ones((256, 256)))
    r = np.arange(10, 120)
    np.testing.assert_allclose(n[r] / (2 * np.pi * r), 1.0, atol=0.15)  # lattice jitter
    assert n[r].sum() / (2 * np.pi * r.sum()) == pytest.approx(1.0, abs=0.005)


def test_frc_of_independent_noise_is_small():
    rng = np.random.default_rng(1)
    shape = (256, 256)
    a = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    b = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    _, c, n = F.frc(a, b)
    ok = n >= 8
    # |sum of n unit-variance complex products| / n has mean sqrt(pi/(4n)), sd ~ 0.52/sqrt(n)
    z = c[ok] * np.sqrt(n[ok])
    assert np.all(z < 4.0)
    assert np.mean(z) == pytest.approx(np.sqrt(np.pi) / 2, rel=0.1)
    # real noise: half the Fourier pixels are independent (Hermitian symmetry)
    ar, br = rng.standard_normal(shape), rng.standard_normal(shape)
    _, cr, nr = F.frc(ar, br)
    assert np.all(cr[ok] * np.sqrt(nr[ok] / 2) < 4.5)


def test_half_bit_threshold_formula_and_limits():
    assert F.half_bit_threshold(1) == pytest.approx(1.0, abs=1e-4)
    assert F.half_bit_threshold(1e16) == pytest.approx(0.2071 / 1.2071, abs=1e-6)
    assert 0.2071 / 1.2071 == pytest.approx(0.1716, abs=1e-4)
    n = np.array([1, 4, 9, 100, 1000, 12345])
    s = np.sqrt(n)
    np.testing.assert_allclose(
        F.half_bit_threshold(n), (0.2071 + 1.9102 / s) / (1.2071 + 0.9102 / s), rtol=1e-15
    )
    # not the 1/n or 1.2701 variants found in public code
    assert F.half_bit_threshold(100) == pytest.approx((0.2071 + 0.19102) / (1.2071 + 0.09102))
    assert np.all(np.diff(F.half_bit_threshold(np.arange(1, 1000))) < 0)
    assert F.one_bit_threshold(1) == pytest.approx(1.0, abs=1e-4)
    assert F.one_bit_threshold(1e16) == pytest.approx(1 / 3, abs=1e-6)
    assert F.threshold_curve("1/7", n)[0] == pytest.approx(1 / 7)
    assert F.threshold_curve("0.5", n)[3] == 0.5
    np.testing.assert_array_equal(F.threshold_curve("half_bit", n), F.half_bit_threshold(n))
    with pytest.raises(ValueError):
        F.threshold_curve("bogus", n)


def test_resolution_interpolation_closed_form():
    # curve falls linearly from 1 at ring 0 to 0 at ring 32 (of a 64-px image)
    curve = 1.0 - np.arange(33) / 32.0
    r = F.resolution(curve, 0.5, pixel_size=10e-9)
    assert r.crossed
    assert r.frequency == pytest.approx(16 / 64)  # exactly half-way, ring 16
    assert r.fraction_of_nyquist == pytest.approx(0.5)
    assert r.half_period_px == pytest.approx(2.0)  # dx / fraction of Nyquist
    assert r.full_period_px == pytest.approx(4.0)
    assert r.half_period_m == pytest.approx(20e-9)
    assert r.full_period_m == pytest.approx(40e-9)
    # sub-bin: threshold between rings 20 and 21
    t = 1.0 - 20.25 / 32.0
    assert F.resolution(curve, t).frequency == pytest.approx(20.25 / 64)
    # never crossing: Nyquist limit, flagged
    r2 = F.resolution(np.ones(33), 0.5, pixel_size=1.0)
    assert not r2.crossed and r2.half_period_px == pytest.approx(1.0)
    # per-ring threshold arrays and named thresholds
    n = np.maximum(1, np.round(2 * np.pi * np.arange(33))).astype(int)
    a = F.resolution(curve, F.half_bit_threshold(n))
    b = F.resolution(curve, "half_bit", n_per_ring=n)
    assert a == b and a.crossed


def _pair_with_frc(shape, target, rng):
    """b such that the FRC of (a, b) is exactly ``target`` per ring (complex images)."""
    a = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    fa = np.fft.fft2(a)
    g = np.fft.fft2(rng.standard_normal(shape) + 1j * rng.standard_normal(shape))
    idx = F._ring_index(shape)
    fb = np.zeros_like(fa)
    for r in range(idx.max() + 1):
        m = idx == r
        u = fa[m]
        v = g[m]
        if r >= len(target):
            fb[m] = v
            continue
        if u.size == 1:
            fb[m] = u
            continue
        v = v - np.vdot(u, v) / np.vdot(u, u) * u  # orthogonal to u in this ring
        v *= np.linalg.norm(u) / np.linalg.norm(v)
        t = target[r]
        fb[m] = t * u + np.sqrt(1 - t * t) * v
    return a, np.fft.ifft2(fb)


def test_resolution_of_known_pair():
    rng = np.random.default_rng(2)
    target = np.clip(1.0 - np.arange(33) / 24.0, 0.0, 1.0)  # crosses 0.5 at ring 12
    a, b = _pair_with_frc((64, 64), target, rng)
    _, c, n = F.frc(a, b)
    np.testing.assert_allclose(c[1:], target[1:], atol=1e-10)
    r = F.resolution(c, 0.5, pixel_size=5e-9)
    assert r.frequency == pytest.approx(12 / 64, abs=1e-9)
    assert r.half_period_px == pytest.approx(64 / 24)
    assert r.half_period_m == pytest.approx(5e-9 * 64 / 24)


def test_band_limited_noisy_pair():
    """Shared signal below radius 20, independent noise: FRC drops at ring ~20."""
    rng = np.random.default_rng(3)
    shape = (128, 128)
    idx = F._ring_index(shape)
    sig = np.fft.ifft2(np.where(idx <= 20, 30.0, 0.0) * np.fft.fft2(rng.standard_normal(shape)))
    a = sig + rng.standard_normal(shape)
    b = sig + rng.standard_normal(shape)
    _, c, n = F.frc(a, b)
    assert np.all(c[1:20] > 0.95)
    assert np.all(c[22:] < 0.3)
    for thr in (0.5, 1 / 7):
        r = F.resolution(c, thr)
        assert 20 / 128 <= r.frequency <= 21 / 128
    rh = F.resolution(c, F.half_bit_threshold(n))
    assert 20 / 128 <= rh.frequency <= 21 / 128


def test_frc_shape_mismatch():
    with pytest.raises(ValueError, match="shape mismatch"):
        F.frc(np.ones((8, 8)), np.ones((8, 9)))
