"""3D Bragg CDI: network alone, AD from a random start, network + AD refinement.

1. Generate a training set with the train stage (:func:`xrayflow.train.generate.generate`,
   config ``config/train/bragg_cdi_bench.yaml``: random faceted crystals with a smooth
   strain phase, Poisson patterns, sqrt(counts) centred in, support and phase of the crystal
   box out) and train a 3D support/phase network (:mod:`xrayflow.networks`) briefly
   (:func:`xrayflow.train.loop.train`).
2. Held-out crystals (same generator, another seed; counts = input²): for each,

   * ``network``: the prediction ``support * exp(i phase)`` alone (:func:`network_predict`
     on the whole held-out set in one batch, as for a beamtime's crystals; its time is per
     crystal; the time one crystal at a time is printed and recorded too);
   * ``random``: :func:`refine` from random phases (200 HIO iterations with shrink-wrap
     every 20, then at most 300 Adam steps), restarted with a new random start until one
     reaches the noise floor (``starts``: at most ``--max-starts``), as phase retrieval from
     random starts is run in practice; its time is the sum over the starts (time to
     solution);
   * ``net+refine``: :func:`refine_from_prediction` (at most ``--net-hio`` HIO iterations
     with shrink-wrap, then at most 300 Adam steps, from the prediction and the dilated
     network support, :func:`network_support`); if that misses the floor, random starts
     follow as above and their time is added.

   Refinements stop once the amplitude R-factor is within 5 % of the noise floor (the
   R-factor of the true crystal against the noisy counts).

Scores, in the crystal box after twin / shift / phase-ramp / complex-scale removal
(:func:`xrayflow.evaluate.alignment.align`): SSIM of the amplitude, SSIM of the phase inside
the true support (0 outside, data range = the true phase's peak-to-peak) and the rms phase
error inside (rad). Time: wall seconds (the network's per-crystal batch time included for
net+refine).

Target: net+refine reaches the quality of AD-from-random in at most a tenth of its time.

Run: ``python benchmarks/cdi_network.py [--config ...] [--set KEY=VALUE ...] [--n-test 6]``;
writes ``benchmarks/results/cdi_network.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from xrayflow.backend import get_backend
from xrayflow.config import load_config
from xrayflow.evaluate.alignment import align
from xrayflow.evaluate.metrics import ssim
from xrayflow.io.atomic import atomic_path
from xrayflow.modalities import stage_schema
from xrayflow.modalities.bragg_cdi import settings
from xrayflow.modalities.bragg_cdi.grid import crop
from xrayflow.modalities.bragg_cdi.model import BraggCDIModel
from xrayflow.modalities.bragg_cdi.network_start import (
    NETWORK_HIO,
    network_predict,
    network_start,
)
from xrayflow.networks import load_model
from xrayflow.solvers.phase_retrieval import refine, refine_from_prediction
from xrayflow.train.generate import generate
from xrayflow.train.loop import train

KINDS = ("network", "random", "net+refine")
AT_FLOOR = 1.06  # a run counts as converged at R <= AT_FLOOR x the noise floor


def score(obj, truth, m: int) -> dict:
    """Amplitude SSIM, phase SSIM and rms phase error (rad) in the crystal box (m,)*3."""
    a, _ = align(obj, truth, twin_check=True)
    a, t = crop(a, (m,) * 3), crop(truth, (m,) * 3)
    amp = np.abs(t)
    inside = amp > 0
    pa, pt = np.angle(a) * inside, np.angle(t) * inside
    dphi = np.angle(a[inside] * np.conj(t[inside]))
    return {
        "ssim_amplitude": float(ssim(np.abs(a), amp, data_range=amp.max())),
        "ssim_phase": float(ssim(pa, pt, data_range=max(float(np.ptp(pt)), 1e-6))),
        "phase_error_rad": float(np.sqrt(np.mean(dphi**2))),
    }


def test_set(cfg: dict, n: int, workdir: Path):
    """Held-out counts (n, N, N, N) centred and truths (n, N, N, N) complex, same generator."""
    tc = json.loads(json.dumps(cfg))
    tc["seed"] = int(cfg.get("seed", 0)) + 1000
    tc["data"].update(n_shards=1, samples_per_shard=n, parallel="serial")
    generate(tc, workdir / "test", log=lambda *a: None)
    with h5py.File(workdir / "test" / "shard-00000.h5", "r") as f:
        counts = np.asarray(f["inputs"][()], np.float64) ** 2
        sup, ph = f["targets_support"][()], f["targets_phase"][()]
    truths = np.stack([network_start(s, p, counts.shape[1:]) for s, p in zip(sup, ph, strict=True)])
    return counts, truths.astype(np.complex128)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="config/train/bragg_cdi_bench.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--n-test", type=int, default=8)
    p.add_argument("--max-starts", type=int, default=10, help="random starts per crystal, at most")
    p.add_argument("--net-hio", type=int, default=NETWORK_HIO, help="HIO from the network")
    p.add_argument("--workdir", default="/tmp/xrayflow_cdi_network")
    p.add_argument("--model", help="use this trained model (skip generation and training)")
    p.add_argument("--out", default="benchmarks/results/cdi_network.json")
    args = p.parse_args(argv)
    cfg = load_config(args.config, stage_schema("train"), args.overrides, "train")
    work = Path(args.workdir)
    torch.set_num_threads(int(cfg["training"].get("threads") or os.cpu_count() or 1))
    info: dict = {}
    model_path = Path(args.model) if args.model else work / "model.pt"
    if not args.model:
        t0 = time.perf_counter()
        generate(cfg, work / "shards", log=lambda *a: None)
        info["generate_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        summary = train(cfg, work / "shards", model_path)
        info["train_s"] = time.perf_counter() - t0
        info["train"] = {k: v for k, v in summary.items() if k != "model"}
        info["n_train"] = int(cfg["data"]["n_shards"]) * int(cfg["data"]["samples_per_shard"])
    model, mcfg, _, meta = load_model(model_path)
    if args.model:  # trained elsewhere (e.g. `xrayflow train ... --resume`): its summary
        info["train"] = meta.get("summary")
        info["n_train"] = int(mcfg["data"]["n_shards"]) * int(mcfg["data"]["samples_per_shard"])
    m = int(meta["output_size"])
    counts, truths = test_set(mcfg, args.n_test, work)
    backend = get_backend("cpu")
    warm_up = settings({"iterations": 2, "hio": {"iterations": 2}})
    refine(BraggCDIModel(counts[0], backend=backend), None, None, warm_up)
    network_predict(model, counts[:2])
    # the network on the whole held-out set in one batch, as for a beamtime's crystals
    # (`xrayflow train --infer`); one crystal at a time for comparison
    sups, phases, t_batch = network_predict(model, counts)
    t_net = t_batch / len(counts)
    t_single = float(np.median([network_predict(model, c)[2] for c in counts]))
    print(
        f"network: {t_net * 1e3:.1f} ms per crystal in a batch of {len(counts)}, "
        f"{t_single * 1e3:.1f} ms one at a time (median)"
    )
    info.update(network_batch_s_per_crystal=t_net, network_single_s=t_single)
    rows = []
    print(
        f"{'crystal':>7} {'start':>10} {'time s':>7} {'R':>7} {'floor':>7} "
        f"{'SSIM amp':>8} {'SSIM ph':>8} {'dphi':>6}"
    )
    for i, (c, truth) in enumerate(zip(counts, truths, strict=True)):
        t = truth * np.sqrt(c.sum() / np.sum(np.abs(truth) ** 2))
        floor = BraggCDIModel(c, backend=get_backend("cpu", "double")).r_factor(t)
        stop = {"stop_loss": (1.05 * floor) ** 2}
        starts = settings({**stop, "starts": args.max_starts})
        bragg = BraggCDIModel(c, backend=backend)
        rnd = refine(bragg, None, None, starts, np.random.default_rng(1000 * i))
        from_net = settings({**stop, "hio": {"iterations": args.net_hio}})
        net = refine_from_prediction(bragg, sups[i], phases[i], from_net)
        net["time_s"] += t_net
        if net["r_factor"] > AT_FLOOR * floor:  # fall back to random starts, time counted
            rng = np.random.default_rng(1000 * i + 500)
            more = refine(bragg, None, None, starts, rng)
            net.update({k: more[k] for k in ("object", "r_factor", "iterations")})
            net["time_s"] += more["time_s"]
            net["starts"] += more["starts"]
        alone = bragg.r_factor(bragg.fit_scale(backend.xp.asarray(net["start"])))
        runs = {
            "network": (net["start"], t_net, alone, 0, 0, 0),
            **{
                kind: (
                    res["object"],
                    res["time_s"],
                    res["r_factor"],
                    res["hio_iterations"],
                    res["iterations"],
                    res["starts"],
                )
                for kind, res in (("random", rnd), ("net+refine", net))
            },
        }
        for kind, (obj, secs, r, hio, its, starts) in runs.items():
            row = {
                "crystal": i,
                "start": kind,
                "time_s": secs,
                "r_factor": float(r),
                "noise_floor_r": float(floor),
                "hio_iterations": int(hio),
                "iterations": int(its),
                "starts": int(starts),
                "converged": bool(r <= AT_FLOOR * floor),
                "refine_s": {"network": 0.0, "net+refine": secs - t_net}.get(kind, secs),
                **score(obj, truth, m),
            }
            rows.append(row)
            print(
                f"{i:>7} {kind:>10} {secs:7.3f} {r:7.4f} {floor:7.4f} "
                f"{row['ssim_amplitude']:8.3f} {row['ssim_phase']:8.3f} "
                f"{row['phase_error_rad']:6.3f}"
            )
    mean = {}
    for kind in KINDS:
        rs = [r for r in rows if r["start"] == kind]
        mean[kind] = {
            k: float(np.mean([r[k] for r in rs]))
            for k in (
                "time_s",
                "refine_s",
                "ssim_amplitude",
                "ssim_phase",
                "phase_error_rad",
                "r_factor",
                "converged",
                "starts",
            )
        }
    print(f"\nmean over {len(counts)} held-out crystals:")
    print(
        f"{'start':>10} {'time s':>7} {'refine s':>8} {'SSIM amp':>8} {'SSIM ph':>8} "
        f"{'dphi':>6} {'R':>7} {'at floor':>8}"
    )
    for kind, v in mean.items():
        print(
            f"{kind:>10} {v['time_s']:7.3f} {v['refine_s']:8.3f} {v['ssim_amplitude']:8.3f} "
            f"{v['ssim_phase']:8.3f} {v['phase_error_rad']:6.3f} {v['r_factor']:7.4f} "
            f"{v['converged']:8.2f}"
        )
    ratio = mean["net+refine"]["time_s"] / mean["random"]["time_s"]
    ratio_refine = mean["net+refine"]["refine_s"] / mean["random"]["time_s"]
    quality = all(
        mean["net+refine"][k] >= mean["random"][k] - 0.01 for k in ("ssim_amplitude", "ssim_phase")
    )
    met = bool(quality and ratio <= 0.1)
    print(
        f"time net+refine / random = {ratio:.3f} (refinement alone {ratio_refine:.3f}); "
        f"quality reached: {quality}; target (quality in <= 1/10 of the time) met: {met}"
    )
    out = {
        "benchmark": "cdi_network",
        "device": backend.device,
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "config": mcfg,
        "n_test": len(counts),
        **info,
        "rows": rows,
        "mean": mean,
        "time_ratio": ratio,
        "time_ratio_refine_only": ratio_refine,
        "quality_reached": quality,
        "target_met": met,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(out, indent=2, default=str))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
