"""Compare a reconstruction with ground truth (--truth) or two half-dataset results (--pair).

Examples::

    xrayflow evaluate --result recon.h5 --truth data.cxi --out metrics.json --figures figs/
    xrayflow evaluate --pair half_a.h5 half_b.h5 --out frc.json --set crop_px=16

Writes a JSON file of metrics (SSIM, PSNR, errors, FRC curve and resolutions at the
half-bit, one-bit, 0.5 and 1/7 thresholds, half- and full-period) and, with --figures,
PNG figures. Bad inputs exit with status 2 and a one-line message.
"""

from __future__ import annotations

import argparse
import logging

from xrayflow.errors import ConfigError

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
    from xrayflow.config import load_config  # noqa: PLC0415
    from xrayflow.evaluate.report import evaluate_files  # noqa: PLC0415

    pair = getattr(args, "pair", None)
    result, truth = getattr(args, "result", None), getattr(args, "truth", None)
    if pair and (result or truth):
        raise ConfigError("evaluate: give either --pair A B or --result R --truth T, not both")
    if not pair and not (result and truth):
        raise ConfigError("evaluate: needs --result R.h5 --truth DATA.h5, or --pair A.h5 B.h5")
    out = getattr(args, "out", None)
    if not out:
        raise ConfigError("evaluate: --out metrics.json is required")
    cfg = load_config(args.config, "evaluate", args.overrides)
    if pair:
        a, b, mode = pair[0], pair[1], "pair"
    else:
        a, b, mode = result, truth, "truth"
    m = evaluate_files(a, b, out, cfg, mode=mode, figures=getattr(args, "figures", None))
    frc = m["frc"]
    best = frc["resolution"][frc["primary"]]
    hp = best.get("half_period_px")
    log.info("wrote %s", out)
    main = "delta" if m["kind"] == "refractive" else "phase"
    print(
        f"evaluate ({mode}, {m['kind']}): nrmse {m['nrmse']:.4g}, "
        f"{main} SSIM {m[main]['ssim']}, FRC {frc['primary']}: "
        f"{'not crossed' if not best['crossed'] else f'{hp:.3g} px half-period'} -> {out}"
    )
    return 0
