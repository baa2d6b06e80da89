"""Tiny training sets shared by the train-stage tests (generated once per session)."""

from __future__ import annotations

import pytest

from xrayflow.config import load_config
from xrayflow.modalities import stage_schema


def tiny_config(kind: str = "ptycho2d", **training) -> dict:
    raw = {
        "seed": 3,
        "data": {
            "kind": kind,
            "n_shards": 2,
            "samples_per_shard": 40,
            "chunk_rows": 8,
            "photons": 1.0e6,
            "parallel": "serial",
            "ptycho2d": {"size": 16, "object_size": 48, "probe": {"waist_px": 3.0}},
            "bragg_cdi": {"size": 8, "oversampling": 2},
        },
        "network": {"channels": [4, 8], "norm": "batch"},
        "training": {
            "epochs": 2,
            "global_batch": 8,
            "lr": 3e-3,
            "val_fraction": 0.2,
            "shuffle_buffer": 24,
            "log_every": 0,
            "threads": 1,
            "schedule": {"kind": "cosine"},
            "early_stopping": {"patience": 0},
            **training,
        },
    }
    return load_config(raw, stage_schema("train"), name="train")


@pytest.fixture(name="tiny_config")
def _tiny_config_fixture():
    return tiny_config


@pytest.fixture(scope="session")
def shards2d(tmp_path_factory):
    from xrayflow.train.generate import generate

    out = tmp_path_factory.mktemp("shards2d")
    generate(tiny_config("ptycho2d"), out, log=lambda *_: None)
    return out


@pytest.fixture(scope="session")
def shards3d(tmp_path_factory):
    from xrayflow.train.generate import generate

    out = tmp_path_factory.mktemp("shards3d")
    cfg = tiny_config("bragg_cdi")
    cfg["data"]["samples_per_shard"] = 12
    cfg["data"]["chunk_rows"] = 4
    generate(cfg, out, log=lambda *_: None)
    return out
