"""Training checkpoints are bound to their inputs (issue 12), at CLI level.

- an interrupted run keeps ``<out>.ckpt``; ``--resume`` with the same config and shards
  continues it and ends with the uninterrupted run's weights;
- ``--resume`` after the shards or the config changed starts fresh (one-line notice) and
  gives the fresh run's model, not the old one;
- ``--resume`` without a checkpoint starts fresh, like ``reconstruct --resume``;
- a finished run removes its checkpoint;
- bad values in shards are found while streaming, naming file, dataset and row.
"""

from __future__ import annotations

import contextlib
import io
import shutil

import h5py
import numpy as np
import pytest
import torch
import yaml

from xrayflow.cli import main
from xrayflow.errors import DataError


def _cli(*argv) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(["train", *map(str, argv)])
    return rc, err.getvalue()


def _weights(path) -> dict:
    return torch.load(path, weights_only=True)["state_dict"]


def _same(a, b) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture
def ws(shards2d, tiny_config, tmp_path):
    """A private copy of the shards and a config file (2 epochs, checkpoint every 2 steps)."""
    shutil.copytree(shards2d, tmp_path / "shards")
    cfg = tiny_config(epochs=2, checkpoint_every=2)
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path


def _fit(ws, out, *extra):
    return _cli("--config", ws / "t.yaml", "--data", ws / "shards", "--out", ws / out, *extra)


def _interrupt(ws, out):
    """A run stopped after 5 steps (mid-epoch 1): checkpoint kept, no model file."""
    rc, err = _fit(ws, out, "--set", "training.max_steps=5")
    assert rc == 0 and "interrupted" in err, err
    assert (ws / f"{out}.ckpt").is_file() and not (ws / out).exists()


def test_finished_run_removes_checkpoint_and_resume_continues(ws):
    rc, err = _fit(ws, "full.pt")
    assert rc == 0, err
    assert (ws / "full.pt").is_file() and not (ws / "full.pt.ckpt").exists()

    _interrupt(ws, "part.pt")
    rc, err = _fit(ws, "part.pt", "--resume")
    assert rc == 0 and "resumed from" in err and "starting fresh" not in err, err
    assert not (ws / "part.pt.ckpt").exists()
    assert _same(ws / "full.pt", ws / "part.pt")  # same inputs: bit-identical continuation


def test_resume_without_checkpoint_starts_fresh(ws):
    rc, err = _fit(ws, "a.pt", "--resume")
    assert rc == 0, err
    assert "no checkpoint" in err and "starting fresh" in err
    rc, err = _fit(ws, "b.pt")
    assert rc == 0, err
    assert _same(ws / "a.pt", ws / "b.pt")
    assert not (ws / "a.pt.ckpt").exists()


def test_resume_after_shards_changed_starts_fresh(ws):
    rc, err = _fit(ws, "old.pt")  # the result on the original shards
    assert rc == 0, err
    _interrupt(ws, "m.pt")  # its checkpoint belongs to the original shards
    with h5py.File(ws / "shards" / "shard-00001.h5", "a") as f:  # new data, same layout
        f["inputs"][...] = f["inputs"][...][::-1] * np.float32(1.5)
    rc, err = _fit(ws, "m.pt", "--resume")
    assert rc == 0, err
    notice = [ln for ln in err.splitlines() if "starting fresh" in ln]
    assert len(notice) == 1 and "training data" in notice[0] and "m.pt.ckpt" in notice[0], err
    assert "resumed from" not in err
    rc, err = _fit(ws, "fresh.pt")
    assert rc == 0, err
    assert _same(ws / "m.pt", ws / "fresh.pt")
    assert not _same(ws / "m.pt", ws / "old.pt")


def test_resume_after_manifest_changed_starts_fresh(ws):
    _interrupt(ws, "m.pt")
    man = ws / "shards" / "manifest.json"
    man.write_text(man.read_text().replace('"n_shards": 2', '"n_shards": 2 '))
    rc, err = _fit(ws, "m.pt", "--resume")
    assert rc == 0 and "training data" in err and "starting fresh" in err, err


def test_resume_after_config_changed_starts_fresh(ws):
    _interrupt(ws, "m.pt")
    rc, err = _fit(ws, "m.pt", "--resume", "--set", "training.lr=0.001")
    assert rc == 0, err
    assert "(config changed); starting fresh" in err and "resumed from" not in err, err
    rc, err = _fit(ws, "fresh.pt", "--set", "training.lr=0.001")
    assert rc == 0, err
    assert _same(ws / "m.pt", ws / "fresh.pt")


def test_settings_that_do_not_change_the_result_still_resume(ws):
    _interrupt(ws, "m.pt")
    rc, err = _fit(ws, "m.pt", "--resume", "--set", "training.max_memory_gb=64")
    assert rc == 0 and "resumed from" in err, err


def test_refused_checkpoint_is_an_error_naming_it(ws):
    (ws / "m.pt.ckpt").write_bytes(b"not a checkpoint")
    rc, err = _fit(ws, "m.pt", "--resume")
    assert rc == 2 and "m.pt.ckpt" in err and "Traceback" not in err, err
    assert (ws / "m.pt.ckpt").read_bytes() == b"not a checkpoint"  # not overwritten
    assert not (ws / "m.pt").exists()


def test_nan_in_shard_is_found_while_streaming(ws, tiny_config):
    from xrayflow.train.loop import train

    with h5py.File(ws / "shards" / "shard-00000.h5", "a") as f:
        f["targets_amplitude"][17, 2, 3] = np.nan
    with pytest.raises(DataError, match=r"shard-00000\.h5.*targets_amplitude.*row 17.*NaN"):
        train(tiny_config(epochs=1), ws / "shards", ws / "x.pt", log=lambda *_: None)
    assert not (ws / "x.pt").exists()


def test_nan_loss_names_the_learning_rate(ws, tiny_config):
    rc, err = _fit(ws, "x.pt", "--set", "training.lr=1e30", "--set", "training.optimizer=sgd")
    assert rc == 2 and "training.lr" in err and "Traceback" not in err, err
    assert not (ws / "x.pt").exists()


def test_memory_estimate_of_a_normal_run_is_small(shards2d, tiny_config):
    from xrayflow.train.loop import training_memory
    from xrayflow.train.shards import shard_info

    info = shard_info(next(iter(sorted(shards2d.glob("*.h5")))))
    cfg = tiny_config()
    net = {**cfg["network"], "kind": "ptycho2d"}
    parts = training_memory(net, info, cfg["training"], 16, 16, 1, 80)
    assert 0 < sum(parts.values()) < 50 * 2**20
