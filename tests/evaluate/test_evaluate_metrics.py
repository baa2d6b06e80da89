"""SSIM and PSNR against scikit-image; R^2 and mAP against hand-computed values."""

import numpy as np
import pytest

from xrayflow.evaluate import metrics as me

skm = pytest.importorskip("skimage.metrics")


def _sk_ssim(a, b, dr):
    return skm.structural_similarity(
        a, b, data_range=dr, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )


def _images():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :80]
    smooth = np.sin(xx / 7.0) * np.cos(yy / 5.0)
    yield smooth, smooth + 0.1 * rng.standard_normal(smooth.shape), 2.0
    img = rng.random((50, 47))
    yield img, np.clip(img + 0.05 * rng.standard_normal(img.shape), 0, 1), 1.0
    phase = rng.uniform(-np.pi, np.pi, (32, 33))
    yield phase, phase + 0.3 * rng.standard_normal(phase.shape), 2 * np.pi
    amp = 1000.0 * rng.random((40, 40))
    yield amp, 0.9 * amp + 5.0, float(amp.max() - amp.min())
    vol = rng.random((16, 20, 24))
    yield vol, vol + 0.2 * rng.standard_normal(vol.shape), 1.0
    vol2 = rng.standard_normal((12, 12, 12))
    yield vol2, vol2[::-1], 7.5


@pytest.mark.parametrize("case", range(6))
def test_ssim_psnr_match_skimage(case):
    a, b, dr = list(_images())[case]
    assert me.ssim(a, b, dr) == pytest.approx(_sk_ssim(a, b, dr), rel=1e-6, abs=1e-12)
    assert me.psnr(a, b, dr) == pytest.approx(
        skm.peak_signal_noise_ratio(a, b, data_range=dr), rel=1e-6
    )


def test_ssim_float32_inputs_are_computed_in_float64():
    rng = np.random.default_rng(1)
    a = rng.random((30, 30))
    b = a + 0.1 * rng.standard_normal(a.shape)
    assert me.ssim(a.astype(np.float32), b.astype(np.float32), 1.0) == pytest.approx(
        _sk_ssim(
            a.astype(np.float32).astype(np.float64), b.astype(np.float32).astype(np.float64), 1.0
        ),
        rel=1e-6,
    )


def test_ssim_identity_and_requirements():
    rng = np.random.default_rng(2)
    a = rng.random((20, 20))
    assert me.ssim(a, a, 1.0) == pytest.approx(1.0, abs=1e-12)
    assert me.ssim(a, a, 1.0, mask=a > 0.5) == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="data_range"):
        me.ssim(a, a, None)
    with pytest.raises(ValueError, match="data_range"):
        me.ssim(a, a, 0.0)
    with pytest.raises(ValueError, match=">= 11"):
        me.ssim(a[:8], a[:8], 1.0)
    with pytest.raises(ValueError, match="real"):
        me.ssim(a + 0j, a, 1.0)
    with pytest.raises(TypeError):
        me.ssim(a, a)  # data_range has no default


def test_psnr_closed_form():
    a = np.zeros((4, 4))
    b = np.full((4, 4), 0.1)
    assert me.psnr(a, b, 1.0) == pytest.approx(20.0)  # 10 log10(1 / 0.01)
    assert me.psnr(a, b, 2 * np.pi) == pytest.approx(10 * np.log10((2 * np.pi) ** 2 / 0.01))
    assert me.psnr(a, a, 1.0) == float("inf")


def test_r2_hand_computed():
    y = np.array([3.0, -0.5, 2.0, 7.0])
    p = np.array([2.5, 0.0, 2.0, 8.0])
    # SS_res = 0.25 + 0.25 + 0 + 1 = 1.5; mean 2.875; SS_tot = 0.015625+11.390625+0.765625+17.015625
    assert me.r2_score(y, p) == pytest.approx(1 - 1.5 / 29.1875)
    assert me.r2_score(y, y) == 1.0
    assert me.r2_score(y, np.full(4, y.mean())) == pytest.approx(0.0)
    Y = np.stack([y, 2 * y], axis=1)
    P = np.stack([p, 2 * y], axis=1)
    np.testing.assert_allclose(
        me.r2_score(Y, P, multioutput="raw_values"), [1 - 1.5 / 29.1875, 1.0]
    )
    assert me.r2_score(Y, P) == pytest.approx((1 - 1.5 / 29.1875 + 1.0) / 2)
    # constant target: 1 if perfect, else 0 (scikit-learn's force_finite)
    assert me.r2_score([1.0, 1.0], [1.0, 1.0]) == 1.0
    assert me.r2_score([1.0, 1.0], [1.0, 2.0]) == 0.0


def test_average_precision_hand_computed():
    # scores sorted: 0.8(+) 0.4(-) 0.35(+) 0.1(-): P = 1, 1/2, 2/3, 1/2; R = 1/2, 1/2, 1, 1
    # AP = 1/2*1 + 0 + 1/2*2/3 + 0 = 0.8333 (the scikit-learn documentation example)
    assert me.average_precision([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(
        0.8333333333333333
    )
    assert me.average_precision([1, 0, 1], [0.9, 0.5, 0.5]) == pytest.approx(
        0.5 * 1.0 + 0.5 * (2 / 3)  # tie at 0.5 counts as one threshold
    )
    assert np.isnan(me.average_precision([0, 0], [0.2, 0.3]))


def test_mean_average_precision_hand_computed():
    labels = np.array([0, 1, 2, 2, 1, 0])
    scores = np.array(
        [
            [0.9, 0.05, 0.05],
            [0.2, 0.7, 0.1],
            [0.1, 0.2, 0.7],
            [0.5, 0.1, 0.4],
            [0.3, 0.3, 0.4],
            [0.4, 0.4, 0.2],
        ]
    )
    # class 0 scores 0.9+,0.5-,0.4+,0.3-,0.2-,0.1-: AP = 1/2 + 1/2*2/3 = 5/6
    # class 1 scores 0.7+,0.4-,0.3+,0.2-,0.1-,0.05-: AP = 1/2 + 1/2*2/3 = 5/6
    # class 2 scores 0.7+,0.4(+,-) tie,0.2-,0.1-,0.05-: AP = 1/2*1 + 1/2*2/3 = 5/6
    m, per = me.mean_average_precision(labels, scores, per_class=True)
    np.testing.assert_allclose(per, [5 / 6, 5 / 6, 5 / 6])
    assert m == pytest.approx(5 / 6)
    onehot = np.eye(3)[labels]
    assert me.mean_average_precision(onehot, scores) == pytest.approx(5 / 6)
    perfect = np.eye(3)[labels] + 0.01
    assert me.mean_average_precision(labels, perfect) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        me.mean_average_precision(labels, scores[:, :2])
