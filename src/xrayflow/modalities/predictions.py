"""Per-sample predictions of a network against the labels of held-out samples, for the
modalities whose results are predictions rather than images (tags of scattering images,
encodings of disordered crystals): reading both files row by row, and the scores.

Files: a label file is a training shard (dataset ``targets_<name>``, the names of its
columns in the root attribute ``<names>``) or a CXI file of the simulate stage (datasets
``entry_1/xrayflow_signals/<name>`` and ``.../<names>``); a prediction file is what
``xrayflow train --infer`` writes (root datasets ``<name>`` and ``<names>``). Rows are
samples, in the same order in both (the predictions were made from the label file).

Scores: :func:`average_precision` (area under the step-wise precision–recall curve, the
definition of scikit-learn's ``average_precision_score``), :func:`precision_recall` (the
curve), :func:`r2_scores` (coefficient of determination per column, scikit-learn's
``r2_score`` with ``multioutput="raw_values"``) and :func:`confusion` (counts at a
threshold). Shared by those modalities' hooks: :func:`check_whole_output` (train config
check) and :func:`panel_grid`, :func:`save_figure` (evaluation figures).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
from matplotlib.figure import Figure

from xrayflow.errors import ConfigError, DataError

__all__ = [
    "average_precision",
    "check_whole_output",
    "confusion",
    "panel_grid",
    "precision_recall",
    "r2_scores",
    "read_labels",
    "read_predictions",
    "save_figure",
]

SIGNALS = "entry_1/xrayflow_signals"


def _names(value) -> list[str]:
    """Column names from an attribute (JSON text or array of strings) or a dataset value."""
    if isinstance(value, bytes | str):
        text = value.decode() if isinstance(value, bytes) else value
        return [str(v) for v in json.loads(text)] if text[:1] == "[" else [text]
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(value).ravel()]


def _open(path: str | os.PathLike, role: str) -> h5py.File:
    label = f"{role} file {str(path)!r}"
    if not os.path.isfile(path):
        raise DataError(f"{label} does not exist")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"{label} is not a readable HDF5 file ({exc})") from None


def _finite_rows(values: np.ndarray, label: str, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise DataError(f"{label}: {what} has shape {arr.shape}, expected (samples, columns)")
    bad = ~np.isfinite(arr)
    if bad.any():
        row = int(np.argmax(bad.any(axis=1)))
        raise DataError(f"{label}: {what} row {row} holds NaN or inf")
    return arr


def read_labels(
    path: str | os.PathLike, name: str, names: str, role: str = "truth"
) -> tuple[np.ndarray, list[str]]:
    """``(labels (N, K) float64, column names)`` of a shard or CXI label file (see the
    module docstring); DataError naming the file when they are missing or not finite."""
    label = f"{role} file {str(path)!r}"
    with _open(path, role) as f:
        if f"targets_{name}" in f:
            values = f[f"targets_{name}"][()]
            cols = _names(f.attrs[names]) if names in f.attrs else None
        elif f"{SIGNALS}/{name}" in f:
            values = f[f"{SIGNALS}/{name}"][()]
            cols = _names(f[f"{SIGNALS}/{names}"][()]) if f"{SIGNALS}/{names}" in f else None
        else:
            raise DataError(
                f"{label} holds no {name!r} labels (neither a shard's 'targets_{name}' nor "
                f"'{SIGNALS}/{name}')"
            )
    arr = _finite_rows(values, label, repr(name))
    if cols is None or len(cols) != arr.shape[1]:
        raise DataError(f"{label}: the names of the {arr.shape[1]} {name!r} columns ({names!r})")
    return arr, cols


def read_predictions(
    path: str | os.PathLike, name: str, names: str, role: str = "result"
) -> tuple[np.ndarray, list[str]]:
    """``(predictions (N, K) float64, column names)`` of an ``xrayflow train --infer``
    file."""
    label = f"{role} file {str(path)!r}"
    with _open(path, role) as f:
        if name not in f or names not in f:
            raise DataError(f"{label} holds no predictions {name!r} with their names {names!r}")
        values, cols = f[name][()], _names(f[names][()])
    arr = _finite_rows(values, label, repr(name))
    if len(cols) != arr.shape[1]:
        raise DataError(f"{label}: {len(cols)} names {names!r} for {arr.shape[1]} columns")
    return arr, cols


def precision_recall(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(precision, recall, thresholds)`` of ranking ``scores`` against binary ``labels``,
    one point per distinct score, in decreasing order of the threshold (a sample is
    predicted positive when its score is >= the threshold). Recall is NaN without
    positives."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel() > 0.5
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # the last index of each score
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    positives = tp[-1] if tp.size else 0
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / positives if positives else np.full(tp.shape, np.nan)
    return precision, recall, s[last]


def average_precision(scores, labels) -> float | None:
    """AP = Σ_n (R_n − R_{n−1}) P_n over the distinct thresholds (no interpolation); None
    when ``labels`` has no positive (AP undefined)."""
    precision, recall, _ = precision_recall(scores, labels)
    if recall.size == 0 or np.isnan(recall[0]):
        return None
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def confusion(scores, labels, threshold: float = 0.5) -> dict[str, int]:
    """True/false positives/negatives of ``scores >= threshold`` against binary ``labels``."""
    p = np.asarray(scores).ravel() >= threshold
    y = np.asarray(labels).ravel() > 0.5
    return {
        "tp": int(np.sum(p & y)),
        "fp": int(np.sum(p & ~y)),
        "fn": int(np.sum(~p & y)),
        "tn": int(np.sum(~p & ~y)),
    }


def r2_scores(predicted, true) -> np.ndarray:
    """R² = 1 − Σ(y − ŷ)² / Σ(y − ȳ)² per column of (N, K) arrays; a constant column scores
    1 when predicted exactly and 0 otherwise (scikit-learn's convention)."""
    y = np.asarray(true, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.float64)
    if y.shape != p.shape:
        raise DataError(f"predictions {p.shape} and labels {y.shape} differ in shape")
    y, p = y.reshape(len(y), -1), p.reshape(len(p), -1)
    ss_res = np.sum((y - p) ** 2, axis=0)
    ss_tot = np.sum((y - y.mean(axis=0)) ** 2, axis=0)
    safe = np.where(ss_tot > 0, ss_tot, 1.0)
    return np.where(ss_tot > 0, 1.0 - ss_res / safe, np.where(ss_res == 0, 1.0, 0.0))


def check_whole_output(config: dict, target_size: int, output_size: int, what: str) -> None:
    """A network of a prediction modality predicts every column of the shards' targets
    (``what``: e.g. "tags"), learnt supervised; ConfigError naming the key otherwise."""
    if output_size != target_size:
        raise ConfigError(
            f"train.network.output_size: {output_size}; the network predicts all "
            f"{target_size} {what} of the shards (leave it null)"
        )
    if config["training"].get("loss", {}).get("mode", "supervised") != "supervised":
        raise ConfigError(f"train.training.loss.mode: {what} are learnt supervised only")


def panel_grid(n: int, width: float, height: float, max_cols: int = 5):
    """A figure of ``n`` panels of ``width`` × ``height`` inches in rows of at most
    ``max_cols``: ``(figure, the panels' axes in reading order, unused ones hidden)``."""
    cols = max(1, min(max_cols, n))
    rows = -(-n // cols)
    fig = Figure(figsize=(width * cols, height * rows))
    axes = list(fig.subplots(rows, cols, squeeze=False).flat)
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def save_figure(fig: Figure, path: Path, config: dict | None) -> Path:
    """Write ``fig`` as PNG at the evaluate config's ``figures.dpi`` (default 120)."""
    fig.savefig(path, dpi=int(((config or {}).get("figures") or {}).get("dpi", 120)))
    return path
