"""Evaluation of element maps (kind ``element_maps``): per-element metrics against
scikit-image, the sub-lattice FRC on images of known band limit and on white noise, and
``xrayflow evaluate`` on files in the data and result layouts (JSON, figures, errors)."""

import json

import h5py
import numpy as np
import pytest
from scipy import special

from xrayflow.config import load_config
from xrayflow.errors import DataError
from xrayflow.evaluate import frc as F
from xrayflow.evaluate import report
from xrayflow.evaluate.cli import summary_line

skm = pytest.importorskip("skimage.metrics")


def _band_limited(n: int, cutoff: float, seed: int, noise: float = 0.1) -> np.ndarray:
    """White noise low-passed to |f| < cutoff (cycles per pixel), unit variance, plus
    independent white noise of standard deviation ``noise``."""
    rng = np.random.default_rng(seed)
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(n), indexing="ij"))
    img = np.fft.ifft2(np.fft.fft2(rng.standard_normal((n, n))) * (f < cutoff)).real
    return img / img.std() + noise * rng.standard_normal((n, n))


@pytest.mark.parametrize("cutoff", [0.06, 0.12, 0.2])
def test_sublattice_frc_crosses_at_the_band_limit(cutoff):
    r, freq = F.sublattice_frc(_band_limited(256, cutoff, seed=int(cutoff * 100)))
    assert freq[-1] == pytest.approx(0.25)  # half the image's Nyquist frequency
    assert np.all(r.curve[(freq > 0) & (freq < cutoff - 0.02)] > 0.95)
    for name in ("1/7", "half_bit"):
        res = F.resolution(r.curve, F.threshold_curve(name, r.n_per_ring), freq=freq)
        assert res.crossed and res.frequency == pytest.approx(cutoff, abs=0.01), name


def test_sublattice_frc_of_white_noise_stays_low():
    rng = np.random.default_rng(7)
    r, freq = F.sublattice_frc(rng.standard_normal((256, 256)))
    ok = r.n_per_ring >= 16
    assert np.all(r.curve[ok] < 4 / np.sqrt(r.n_per_ring[ok]))  # ~ 1/sqrt(n) of a random sum
    res = F.resolution(r.curve, F.threshold_curve("1/7", r.n_per_ring), freq=freq)
    assert res.crossed and res.frequency < 0.02
    with pytest.raises(ValueError, match="2D image"):
        F.sublattice_frc(np.ones((3, 8)))


def test_the_half_pixel_registration_matters():
    """Uncorrected, the lattices' (1, 1) px offset lowers the correlation at f to about
    |J0(2 pi sqrt(2) f)| (0.61 at 0.15 cycles/px); corrected it stays at 1 in the band."""
    img = _band_limited(256, 0.2, seed=3, noise=0.02)
    r, freq = F.sublattice_frc(img)
    raw = F.frc(img[0::2, 0::2], img[1::2, 1::2])
    band = (freq > 0.02) & (freq < 0.18)
    assert np.all(r.curve[band] > 0.99)
    expected = np.abs(special.j0(2 * np.pi * np.sqrt(2) * freq[band]))
    np.testing.assert_allclose(raw.curve[band], expected, atol=0.1)


def _truth_maps(n=48):
    yy, xx = np.mgrid[:n, :n]
    co = 4e-3 / (1 + np.exp((np.hypot(yy - 18, xx - 20) - 9) / 1.0))
    fe = 2e-3 / (1 + np.exp((np.hypot(yy - 32, xx - 30) - 7) / 1.0))
    return np.stack([co, fe])


