"""Speckle-illuminated X-ray fluorescence: element-map quality against the number of
patterns K and against the dose, for the AD solver and the SIREN network, with the raster
scan at equal dose.

Every point goes through the stages: ``xrayflow.simulate`` writes a data file of the
battery-cathode phantom (config/simulate/xrf_speckle.yaml at ``--size``² pixels, K =
fraction × pixels, photons per pattern at the sample), the reconstruct stage fits it with
``linear_inverse.method`` ``ad`` and ``siren`` (config/reconstruct/xrf_speckle.yaml), and
the evaluate stage's element-map comparison scores the maps against the truth: per element
SSIM and the sub-lattice FRC half-period at the 1/7 threshold (pixels; 2 px means "not
crossed up to the sub-lattice Nyquist frequency"). The raster row of each point is the
data file's simulated raster scan at the same total dose (K × photons per pattern over the
ny·nx dwell points: one exposure per pixel). Wall times: the reconstruct call (reading the
file, the fit, writing the result).

K sweep: ``--fractions`` at ``--photons`` per pattern; dose sweep: ``--doses`` at
``--dose-fraction``; the configured prior weights (tuned at ``--photons``) are scaled by
sqrt(dose / ``--photons``) at the other doses (``--prior-scaling``). The closing lines
state, per method, the smallest K (and dose) whose worst element SSIM reaches the raster
scan's at equal dose, and what that means in exposures (K patterns against ny·nx raster
points).

    python benchmarks/xrf_speckle.py                                 # 32², a few minutes
    python benchmarks/xrf_speckle.py --size 64 --siren-steps 1500    # the issue's 64²
    python benchmarks/xrf_speckle.py --methods ad --doses            # AD, K sweep only

Prints a table and writes benchmarks/results/xrf_speckle.json and, in
benchmarks/results/xrf_speckle/, quality_vs_k.png, quality_vs_dose.png and maps.png
(truth, AD, network and raster maps at the K sweep's point nearest 25 %).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from xrayflow.config import load_config
from xrayflow.evaluate.figures import element_maps_figure
from xrayflow.evaluate.report import evaluate_element_maps, read_element_maps
from xrayflow.io.atomic import atomic_path
from xrayflow.modalities import stage_schema
from xrayflow.parallel import get_comm
from xrayflow.reconstruct.linear_inverse import reconstruct
from xrayflow.simulate import run as simulate

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
METHODS = ("ad", "siren")


def scores(metrics: dict, group: str) -> dict:
    """Per element SSIM and 1/7 sub-lattice FRC half-period (px), their worst and mean."""
    blocks = metrics[group]
    ssim = {e: b["ssim"] for e, b in blocks.items()}
    frc = {e: b["frc"]["resolution"]["1/7"]["half_period_px"] for e, b in blocks.items()}
    return {
        "ssim": ssim,
        "ssim_min": min(ssim.values()),
        "ssim_mean": float(np.mean(list(ssim.values()))),
        "frc_half_period_px": frc,
        "frc_half_period_px_mean": float(np.mean(list(frc.values()))),
    }


PRIORS = ("tv", "l1", "gradient_prior")  # the weighted prior terms of linear_inverse


def scale_priors(settings: dict, photons: float, args) -> None:
    """With ``--prior-scaling sqrt``, the prior weights times sqrt(photons / --photons): the
    config's weights hold against the data term (summed counts) at the K sweep's dose, and
    the counts' relative noise grows as 1/sqrt(dose) below it."""
    if args.prior_scaling == "sqrt":
        for key in PRIORS:
            if key in settings:
                settings[key]["weight"] *= (photons / args.photons) ** 0.5


