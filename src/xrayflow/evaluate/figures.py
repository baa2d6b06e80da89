"""PNG figures of an evaluation (matplotlib, Agg canvas; no pyplot, no global state).

* ``comparison.png`` (2D objects and projected multislice objects): amplitude and phase of
  the aligned result, the reference and their difference;
* ``density_slices.png`` (3D complex densities, kind ``volume``, e.g. Bragg CDI): amplitude
  and phase of the aligned result, the reference and their difference in the three
  orthogonal central slices (z-y-x), axes in nm or µm from the voxel size (voxels when
  the files record none);
* ``refractive_slices.png`` (delta/beta volumes, kind ``refractive``, e.g.
  ptycho-tomography): delta and beta of the result, the reference and their difference in
  the three orthogonal central slices, axes as above;
* ``frc.png``: the FRC/FSC curve with the half-bit, one-bit, 0.5 and 1/7 thresholds and the
  crossings (the legend names the primary threshold);
* ``loss.png``: the loss history of the result file(s), when there is one.

Element maps (kind ``element_maps``): ``element_maps.png`` (one row per element: truth,
result, raster scan at equal dose), ``speckle_pattern.png`` (the first illumination pattern
and the transmission image of the data file), ``sublattice_frc.png`` (the sub-lattice FRC of
each map, result and raster, with the 1/7 and half-bit thresholds) and ``loss.png``.

:func:`orthogonal_slices_figure` draws central slices of volumes with axes in physical units
(:func:`length_unit`); the generic helpers are in :mod:`xrayflow.plotting`.

Each file is written atomically.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from xrayflow.evaluate import frc as frcmod
from xrayflow.plotting import curves_figure, new_figure, save_png, show_image

__all__ = [
    "FIGURE_FILES",
    "comparison_figure",
    "density_slices_figure",
    "element_maps_figure",
    "frc_figure",
    "length_unit",
    "loss_figure",
    "orthogonal_slices_figure",
    "pattern_figure",
    "refractive_figure",
    "sublattice_frc_figure",
    "write_figures",
]

#: Every figure file :func:`write_figures` may write (which ones depends on the kind).
FIGURE_FILES = (
    "comparison.png",
    "density_slices.png",
    "refractive_slices.png",
    "element_maps.png",
    "speckle_pattern.png",
    "sublattice_frc.png",
    "frc.png",
    "loss.png",
)


def _amplitude_phase_panels(e, r, labels, amplitude_threshold):
    """Panels ``(array, title, colormap, limits)`` of amplitude and phase of ``e``, ``r``
    (2D or 3D, same shape) and ``e - r``: amplitude row first, then phase. Phases are NaN
    (blank) where the reference amplitude is below ``amplitude_threshold`` of its maximum."""
    ae, ar = np.abs(e), np.abs(r)
    undefined = ar < amplitude_threshold * ar.max()
    dphi = np.where(undefined, np.nan, np.angle(e * np.conj(r)))
    pe, pr = np.angle(r) + dphi, np.where(undefined, np.nan, np.angle(r))
    lo, hi = float(min(ae.min(), ar.min())), float(max(ae.max(), ar.max()))
    plo = float(np.nanmin([np.nanmin(pe), np.nanmin(pr)])) if not undefined.all() else -np.pi
    phi = float(np.nanmax([np.nanmax(pe), np.nanmax(pr)])) if not undefined.all() else np.pi
    return [
        (ae, f"{labels[0]} amplitude", "gray", (lo, hi)),
        (ar, f"{labels[1]} amplitude", "gray", (lo, hi)),
        (ae - ar, "amplitude difference", "RdBu_r", None),
        (pe, f"{labels[0]} phase (rad)", "twilight", (plo, phi)),
        (pr, f"{labels[1]} phase (rad)", "twilight", (plo, phi)),
        (dphi, "phase difference (rad)", "RdBu_r", None),
    ]


def _refractive_panels(e, r, labels):
    """Panels of delta (``.real``) and beta (``.imag``) of ``e``, ``r`` and ``e - r``."""
    panels = []
    for part, name in ((np.real, "delta"), (np.imag, "beta")):
        pe, pr = part(e), part(r)
        lim = (float(min(pe.min(), pr.min())), float(max(pe.max(), pr.max())))
        panels += [
            (pe, f"{labels[0]} {name}", "gray", lim),
            (pr, f"{labels[1]} {name}", "gray", lim),
            (pe - pr, f"{name} difference", "RdBu_r", None),
        ]
    return panels


def comparison_figure(
    est: np.ndarray, ref: np.ndarray, labels=("result", "reference"), amplitude_threshold=0.05
):
    """2x3 panels: amplitude and phase of the 2D objects ``est``, ``ref`` and ``est - ref``.

    Phases are left blank where the reference amplitude is below ``amplitude_threshold`` of
    its maximum (undefined there; the same mask as the phase metrics). Volumes: see
    :func:`density_slices_figure`.
    """
    e, r = np.asarray(est), np.asarray(ref)
    if e.ndim != 2:
        raise ValueError(f"comparison_figure needs 2D objects, got {e.shape}")
    return _panel_figure(_amplitude_phase_panels(e, r, labels, amplitude_threshold))


def density_slices_figure(
    est: np.ndarray,
    ref: np.ndarray,
    labels=("result", "reference"),
    amplitude_threshold=0.05,
    voxel_size=None,
):
    """Amplitude and phase of the (Z, Y, X) volumes ``est``, ``ref`` and ``est - ref``
    (one row each) in the three orthogonal central slices (columns), axes in physical
    units from ``voxel_size`` (m; voxels when None)."""
    e, r = np.asarray(est), np.asarray(ref)
    panels = _amplitude_phase_panels(e, r, labels, amplitude_threshold)
    return orthogonal_slices_figure(panels, voxel_size)


def refractive_figure(
    est: np.ndarray, ref: np.ndarray, labels=("result", "reference"), voxel_size=None
):
    """Delta and beta (``est.real``, ``est.imag`` of (Z, Y, X) volumes) of ``est``, ``ref``
    and ``est - ref`` (one row each) in the three orthogonal central slices (columns), axes
    in physical units from ``voxel_size`` (m; voxels when None)."""
    e, r = np.asarray(est), np.asarray(ref)
    return orthogonal_slices_figure(_refractive_panels(e, r, labels), voxel_size)


def length_unit(extent_m: float) -> tuple[float, str]:
    """``(metres per unit, unit name)`` to label lengths up to ``extent_m``: nm below
    2 µm, µm below 2 mm, else mm."""
    for scale, name in ((1e-3, "mm"), (1e-6, "µm")):
        if extent_m >= 2 * scale:
            return scale, name
    return 1e-9, "nm"


def _voxel_triple(voxel_size, ndim: int = 3) -> tuple[float, ...] | None:
    """``voxel_size`` (one number or one per axis, m) as one positive number per axis, or
    None (unknown or not positive)."""
    if voxel_size is None:
        return None
    v = np.atleast_1d(np.asarray(voxel_size, dtype=np.float64)).ravel()
    if v.size == 1:
        v = np.repeat(v, ndim)
    if v.size != ndim or not np.all(np.isfinite(v)) or np.any(v <= 0):
        return None
    return tuple(float(x) for x in v)


#: The three orthogonal central slices of a (Z, Y, X) volume: (fixed axis, index function,
#: (vertical axis, horizontal axis)).
SLICES = (("z", 0, ("y", "x")), ("y", 1, ("z", "x")), ("x", 2, ("z", "y")))


def orthogonal_slices_figure(panels, voxel_size=None, panel_size: float = 3.3):
    """One row per entry of ``panels`` = ``[(volume (Z, Y, X), title, colormap, (vmin,
    vmax) or None: symmetric about 0)]``, one column per central slice: the (y, x) plane at
    the central z, the (z, x) plane at the central y and the (z, y) plane at the central x.

    Axes: positions from the volume's centre in nm, µm or mm (:func:`length_unit` of the
    largest extent) when ``voxel_size`` (m, one number or (z, y, x)) is known, else in
    voxels; every panel has both axis labels and a colour bar.
    """
    shape = np.asarray(panels[0][0]).shape
    if len(shape) != 3:
        raise ValueError(f"orthogonal slices need (Z, Y, X) volumes, got {shape}")
    voxel = _voxel_triple(voxel_size)
    if voxel is None:
        scale, unit, step = 1.0, "voxels", (1.0, 1.0, 1.0)
    else:
        scale, unit = length_unit(max(n * v for n, v in zip(shape, voxel, strict=True)))
        step = tuple(v / scale for v in voxel)
    names = ("z", "y", "x")
    centre = [n // 2 for n in shape]
    # extent of each axis about the centre, in the chosen unit
    span = {
        names[i]: ((-0.5 - centre[i]) * step[i], (shape[i] - 0.5 - centre[i]) * step[i])
        for i in range(3)
    }
    fig = new_figure(panel_size * 3 + 0.6, panel_size * 0.95 * len(panels) + 0.3)
    axes = np.asarray(fig.subplots(len(panels), 3, squeeze=False))
    for row, (vol, title, cmap, lim) in zip(axes, panels, strict=True):
        vol = np.asarray(vol)
        if lim is None:
            finite = np.abs(vol[np.isfinite(vol)])
            m = float(np.percentile(finite, 99.5)) if finite.size else 0.0
            m = m or (float(finite.max()) if finite.size else 0.0) or 1.0
            lim = (-m, m)
        if lim[0] == lim[1]:
            lim = (lim[0] - 0.5, lim[1] + 0.5)
        for ax, (cut, axis, (vert, horiz)) in zip(row, SLICES, strict=True):
            img = np.take(vol, centre[axis], axis=axis)
            extent = (*span[horiz], span[vert][1], span[vert][0])  # origin upper
            im = ax.imshow(
                img,
                cmap=cmap,
                vmin=lim[0],
                vmax=lim[1],
                interpolation="nearest",
                extent=extent,
                aspect="equal",
            )
            where = f"{cut} = 0" if voxel is not None else f"{cut} = {centre[axis]}"
            ax.set_title(f"{title}\n({vert}, {horiz}) slice at {where}", fontsize=8)
            ax.set_xlabel(f"{horiz} ({unit})", fontsize=8)
            ax.set_ylabel(f"{vert} ({unit})", fontsize=8)
            ax.tick_params(labelsize=7)
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04).ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig


def _panel_figure(panels):
    """2x3 images ``(array, title, colormap, (vmin, vmax) or None: symmetric)``."""
    fig = new_figure(12, 7.5)
    for ax, (img, title, cmap, lim) in zip(fig.subplots(2, 3).ravel(), panels, strict=True):
        if lim is None:
            m = float(np.nanpercentile(np.abs(img), 99.5)) or float(np.nanmax(np.abs(img))) or 1.0
            lim = (-m, m)
        if lim[0] == lim[1]:
            lim = (lim[0] - 0.5, lim[1] + 0.5)
        show_image(fig, ax, img, title, cmap, lim)
    fig.tight_layout()
    return fig


def frc_figure(frc_block: dict):
    """FRC curve against frequency (fraction of Nyquist) with threshold curves."""
    f = np.asarray(frc_block["frequency_cycles_per_px"], dtype=np.float64)
    c = np.asarray(frc_block["curve"], dtype=np.float64)
    n = np.asarray(frc_block["n_per_ring"], dtype=np.float64)
    x = f / 0.5
    fig = new_figure(7, 4.5)
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
    fig = new_figure(3.6 * nc + 0.4, 3.0 * ne + 0.3)
    axes = np.asarray(fig.subplots(ne, nc, squeeze=False))
    for i, element in enumerate(elements):
        lim = (float(np.min(columns[0][1][i])), float(np.max(columns[0][1][i])))
        if lim[0] == lim[1]:
            lim = (lim[0] - 0.5, lim[1] + 0.5)
        for ax, (label, maps) in zip(axes[i], columns, strict=True):
            value = ((ssim or {}).get(label) or {}).get(element)
            title = f"{element}: {label}" + ("" if value is None else f", SSIM {value:.3f}")
            show_image(fig, ax, maps[i], title, "viridis", lim, 9).set_label("g/cm²", fontsize=8)
    fig.tight_layout()
    return fig


def pattern_figure(pattern: np.ndarray, transmission: np.ndarray | None = None):
    """The first illumination pattern (photons per pixel) and the transmission image."""
    panels = [(pattern, "illumination pattern 1 (photons/px)", "magma")]
    if transmission is not None:
        panels.append((transmission, "transmission image", "gray"))
    fig = new_figure(4.6 * len(panels), 4.0)
    for ax, (img, title, cmap) in zip(
        fig.subplots(1, len(panels), squeeze=False)[0], panels, strict=True
    ):
        show_image(fig, ax, img, title, cmap)
    fig.tight_layout()
    return fig


def sublattice_frc_figure(metrics: dict):
    """Sub-lattice FRC of every element map (``metrics["maps"]``, solid) and of the raster
    maps (``metrics["raster"]``, dashed), with the 1/7 and half-bit thresholds."""
    fig = new_figure(7, 4.5)
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
    """Loss curves against the iteration (log scale when positive); ``histories`` =
    {label: {name: values}}."""
    curves = {
        f"{label}: {name}": (np.arange(np.asarray(v).size), v)
        for label, hist in histories.items()
        for name, v in hist.items()
    }
    return curves_figure(curves, "iteration", "loss", "Loss history of the reconstruction")


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
        est, ref = np.asarray(arrays["est"]), np.asarray(arrays["ref"])
        voxel = metrics.get("pixel_size_m")
        if metrics.get("kind") == "refractive":
            fig, name = refractive_figure(est, ref, labels, voxel), "refractive_slices.png"
        elif est.ndim == 3:
            fig = density_slices_figure(est, ref, labels, threshold, voxel)
            name = "density_slices.png"
        else:
            fig, name = comparison_figure(est, ref, labels, threshold), "comparison.png"
        out = [save_png(fig, d / name, dpi)]
        block = dict(metrics["frc"])
        block["ndim"] = np.asarray(arrays["est"]).ndim
        out.append(save_png(frc_figure(block), d / "frc.png", dpi))
    hist = {}
    if arrays.get("loss_history"):
        hist[labels[0]] = arrays["loss_history"]
    if arrays.get("loss_history_ref"):
        hist[labels[1]] = arrays["loss_history_ref"]
    if hist:
        out.append(save_png(loss_figure(hist), d / "loss.png", dpi))
    return out


def _element_map_figures(d: Path, metrics: dict, arrays: dict, dpi: int) -> list[Path]:
    columns = [("truth", arrays["ref"]), ("result", arrays["est"])]
    ssim = {"result": {k: v["ssim"] for k, v in metrics["maps"].items()}}
    if arrays.get("raster") is not None:
        columns.append(("raster", arrays["raster"]))
        ssim["raster"] = {k: v["ssim"] for k, v in metrics["raster"].items()}
    fig = element_maps_figure(columns, arrays["elements"], ssim)
    out = [save_png(fig, d / "element_maps.png", dpi)]
    if arrays.get("pattern") is not None:
        fig = pattern_figure(arrays["pattern"], arrays.get("transmission"))
        out.append(save_png(fig, d / "speckle_pattern.png", dpi))
    out.append(save_png(sublattice_frc_figure(metrics), d / "sublattice_frc.png", dpi))
    return out
