"""PtychoNN-style 2D pipeline throughput: shard generation, training, inference.

Generates ``--samples`` 2D patterns (``--size``², Poisson noise) into shards, trains the
PtychoNN-sized network (channels 32/64/128, ≈1.16 M parameters at 64²) for ``--epochs`` and
applies it to one shard. Reference (performance-anchors.md, Networks): PtychoPINN 6.1k
patterns/s at 64² on one GPU; edgePtychoNN up to 2 kHz at 128² on a Jetson.

    python benchmarks/train_2d.py                      # 64², 256 samples, 1 epoch (CPU, 1-2 min)
    python benchmarks/train_2d.py --samples 8192 --epochs 3 --device cuda

Prints a table and writes benchmarks/results/train_2d.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

from xrayflow.config import load_config
from xrayflow.io.atomic import atomic_write_text
from xrayflow.train.generate import generate
from xrayflow.train.infer import infer
from xrayflow.train.loop import train

HERE = Path(__file__).resolve().parent


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--no-write", action="store_true", help="do not write the JSON result")
    a = ap.parse_args(argv)
    cfg = load_config(
        {
            "data": {
                "kind": "ptycho2d",
                "n_shards": a.shards,
                "samples_per_shard": a.samples // a.shards,
                "parallel": "serial",
                "ptycho2d": {"size": a.size, "object_size": 4 * a.size},
            },
            "training": {
                "epochs": a.epochs,
                "global_batch": a.batch,
                "device": a.device,
                "log_every": 0,
                "val_fraction": 0.1,
            },
            "infer": {"device": a.device},
        },
        "train",
    )
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        generate(cfg, Path(tmp) / "shards", log=lambda *_: None)
        gen_rate = a.samples / (time.perf_counter() - t)
        s = train(cfg, Path(tmp) / "shards", Path(tmp) / "m.pt", log=lambda *_: None)
        inf = infer(
            Path(tmp) / "m.pt",
            Path(tmp) / "shards" / "shard-00000.h5",
            Path(tmp) / "p.h5",
            batch=a.batch,
            device=a.device,
            log=lambda *_: None,
        )
    res = {
        "size": a.size,
        "samples": a.samples,
        "parameters": s["parameters"],
        "generate_patterns_per_s": gen_rate,
        "train_samples_per_s": s["samples_per_s"],
        "infer_ms_per_pattern": inf["time_per_pattern_s"] * 1e3,
        "device": inf["device"],
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "host": platform.node(),
        "time_utc": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    print(f"{'quantity':<28}{'value':>14}")
    for k in (
        "parameters",
        "generate_patterns_per_s",
        "train_samples_per_s",
        "infer_ms_per_pattern",
    ):
        print(f"{k:<28}{res[k]:>14.4g}")
    if not a.no_write:
        atomic_write_text(HERE / "results" / "train_2d.json", json.dumps(res, indent=1) + "\n")
    return res


if __name__ == "__main__":
    main()
