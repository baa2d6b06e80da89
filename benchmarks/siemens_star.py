"""Real-data check: reconstruct the shared Siemens star (Tike test data) and measure the
Fourier ring correlation between reconstructions from the even and the odd scan positions.

Writes ``<outdir>/siemens_star.png`` (phase, amplitude, FRC) and ``<outdir>/siemens_star.json``
(timings, half-bit and 1/7 crossings, FRC curve). Data: AdvancedPhotonSource/tike test data
(BSD-style licence, Copyright 2018 UChicago Argonne, LLC); see /work/shared/data/README.md.

Usage::

    python benchmarks/siemens_star.py [--data PATH] [--config PATH] [--out DIR]
        [--iterations N] [--set KEY=VALUE ...]

FRC: central 320 x 320 px of the object phase of each half, after removing the relative
global phase, phase ramp and sub-pixel shift (xrayflow.evaluate.alignment.align), a Tukey
taper, then van Heel & Schatz half-bit threshold (and the fixed 1/7 threshold). The reported
period is the full period (1/f object pixels) at the first crossing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = (
    Path(os.environ.get("XRAYFLOW_SHARED", "/work/shared")) / "data" / "siemens-star-small.npz.bz2"
)


def run_one(cfg_path, data, out, subset, overrides):
    from xrayflow.config import load_config
    from xrayflow.reconstruct.run import reconstruct

    cfg = load_config(
        cfg_path, "reconstruct", [*overrides, f"data.subset={subset}", "run.checkpoint_every=0"]
    )
    t0 = time.perf_counter()
    res = reconstruct(cfg, data, out, log=lambda s: print(f"[{subset}] {s}", flush=True))
    return res, time.perf_counter() - t0


def central(a, size):
    ny, nx = a.shape[-2:]
    y0, x0 = (ny - size) // 2, (nx - size) // 2
    return a[..., y0 : y0 + size, x0 : x0 + size]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--config", default=str(ROOT / "config/reconstruct/siemens_star.yaml"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/siemens_star"))
    ap.add_argument("--iterations", type=int, default=None)
    ap.add_argument("--crop", type=int, default=320)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--skip-full", action="store_true", help="only the two half-scans")
    ap.add_argument(
        "--keep-recon",
        action="store_true",
        help="keep the reconstruction HDF5 files in --out (default: temporary)",
    )
    args = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from xrayflow.evaluate.alignment import align, tukey_window
    from xrayflow.evaluate.frc import frc, half_bit_threshold, resolution
    from xrayflow.io.hdf5 import read_h5

    outdir = Path(args.out)
    outdir.mkdir(parents=True, exist_ok=True)
    ov = list(args.overrides)
    if args.iterations is not None:
        ov.append(f"optimizer.iterations={args.iterations}")
    report = {"data": str(args.data), "config": str(args.config), "overrides": ov}
    report["load_average_start"] = list(os.getloadavg())  # shared machine: note the load
    objs = {}
    import tempfile

    tmpdir = tempfile.TemporaryDirectory()
    rdir = outdir if args.keep_recon else Path(tmpdir.name)
    for subset in (["all"] if not args.skip_full else []) + ["even", "odd"]:
        out = rdir / f"recon_{subset}.h5"
        res, wall = run_one(args.config, args.data, out, subset, ov)
        r = read_h5(out)
        objs[subset] = np.asarray(r["object"])[0]
        report[f"{subset}_wall_s"] = wall
        report[f"{subset}_iterations"] = int(res.iteration)
        report[f"{subset}_final_loss"] = float(res.history["loss"][-1])
    report["load_average_end"] = list(os.getloadavg())
    a = central(objs["even"], args.crop)
    b = central(objs["odd"], args.crop)
    b_al, info = align(b, a, scale=True)
    win = tukey_window(a.shape, 20)
    pa = np.angle(a * np.exp(-1j * np.angle(np.mean(a))))
    pb = np.angle(b_al * np.exp(-1j * np.angle(np.mean(a))))
    pa = (pa - pa.mean()) * win
    pb = (pb - pb.mean()) * win
    radii, curve, n = frc(pa, pb)
    thr = half_bit_threshold(n)
    resn = resolution(curve, thr)
    res7 = resolution(curve, "1/7")
    report.update(
        {
            "frc_crop_px": args.crop,
            "alignment_shift_px": [float(v) for v in info["shift_px"]],
            "half_bit_crossed": bool(resn.crossed),
            "half_bit_frequency_cycles_per_px": float(resn.frequency),
            "half_bit_full_period_px": float(resn.full_period_px),
            "half_bit_half_period_px": float(resn.half_period_px),
            "one_seventh_crossed": bool(res7.crossed),
            "one_seventh_full_period_px": float(res7.full_period_px),
            "target_full_period_px": 3.5,
            "meets_target": bool(resn.full_period_px <= 3.5),
            "frc_curve": [float(v) for v in curve],
            "half_bit_curve": [float(v) for v in thr],
            "frequencies_cycles_per_px": [float(v) for v in radii / (2 * (len(radii) - 1))],
        }
    )
    full = objs.get("all", objs["even"])
    fig, ax = plt.subplots(1, 3, figsize=(15, 5))
    ph = np.angle(full * np.exp(-1j * np.angle(np.mean(central(full, args.crop)))))
    im = ax[0].imshow(ph, cmap="gray")
    ax[0].set_title("phase (rad), " + ("all positions" if "all" in objs else "even half"))
    fig.colorbar(im, ax=ax[0], fraction=0.046)
    im = ax[1].imshow(np.abs(full), cmap="gray")
    ax[1].set_title("amplitude")
    fig.colorbar(im, ax=ax[1], fraction=0.046)
    f = np.asarray(report["frequencies_cycles_per_px"])
    ax[2].plot(f, curve, label=f"FRC even/odd (phase, central {args.crop} px)")
    ax[2].plot(f, thr, "--", label="half-bit")
    ax[2].axhline(1 / 7, color="C3", ls=":", lw=0.8, label="1/7")
    ax[2].axvline(1 / 3.5, color="gray", lw=0.8, label="period 3.5 px")
    ax[2].set_xlabel("spatial frequency (cycles / object pixel)")
    ax[2].set_ylim(0, 1.05)
    ax[2].set_title(f"half-bit crossing: period {resn.full_period_px:.2f} px")
    ax[2].legend()
    fig.tight_layout()
    fig.savefig(outdir / "siemens_star.png", dpi=90)
    (outdir / "siemens_star.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if not isinstance(v, list)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
