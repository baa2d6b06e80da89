"""3D Bragg CDI from random starts on measured-like data: the shrink-wrap guard against a
fixed threshold (xrayflow.solvers.phase_retrieval, ``cdi.shrinkwrap.guard``).

Two kinds of 3D pattern, each Poisson noise on 1e8 photons:

* ``measured``: what a beamline measures and 3D-CDI-NN publishes, 64^3 amplitudes
  normalised to max 1. A faceted gold crystal (``xrayflow.phantoms.faceted_crystals``, the
  simulate stage's phantom) of about 0.4 of the grid (oversampling about 2.2) with what
  the simulate stage leaves out: soft edges (the support blurred by 1 voxel) and an uneven
  density (1 - a * smooth noise); strain phase ``phi`` rms 1 rad (``a`` = 0.5, "hard") or
  0.6 rad (``a`` = 0.3, "moderate"), correlation length 6.4 voxels.
* ``simulated``: the simulate stage's 32^3 counts of a strained faceted crystal with sharp
  facets (as ``tests/modalities/test_bragg_cdi.py``), oversampling about 4.

Every pattern is reconstructed from several random starts with the default settings, and
with the guard off (``guard.iterations: 0``, a fixed threshold as before). Reported: the
R-factor of each start over the noise floor (the R-factor of the true crystal against the
noisy data, least-squares scale) and how many starts reached 1.2 x the floor.

Run: ``python benchmarks/cdi_measured.py [--crystals 4] [--starts 3]``; writes
``benchmarks/results/cdi_measured.json``. ``--npy DIR`` also writes each measured-like
pattern and its truth (``DIR/<kind>_<seed>.npy``, ``DIR/<kind>_<seed>_truth.npy``) for
``xrayflow reconstruct -d DIR/hard_1.npy -o R.h5 --set model.type=bragg_cdi
--set data.quantity=amplitude``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from xrayflow.modalities.bragg_cdi import settings
from xrayflow.modalities.bragg_cdi.grid import embed
from xrayflow.modalities.bragg_cdi.model import BraggCDIModel
from xrayflow.phantoms import faceted_crystals
from xrayflow.solvers.phase_retrieval import refine

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cdi_refine import simulate_crystal, write_report

KINDS = {"hard": (0.5, 1.0), "moderate": (0.3, 0.6)}  # density modulation a, phase rms (rad)


def measured_like(n: int, seed: int, kind: str, photons: float = 1e8):
    """(amplitude (n^3, centred, max 1), true object (centred layout))."""
    a, phase_rms = KINDS[kind]
    rng = np.random.default_rng(seed)
    m = 3 * n // 4
    s = 0.4 * n / 2 / 1.1  # {111} facet distance, voxels
    ph = faceted_crystals((m, m, m), 1.0, 1, rng, radius_range=(s, 1.05 * s))
    support = ph.support()
    amp = ndimage.gaussian_filter(support.astype(float), 1.0)
    mod = ndimage.gaussian_filter(rng.standard_normal(support.shape), n / 10)
    amp *= 1 - a * (mod - mod.min()) / (mod.max() - mod.min())
    phi = ndimage.gaussian_filter(rng.standard_normal(support.shape), n / 10)
    phi = phi - phi[support].mean()
    phi *= phase_rms / phi[support].std()
    obj = embed(amp * np.exp(1j * phi), (n, n, n))
    far = np.abs(np.fft.fftn(np.fft.ifftshift(obj), norm="ortho")) ** 2
    counts = rng.poisson(np.fft.fftshift(photons * far / far.sum())).astype(np.float64)
    amplitude = np.sqrt(counts)
    return amplitude / amplitude.max(), obj


def simulated(seed: int, n: int = 32, photons: float = 1e8):
    """The simulate stage's counts as amplitudes, and the true object."""
    counts, obj = simulate_crystal(n, photons, seed)
    return np.sqrt(counts), obj


def floor_r(amplitude, obj) -> float:
    """R-factor of ``obj`` (centred layout) against centred amplitudes, best scale."""
    f = np.abs(np.fft.fftn(obj))
    a = np.fft.ifftshift(amplitude)
    f *= (f * a).sum() / (f * f).sum()
    return float(np.sqrt(((f - a) ** 2).sum() / (a * a).sum()))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--crystals", type=int, default=4, help="measured-like crystals per kind")
    p.add_argument("--simulated", type=int, default=6, help="simulate-stage crystals")
    p.add_argument("--starts", type=int, default=3, help="random starts per pattern")
    p.add_argument("--npy", type=Path, default=None, help="write the measured-like volumes here")
    p.add_argument("--out", default="benchmarks/results/cdi_measured.json")
    args = p.parse_args(argv)
    patterns = [
        (f"measured/{kind}", seed, *measured_like(64, seed, kind))
        for kind in KINDS
        for seed in range(args.crystals)
    ]
    patterns += [("simulated", seed, *simulated(seed)) for seed in range(1, args.simulated + 1)]
    if args.npy is not None:
        args.npy.mkdir(parents=True, exist_ok=True)
        for name, seed, amplitude, obj in patterns[: 2 * args.crystals]:
            stem = f"{name.split('/')[1]}_{seed}"
            np.save(args.npy / f"{stem}.npy", amplitude.astype(np.float32))
            np.save(args.npy / f"{stem}_truth.npy", obj)
    off = {"shrinkwrap": {"guard": {"iterations": 0}}}
    configs = {"guard": settings(), "no guard": settings(off)}
    rows = []
    for name, seed, amplitude, obj in patterns:
        floor = floor_r(amplitude, obj)
        model = BraggCDIModel(amplitude**2)
        for label, cfg in configs.items():
            rng = np.random.default_rng(0)
            ratios, times = [], []
            for _ in range(args.starts):
                t0 = time.perf_counter()
                res = refine(model, None, None, cfg, rng)
                times.append(time.perf_counter() - t0)
                ratios.append(res["r_factor"] / floor)
            rows.append(
                {
                    "pattern": name,
                    "seed": seed,
                    "config": label,
                    "noise_floor_r": floor,
                    "r_over_floor": ratios,
                    "time_s": times,
                }
            )
            print(
                f"{name:>17} {seed} {label:>8}: floor {floor:.4f}, R/floor "
                + " ".join(f"{r:5.2f}" for r in ratios)
                + f" ({np.mean(times):.1f} s per start)",
                flush=True,
            )
    summary = {}
    for name in sorted({r["pattern"] for r in rows}):
        for label in configs:
            mine = [r for r in rows if r["pattern"] == name and r["config"] == label]
            ratios = [x for r in mine for x in r["r_over_floor"]]
            summary[f"{name}, {label}"] = {
                "starts": len(ratios),
                "within_1.2_floor": int(np.sum(np.asarray(ratios) <= 1.2)),
                "median_r_over_floor": float(np.median(ratios)),
            }
            print(f"{name}, {label}: {summary[f'{name}, {label}']}")
    write_report(args.out, "cdi_measured", summary=summary, rows=rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
