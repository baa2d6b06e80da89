"""Evaluation of tag predictions (``xrayflow evaluate --result PRED.h5 --truth LABELS``):
average precision per tag, macro and micro mean average precision, precision–recall
curves, per-tag confusion at probability 0.5, and figures.

The result is an ``xrayflow train --infer`` file (``probabilities`` (N, T), ``tag_names``);
the truth is the file the predictions were made from: a training shard (``targets_tags``)
or a CXI file of ``xrayflow simulate`` (``entry_1/xrayflow_signals/tags``). Tags are
matched by name; a tag without a positive among the held-out samples has no average
precision (null) and is left out of the macro mAP (``tags_without_positives`` lists them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from xrayflow.errors import DataError
from xrayflow.modalities.predictions import (
    average_precision,
    confusion,
    panel_grid,
    precision_recall,
    read_labels,
    read_predictions,
    save_figure,
)

#: Probability at which a tag counts as predicted (the confusion counts).
THRESHOLD = 0.5
FIGURE_NAMES = ("precision_recall.png", "average_precision.png", "confusion.png")


def tag_scores(probabilities: np.ndarray, labels: np.ndarray, names: list[str]) -> dict:
    """Per-tag AP, positives and confusion, the macro mAP (tags with positives) and the
    micro AP (all tag decisions pooled) of (N, T) probabilities against (N, T) labels."""
    per_tag = {}
    for j, name in enumerate(names):
        ap = average_precision(probabilities[:, j], labels[:, j])
        c = confusion(probabilities[:, j], labels[:, j], THRESHOLD)
        precision = c["tp"] / max(c["tp"] + c["fp"], 1)
        recall = c["tp"] / max(c["tp"] + c["fn"], 1)
        f1 = 2 * precision * recall / max(precision + recall, 1e-12)
        per_tag[name] = {
            "average_precision": ap,
            "positives": int(np.sum(labels[:, j] > 0.5)),
            **c,
            "precision": precision,
            "recall": recall,
            "f1": f1,
        }
    aps = [t["average_precision"] for t in per_tag.values() if t["average_precision"] is not None]
    return {
        "map": float(np.mean(aps)) if aps else None,
        "map_micro": average_precision(probabilities.ravel(), labels.ravel()),
        "tags": per_tag,
        "tags_without_positives": [n for n, t in per_tag.items() if t["average_precision"] is None],
    }


def evaluate(result_path, reference_path, config: dict) -> tuple[dict, dict]:
    """``(metrics, arrays)`` of the predictions in ``result_path`` against the labels of
    ``reference_path`` (DataError naming the file when they do not fit)."""
    probs, p_names = read_predictions(result_path, "probabilities", "tag_names")
    labels, t_names = read_labels(reference_path, "tags", "tag_names")
    if len(probs) != len(labels):
        raise DataError(
            f"result file {str(result_path)!r} has {len(probs)} predictions, truth file "
            f"{str(reference_path)!r} {len(labels)} labelled samples (predict on the truth file)"
        )
    common = [n for n in p_names if n in t_names]
    if not common:
        raise DataError(f"result file {str(result_path)!r} predicts none of the truth's tags")
    probs = probs[:, [p_names.index(n) for n in common]]
    labels = labels[:, [t_names.index(n) for n in common]]
    if np.any((probs < 0) | (probs > 1)):
        raise DataError(f"result file {str(result_path)!r}: probabilities outside [0, 1]")
    metrics = {"kind": "tags", "mode": "truth", "n_samples": int(len(probs))}
    metrics.update(tag_scores(probs, labels, common))
    metrics["tags_not_predicted"] = [n for n in t_names if n not in common]
    return metrics, {"probabilities": probs, "labels": labels, "names": common}


def summary_line(metrics: dict, out) -> str:
    """One line: macro and micro mAP, the number of tags and samples."""
    m = metrics["map"]
    scored = len(metrics["tags"]) - len(metrics["tags_without_positives"])
    return (
        f"evaluate (truth, tags): mAP {'n/a' if m is None else f'{m:.3f}'} over {scored} tags, "
        f"micro AP {metrics['map_micro']:.3f}, {metrics['n_samples']} samples -> {out}"
    )


def write_figures(directory, metrics: dict, arrays: dict, config: dict | None = None) -> list:
    """Precision–recall curves, AP per tag and the per-tag confusion, as PNG files."""
    d = Path(directory)
    probs, labels, names = arrays["probabilities"], arrays["labels"], arrays["names"]
    out = []
    fig, axes = panel_grid(len(names), 2.6, 2.4)
    for ax, (j, name) in zip(axes, enumerate(names), strict=True):
        p, r, _ = precision_recall(probs[:, j], labels[:, j])
        ap = metrics["tags"][name]["average_precision"]
        if ap is not None:
            ax.step(np.r_[0.0, r], np.r_[p[0], p], where="post")
        ax.set_title(f"{name.split('.', 1)[-1]}\nAP {'n/a' if ap is None else f'{ap:.2f}'}")
        ax.set(xlim=(0, 1), ylim=(0, 1.05), xlabel="recall", ylabel="precision")
        ax.title.set_fontsize(7)
    fig.suptitle(f"precision–recall per tag (mAP {metrics['map'] or 0:.3f})")
    fig.tight_layout()
    out.append(save_figure(fig, d / "precision_recall.png", config))

    order = sorted(names, key=lambda n: metrics["tags"][n]["average_precision"] or 0.0)
    fig = Figure(figsize=(6, 0.25 * len(names) + 1.2))
    ax = fig.subplots()
    values = [metrics["tags"][n]["average_precision"] or 0.0 for n in order]
    ax.barh(range(len(order)), values)
    ax.set_yticks(range(len(order)), order, fontsize=7)
    ax.set(xlim=(0, 1), xlabel="average precision (held-out)")
    ax.axvline(metrics["map"] or 0.0, color="k", ls="--", lw=1, label="macro mAP")
    ax.legend(loc="lower right")
    fig.tight_layout()
    out.append(save_figure(fig, d / "average_precision.png", config))

    tags = metrics["tags"]
    rates = np.array(
        [
            [
                tags[n]["recall"],
                tags[n]["precision"],
                tags[n]["fp"] / max(tags[n]["fp"] + tags[n]["tn"], 1),
                tags[n]["fn"] / max(tags[n]["fn"] + tags[n]["tp"], 1),
            ]
            for n in names
        ]
    )
    fig = Figure(figsize=(4.5, 0.25 * len(names) + 1.2))
    ax = fig.subplots()
    im = ax.imshow(rates, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(4), ["recall", "precision", "FP rate", "FN rate"], fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    for (i, j), v in np.ndenumerate(rates):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color="w")
    fig.colorbar(im, ax=ax)
    ax.set_title(f"per-tag confusion at p >= {THRESHOLD}", fontsize=8)
    fig.tight_layout()
    out.append(save_figure(fig, d / "confusion.png", config))
    return out
