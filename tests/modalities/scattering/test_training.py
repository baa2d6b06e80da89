"""Tag classifiers of scattering images through the CLI: shards with a Fourier–Bessel view,
training, ``train --infer`` on shards and on simulated CXI files, ``evaluate`` (mAP); and the
refusals of inputs that do not fit."""

from __future__ import annotations

import json
import re
import sys

import h5py
import numpy as np
import pytest
import torch
import yaml
from mpi_util import run_ranks

from xrayflow.cli import main
from xrayflow.config import load_config
from xrayflow.io.cxi import read_cxi
from xrayflow.modalities import stage_schema
from xrayflow.modalities.scattering.fourier_bessel import FourierBessel
from xrayflow.modalities.scattering.tags import TAGS
from xrayflow.modalities.scattering.training import network_inputs
from xrayflow.networks import load_model
from xrayflow.train.infer import network_of
from xrayflow.train.loop import forward, train

SIDE = 32
TAG_SUBSET = [
    "features.main.ring",
    "features.main.halo",
    "image.problem.zingers",
    "instrumental.beam.off_image",
]
TRAIN = {
    "seed": 5,
    "data": {
        "kind": "scattering",
        "n_shards": 2,
        "samples_per_shard": 16,
        "chunk_rows": 8,
        "parallel": "serial",
        "scattering": {
            "energy_ev": 8900.0,
            "geometry": {"shape": SIDE, "pixel_size": 172e-6, "distance": 3.0},
            "scattering": {
                "tags": TAG_SUBSET,
                "beam_center": {"y_range": [-0.2, 1.2], "x_range": [0.2, 0.8]},
                "detector": {"module_shape": [20, 32], "gap_width": [2, 0]},
            },
            "fourier_bessel": {"m_orders": 4, "n_orders": 5, "phase": True},
        },
    },
    "network": {
        "channels": [4, 8],
        "norm": "batch",
        "scattering": {"coefficient_channels": [4, 8], "hidden": 16, "work_size": 16},
    },
    "training": {
        "epochs": 2,
        "global_batch": 8,
        "lr": 3e-3,
        "val_fraction": 0.25,
        "shuffle_buffer": 16,
        "log_every": 0,
        "threads": 1,
    },
    "infer": {"batch": 8},
}


