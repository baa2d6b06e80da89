"""Diffuse scattering of disordered crystals: held-out R² of the CNN regression of the
short-range-order encoding for dimensions 3, 8 and 15, the image-space R² of images
re-simulated from the predicted encodings, and the throughput of the Monte Carlo, the
diffraction, training and inference.

Every point goes through the train stage: ``xrayflow.train.generate`` writes training shards
of ``--size``² images from config/train/diffuse.yaml (Metropolis lattices reaching a random
realisable encoding, their diffuse intensity, Poisson counts, Bragg pixels masked; the
targets are the correlations measured on the lattices), and a held-out shard with another
seed; the small CNN (``--network``) is trained (``xrayflow.train.loop.train``), applied to
the held-out shard (``xrayflow.train.infer.infer``) and scored by the modality's evaluation:
R² per variable (scikit-learn's ``r2_score``), its mean, MAE, and ``r2_images``, the R² of
the noise-free closed-form image of each predicted encoding against that of its true
encoding. Reference (the seed, 5,000 images, batch 32, 100 epochs, ≈ 0.2 M parameters):
validation R² 0.997 (dimension 3), 0.986 (8), 0.974 (15); re-simulated images R² −0.03,
0.11, 0.68. A CPU run here uses fewer images and epochs (stated in the table).

Throughput: samples/s of generation (all workers; Monte Carlo and diffraction), and the
diffuse intensity of the Monte Carlo lattices (``diffraction.diffuse_intensity``: form
factors, the sampled reciprocal grid) against a floor measured in the same run,
``scipy.fft.fft2`` of the same lattices and ``|F|²`` (the library FFT of the same size),
as ``ratio = floor time / our time``.

    python benchmarks/diffuse_regression.py                          # 3, 8, 15: ~15 min, 2 cores
    python benchmarks/diffuse_regression.py --samples 5000 --epochs 100 --device auto   # the seed's
    python benchmarks/diffuse_regression.py --dims 8 --samples 256 --epochs 2           # smoke

Prints a table and writes benchmarks/results/diffuse_regression.json (``--out``): per
encoding dimension (``"3"``, ``"8"``, ``"15"``) the mean ``r2`` over variables,
``r2_per_variable``, ``image_r2`` (re-simulated images) and ``mae``; ``rows``: everything
measured.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import scipy.fft
from network_study import generate_timed, run_benchmark, run_network, train_config

from xrayflow.modalities.diffuse import evaluation
from xrayflow.modalities.diffuse.diffraction import lattice_intensity, lattices_for
from xrayflow.modalities.diffuse.lattice import random_encoding
from xrayflow.modalities.diffuse.simulate import physics, vectors_of

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
#: The seed's validation R² and re-simulated image R², by dimension.
SEED = {3: (0.997, -0.03), 8: (0.986, 0.11), 15: (0.974, 0.68)}


def _args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a = ap.add_argument
    a("--config", default=str(REPO / "config/train/diffuse.yaml"), help="train config")
    a("--dims", default="3,8,15", help="encoding dimensions, comma separated")
    a("--size", type=int, default=64, help="image side (px)")
    a("--samples", type=int, default=1536, help="training + validation images")
    a("--test", type=int, default=256, help="held-out images (another seed)")
    a("--shards", type=int, default=4)
    a("--network", default="small", choices=["small", "large"])
    a("--epochs", type=int, default=30)
    a("--batch", type=int, default=32)
    a("--lr", type=float, default=2e-3)
    a("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    a("--threads", type=int, default=0, help="torch threads (0: cores available)")
    a("--seed", type=int, default=0)
    a("--workdir", default=None, help="keep shards and models here (default: temporary)")
    a("--out", default=str(HERE / "results" / "diffuse_regression.json"))
    return ap.parse_args(argv)


def _config(a, dim: int, seed: int, n: int, shards: int) -> dict:
    sets = {
        "data.diffuse.dimension": dim,
        "data.diffuse.image.size": a.size,
        "network.diffuse.size": a.network,
    }
    return train_config(a.config, seed, n, shards, sets, a)


def _diffraction_timing(cfg: dict, dim: int) -> dict:
    """Seconds per sample of the diffuse intensity of one Monte Carlo sample's lattices and
    of the floor (module docstring), best of five; the Monte Carlo's seconds per sweep."""
    section = cfg["data"]["diffuse"]
    p, v = physics(section), vectors_of(section)
    rng = np.random.default_rng(3)
    t0 = time.perf_counter()
    mc = lattices_for(random_encoding(v, rng, concentration=p.concentration), v, p, rng)
    t_mc = time.perf_counter() - t0
    lattices = mc.lattices.astype(np.float64)

    def ours():
        lattice_intensity(mc.lattices, p)

    def floor():
        np.abs(scipy.fft.fft2(lattices - lattices.mean(axis=(1, 2), keepdims=True))) ** 2

    best = {}
    for name, fn in (("intensity", ours), ("floor", floor)):
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        best[name] = min(times)
    return {
        "dimension": dim,
        "intensity_s": best["intensity"],
        "floor_s": best["floor"],
        "ratio": best["floor"] / best["intensity"],
        "mc_s": t_mc,
        "mc_sweeps": int(mc.sweeps),
        "mc_s_per_sweep": t_mc / max(int(mc.sweeps), 1),
    }


