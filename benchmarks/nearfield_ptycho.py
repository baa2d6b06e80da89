"""Near-field ptychography in cone-beam geometry: time and quality against iterations.

Simulates ``config/simulate/nearfield_ptycho.yaml`` (diffuser beam, focus 4 mm upstream,
detector 1 m downstream; ``--set`` overrides, e.g. a larger detector), reconstructs it with
``config/reconstruct/nearfield_ptycho.yaml`` (object and probe from the back-propagated mean
frame) for each iteration count, and evaluates every result against the truth with
``xrayflow evaluate`` (phase SSIM, NRMSE); the largest count is also run on the even and odd
halves of the scan for the half-scan FRC. Throughput: the seconds per iteration against the
floor, ``scipy.fft`` (complex64, the backend's workers) doing the model's FFTs of one
iteration: 8 per frame (forward: probe shift and inverse, propagation and inverse; the
backward pass the same 4).

Usage::

    python benchmarks/nearfield_ptycho.py [--iterations 10 25 50 100 200] [--set KEY=VALUE]
        [--out benchmarks/results/nearfield_ptycho]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.fft

from xrayflow.backend import get_backend
from xrayflow.cli import main as xrayflow
from xrayflow.io.cxi import read_cxi_meta

ROOT = Path(__file__).resolve().parents[1]
SIM = str(ROOT / "config/simulate/nearfield_ptycho.yaml")
REC = str(ROOT / "config/reconstruct/nearfield_ptycho.yaml")
FFTS_PER_FRAME = 8


def _run(args: list[str]) -> float:
    t0 = time.perf_counter()
    if xrayflow(args) != 0:
        raise SystemExit(f"failed: xrayflow {' '.join(args)}")
    return time.perf_counter() - t0


def _reconstruct(data: Path, out: Path, iterations: int, *sets: str) -> float:
    args = ["reconstruct", "-c", REC, "-d", str(data), "-o", str(out)]
    for s in (f"optimizer.iterations={iterations}", "run.log_every=100000", *sets):
        args += ["--set", s]
    return _run(args)


def _evaluate(work: Path, *args: str) -> dict:
    out = work / "metrics.json"
    out.unlink(missing_ok=True)
    _run(["evaluate", *args, "--out", str(out)])
    return json.loads(out.read_text())


def fft_floor(n_frames: int, shape: tuple, repeats: int = 5) -> float:
    """Seconds ``scipy.fft`` needs for one iteration's FFTs (best of ``repeats``)."""
    a = np.random.default_rng(0).standard_normal((n_frames, *shape)).astype(np.complex64)
    workers = get_backend("cpu").workers
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(FFTS_PER_FRAME // 2):
            b = scipy.fft.fft2(a, workers=workers)
            scipy.fft.ifft2(b, workers=workers, overwrite_x=True)
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, nargs="+", default=[10, 25, 50, 100, 200])
    ap.add_argument("--set", dest="sets", action="append", default=[], help="simulate override")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/nearfield_ptycho"))
    args = ap.parse_args(argv)
    outdir = Path(args.out)
    outdir.mkdir(parents=True, exist_ok=True)
    report: dict = {"simulate": SIM, "reconstruct": REC, "overrides": args.sets}
    report["load_average_start"] = list(os.getloadavg())
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "nfp.cxi"
        sim = ["simulate", "-c", SIM, "-o", str(data)]
        for s in args.sets:
            sim += ["--set", s]
        report["simulate_s"] = _run(sim)
        meta = read_cxi_meta(data)
        n_frames, shape = meta["n_frames"], meta["frame_shape"]
        report.update(frames=n_frames, frame_shape=list(shape))
        rows = []
        for it in args.iterations:
            out = work / f"r{it}.h5"
            wall = _reconstruct(data, out, it)
            floor = fft_floor(n_frames, shape)
            m = _evaluate(work, "--result", str(out), "--truth", str(data))
            rows.append(
                {
                    "iterations": it,
                    "wall_s": wall,
                    "s_per_iteration": wall / it,
                    "floor_s_per_iteration": floor,
                    "ratio": floor / (wall / it),
                    "phase_ssim": m["phase"]["ssim"],
                    "nrmse": m["nrmse"],
                }
            )
            r = rows[-1]
            print(
                f"{it:5d} it  {wall:7.2f} s  {r['s_per_iteration'] * 1e3:7.1f} ms/it  ratio "
                f"{r['ratio']:.2f}  phase SSIM {r['phase_ssim']:.4f}  nrmse {r['nrmse']:.4f}",
                flush=True,
            )
        last = max(args.iterations)
        for half in ("even", "odd"):
            _reconstruct(data, work / f"{half}.h5", last, f"data.subset={half}")
        pair = _evaluate(work, "--pair", str(work / "even.h5"), str(work / "odd.h5"))
    report["rows"] = rows
    report["half_scan_frc"] = pair["frc"]["resolution"]
    report["half_scan_phase_ssim"] = pair["phase"]["ssim"]
    report["load_average_end"] = list(os.getloadavg())
    (outdir / "nearfield_ptycho.json").write_text(json.dumps(report, indent=1))
    hb = pair["frc"]["resolution"]["half_bit"]
    print(
        f"half scans ({last} it): FRC half-bit half-period {hb['half_period_px']:.2f} px "
        f"({hb['half_period_m']:.3g} m, {'crossed' if hb['crossed'] else 'not crossed'}), "
        f"phase SSIM between halves {pair['phase']['ssim']:.4f}"
    )
    print(f"wrote {outdir / 'nearfield_ptycho.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
