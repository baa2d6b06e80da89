"""Training loop: deterministic, resumable, data-parallel, with early stopping.

* Seeds: ``torch.manual_seed``, ``numpy.random.seed`` and ``random.seed`` from ``seed``;
  ``torch.use_deterministic_algorithms(True)`` (``warn_only`` on CUDA, where a few backward
  kernels have no deterministic variant) for the duration of :func:`train` only (the caller's
  settings are restored on return). The data order is a function of (seed, epoch)
  (see :mod:`xrayflow.train.shards`), never of the rank count.
* Modality: the shards' ``kind`` names it (:func:`xrayflow.train.hooks.shard_hooks`); its
  training hooks build the network and compute the per-sample losses.
* Loss: per-sample losses are summed and divided by the **global** batch size; gradients are
  SUM-all-reduced over ranks, so W ranks with ``global_batch / W`` samples each compute the
  same step as 1 rank.
* Checkpoints (``<out>.ckpt``, atomic) every ``checkpoint_every`` steps and at each epoch end
  hold model, optimizer, scheduler, RNG states, epoch, batch-in-epoch, partial epoch sums and
  early-stopping state; ``resume=True`` continues to bit-identical weights.
  A checkpoint is bound to its inputs: it records the config fingerprint (network, seed and
  the training settings that change the result) and the data fingerprint (content hash of
  every shard and of the manifest, :func:`xrayflow.io.fingerprint.file_fingerprint`).
  ``resume=True`` continues only when both match; otherwise, and when there is no
  checkpoint, training starts fresh with a one-line notice. A checkpoint that cannot be
  read is an error naming it (it is not overwritten: it may not be ours). A finished run
  removes its checkpoint; an interrupted one (``max_steps``, a kill) keeps it.
* Memory guard: parameters, gradients, optimizer state, the shuffle window and a batch's
  activations are estimated from the config and the shard headers and checked
  (:func:`xrayflow.memory.check_memory`, limit ``training.max_memory_gb``) before allocating.
* A non-finite training loss stops the run with an error (the data are checked finite as
  they are read, so it names the learning rate as the likely cause).
* Metrics: one JSON line per epoch in ``<out>.metrics.jsonl``; progress lines on stderr.
* Model file (``out``): :func:`xrayflow.networks.save_model` (loads with
  :func:`xrayflow.networks.load_model`).

A run (:func:`_train`) is :func:`_set_up` (data, network, optimizer, scheduler),
:func:`_restore` (checkpoint or fresh start), then per epoch :func:`_run_epoch`
(:func:`_train_steps` of :func:`_step` each, then :func:`_end_epoch`: validation, early
stopping, metrics, checkpoint) and :func:`_finish` (the model file).
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from xrayflow.errors import ConfigError, DataError
from xrayflow.io.fingerprint import run_fingerprint
from xrayflow.memory import check_memory
from xrayflow.networks import atomic_torch_save, count_parameters, jsonable, save_model
from xrayflow.progress import eta
from xrayflow.provenance import provenance
from xrayflow.train import distributed as D
from xrayflow.train.hooks import TrainingHooks, shard_hooks, training_hooks
from xrayflow.train.shards import (
    ShardDataset,
    check_block,
    list_shards,
    shard_extras,
    shard_info,
)

__all__ = ["data_files", "precise_bn", "set_determinism", "train", "training_memory"]


# ----------------------------------------------------------------------------- utilities
def set_determinism(seed: int, deterministic: bool = True, cuda: bool = False) -> None:
    """Seed torch, numpy and random; switch torch to deterministic algorithms."""
    if cuda:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - global state used by third-party code
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=cuda)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


# ----------------------------------------------------------------------------- schedule
def _make_scheduler(opt, sched_cfg: dict, total_steps: int, steps_per_epoch: int):
    kind = sched_cfg.get("kind", "constant")
    warm = int(sched_cfg.get("warmup_steps", 0))
    min_f = float(sched_cfg.get("min_lr_fraction", 0.0))

    if kind == "constant":

        def f(step):
            return min(1.0, (step + 1) / warm) if warm else 1.0
    elif kind == "cosine":

        def f(step):
            if warm and step < warm:
                return (step + 1) / warm
            t = min(1.0, (step - warm) / max(1, total_steps - warm))
            return min_f + (1 - min_f) * 0.5 * (1 + math.cos(math.pi * t))
    elif kind == "step":
        every = max(1, int(sched_cfg.get("step_epochs", 10))) * max(1, steps_per_epoch)
        gamma = float(sched_cfg.get("gamma", 0.5))

        def f(step):
            w = min(1.0, (step + 1) / warm) if warm else 1.0
            return w * gamma ** (step // every)
    else:
        raise ConfigError(f"train.training.schedule.kind: unknown {kind!r}")
    return torch.optim.lr_scheduler.LambdaLR(opt, f)


def _make_optimizer(params, tcfg: dict):
    name = tcfg.get("optimizer", "adam")
    lr = float(tcfg.get("lr", 1e-3))
    if not (math.isfinite(lr) and lr > 0):
        raise ConfigError(f"train.training.lr: {lr} must be a finite number > 0")
    wd = float(tcfg.get("weight_decay", 0.0))
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=float(tcfg.get("momentum", 0.9)), weight_decay=wd
        )
    raise ConfigError(f"train.training.optimizer: unknown {name!r} (adam | adamw | sgd)")


def _np_rng_state() -> str:
    name, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    return json.dumps([name, keys.tolist(), int(pos), int(has_gauss), float(cached)])


def _set_np_rng_state(s: str) -> None:
    name, keys, pos, has_gauss, cached = json.loads(s)
    state = (name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached)
    np.random.set_state(state)  # noqa: NPY002


# ----------------------------------------------------------------------------- set-up
def _global_torch_settings() -> tuple:
    """Process-wide torch settings that :func:`_train` changes (restored afterwards)."""
    return (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
        torch.get_num_threads(),
    )


def _restore_torch_settings(saved: tuple) -> None:
    det, warn_only, bench, cudnn_det, threads = saved
    torch.use_deterministic_algorithms(det, warn_only=warn_only)
    torch.backends.cudnn.benchmark = bench
    torch.backends.cudnn.deterministic = cudnn_det
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def data_files(data, shards: list[Path] | None = None) -> dict[str, Path]:
    """The files that define a training set: every shard, and the manifest when ``data`` is a
    shard directory with one or a manifest (label -> path; the labels go into fingerprints)."""
    shards = list_shards(data) if shards is None else shards
    files: dict[str, Path] = {}
    for d in data if isinstance(data, list | tuple) else [data]:
        p = Path(d)
        man = p / "manifest.json" if p.is_dir() else p
        if man.suffix == ".json" and man.is_file():
            files[f"manifest {len(files)}"] = man
    for i, sh in enumerate(shards):
        files[f"shard {i}"] = Path(sh)
    return files


_NOT_RESULT_KEYS = (
    "epochs",
    "max_steps",
    "checkpoint_every",
    "log_every",
    "num_workers",
    "early_stopping",
    "device",
    "threads",
    "max_memory_gb",
)


def _sample_bytes(sinfo: dict) -> int:
    shapes = [*sinfo["target_shapes"].values(), *sinfo.get("view_shapes", {}).values()]
    n = int(np.prod(sinfo["input_shape"])) + sum(int(np.prod(s)) for s in shapes)
    return 4 * n


def build_network(hooks: TrainingHooks, net_cfg: dict, in_size: int, out_size: int, views: dict):
    """The modality's network; ``views``: shapes of the further inputs (none: not passed)."""
    return hooks.network(net_cfg, in_size, out_size, **{k: tuple(v) for k, v in views.items()})


