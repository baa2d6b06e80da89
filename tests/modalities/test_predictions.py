"""Scores of per-sample predictions against scikit-learn, and the label/prediction readers."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_curve, r2_score

from xrayflow.errors import DataError
from xrayflow.modalities.predictions import (
    average_precision,
    confusion,
    precision_recall,
    r2_scores,
    read_labels,
    read_predictions,
)


@pytest.mark.parametrize("seed", range(6))
def test_average_precision_equals_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    labels = rng.random(n) < rng.uniform(0.05, 0.7)
    labels[0] = True
    scores = labels * rng.uniform(0, 1.5) + rng.normal(size=n)
    if seed % 2:  # ties, as from a network's saturated sigmoid
        scores = np.round(scores, 1)
    assert average_precision(scores, labels) == pytest.approx(
        average_precision_score(labels, scores), abs=1e-12
    )
    p, r, t = precision_recall(scores, labels)
    sp, sr, st = precision_recall_curve(labels, scores)
    # scikit-learn appends (1, 0) and lists the points by increasing threshold
    np.testing.assert_allclose(p, sp[:-1][::-1])
    np.testing.assert_allclose(r, sr[:-1][::-1])
    np.testing.assert_allclose(t, st[::-1])


def test_average_precision_of_perfect_and_of_no_positives():
    assert average_precision([0.9, 0.8, 0.1], [1, 1, 0]) == 1.0
    assert average_precision([0.1, 0.8, 0.9], [1, 0, 0]) == pytest.approx(1 / 3)
    assert average_precision([0.1, 0.2], [0, 0]) is None


def test_confusion_counts():
    c = confusion([0.9, 0.6, 0.4, 0.1], [1, 0, 1, 0], threshold=0.5)
    assert c == {"tp": 1, "fp": 1, "fn": 1, "tn": 1}


def test_r2_equals_scikit_learn_per_column():
    rng = np.random.default_rng(3)
    y = rng.normal(size=(50, 4))
    p = y + rng.normal(scale=[0.1, 0.5, 1.0, 2.0], size=(50, 4))
    np.testing.assert_allclose(r2_scores(p, y), r2_score(y, p, multioutput="raw_values"))
    const = np.ones((5, 1))
    assert r2_scores(const, const)[0] == 1.0
    assert r2_scores(const * 2, const)[0] == r2_score(const, const * 2)


def test_readers(tmp_path):
    shard, cxi, pred = tmp_path / "s.h5", tmp_path / "d.cxi", tmp_path / "p.h5"
    y = (np.arange(12).reshape(6, 2) % 3 == 0).astype(np.float32)
    with h5py.File(shard, "w") as f:
        f["targets_tags"] = y
        f.attrs["tag_names"] = '["a", "b"]'
    with h5py.File(cxi, "w") as f:
        f["entry_1/xrayflow_signals/tags"] = y.astype(np.uint8)
        f["entry_1/xrayflow_signals/tag_names"] = np.array(["a", "b"], dtype=object)
    with h5py.File(pred, "w") as f:
        f["probabilities"] = y * 0.5
        f["tag_names"] = np.array(["a", "b"], dtype=object)
    for path in (shard, cxi):
        arr, names = read_labels(path, "tags", "tag_names")
        np.testing.assert_array_equal(arr, y)
        assert names == ["a", "b"]
    arr, names = read_predictions(pred, "probabilities", "tag_names")
    assert names == ["a", "b"] and arr.shape == (6, 2)
    with pytest.raises(DataError, match="no 'encoding' labels"):
        read_labels(shard, "encoding", "encoding_names")
    with h5py.File(pred, "a") as f:
        f["probabilities"][2, 1] = np.nan
    with pytest.raises(DataError, match="row 2 holds NaN"):
        read_predictions(pred, "probabilities", "tag_names")
    with pytest.raises(DataError, match="does not exist"):
        read_labels(tmp_path / "missing.h5", "tags", "tag_names")
