"""Figure helpers shared by the stages (evaluate, train) and the modalities: an off-screen
matplotlib figure, an atomic PNG write, an image panel, a line plot. No pyplot state: every
figure has its own Agg canvas, so figures can be drawn from worker processes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from xrayflow.io.atomic import atomic_path


def new_figure(w: float, h: float):
    """An empty figure of ``w`` x ``h`` inches on its own Agg canvas."""
    fig = Figure(figsize=(w, h))
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, path: Path, dpi: int) -> Path:
    """Write ``fig`` to ``path`` as PNG atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path


def show_image(fig, ax, img, title: str, cmap: str, lim=(None, None), fontsize: int = 10):
    """``img`` on ``ax`` with a title, no ticks and a colour bar (returned)."""
    im = ax.imshow(img, cmap=cmap, vmin=lim[0], vmax=lim[1], interpolation="nearest")
    ax.set_title(title, fontsize=fontsize)
    ax.set_xticks([])
    ax.set_yticks([])
    return fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)


def curves_figure(
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    xlabel: str,
    ylabel: str,
    title: str | None = None,
    markers: bool = False,
):
    """Line plot of ``curves`` = ``{label: (x, y)}`` (log y axis when every finite value
    is positive; points marked with ``markers``)."""
    fig = new_figure(7, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    positive = True
    for label, (x, y) in curves.items():
        y = np.asarray(y, dtype=np.float64)
        ax.plot(np.asarray(x), y, lw=1.2, marker="o" if markers else None, ms=4, label=label)
        positive &= bool(np.all(y[np.isfinite(y)] > 0))
    if positive and curves:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