def _count(shard_dir: Path) -> int:
    """Samples in the shards of ``shard_dir``."""
    n = 0
    for p in sorted(shard_dir.glob("shard-*.h5")):
        with h5py.File(p, "r") as f:
            n += int(f.attrs["n_samples"])
    return n


def run(a) -> dict:
    dims = [int(d) for d in a.dims.split(",") if d]
    work = Path(a.workdir)
    rows = []
    for dim in dims:
        d = work / f"d{dim}"
        cfg = _config(a, dim, a.seed, a.samples, a.shards)
        fresh = not (d / "shards").exists()  # shards of a kept --workdir are reused
        t_gen = generate_timed(cfg, d / "shards")
        generate_timed(_config(a, dim, a.seed + 1000, a.test, 1), d / "test")
        n = _count(d / "shards")
        test_shard = d / "test" / "shard-00000.h5"
        r = run_network(
            cfg, d / "shards", test_shard, d / "model.pt", evaluation.evaluate, a.device
        )
        m = r.pop("metrics")
        r.update(
            dimension=dim,
            n_train=n,
            n_test=m["n_samples"],
            generation_samples_per_s=n / t_gen if fresh else None,
            r2=m["r2"],
            mae=m["mae"],
            r2_images=m["r2_images"],
            r2_per_variable={k: v["r2"] for k, v in m["variables"].items()},
            seed_r2=SEED.get(dim, (None, None))[0],
            seed_r2_images=SEED.get(dim, (None, None))[1],
            timing=_diffraction_timing(cfg, dim),
        )
        rows.append(r)
        print(
            f"  dim {dim}: R² {m['r2']:.3f}, images R² {m['r2_images']:.3f}, {r['train_s']:.0f} s"
        )
    per_dim = {
        str(r["dimension"]): {
            "r2": r["r2"],
            "r2_per_variable": r["r2_per_variable"],
            "image_r2": r["r2_images"],
            "mae": r["mae"],
        }
        for r in rows
    }
    return {"work": str(work), **per_dim, "rows": rows}


def _table(res: dict, a) -> str:
    out = [
        f"diffuse regression, {a.size}² images, network {a.network}, {a.epochs} epochs",
        "",
        f"{'dim':>4}{'train':>7}{'test':>6}{'R²':>7}{'seed':>7}{'MAE':>7}{'img R²':>8}"
        f"{'seed':>7}{'gen/s':>7}{'train s':>9}{'infer/s':>9}{'ratio':>8}",
    ]
    for r in res["rows"]:
        out.append(
            f"{r['dimension']:>4}{r['n_train']:>7}{r['n_test']:>6}{r['r2']:>7.3f}"
            f"{r['seed_r2'] or float('nan'):>7.3f}{r['mae']:>7.3f}{r['r2_images']:>8.3f}"
            f"{r['seed_r2_images'] if r['seed_r2_images'] is not None else float('nan'):>7.2f}"
            f"{r['generation_samples_per_s'] or float('nan'):>7.1f}"
            f"{r['train_s']:>9.0f}{r['infer_images_per_s']:>9.0f}"
            f"{r['timing']['ratio']:>8.2f}"
        )
    return "\n".join(out)


def main(argv=None) -> int:
    a = _args(argv)
    return run_benchmark("diffuse_regression", a, run, _table)


if __name__ == "__main__":
    sys.exit(main())