def run_point(args, work: Path, sweep: str, fraction: float, photons: float) -> tuple:
    """Simulate one data file and reconstruct it with every method: rows and the maps."""
    n = args.size
    data = work / f"{sweep}_{fraction:g}_{photons:g}.h5"
    sim = [
        f"geometry.shape=[{n},{n}]",
        f"xrf_speckle.pattern_fraction={fraction}",
        f"noise.photons_per_probe={photons}",
        f"seed={args.seed}",
    ]
    simulate(args.simulate, data, sim)
    truth = read_element_maps(data, "truth")
    k = int(round(fraction * n * n))
    base = {"sweep": sweep, "fraction": fraction, "K": k, "photons_per_pattern": photons}
    base["total_photons"] = photons * k
    rows, maps = [], {"truth": truth.maps, "raster": truth.raster}
    metrics = None
    for method in args.methods:
        sets = [
            f"linear_inverse.method={method}",
            f"linear_inverse.siren.steps={args.siren_steps}",
            f"linear_inverse.siren.omega_0={args.siren_omega}",
            f"linear_inverse.siren.lr={args.siren_lr}",
            f"run.device={args.device}",
            *args.overrides,
        ]
        cfg = load_config(args.reconstruct, stage_schema("reconstruct"), sets, "reconstruct")
        scale_priors(cfg["linear_inverse"], photons, args)
        out = work / f"{data.stem}_{method}.h5"
        t0 = time.perf_counter()
        reconstruct(cfg, data, out, get_comm(), log=lambda line: None)
        wall = time.perf_counter() - t0
        result = read_element_maps(out, "result")
        metrics, _ = evaluate_element_maps(result, truth)
        rows.append(
            {**base, "method": method, "exposures": k, "wall_s": wall, **scores(metrics, "maps")}
        )
        maps[method] = result.maps
    if metrics is not None:
        rows.append(
            {
                **base,
                "method": "raster",
                "exposures": n * n,
                "wall_s": None,
                **scores(metrics, "raster"),
            }
        )
    return rows, maps, truth.elements


def raster_row(rows: list, row: dict) -> dict:
    """The raster row of ``row``'s data file (same sweep, K and dose)."""
    same = ("sweep", "fraction", "photons_per_pattern")
    return next(r for r in rows if r["method"] == "raster" and all(r[k] == row[k] for k in same))


def matches(rows: list, method: str, sweep: str, key: str = "ssim_min") -> dict | None:
    """The first point of ``sweep`` (in its order) where ``method`` reaches the raster
    scan's ``key`` at equal dose, or None, with the exposure counts."""
    for r in rows:
        if r["sweep"] != sweep or r["method"] != method:
            continue
        ref = raster_row(rows, r)
        if r[key] >= ref[key]:
            return {
                "fraction": r["fraction"],
                "K": r["K"],
                "photons_per_pattern": r["photons_per_pattern"],
                key: r[key],
                f"raster_{key}": ref[key],
                "exposures": r["K"],
                "raster_exposures": ref["exposures"],
                "exposure_ratio": r["K"] / ref["exposures"],
            }
    return None


def equal_ssim_dose(rows: list, method: str, fraction: float, photons: float) -> dict | None:
    """The raster scan's total dose that gives ``method``'s worst-element SSIM at
    (``fraction``, ``photons``): log-linear interpolation along the dose sweep's raster rows;
    None outside their range."""
    raster = sorted(
        (r["total_photons"], r["ssim_min"])
        for r in rows
        if r["sweep"] == "dose" and r["method"] == "raster"
    )
    row = next(
        (
            r
            for r in rows
            if r["method"] == method
            and r["fraction"] == fraction
            and r["photons_per_pattern"] == photons
        ),
        None,
    )
    if row is None or len(raster) < 2:
        return None
    doses, ssims = np.log10([d for d, _ in raster]), np.array([v for _, v in raster])
    if not ssims[0] <= row["ssim_min"] <= ssims[-1] or np.any(np.diff(ssims) <= 0):
        return None
    dose = 10 ** float(np.interp(row["ssim_min"], ssims, doses))
    return {
        "ssim_min": row["ssim_min"],
        "total_photons": row["total_photons"],
        "raster_total_photons": dose,
        "dose_ratio": row["total_photons"] / dose,
    }


