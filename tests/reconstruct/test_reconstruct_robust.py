"""Gradients vs finite differences, checkpoint/resume, NaN detection, bad data, CLI."""

from __future__ import annotations

import bz2
import io

import numpy as np
import pytest

from xrayflow import ad
from xrayflow.errors import ConfigError, DataError
from xrayflow.modalities.losses import loss_target
from xrayflow.modalities.ptycho2d.model import PtychoModel, split_positions
from xrayflow.solvers.gradient import DivergenceError, Reconstructor

QUIET = {"log": lambda s: None}


def test_model_gradients_match_finite_differences(sim):
    rng = np.random.default_rng(0)
    shape, n, S = (20, 20), 8, 2
    obj = np.exp(1j * 0.3 * rng.standard_normal((S, *shape))) * 0.9
    probe = sim.make_probe(n, width=0.6)
    probe = np.concatenate([probe, 0.3 * np.roll(probe, 1, -1)])  # 2 modes
    from xrayflow.optics.propagation import transfer_function

    H = transfer_function("fresnel", (n, n), 1.0, 0.1, 20.0, dtype=np.complex128)
    model = PtychoModel((n, n), shape, n_slices=S, transfer=H)
    corners = np.array([[2.3, 3.7], [6.6, 1.2], [9.1, 10.4]])
    ci, fr = split_positions(corners)
    data = rng.poisson(5 * np.ones((3, n, n))).astype(float)
    tgt = loss_target(data, "gaussian")

    def f(o, p, s):
        return model.loss({"object": o}, p, ci, s, tgt)

    _, (go, gp, gs) = ad.value_and_grad(f, argnums=(0, 1, 2))(obj, probe, fr)
    h = 1e-6

    def fd(arr, idx, direction):
        a1, a2 = arr.copy(), arr.copy()
        a1[idx] += h * direction
        a2[idx] -= h * direction
        args = {"o": obj, "p": probe, "s": fr}
        return a1, a2, args

    for name, arr, g in (("o", obj, go), ("p", probe, gp), ("s", fr, gs)):
        for idx in [tuple(rng.integers(0, d) for d in arr.shape) for _ in range(3)]:
            dirs = (1.0, 1j) if np.iscomplexobj(arr) else (1.0,)
            for dr in dirs:
                a1, a2, args = fd(arr, idx, dr)
                args[name] = a1
                lp = float(f(args["o"], args["p"], args["s"]).data)
                args[name] = a2
                lm = float(f(args["o"], args["p"], args["s"]).data)
                num = (lp - lm) / (2 * h)
                ana = g[idx].real if dr == 1.0 else g[idx].imag
                assert num == pytest.approx(ana, rel=1e-4, abs=1e-6), (name, idx, dr)


def _small_problem(sim):
    shape, n = (48, 48), 24
    obj = np.exp(1j * sim.star_phase(shape, amp=0.6))[None]
    c = sim.raster(shape, n, 4, jitter=1.0)
    I, ptrue = sim.simulate(obj, sim.make_probe(n, width=0.5), c, photons=1e4)
    return sim.recon_data(I, c, shape, probe=ptrue), obj


def test_resume_reproduces_uninterrupted_run(sim, tmp_path):
    d, _ = _small_problem(sim)
    base = {
        "model": {"position_correction": True},
        "optimizer": {
            "iterations": 8,
            "batch_size": 8,
            "method": "adam",
            "object": {"lr": 0.05},
            "probe": {"lr": 0.05, "start": 2},
            "positions": {"start": 3},
        },
        "run": {"checkpoint_every": 3},
    }
    ref = Reconstructor(sim.config(**base), d, **QUIET).run()
    ck = tmp_path / "run.ckpt.h5"
    cfg_stop = sim.config(**{**base, "run": {"checkpoint_every": 3, "stop_after": 5}})
    r1 = Reconstructor(cfg_stop, d, checkpoint_path=ck, **QUIET).run()
    assert r1.stopped and r1.iteration == 5 and ck.exists()
    # "killed" after iteration 5: the checkpoint holds iteration 3; resume in a new object
    r2 = Reconstructor(sim.config(**base), d, checkpoint_path=ck, **QUIET).run(resume=True)
    assert r2.iteration == 8
    for k in ref.params:
        np.testing.assert_array_equal(r2.params[k], ref.params[k])
    np.testing.assert_array_equal(r2.positions, ref.positions)
    np.testing.assert_array_equal(r2.history["loss"], ref.history["loss"])


def test_resume_with_other_config_is_refused(sim, tmp_path):
    d, _ = _small_problem(sim)
    ck = tmp_path / "c.h5"
    cfg = sim.config(optimizer={"iterations": 2, "batch_size": 8}, run={"checkpoint_every": 1})
    Reconstructor(cfg, d, checkpoint_path=ck, **QUIET).run()
    cfg2 = sim.config(optimizer={"iterations": 4, "batch_size": 4}, run={"checkpoint_every": 1})
    with pytest.raises(ConfigError, match="different configuration"):
        Reconstructor(cfg2, d, checkpoint_path=ck, **QUIET).run(resume=True)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_is_detected_with_iteration_and_parameter(sim):
    d, _ = _small_problem(sim)
    cfg = sim.config(
        optimizer={"iterations": 5, "batch_size": 8, "method": "adam", "object": {"lr": 1e300}}
    )
    with pytest.raises(DivergenceError, match=r"'object' at iteration 1"):
        Reconstructor(cfg, d, **QUIET).run()


