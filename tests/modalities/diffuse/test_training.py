"""Diffuse training end to end through the CLI (generate -> train -> infer -> evaluate),
determinism of the shards, the hooks on their own, and bad inputs (exit 2, no output)."""

import json

import h5py
import numpy as np
import pytest
import torch
import yaml

from xrayflow.cli import main
from xrayflow.config import load_config
from xrayflow.errors import ConfigError, DataError
from xrayflow.modalities import stage_schema
from xrayflow.modalities.diffuse import training as hooks
from xrayflow.networks import EncodingRegressor

CONFIG = {
    "seed": 2,
    "data": {
        "kind": "diffuse",
        "n_shards": 2,
        "samples_per_shard": 20,
        "chunk_rows": 8,
        "parallel": "serial",
        "diffuse": {
            "dimension": 3,
            "lattice": {"shape": [32, 32], "n_lattices": 2},
            "image": {"size": 32},
        },
    },
    "network": {"norm": "batch"},
    "training": {
        "epochs": 2,
        "global_batch": 8,
        "lr": 2.0e-3,
        "val_fraction": 0.25,
        "shuffle_buffer": 16,
        "threads": 1,
        "log_every": 0,
    },
    "infer": {"batch": 16},
}


def _write(path, cfg):
    path.write_text(yaml.safe_dump(cfg))
    return path


def train_cli(*args):
    return main(["train", *map(str, args)])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Shards, a model, predictions on a shard and a CXI file, and their evaluation."""
    d = tmp_path_factory.mktemp("diffuse")
    cfg = _write(d / "train.yaml", CONFIG)
    shards, model = d / "shards", d / "model.pt"
    assert train_cli("--generate", "--config", cfg, "--out", shards) == 0
    assert train_cli("--config", cfg, "--data", shards, "--out", model) == 0
    pred = d / "pred.h5"
    truth = shards / "shard-00001.h5"
    assert train_cli("--infer", "--model", model, "--data", truth, "--out", pred) == 0
    assert (
        main(["evaluate", "--result", str(pred), "--truth", str(truth), "--out",
              str(d / "metrics.json"), "--figures", str(d / "figs")])
        == 0
    )  # fmt: skip
    return {"dir": d, "config": cfg, "shards": shards, "model": model, "pred": pred}


def test_generate_train_infer_evaluate(run, capsys):
    d = run["dir"]
    with h5py.File(run["shards"] / "shard-00000.h5") as f:
        assert f["inputs"].shape == (20, 32, 32) and f["targets_encoding"].shape == (20, 3)
        assert f.attrs["kind"] == "diffuse"
        assert json.loads(f.attrs["encoding_names"]) == ["a(1,0)", "a(0,1)", "a(1,1)"]
        x = f["inputs"][()]
        assert np.all(x >= 0) and np.all(x[:, 0, 0] == 0)  # Bragg pixel (-1, -1) masked
    with h5py.File(run["pred"]) as f:
        assert f["encoding"].shape == (20, 3) and f.attrs["modality"] == "diffuse"
        assert [v.decode() for v in f["encoding_names"][()]] == ["a(1,0)", "a(0,1)", "a(1,1)"]
        np.testing.assert_array_equal(f["neighbour_vectors"][()], [[1, 0], [0, 1], [1, 1]])
    m = json.loads((d / "metrics.json").read_text())
    assert m["kind"] == "encoding" and m["mode"] == "truth" and m["n_samples"] == 20
    assert len(m["r2_per_variable"]) == 3 and set(m["variables"]) == {"a(1,0)", "a(0,1)", "a(1,1)"}
    assert m["n_images"] == 20 and np.isfinite(m["r2_images"])
    assert sorted(p.name for p in (d / "figs").iterdir()) == sorted(
        ["correlation_table.png", "images.png", "predicted_vs_true.png"]
    )


def test_same_seed_gives_identical_shards(run, tmp_path):
    again = tmp_path / "again"
    assert train_cli("--generate", "--config", run["config"], "--out", again) == 0
    for name in ("shard-00000.h5", "shard-00001.h5"):
        with h5py.File(run["shards"] / name) as a, h5py.File(again / name) as b:
            for key in ("inputs", "targets_encoding"):
                np.testing.assert_array_equal(a[key][()], b[key][()])


def test_infer_reads_cxi_files_of_the_simulate_stage(run, tmp_path):
    sim = {
        "modality": "diffuse",
        "energy_ev": 10000.0,
        "seed": 1,
        "diffuse": {**CONFIG["data"]["diffuse"], "n_samples": 3},
        "output": {"compression": "none"},
    }
    cfg = _write(tmp_path / "sim.yaml", sim)
    cxi, pred = tmp_path / "d.cxi", tmp_path / "p.h5"
    assert main(["simulate", "-c", str(cfg), "-o", str(cxi)]) == 0
    assert train_cli("--infer", "--model", run["model"], "--data", cxi, "--out", pred) == 0
    out = tmp_path / "m.json"
    assert main(["evaluate", "--result", str(pred), "--truth", str(cxi), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["n_samples"] == 3


def _cxi(tmp_path, name, size=32, bad=None):
    """A CXI file of the simulate stage's layout with its images replaced."""
    sim = {
        "modality": "diffuse",
        "energy_ev": 10000.0,
        "diffuse": {
            **CONFIG["data"]["diffuse"],
            "n_samples": 2,
            "lattice": {"shape": [size, size], "n_lattices": 1},
            "image": {"size": size},
        },
        "output": {"compression": "none"},
    }
    path = tmp_path / name
    assert (
        main(["simulate", "-c", str(_write(tmp_path / f"{name}.yaml", sim)), "-o", str(path)]) == 0
    )
    if bad is not None:
        with h5py.File(path, "a") as f:
            data = f["entry_1/data_1/data"]
            frame = data[1]
            frame[5, 7] = bad
            data[1] = frame
    return path


