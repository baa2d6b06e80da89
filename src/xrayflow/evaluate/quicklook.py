"""Quick-look of a reconstruction without a ground truth (``xrayflow evaluate --result R``).

Metrics that need no reference: shape, pixel size and field of view, the final loss, the
amplitude and phase ranges inside the illuminated region, the probe's power per mode and the
scan's extent. Figure ``quicklook.png``: amplitude and phase (a scale bar when the pixel size
is known; volumes: the three central orthogonal slices), the probe modes, the scan positions
on the phase and the loss curve.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from xrayflow.evaluate.report import _loss_summary, read_object
from xrayflow.plotting import new_figure, save_png

FIGURE_NAMES = ("quicklook.png",)
#: Objects with more leading entries than this are volumes (z, y, x), else slices.
MAX_SLICES = 4


def _image(obj: np.ndarray) -> np.ndarray:
    """The 2D view of ``obj``: the projected transmission of S slices, or the object."""
    return obj.prod(axis=0) if obj.ndim == 3 else obj


def _read_scan(path) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The result's probe modes (M, n, n) and window corners (P, 2) px, when stored."""
    with h5py.File(path, "r") as f:
        probe = np.asarray(f["probe"][()]) if "probe" in f else None
        corners = np.asarray(f["positions_px"][()], np.float64) if "positions_px" in f else None
    if probe is not None and probe.ndim == 2:
        probe = probe[None]
    return probe, corners


def quicklook(result_path: str | os.PathLike, config: dict) -> tuple[dict, dict]:
    """Metrics (JSON-ready) and figure arrays of the result ``result_path`` alone."""
    res = read_object(result_path, "result")
    obj = res.object
    volume = obj.ndim == 3 and obj.shape[0] > MAX_SLICES
    probe, corners = _read_scan(result_path)
    img = obj if volume else _image(obj)
    lit = np.ones(img.shape, bool)
    if res.illumination is not None and not volume and res.illumination.max() > 0:
        lit = res.illumination >= config["illuminated_fraction"] * res.illumination.max()
    amp = np.abs(img)[lit]
    phase = np.angle(img * np.exp(-1j * np.angle(np.mean(img[lit]))))[lit]
    pix = res.pixel_size
    metrics: dict = {
        "mode": "quicklook",
        "kind": "volume" if volume else "image",
        "result": res.path,
        "result_dataset": res.dataset,
        "shape": list(obj.shape),
        "pixel_size_m": pix,
        "field_of_view_m": None if pix is None else [n * pix for n in img.shape[-2:]],
        "illuminated_fraction_of_grid": float(lit.mean()),
        "amplitude": {k: float(f(amp)) for k, f in (("min", np.min), ("max", np.max))}
        | {"mean": float(amp.mean())},
        "phase": {"min": float(phase.min()), "max": float(phase.max()), "std": float(phase.std())},
        "loss": _loss_summary(res.loss_history),
    }
    if probe is not None:
        power = (np.abs(probe) ** 2).sum(axis=(-2, -1))
        metrics["probe"] = {
            "modes": int(probe.shape[0]),
            "power_fraction": (power / power.sum()).tolist(),
        }
    if corners is not None:
        span = np.ptp(corners, axis=0)
        metrics["scan"] = {
            "positions": int(corners.shape[0]),
            "extent_px": span.tolist(),
            "extent_m": None if pix is None else (span * pix).tolist(),
        }
    arrays = {"image": img, "probe": probe, "corners": corners, "loss": res.loss_history}
    return metrics, arrays


def _scale_bar(ax, n_px: int, pixel: float) -> None:
    """A bar of a round length (1, 2 or 5 x 10^k m) about a fifth of ``n_px`` pixels wide."""
    target = n_px * pixel / 5
    k = np.floor(np.log10(target))
    length = max(m * 10**k for m in (1, 2, 5) if m * 10**k <= target)
    units = [(1e-3, "mm"), (1e-6, "µm"), (1e-9, "nm")]
    scale, name = next(((s, u) for s, u in units if length >= s), units[-1])
    bar = length / pixel
    y = 0.93 * ax.get_ylim()[0] if ax.get_ylim()[0] > 0 else 0
    ax.plot([0.05 * n_px, 0.05 * n_px + bar], [y, y], color="w", lw=3)
    ax.text(
        0.05 * n_px + bar / 2,
        y,
        f"{length / scale:g} {name}",
        color="w",
        ha="center",
        va="bottom",
        fontsize=8,
    )


def write_quicklook(directory: Path, metrics: dict, arrays: dict, config: dict) -> list[Path]:
    """``quicklook.png`` in ``directory`` (the figure of :func:`quicklook`'s arrays)."""
    img, probe, corners = arrays["image"], arrays["probe"], arrays["corners"]
    pix = metrics["pixel_size_m"]
    views = (
        [
            ("z", img[img.shape[0] // 2]),
            ("y", img[:, img.shape[1] // 2]),
            ("x", img[..., img.shape[2] // 2]),
        ]
        if img.ndim == 3
        else [("", img)]
    )
    n_probe = 0 if probe is None else min(3, probe.shape[0])
    cols = 2 * len(views) + n_probe + 1
    fig = new_figure(3.2 * cols, 3.4)
    axes = fig.subplots(1, cols)
    k = 0
    for cut, v in views:
        ref = np.mean(v) if np.any(v) else 1.0
        for what, data, cmap in (
            ("amplitude", np.abs(v), "gray"),
            ("phase (rad)", np.angle(v * np.exp(-1j * np.angle(ref))), "twilight"),
        ):
            ax = axes[k]
            im = ax.imshow(data, cmap=cmap)
            ax.set_title(f"{what}{f', central {cut} slice' if cut else ''}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            fig.colorbar(im, ax=ax, fraction=0.046)
            if pix is not None:
                _scale_bar(ax, data.shape[-1], pix)
            if what.startswith("phase") and corners is not None and probe is not None and not cut:
                c = corners + np.asarray(probe.shape[-2:]) / 2  # window centres
                ax.plot(c[:, 1], c[:, 0], ".", color="C1", ms=3)
            k += 1
    for m in range(n_probe):
        ax = axes[k]
        ax.imshow(np.abs(probe[m]), cmap="magma")
        frac = metrics["probe"]["power_fraction"][m]
        ax.set_title(f"probe mode {m} |P| ({100 * frac:.0f} %)", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        k += 1
    ax = axes[k]
    for name, h in arrays["loss"].items():
        ax.semilogy(np.arange(1, h.size + 1), np.maximum(h, 1e-300), label=name)
    ax.set_xlabel("iteration")
    ax.set_title("loss", fontsize=9)
    if arrays["loss"]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return [save_png(fig, Path(directory) / "quicklook.png", int(config["figures"]["dpi"]))]