def closing(method: str, found: dict, rows: list) -> str:
    """Where ``method`` reaches the raster scan's worst-element SSIM at equal dose: the
    first K of the K sweep (with the exposure counts) and the first dose of the dose sweep,
    or its best SSIM against the raster's where it does not."""
    parts = []
    for sweep, what in (("K", "K sweep"), ("dose", "dose sweep")):
        m = found[sweep]
        mine = [r for r in rows if r["sweep"] == sweep and r["method"] == method]
        if not mine:
            continue
        if m is None:
            best = max(mine, key=lambda r: r["ssim_min"])
            raster = raster_row(rows, best)["ssim_min"]
            parts.append(
                f"{what}: never (best {best['ssim_min']:.3f} at K = {best['K']}, "
                f"{best['photons_per_pattern']:.0e} photons/pattern; raster {raster:.3f})"
            )
        else:
            parts.append(
                f"{what}: at K = {m['K']} ({100 * m['fraction']:g} % of the pixels), "
                f"{m['photons_per_pattern']:.0e} photons/pattern, SSIM {m['ssim_min']:.3f} >= "
                f"raster {m['raster_ssim_min']:.3f}: {m['K']} exposures instead of "
                f"{m['raster_exposures']} ({m['exposure_ratio']:.2f}x)"
            )
    return f"{method} reaches the raster scan's worst-element SSIM at equal dose: " + "; ".join(
        parts
    )


