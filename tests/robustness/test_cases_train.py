"""Bad-input table of the train stage: --generate, training and --infer (issue 12).

Each row is one misuse; :func:`robust_harness.run_case` asserts exit status 2, a message
naming the problem, no traceback, no new file in the workspace and unchanged inputs.
Classes (issue 12): output clashes and odd output paths (2), bad numbers in shards and data
(4), tracebacks turned into messages: corrupt/truncated/random files, model files, refused
checkpoints (5), memory guard (6), config values (4, 5).
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from robust_harness import (
    GEN,
    INFER,
    TRAIN,
    Case,
    Prepare,
    append_text,
    edit_hdf5,
    hardlink,
    make_dir,
    random_bytes,
    replace_arg,
    replace_dataset,
    run_case,
    symlink,
    truncated,
    with_set,
    write_file,
)

SHARD = INFER[-1]  # the shard the harness's INFER reads
PRED = [*INFER, "--out", "pred.h5"]  # train --infer with its output
RESUME = [*TRAIN, "--resume"]


# ----------------------------------------------------------------------------- set-ups
def _edit_dataset(rel: str, name: str, row: int, value) -> Prepare:
    """Set one element of row ``row`` of dataset ``name`` in file ``rel`` to ``value``."""

    def edit(f: h5py.File) -> None:
        ds = f[name]
        ds[(row,) + tuple(s // 2 for s in ds.shape[1:])] = value

    return edit_hdf5(rel, edit)


def _complex_dataset(rel: str, name: str):
    """Replace dataset ``name`` of ``rel`` by a complex64 copy (same name, same chunks)."""
    return replace_dataset(
        rel, name, lambda a: a.astype(np.complex64) * (1 + 0.5j), keep_chunks=True
    )


def _model_without(key: str):
    def prepare(ws: Path) -> None:
        obj = torch.load(ws / "model.pt", weights_only=True)
        del obj[key]
        torch.save(obj, ws / "model.pt")

    return prepare


def _model_other_network(ws: Path) -> None:
    obj = torch.load(ws / "model.pt", weights_only=True)
    cfg = json.loads(obj["config_json"])
    cfg["network"]["channels"] = [8, 16]
    obj["config_json"] = json.dumps(cfg)
    torch.save(obj, ws / "model.pt")


def _torch_save(rel: str, obj):
    def prepare(ws: Path) -> None:
        torch.save(obj, ws / rel)

    return prepare


def _hdf5_without_data(ws: Path) -> None:
    with h5py.File(ws / "other.h5", "w") as f:
        f["something"] = np.ones((4, 16, 16), np.float32)


# ----------------------------------------------------------------------------- the table
CASES = [
    # ---- train --generate: output paths
    Case("gen-out-is-existing-file", replace_arg(GEN, "--out", "data.cxi"), r"not a directory"),
    Case("gen-out-is-config", replace_arg(GEN, "--out", "train.yaml"), r"overwrite.*train\.yaml"),
    Case("gen-out-contains-config", replace_arg(GEN, "--out", "."), r"overwrite.*train\.yaml"),
    Case("gen-out-empty", replace_arg(GEN, "--out", ""), r"--out.*empty"),
    Case("gen-out-missing-dir", replace_arg(GEN, "--out", "no/such/dir"), r"does not exist"),
    Case("gen-out-dev-full", replace_arg(GEN, "--out", "/dev/full"), r"/dev/full.*not a dir"),
    Case("gen-config-missing", replace_arg(GEN, "--config", "nope.yaml"), r"nope\.yaml"),
    # ---- train --generate: config values, memory
    Case("gen-n-shards-zero", with_set(GEN, "data.n_shards=0"), r"data\.n_shards"),
    Case("gen-photons-inf", with_set(GEN, "data.photons=.inf"), r"data\.photons.*finite"),
    Case("gen-unknown-key", with_set(GEN, "data.n_shard=3"), r"n_shard"),
    Case("gen-duplicate-key", GEN, r"duplicate.*seed", append_text("train.yaml", "seed: 4\n")),
    Case(
        "gen-memory-limit",
        with_set(GEN, "data.max_memory_gb=1e-6"),
        r"memory.*data\.max_memory_gb",
    ),
    Case(
        "gen-memory-huge-object",
        with_set(GEN, "data.ptycho2d.object_size=3000000"),
        r"needs about .* of memory.*random object",
    ),
    # ---- train: output paths
    Case("train-out-is-config", replace_arg(TRAIN, "--out", "train.yaml"), r"overwrite.*yaml"),
    Case("train-out-is-shard", replace_arg(TRAIN, "--out", SHARD), r"overwrite.*shard-00000"),
    Case("train-out-is-manifest", replace_arg(TRAIN, "--out", "shards/manifest.json"), r"manif"),
    Case("train-out-is-dir", replace_arg(TRAIN, "--out", "shards"), r"directory"),
    Case("train-out-empty", replace_arg(TRAIN, "--out", ""), r"--out.*empty"),
    Case("train-out-missing-dir", replace_arg(TRAIN, "--out", "no/m.pt"), r"does not exist"),
    Case("train-out-dev-full", replace_arg(TRAIN, "--out", "/dev/full"), r"not a regular file"),
    Case("train-checkpoint-is-dir", TRAIN, r"checkpoint.*new\.pt\.ckpt", make_dir("new.pt.ckpt")),
    Case(
        "train-out-symlink-to-shard",
        replace_arg(TRAIN, "--out", "link.pt"),
        r"overwrite.*shard-00000",
        symlink("link.pt", SHARD),
    ),
    # ---- train: config values
    Case("train-lr-zero", with_set(TRAIN, "training.lr=0"), r"training\.lr"),
    Case("train-lr-negative", with_set(TRAIN, "training.lr=-0.1"), r"training\.lr"),
    Case("train-lr-inf", with_set(TRAIN, "training.lr=.inf"), r"training\.lr.*finite"),
    Case("train-lr-nan", with_set(TRAIN, "training.lr=.nan"), r"training\.lr"),
    Case("train-network-kind", with_set(TRAIN, "network.kind=bragg_cdi"), r"network\.kind"),
    Case("train-batch-too-big", with_set(TRAIN, "training.global_batch=1000"), r"global batch"),
    # ---- train: data
    Case("train-data-missing", replace_arg(TRAIN, "--data", "nope"), r"nope"),
    Case(
        "train-data-empty-dir",
        replace_arg(TRAIN, "--data", "empty"),
        r"no shards",
        make_dir("empty"),
    ),
    Case(
        "train-manifest-broken",
        TRAIN,
        r"manifest\.json.*not a valid",
        write_file("shards/manifest.json", "{"),
    ),
    Case(
        "train-manifest-lists-missing-shard",
        TRAIN,
        r"manifest\.json.*shard-00009",
        write_file("shards/manifest.json", json.dumps({"shards": ["shard-00009.h5"]})),
    ),
    Case(
        "train-shard-nan-input",
        TRAIN,
        r"shard-00000\.h5.*'inputs' row 3 holds NaN",
        _edit_dataset(SHARD, "inputs", 3, np.nan),
    ),
    Case(
        "train-shard-inf-target",
        TRAIN,
        r"shard-00001\.h5.*'targets_phase' row 10 holds inf",
        _edit_dataset("shards/shard-00001.h5", "targets_phase", 10, np.inf),
    ),
    Case(
        "train-shard-negative-input",
        TRAIN,
        r"shard-00001\.h5.*'inputs' row 5 holds a negative value",
        _edit_dataset("shards/shard-00001.h5", "inputs", 5, -2.0),
    ),
    Case(
        "train-shard-complex",
        TRAIN,
        r"shard-00000\.h5.*'inputs' is complex",
        _complex_dataset(SHARD, "inputs"),
    ),
    Case(
        "train-shard-truncated",
        TRAIN,
        r"shard-00001\.h5.*(truncated|corrupt)",
        truncated("shards/shard-00001.h5"),
    ),
    Case("train-shard-random", TRAIN, r"shard-00000\.h5.*(truncated|corrupt)", random_bytes(SHARD)),
    Case(
        "train-shard-shapes-differ",
        TRAIN,
        r"shards disagree",
        replace_dataset(
            "shards/shard-00001.h5", "targets_phase", lambda a: np.zeros((16, 8, 8), np.float32)
        ),
    ),
    # ---- train: checkpoints (--resume)
    Case(
        "train-resume-corrupt-checkpoint",
        RESUME,
        r"checkpoint 'new\.pt\.ckpt' cannot be read",
        random_bytes("new.pt.ckpt", 1000),
    ),
    Case(
        "train-resume-foreign-checkpoint",
        RESUME,
        r"'new\.pt\.ckpt' is not an xrayflow training checkpoint",
        _torch_save("new.pt.ckpt", {"epoch": 3}),
    ),
    Case(
        "train-resume-empty-checkpoint",
        RESUME,
        r"checkpoint 'new\.pt\.ckpt' cannot be read",
        write_file("new.pt.ckpt", ""),
    ),
    # ---- train: memory
    Case(
        "train-memory-limit",
        with_set(TRAIN, "training.max_memory_gb=1e-6"),
        r"memory.*training\.max_memory_gb",
    ),
    Case(
        "train-memory-huge-network",
        with_set(TRAIN, "network.channels=[100000,200000]"),
        r"needs about .* of memory.*parameters",
    ),
    Case(
        "train-memory-huge-batch",
        with_set(TRAIN, "training.global_batch=16", "network.channels=[60000,60000]"),
        r"needs about .* of memory",
    ),
    # ---- train --infer: output paths
    Case("infer-out-is-model", replace_arg(PRED, "--out", "model.pt"), r"overwrite.*model\.pt"),
    Case(
        "infer-out-is-data",
        replace_arg(PRED, "--out", SHARD),
        r"--out 'shards/shard-00000\.h5' would overwrite the input --data",
    ),
    Case("infer-out-empty", replace_arg(PRED, "--out", ""), r"--out.*empty"),
    Case("infer-out-missing-dir", replace_arg(PRED, "--out", "no/p.h5"), r"does not exist"),
    Case("infer-out-is-dir", replace_arg(PRED, "--out", "shards"), r"directory"),
    Case("infer-out-dev-full", replace_arg(PRED, "--out", "/dev/full"), r"not a regular file"),
    Case(
        "infer-out-hardlink-to-model",
        replace_arg(PRED, "--out", "hard.pt"),
        r"overwrite.*model\.pt",
        hardlink("hard.pt", "model.pt"),
    ),
    # ---- train --infer: model file
    Case(
        "infer-model-missing",
        replace_arg(PRED, "--model", "nope.pt"),
        r"nope\.pt.*does not exist",
    ),
    Case("infer-model-random", PRED, r"model\.pt.*not a loadable", random_bytes("model.pt")),
    Case("infer-model-truncated", PRED, r"model\.pt.*not a loadable", truncated("model.pt")),
    Case("infer-model-no-config", PRED, r"model\.pt.*config_json", _model_without("config_json")),
    Case("infer-model-no-weights", PRED, r"model\.pt.*state_dict", _model_without("state_dict")),
    Case("infer-model-wrong-network", PRED, r"model\.pt.*inconsistent", _model_other_network),
    Case(
        "infer-model-not-a-model",
        PRED,
        r"model\.pt.*not an xrayflow model",
        _torch_save("model.pt", {"format": "something-else"}),
    ),
    Case(
        "infer-model-is-config",
        replace_arg(PRED, "--model", "train.yaml"),
        r"train\.yaml.*not a loadable",
    ),
    # ---- train --infer: data file
    Case(
        "infer-data-missing",
        replace_arg(PRED, "--data", "nope.h5"),
        r"nope\.h5.*does not exist",
    ),
    Case("infer-data-random", PRED, r"shard-00000\.h5.*not a readable HDF5", random_bytes(SHARD)),
    Case(
        "infer-data-truncated",
        PRED,
        r"shard-00000\.h5.*(truncated|corrupt)",
        truncated(SHARD, fraction=0.6),
    ),
    Case(
        "infer-data-no-dataset",
        replace_arg(PRED, "--data", "other.h5"),
        r"other\.h5.*neither a training shard",
        _hdf5_without_data,
    ),
    Case("infer-data-is-config", replace_arg(PRED, "--data", "train.yaml"), r"train\.yaml.*HDF5"),
    Case(
        "infer-shard-nan",
        PRED,
        r"shard-00000\.h5.*'inputs' row 5 holds NaN",
        _edit_dataset(SHARD, "inputs", 5, np.nan),
    ),
    Case(
        "infer-shard-negative",
        PRED,
        r"'inputs' row 0 holds a negative value",
        _edit_dataset(SHARD, "inputs", 0, -1.0),
    ),
    Case("infer-shard-complex", PRED, r"'inputs' is complex", _complex_dataset(SHARD, "inputs")),
    Case(
        "infer-cxi-nan",
        replace_arg(PRED, "--data", "data.cxi"),
        r"data\.cxi.*frame 2 holds NaN",
        _edit_dataset("data.cxi", "entry_1/data_1/data", 2, np.nan),
    ),
    Case(
        "infer-cxi-negative",
        replace_arg(PRED, "--data", "data.cxi"),
        r"data\.cxi.*frame 7 holds a negative value",
        _edit_dataset("data.cxi", "entry_1/data_1/data", 7, -3.0),
    ),
    Case(
        "infer-cxi-complex",
        replace_arg(PRED, "--data", "data.cxi"),
        r"data\.cxi.*data_1/data' is complex",
        _complex_dataset("data.cxi", "entry_1/instrument_1/detector_1/data"),
    ),
    Case(
        "infer-cxi-size-mismatch",
        replace_arg(PRED, "--data", "data.cxi"),
        r"data\.cxi.*do not match the model input size 16",
    ),
    # ---- train --infer: config values, memory
    Case("infer-batch-zero", with_set(PRED, "infer.batch=0"), r"infer\.batch"),
    Case(
        "infer-memory-limit",
        with_set(PRED, "infer.max_memory_gb=1e-9"),
        r"memory.*infer\.max_memory_gb",
    ),
    Case("infer-missing-out", PRED[:-2], r"--infer needs --model, --data and --out"),
]


@pytest.mark.parametrize("case", [c.param() for c in CASES])
def test_train_bad_input(case, pristine, tmp_path):
    run_case(case, pristine, tmp_path)


def test_table_size():
    assert len(CASES) >= 35
    assert len({c.id for c in CASES}) == len(CASES)
