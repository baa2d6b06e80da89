"""The train stage finds a modality's training hooks by name, one name per modality, and
still reads shards and model files written with the former names."""

from __future__ import annotations

import json
import shutil

import h5py
import pytest
import torch

from xrayflow.config import load_config
from xrayflow.errors import ConfigError
from xrayflow.modalities import stage_schema
from xrayflow.modalities.bragg_cdi import training as bragg
from xrayflow.modalities.scattering import training as scattering
from xrayflow.networks import load_model, save_model
from xrayflow.train.hooks import shard_hooks, training_hooks
from xrayflow.train.loop import train
from xrayflow.train.shards import shard_info


def test_names_and_former_names_resolve_once():
    assert training_hooks("bragg_cdi", "k") == ("bragg_cdi", bragg)
    assert training_hooks("bragg_cdi3d", "k")[0] == training_hooks("cdi3d", "k")[0] == "bragg_cdi"
    with pytest.raises(ConfigError, match=r"data\.kind: unknown modality 'ptycho2'.*'ptycho2d'"):
        training_hooks("ptycho2", "data.kind")
    with pytest.raises(ConfigError, match=r"data\.kind: no network can be trained on.*holog"):
        training_hooks("holography", "data.kind")


def test_schema_lists_the_trainable_modalities_and_their_sections():
    sch = stage_schema("train")["properties"]
    trainable = ["ptycho2d", "bragg_cdi", "scattering", "diffuse"]
    assert sch["data"]["properties"]["kind"]["enum"] == trainable
    assert sch["network"]["properties"]["kind"]["enum"] == ["auto", *trainable]
    assert sch["data"]["properties"]["bragg_cdi"] == bragg.DATA_SECTION
    # a modality's own network and loss options sit under its name, nowhere else
    assert sch["network"]["properties"]["scattering"] == scattering.NETWORK_SECTION
    assert sch["training"]["properties"]["loss"]["properties"]["scattering"] == (
        scattering.LOSS_SECTION
    )
    assert "bragg_cdi" not in sch["network"]["properties"]
    cfg = load_config({}, stage_schema("train"), name="train")
    assert cfg["data"]["kind"] == "ptycho2d" and cfg["data"]["bragg_cdi"]["size"] == 32
    for key, old in (("data.kind", "bragg_cdi3d"), ("network.kind", "cdi3d")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_config({}, stage_schema("train"), [f"{key}={old}"], "train")


def test_shards_with_the_former_kind_train(shards3d, tiny_config, tmp_path):
    data = shutil.copytree(shards3d, tmp_path / "old")
    for p in data.glob("*.h5"):
        with h5py.File(p, "a") as f:
            f.attrs["kind"] = "bragg_cdi3d"
    assert shard_hooks(shard_info(data / "shard-00000.h5"))[0] == "bragg_cdi"
    cfg = tiny_config(epochs=1, global_batch=4)
    train(cfg, data, tmp_path / "m.pt", log=lambda *_: None)
    model, config, _, meta = load_model(tmp_path / "m.pt")
    assert config["network"]["kind"] == meta["data_kind"] == "bragg_cdi"
    assert meta["architecture"] == {"ndim": 3, "heads": ["support", "phase"]}


def test_shards_without_kind_are_read_by_their_pattern_axes(shards3d):
    info = shard_info(shards3d / "shard-00000.h5")
    del info["attrs"]["kind"]
    assert shard_hooks(info)[0] == "bragg_cdi"


def test_model_files_of_the_former_format_load(tmp_path):
    torch.manual_seed(0)
    net_cfg = {"kind": "cdi3d", "channels": [2, 4], "norm": "none"}
    net = bragg.network(net_cfg, 16, 8).eval()
    meta = {"input_size": 16, "output_size": 8, "data_kind": "bragg_cdi3d"}
    save_model(tmp_path / "m.pt", net, {"network": net_cfg}, {}, meta)
    obj = torch.load(tmp_path / "m.pt", weights_only=True)
    old = json.loads(obj["meta_json"])
    del old["architecture"]  # written before the architecture was recorded
    obj["meta_json"] = json.dumps(old)
    torch.save(obj, tmp_path / "old.pt")
    model, config, _, _ = load_model(tmp_path / "old.pt")
    assert model.ndim == 3 and model.heads == ("support", "phase")
    x = torch.rand(2, 16, 16, 16)
    with torch.no_grad():
        for h, y in net(x).items():
            assert torch.equal(model(x)[h], y)


def test_a_network_of_another_modality_is_refused(shards2d, tiny_config, tmp_path):
    cfg = tiny_config(epochs=1)
    cfg["network"]["kind"] = "bragg_cdi"
    with pytest.raises(ConfigError, match=r"network\.kind: 'bragg_cdi' does not fit ptycho2d"):
        train(cfg, shards2d, tmp_path / "m.pt", log=lambda *_: None)
