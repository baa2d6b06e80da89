"""Figures of the train stage (matplotlib, Agg canvas; drawn with the shared helpers of
:mod:`xrayflow.evaluate.figures`):

* ``training_curve.png`` (:func:`training_curve_figure`): the per-epoch training loss and
  held-out (validation) loss of ``<model>.metrics.jsonl`` against the epoch, log scale when
  positive, with the learning rate on a second axis;
* ``predictions.png`` (:func:`predictions_figure`): for a few samples of the file the
  predictions were made from (a training shard: ``targets_<head>``), the truth, the
  network's prediction and their difference for every image head (e.g. ``amplitude`` and
  ``phase``; 3D heads: the central z slice), with the RMSE over all samples per head.

``python -m xrayflow.train.figures --metrics M.jsonl [--predictions P.h5 --truth SHARD.h5]
--out DIR`` writes them (the workflow's report rules use :func:`write_training_figures`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import h5py
import numpy as np

from xrayflow.errors import DataError
from xrayflow.plotting import curves_figure, new_figure, save_png, show_image

__all__ = [
    "FIGURE_NAMES",
    "image_heads",
    "predictions_figure",
    "read_training_curve",
    "training_curve_figure",
    "write_training_figures",
]

FIGURE_NAMES = ("training_curve.png", "predictions.png")
#: Samples shown in ``predictions.png`` (at most; evenly spaced over the file).
SAMPLES = 4


def read_training_curve(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Columns ``epoch``, ``train_loss``, ``val_loss``, ``lr`` of a metrics JSON-lines file
    (one record per epoch; a missing or null value is NaN). A resumed run that wrote an
    epoch twice keeps the last record of it."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"training metrics file {str(p)!r} does not exist")
    records: dict[int, dict] = {}
    for i, line in enumerate(p.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            records[int(rec["epoch"])] = rec
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{str(p)!r} line {i + 1} is not an epoch record ({exc})") from None
    if not records:
        raise DataError(f"training metrics file {str(p)!r} holds no epoch")
    epochs = sorted(records)

    def column(key):
        values = [records[e].get(key) for e in epochs]
        return np.array([math.nan if v is None else float(v) for v in values])

    out = {"epoch": np.asarray(epochs)}
    out.update({k: column(k) for k in ("train_loss", "val_loss", "lr")})
    return out


def training_curve_figure(curve: dict[str, np.ndarray], title: str | None = None):
    """Training and held-out loss per epoch (:func:`read_training_curve`), the learning
    rate on a second axis (dotted)."""
    epoch = curve["epoch"]
    lines = {"training loss (mean over the epoch)": (epoch, curve["train_loss"])}
    if np.isfinite(curve["val_loss"]).any():
        lines["held-out loss (validation split)"] = (epoch, curve["val_loss"])
    fig = curves_figure(lines, "epoch", "loss", title or "Training curve", markers=True)
    ax = fig.axes[0]
    ax.set_xticks(epoch if epoch.size <= 20 else ax.get_xticks())
    if np.isfinite(curve["lr"]).any():
        twin = ax.twinx()
        twin.plot(epoch, curve["lr"], "k:", lw=1, label="learning rate (right axis)")
        twin.set_ylabel("learning rate")
        handles = ax.get_legend_handles_labels()
        extra = twin.get_legend_handles_labels()
        ax.legend(handles[0] + extra[0], handles[1] + extra[1], fontsize=8)
    fig.tight_layout()
    return fig


def image_heads(predictions: h5py.File, truth: h5py.File) -> list[str]:
    """Heads of a prediction file with a matching image target (``targets_<head>`` of the
    same shape per sample, 2D or 3D) in the truth file, in the prediction file's order."""
    heads = []
    for name, ds in predictions.items():
        target = truth.get(f"targets_{name}")
        if not isinstance(ds, h5py.Dataset) or not isinstance(target, h5py.Dataset):
            continue
        if ds.ndim in (3, 4) and ds.shape[1:] == target.shape[1:]:
            heads.append(name)
    return heads