def forward(model: torch.nn.Module, batch: dict, views) -> dict:
    """The network's output for a batch: ``input`` plus the views as keyword arguments."""
    return model(batch["input"], **{v: batch[v] for v in views})


def training_memory(
    net_cfg: dict,
    sinfo: dict,
    tcfg: dict,
    in_size: int,
    out_size: int,
    world_size: int = 1,
    n_samples: int | None = None,
) -> dict[str, float]:
    """Estimated peak bytes of training, by part (memory guard; from config and headers,
    the network built on torch's meta device, which allocates nothing)."""
    _, hooks = training_hooks(net_cfg["kind"], "train.network.kind")
    with torch.device("meta"):
        net = build_network(hooks, net_cfg, in_size, out_size, sinfo.get("view_shapes", {}))
    n_par = count_parameters(net)
    states = {"adam": 2, "adamw": 2, "sgd": 1}.get(tcfg.get("optimizer", "adam"), 2)
    lb = max(1, int(tcfg.get("global_batch", 32)) // max(1, world_size))
    sb = _sample_bytes(sinfo)
    window = int(tcfg.get("shuffle_buffer", 1024)) + int(sinfo["chunk_rows"])
    if n_samples is not None:
        window = min(window, int(n_samples))
    return {
        f"parameters, gradients, optimizer state and copies ({n_par:,} parameters)": 4.0
        * n_par
        * (2 + states + 2),
        f"shuffle window ({window} samples / {world_size} rank(s))": sb * window / world_size,
        f"activations of a batch of {lb}": float(lb) * (net.activation_bytes() + 2 * sb),
    }


def _check_training_memory(parts: dict, tcfg: dict, device) -> None:
    limit = tcfg.get("max_memory_gb")
    check_memory(parts, "train", limit, key="training.max_memory_gb")
    if device.type == "cuda":  # pragma: no cover - GPU only
        free, _ = torch.cuda.mem_get_info(device)
        gpu = {k: v for k, v in parts.items() if not k.startswith("shuffle")}
        check_memory(gpu, f"train on {device}", free / float(1 << 30), key="free GPU memory")


def _unwrap_worker_error(exc: DataError) -> DataError:
    """A DataError raised in a DataLoader worker arrives with the worker's traceback in its
    message; keep only the original one-line message."""
    text = str(exc)
    if "Traceback" not in text:
        return exc
    for line in reversed(text.splitlines()):
        if "DataError: " in line:
            return DataError(line.split("DataError: ", 1)[1])
    return DataError(text.splitlines()[0])


def _load_checkpoint(path: Path, device) -> dict:
    """The training checkpoint at ``path``; DataError naming it when it cannot be used."""
    try:
        ck = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # any unpickling, zip or IO failure
        reason = " ".join(str(exc).split()) or type(exc).__name__
        if reason.startswith("Weights only load failed"):
            reason = "not a torch file that loads with weights_only=True"
        reason = reason[:160]
        raise DataError(
            f"--resume: the checkpoint {str(path)!r} cannot be read ({reason}); delete it to "
            "start fresh, or run without --resume"
        ) from None
    need = ("model", "optimizer", "scheduler", "state_json", "torch_rng", "numpy_rng")
    if not isinstance(ck, dict) or any(k not in ck for k in need):
        raise DataError(
            f"--resume: {str(path)!r} is not an xrayflow training checkpoint; delete it to "
            "start fresh, or run without --resume"
        )
    return ck


@dataclass
class _Data:
    """The training data of a run: the shards, their modality, the split and its batches."""

    shards: list[Path]
    sinfo: dict  # header of the first shard
    fingerprint: str  # content hash of the shards and manifest
    kind: str  # the modality
    hooks: TrainingHooks
    in_size: int  # pattern side
    out_size: int  # predicted side
    views: dict  # shapes of the further inputs by name (none for most modalities)
    train: ShardDataset
    val: ShardDataset
    steps_per_epoch: int


@dataclass
class _Run:
    """One training run: its settings, data and outputs, what it trains, and how far it is
    (``state``: epoch, batch in epoch, step, epoch loss sums, early-stopping state)."""

    config: dict  # the train config, network.kind resolved
    seed: int
    info: D.DistInfo
    log: Callable[[str], None]
    out: Path
    data: _Data
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    extras: dict[str, torch.Tensor]  # the loss's extra datasets
    fingerprint: str  # of the settings that change the result
    state: dict
    best_state: dict | None = None
    rate: float = 0.0  # samples/s of the current epoch

    @property
    def tcfg(self) -> dict:
        return self.config["training"]

    @property
    def ckpt_path(self) -> Path:
        return self.out.with_name(self.out.name + ".ckpt")

    @property
    def metrics_path(self) -> Path:
        return self.out.with_name(self.out.name + ".metrics.jsonl")

    @property
    def epochs(self) -> int:
        return int(self.tcfg.get("epochs", 10))

    def to_device(self, batch: dict) -> dict:
        """A loader batch's tensors on this rank's device (without the sample ids)."""
        return {
            k: v.to(self.info.device, non_blocking=True) for k, v in batch.items() if k != "sid"
        }


def _open_data(config: dict, data, info: D.DistInfo) -> tuple[dict, _Data]:
    """The shards of ``data``, their modality, the config with ``network.kind`` resolved for
    it, and this rank's train and held-out datasets. ConfigError for a network, output size
    or global batch that does not fit the shards or the ranks; ResourceError when the memory
    estimate exceeds the limit; DataError for fewer samples than one global batch."""
    tcfg = config["training"]
    shards = list_shards(data)
    sinfo = shard_info(shards[0])
    data_fp = run_fingerprint({}, data_files(data, shards))
    kind, hooks = shard_hooks(sinfo)
    net_cfg = dict(config["network"])
    if net_cfg.get("kind", "auto") != "auto":
        if training_hooks(net_cfg["kind"], "train.network.kind")[0] != kind:
            raise ConfigError(f"train.network.kind: {net_cfg['kind']!r} does not fit {kind} shards")
    net_cfg["kind"] = kind
    config = {**config, "network": net_cfg}
    in_size = sinfo["input_shape"][-1]
    tgt_size = next(iter(sinfo["target_shapes"].values()))[-1]
    out_size = int(net_cfg.get("output_size") or tgt_size)
    if out_size > tgt_size or (tgt_size - out_size) % 2:
        raise ConfigError(
            f"train.network.output_size: {out_size} must be <= the targets' size {tgt_size} "
            "and differ from it by an even number (the centre of the targets is predicted)"
        )
    hooks.check(config, tgt_size, out_size)
    G = int(tcfg.get("global_batch", 32))
    if G % info.world_size:
        raise ConfigError(
            f"train.training.global_batch: {G} is not divisible by the {info.world_size} ranks"
        )
    common = dict(
        val_fraction=float(tcfg.get("val_fraction", 0.1)),
        split_seed=int(tcfg.get("split_seed", 0)),
        seed=int(config.get("seed", 0)),
        shuffle_buffer=int(tcfg.get("shuffle_buffer", 1024)),
        global_batch=G,
        rank=info.rank,
        world_size=info.world_size,
    )
    train_ds = ShardDataset(shards, split="train", shuffle=True, **common)
    val_ds = ShardDataset(shards, split="val", shuffle=False, **common)
    n_all = sum(int(i["n_samples"]) for i in train_ds.infos)
    parts = training_memory(net_cfg, sinfo, tcfg, in_size, out_size, info.world_size, n_all)
    _check_training_memory(parts, tcfg, info.device)
    steps = train_ds.n_global_batches()
    if steps == 0:
        raise DataError(
            f"{data}: {train_ds.n_split} training samples, fewer than one global batch of {G}"
        )
    views = dict(sinfo["view_shapes"])
    return config, _Data(
        shards, sinfo, data_fp, kind, hooks, in_size, out_size, views, train_ds, val_ds, steps
    )


def _loss_extras(d: _Data, loss_cfg: dict, device) -> dict[str, torch.Tensor]:
    """The modality's ``LOSS_EXTRAS`` datasets of the first shard as tensors on ``device``
    (complex64 or float32), checked finite; none for the supervised loss, which needs none.
    A modality with the hook ``loss_extras`` computes its own from the shards."""
    if hasattr(d.hooks, "loss_extras"):
        return d.hooks.loss_extras(d.shards, loss_cfg, device)
    mode = loss_cfg.get("mode", "supervised")
    if mode == "supervised":
        return {}
    extras = {}
    for name in d.hooks.LOSS_EXTRAS:
        a = shard_extras(d.shards[0], name)
        if a is None:
            raise DataError(f"{d.shards[0]}: the {mode} loss needs dataset {name!r}")
        a = np.asarray(a, dtype=np.complex64 if np.iscomplexobj(a) else np.float32)
        check_block(np.abs(a)[None], repr(str(d.shards[0])), name, 0, False)
        extras[name] = torch.as_tensor(a, device=device)
    return extras


def _set_up(config: dict, data, out, log) -> _Run:
    """Everything before the first step: ranks and device, threads and determinism, the data
    (:func:`_open_data`), the network (seeded), optimizer, scheduler, the loss's extra
    datasets and the fingerprint of the settings that change the result."""
    tcfg = config["training"]
    seed = int(config.get("seed", 0))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    info = D.init_distributed(tcfg.get("device", "auto"))
    if log is None:

        def log(msg):
            if info.is_main:
                print(msg, file=sys.stderr, flush=True)

    threads = int(tcfg.get("threads", 0))
    if threads > 0:
        torch.set_num_threads(threads)
    set_determinism(seed, bool(tcfg.get("deterministic", True)), info.device.type == "cuda")
    config, d = _open_data(config, data, info)
    net_cfg = config["network"]
    torch.manual_seed(seed)
    model = build_network(d.hooks, net_cfg, d.in_size, d.out_size, d.views).to(info.device)
    D.broadcast_parameters(model, info)
    opt = _make_optimizer(model.parameters(), tcfg)
    epochs = int(tcfg.get("epochs", 10))
    sched = _make_scheduler(
        opt, tcfg.get("schedule", {}), epochs * d.steps_per_epoch, d.steps_per_epoch
    )
    extras = _loss_extras(d, tcfg.get("loss", {}), info.device)
    training = {k: v for k, v in tcfg.items() if k not in _NOT_RESULT_KEYS}
    fingerprint = json.dumps(
        jsonable({"network": net_cfg, "seed": seed, "training": training}), sort_keys=True
    )
    state = {
        "epoch": 0,
        "batch": 0,
        "step": 0,
        "loss_sum": 0.0,
        "seen": 0,
        "best_val": math.inf,
        "bad_epochs": 0,
        "stopped_early": False,
    }
    return _Run(config, seed, info, log, out, d, model, opt, sched, extras, fingerprint, state)


# ----------------------------------------------------------------------------- checkpoints
def _restore(run: _Run, resume: bool) -> None:
    """Continue from ``<out>.ckpt`` when ``resume`` and it was written for the same config
    and data (:func:`_resume`); otherwise start fresh, with a notice when resuming was asked
    for, and remove an old metrics file."""
    ck = _checkpoint_to_resume(run) if resume else None
    if ck is not None:
        _resume(run, ck)
    elif run.info.is_main and run.metrics_path.exists():
        run.metrics_path.unlink()


def _checkpoint_to_resume(run: _Run) -> dict | None:
    """The checkpoint, when there is one written for this config and data; else None, with
    a notice saying why training starts fresh."""
    path = run.ckpt_path
    if not (path.exists() or path.is_symlink()):
        run.log(f"--resume: no checkpoint {path}; starting fresh")
        return None
    ck = _load_checkpoint(path, run.info.device)
    changed = [
        what
        for what, key, mine in (
            ("config", "fingerprint", run.fingerprint),
            ("training data", "data_fingerprint", run.data.fingerprint),
        )
        if ck.get(key) != mine
    ]
    if changed:
        run.log(
            f"--resume: the checkpoint {path} was written for other inputs "
            f"({' and '.join(changed)} changed); starting fresh"
        )
        return None
    return ck


def _resume(run: _Run, ck: dict) -> None:
    """Weights, optimizer, scheduler, progress, best weights and RNG states from the
    checkpoint ``ck``; metrics lines of the epochs it had not finished dropped."""
    path, info = run.ckpt_path, run.info
    try:
        run.model.load_state_dict(ck["model"])
        run.opt.load_state_dict(ck["optimizer"])
        run.sched.load_state_dict(ck["scheduler"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise DataError(
            f"--resume: the checkpoint {str(path)!r} does not fit this network "
            f"({str(exc).splitlines()[0]}); delete it or run without --resume"
        ) from None
    run.state.update(json.loads(ck["state_json"]))
    run.best_state = ck.get("best_model")
    torch.set_rng_state(ck["torch_rng"].cpu())
    _set_np_rng_state(ck["numpy_rng"])
    pv, pkeys, pg = json.loads(ck["python_rng"])
    random.setstate((pv, tuple(pkeys), pg))
    if info.device.type == "cuda" and "cuda_rng" in ck:
        torch.cuda.set_rng_state(ck["cuda_rng"].cpu())
    if info.is_main and run.metrics_path.exists():
        keep = [
            ln
            for ln in run.metrics_path.read_text().splitlines()
            if _metrics_epoch(ln) < run.state["epoch"]
        ]
        run.metrics_path.write_text("".join(ln + "\n" for ln in keep))
    s = run.state
    run.log(f"resumed from {path} at epoch {s['epoch']} batch {s['batch']} (step {s['step']})")


def _save_checkpoint(run: _Run) -> None:
    """Write ``<out>.ckpt`` atomically (rank 0): weights, optimizer, scheduler, progress,
    best weights, RNG states and the fingerprints of the config and data."""
    if not run.info.is_main:
        return
    py = random.getstate()
    obj = {
        "model": {k: v.detach().cpu().clone() for k, v in run.model.state_dict().items()},
        "optimizer": run.opt.state_dict(),
        "scheduler": run.sched.state_dict(),
        "state_json": json.dumps(run.state),
        "best_model": run.best_state,
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": _np_rng_state(),
        "python_rng": json.dumps([py[0], list(py[1]), py[2]]),
        "fingerprint": run.fingerprint,
        "data_fingerprint": run.data.fingerprint,
    }
    if run.info.device.type == "cuda":
        obj["cuda_rng"] = torch.cuda.get_rng_state()
    atomic_torch_save(obj, run.ckpt_path)


def _metrics_epoch(line: str) -> float:
    """Epoch of a metrics line (inf for a blank or unreadable line, which is dropped)."""
    try:
        return float(json.loads(line)["epoch"])
    except (ValueError, KeyError, TypeError):
        return math.inf


# ----------------------------------------------------------------------------- training
def train(config: dict, data, out, resume: bool = False, log=None) -> dict:
    """Train (see :func:`_train`); under several MPI ranks an error on one rank aborts all.

    Deterministic algorithms, cuDNN flags and the torch thread count are switched for the
    run only: the caller's settings are restored on return (also after an error).
    """
    rank, size, _ = D.env_rank_size()
    saved = _global_torch_settings()
    try:
        return _train(config, data, out, resume, log)
    except BaseException as exc:
        if size > 1:
            D.abort_all(exc, rank)
        raise
    finally:
        _restore_torch_settings(saved)


def _train(config: dict, data, out, resume: bool = False, log=None) -> dict:
    """Train a network on shards ``data`` and write the model file ``out``.

    Args:
        config: validated ``train`` config (sections ``network``, ``training``, ``seed``).
        data: shard directory, manifest, file or list (see ``shards.list_shards``).
        out: model file path; the checkpoint is ``<out>.ckpt``, metrics ``<out>.metrics.jsonl``.
        resume: continue from ``<out>.ckpt`` (same config required).
        log: callable for progress lines (default: print to stderr on rank 0).

    Returns:
        summary dict (finished, epochs, steps, best_val_loss, stopped_early, samples_per_s,
        time_s, ranks, parameters) plus "model": the trained module (best weights restored).
    """
    run = _set_up(config, data, out, log)
    _restore(run, resume)
    d = run.data
    run.log(
        f"training {d.kind} ({count_parameters(run.model):,} parameters) on "
        f"{d.train.n_split} samples ({d.val.n_split} held out), {run.info.world_size} rank(s), "
        f"global batch {d.train.global_batch}, {d.steps_per_epoch} steps/epoch, "
        f"device {run.info.device}"
    )
    t_start = time.perf_counter()
    finished = True
    while run.state["epoch"] < run.epochs and not run.state["stopped_early"]:
        if not _run_epoch(run):
            finished = False
            break
    return _finish(run, finished, t_start)


def _run_epoch(run: _Run) -> bool:
    """One epoch: its steps, then validation and its record. False when ``max_steps`` ends
    the run before the last epoch (mid-epoch: checkpointed by :func:`_train_steps`)."""
    t0 = time.perf_counter()
    if not _train_steps(run, t0):
        return False
    _end_epoch(run, t0)
    max_steps = int(run.tcfg.get("max_steps", 0))
    return not (max_steps and run.state["step"] >= max_steps and run.state["epoch"] < run.epochs)


def _train_steps(run: _Run, t0: float) -> bool:
    """The epoch's optimizer steps from batch ``state["batch"]`` on, with progress lines and
    checkpoints every ``checkpoint_every`` steps. False when ``max_steps`` stopped it before
    the epoch's last batch (then checkpointed); ``t0``: the epoch's start (perf_counter)."""
    s, tcfg, ds = run.state, run.tcfg, run.data.train
    ep = s["epoch"]
    ds.set_epoch(ep)
    ds.set_start_batch(s["batch"])
    workers = int(tcfg.get("num_workers", 0))
    loader = torch.utils.data.DataLoader(ds, batch_size=ds.local_batch, num_workers=workers)
    ck_every = int(tcfg.get("checkpoint_every", 0))
    max_steps = int(tcfg.get("max_steps", 0))
    log_every = int(tcfg.get("log_every", 50))
    run.model.train()
    n0, b0 = s["seen"], s["batch"]
    interrupted = False
    for batch in _batches(loader):
        gl = _step(run, run.to_device(batch))
        s["loss_sum"] += gl
        s["seen"] += ds.global_batch
        s["batch"] += 1
        s["step"] += 1
        run.rate = (s["seen"] - n0) / max(time.perf_counter() - t0, 1e-9)
        if log_every and s["step"] % log_every == 0:
            left = eta(s["batch"] - b0, run.data.steps_per_epoch - b0, time.perf_counter() - t0)
            run.log(
                f"epoch {ep} step {s['step']} loss {gl / ds.global_batch:.5g} "
                f"lr {run.opt.param_groups[0]['lr']:.3g} {run.rate:.1f} samples/s, epoch {left}"
            )
        if ck_every and s["step"] % ck_every == 0:
            _save_checkpoint(run)
        if max_steps and s["step"] >= max_steps:
            interrupted = True
            break
    if interrupted and s["batch"] < run.data.steps_per_epoch:
        _save_checkpoint(run)
        run.log(
            f"stopped at max_steps={max_steps} (epoch {ep}, batch {s['batch']}); "
            "continue with --resume"
        )
        return False
    return True


def _step(run: _Run, batch: dict) -> float:
    """One optimizer step on this rank's part of a global batch: the modality's losses
    summed over the batch / global batch size, gradients summed over ranks, optional
    gradient clipping, scheduler step. Returns the global batch's summed loss; ConfigError
    when it is not finite."""
    tcfg = run.tcfg
    terms = run.data.hooks.losses(
        forward(run.model, batch, run.data.views), batch, tcfg.get("loss", {}), run.extras
    )
    loss = terms["total"].sum() / run.data.train.global_batch
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    D.allreduce_gradients(run.model, run.info)
    clip = float(tcfg.get("grad_clip", 0.0))
    if clip > 0:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), clip)
    run.opt.step()
    run.sched.step()
    gl = D.allreduce_sum([float(terms["total"].detach().sum())], run.info)[0]
    if not math.isfinite(gl):
        raise ConfigError(
            f"train: the training loss is {gl} at epoch {run.state['epoch']} step "
            f"{run.state['step'] + 1} although the shards hold finite values; the likely "
            f"cause is a learning rate too high for this network (training.lr="
            f"{tcfg.get('lr')}): lower training.lr or set training.grad_clip"
        )
    return gl


def _end_epoch(run: _Run, t0: float) -> None:
    """After an epoch's steps: batch-norm statistics (``precise_bn``), validation, early
    stopping, the metrics line and progress line, then the next epoch's state, checkpointed.
    ``t0``: the epoch's start (perf_counter)."""
    s, tcfg = run.state, run.tcfg
    ep = s["epoch"]
    if int(tcfg.get("precise_bn", 0)):
        ds = run.data.train
        ds.set_start_batch(0)
        loader = torch.utils.data.DataLoader(ds, batch_size=ds.local_batch)
        precise_bn(run.model, loader, int(tcfg["precise_bn"]), run.to_device, run.data.views)
    val = _validate(run)
    train_loss = s["loss_sum"] / max(s["seen"], 1)
    _early_stopping(run, val)
    rec = {
        "epoch": ep,
        "step": s["step"],
        "train_loss": train_loss,
        "val_loss": val,
        "best_val_loss": None if math.isinf(s["best_val"]) else s["best_val"],
        "lr": run.opt.param_groups[0]["lr"],
        "samples_per_s": run.rate,
        "epoch_time_s": time.perf_counter() - t0,
        "ranks": run.info.world_size,
    }
    if run.info.is_main:
        with open(run.metrics_path, "a") as fh:
            fh.write(json.dumps(rec) + "\n")
    run.log(
        f"epoch {ep} done: train {train_loss:.5g} val {val if val is None else f'{val:.5g}'}"
        f" {run.rate:.1f} samples/s" + (" (early stop)" if s["stopped_early"] else "")
    )
    s.update(epoch=ep + 1, batch=0, loss_sum=0.0, seen=0)
    _save_checkpoint(run)


def _early_stopping(run: _Run, val: float | None) -> None:
    """Keep the best held-out loss and its weights; stop after ``patience`` epochs without
    an improvement by more than ``min_delta`` (``training.early_stopping``)."""
    if val is None:
        return
    s = run.state
    es = run.tcfg.get("early_stopping", {})
    if val < s["best_val"] - float(es.get("min_delta", 0.0)):
        s["best_val"] = val
        s["bad_epochs"] = 0
        run.best_state = {k: v.detach().cpu().clone() for k, v in run.model.state_dict().items()}
    else:
        s["bad_epochs"] += 1
        patience = int(es.get("patience", 0))
        if patience and s["bad_epochs"] >= patience:
            s["stopped_early"] = True


def _finish(run: _Run, finished: bool, t_start: float) -> dict:
    """The run's summary; when finished, the best weights restored (``restore_best``), the
    model file written and the checkpoint removed (rank 0). Ends the process group."""
    s, info = run.state, run.info
    summary = {
        "finished": finished,
        "epochs": s["epoch"],
        "steps": s["step"],
        "best_val_loss": None if math.isinf(s["best_val"]) else s["best_val"],
        "stopped_early": s["stopped_early"],
        "samples_per_s": run.rate,
        "time_s": time.perf_counter() - t_start,
        "ranks": info.world_size,
        "parameters": count_parameters(run.model),
    }
    if finished:
        if run.tcfg.get("restore_best", True) and run.best_state is not None:
            run.model.load_state_dict(run.best_state)
        d = run.data
        meta = {
            "input_size": d.in_size,
            "output_size": d.out_size,
            "views": {k: list(v) for k, v in d.views.items()},
            "data_kind": d.kind,
            "data_attrs": {
                k: v for k, v in d.sinfo["attrs"].items() if k not in ("config", "provenance")
            },
            "summary": summary,
        }
        if info.is_main:
            save_model(run.out, run.model, run.config, provenance(run.config, run.seed), meta)
            run.ckpt_path.unlink(missing_ok=True)  # a finished run leaves no checkpoint behind
    D.barrier(info)
    summary["model"] = run.model
    D.shutdown(info)
    return summary


def _batches(loader):
    """Iterate a DataLoader; a DataError from a worker process keeps its one-line message."""
    try:
        yield from loader
    except DataError as exc:
        raise _unwrap_worker_error(exc) from None


@torch.no_grad()
def precise_bn(model, loader, n_batches: int, to_dev, views=()) -> int:
    """Recompute the batch-norm running statistics with the current weights, as the plain
    average over the first ``n_batches`` batches of ``loader`` (other layers in eval mode;
    ``views``: the further inputs the network takes).

    The running averages kept during training mix statistics of many past weights; with a
    high learning rate they lag the weights, and validation in eval mode then swings from
    epoch to epoch (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021). With
    :class:`~xrayflow.train.networks.GlobalBatchNorm` the statistics are global, so all ranks
    get the same values. Returns the number of batches used (0 without batch norm).
    """
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return 0
    was_training = model.training
    momenta = [m.momentum for m in bns]
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    n = 0
    for batch in _batches(loader):
        if n >= n_batches:
            break
        forward(model, to_dev(batch), views)
        n += 1
    for m, mom in zip(bns, momenta, strict=True):
        m.momentum = mom
    model.train(was_training)
    return n


@torch.no_grad()
def _validate(run: _Run) -> float | None:
    """Mean total loss per held-out sample, over all ranks (None without held-out samples)."""
    ds = run.data.val
    if ds.n_split == 0:
        return None
    run.model.eval()
    s, n = 0.0, 0
    loader = torch.utils.data.DataLoader(ds, batch_size=max(1, ds.local_batch))
    for batch in _batches(loader):
        b = run.to_device(batch)
        terms = run.data.hooks.losses(
            forward(run.model, b, run.data.views), b, run.tcfg.get("loss", {}), run.extras
        )
        s += float(terms["total"].sum())
        n += len(b["input"])
    s, n = D.allreduce_sum([s, float(n)], run.info)
    run.model.train()
    return s / max(n, 1)
