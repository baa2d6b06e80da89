"""Training: loss decreases, resume is bit-identical, model files, 2 ranks = 1 rank, CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mpi_util import run_ranks

from xrayflow.errors import ConfigError, DataError
from xrayflow.modalities.bragg_cdi import training as bragg
from xrayflow.modalities.ptycho2d import training as ptycho
from xrayflow.networks import load_model
from xrayflow.train.hooks import training_hooks
from xrayflow.train.loop import train


def _weights(path) -> dict:
    obj = torch.load(path, weights_only=True)
    return obj["state_dict"]


def test_loss_decreases(shards2d, tiny_config, tmp_path):
    cfg = tiny_config(epochs=3)
    s = train(cfg, shards2d, tmp_path / "m.pt", log=lambda *_: None)
    rec = [json.loads(x) for x in (tmp_path / "m.pt.metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rec] == [0, 1, 2] and s["finished"]
    assert rec[-1]["train_loss"] < 0.7 * rec[0]["train_loss"]
    assert rec[-1]["val_loss"] < rec[0]["val_loss"]
    assert all(r["samples_per_s"] > 0 for r in rec)


def test_model_file_weights_only_with_config_and_provenance(shards2d, tiny_config, tmp_path):
    cfg = tiny_config(epochs=1)
    train(cfg, shards2d, tmp_path / "m.pt", log=lambda *_: None)
    obj = torch.load(tmp_path / "m.pt", weights_only=True)
    assert json.loads(obj["config_json"])["network"]["channels"] == [4, 8]
    prov = json.loads(obj["provenance_json"])
    assert "time_utc" in prov or "seed" in prov
    model, config, prov2, meta = load_model(tmp_path / "m.pt")
    assert meta["input_size"] == 16 and meta["data_attrs"]["noise_model"] == "poisson_intensity"
    out = model(torch.rand(3, 16, 16))
    assert out["amplitude"].shape == (3, 16, 16) and out["phase"].shape == (3, 16, 16)


def test_resume_is_bit_identical(shards2d, tiny_config, tmp_path):
    full = tiny_config(epochs=2, checkpoint_every=2)
    train(full, shards2d, tmp_path / "a.pt", log=lambda *_: None)
    part = tiny_config(epochs=2, checkpoint_every=2, max_steps=5)  # stops mid-epoch 0/1
    s = train(part, shards2d, tmp_path / "b.pt", log=lambda *_: None)
    assert not s["finished"] and not (tmp_path / "b.pt").exists()
    s = train(
        tiny_config(epochs=2, checkpoint_every=2),
        shards2d,
        tmp_path / "b.pt",
        resume=True,
        log=lambda *_: None,
    )
    assert s["finished"]
    wa, wb = _weights(tmp_path / "a.pt"), _weights(tmp_path / "b.pt")
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    la = (tmp_path / "a.pt.metrics.jsonl").read_text().splitlines()
    lb = (tmp_path / "b.pt.metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["train_loss"] for x in la] == [json.loads(x)["train_loss"] for x in lb]


def test_early_stopping_and_unsupervised_and_3d(shards2d, shards3d, tiny_config, tmp_path):
    cfg = tiny_config(epochs=6, lr=1e-9, early_stopping={"patience": 1, "min_delta": 1.0})
    s = train(cfg, shards2d, tmp_path / "es.pt", log=lambda *_: None)
    assert s["stopped_early"] and s["epochs"] == 2
    cfg = tiny_config(epochs=1, loss={"mode": "both"})
    s = train(cfg, shards2d, tmp_path / "u.pt", log=lambda *_: None)
    assert np.isfinite(s["best_val_loss"])
    cfg = tiny_config(epochs=1, global_batch=4, loss={"mode": "both"})
    s = train(cfg, shards3d, tmp_path / "c.pt", log=lambda *_: None)
    model, *_ = load_model(tmp_path / "c.pt")
    assert model(torch.rand(2, 16, 16, 16))["support"].shape == (2, 8, 8, 8)


def test_unsupervised_loss_is_zero_for_the_true_object():
    torch.manual_seed(0)
    n = 16
    probe = torch.randn(n, n, dtype=torch.complex64)
    amp, ph = torch.rand(2, n, n) * 0.5 + 0.5, torch.rand(2, n, n) - 0.5
    F = torch.fft.fftshift(torch.fft.fft2(probe * torch.polar(amp, ph), norm="ortho"), dim=(-2, -1))
    batch = {"input": F.abs(), "amplitude": amp, "phase": ph}
    t = ptycho.losses({"amplitude": amp, "phase": ph}, batch, {"mode": "both"}, {"probe": probe})
    assert float(t["total"].abs().max()) < 1e-8
    sup = (torch.rand(1, 8, 8, 8) > 0.5).float()
    ph3 = torch.rand(1, 8, 8, 8) * sup
    rho = torch.nn.functional.pad(torch.polar(sup, ph3), (4, 4) * 3)
    F3 = torch.fft.fftshift(torch.fft.fftn(rho, dim=(-3, -2, -1), norm="ortho"), dim=(-3, -2, -1))
    b3 = {"input": 7.0 * F3.abs(), "support": sup, "phase": ph3}
    t3 = bragg.losses({"support": sup, "phase": ph3}, b3, {"mode": "both"}, {})
    assert float(t3["total"].abs().max()) < 1e-8


def test_3d_loss_is_twin_invariant_and_2d_targets_are_centre_cropped():
    torch.manual_seed(1)
    sup = (torch.rand(2, 8, 8, 8) > 0.5).float()
    ph = (torch.rand(2, 8, 8, 8) - 0.5) * sup
    batch = {"support": sup, "phase": ph}
    twin = {"support": sup.flip((1, 2, 3)), "phase": -ph.flip((1, 2, 3))}
    assert float(bragg.losses(twin, batch, {}, {})["total"].abs().max()) == 0.0
    other = {"support": sup.flip((1,)), "phase": ph.flip((1,))}  # a mirror is not a twin
    assert float(bragg.losses(other, batch, {}, {})["total"].min()) > 0.01
    amp, ph2 = torch.rand(3, 16, 16), torch.rand(3, 16, 16)
    out = {"amplitude": amp[:, 4:12, 4:12], "phase": ph2[:, 4:12, 4:12]}
    t = ptycho.losses(out, {"amplitude": amp, "phase": ph2}, {}, {})
    assert float(t["total"].abs().max()) == 0.0
    out["phase"] = ph2[:, 3:11, 4:12]
    assert float(ptycho.losses(out, {"amplitude": amp, "phase": ph2}, {}, {})["total"].min()) > 0


def test_2d_output_size_smaller_than_patch(shards2d, tiny_config, tmp_path):
    cfg = tiny_config(epochs=1)
    cfg["network"]["output_size"] = 8
    train(cfg, shards2d, tmp_path / "c.pt", log=lambda *_: None)
    model, _, _, meta = load_model(tmp_path / "c.pt")
    assert meta["output_size"] == 8 and model(torch.rand(2, 16, 16))["phase"].shape == (2, 8, 8)
    for size, loss, what in ((18, {}, "<= the targets"), (8, {"mode": "both"}, "far")):
        cfg = tiny_config(epochs=1, loss=loss)
        cfg["network"]["output_size"] = size
        with pytest.raises(ConfigError, match=what):
            train(cfg, shards2d, tmp_path / "x.pt", log=lambda *_: None)


def test_network_sizes():
    net = ptycho.network({"kind": "ptycho2d", "channels": [32, 64, 128]}, 64)
    assert 1.0e6 < sum(p.numel() for p in net.parameters()) < 1.5e6  # PtychoNN: 1.25 M
    net3 = bragg.network({"kind": "bragg_cdi", "channels": [4, 8, 16]}, 32, 16)
    assert net3(torch.rand(1, 32, 32, 32))["phase"].shape == (1, 16, 16, 16)


MPI_SCRIPT = """
import json, sys
from xrayflow.config import load_config
from xrayflow.modalities import stage_schema
from xrayflow.train.loop import train
cfg = load_config(json.loads(sys.argv[1]), stage_schema("train"), name="train")
train(cfg, sys.argv[2], sys.argv[3], log=lambda *_: None)
"""


@pytest.mark.mpi
def test_two_ranks_match_one_rank(shards2d, tiny_config, tmp_path):
    cfg = tiny_config(epochs=1)
    train(cfg, shards2d, tmp_path / "r1.pt", log=lambda *_: None)  # 1 rank, in process
    cmd = [sys.executable, "-c", MPI_SCRIPT, json.dumps(cfg), shards2d, tmp_path / "r2.pt"]
    p = run_ranks(cmd, 2, timeout=180, mpi=True)
    assert p.returncode == 0, p.stdout + p.stderr
    res = {1: _weights(tmp_path / "r1.pt"), 2: _weights(tmp_path / "r2.pt")}
    for k, v in res[1].items():
        if v.is_floating_point():
            torch.testing.assert_close(res[2][k], v, rtol=1e-5, atol=1e-6, msg=k)
    m1 = [json.loads(x) for x in (tmp_path / "r1.pt.metrics.jsonl").read_text().splitlines()]
    m2 = [json.loads(x) for x in (tmp_path / "r2.pt.metrics.jsonl").read_text().splitlines()]
    assert m2[0]["ranks"] == 2
    np.testing.assert_allclose([r["val_loss"] for r in m2], [r["val_loss"] for r in m1], rtol=1e-5)


def test_cli_generate_train_infer(tmp_path):
    from xrayflow.cli import main

    cfg = Path(__file__).resolve().parents[2] / "config" / "train" / "tiny.yaml"
    data, model, pred = tmp_path / "shards", tmp_path / "m.pt", tmp_path / "pred.h5"

    def run(*args):
        return main(["train", *map(str, args)])

    def fit(out, setting):
        return run("--config", cfg, "--data", data, "--out", out, "--set", setting)

    assert run("--generate", "--config", cfg, "--out", data) == 0
    assert fit(model, "training.epochs=1") == 0
    assert run("--infer", "--model", model, "--data", data / "shard-00000.h5", "--out", pred) == 0
    import h5py

    with h5py.File(pred) as f:
        assert f["amplitude"].shape[0] == f["phase"].shape[0] > 0
        assert f.attrs["time_per_pattern_s"] > 0
    assert fit(tmp_path / "x.pt", "training.bogus=1") == 2


def test_generated_data_and_loss_share_conventions(tiny_config, tmp_path):
    """The true objects of noise-free shards give ~0 far-field loss (2D probe, 3D crystal)."""
    from xrayflow.train.generate import generate_shard
    from xrayflow.train.shards import read_shard, shard_extras

    for kind, names in (
        ("ptycho2d", ("amplitude", "phase")),
        ("bragg_cdi", ("support", "phase")),
    ):
        cfg = tiny_config(kind)
        cfg["data"].update(noise="none", samples_per_shard=4)
        cfg["data"]["bragg_cdi"]["size"] = 8
        p = generate_shard(cfg, 0, tmp_path / kind)
        r = {k: torch.from_numpy(v) for k, v in read_shard(p).items()}
        probe = shard_extras(p, "probe")
        extras = {} if probe is None else {"probe": torch.from_numpy(probe)}
        batch = {"input": r["inputs"], **{k: r[k] for k in names}}
        losses = training_hooks(kind, "kind")[1].losses
        t = losses({k: r[k] for k in names}, batch, {"mode": "unsupervised"}, extras)
        true_loss = float(t["far_field"].max())
        assert true_loss < 1e-6, kind
        wrong = {k: r[k].flip(-1) for k in names}
        t = losses(wrong, batch, {"mode": "unsupervised"}, extras)
        assert float(t["far_field"].min()) > 1e-5 + 100 * true_loss, kind


def test_infer_on_cxi(shards2d, tiny_config, tmp_path):
    """Inference reads CXI counts (sqrt, centring) and matches the shard path."""
    import h5py

    from xrayflow.io.cxi import DiffractionData, write_cxi
    from xrayflow.train.infer import infer
    from xrayflow.train.shards import read_shard, write_shard

    train(tiny_config(epochs=1), shards2d, tmp_path / "m.pt", log=lambda *_: None)
    amp = read_shard(shards2d / "shard-00000.h5")["inputs"][:5]
    uncentred = np.fft.ifftshift(amp**2, axes=(-2, -1)).astype(np.float32)
    dd = DiffractionData(uncentred, 8000.0, 1.0, (75e-6, 75e-6), centred=False)
    write_cxi(tmp_path / "d.cxi", dd)
    s = infer(tmp_path / "m.pt", tmp_path / "d.cxi", tmp_path / "p1.h5", batch=2, log=print)
    assert s["n_patterns"] == 5 and s["time_per_pattern_s"] > 0
    write_shard(tmp_path / "s.h5", amp, {"phase": amp}, chunk_rows=2)
    infer(tmp_path / "m.pt", tmp_path / "s.h5", tmp_path / "p2.h5", batch=3, log=print)
    with h5py.File(tmp_path / "p1.h5") as a, h5py.File(tmp_path / "p2.h5") as b:
        np.testing.assert_allclose(a["phase"][()], b["phase"][()], rtol=1e-5, atol=1e-6)
        assert a["amplitude"].shape == (5, 16, 16)


def test_train_restores_global_torch_settings(shards2d, tiny_config, tmp_path):
    threads = torch.get_num_threads()
    assert not torch.are_deterministic_algorithms_enabled()
    train(tiny_config(epochs=1), shards2d, tmp_path / "m.pt", log=lambda *_: None)
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.get_num_threads() == threads
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with pytest.raises(DataError):  # raised after the run switched the settings
            train(tiny_config(epochs=1), tmp_path / "none", tmp_path / "e.pt", log=lambda *_: None)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