def test_bad_data_errors(sim, tmp_path):
    from xrayflow.reconstruct.data import load_data

    d, _ = _small_problem(sim)
    path = tmp_path / "d.npz"
    np.savez(path, data=d.intensities, scan=d.corners, probe=d.probe.astype(np.complex64))
    # wrong detector size: probe in the file does not match the patterns
    bad = tmp_path / "wrongprobe.npz"
    np.savez(bad, data=d.intensities, scan=d.corners, probe=np.ones((1, 16, 16), complex))
    cfg = sim.config(geometry={"position_reference": "corner"})
    with pytest.raises(DataError, match="probe shape"):
        load_data(bad, cfg)
    # positions off the given object grid
    cfg_small = sim.config(
        geometry={"position_reference": "corner"}, model={"object_shape": [30, 30]}
    )
    with pytest.raises(DataError, match="off the object grid"):
        load_data(path, cfg_small)
    # multislice without any wavelength (no energy)
    cfg_ms = sim.config(
        geometry={"position_reference": "corner"},
        model={"type": "multislice_ptycho", "n_slices": 2, "slice_spacing": 10.0},
    )
    rd = load_data(path, cfg_ms)
    with pytest.raises(DataError, match="wavelength"):
        Reconstructor(cfg_ms, rd, **QUIET)
    # metres without geometry for an archive
    with pytest.raises(ConfigError, match="geometry"):
        load_data(path, sim.config(geometry={"units": "metres"}))
    # missing file, NaN counts
    with pytest.raises(DataError, match="does not exist"):
        load_data(tmp_path / "nope.npz", cfg)
    nan = tmp_path / "nan.npz"
    I = d.intensities.copy()
    I[0, 0, 0] = np.nan
    np.savez(nan, data=I, scan=d.corners)
    with pytest.raises(DataError, match="NaN"):
        load_data(nan, cfg)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_cli_npz_bz2_roundtrip_and_errors(sim, tmp_path, capsys):
    from xrayflow.cli import main
    from xrayflow.io.hdf5 import read_h5

    d, obj = _small_problem(sim)
    buf = io.BytesIO()
    # uncentred patterns, corner positions with an arbitrary offset (like the Siemens data)
    np.savez(
        buf,
        data=d.intensities[None],
        scan=(d.corners - 7.5)[None],
        probe=d.probe[None, None].astype(np.complex64),
    )
    path = tmp_path / "star.npz.bz2"
    path.write_bytes(bz2.compress(buf.getvalue()))
    cfg = tmp_path / "r.yaml"
    cfg.write_text(
        "geometry: {units: pixels, position_reference: corner}\n"
        "optimizer: {iterations: 6, batch_size: 8}\nrun: {log_every: 2}\n"
    )
    out = tmp_path / "r.h5"

    def run(out, *sets):
        args = ["reconstruct", "--config", str(cfg), "--data", str(path), "--out", str(out)]
        return main(args + [a for kv in sets for a in ("--set", kv)])

    rc = run(out)
    assert rc == 0
    err = capsys.readouterr().err
    assert "it/s" in err and "loss" in err and "elapsed" in err and "ETA" in err
    r = read_h5(out)
    assert r["object"].shape[0] == 1 and r["object"].dtype == np.complex64
    assert r["probe"].shape == (1, 24, 24)
    assert r["positions"].shape == r["positions_px"].shape == (d.n_positions, 2)
    assert r["loss"].shape == (6,)
    assert r["config"]["optimizer"]["iterations"] == 6
    assert "provenance" in r and r["timings"]["total_s"] > 0
    # divergence -> exit 2 with the parameter name
    rc = run(tmp_path / "x.h5", "optimizer.method=adam", "optimizer.object.lr=1e300")
    assert rc == 2
    assert "'object'" in capsys.readouterr().err
    # unknown config key -> exit 2
    rc = run(tmp_path / "y.h5", "optimizer.itrations=3")
    assert rc == 2


def test_cxi_geometry_in_metres(sim, tmp_path):
    from xrayflow.io.cxi import DiffractionData, write_cxi
    from xrayflow.optics.constants import wavelength
    from xrayflow.reconstruct.data import load_data

    d, obj = _small_problem(sim)
    n = d.frame_shape[0]
    energy, dx, z = 10000.0, 10e-9, 2.0
    p = wavelength(energy) * z / (n * dx)  # detector pixel giving object pixel dx
    offset = np.asarray(d.object_shape) // 2 - n // 2
    pos_m = (d.corners - offset) * dx
    dd = DiffractionData(
        data=np.fft.fftshift(d.intensities, axes=(-2, -1)),
        energy_ev=energy,
        distance=z,
        pixel_size=(p, p),
        centred=True,
        positions=pos_m,
        truth={"object": obj[0], "probe": d.probe.astype(np.complex64)},
    )
    path = tmp_path / "d.cxi"
    write_cxi(path, dd)
    cfg = sim.config(geometry={"units": "metres"}, optimizer={"iterations": 3})
    rd = load_data(path, cfg)
    assert rd.object_shape == d.object_shape
    assert rd.pixel_size == pytest.approx(dx, rel=1e-6)
    np.testing.assert_allclose(rd.corners, d.corners, atol=1e-6)
    np.testing.assert_allclose(rd.intensities, d.intensities)
    res = Reconstructor(cfg, rd, **QUIET).run()
    assert res.history["loss"][-1] < res.history["loss"][0]