def _plane(a: np.ndarray) -> np.ndarray:
    """A 2D sample, or the central z slice of a 3D one."""
    return a[a.shape[0] // 2] if a.ndim == 3 else a


def predictions_figure(
    predictions: str | os.PathLike, truth: str | os.PathLike, samples: int = SAMPLES
):
    """Truth, prediction and difference (rows, per image head) of ``samples`` samples
    (columns, evenly spaced) of the prediction file ``predictions`` and the file it was
    made from, ``truth`` (rows in the same order). The row titles give each head's RMSE
    over all samples."""
    with h5py.File(predictions, "r") as fp, h5py.File(truth, "r") as ft:
        heads = image_heads(fp, ft)
        if not heads:
            raise DataError(
                f"{str(predictions)!r} has no image head with a matching target in "
                f"{str(truth)!r} (targets_<head> of the same shape)"
            )
        n = min(fp[heads[0]].shape[0], ft[f"targets_{heads[0]}"].shape[0])
        rows = np.unique(np.linspace(0, n - 1, min(samples, n)).round().astype(int))
        data = {}
        for h in heads:
            pred = np.asarray(fp[h][:n], dtype=np.float64)
            true = np.asarray(ft[f"targets_{h}"][:n], dtype=np.float64)
            rmse = float(np.sqrt(np.mean((pred - true) ** 2)))
            data[h] = (true[rows], pred[rows], rmse)
        three_d = fp[heads[0]].ndim == 4
    fig = new_figure(2.9 * len(rows) + 0.4, 2.6 * 3 * len(heads) + 0.3)
    axes = np.asarray(fig.subplots(3 * len(heads), len(rows), squeeze=False))
    where = ", central z slice" if three_d else ""
    for k, h in enumerate(heads):
        true, pred, rmse = data[h]
        lim = (float(min(true.min(), pred.min())), float(max(true.max(), pred.max())))
        if lim[0] == lim[1]:
            lim = (lim[0] - 0.5, lim[1] + 0.5)
        diff = pred - true
        m = float(np.abs(diff).max()) or 1.0
        for j, i in enumerate(rows):
            for r, (img, what, cmap, lm) in enumerate(
                (
                    (true[j], f"{h}: truth", "viridis", lim),
                    (pred[j], f"{h}: prediction", "viridis", lim),
                    (diff[j], f"{h}: prediction − truth", "RdBu_r", (-m, m)),
                )
            ):
                title = f"{what}\nsample {i}{where}"
                if r == 2:
                    title += f" (RMSE all: {rmse:.3g})"
                show_image(fig, axes[3 * k + r, j], _plane(img), title, cmap, lm, 8)
    fig.tight_layout()
    return fig


def write_training_figures(
    directory: str | os.PathLike,
    metrics: str | os.PathLike | None = None,
    predictions: str | os.PathLike | None = None,
    truth: str | os.PathLike | None = None,
    dpi: int = 120,
) -> list[Path]:
    """``training_curve.png`` (with ``metrics``) and ``predictions.png`` (with
    ``predictions`` and ``truth``) in ``directory``; returns their paths."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    out = []
    if metrics is not None:
        curve = read_training_curve(metrics)
        out.append(save_png(training_curve_figure(curve), d / FIGURE_NAMES[0], dpi))
    if predictions is not None and truth is not None:
        out.append(save_png(predictions_figure(predictions, truth), d / FIGURE_NAMES[1], dpi))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m xrayflow.train.figures", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--metrics", help="<model>.metrics.jsonl of xrayflow train")
    parser.add_argument("--predictions", help="xrayflow train --infer output")
    parser.add_argument("--truth", help="the shard the predictions were made from")
    parser.add_argument("--out", required=True, help="folder of the figures")
    parser.add_argument("--dpi", type=int, default=120)
    args = parser.parse_args(argv)
    for path in write_training_figures(
        args.out, args.metrics, args.predictions, args.truth, args.dpi
    ):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
