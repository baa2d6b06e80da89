"""PNG figures of an evaluation (matplotlib, Agg canvas; no pyplot, no global state).

* ``comparison.png``: amplitude and phase of the aligned result, the reference and their
  difference (central z slice for volumes); for delta/beta volumes (kind ``refractive``),
  delta and beta of the central (z, x) slice, perpendicular to the rotation axis y;
* ``frc.png``: the FRC/FSC curve with the half-bit, one-bit, 0.5 and 1/7 thresholds and the
  crossings;
* ``loss.png``: the loss history of the result file(s), when there is one.

Each file is written atomically.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from xrayflow.evaluate import frc as frcmod
from xrayflow.io.atomic import atomic_path

__all__ = ["comparison_figure", "frc_figure", "loss_figure", "refractive_figure", "write_figures"]


def _figure(w: float, h: float):
    fig = Figure(figsize=(w, h))
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path, dpi: int) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path


def _section(a: np.ndarray) -> np.ndarray:
    return a[a.shape[0] // 2] if a.ndim == 3 else a


def comparison_figure(
    est: np.ndarray, ref: np.ndarray, labels=("result", "reference"), amplitude_threshold=0.05
):
    """2x3 panels: amplitude and phase of ``est``, ``ref`` and ``est - ref``.

    Phases are left blank where the reference amplitude is below ``amplitude_threshold`` of
    its maximum (undefined there; the same mask as the phase metrics).
    """
    e, r = _section(np.asarray(est)), _section(np.asarray(ref))
    ae, ar = np.abs(e), np.abs(r)
    undefined = ar < amplitude_threshold * ar.max()
    dphi = np.where(undefined, np.nan, np.angle(e * np.conj(r)))
    pe, pr = np.angle(r) + dphi, np.where(undefined, np.nan, np.angle(r))
    lo, hi = float(min(ae.min(), ar.min())), float(max(ae.max(), ar.max()))
    plo = float(np.nanmin([np.nanmin(pe), np.nanmin(pr)])) if not undefined.all() else -np.pi
    phi = float(np.nanmax([np.nanmax(pe), np.nanmax(pr)])) if not undefined.all() else np.pi
    return _panel_figure(
        [
            (ae, f"{labels[0]} amplitude", "gray", (lo, hi)),
            (ar, f"{labels[1]} amplitude", "gray", (lo, hi)),
            (ae - ar, "amplitude difference", "RdBu_r", None),
            (pe, f"{labels[0]} phase (rad)", "twilight", (plo, phi)),
            (pr, f"{labels[1]} phase (rad)", "twilight", (plo, phi)),
            (dphi, "phase difference (rad)", "RdBu_r", None),
        ]
    )


def refractive_figure(est: np.ndarray, ref: np.ndarray, labels=("result", "reference")):
    """2x3 panels: delta and beta (``est.real``, ``est.imag`` of (Z, Y, X) volumes) of the
    central (z, x) slice of ``est``, ``ref`` and ``est - ref``."""
    y = np.asarray(est).shape[1] // 2
    e, r = np.asarray(est)[:, y, :], np.asarray(ref)[:, y, :]
    panels = []
    for part, name in ((np.real, "delta"), (np.imag, "beta")):
        pe, pr = part(e), part(r)
        lim = (float(min(pe.min(), pr.min())), float(max(pe.max(), pr.max())))
        panels += [
            (pe, f"{labels[0]} {name} (z, x at y={y})", "gray", lim),
            (pr, f"{labels[1]} {name}", "gray", lim),
            (pe - pr, f"{name} difference", "RdBu_r", None),
        ]
    return _panel_figure(panels)


def _panel_figure(panels):
    """2x3 images ``(array, title, colormap, (vmin, vmax) or None: symmetric)``."""
    fig = _figure(12, 7.5)
    for ax, (img, title, cmap, lim) in zip(fig.subplots(2, 3).ravel(), panels, strict=True):
        if lim is None:
            m = float(np.nanpercentile(np.abs(img), 99.5)) or float(np.nanmax(np.abs(img))) or 1.0
            lim = (-m, m)
        if lim[0] == lim[1]:
            lim = (lim[0] - 0.5, lim[1] + 0.5)
        im = ax.imshow(img, cmap=cmap, vmin=lim[0], vmax=lim[1], interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return fig


def frc_figure(frc_block: dict):
    """FRC curve against frequency (fraction of Nyquist) with threshold curves."""
    f = np.asarray(frc_block["frequency_cycles_per_px"], dtype=np.float64)
    c = np.asarray(frc_block["curve"], dtype=np.float64)
    n = np.asarray(frc_block["n_per_ring"], dtype=np.float64)
    x = f / 0.5
    fig = _figure(7, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(x, c, "k.-", lw=1.2, ms=3, label="FRC" if len(f) else "")
    styles = {
        "half_bit": ("C0", "--", "half-bit"),
        "one_bit": ("C1", "--", "one-bit"),
        "0.5": ("C2", ":", "0.5"),
        "1/7": ("C3", ":", "1/7"),
    }
    for name, res in frc_block["resolution"].items():
        color, ls, label = styles.get(name, ("C4", "-.", name))
        t = frcmod.threshold_curve(name, n)
        if res.get("crossed") and res.get("half_period_px") is not None:
            hp = res["half_period_px"]
            label += f": {hp:.2f} px"
            if res.get("half_period_m") is not None:
                label += f" = {res['half_period_m'] * 1e9:.1f} nm"
            label += " (half-period)"
            ax.axvline(res["fraction_of_nyquist"], color=color, lw=0.8, alpha=0.6)
        elif res.get("resolved") is False:
            label += ": not resolved"
        else:
            label += ": not crossed"
        if name == frc_block.get("primary"):
            label += " [primary]"
        ax.plot(x, t, color=color, ls=ls, lw=1, label=label)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("spatial frequency / Nyquist")
    ax.set_ylabel("correlation")
    ax.set_title(f"Fourier {'shell' if frc_block.get('ndim') == 3 else 'ring'} correlation")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


def loss_figure(histories: dict[str, dict[str, np.ndarray]]):
    """Loss curves (log scale when positive); ``histories`` = {label: {name: values}}."""
    fig = _figure(7, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    positive = True
    for label, hist in histories.items():
        for name, v in hist.items():
            v = np.asarray(v, dtype=np.float64)
            ax.plot(np.arange(v.size), v, lw=1.2, label=f"{label}: {name}")
            positive &= bool(np.all(v[np.isfinite(v)] > 0))
    if positive:
        ax.set_yscale("log")
    ax.set_xlabel("iteration / epoch")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def write_figures(
    directory: str | os.PathLike, metrics: dict, arrays: dict, config: dict | None = None
) -> list[Path]:
    """Write the figures of one evaluation into ``directory``; returns their paths."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    dpi = int(((config or {}).get("figures") or {}).get("dpi", 120))
    labels = ("result A", "result B") if metrics.get("mode") == "pair" else ("result", "truth")
    threshold = float((config or {}).get("amplitude_threshold", 0.05))
    if metrics.get("kind") == "refractive":
        fig = refractive_figure(arrays["est"], arrays["ref"], labels)
    else:
        fig = comparison_figure(arrays["est"], arrays["ref"], labels, threshold)
    out = [_save(fig, d / "comparison.png", dpi)]
    block = dict(metrics["frc"])
    block["ndim"] = np.asarray(arrays["est"]).ndim
    out.append(_save(frc_figure(block), d / "frc.png", dpi))
    hist = {}
    if arrays.get("loss_history"):
        hist[labels[0]] = arrays["loss_history"]
    if arrays.get("loss_history_ref"):
        hist[labels[1]] = arrays["loss_history_ref"]
    if hist:
        out.append(_save(loss_figure(hist), d / "loss.png", dpi))
    return out
