"""The evaluate stage end to end: tiny HDF5 files -> JSON + PNGs; bad inputs exit 2."""

import json

import h5py
import numpy as np
import pytest
from scipy import ndimage

from xrayflow.evaluate import alignment as al
from xrayflow.evaluate import report


def _main(argv):
    from xrayflow.cli import main

    return main(argv)


def _argv(result, truth, out, *extra):
    return ["evaluate", "--result", str(result), "--truth", str(truth), "--out", str(out), *extra]


def _truth_object(n=64, seed=0):
    rng = np.random.default_rng(seed)
    big = n + 32

    def smooth(s):
        return ndimage.gaussian_filter(rng.standard_normal((big, big)), s, mode="wrap")

    obj = (0.85 + 0.5 * smooth(3)) * np.exp(1j * 8.0 * smooth(2.5))
    return obj


def _write_truth(path, obj, pixel=10e-9):
    with h5py.File(path, "w") as f:
        g = f.create_group("entry_1/xrayflow_truth")
        g["object"] = obj.astype(np.complex64)
        g["pixel_size"] = pixel
        f["entry_1/xrayflow_attrs/modality"] = "ptycho2d"


def _write_result(path, obj, loss=True, pixel=10e-9, name="object"):
    with h5py.File(path, "w") as f:
        f[name] = obj.astype(np.complex64)
        f["pixel_size"] = pixel
        if loss:
            f["loss"] = np.geomspace(1.0, 1e-3, 40)


@pytest.fixture()
def files(tmp_path):
    big = _truth_object()
    truth = big[16:-16, 16:-16]
    rng = np.random.default_rng(5)
    noise = 0.03 * (rng.standard_normal(truth.shape) + 1j * rng.standard_normal(truth.shape))
    shifted = al.fourier_shift(big, (0.7, -1.4))[16:-16, 16:-16]
    res = 1.2 * np.exp(0.5j) * shifted + noise
    half = 1.0 * truth + 0.03 * (
        rng.standard_normal(truth.shape) + 1j * rng.standard_normal(truth.shape)
    )
    _write_truth(tmp_path / "data.h5", truth)
    _write_result(tmp_path / "recon.h5", res[None])  # (1, Ny, Nx) as the reconstruct stage
    _write_result(tmp_path / "half.h5", half)
    return tmp_path


