"""The evaluation restricted to the illuminated region of a reconstruction."""

import h5py
import numpy as np

from xrayflow.evaluate.report import evaluate, illumination_map, read_object


def test_illumination_map_sums_probe_power_and_clips_at_edges():
    probe = np.ones((2, 4, 4)) * np.sqrt(0.5)  # two modes, |P|^2 sums to 1 per pixel
    corners = np.array([[0, 0], [2, 2], [10, 10]])  # the last one is half outside
    illum = illumination_map(probe, corners, (12, 12))
    np.testing.assert_allclose(illum.sum(), 16 + 16 + 4)
    np.testing.assert_allclose(illum[[2, 0, 11, 7], [2, 0, 11, 7]], [2, 1, 1, 0])


def _star(n):
    y, x = np.mgrid[:n, :n] - n / 2
    return np.exp(-0.5j * (np.sin(8 * np.arctan2(y, x)) > 0))


def test_unscanned_border_is_excluded(tmp_path):
    n, w = 96, 16
    truth = _star(n)
    rng = np.random.default_rng(0)
    est = truth.copy()
    border = np.ones((n, n), bool)
    border[24:72, 24:72] = False
    est[border] = np.exp(1j * rng.uniform(-np.pi, np.pi, border.sum()))  # never illuminated
    corners = np.stack(np.meshgrid(np.arange(24, 57, 4), np.arange(24, 57, 4)), -1).reshape(-1, 2)
    path = tmp_path / "recon.h5"
    with h5py.File(path, "w") as f:
        f["object"] = est[None]
        f["probe"] = np.ones((1, w, w), np.complex64)
        f["positions_px"] = corners.astype(float)
    res = read_object(path)
    assert res.illumination is not None and res.illumination[30, 30] > 0
    assert res.illumination[5, 5] == 0
    cfg = {**_cfg(), "taper_px": 4}
    inside = evaluate(res, truth[None], cfg)
    assert inside["illuminated_box"] == [[24, 72], [24, 72]]
    assert inside["phase"]["ssim"] > 0.99
    whole = evaluate(res, truth[None], {**cfg, "illuminated_fraction": 0.0})
    assert whole["illuminated_box"] is None and whole["phase"]["ssim"] < 0.7


def test_cdi_truth_box_inside_oversampled_grid_and_undefined_phase_ignored():
    """A Bragg CDI result on the oversampled grid against its smaller truth box."""
    rng = np.random.default_rng(1)
    m, n = 12, 24
    z, y, x = np.mgrid[:m, :m, :m] - (m - 1) / 2
    crystal = (np.abs(z) + np.abs(y) + np.abs(x) < 5).astype(float)
    truth = crystal * np.exp(0.4j * np.sin(z / 3 + x / 4))
    est = np.pad(truth, (n - m) // 2).astype(complex)
    outside = np.pad(crystal, (n - m) // 2) == 0
    est[outside] = 1e-4 * np.exp(1j * rng.uniform(-np.pi, np.pi, outside.sum()))  # no signal
    res = evaluate(est, truth, {**_cfg(), "kind": "volume"})
    assert res["shape"] == [n, n, n]
    assert res["amplitude"]["ssim"] > 0.99
    assert res["phase"]["ssim"] > 0.99 and res["phase"]["rmse_rad"] < 1e-6


def _cfg():
    return {
        "kind": "auto", "crop_px": 0, "taper_px": 2, "amplitude_threshold": 0.05,
        "phase_mapping": "unit", "pixel_size": None, "illuminated_fraction": 0.1,
        "align": {"enabled": True, "global_phase": True, "scale": True, "ramp": True,
                  "register": True, "twin": "auto", "upsample": 20},
        "frc": {"on": "complex", "numerator": "abs", "thresholds": ["0.5"], "primary": "auto"},
        "figures": {"dpi": 50},
    }  # fmt: skip
