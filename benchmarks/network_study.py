"""What the network benchmarks (scattering_classification.py, diffuse_regression.py) share:
a train config with overrides, timed shard generation, and one network trained, applied to a
held-out shard and scored by its modality's evaluation, with its throughput; the machine
record and the JSON writer."""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from xrayflow.config import load_config, read_yaml, set_path
from xrayflow.io.atomic import atomic_path
from xrayflow.modalities import stage_schema
from xrayflow.networks import load_model
from xrayflow.provenance import git_commit, versions
from xrayflow.train.generate import generate
from xrayflow.train.infer import infer, network_of
from xrayflow.train.loop import train


def _quiet(*_):
    pass


def train_config(path, seed: int, samples: int, shards: int, sets: dict, a) -> dict:
    """The train config of ``path`` with ``seed``, ``samples`` over ``shards`` shards, the
    dotted ``sets`` and the training options of the benchmark's arguments ``a`` (epochs,
    batch, lr, device, threads), validated."""
    raw = read_yaml(path)
    raw["seed"] = seed
    raw["data"].update(n_shards=shards, samples_per_shard=-(-samples // shards))
    for key, value in sets.items():
        set_path(raw, key, value)
    raw["training"].update(
        epochs=a.epochs,
        global_batch=a.batch,
        lr=a.lr,
        device=a.device,
        log_every=0,
        threads=a.threads or len(os.sched_getaffinity(0)),
    )
    return load_config(raw, stage_schema("train"), name="train")


def generate_timed(config: dict, out: Path) -> float:
    """Seconds to generate the shards of ``config`` into ``out``."""
    t0 = time.perf_counter()
    generate(config, out, log=_quiet)
    return time.perf_counter() - t0


def run_network(config: dict, shards: Path, test_shard: Path, model: Path, evaluate, device):
    """Train ``config`` on ``shards``, predict ``test_shard``, score with ``evaluate(pred,
    truth, {}) -> (metrics, arrays)``; the metrics with the throughput added."""
    t0 = time.perf_counter()
    train(config, shards, model, log=_quiet)
    t_train = time.perf_counter() - t0
    pred = model.with_suffix(".pred.h5")
    info = infer(model, test_shard, pred, batch=64, device=device, log=_quiet)
    metrics, _ = evaluate(pred, test_shard, {})
    lines = [json.loads(s) for s in Path(f"{model}.metrics.jsonl").read_text().splitlines()]
    net = load_model(model, build=network_of)[0]
    return {
        "parameters": sum(p.numel() for p in net.parameters()),
        "epochs_run": len(lines),
        "train_s": t_train,
        "train_samples_per_s": float(np.median([ln["samples_per_s"] for ln in lines])),
        "best_val_loss": min(ln["val_loss"] for ln in lines),
        "infer_images_per_s": info["n_patterns"] / info["total_time_s"],
        "metrics": metrics,
    }


def write_result(
    path,
    name: str,
    a,
    load_start,
    t0: float,
    table: str,
    result: dict,
    run_key: str | None = None,
    index=None,
) -> None:
    """Write the JSON record of a benchmark run (machine, versions, commit, settings, result).

    With ``run_key``, the record goes under ``runs[run_key]`` of the file, keeping the other
    runs already there (e.g. other image sizes), and ``index(runs)`` adds top-level keys
    summarising all of them."""
    record = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available(),
            "python": sys.version.split()[0],
            "loadavg_start": load_start,
            "loadavg_end": list(os.getloadavg()),
        },
        "versions": versions(),
        "git_commit": git_commit(),
        "settings": {k: v for k, v in vars(a).items() if k not in ("out", "workdir")},
        "total_s": time.perf_counter() - t0,
        **result,
        "table": table.splitlines(),
    }
    path = Path(path)
    if run_key is None:
        out = {"benchmark": name, **record}
    else:
        old = json.loads(path.read_text()) if path.is_file() else {}
        runs = old.get("runs", {}) if old.get("benchmark") == name else {}
        runs[run_key] = record
        out = {"benchmark": name, **(index(runs) if index else {}), "runs": runs}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(f"wrote {path}")


def run_benchmark(name: str, a, run, table, run_key: str | None = None, index=None) -> int:
    """``run(a)`` (a dict; its ``work`` entry, the work directory, is not recorded) in
    ``a.workdir`` (kept) or a temporary directory (removed), ``table(result, a)`` printed,
    then :func:`write_result` to ``a.out``."""
    load_start = list(os.getloadavg())
    t0 = time.perf_counter()
    if a.workdir:
        Path(a.workdir).mkdir(parents=True, exist_ok=True)
        res = run(a)
    else:
        with tempfile.TemporaryDirectory(prefix=f"{name}_") as tmp:
            a.workdir = tmp
            res = run(a)
            a.workdir = None
    text = table(res, a)
    print(text)
    result = {k: v for k, v in res.items() if k != "work"}
    write_result(a.out, name, a, load_start, t0, text, result, run_key, index)
    return 0
