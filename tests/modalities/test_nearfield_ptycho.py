"""Near-field ptychography in cone-beam geometry (modality ``nearfield_ptycho``).

The demo configs (config/simulate/nearfield_ptycho.yaml: diffuser beam, focus 4 mm
upstream, detector 1 m downstream; config/reconstruct/nearfield_ptycho.yaml) end to end
against the truth and between half scans; the simulation's and the reconstruction's forward
models against each other; the Fresnel scaling of the cone beam against a direct simulation
of the point source; and every case that used to be accepted silently is now an error.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from mpi_util import run_ranks
from scipy.ndimage import gaussian_filter

from xrayflow import ad
from xrayflow.backend import get_backend
from xrayflow.cli import main
from xrayflow.config import load_config
from xrayflow.geometry import Geometry
from xrayflow.io.cxi import ATTRS_GROUP, TRUTH_GROUP, DiffractionData, write_cxi
from xrayflow.io.info import describe_cxi
from xrayflow.modalities import get_modality, stage_schema
from xrayflow.operators import MultisliceModel
from xrayflow.optics.propagation import transfer_function
from xrayflow.reconstruct.data import load_data

ROOT = Path(__file__).parents[2]
SIM = str(ROOT / "config/simulate/nearfield_ptycho.yaml")
REC = str(ROOT / "config/reconstruct/nearfield_ptycho.yaml")


@pytest.fixture(scope="module")
def nfp(tmp_path_factory) -> Path:
    """The demo data set (25 frames of 128², Poisson noise)."""
    path = tmp_path_factory.mktemp("nfp") / "nfp.cxi"
    assert main(["simulate", "-c", SIM, "-o", str(path)]) == 0
    return path


def _reconstruct(data, out, *sets) -> None:
    args = ["reconstruct", "-c", REC, "-d", str(data), "-o", str(out)]
    for s in ("run.log_every=1000", *sets):
        args += ["--set", s]
    assert main(args) == 0


def _evaluate(tmp_path, *args) -> dict:
    out = tmp_path / "m.json"
    assert main(["evaluate", *args, "--out", str(out)]) == 0
    return json.loads(out.read_text())


def _config(*sets) -> dict:
    return load_config(REC, stage_schema("reconstruct"), list(sets), "reconstruct")


def test_reconstruction_matches_truth_and_half_scans_agree(nfp, tmp_path):
    """Object and diffuser probe from the back-propagated mean frame: phase SSIM >= 0.9
    against the truth (0.98 measured); the two half scans give an FRC curve and a
    resolution (reported, at most 2 px half-period)."""
    _reconstruct(nfp, tmp_path / "r.h5")
    m = _evaluate(tmp_path, "--result", str(tmp_path / "r.h5"), "--truth", str(nfp))
    assert m["phase"]["ssim"] >= 0.9, m["phase"]
    for half in ("even", "odd"):
        _reconstruct(nfp, tmp_path / f"{half}.h5", f"data.subset={half}")
    pair = _evaluate(tmp_path, "--pair", str(tmp_path / "even.h5"), str(tmp_path / "odd.h5"))
    res = pair["frc"]["resolution"]["half_bit"]
    assert res["resolved"] and res["half_period_px"] <= 2.0, res
    assert res["half_period_m"] == pytest.approx(res["half_period_px"] * 15e-6 / 251, rel=1e-3)


@pytest.mark.mpi
def test_two_ranks_give_the_result_of_one(nfp, tmp_path):
    """Frames split over 2 ranks in fixed blocks of 5: the start probe (the mean frame,
    summed block by block) and every step are those of one process."""
    out = {}
    for n in (1, 2):
        out[n] = tmp_path / f"r{n}.h5"
        cmd = [sys.executable, "-m", "xrayflow", "reconstruct", "-c", REC, "-d", str(nfp)]
        cmd += ["-o", str(out[n]), "--set", "optimizer.iterations=3"]
        cmd += ["--set", "run.block_frames=5", "--set", "model.position_correction=true"]
        r = run_ranks(cmd, n, 120, mpi=n > 1)
        assert r.returncode == 0, r.stderr
    with h5py.File(out[1]) as a, h5py.File(out[2]) as b:
        for k in ("object", "probe", "loss", "positions_px"):
            np.testing.assert_array_equal(a[k][()], b[k][()], err_msg=k)
        assert b.attrs["n_ranks"] == 2


def test_simulation_and_reconstruction_models_agree(nfp):
    """The reconstruction's model (AD) of the truth reproduces the simulation: chi^2 per
    pixel of the noisy frames ~ 1 (the simulate operator's own intensities agree to
    rounding)."""
    cfg = _config()
    d = load_data(nfp, cfg)
    model = get_modality("nearfield_ptycho").build_model(cfg, d, get_backend("cpu", "double"))
    with h5py.File(nfp) as f:
        obj = f[TRUTH_GROUP]["object"][()].astype(complex)
        probe = f[TRUTH_GROUP]["probe"][()].astype(complex)
    ci, frac = model.split(d.corners)
    I = model.intensities({"object": ad.const(obj[None])}, ad.const(probe), ci, ad.const(frac))
    I = I.data
    chi2 = np.mean((I - d.intensities) ** 2 / np.maximum(I, 1.0))
    assert 0.9 < chi2 < 1.1, chi2
    sim = MultisliceModel(
        obj[None],
        probe,
        0.0,
        d.wavelength,
        d.pixel_size,
        get_backend("cpu", "double"),
        detector_distance=float(d.distances[0]),
    )
    np.testing.assert_allclose(sim.intensities(d.corners), I, rtol=1e-9, atol=1e-9 * I.max())


def test_fresnel_scaling_equals_a_point_source():
    """A point source z1 upstream, detector z2 downstream: the intensity computed directly
    (the object times the diverging spherical wave, propagated z2 on a fine padded grid)
    equals the plane-wave frame of the geometry's effective distance z1 z2/(z1 + z2) on the
    object pixel p/M, magnified by M = (z1 + z2)/z1 and divided by M^2."""
    z1 = z2 = 0.0323  # m: M = 2
    geo = Geometry(
        energy_ev=10000.0,
        distance=z2,
        pixel_size=(2e-7, 2e-7),
        distances=(z2,),
        source_distance=z1,
        far_field=False,
    )
    M, z_eff, dx = geo.magnifications[0], geo.effective_distances[0], geo.object_pixel[0]
    assert M == pytest.approx(2.0) and dx == pytest.approx(1e-7)
    n, pad = 256, 1024
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:n, :n] - n / 2
    phase = gaussian_filter(rng.standard_normal((n, n)), 3.0)
    obj = np.exp(-(x**2 + y**2) / (2 * 30.0**2)) * np.exp(2j * phase / phase.std())
    lam = geo.wavelength
    # the scaled (plane-wave) frame, as nearfield_ptycho simulates it
    scaled = MultisliceModel(
        obj[None],
        np.ones((1, n, n)),
        0.0,
        lam,
        dx,
        get_backend("cpu", "double"),
        detector_distance=z_eff,
    ).intensities(np.zeros((1, 2)))[0]
    # direct: spherical wave from the source, propagated z2 on a grid wide enough for the
    # magnified beam, sampled every M fine pixels (detector pixel M dx)
    big = np.zeros((pad, pad), complex)
    o = (pad - n) // 2
    big[o : o + n, o : o + n] = obj
    Y, X = (np.mgrid[:pad, :pad] - pad / 2) * dx
    big *= np.exp(1j * np.pi * (X**2 + Y**2) / (lam * z1))
    H = transfer_function("fresnel", (pad, pad), dx, lam, z2, dtype=np.complex128)
    direct = np.abs(np.fft.ifft2(np.fft.fft2(big) * H)) ** 2
    k = np.arange(n // 4, 3 * n // 4)  # sample pixels whose detector pixel is on the grid
    j = pad // 2 + 2 * (k - n // 2)
    ours = scaled[np.ix_(k, k)] / M**2
    theirs = direct[np.ix_(j, j)]
    assert np.max(np.abs(ours - theirs)) < 2e-3 * theirs.max()
    assert np.max(np.abs(scaled[np.ix_(k + 1, k)] / M**2 - theirs)) > 2e-2 * theirs.max()


def _without_attrs(src: Path, dst: Path) -> Path:
    """A copy of ``src`` without xrayflow's attributes (modality, source distance, ...,
    the frames' ``centred``), as a file written by another facility's software."""
    shutil.copy(src, dst)
    with h5py.File(dst, "a") as f:
        del f[ATTRS_GROUP]
        del f["entry_1/data_1/data"].attrs["centred"]
    return dst


def test_focus_distance_is_the_only_override_a_foreign_file_needs(nfp, tmp_path, capsys):
    """Without the recorded source distance the frames would be taken as a plane-wave
    experiment on the 15 um detector pixel, where the 4 um scan spans 0.3 pixel: an error
    that says to set geometry.source_distance; with it the reconstruction equals that of the
    full file."""
    bare = _without_attrs(nfp, tmp_path / "bare.cxi")
    args = ["reconstruct", "-c", REC, "-d", str(bare), "-o", str(tmp_path / "x.h5")]
    assert main([*args, "--set", "optimizer.iterations=2"]) == 2
    err = capsys.readouterr().err
    assert "less than one" in err and "geometry.source_distance" in err
    assert "Traceback" not in err and not (tmp_path / "x.h5").exists()
    it = "optimizer.iterations=5"
    _reconstruct(bare, tmp_path / "a.h5", it, "geometry.source_distance=4e-3")
    _reconstruct(nfp, tmp_path / "b.h5", it)
    with h5py.File(tmp_path / "a.h5") as fa, h5py.File(tmp_path / "b.h5") as fb:
        np.testing.assert_allclose(fa["object"][()], fb["object"][()], rtol=1e-5, atol=1e-6)


def _far_field_file(path: Path, pixel: float, distance: float) -> Path:
    rng = np.random.default_rng(1)
    d = DiffractionData(
        data=rng.poisson(100.0, (4, 32, 32)).astype(np.float32),
        energy_ev=17000.0,
        distance=distance,
        pixel_size=(pixel, pixel),
        positions=rng.uniform(-1e-7, 1e-7, (4, 2)),
    )
    write_cxi(path, d)
    return path


@pytest.mark.parametrize(
    ("model", "sets", "match"),
    [
        # near-field holograms (recorded modality) to a far-field model
        ("ptycho2d", [], "near-field images"),
        # scanned near-field frames to holography, which ignores positions
        ("holography", [], "25 scan positions"),
        ("nearfield_ptycho", ["data.centred=true"], "data.centred"),
    ],
)
def test_near_field_data_given_to_the_wrong_model_is_an_error(
    nfp, tmp_path, capsys, model, sets, match
):
    args = ["reconstruct", "-c", REC, "-d", str(nfp), "-o", str(tmp_path / "x.h5")]
    args += ["--set", f"model.type={model}"]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err, err
    assert not (tmp_path / "x.h5").exists()


def test_fine_camera_pixels_are_not_far_field(tmp_path, capsys):
    """Frames on 1 um pixels at 0.5 m (a Fresnel number lambda z/p^2 of 36 for the far-field
    field of view) are refused by ptycho2d, which names nearfield_ptycho."""
    f = _far_field_file(tmp_path / "fine.cxi", 1e-6, 0.5)
    cfg = str(ROOT / "config/reconstruct/ptycho2d.yaml")
    assert main(["reconstruct", "-c", cfg, "-d", str(f), "-o", str(tmp_path / "x.h5")]) == 2
    err = capsys.readouterr().err
    assert "Fresnel number" in err and "nearfield_ptycho" in err
    coarse = _far_field_file(tmp_path / "coarse.cxi", 75e-6, 2.0)
    data = load_data(coarse, load_config(cfg, stage_schema("reconstruct"), [], "reconstruct"))
    assert data.intensities.shape == (4, 32, 32)  # 75 um at 2 m: far field, accepted


@pytest.mark.parametrize(
    ("sets", "match"),
    [
        # one far-field slice: the propagator would do nothing
        (["model.type=ptycho2d", "model.propagator=angular_spectrum"], "model.propagator"),
        # holography does not refine positions
        (["model.type=holography", "model.position_correction=true"], "position_correction"),
        # the cone-beam focus of near-field frames, given to a far-field model
        (["model.type=ptycho2d", "geometry.source_distance=0.004"], "geometry.source_distance"),
    ],
)
def test_options_a_model_ignores_are_errors(tmp_path, capsys, sets, match):
    f = _far_field_file(tmp_path / "ff.cxi", 75e-6, 2.0)
    if "model.type=holography" in sets:  # a near-field data set of one unscanned frame
        with h5py.File(f, "a") as h:
            del h["entry_1/sample_1/geometry_1/translation"]
    args = ["reconstruct", "-c", REC, "-d", str(f), "-o", str(tmp_path / "x.h5")]
    args += ["--set", "init.probe=aperture"]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err, err


def test_source_distance_is_refused_for_far_field_simulations(tmp_path, capsys):
    cfg = str(ROOT / "config/simulate/ptycho2d.yaml")
    out = tmp_path / "x.cxi"
    assert main(["simulate", "-c", cfg, "-o", str(out), "--set", "geometry.source_distance=1"]) == 2
    assert "geometry.source_distance" in capsys.readouterr().err and not out.exists()


def test_info_calls_holograms_real_space_images(nfp, tmp_path):
    assert "real-space images (not FFT-shifted)" in describe_cxi(nfp)
    bare = _without_attrs(nfp, tmp_path / "bare.cxi")
    assert "layout not recorded" in describe_cxi(bare)
