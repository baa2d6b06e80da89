"""3D Bragg CDI phase retrieval (xrayflow.solvers.phase_retrieval.refine): random start vs a
good start.

For each grid size N (detector N^3, crystal box (N/2)^3, 2x oversampled, Poisson counts,
~0.5 rad rms strain phase) and each seed:

* random start: the default recipe (200 HIO iterations with shrink-wrap every 20, then at
  most 300 Adam steps with shrink-wrap), one start per seed;
* good start: a stand-in for a network prediction (flat support blurred by 1 voxel, true
  phase plus a smooth error of 0.5 rad rms, in the crystal box): the default recipe from an
  estimate (20 HIO iterations, then at most 1000 Adam steps); ``--pure-ad`` adds a run
  of Adam alone (no HIO) from the same estimate.

Both stop once the amplitude R-factor is within 5 % of the noise floor (the R-factor of the
true crystal against the noisy counts; ``stop_loss = (1.05 R_floor)^2``): "converged" says
whether they got there.

Reported: wall time, iterations (HIO + gradient), final R-factor, amplitude SSIM and rms
phase error (rad) inside the crystal after twin / ramp / shift / phase removal, and the
R-factor of the true crystal against the noisy counts (the noise floor).

Run: ``python benchmarks/cdi_refine.py [--sizes 32 64] [--seeds 0 1 2] [--device cpu]``;
writes ``benchmarks/results/cdi_refine.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys

import numpy as np
from scipy import ndimage

from xrayflow.backend import get_backend
from xrayflow.evaluate.alignment import align
from xrayflow.evaluate.metrics import ssim
from xrayflow.io.atomic import atomic_path
from xrayflow.modalities.bragg_cdi import settings
from xrayflow.modalities.bragg_cdi.grid import crop, embed
from xrayflow.modalities.bragg_cdi.model import BraggCDIModel
from xrayflow.simulate import simulate
from xrayflow.solvers.phase_retrieval import refine


def simulate_crystal(n: int, photons: float, seed: int):
    """Counts (n^3, centred) and the true object on the same grid (photon units)."""
    vox = 1.378e-10 / (n * 55e-6)  # lambda z / (N p) at 9 keV, 1 m
    cfg = {
        "modality": "bragg_cdi",
        "seed": seed,
        "energy_ev": 9000,
        "geometry": {"shape": n, "distance": 1.0, "pixel_size": 55e-6},
        "phantom": {
            "type": "faceted_crystals",
            "shape": [None, None, None],
            "params": {"n_crystals": 1, "radius_range": [0.11 * n * vox, 0.118 * n * vox]},
        },
        "bragg": {"strain": {"amplitude": 5e-11, "correlation_length": 100e-9 * n / 32}},
        "noise": {"photons_per_probe": photons, "poisson": True},
        "output": {"compression": "none"},
    }
    d = simulate(cfg)
    data = d.data.astype(np.float64)
    truth = embed(d.truth["object"], data.shape)
    return data, truth * np.sqrt(data.sum() / np.sum(np.abs(truth) ** 2))


def score(obj, truth):
    a, _ = align(obj, truth, twin_check=True)
    m = truth.shape[0] // 2
    a, t = crop(a, (m,) * 3), crop(truth, (m,) * 3)
    amp = np.abs(t)
    inside = amp > 0
    dphi = np.angle(a[inside] * np.conj(t[inside]))
    return ssim(np.abs(a), amp, data_range=amp.max()), float(np.sqrt(np.mean(dphi**2)))


def good_start(truth, rng):
    m = truth.shape[0] // 2
    t = crop(truth, (m,) * 3)
    amp = ndimage.gaussian_filter((np.abs(t) > 0).astype(float), 1.0)
    err = ndimage.gaussian_filter(rng.standard_normal(t.shape), 2.0 * m / 16)
    return (amp / amp.max()) * np.exp(1j * (np.angle(t) + 0.5 * err / err.std()))


def row(kind, n, seed, res, truth):
    s, dphi = score(res["object"], truth)
    return {
        "start": kind,
        "n": n,
        "seed": seed,
        "time_s": res["time_s"],
        "hio_iterations": res["hio_iterations"],
        "iterations": res["iterations"],
        "r_factor": res["r_factor"],
        "ssim": s,
        "phase_error_rad": dphi,
        "converged": bool(res["stopped"]),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--photons", type=float, default=1e8)
    p.add_argument("--device", default="cpu", choices=["cpu", "gpu", "auto"])
    p.add_argument("--pure-ad", action="store_true", help="also Adam alone from the estimate")
    p.add_argument("--out", default="benchmarks/results/cdi_refine.json")
    args = p.parse_args(argv)
    backend = get_backend(args.device)
    rows = []
    print(
        f"{'start':>7} {'N':>4} {'seed':>4} {'time s':>7} {'HIO':>4} {'grad':>5} "
        f"{'R':>7} {'floor':>7} {'SSIM':>6} {'dphi':>6}"
    )
    for n in args.sizes:
        data, truth = simulate_crystal(n, args.photons, seed=1)
        floor = BraggCDIModel(data, backend=get_backend("cpu", "double")).r_factor(truth)
        model = BraggCDIModel(data, backend=backend)
        warm_up = settings({"iterations": 2, "hio": {"iterations": 2}})
        refine(model, None, None, warm_up)  # FFT plans, GPU kernels
        for seed in args.seeds:
            stop = {"stop_loss": (1.05 * floor) ** 2}
            rnd = refine(model, None, None, settings(stop), np.random.default_rng(seed))
            init = good_start(truth, np.random.default_rng(100 + seed))
            good = settings({**stop, "iterations": 1000})
            runs = [("random", rnd), ("good", refine(model, init, None, good))]
            if args.pure_ad:
                pure = settings({**stop, "iterations": 1000, "hio": {"iterations": 0}})
                runs.append(("good_ad", refine(model, init, None, pure)))
            for kind, res in runs:
                r = row(kind, n, seed, res, truth)
                r["noise_floor_r"] = floor
                rows.append(r)
                print(
                    f"{kind:>7} {n:>4} {seed:>4} {r['time_s']:7.2f} {r['hio_iterations']:>4} "
                    f"{r['iterations']:>5} {r['r_factor']:7.4f} {floor:7.4f} {r['ssim']:6.3f} "
                    f"{r['phase_error_rad']:6.3f} {r['converged']}"
                )
    write_report(args.out, "cdi_refine", device=backend.device, photons=args.photons, rows=rows)
    return 0


def write_report(path, name: str, **fields) -> None:
    """The benchmark's JSON at ``path`` (atomically): its ``name``, the platform, the Python
    version and ``fields``."""
    out = {
        "benchmark": name,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        **fields,
    }
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    raise SystemExit(main())