@pytest.mark.parametrize(
    "size, bad, match",
    [(32, np.nan, r"NaN"), (32, -3.0, "negative"), (16, None, r"do not match the model input")],
    ids=["nan", "negative", "size"],
)
def test_bad_inference_input_exits_2_and_writes_nothing(run, tmp_path, capsys, size, bad, match):
    path = _cxi(tmp_path, f"bad{size}.cxi", size, bad)
    pred = tmp_path / "pred.h5"
    assert train_cli("--infer", "--model", run["model"], "--data", path, "--out", pred) == 2
    err = capsys.readouterr().err
    assert str(path) in err and __import__("re").search(match, err), err
    assert not pred.exists()


def test_bad_generate_config_exits_2_and_writes_nothing(tmp_path, capsys):
    cfg = json.loads(json.dumps(CONFIG))
    cfg["data"]["diffuse"].update(dimension=15, lattice={"shape": [6, 6]})
    out = tmp_path / "shards"
    assert train_cli("--generate", "--config", _write(tmp_path / "t.yaml", cfg), "--out", out) == 2
    err = capsys.readouterr().err
    assert "train.data.diffuse.lattice.shape" in err and "too small" in err
    assert not out.exists()


def _train_cfg():
    return load_config(json.loads(json.dumps(CONFIG)), stage_schema("train"), name="train")


def test_hooks_layout_measure_network_and_losses():
    cfg = _train_cfg()
    data = cfg["data"]
    shape, targets, attrs, extras = hooks.shard_layout(data)
    assert shape == (32, 32) and targets == {"encoding": (3,)} and extras == {}
    rng = np.random.default_rng(0)
    block, labels = next(hooks.simulate(data, {}, [2], rng, None))
    assert block["expected"].shape == (2, 32, 32) and labels["encoding"].shape == (2, 3)
    x = hooks.measure(block, data, rng)["input"]
    assert x.dtype == np.float32 and np.all(x[:, block["mask"]] == 0)
    lin = hooks.network_inputs(block["expected"], block["mask"], "normalised")
    np.testing.assert_allclose(lin[:, ~block["mask"]].mean(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(hooks.network_inputs(block["expected"], block["mask"], "log"),
                               np.log1p(lin), rtol=1e-6)  # fmt: skip
    net = hooks.network({"norm": "batch", "diffuse": {"size": "small"}}, 32, 3)
    assert isinstance(net, EncodingRegressor) and net.output_size == 3
    out = {"encoding": torch.zeros(4, 3)}
    batch = {"encoding": torch.ones(4, 3)}
    terms = hooks.losses(out, batch, {"diffuse": {"kind": "mse"}}, {})
    assert terms["total"].shape == (4,) and torch.allclose(terms["mse"], torch.ones(4))
    assert "mae" in hooks.losses(out, batch, {"diffuse": {"kind": "mae"}}, {})
    with pytest.raises(ConfigError, match="output_size"):
        hooks.check(cfg, 3, 2)
    with pytest.raises(ConfigError, match="supervised"):
        hooks.check({"training": {"loss": {"mode": "unsupervised"}}}, 3, 3)
    with pytest.raises(DataError, match="no counts"):
        hooks.network_inputs(np.zeros((1, 8, 8)), np.zeros((8, 8), bool), "log")
