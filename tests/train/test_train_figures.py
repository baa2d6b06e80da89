"""Figures of the train stage: the training curve and predictions against the truth."""

import json

import h5py
import numpy as np
import pytest

from xrayflow.errors import DataError
from xrayflow.train.figures import (
    predictions_figure,
    read_training_curve,
    training_curve_figure,
    write_training_figures,
)


def _metrics(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_training_curve_reads_epochs_and_draws_both_losses(tmp_path):
    recs = [
        {"epoch": 0, "train_loss": 1.0, "val_loss": None, "lr": 1e-3},
        {"epoch": 1, "train_loss": 0.5, "val_loss": 0.6, "lr": 1e-3},
        {"epoch": 1, "train_loss": 0.4, "val_loss": 0.5, "lr": 5e-4},  # resumed: last wins
    ]
    curve = read_training_curve(_metrics(tmp_path / "m.jsonl", recs))
    assert curve["epoch"].tolist() == [0, 1]
    assert curve["train_loss"].tolist() == [1.0, 0.4]
    assert np.isnan(curve["val_loss"][0]) and curve["val_loss"][1] == 0.5
    fig = training_curve_figure(curve)
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["training loss (mean over the epoch)", "held-out loss (validation split)"]
    assert ax.get_xlabel() == "epoch" and ax.get_yscale() == "log"
    assert fig.axes[1].get_ylabel() == "learning rate"
    with pytest.raises(DataError, match="holds no epoch"):
        read_training_curve(_metrics(tmp_path / "e.jsonl", []))


def test_predictions_against_the_shard_targets(tmp_path):
    rng = np.random.default_rng(0)
    truth = rng.random((6, 8, 8)).astype(np.float32)
    with h5py.File(tmp_path / "shard.h5", "w") as f:
        f["targets_amplitude"] = truth
        f["targets_phase"] = truth
        f["inputs"] = truth
    with h5py.File(tmp_path / "pred.h5", "w") as f:
        f["amplitude"] = truth + 0.1
        f["phase"] = truth
        f["probabilities"] = np.zeros((6, 3), np.float32)  # not an image head
    fig = predictions_figure(tmp_path / "pred.h5", tmp_path / "shard.h5", samples=3)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titles) == 2 * 3 * 3  # 2 heads x (truth, prediction, difference) x 3 samples
    assert "amplitude: truth\nsample 0" in titles and "phase: prediction\nsample 5" in titles
    assert any(t.endswith("(RMSE all: 0.1)") for t in titles if t.startswith("amplitude"))
    out = write_training_figures(
        tmp_path / "figs",
        metrics=_metrics(tmp_path / "m.jsonl", [{"epoch": 0, "train_loss": 1.0}]),
        predictions=tmp_path / "pred.h5",
        truth=tmp_path / "shard.h5",
    )
    assert [p.name for p in out] == ["training_curve.png", "predictions.png"]
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["targets_support"] = truth
    with pytest.raises(DataError, match="no image head"):
        predictions_figure(tmp_path / "pred.h5", tmp_path / "other.h5")
