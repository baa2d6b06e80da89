"""Tagged scattering images: held-out mean average precision of the image CNN, the CNN on
Fourier–Bessel coefficients and the joint double-view network, with the throughput of
generation, features, training and inference.

Every point goes through the train stage: ``xrayflow.train.generate`` writes training shards
of ``--size``² detector images from config/train/scattering.yaml (the simulate stage's
physics, Poisson counts, artefacts) with their Fourier–Bessel features, and a held-out set
with another seed (the seed's protocol: train on 9 of 10 batches, score the 10th); one
network per view is trained on the same shards (``xrayflow.train.loop.train``), applied to
the held-out shard (``xrayflow.train.infer.infer``) and scored by the modality's evaluation
(AP per tag as scikit-learn's ``average_precision_score``, macro mAP over the tags with
positives, micro AP). Reference (Wang, Yager, Yu et al.; Guan et al. BMVC 2018): at 256²,
image CNN mAP ≈ 0.5–0.6, coefficient CNN ≈ 0.1 higher, the joint network slightly higher
still, with some 10⁵ training images on GPUs; a CPU run here has far fewer (stated in the
table), so its mAP is a lower bound of what the same code reaches at that scale.

Throughput: images/s of generation (all workers, features included) and of inference, and
the Fourier–Bessel features' time per image (the coefficients of both views, counts and
log image, with ``fourier_bessel.log_image``) against a floor measured in the same run:
``scipy.ndimage.map_coordinates`` (order 1) resampling the mask and each view onto the same
polar grid plus ``scipy.fft.fft`` of the rows (the library way of the same resampling and
FFT, without the in-painting and the Hankel projection), as ``ratio = floor time / our
time``.

    python benchmarks/scattering_classification.py                        # 128², ~25 min, 2 cores
    python benchmarks/scattering_classification.py --size 256 --train 8192 --epochs 30 --device auto
    python benchmarks/scattering_classification.py --networks joint --train 512 --epochs 2   # smoke
    python benchmarks/scattering_classification.py --size 256 --networks coefficient \
        --set data.scattering.fourier_bessel.log_image=false --seed 7 --out /tmp/ablation.json

Prints a table and writes benchmarks/results/scattering_classification.json (``--out``):
``runs[<size>]`` (everything measured at that image size; a run at another size is added
beside it) and, per network (``image``, ``coefficient``, ``joint``) and size, the macro
``map``, ``map_micro`` and ``ap_per_tag``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import scipy.fft
from network_study import generate_timed, run_benchmark, run_network, train_config
from scipy import ndimage

from xrayflow.config import parse_override
from xrayflow.modalities.scattering import evaluation
from xrayflow.modalities.scattering import training as hooks
from xrayflow.modalities.scattering.fourier_bessel import FourierBessel, default_radius

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
#: The networks, by name, and their view (``network.scattering.view``).
NETWORKS = {"image": "image", "coefficient": "coefficients", "joint": "joint"}


def _args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a = ap.add_argument
    a("--config", default=str(REPO / "config/train/scattering.yaml"), help="train config")
    a("--size", type=int, default=128, help="image side (px)")
    a("--train", type=int, default=3072, help="training + validation images")
    a("--test", type=int, default=768, help="held-out images (another seed)")
    a("--shards", type=int, default=8, help="training shards")
    a("--networks", default=",".join(NETWORKS), help="networks, comma separated")
    a("--epochs", type=int, default=12)
    a("--batch", type=int, default=32)
    a("--lr", type=float, default=2e-3)
    a("--tags", default="", help="comma-separated tag subset (default: all)")
    a("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    a("--threads", type=int, default=0, help="torch threads (0: cores available)")
    a("--feature-images", type=int, default=24, help="images timed for the features")
    a("--seed", type=int, default=0)
    a(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="train-config override (repeatable), e.g. data.scattering.fourier_bessel.signed=false",
    )
    a("--workdir", default=None, help="keep shards and models here (default: temporary)")
    a("--out", default=str(HERE / "results" / "scattering_classification.json"))
    return ap.parse_args(argv)


def _config(a, seed: int, n: int, shards: int) -> dict:
    sets = {"data.scattering.geometry.shape": a.size}
    if a.tags:
        sets["data.scattering.scattering.tags"] = a.tags.split(",")
    sets.update(parse_override(item) for item in a.overrides)
    return train_config(a.config, seed, n, shards, sets, a)


def _feature_timing(a, cfg: dict) -> dict:
    """Seconds per image of the Fourier–Bessel features and of the floor (see the module
    docstring), best of three, on ``--feature-images`` generated images."""
    data = cfg["data"]
    block, _ = next(hooks.simulate(data, {}, [a.feature_images], np.random.default_rng(7), None))
    counts, masks, centers = block["counts"], block["masks"].astype(bool), block["centers"]
    fb_cfg = data["scattering"]["fourier_bessel"]
    fb = FourierBessel(fb_cfg["m_orders"], fb_cfg["n_orders"])
    full_scale = data["scattering"]["full_scale"]
    _, views = hooks.transform_views(counts, masks, full_scale, fb_cfg["log_image"])
    fb.coefficients(views[:1], centers[:1], masks[:1])  # tables built outside the timing

    def ours():
        fb.coefficients(views, centers, masks)

    def floor():
        for img, good, c in zip(views, masks, centers, strict=True):
            polar = fb.polar(img, c, good)  # grid sizes only; its cost is not timed below
            r = polar.radii
            theta = 2 * np.pi * np.arange(polar.values.shape[-1]) / polar.values.shape[-1]
            yy = c[0] + r[:, None] * np.sin(theta)
            xx = c[1] + r[:, None] * np.cos(theta)
            t0 = time.perf_counter()
            w = ndimage.map_coordinates(good.astype(float), [yy, xx], order=1, mode="grid-constant")
            for v in img:
                v = ndimage.map_coordinates(v, [yy, xx], order=1, mode="grid-constant")
                scipy.fft.fft(v * w, axis=-1)
            floor.elapsed += time.perf_counter() - t0

    best = {}
    for name, fn in (("features", ours), ("floor", floor)):
        times = []
        for _ in range(3):
            floor.elapsed = 0.0
            t0 = time.perf_counter()
            fn()
            times.append(floor.elapsed if name == "floor" else time.perf_counter() - t0)
        best[name] = min(times) / len(counts)
    radius = float(
        np.mean(
            [default_radius(counts.shape[-2:], c, m) for c, m in zip(centers, masks, strict=True)]
        )
    )
    return {
        "features_s_per_image": best["features"],
        "floor_s_per_image": best["floor"],
        "ratio": best["floor"] / best["features"],
        "mean_radius_px": radius,
    }


def _count_tags(shard_dir: Path) -> tuple[list[str], np.ndarray, int]:
    total, n, names = None, 0, None
    for p in sorted(shard_dir.glob("shard-*.h5")):
        with h5py.File(p, "r") as f:
            tags = f["targets_tags"][()]
            names = json.loads(f.attrs["tag_names"])
        total = tags.sum(axis=0) if total is None else total + tags.sum(axis=0)
        n += len(tags)
    return names, total, n


def run(a) -> dict:
    networks = [v for v in a.networks.split(",") if v]
    for v in networks:
        if v not in NETWORKS:
            raise SystemExit(f"--networks: unknown network {v!r} (one of {', '.join(NETWORKS)})")
    work = Path(a.workdir)
    cfg = _config(a, a.seed, a.train, a.shards)
    test_cfg = _config(a, a.seed + 1000, a.test, 1)
    t_gen = generate_timed(cfg, work / "shards")
    t_test = generate_timed(test_cfg, work / "test")
    test_shard = work / "test" / "shard-00000.h5"
    names, positives, n_train = _count_tags(work / "shards")
    _, test_positives, n_test = _count_tags(work / "test")
    features = _feature_timing(a, cfg)
    rows = []
    for name in networks:
        vcfg = json.loads(json.dumps(cfg))
        vcfg["network"]["scattering"]["view"] = NETWORKS[name]
        r = run_network(
            vcfg, work / "shards", test_shard, work / f"{name}.pt", evaluation.evaluate, a.device
        )
        m = r.pop("metrics")
        r.update(
            network=name,
            map=m["map"],
            map_micro=m["map_micro"],
            ap_per_tag={k: v["average_precision"] for k, v in m["tags"].items()},
        )
        rows.append(r)
        print(f"  {name}: mAP {m['map']:.3f} (micro {m['map_micro']:.3f}), {r['train_s']:.0f} s")
    return {
        "work": str(work),
        "n_train": n_train,
        "n_test": n_test,
        "tags": names,
        "train_positives": dict(zip(names, positives.astype(int).tolist(), strict=True)),
        "test_positives": dict(zip(names, test_positives.astype(int).tolist(), strict=True)),
        "generation_images_per_s": n_train / t_gen,
        "generation_s": t_gen,
        "test_generation_s": t_test,
        "features": features,
        "rows": rows,
    }


def _table(res: dict, a) -> str:
    f = res["features"]
    out = [
        f"scattering classification, {a.size}² images, {res['n_train']} training "
        f"(incl. validation) / {res['n_test']} held-out images, {len(res['tags'])} tags",
        f"generation {res['generation_images_per_s']:.1f} images/s (features included); "
        f"Fourier–Bessel features {1e3 * f['features_s_per_image']:.2f} ms/image, floor "
        f"{1e3 * f['floor_s_per_image']:.2f} ms/image, ratio (floor/ours) {f['ratio']:.2f}",
        "",
        f"{'network':<13}{'mAP':>7}{'micro':>7}{'epochs':>7}{'train s':>9}{'train img/s':>12}"
        f"{'infer img/s':>12}",
    ]
    for r in res["rows"]:
        out.append(
            f"{r['network']:<13}{r['map']:>7.3f}{r['map_micro']:>7.3f}{r['epochs_run']:>7d}"
            f"{r['train_s']:>9.0f}{r['train_samples_per_s']:>12.1f}{r['infer_images_per_s']:>12.1f}"
        )
    return "\n".join(out)


def _index(runs: dict) -> dict:
    """Per network, per image size: the macro and micro mAP and the AP of every tag."""
    out = {name: {} for name in NETWORKS}
    for size, run in sorted(runs.items(), key=lambda kv: int(kv[0])):
        for r in run["rows"]:
            out[r["network"]][size] = {
                "map": r["map"],
                "map_micro": r["map_micro"],
                "ap_per_tag": r["ap_per_tag"],
                "n_train": run["n_train"],
                "n_test": run["n_test"],
            }
    return out


def main(argv=None) -> int:
    a = _args(argv)
    return run_benchmark("scattering_classification", a, run, _table, str(a.size), _index)


if __name__ == "__main__":
    sys.exit(main())
