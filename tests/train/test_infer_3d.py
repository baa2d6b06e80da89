"""``xrayflow train --infer`` with a 3D Bragg CDI network (issue 17): one volume as the
simulate stage writes it, a stack of volumes, a shard, patterns of another size than the
network's (cropped or zero-padded about the zero frequency), and bad inputs."""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from xrayflow.cli import main
from xrayflow.io.cxi import DETECTOR, DiffractionData, write_cxi
from xrayflow.modalities.bragg_cdi.grid import crop, embed
from xrayflow.modalities.bragg_cdi.network_start import network_predict
from xrayflow.train.loop import train

ROOT = Path(__file__).resolve().parents[2]
N = 16  # network input side (tiny_config: crystal box 8, oversampling 2)


@pytest.fixture
def model(shards3d, tiny_config, tmp_path):
    """A 3D network (16^3 amplitude -> 8^3 support and phase) trained for one epoch."""
    out = tmp_path / "m.pt"
    train(tiny_config("bragg_cdi", epochs=1, global_batch=4), shards3d, out, log=lambda *_: None)
    return out


def _infer(model, data, out, *settings) -> int:
    sets = [a for s in settings for a in ("--set", s)]
    return main(
        ["train", "--infer", "--model", str(model), "--data", str(data), "--out", str(out), *sets]
    )


def _cxi(path, counts, centred=True, **attrs) -> Path:
    """A CXI file holding one 3D pattern (frames = rocking axis), as bragg_cdi writes it."""
    attrs = {"modality": "bragg_cdi", "fft_ndim": 3, **attrs}
    d = DiffractionData(np.asarray(counts, np.float32), 9000.0, 1.0, (55e-6, 55e-6), centred)
    d.attrs.update(attrs)
    return write_cxi(path, d)


def _volumes(n: int, shape=(N, N, N), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).poisson(50.0, (n, *shape)).astype(np.float32)


def _predicted(path) -> dict:
    with h5py.File(path) as f:
        return {"support": f["support"][()], "phase": f["phase"][()], "attrs": dict(f.attrs)}


def test_a_simulated_volume_through_the_cli(model, tmp_path, capsys):
    sim = tmp_path / "sim.cxi"
    cfg = ROOT / "config" / "simulate" / "bragg_cdi.yaml"
    assert (
        main(
            [
                "simulate",
                "--config",
                str(cfg),
                "--out",
                str(sim),
                "--set",
                f"geometry.shape=[{N},{N}]",
            ]
        )
        == 0
    )
    assert _infer(model, sim, tmp_path / "p.h5") == 0
    p = _predicted(tmp_path / "p.h5")
    assert p["support"].shape == p["phase"].shape == (1, 8, 8, 8)
    assert p["attrs"]["n_patterns"] == 1 and p["attrs"]["modality"] == "bragg_cdi"
    assert "resampled" not in p["attrs"]
    with h5py.File(sim) as f:
        counts = f["entry_1/data_1/data"][()]
    sup, ph, _ = network_predict(model, counts)  # the reconstruct stage's network start
    np.testing.assert_allclose(p["support"][0], sup, atol=1e-5)
    np.testing.assert_allclose(p["phase"][0], ph, atol=1e-5)
    assert "1 patterns" in capsys.readouterr().out


def test_a_stack_of_volumes_and_a_shard(model, shards3d, tmp_path):
    vols = _volumes(3)
    path = _cxi(tmp_path / "one.cxi", vols[0])
    with h5py.File(path, "a") as f:  # the same file layout with a 4D dataset (B, Z, Y, X)
        del f[f"{DETECTOR}/data"]
        ds = f.create_dataset(f"{DETECTOR}/data", data=np.fft.ifftshift(vols, axes=(1, 2, 3)))
        ds.attrs["centred"] = False
    assert _infer(model, path, tmp_path / "p.h5", "infer.batch=2") == 0
    p = _predicted(tmp_path / "p.h5")
    sup, ph, _ = network_predict(model, vols)
    assert p["support"].shape == (3, 8, 8, 8)
    np.testing.assert_allclose(p["phase"], ph, atol=1e-5)
    np.testing.assert_allclose(p["support"], sup, atol=1e-5)
    shard = shards3d / "shard-00000.h5"
    assert _infer(model, shard, tmp_path / "s.h5") == 0
    with h5py.File(shard) as f:
        assert _predicted(tmp_path / "s.h5")["phase"].shape == (f["inputs"].shape[0], 8, 8, 8)


@pytest.mark.parametrize(
    ("shape", "verb", "fit"),
    [((2 * N, 2 * N, 2 * N), "cropped", crop), ((12, 10, 12), "zero-padded", embed)],
    ids=["larger", "smaller"],
)
def test_another_pattern_size_is_cropped_or_padded_about_the_centre(
    model, tmp_path, capsys, shape, verb, fit
):
    counts = _volumes(1, shape)[0]
    assert _infer(model, _cxi(tmp_path / "d.cxi", counts), tmp_path / "p.h5") == 0
    p = _predicted(tmp_path / "p.h5")
    assert verb in p["attrs"]["resampled"] and verb in capsys.readouterr().err
    np.testing.assert_allclose(p["attrs"]["voxel_scale"], np.array(shape) / N)
    assert list(p["attrs"]["data_pattern_shape"]) == list(shape)
    _, ph, _ = network_predict(model, fit(counts, (N, N, N)))
    np.testing.assert_allclose(p["phase"][0], ph, atol=1e-5)


def _ptycho_frames(path):
    d = DiffractionData(_volumes(1)[0], 9000.0, 1.0, (55e-6, 55e-6))
    d.attrs["modality"] = "ptycho2d"
    write_cxi(path, d)


def _nan_voxel(path):
    counts = _volumes(1)[0]
    counts[3, 4, 5] = np.nan
    with h5py.File(_cxi(path, np.zeros_like(counts)), "a") as f:
        f[f"{DETECTOR}/data"][...] = counts


def _one_frame(path):
    with h5py.File(path, "w") as f:
        f["entry_1/data_1/data"] = np.ones((N, N), np.float32)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (_ptycho_frames, r"separate 2D patterns \(ptycho2d data"),
        (_nan_voxel, r"frame 3 holds NaN at index \(4, 5\)"),
        (_one_frame, r"is not a stack of patterns"),
    ],
    ids=["2d-frames", "nan", "single-frame"],
)
def test_bad_input_exits_2_naming_the_file(model, tmp_path, capsys, make, match):
    data, out = tmp_path / "bad.cxi", tmp_path / "p.h5"
    make(data)
    assert _infer(model, data, out) == 2
    err = capsys.readouterr().err
    assert "bad.cxi" in err and "Traceback" not in err
    assert re.search(match, err), err
    assert not out.exists() and not list(tmp_path.glob("p.h5.tmp-*"))
