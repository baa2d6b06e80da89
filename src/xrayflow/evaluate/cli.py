"""Compare a reconstruction with ground truth (--truth) or two half-dataset results (--pair),
or look at one without either (--result alone: a quick-look).

Examples::

    xrayflow evaluate --result recon.h5 --truth data.cxi --out metrics.json --figures figs/
    xrayflow evaluate --pair half_a.h5 half_b.h5 --out frc.json --set crop_px=16
    xrayflow evaluate --result recon.h5 --out look.json --figures figs/

A quick-look (no truth, no pair) reports what needs no reference (pixel size, field of view,
final loss, amplitude and phase ranges where illuminated, probe power per mode, scan extent)
and draws quicklook.png (amplitude and phase with a scale bar, probe modes, the scan
positions, the loss curve).

Writes a JSON file of metrics (SSIM, PSNR, errors, FRC curve and resolutions at the
half-bit, one-bit, 0.5 and 1/7 thresholds, half- and full-period) and, with --figures,
PNG figures; the two appear together or not at all. An FRC below the threshold from the
first ring on is a result ("resolved": false, "not resolved" in the summary line), not an
error. Bad inputs, and outputs that would overwrite an input or cannot be written, exit
with status 2 and a one-line message before anything is computed.
"""

from __future__ import annotations

import argparse
import logging
import os

from xrayflow.config import load_config
from xrayflow.errors import ConfigError
from xrayflow.evaluate.frc import threshold_curve
from xrayflow.evaluate.quicklook import FIGURE_NAMES, quicklook, write_quicklook
from xrayflow.evaluate.report import evaluate_files, modality_evaluator, publish
from xrayflow.io.outputs import check_outputs

log = logging.getLogger("xrayflow.evaluate")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``xrayflow evaluate`` (``--config`` and ``--set`` come from xrayflow.cli)."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--result", metavar="R.h5", help="reconstruction file (HDF5 'object')")
    parser.add_argument(
        "--truth", metavar="DATA.h5", help="simulated data file with entry_1/xrayflow_truth"
    )
    parser.add_argument(
        "--pair",
        nargs=2,
        metavar=("A.h5", "B.h5"),
        help="two independent reconstructions (half-datasets) instead of --result/--truth",
    )
    parser.add_argument("--out", "-o", metavar="metrics.json", help="metrics JSON file")
    parser.add_argument("--figures", metavar="DIR", help="write PNG figures into DIR")


def run(args: argparse.Namespace) -> int:
    """Run the evaluation described by parsed ``args``; raises XrayflowError on bad input."""
    pair = getattr(args, "pair", None)
    result, truth = getattr(args, "result", None), getattr(args, "truth", None)
    if pair and (result or truth):
        raise ConfigError("evaluate: give either --pair A B or --result R --truth T, not both")
    if not pair and not result:
        raise ConfigError("evaluate: needs --result R.h5 [--truth DATA.h5], or --pair A.h5 B.h5")
    out = getattr(args, "out", None)
    if out is None:
        raise ConfigError("evaluate: --out metrics.json is required")
    figures = getattr(args, "figures", None)
    config_file = args.config if isinstance(args.config, str | os.PathLike) else None
    if pair:
        a, b, mode = pair[0], pair[1], "pair"
        inputs = {"--pair A": a, "--pair B": b}
    elif truth is None:
        a, b, mode = result, None, "quicklook"
        inputs = {"--result": a}
    else:
        a, b, mode = result, truth, "truth"
        inputs = {"--result": a, "--truth": b}
    # output safety before anything is read or computed: --out/--figures must not be an
    # input, a device, a directory (--out) or a file (--figures), nor lie in a missing folder
    check_outputs(
        {"--out": out, "--figures": figures},
        {**inputs, "--config": config_file},
        dirs=("--figures",),
    )
    cfg = load_config(args.config, "evaluate", args.overrides)
    _check_thresholds(cfg)
    if mode == "quicklook":
        m, arrays = quicklook(a, cfg)
        publish(out, m, figures, arrays, cfg, writer=write_quicklook, figure_names=FIGURE_NAMES)
        print(f"evaluate (quick-look, {m['kind']}): {_quicklook_text(m)} -> {out}")
        return 0
    m = evaluate_files(a, b, out, cfg, mode=mode, figures=figures)
    log.info("wrote %s", out)
    own = modality_evaluator(((a, "result"), (b, "truth"))) if cfg["kind"] == "auto" else None
    print(own.summary_line(m, out) if own is not None else summary_line(m, mode, out))
    return 0


def _quicklook_text(m: dict) -> str:
    loss = next(iter(m["loss"].values()), None)
    parts = [f"phase {m['phase']['min']:.3g}..{m['phase']['max']:.3g} rad"]
    if m["field_of_view_m"] is not None:
        parts.append("field " + " x ".join(f"{v:.3g}" for v in m["field_of_view_m"]) + " m")
    if loss is not None:
        parts.append(f"final loss {loss['final']:.4g} after {loss['n']} iterations")
    return ", ".join(parts)


def _check_thresholds(cfg: dict) -> None:
    """Unknown FRC threshold names are a config error naming the key (before any work)."""
    fc = cfg["frc"]
    named = [(f"frc.thresholds[{i}]", t) for i, t in enumerate(fc["thresholds"])]
    if fc["primary"] != "auto":
        named.append(("frc.primary", fc["primary"]))
    for key, name in named:
        try:
            threshold_curve(str(name), [1])
        except ValueError as exc:
            raise ConfigError(f"evaluate.{key}: {exc}") from None


def summary_line(m: dict, mode: str, out) -> str:
    """The one-line summary of an evaluation (``not resolved`` when the FRC is below the
    threshold from the first ring on)."""
    if m["kind"] == "element_maps":
        return _element_maps_line(m, out)
    frc = m["frc"]
    res = _resolution_text(frc["resolution"][frc["primary"]])
    main = "delta" if m["kind"] == "refractive" else "phase"
    nrmse = m.get("nrmse")
    nrmse_s = "n/a" if nrmse is None else f"{nrmse:.4g}"
    return (
        f"evaluate ({mode}, {m['kind']}): nrmse {nrmse_s}, "
        f"{main} SSIM {m[main]['ssim']}, FRC {frc['primary']}: {res} -> {out}"
    )


def _resolution_text(best: dict) -> str:
    """The resolution at one threshold in words."""
    hp = best.get("half_period_px")
    if best.get("resolved") is False or (best.get("crossed") and hp is None):
        return "not resolved (below the threshold from the first ring)"
    if not best.get("crossed"):
        return "not crossed"
    return f"{hp:.3g} px half-period"


def _element_maps_line(m: dict, out) -> str:
    """Per element: SSIM (raster SSIM) and the sub-lattice FRC resolution of the map."""

    def ssim(block):
        return "n/a" if block.get("ssim") is None else f"{block['ssim']:.3f}"

    parts = []
    for element, block in m["maps"].items():
        raster = (m.get("raster") or {}).get(element)
        vs = f" (raster {ssim(raster)})" if raster else ""
        frc = block["frc"]
        res = _resolution_text(frc["resolution"][frc["primary"]])
        parts.append(f"{element} SSIM {ssim(block)}{vs}, FRC {frc['primary']} {res}")
    return f"evaluate (truth, element_maps): {'; '.join(parts)} -> {out}"
