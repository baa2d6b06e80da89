"""PNG figures of an evaluation (matplotlib, Agg canvas; no pyplot, no global state).

* ``comparison.png``: amplitude and phase of the aligned result, the reference and their
  difference (central z slice for volumes); for delta/beta volumes (kind ``refractive``),
  delta and beta of the central (z, x) slice, perpendicular to the rotation axis y;
* ``frc.png``: the FRC/FSC curve with the half-bit, one-bit, 0.5 and 1/7 thresholds and the
  crossings;
* ``loss.png``: the loss history of the result file(s), when there is one.

Element maps (kind ``element_maps``): ``element_maps.png`` (one row per element: truth,
result, raster scan at equal dose), ``speckle_pattern.png`` (the first illumination pattern
and the transmission image of the data file), ``frc.png`` (the sub-lattice FRC of each map,
result and raster, with the 1/7 and half-bit thresholds) and ``loss.png``.

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

__all__ = [
    "comparison_figure",
    "element_maps_figure",
    "frc_figure",
    "loss_figure",
    "pattern_figure",
    "refractive_figure",
    "sublattice_frc_figure",
    "write_figures",
]


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
        _show(fig, ax, img, title, cmap, lim)
    fig.tight_layout()
    return fig


def _show(fig, ax, img, title: str, cmap: str, lim=(None, None), fontsize: int = 10):
    """``img`` on ``ax`` with a title, no ticks and a colour bar (returned)."""
    im = ax.imshow(img, cmap=cmap, vmin=lim[0], vmax=lim[1], interpolation="nearest")
    ax.set_title(title, fontsize=fontsize)
    ax.set_xticks([])
    ax.set_yticks([])
    return fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)


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


def element_maps_figure(columns, elements, ssim=None):
    """One row per element, one column per entry of ``columns`` = ``[(label, maps)]`` (maps
    (E, Ny, Nx), g/cm²; the first is the reference, whose range sets the row's colour
    scale); ``ssim`` = ``{label: {element: value}}`` adds the SSIM to the titles."""
    ne, nc = len(elements), len(columns)
    fig = _figure(3.6 * nc + 0.4, 3.0 * ne + 0.3)
    axes = np.asarray(fig.subplots(ne, nc, squeeze=False))
    for i, element in enumerate(elements):
        lim = (float(np.min(columns[0][1][i])), float(np.max(columns[0][1][i])))
        if lim[0] == lim[1]:
            lim = (lim[0] - 0.5, lim[1] + 0.5)
        for ax, (label, maps) in zip(axes[i], columns, strict=True):
            value = ((ssim or {}).get(label) or {}).get(element)
            title = f"{element}: {label}" + ("" if value is None else f", SSIM {value:.3f}")
            _show(fig, ax, maps[i], title, "viridis", lim, 9).set_label("g/cm²", fontsize=8)
    fig.tight_layout()
    return fig


def pattern_figure(pattern: np.ndarray, transmission: np.ndarray | None = None):
    """The first illumination pattern (photons per pixel) and the transmission image."""
    panels = [(pattern, "illumination pattern 1 (photons/px)", "magma")]
    if transmission is not None:
        panels.append((transmission, "transmission image", "gray"))
    fig = _figure(4.6 * len(panels), 4.0)
    for ax, (img, title, cmap) in zip(
        fig.subplots(1, len(panels), squeeze=False)[0], panels, strict=True
    ):
        _show(fig, ax, img, title, cmap)
    fig.tight_layout()
    return fig


def sublattice_frc_figure(metrics: dict):
    """Sub-lattice FRC of every element map (``metrics["maps"]``, solid) and of the raster
    maps (``metrics["raster"]``, dashed), with the 1/7 and half-bit thresholds."""
    fig = _figure(7, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    for style, group in (("-", "maps"), ("--", "raster")):
        for i, (element, block) in enumerate((metrics.get(group) or {}).items()):
            b = block["frc"]
            res = b["resolution"][b["primary"]]
            hp = res.get("half_period_px") if res.get("crossed") else None
            tag = f" ({b['primary']}: {hp:.2f} px)" if hp else ""
            label = f"{element} {'result' if group == 'maps' else 'raster'}{tag}"
            x = np.asarray(b["frequency_cycles_per_px"], dtype=np.float64) / 0.5
            ax.plot(x, b["curve"], color=f"C{i}", ls=style, lw=1.2, label=label)
    first = next(iter(metrics["maps"].values()))["frc"]
    x = np.asarray(first["frequency_cycles_per_px"], dtype=np.float64) / 0.5
    n = np.asarray(first["n_per_ring"], dtype=np.float64)
    ax.plot(x, frcmod.threshold_curve("half_bit", n), "k:", lw=1, label="half-bit")
    ax.axhline(frcmod.FRC_ONE_SEVENTH, color="k", ls="-.", lw=0.8, label="1/7")
    ax.set_xlim(0, 0.5)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("spatial frequency / Nyquist of the map")
    ax.set_ylabel("correlation of the sub-lattices")
    ax.set_title("Sub-lattice Fourier ring correlation (even vs odd pixels)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
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
    if metrics.get("kind") == "element_maps":
        out = _element_map_figures(d, metrics, arrays, dpi)
    else:
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


def _element_map_figures(d: Path, metrics: dict, arrays: dict, dpi: int) -> list[Path]:
    columns = [("truth", arrays["ref"]), ("result", arrays["est"])]
    ssim = {"result": {k: v["ssim"] for k, v in metrics["maps"].items()}}
    if arrays.get("raster") is not None:
        columns.append(("raster", arrays["raster"]))
        ssim["raster"] = {k: v["ssim"] for k, v in metrics["raster"].items()}
    fig = element_maps_figure(columns, arrays["elements"], ssim)
    out = [_save(fig, d / "element_maps.png", dpi)]
    if arrays.get("pattern") is not None:
        fig = pattern_figure(arrays["pattern"], arrays.get("transmission"))
        out.append(_save(fig, d / "speckle_pattern.png", dpi))
    out.append(_save(sublattice_frc_figure(metrics), d / "frc.png", dpi))
    return out
