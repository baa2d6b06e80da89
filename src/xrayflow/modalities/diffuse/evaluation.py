"""Evaluation of predicted short-range-order encodings (``xrayflow evaluate --result
PRED.h5 --truth LABELS``): R², MAE and MSE per encoding variable and their means, the
image-space R² of images re-simulated from the predicted and the true encodings, and
figures.

The result is an ``xrayflow train --infer`` file (``encoding`` (N, dim), ``encoding_names``);
the truth is the file the predictions were made from: a training shard
(``targets_encoding``) or a CXI file of ``xrayflow simulate``
(``entry_1/xrayflow_signals/encoding``). Variables are matched by name.

Re-simulation (:func:`resimulate`): the noise-free closed-form image of an encoding
(:func:`.diffraction.expected_image`, the Warren–Cowley sum over the encoded vectors,
sampled as the Monte Carlo lattices are), with the physics recorded in the truth file
(attribute ``diffuse``) or, failing that, in the result. ``r2_images`` is the mean over
at most :data:`IMAGE_SAMPLES` samples (evenly spaced; ``config["diffuse"]["image_samples"]``
when the caller's config has it) of each image's R² between the re-simulation from the
predicted encoding and the one from the true encoding, over the unmasked pixels;
``image_mse`` is their mean squared difference with both images normalised to mean 1.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
from matplotlib.figure import Figure

from xrayflow.errors import DataError
from xrayflow.modalities.diffuse.diffraction import DiffuseConfig, closed_form_intensity
from xrayflow.modalities.diffuse.encoding import TABLE_SIDE
from xrayflow.modalities.diffuse.simulate import SECTION, physics_from_attrs
from xrayflow.modalities.predictions import (
    panel_grid,
    r2_scores,
    read_labels,
    read_predictions,
    save_figure,
)

#: Samples re-simulated for the image-space R² (at most).
IMAGE_SAMPLES = 64
#: Example images in the figure.
EXAMPLES = 4
FIGURE_NAMES = ("predicted_vs_true.png", "images.png", "correlation_table.png")


def read_physics(path, role: str):
    """``(DiffuseConfig, vectors, mask)`` recorded in a shard (attribute ``diffuse``), a
    CXI file (``entry_1/xrayflow_attrs/diffuse``) or a prediction file (dataset
    ``diffuse``); None when the file has none."""
    try:
        with h5py.File(path, "r") as f:
            if SECTION in f.attrs:
                text = f.attrs[SECTION]
            elif f"entry_1/xrayflow_attrs/{SECTION}" in f:
                text = f[f"entry_1/xrayflow_attrs/{SECTION}"][()]
            elif SECTION in f and isinstance(f[SECTION], h5py.Dataset):
                text = f[SECTION][()]
            else:
                return None
    except OSError as exc:
        raise DataError(f"{role} file {str(path)!r} is not a readable HDF5 file ({exc})") from None
    text = text.decode() if isinstance(text, bytes) else str(text)
    try:
        return physics_from_attrs(json.loads(text))
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(
            f"{role} file {str(path)!r}: unreadable {SECTION!r} physics ({exc})"
        ) from None


def resimulate(encodings, vectors, cfg: DiffuseConfig, mask) -> np.ndarray:
    """Noise-free images ``(k, size, size)`` of encodings ``(k, dim)`` by the closed form,
    scaled to mean 1 over the unmasked pixels (masked pixels 0). Predicted values are
    clipped to [−1, 1] first; negative intensities of the truncated sum are set to 0; an
    encoding whose truncated sum is nowhere positive gives a zero image."""
    keep = ~np.asarray(mask, bool)
    out = np.zeros((len(encodings), cfg.size, cfg.size))
    for i, e in enumerate(np.clip(np.asarray(encodings, dtype=np.float64), -1.0, 1.0)):
        intensity = closed_form_intensity(e, vectors, cfg)
        img = np.where(keep, np.maximum(intensity, 0.0), 0.0)
        mean = img[keep].mean()
        if mean > 0:
            out[i] = img / mean
    return out


def image_scores(predicted_images, true_images, mask) -> tuple[np.ndarray, np.ndarray]:
    """Per image: ``(R² of predicted against true over the unmasked pixels, MSE)``."""
    keep = ~np.asarray(mask, bool)
    p = np.asarray(predicted_images)[:, keep]
    t = np.asarray(true_images)[:, keep]
    return r2_scores(p.T, t.T), np.mean((p - t) ** 2, axis=1)


def subset(n: int, at_most: int) -> np.ndarray:
    """At most ``at_most`` evenly spaced indices of ``n`` samples (all when fewer)."""
    if n <= at_most:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, at_most).round().astype(int))


def encoding_scores(predicted, true, names, vectors) -> dict:
    """Per-variable R², MAE, MSE and the truth's mean and spread, and their means, of
    ``(N, dim)`` predicted against true encodings."""
    r2 = r2_scores(predicted, true)
    err = predicted - true
    mae, mse = np.mean(np.abs(err), axis=0), np.mean(err**2, axis=0)
    variables = {
        name: {
            "vector": [int(x) for x in vectors[j]],
            "r2": float(r2[j]),
            "mae": float(mae[j]),
            "mse": float(mse[j]),
            "true_mean": float(np.mean(true[:, j])),
            "true_std": float(np.std(true[:, j])),
        }
        for j, name in enumerate(names)
    }
    return {
        "r2": float(np.mean(r2)),
        "r2_per_variable": [float(v) for v in r2],
        "mae": float(np.mean(mae)),
        "mse": float(np.mean(mse)),
        "variables": variables,
    }


def evaluate(result_path, reference_path, config: dict) -> tuple[dict, dict]:
    """``(metrics, arrays)`` of the predictions in ``result_path`` against the labels of
    ``reference_path`` (DataError naming the file when they do not fit)."""
    pred, p_names = read_predictions(result_path, "encoding", "encoding_names")
    true, t_names = read_labels(reference_path, "encoding", "encoding_names")
    if len(pred) != len(true):
        raise DataError(
            f"result file {str(result_path)!r} has {len(pred)} predictions, truth file "
            f"{str(reference_path)!r} {len(true)} labelled samples (predict on the truth file)"
        )
    missing = [n for n in t_names if n not in p_names]
    if missing:
        raise DataError(
            f"result file {str(result_path)!r} does not predict {', '.join(missing)} of the "
            f"truth file {str(reference_path)!r} (encodings of different dimensions?)"
        )
    pred = pred[:, [p_names.index(n) for n in t_names]]
    phys = read_physics(reference_path, "truth") or read_physics(result_path, "result")
    if phys is None:
        raise DataError(
            f"neither {str(reference_path)!r} nor {str(result_path)!r} records the diffuse "
            "physics (attribute 'diffuse') needed to re-simulate the images"
        )
    cfg, vectors, mask = phys
    if len(vectors) != len(t_names):
        raise DataError(
            f"truth file {str(reference_path)!r}: {len(vectors)} neighbour vectors for "
            f"{len(t_names)} encoding variables"
        )
    metrics = {"kind": "encoding", "mode": "truth", "n_samples": int(len(pred))}
    metrics.update(encoding_scores(pred, true, t_names, vectors))
    at_most = int(((config or {}).get(SECTION) or {}).get("image_samples", IMAGE_SAMPLES))
    rows = subset(len(pred), at_most)
    img_pred = resimulate(pred[rows], vectors, cfg, mask)
    img_true = resimulate(true[rows], vectors, cfg, mask)
    r2_img, mse_img = image_scores(img_pred, img_true, mask)
    metrics.update(
        r2_images=float(np.mean(r2_img)),
        r2_images_median=float(np.median(r2_img)),
        image_mse=float(np.mean(mse_img)),
        n_images=int(len(rows)),
        image_rows=[int(r) for r in rows],
    )
    arrays = {
        "predicted": pred,
        "true": true,
        "names": t_names,
        "vectors": vectors,
        "rows": rows[:EXAMPLES],
        "images_predicted": img_pred[:EXAMPLES],
        "images_true": img_true[:EXAMPLES],
        "images_r2": r2_img[:EXAMPLES],
        "measured": _measured(reference_path, rows[:EXAMPLES]),
        "mask": mask,
    }
    return metrics, arrays


def _measured(path, rows) -> np.ndarray | None:
    """The network inputs (shard) or counts (CXI) of ``rows`` of the truth file, for the
    figure; None when there are none."""
    try:
        with h5py.File(path, "r") as f:
            for name in ("inputs", "entry_1/data_1/data"):
                if name in f and f[name].ndim == 3:
                    return np.asarray(f[name][np.sort(rows)], dtype=np.float64)
    except (OSError, TypeError, ValueError):
        return None
    return None


def summary_line(metrics: dict, out) -> str:
    """One line: mean and lowest R², MAE, the image-space R², samples."""
    low = min(metrics["r2_per_variable"])
    return (
        f"evaluate (truth, encoding): R2 {metrics['r2']:.3f} (lowest {low:.3f}) over "
        f"{len(metrics['variables'])} variables, MAE {metrics['mae']:.4f}, image R2 "
        f"{metrics['r2_images']:.3f} on {metrics['n_images']} re-simulated images, "
        f"{metrics['n_samples']} samples -> {out}"
    )


def write_figures(directory, metrics: dict, arrays: dict, config: dict | None = None) -> list:
    """Predicted against true per variable, example images with their re-simulations, and
    the seed's 4×4 correlation table (true and predicted of the first example, R² per
    vector), as PNG files."""
    d = Path(directory)
    pred, true, names = arrays["predicted"], arrays["true"], arrays["names"]
    out = []

    fig, axes = panel_grid(len(names), 2.4, 2.4)
    for ax, (j, name) in zip(axes, enumerate(names), strict=True):
        lo = float(min(true[:, j].min(), pred[:, j].min()))
        hi = float(max(true[:, j].max(), pred[:, j].max()))
        ax.plot([lo, hi], [lo, hi], color="k", lw=0.8)
        ax.scatter(true[:, j], pred[:, j], s=4, alpha=0.5)
        ax.set_title(f"{name}  R² {metrics['variables'][name]['r2']:.3f}", fontsize=8)
        ax.set_xlabel("true", fontsize=7)
        ax.set_ylabel("predicted", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.suptitle(f"predicted vs true encoding (mean R² {metrics['r2']:.3f})")
    fig.tight_layout()
    out.append(save_figure(fig, d / "predicted_vs_true.png", config))

    measured = arrays.get("measured")
    panels = [("re-simulated (true)", arrays["images_true"])]
    panels.append(("re-simulated (predicted)", arrays["images_predicted"]))
    if measured is not None:
        panels.insert(0, ("measured", measured))
    n_ex = len(arrays["images_true"])
    fig = Figure(figsize=(2.6 * len(panels), 2.5 * max(n_ex, 1)))
    axes = fig.subplots(max(n_ex, 1), len(panels), squeeze=False)
    for i in range(n_ex):
        for k, (title, imgs) in enumerate(panels):
            ax = axes[i, k]
            ax.imshow(imgs[i], cmap="magma", origin="lower")
            label = (
                title
                if title != "re-simulated (predicted)"
                else (f"{title}\nimage R² {arrays['images_r2'][i]:.3f}")
            )
            ax.set_title(f"sample {int(arrays['rows'][i])}: {label}", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    out.append(save_figure(fig, d / "images.png", config))

    vectors = np.asarray(arrays["vectors"])
    tables = [
        ("true (sample 0)", _table(true[0], vectors)),
        ("predicted (sample 0)", _table(pred[0], vectors)),
        ("R² per vector", _table(np.asarray(metrics["r2_per_variable"]), vectors, origin=np.nan)),
    ]
    fig = Figure(figsize=(10, 3.4))
    for ax, (title, table) in zip(fig.subplots(1, 3), tables, strict=True):
        ax.imshow(np.nan_to_num(table, nan=0.0), cmap="coolwarm", vmin=-1, vmax=1)
        for (m, n), value in np.ndenumerate(table):
            if np.isfinite(value):
                ax.text(n, m, f"{value:.3f}", ha="center", va="center", fontsize=8)
        ax.set_xticks(range(TABLE_SIDE))
        ax.set_yticks(range(TABLE_SIDE))
        ax.set_xlabel("n")
        ax.set_ylabel("m")
        ax.set_title(title, fontsize=9)
    fig.suptitle("Warren–Cowley coefficients α(m, n)")
    fig.tight_layout()
    out.append(save_figure(fig, d / "correlation_table.png", config))
    return out


def _table(values, vectors, origin: float = 1.0) -> np.ndarray:
    """The 4×4 table ``T[m, n]``: ``origin`` at (0, 0), ``values`` at the vectors, NaN
    elsewhere (vectors beyond the table are left out)."""
    table = np.full((TABLE_SIDE, TABLE_SIDE), np.nan)
    table[0, 0] = origin
    for value, (m, n) in zip(values, vectors.tolist(), strict=True):
        if m < TABLE_SIDE and n < TABLE_SIDE:
            table[m, n] = value
    return table
