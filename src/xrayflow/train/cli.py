"""Train neural networks on simulated diffraction data of a modality with training hooks.

Three modes, one config (``schemas/train.schema.json`` plus the modalities' ``data.<kind>``
sections, :func:`xrayflow.modalities.stage_schema`):

  xrayflow train --generate --config T.yaml --out SHARDS_DIR      # make training shards
  xrayflow train --config T.yaml --data SHARDS_DIR --out MODEL.pt [--resume]
  xrayflow train --infer --model MODEL.pt --data IN.h5 --out PRED.h5

With ``--figures DIR``, training also draws ``DIR/training_curve.png`` (training and held-out
loss per epoch) and ``--infer`` on a shard draws ``DIR/predictions.png`` (truth, prediction
and difference of a few samples per image head; :mod:`xrayflow.train.figures`).

Generation parallelises over shards (mpiexec -n N, multiprocessing or dask); training is
data-parallel under mpiexec/srun (torch.distributed, gloo on CPU, NCCL on GPU) with the same
global batch for any rank count.

Before any computation each mode checks its outputs against its inputs
(:func:`xrayflow.io.outputs.check_outputs`: an output that is an input, a directory or
device, in a missing or unwritable directory, or empty is refused with exit status 2).
``--resume`` without a checkpoint, or with one written
for another config or other shards, starts fresh with a one-line notice.

This module imports without torch (the CLI lists it); the train stage's modules, which
need torch, are imported when a mode runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xrayflow.config import load_config
from xrayflow.errors import ConfigError
from xrayflow.io.outputs import check_outputs
from xrayflow.modalities import stage_schema


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--generate",
        action="store_true",
        help="generate training shards (config section 'data') into --out DIR",
    )
    mode.add_argument(
        "--infer",
        action="store_true",
        help="apply --model to --data (HDF5 shard or CXI) and write --out",
    )
    parser.add_argument(
        "--data",
        metavar="SHARDS",
        help="shard directory / manifest.json / shard file (train), or the "
        "input HDF5/CXI file (--infer)",
    )
    parser.add_argument("--model", metavar="MODEL.pt", help="trained model file (--infer)")
    parser.add_argument("--resume", action="store_true", help="continue training from <out>.ckpt")
    parser.add_argument(
        "--parallel",
        choices=["auto", "serial", "multiprocessing", "mpi", "dask"],
        help="override data.parallel",
    )
    parser.add_argument("--workers", type=int, help="override data.workers")
    parser.add_argument(
        "--figures",
        metavar="DIR",
        help="write PNG figures into DIR: training_curve.png (training) or "
        "predictions.png (--infer on a shard that holds the targets)",
    )


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _data_inputs(data) -> dict[str, Path]:
    """The files a training run reads from --data, labelled for messages."""
    from xrayflow.train.loop import data_files  # torch

    files = data_files(data)
    if len(files) == 1:
        return {"--data": next(iter(files.values()))}
    return {f"--data ({label})": path for label, path in files.items()}


def run(args) -> int:
    """Run the mode that ``args`` selects; 0 on success (errors raise)."""
    overrides = list(getattr(args, "overrides", None) or getattr(args, "set", None) or [])
    figures = getattr(args, "figures", None)
    if args.infer:
        if not (args.model and args.data and args.out is not None):
            raise ConfigError("train --infer needs --model, --data and --out")
        cfg = load_config(args.config or {}, stage_schema("train"), overrides, "train")
        check_outputs(
            {"--out": args.out, "--figures": figures},
            {"--model": args.model, "--data": args.data, "--config": args.config},
            dirs=("--figures",),
        )
        if figures is not None:
            _check_targets(args.data)
        from xrayflow.train.infer import infer  # torch

        s = infer(
            args.model,
            args.data,
            args.out,
            batch=int(cfg["infer"]["batch"]),
            device=cfg["infer"]["device"],
            log=_log,
            max_memory_gb=cfg["infer"].get("max_memory_gb"),
        )
        print(f"{s['n_patterns']} patterns, {s['time_per_pattern_s'] * 1e3:.4f} ms/pattern")
        if figures is not None:
            from xrayflow.train.figures import write_training_figures

            for path in write_training_figures(figures, predictions=args.out, truth=args.data):
                _log(f"wrote {path}")
        return 0
    if args.out is None:
        raise ConfigError("train: --out is required")
    cfg = load_config(args.config, stage_schema("train"), overrides, "train")
    if args.generate:
        check_outputs({"--out": args.out}, {"--config": args.config}, dirs=("--out",))
        from xrayflow.train.distributed import env_rank_size  # torch
        from xrayflow.train.generate import generate

        man = generate(cfg, args.out, parallel=args.parallel, workers=args.workers, log=_log)
        if env_rank_size()[0] == 0:
            _log(f"{man['n_shards']} shards ({man['parallel']}) in {args.out}")
        return 0
    if not args.data:
        raise ConfigError("train: --data SHARDS is required (or use --generate / --infer)")
    out = str(args.out)
    check_outputs(
        {
            "--out": out,
            "checkpoint": out + ".ckpt" if out.strip() else None,
            "metrics file": out + ".metrics.jsonl" if out.strip() else None,
            "--figures": figures,
        },
        {"--config": args.config, **_data_inputs(args.data)},
        dirs=("--figures",),
    )
    from xrayflow.train.distributed import env_rank_size  # torch
    from xrayflow.train.loop import train

    s = train(cfg, args.data, args.out, resume=args.resume, log=None)
    if env_rank_size()[0] != 0:
        return 0
    _log(
        "training "
        + ("finished" if s["finished"] else "interrupted (resume with --resume)")
        + f": {s['epochs']} epochs, {s['steps']} steps, best val {s['best_val_loss']}"
    )
    if figures is not None:
        from xrayflow.train.figures import write_training_figures

        for path in write_training_figures(figures, metrics=out + ".metrics.jsonl"):
            _log(f"wrote {path}")
    return 0


def _check_targets(path) -> None:
    """``--infer --figures`` compares with the targets of a training shard: refuse an input
    without any (a CXI file) before anything is computed."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            found = any(name.startswith("targets_") for name in f)
    except OSError:
        return  # not HDF5: infer reports it
    if not found:
        raise ConfigError(
            f"train --infer --figures: {path} holds no targets_<head> datasets to compare the "
            "predictions with (a training shard has them); leave out --figures"
        )