def table(rows: list, elements: list) -> str:
    head = (
        f"{'sweep':5} {'K':>5} {'K %':>5} {'photons':>8} {'method':7} "
        + " ".join(f"{'SSIM ' + e:>8}" for e in elements)
        + f" {'FRC px':>7} {'wall s':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        wall = "" if r["wall_s"] is None else f"{r['wall_s']:.1f}"
        lines.append(
            f"{r['sweep']:5} {r['K']:5d} {100 * r['fraction']:5.0f} "
            f"{r['photons_per_pattern']:8.0e} {r['method']:7} "
            + " ".join(f"{r['ssim'][e]:8.3f}" for e in elements)
            + f" {r['frc_half_period_px_mean']:7.2f} {wall:>7}"
        )
    return "\n".join(lines)


def _figure(w: float, h: float) -> Figure:
    fig = Figure(figsize=(w, h))
    FigureCanvasAgg(fig)
    return fig


def quality_figure(rows: list, sweep: str, x_key: str, x_label: str, log_x: bool) -> Figure:
    """Worst-element SSIM and mean FRC half-period against ``x_key`` per method."""
    fig = _figure(10, 4)
    ax_s, ax_f = fig.subplots(1, 2)
    for i, method in enumerate((*METHODS, "raster")):
        pts = sorted((r[x_key], r) for r in rows if r["sweep"] == sweep and r["method"] == method)
        if not pts:
            continue
        x = [p[0] for p in pts]
        style = {"color": f"C{i}", "marker": "o", "ls": "--" if method == "raster" else "-"}
        ax_s.plot(x, [p[1]["ssim_min"] for p in pts], label=method, **style)
        ax_f.plot(x, [p[1]["frc_half_period_px_mean"] for p in pts], label=method, **style)
    for ax, ylabel in ((ax_s, "SSIM (worst element)"), (ax_f, "FRC 1/7 half-period (px)")):
        ax.set_xlabel(x_label)
        ax.set_ylabel(ylabel)
        if log_x:
            ax.set_xscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def save(fig: Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=32, help="map side, px")
    p.add_argument(
        "--fractions",
        type=float,
        nargs="*",
        default=[0.05, 0.1, 0.25, 0.5, 1.0],
        help="K sweep: patterns per pixel",
    )
    p.add_argument("--photons", type=float, default=1e8, help="K sweep: photons per pattern")
    p.add_argument(
        "--doses",
        type=float,
        nargs="*",
        default=[1e4, 1e5, 1e6, 1e7, 1e8],
        help="dose sweep: photons per pattern",
    )
    p.add_argument("--dose-fraction", type=float, default=0.25, help="dose sweep: K / pixels")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--siren-steps", type=int, default=800, help="Adam steps of the network")
    p.add_argument("--siren-omega", type=float, help="the network's omega_0; default 10 size/64")
    p.add_argument("--siren-lr", type=float, help="its Adam rate; default min(1e-3, 0.01/omega_0)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (network)")
    p.add_argument(
        "--prior-scaling",
        choices=("sqrt", "none"),
        default="sqrt",
        help="prior weights at other doses: times sqrt(dose / --photons), or as configured",
    )
    p.add_argument("--device", default="cpu", choices=("cpu", "gpu", "auto"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--simulate", default=str(REPO / "config/simulate/xrf_speckle.yaml"))
    p.add_argument("--reconstruct", default=str(REPO / "config/reconstruct/xrf_speckle.yaml"))
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="reconstruct-config override (repeatable)",
    )
    p.add_argument("--out", default=str(HERE / "results/xrf_speckle.json"))
    p.add_argument("--figures", default=str(HERE / "results/xrf_speckle"))
    args = p.parse_args(argv)
    # coordinates span [-1, 1] at any map size: omega_0 in proportion to the size keeps the
    # first layer's band per pixel (10 at 64², 5 at 32²: the best of 5, 10, 15, 30 measured);
    # Adam's step in the sine arguments grows with omega_0 x lr (0.015 diverged at 64²)
    args.siren_omega = args.siren_omega or 10.0 * args.size / 64
    args.siren_lr = args.siren_lr or min(1e-3, 0.01 / args.siren_omega)
    torch.set_num_threads(args.threads)
    load_start = list(os.getloadavg())
    rows, shown, elements = [], None, []
    points = [("K", f, args.photons) for f in args.fractions]
    points += [("dose", args.dose_fraction, d) for d in args.doses]
    t0 = time.perf_counter()
    done: dict = {}  # (fraction, photons) -> rows: the sweeps share their common point
    with tempfile.TemporaryDirectory(prefix="xrf_speckle_bench_") as tmp:
        for sweep, fraction, photons in points:
            if (fraction, photons) in done:
                rows += [{**r, "sweep": sweep} for r in done[(fraction, photons)]]
                continue
            new, maps, elements = run_point(args, Path(tmp), sweep, fraction, photons)
            done[(fraction, photons)] = new
            rows += new
            for r in new:
                print(
                    f"{sweep} K={r['K']} photons={photons:g} {r['method']}: SSIM min "
                    f"{r['ssim_min']:.3f}",
                    file=sys.stderr,
                    flush=True,
                )
            if sweep == "K" and (shown is None or abs(fraction - 0.25) < abs(shown[0] - 0.25)):
                shown = (fraction, maps)
    print(table(rows, elements))
    summary = {m: {s: matches(rows, m, s) for s in ("K", "dose")} for m in args.methods}
    for method in args.methods:
        eq = equal_ssim_dose(rows, method, args.dose_fraction, args.photons)
        summary[method]["equal_ssim_raster_dose"] = eq
        if eq is not None:
            print(
                f"{method} at K = {100 * args.dose_fraction:g} %, {args.photons:.0e} photons/"
                f"pattern (SSIM {eq['ssim_min']:.3f}, {eq['total_photons']:.2e} photons): the "
                f"raster scan reaches that SSIM with {eq['raster_total_photons']:.2e} photons, "
                f"{eq['dose_ratio']:.0f}x less dose"
            )
    for method, found in summary.items():
        print(closing(method, found, rows))
    figs = Path(args.figures)
    figs.mkdir(parents=True, exist_ok=True)
    for sweep, x, label, log_x, name in (
        ("K", "fraction", "K / pixels", False, "quality_vs_k.png"),
        ("dose", "photons_per_pattern", "photons per pattern", True, "quality_vs_dose.png"),
    ):
        if any(r["sweep"] == sweep for r in rows):
            save(quality_figure(rows, sweep, x, label, log_x), figs / name)
    if shown is not None:
        fraction, maps = shown
        columns = [
            (f"{name} (K = {100 * fraction:g} %)" if name in METHODS else name, maps[name])
            for name in ("truth", *args.methods, "raster")
        ]
        save(element_maps_figure(columns, elements), figs / "maps.png")
    out = {
        "benchmark": "xrf_speckle",
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available(),
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "loadavg_start": load_start,
            "loadavg_end": list(os.getloadavg()),
        },
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "figures")},
        "elements": elements,
        "pixels": args.size**2,
        "total_s": time.perf_counter() - t0,
        "rows": rows,
        "raster_matched": summary,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(f"wrote {args.out} and {figs}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