def test_element_metrics_match_scikit_image():
    rng = np.random.default_rng(1)
    truth = _truth_maps()
    est = truth + 2e-4 * rng.standard_normal(truth.shape)
    ref = report.ElementMaps(truth, ["Co", "Fe"])
    res = report.ElementMaps(est[::-1].copy(), ["Fe", "Co"])  # matched by name
    m, arrays = report.evaluate_element_maps(res, ref)
    assert m["kind"] == "element_maps" and m["elements"] == ["Co", "Fe"] and "raster" not in m
    for i, name in enumerate(("Co", "Fe")):
        rng_i = np.ptp(truth[i])
        block = m["maps"][name]
        want = skm.structural_similarity(
            truth[i],
            est[i],
            data_range=rng_i,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
        assert block["ssim"] == pytest.approx(want, abs=1e-10)
        psnr = skm.peak_signal_noise_ratio(truth[i], est[i], data_range=rng_i)
        assert block["psnr_db"] == pytest.approx(psnr, abs=1e-9)
        nrmse = skm.normalized_root_mse(truth[i], est[i], normalization="euclidean")
        assert block["nrmse"] == pytest.approx(nrmse, rel=1e-12)
        assert block["frc"]["primary"] == "1/7"
        assert set(block["frc"]["resolution"]) == {"1/7", "half_bit"}
    np.testing.assert_array_equal(arrays["est"][0], est[0])


def test_element_map_errors():
    truth = _truth_maps()
    ref = report.ElementMaps(truth, ["Co", "Fe"])
    with pytest.raises(DataError, match="no map of Fe"):
        report.evaluate_element_maps(report.ElementMaps(truth[:1], ["Co"]), ref)
    with pytest.raises(DataError, match="shape mismatch"):
        report.evaluate_element_maps(report.ElementMaps(truth[:, :40], ["Co", "Fe"]), ref)
    cfg = load_config({"crop_px": 20}, "evaluate")
    with pytest.raises(DataError, match="too little"):
        report.evaluate_element_maps(ref, ref, cfg)


def _write_files(tmp_path, est, truth, raster, elements=("Co", "Fe")):
    data, result = tmp_path / "data.h5", tmp_path / "recon.h5"
    with h5py.File(data, "w") as f:
        t = f.create_group("entry_1/xrayflow_truth")
        t["element_maps"] = truth.astype(np.float32)
        t["raster_maps"] = raster.astype(np.float32)
        t["elements"] = np.array(elements, dtype=object)
        f["entry_1/data_1/data"] = np.random.default_rng(0).exponential(1e4, (3, *truth.shape[1:]))
        f["entry_1/xrayflow_signals/transmission"] = np.exp(-100 * truth.sum(axis=0))
        f["entry_1/xrayflow_attrs/modality"] = "xrf_speckle"
    with h5py.File(result, "w") as f:
        f["maps"] = est.astype(np.float32)
        f["elements"] = np.array(elements, dtype=object)
        f["loss"] = np.geomspace(1.0, 1e-2, 30)
        f["method"] = "siren"
        f["pixel_size"] = 2e-6
        f.attrs["model"] = "xrf_speckle"
    return result, data


def test_cli_writes_metrics_and_figures(tmp_path, capsys):
    from xrayflow.cli import main

    rng = np.random.default_rng(2)
    truth = _truth_maps()
    est = truth + 1e-4 * rng.standard_normal(truth.shape)
    raster = truth + 5e-4 * rng.standard_normal(truth.shape)
    result, data = _write_files(tmp_path, est, truth, raster)
    out, figs = tmp_path / "metrics.json", tmp_path / "figs"
    argv = ["evaluate", "--result", str(result), "--truth", str(data), "--out", str(out)]
    assert main([*argv, "--figures", str(figs)]) == 0
    line = capsys.readouterr().out
    assert "element_maps" in line and "Co SSIM" in line and "raster" in line
    m = json.loads(out.read_text())
    assert m["method"] == "siren" and m["pixel_size_m"] == pytest.approx(2e-6)
    assert set(m["maps"]) == set(m["raster"]) == {"Co", "Fe"}
    for name in ("Co", "Fe"):
        assert m["maps"][name]["ssim"] > m["raster"][name]["ssim"] > 0.1
        res = m["maps"][name]["frc"]["resolution"]["1/7"]
        assert res["half_period_m"] == pytest.approx(res["half_period_px"] * 2e-6)
    assert m["loss"]["loss"]["n"] == 30
    names = sorted(p.name for p in figs.iterdir())
    assert names == ["element_maps.png", "loss.png", "speckle_pattern.png", "sublattice_frc.png"]
    assert summary_line(m, "truth", out).startswith("evaluate (truth, element_maps): Co SSIM")
    # an existing folder of an object evaluation gets the element-map figures, not a mix
    (figs / "comparison.png").write_bytes(b"old")
    assert main([*argv, "--figures", str(figs)]) == 0
    assert not (figs / "comparison.png").exists()


def test_cli_refuses_pairs_and_missing_maps(tmp_path, capsys):
    from xrayflow.cli import main

    truth = _truth_maps()
    result, data = _write_files(tmp_path, truth, truth, truth)
    out = tmp_path / "m.json"
    assert main(["evaluate", "--pair", str(result), str(result), "--out", str(out)]) == 2
    assert "--truth" in capsys.readouterr().err and not out.exists()
    with h5py.File(data, "a") as f:
        del f["entry_1/xrayflow_truth/element_maps"]
    argv = ["evaluate", "--result", str(result), "--truth", str(data), "--out", str(out)]
    assert main(argv) == 2
    assert "no element maps" in capsys.readouterr().err and not out.exists()
