"""The valid workspace the bad-input cases start from (built once per session, via the CLI).

Files: ``sim.yaml`` (tiny ptycho2d), ``data.cxi`` (its data), ``recon.yaml`` and
``recon.h5`` (a 4-iteration reconstruction of it), ``train.yaml`` (tiny 2D network),
``shards/`` (its training shards) and ``model.pt`` (the trained network).
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import pytest
import yaml
from tiny_ptycho import TINY_RECON, TINY_SIM

from xrayflow.cli import main

SIM = TINY_SIM
RECON = TINY_RECON
TRAIN = {
    "seed": 3,
    "data": {
        "kind": "ptycho2d",
        "n_shards": 2,
        "samples_per_shard": 16,
        "chunk_rows": 8,
        "photons": 1.0e6,
        "parallel": "serial",
        "ptycho2d": {"size": 16, "object_size": 48, "probe": {"waist_px": 3.0}},
    },
    "network": {"channels": [4, 8], "norm": "batch"},
    "training": {"epochs": 1, "global_batch": 8, "lr": 3e-3, "log_every": 0, "threads": 1},
}


def _cli(*argv: str) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(list(argv))
    assert rc == 0, f"workspace set-up failed: xrayflow {' '.join(argv)}: {err.getvalue()}"


@pytest.fixture(scope="session")
def pristine(tmp_path_factory) -> Path:
    ws = tmp_path_factory.mktemp("pristine")
    for name, cfg in (("sim.yaml", SIM), ("recon.yaml", RECON), ("train.yaml", TRAIN)):
        (ws / name).write_text(yaml.safe_dump(cfg, sort_keys=False))
    cwd = os.getcwd()
    os.chdir(ws)
    try:
        _cli("simulate", "--config", "sim.yaml", "--out", "data.cxi")
        _cli("reconstruct", "--config", "recon.yaml", "--data", "data.cxi", "--out", "recon.h5")
        _cli("train", "--generate", "--config", "train.yaml", "--out", "shards")
        _cli("train", "--config", "train.yaml", "--data", "shards", "--out", "model.pt")
    finally:
        os.chdir(cwd)
    # what a successful run leaves besides its output is not part of the workspace
    for p in ws.glob("*.ckpt*"):
        p.unlink()
    return ws
