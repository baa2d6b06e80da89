"""Detector model: Poisson statistics, saturation, binning, masks, determinism."""

import numpy as np
import pytest

from xrayflow.detector import Detector, bin_frames, make_mask, poisson_counts
from xrayflow.errors import PhysicsError


def test_poisson_mean_and_variance():
    lam = np.full((200, 200), 7.5)
    c = poisson_counts(lam, rng=0)
    assert c.dtype == np.float32
    assert c.mean() == pytest.approx(7.5, rel=0.01)
    assert c.var() == pytest.approx(7.5, rel=0.03)
    assert np.all(c == np.round(c)) and c.min() >= 0
    with pytest.raises(PhysicsError):
        poisson_counts(-lam, rng=0)


def test_measure_is_poisson_per_pixel_and_deterministic():
    det = Detector((32, 32), 75e-6, 2.0)
    expected = np.linspace(0.5, 50.0, 32 * 32).reshape(32, 32)
    frames = np.stack([det.measure(expected, rng=s) for s in range(400)])
    assert frames.dtype == np.float32 and frames.shape == (400, 32, 32)
    # standardised residuals: mean 0, variance 1 for Poisson
    z = (frames - expected) / np.sqrt(expected)
    assert abs(z.mean()) < 0.01 and z.var() == pytest.approx(1.0, abs=0.02)
    np.testing.assert_array_equal(det.measure(expected, 5), det.measure(expected, 5))
    assert not np.array_equal(det.measure(expected, 5), det.measure(expected, 6))


def test_saturation_clips():
    det = Detector((16, 16), 75e-6, 2.0, saturation=100)
    c = det.measure(np.full((16, 16), 1e4), rng=1)
    assert np.all(c == 100)
    low = det.measure(np.full((16, 16), 5.0), rng=1)
    assert low.max() < 100


def test_binning_conserves_counts():
    a = np.random.default_rng(0).poisson(3.0, size=(2, 12, 18)).astype(float)
    b = bin_frames(a, 3)
    assert b.shape == (2, 4, 6)
    np.testing.assert_allclose(b.sum(axis=(1, 2)), a.sum(axis=(1, 2)))
    det = Detector((16, 16), 55e-6, 5.0, binning=2)
    expected = np.full((16, 16), 20.0)
    c = det.measure(expected, rng=3)
    assert c.shape == (8, 8) == det.binned_shape
    assert c.sum() == pytest.approx(expected.sum(), rel=0.02)
    np.testing.assert_allclose(det.expected_binned(expected), 80.0)
    assert det.binned_pixel_size == (110e-6, 110e-6)
    with pytest.raises(PhysicsError):
        Detector((15, 16), 55e-6, 5.0, binning=2)
    with pytest.raises(PhysicsError, match="zero frequency"):
        Detector((18, 16), 55e-6, 5.0, binning=2)  # 18/2 = 9 is odd


def test_binning_keeps_zero_frequency_at_the_corner():
    det = Detector((16, 16), 55e-6, 5.0, binning=2)
    expected = np.zeros((16, 16))
    expected[0, 0] = 1e6  # DC pixel in the model layout
    out = det.expected_binned(expected)
    assert out[0, 0] == 1e6 and out.sum() == 1e6


def test_mask_gaps_beamstop_and_layout():
    m = make_mask((32, 32), gaps=((0, 10, 2), (1, 20, 1)), beamstop_radius_px=3)
    assert not m[10:12].any() and not m[:, 20].any()
    yy, xx = np.mgrid[:32, :32]
    stop = np.hypot(yy - 16, xx - 16) <= 3
    assert not m[stop].any() and m[16, 16 - 4] and m[16 - 4, 16]
    expected = np.ones((32, 32), bool)
    expected[10:12] = False
    expected[:, 20] = False
    expected[stop] = False
    np.testing.assert_array_equal(m, expected)
    det = Detector((32, 32), 75e-6, 2.0, mask=m)
    c = det.measure(np.full((32, 32), 50.0), rng=0)
    # default layout: DC at (0, 0), so the beamstop sits at the corner of the returned frame
    good = det.good_pixels()
    np.testing.assert_array_equal(good, np.fft.ifftshift(m))
    assert np.all(c[~good] == 0) and np.all(c[good] > 0)
    assert not good[0, 0]
    det_c = Detector((32, 32), 75e-6, 2.0, mask=m, centred=True)
    cc = det_c.measure(np.full((32, 32), 50.0), rng=0)
    assert np.all(cc[~m] == 0) and cc[16, 16] == 0


def test_binned_mask_zeroes_partial_bins():
    m = make_mask((16, 16), gaps=((1, 5, 1),))
    det = Detector((16, 16), 75e-6, 2.0, mask=m, binning=2, centred=True)
    c = det.measure(np.full((16, 16), 40.0), rng=0)
    assert np.all(c[:, 2] == 0) and np.all(c[:, [0, 1, 3]] > 0)
    assert not det.good_pixels()[:, 2].any()