def test_cli_truth_writes_json_and_pngs(files, capsys):
    out = files / "m" / "metrics.json"
    out.parent.mkdir()  # outputs go into existing folders (a missing one is refused)
    figs = files / "figs"
    rc = _main(_argv(files / "recon.h5", files / "data.h5", out, "--figures", str(figs)))
    assert rc == 0, capsys.readouterr().err
    m = json.loads(out.read_text())
    assert m["mode"] == "truth" and m["kind"] == "image"
    assert m["pixel_size_m"] == pytest.approx(10e-9)
    np.testing.assert_allclose(m["alignment"]["shift_px"], (-0.7, 1.4), atol=0.02)
    assert m["alignment"]["scale"] == pytest.approx(1 / 1.2, rel=0.02)
    assert m["nrmse"] < 0.1
    assert 0.9 < m["phase"]["ssim"] <= 1.0
    assert m["amplitude"]["psnr_db"] > 10
    frc = m["frc"]
    assert frc["primary"] == "0.5"
    assert set(frc["resolution"]) >= {"half_bit", "one_bit", "0.5", "1/7"}
    r = frc["resolution"]["0.5"]
    assert r["half_period_m"] == pytest.approx(r["half_period_px"] * 10e-9)
    assert r["full_period_px"] == pytest.approx(2 * r["half_period_px"])
    assert "half_period" in frc["resolution_convention"]
    assert m["evaluated_shape"] == [58, 56]  # ceil(|shift|) + 2 px cut per side
    assert len(frc["curve"]) == len(frc["n_per_ring"]) == 56 // 2 + 1
    assert m["loss"]["loss"]["n"] == 40
    for name in ("comparison.png", "frc.png", "loss.png"):
        data = (figs / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    assert not list(out.parent.glob("*.tmp*"))


def test_cli_pair_half_bit(files):
    out = files / "pair.json"
    rc = _main(
        [
            "evaluate",
            "--pair",
            str(files / "recon.h5"),
            str(files / "half.h5"),
            "--out",
            str(out),
            "--set",
            "crop_px=4",
            "--set",
            "taper_px=8",
        ]
    )
    assert rc == 0
    m = json.loads(out.read_text())
    assert m["mode"] == "pair" and m["frc"]["primary"] == "half_bit"
    assert m["evaluated_shape"] == [56, 56]
    assert m["frc"]["taper_px"] == [8, 8]


def test_evaluate_function_identity():
    obj = _truth_object(48)[:48, :48]
    m = report.evaluate(obj, obj)
    assert m["nrmse"] == pytest.approx(0.0, abs=1e-9)
    assert m["phase"]["ssim"] == pytest.approx(1.0, abs=1e-9)
    assert m["amplitude"]["psnr_db"] is None or m["amplitude"]["psnr_db"] > 150
    assert np.allclose(m["frc"]["curve"], 1.0)
    json.dumps(m, allow_nan=False)


def test_evaluate_multislice_and_volume():
    rng = np.random.default_rng(3)
    sl = np.exp(1j * 0.3 * ndimage.gaussian_filter(rng.standard_normal((3, 40, 40)), (0, 2, 2)))
    m = report.evaluate(sl * np.exp(0.2j), sl)
    assert m["kind"] == "slices" and len(m["slices"]) == 3
    assert m["nrmse"] < 1e-6
    z, y, x = np.mgrid[:24, :24, :24] - 12
    rho = ndimage.gaussian_filter(((abs(z) + abs(y) + abs(1.4 * x)) < 8).astype(float), 0.7)
    rho = rho * np.exp(1j * 0.02 * x * y)
    res = report.ObjectData(al.twin(rho), modality="bragg_cdi")
    m = report.evaluate(res, report.ObjectData(rho))
    assert m["kind"] == "volume" and m["alignment"]["twin"] is True
    assert m["nrmse"] < 1e-6


def test_kind_from_the_registry(tmp_path):
    """3D objects compare as 'volume' when a file's modality is evaluated as 'density' (any
    registered name, plug-ins too), else as 'slices'; the config's kind overrides."""
    from xrayflow.modalities import Modality, register, unregister

    vol = np.ones((4, 8, 8), complex)

    def kind(modality, requested="auto"):
        res = report.ObjectData(vol, modality=modality)
        return report._kind(res, report.ObjectData(vol), requested)

    assert kind("bragg_cdi") == "volume"
    assert kind("multislice_ptycho") == "slices"
    assert kind(None) == kind("not_registered") == "slices"  # files from elsewhere: shapes
    assert kind("bragg_cdi", "slices") == "slices"
    register(Modality("plugin_density", evaluate="density"))
    try:
        assert kind("plugin_density") == "volume"
    finally:
        unregister("plugin_density")
    # result files record the modality as the root attribute 'model'
    with h5py.File(tmp_path / "r.h5", "w") as f:
        f["object"] = vol
        f.attrs["model"] = "bragg_cdi"
    assert report.read_object(tmp_path / "r.h5").modality == "bragg_cdi"


def test_cli_missing_file_exits_2(files, capsys):
    rc = _main(_argv(files / "nope.h5", files / "data.h5", files / "x.json"))
    assert rc == 2
    err = capsys.readouterr().err
    assert "nope.h5" in err and "does not exist" in err
    assert not (files / "x.json").exists()


def test_cli_missing_dataset_exits_2(files, capsys):
    _write_result(files / "wrong.h5", np.ones((64, 64)), name="something_else")
    rc = _main(_argv(files / "wrong.h5", files / "data.h5", files / "x.json"))
    assert rc == 2
    err = capsys.readouterr().err
    assert "no object dataset" in err and "something_else" in err


def test_cli_shape_mismatch_exits_2(files, capsys):
    _write_result(files / "small.h5", np.ones((40, 64), complex))
    rc = _main(_argv(files / "small.h5", files / "data.h5", files / "x.json"))
    assert rc == 2
    assert "shape mismatch" in capsys.readouterr().err


def test_result_on_another_pixel_size_is_resampled(files, tmp_path):
    """Another code's reconstruction on a coarser grid (2x the pixel, half the samples) is
    resampled onto the truth's grid with both pixel sizes and compared there."""
    big = _truth_object()
    truth = big[16:-16, 16:-16]
    coarse = ndimage.zoom(truth.real, 0.5, order=1) + 1j * ndimage.zoom(truth.imag, 0.5, order=1)
    _write_result(files / "coarse.h5", coarse, pixel=20e-9)
    rc = _main(_argv(files / "coarse.h5", files / "data.h5", files / "m.json"))
    assert rc == 0
    m = json.loads((files / "m.json").read_text())
    assert m["resampled"]["zoom"] == pytest.approx(2.0)
    assert m["resampled"]["from_shape"] == [32, 32] and m["shape"] == [64, 64]
    assert m["pixel_size_m"] == pytest.approx(10e-9)
    assert m["phase"]["ssim"] > 0.95 and m["nrmse"] < 0.15  # the smoothed truth (0.985, 0.09)
    assert np.abs(m["alignment"]["shift_px"]).max() < 0.1  # resampled about the same centre
    _write_result(files / "coarse_same.h5", coarse, pixel=10e-9)  # claims the truth's pixel
    assert _main(_argv(files / "coarse_same.h5", files / "data.h5", files / "n.json")) == 2


def test_cli_not_hdf5_and_bad_options_exit_2(files, capsys):
    (files / "junk.h5").write_text("not hdf5")
    rc = _main(_argv(files / "junk.h5", files / "data.h5", files / "x.json"))
    assert rc == 2 and "not a readable HDF5" in capsys.readouterr().err
    both = ["--pair", str(files / "half.h5"), str(files / "recon.h5")]
    rc = _main([*_argv(files / "recon.h5", files / "data.h5", files / "x.json"), *both])
    assert rc == 2 and "not both" in capsys.readouterr().err
    argv = _argv(files / "recon.h5", files / "data.h5", files / "x.json", "--set", "align.twinn=1")
    rc = _main(argv)
    assert rc == 2 and "twin" in capsys.readouterr().err


def test_truth_from_write_cxi(tmp_path):
    cxi = pytest.importorskip("xrayflow.io.cxi")
    obj = _truth_object(32)[:48, :48]
    d = cxi.DiffractionData(
        data=np.ones((2, 16, 16), np.float32),
        energy_ev=8000.0,
        distance=1.0,
        pixel_size=(75e-6, 75e-6),
        positions=np.zeros((2, 2)),
        truth={"object": obj.astype(np.complex64), "pixel_size": 7e-9},
        attrs={"modality": "ptycho2d"},
    )
    cxi.write_cxi(tmp_path / "d.cxi", d)
    t = report.read_object(tmp_path / "d.cxi", "truth")
    assert t.object.shape == (48, 48) and t.pixel_size == pytest.approx(7e-9)
    assert t.modality == "ptycho2d"


def test_read_reconstruct_stage_layout(tmp_path):
    """The reconstruct stage's layout (write_h5): object (S,Ny,Nx), loss, pixel_size."""
    h5 = pytest.importorskip("xrayflow.io.hdf5")
    obj = np.ones((1, 24, 24), np.complex64)
    tree = {
        "object": obj,
        "loss": np.linspace(2, 1, 5),
        "pixel_size": 8e-9,
        "timings": {"iteration_s": np.ones(5)},
        "config": {"model": {"type": "ptycho2d"}},
    }
    h5.write_h5(tmp_path / "r.h5", tree, attrs={"units": "m", "model": "ptycho2d"})
    r = report.read_object(tmp_path / "r.h5")
    assert r.object.shape == (1, 24, 24) and r.pixel_size == pytest.approx(8e-9)
    np.testing.assert_allclose(r.loss_history["loss"], np.linspace(2, 1, 5))
    h5.write_h5(tmp_path / "p.h5", {**tree, "pixel_size": 1.0}, attrs={"units": "pixels"})
    assert report.read_object(tmp_path / "p.h5").pixel_size is None  # pixel units


def test_loss_history_group_and_columns(tmp_path):
    with h5py.File(tmp_path / "g.h5", "w") as f:
        f["object"] = np.ones((16, 16), complex)
        f["loss_history/train"] = np.arange(3.0, 0, -1)
        f["loss_history/val"] = np.arange(4.0, 1, -1)
    r = report.read_object(tmp_path / "g.h5")
    assert set(r.loss_history) == {"train", "val"}
    with h5py.File(tmp_path / "c.h5", "w") as f:
        f["object"] = np.ones((16, 16), complex)
        f["loss_history"] = np.ones((6, 2))
        f["loss_history"].attrs["columns"] = ["data", "tv"]
    assert set(report.read_object(tmp_path / "c.h5").loss_history) == {"data", "tv"}
    with h5py.File(tmp_path / "n.h5", "w") as f:
        f["object"] = np.full((16, 16), np.nan, complex)
    with pytest.raises(Exception, match="NaN"):
        report.read_object(tmp_path / "n.h5")


def _cone(n=24):
    z, y, x = np.mgrid[:n, :n, :n] - (n - 1) / 2
    r = np.hypot(z, x)
    wall = ((r > 4) & (r < 7) & (np.abs(y) < 9)).astype(np.float64)
    return ndimage.gaussian_filter(wall, 0.7) * 7e-6


def test_refractive_volumes_from_tomography_files(tmp_path, capsys):
    """delta/beta volumes (ptycho-tomography layout) compare as 'refractive': no alignment,
    SSIM/PSNR/RMSE of each against closed forms, FSC of delta, figures; a complex object
    against delta/beta volumes is an error naming both."""
    delta = _cone()
    beta = delta / 70
    truth, res = tmp_path / "truth.h5", tmp_path / "res.h5"
    with h5py.File(truth, "w") as f:
        g = f.create_group("entry_1/xrayflow_truth")
        g["delta"], g["beta"], g["voxel_size"] = delta.astype(np.float32), beta, 1e-7
        f["entry_1/xrayflow_attrs/modality"] = "ptychotomo"
    err = 2e-7 * np.random.default_rng(1).standard_normal(delta.shape)
    with h5py.File(res, "w") as f:
        f["delta"], f["beta"], f["voxel_size"] = delta + err, beta, 1e-7
        f["probe"], f["positions_px"] = np.ones((1, 8, 8)), np.zeros((3, 2))
        f["loss"] = np.geomspace(1.0, 0.1, 10)
    out = tmp_path / "m.json"
    assert _main(_argv(res, truth, out, "--figures", str(tmp_path / "figs"))) == 0
    assert "refractive" in capsys.readouterr().out
    m = json.loads(out.read_text())
    assert m["kind"] == "refractive" and m["alignment"]["enabled"] is False
    assert m["shape"] == m["evaluated_shape"] == [24, 24, 24] and m["pixel_size_m"] == 1e-7
    e32 = delta.astype(np.float32).astype(np.float64)  # the truth as stored
    rmse = np.sqrt(np.mean((delta + err - e32) ** 2))
    rng = float(e32.max() - e32.min())
    assert m["delta"]["rmse"] == pytest.approx(rmse, rel=1e-6)
    assert m["delta"]["psnr_db"] == pytest.approx(10 * np.log10(rng**2 / rmse**2), rel=1e-6)
    assert m["delta"]["nrmse"] == pytest.approx(rmse * delta.size**0.5 / np.linalg.norm(e32))
    assert m["delta"]["data_range"] == pytest.approx(rng)
    from xrayflow.evaluate.metrics import ssim

    assert (
        m["delta"]["ssim"] == pytest.approx(ssim(e32, delta + err, rng)) and m["delta"]["ssim"] < 1
    )
    assert m["beta"]["ssim"] == pytest.approx(1.0) and m["beta"]["rmse"] == 0
    assert m["frc"]["computed_on"] == "delta"
    assert len(m["frc"]["curve"]) > 5 and m["frc"]["curve"][0] > 0.99
    assert {p.name for p in (tmp_path / "figs").iterdir()} >= {"refractive_slices.png", "frc.png"}
    # the same volumes as a pair: identical -> perfect
    assert report.evaluate(report.read_object(truth, "truth"), report.read_object(truth, "truth"))[
        "delta"
    ]["ssim"] == pytest.approx(1.0)
    # delta/beta against a complex object: a clear error, exit 2
    complex_res = tmp_path / "complex.h5"
    _write_result(complex_res, np.ones((24, 24, 24), complex))
    assert _main(_argv(complex_res, truth, tmp_path / "x.json")) == 2
    assert "delta/beta volumes" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