def _write(path, cfg) -> str:
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _simulated_cxi(tmp_path, name="images.cxi", side=SIDE, n=6):
    cfg = {
        "modality": "scattering",
        "energy_ev": 8900.0,
        "seed": 11,
        "geometry": {"shape": side, "pixel_size": 172e-6, "distance": 3.0},
        "scattering": {"n_images": n, "tags": TAG_SUBSET},
        "output": {"compression": "none"},
    }
    out = tmp_path / name
    assert (
        main(["simulate", "--config", _write(tmp_path / f"{name}.yaml", cfg), "--out", str(out)])
        == 0
    )
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Shards, a trained joint model and its predictions on the first shard."""
    d = tmp_path_factory.mktemp("scattering_train")
    cfg = _write(d / "train.yaml", TRAIN)
    shards, model, pred = d / "shards", d / "model.pt", d / "pred.h5"
    assert main(["train", "--generate", "--config", cfg, "--out", str(shards)]) == 0
    assert main(["train", "--config", cfg, "--data", str(shards), "--out", str(model)]) == 0
    first = shards / "shard-00000.h5"
    assert (
        main(["train", "--infer", "--model", str(model), "--data", str(first), "--out", str(pred)])
        == 0
    )
    return {"dir": d, "config": cfg, "shards": shards, "model": model, "pred": pred, "first": first}


def test_shards_hold_images_their_coefficients_and_the_chosen_tags(run):
    with h5py.File(run["first"], "r") as f:
        images, coeffs, tags = f["inputs"][()], f["views_coefficients"][()], f["targets_tags"][()]
        names = json.loads(f.attrs["tag_names"])
    # counts and log-image views, each magnitude (m = 0 signed) and relative phase
    assert images.shape == (16, SIDE, SIDE) and coeffs.shape == (16, 4, 4, 5)
    assert (coeffs[:, 0, 0] < 0).any() and (coeffs[:, 2, 0] < 0).any()
    assert (coeffs[:, 0, 1:] >= 0).all() and (coeffs[:, 2, 1:] >= 0).all()
    assert names == TAG_SUBSET and tags.shape == (16, 4) and set(np.unique(tags)) <= {0.0, 1.0}
    assert np.isfinite(images).all() and np.isfinite(coeffs).all()
    assert images.min() >= 0 and images.max() > 0  # log(1 + counts)/log(full_scale), masked 0
    # the module's gap rows are masked in every image (detector gap: 2 rows after row 20)
    assert not images[:, 20:22].any()


def test_coefficient_view_holds_the_counts_and_log_image_features():
    rng = np.random.default_rng(2)
    counts = rng.poisson(30.0, (2, 40, 48)).astype(float)
    counts[:, 18:22, 20:26] += 5000.0
    masks = np.ones(counts.shape, bool)
    masks[:, 10:12] = False
    centers = np.array([[20.0, 23.0], [-5.0, 30.5]])
    fb_opts = {"m_orders": 4, "n_orders": 6, "phase": False}
    attrs = {"fourier_bessel": {**fb_opts, "signed": True, "log_image": True}, "full_scale": 1e4}
    got = network_inputs(counts, masks, centers, attrs)
    fb = FourierBessel(4, 6)
    image = np.where(masks, np.log1p(counts), 0.0) / np.log(1e4)
    np.testing.assert_allclose(got["input"], image, rtol=1e-6)
    views = [
        fb.features(fb.coefficients(counts, centers, masks), full_scale=1e4, signed=True),
        fb.features(fb.coefficients(image, centers, masks), full_scale=1.0, unit=1e-3, signed=True),
    ]
    assert got["coefficients"].shape == (2, 2, 4, 6)
    np.testing.assert_allclose(got["coefficients"], np.concatenate(views, axis=1), atol=1e-6)
    # shards written before signed/log_image: one unsigned channel of the counts
    old = network_inputs(counts, masks, centers, {"fourier_bessel": fb_opts, "full_scale": 1e4})
    np.testing.assert_allclose(old["coefficients"], np.abs(views[0]), atol=1e-6)


def test_shards_are_the_same_for_the_same_seed(run, tmp_path):
    again = tmp_path / "again"
    assert main(["train", "--generate", "--config", run["config"], "--out", str(again)]) == 0
    for name in ("inputs", "views_coefficients", "targets_tags"):
        with h5py.File(run["first"], "r") as a, h5py.File(again / "shard-00000.h5", "r") as b:
            assert np.array_equal(a[name][()], b[name][()]), name


def test_predictions_are_probabilities_of_the_shard_tags_and_evaluate_scores_them(run):
    with h5py.File(run["pred"], "r") as f:
        probs = f["probabilities"][()]
        names = [n.decode() for n in f["tag_names"][()]]
    assert probs.shape == (16, 4) and ((probs >= 0) & (probs <= 1)).all() and names == TAG_SUBSET
    out = run["dir"] / "metrics.json"
    argv = [
        "evaluate",
        "--result",
        str(run["pred"]),
        "--truth",
        str(run["first"]),
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    metrics = json.loads(out.read_text())
    assert metrics["kind"] == "tags" and metrics["n_samples"] == 16
    assert set(metrics["tags"]) == set(TAG_SUBSET)
    scored = [
        t["average_precision"]
        for t in metrics["tags"].values()
        if t["average_precision"] is not None
    ]
    assert metrics["map"] == pytest.approx(np.mean(scored))


def test_infer_on_a_cxi_file_prepares_images_as_the_shards_were(run, tmp_path):
    cxi = _simulated_cxi(tmp_path)
    pred = tmp_path / "pred.h5"
    assert (
        main(
            [
                "train",
                "--infer",
                "--model",
                str(run["model"]),
                "--data",
                str(cxi),
                "--out",
                str(pred),
            ]
        )
        == 0
    )
    with h5py.File(pred, "r") as f:
        probs = f["probabilities"][()]
    d = read_cxi(cxi)
    model, _, _, meta = load_model(run["model"], build=network_of)
    inputs = network_inputs(
        np.asarray(d.data, float),
        d.signals["frame_mask"],
        d.signals["beam_center"],
        meta["data_attrs"],
    )
    model.eval()
    with torch.no_grad():
        batch = {k: torch.from_numpy(v) for k, v in inputs.items()}
        expected = torch.sigmoid(forward(model, batch, meta["views"])["tags"]).numpy()
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-6)
    # and evaluate scores predictions on a CXI file against its own tags
    out = tmp_path / "m.json"
    assert main(["evaluate", "--result", str(pred), "--truth", str(cxi), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["n_samples"] == 6


def test_an_image_of_another_size_is_refused_naming_the_file(run, tmp_path, capsys):
    cxi = _simulated_cxi(tmp_path, "big.cxi", side=48, n=2)
    pred = tmp_path / "pred.h5"
    rc = main(
        ["train", "--infer", "--model", str(run["model"]), "--data", str(cxi), "--out", str(pred)]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "big.cxi" in err and "48" in err and "Traceback" not in err
    assert not pred.exists()


def test_a_cxi_without_beam_centres_is_refused(run, tmp_path, capsys):
    cxi = _simulated_cxi(tmp_path, n=2)
    with h5py.File(cxi, "a") as f:
        del f["entry_1/xrayflow_signals/beam_center"]
    pred = tmp_path / "pred.h5"
    rc = main(
        ["train", "--infer", "--model", str(run["model"]), "--data", str(cxi), "--out", str(pred)]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "beam_center" in err and not pred.exists()


def test_a_non_finite_pixel_is_refused_naming_its_frame(run, tmp_path, capsys):
    cxi = _simulated_cxi(tmp_path, n=3)
    with h5py.File(cxi, "a") as f:
        data = f["entry_1/data_1/data"]
        frame = data[2]
        frame[5, 7] = np.nan
        data[2] = frame
    pred = tmp_path / "pred.h5"
    rc = main(
        ["train", "--infer", "--model", str(run["model"]), "--data", str(cxi), "--out", str(pred)]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "frame 2" in err and "NaN" in err and not pred.exists()


def test_evaluate_refuses_predictions_of_other_samples(run, tmp_path, capsys):
    out = tmp_path / "m.json"
    second = run["shards"] / "shard-00001.h5"
    with h5py.File(second, "r") as f:
        assert len(f["targets_tags"]) == 16
    short = tmp_path / "short.h5"
    with h5py.File(run["pred"], "r") as src, h5py.File(short, "w") as dst:
        dst.attrs.update(src.attrs)
        dst["probabilities"] = src["probabilities"][:10]
        dst["tag_names"] = src["tag_names"][()]
    rc = main(["evaluate", "--result", str(short), "--truth", str(second), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "10 predictions" in err and not out.exists()


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("data.scattering.scattering.tags", ["features.main.rng"], r"features\.main\.rng"),
        ("network.scattering.vew", "image", r"network\.scattering"),
        ("network.scattering.view", "both", r"network\.scattering\.view"),
    ],
)
def test_bad_train_configs_exit_2_naming_the_key(tmp_path, capsys, key, value, message):
    cfg = json.loads(json.dumps(TRAIN))
    *path, last = key.split(".")
    node = cfg
    for p in path:
        node = node.setdefault(p, {})
    node[last] = value
    out = tmp_path / "shards"
    rc = main(
        ["train", "--generate", "--config", _write(tmp_path / "c.yaml", cfg), "--out", str(out)]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert re.search(message, err), err
    assert not out.exists() or not any(out.iterdir())


def test_the_model_records_its_view_and_the_tag_vocabulary(run):
    _, config, _, meta = load_model(run["model"], build=network_of)
    names = meta["data_attrs"]["tag_names"]
    assert (json.loads(names) if isinstance(names, str) else list(names)) == TAG_SUBSET
    assert set(TAG_SUBSET) <= set(TAGS)
    assert config["network"]["scattering"]["view"] == "joint"
    assert {k: list(v) for k, v in meta["views"].items()} == {"coefficients": [4, 4, 5]}


MPI_TRAIN = """
import json, sys
from xrayflow.config import load_config
from xrayflow.modalities import stage_schema
from xrayflow.train.loop import train
cfg = load_config(json.loads(sys.argv[1]), stage_schema("train"), name="train")
train(cfg, sys.argv[2], sys.argv[3], log=lambda *_: None)
"""


@pytest.mark.mpi
def test_two_ranks_train_the_joint_network_as_one_does(run, tmp_path):
    """Both views and the class weights go through the distributed loader and loss."""
    raw = json.loads(json.dumps(TRAIN))
    raw["training"]["epochs"] = 1
    cfg = load_config(raw, stage_schema("train"), name="train")
    train(cfg, run["shards"], tmp_path / "r1.pt", log=lambda *_: None)
    cmd = [sys.executable, "-c", MPI_TRAIN, json.dumps(cfg), run["shards"], tmp_path / "r2.pt"]
    p = run_ranks(cmd, 2, timeout=180, mpi=True)
    assert p.returncode == 0, p.stdout + p.stderr
    one = load_model(tmp_path / "r1.pt", build=network_of)[0].state_dict()
    two = load_model(tmp_path / "r2.pt", build=network_of)[0].state_dict()
    for k, v in one.items():
        if v.is_floating_point():
            torch.testing.assert_close(two[k], v, rtol=1e-5, atol=1e-6, msg=k)
