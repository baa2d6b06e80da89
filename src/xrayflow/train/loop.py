"""Training loop: deterministic, resumable, data-parallel, with early stopping.

* Seeds: ``torch.manual_seed``, ``numpy.random.seed`` and ``random.seed`` from ``seed``;
  ``torch.use_deterministic_algorithms(True)`` (``warn_only`` on CUDA, where a few backward
  kernels have no deterministic variant) for the duration of :func:`train` only (the caller's
  settings are restored on return). The data order is a function of (seed, epoch)
  (see :mod:`xrayflow.train.shards`), never of the rank count.
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
* Model file (``out``): ``{"format", "state_dict", "config_json", "provenance_json", ...}``,
  loadable with ``torch.load(weights_only=True)`` (:func:`load_model`).
"""

from __future__ import annotations

import io
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from xrayflow.errors import ConfigError, DataError
from xrayflow.io.atomic import atomic_path
from xrayflow.io.fingerprint import run_fingerprint
from xrayflow.memory import check_memory
from xrayflow.train import distributed as D
from xrayflow.train.networks import (
    activation_bytes,
    build_network,
    count_parameters,
    estimate_parameters,
)
from xrayflow.train.shards import (
    ShardDataset,
    check_block,
    list_shards,
    shard_extras,
    shard_info,
)

MODEL_FORMAT = "xrayflow-model"

__all__ = ["MODEL_FORMAT", "load_model", "losses", "save_model", "set_determinism", "train"]


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


def _provenance(config: dict, seed) -> dict:
    try:
        from xrayflow.provenance import provenance  # noqa: PLC0415

        return provenance(config, seed)
    except Exception:  # pragma: no cover - helper C's module not available
        import platform  # noqa: PLC0415

        import xrayflow  # noqa: PLC0415

        return {
            "xrayflow": xrayflow.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "seed": seed,
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": " ".join(sys.argv),
        }


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def _atomic_torch_save(obj, path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


# ----------------------------------------------------------------------------- model files
def save_model(
    path, model: torch.nn.Module, config: dict, provenance: dict, meta: dict | None = None
) -> Path:
    """Write weights + config + provenance (JSON strings), loadable with weights_only=True."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    obj = {
        "format": MODEL_FORMAT,
        "format_version": 1,
        "state_dict": state,
        "config_json": json.dumps(_jsonable(config)),
        "provenance_json": json.dumps(_jsonable(provenance)),
        "meta_json": json.dumps(_jsonable(meta or {})),
    }
    _atomic_torch_save(obj, path)
    return Path(path)


def load_model(path, device="cpu") -> tuple[torch.nn.Module, dict, dict, dict]:
    """Load a model file with ``weights_only=True``.

    Returns (model in eval mode, config, provenance, meta).
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{str(p)!r}: model file does not exist")
    try:
        obj = torch.load(p, map_location=device, weights_only=True)
    except Exception as exc:
        raise DataError(f"{str(p)!r}: not a loadable xrayflow model file: {exc}") from None
    if not isinstance(obj, dict) or obj.get("format") != MODEL_FORMAT:
        raise DataError(f"{str(p)!r}: not an xrayflow model file")
    for key in ("state_dict", "config_json", "meta_json"):
        if key not in obj:
            raise DataError(f"{str(p)!r}: not a complete xrayflow model file (no {key!r})")
    try:
        config = json.loads(obj["config_json"])
        meta = json.loads(obj["meta_json"])
        prov = json.loads(obj.get("provenance_json") or "{}")
        model = build_network(config["network"], meta["input_size"], meta.get("output_size"))
        model.load_state_dict(obj["state_dict"])
    except (ValueError, KeyError, TypeError, RuntimeError, ConfigError) as exc:
        what = f"missing {exc}" if isinstance(exc, KeyError) else str(exc).splitlines()[0]
        raise DataError(f"{str(p)!r}: inconsistent xrayflow model file ({what})") from None
    model.to(device).eval()
    return model, config, prov, meta


# ----------------------------------------------------------------------------- losses
def _err(a, b, kind):
    d = a - b
    return d * d if kind == "mse" else d.abs()


def _far_field_2d(amp, phase, probe):
    obj = torch.polar(amp, phase)
    psi = probe * obj
    return torch.fft.fftshift(torch.fft.fft2(psi, norm="ortho"), dim=(-2, -1)).abs()


def _far_field_3d(support, phase, n_in):
    rho = torch.polar(support, phase)
    m = rho.shape[-1]
    pad = n_in - m
    if pad:
        lo = pad // 2
        rho = torch.nn.functional.pad(rho, (lo, pad - lo) * 3)
    return torch.fft.fftshift(
        torch.fft.fftn(rho, dim=(-3, -2, -1), norm="ortho"), dim=(-3, -2, -1)
    ).abs()


def centre_crop(t: torch.Tensor, m: int) -> torch.Tensor:
    """The centred ``m`` box of every spatial axis of ``t`` (B, n, ...) (start ``(n - m) // 2``)."""
    n = t.shape[-1]
    if n == m:
        return t
    lo = (n - m) // 2
    return t[(slice(None),) + (slice(lo, lo + m),) * (t.dim() - 1)]


def _twin(t: torch.Tensor) -> torch.Tensor:
    """``t(-r)`` about the box centre: every spatial axis of (B, m, ...) reversed."""
    return torch.flip(t, dims=tuple(range(1, t.dim())))


def _cdi_terms(out: dict, s: torch.Tensor, ph: torch.Tensor, metric: str, dims) -> dict:
    return {
        "support": _err(out["support"], s, metric).mean(dims),
        "phase": (_err(out["phase"], ph, metric) * s).sum(dims) / s.sum(dims).clamp_min(1.0),
    }


def losses(kind: str, out: dict, batch: dict, loss_cfg: dict, probe=None) -> dict:
    """Per-sample loss terms (each a (B,) tensor) and their weighted ``total``.

    Supervised terms compare with the targets, centre-cropped to the output size (phase of 3D
    crystals only inside the true support). 3D terms are twin-invariant: a crystal ``rho(r)``
    and its twin ``conj(rho(-r))`` have the same diffraction intensity, so each sample is
    scored against whichever of the two its prediction is closer to (support and phase terms
    together). The unsupervised ``far_field`` term compares the predicted object's far field
    (torch.fft, norm="ortho", centred; 2D: probe × object, absolute photon scale; 3D: object
    zero-padded to the pattern size, least-squares scale fitted per sample) with the measured
    amplitude sqrt(counts) = ``batch["input"]``.
    """
    mode = loss_cfg.get("mode", "supervised")
    metric = loss_cfg.get("kind", "mse")
    w = {
        "amplitude": 1.0,
        "phase": 1.0,
        "support": 1.0,
        "far_field": 1.0,
        **loss_cfg.get("weights", {}),
    }
    terms: dict[str, torch.Tensor] = {}
    dims = tuple(range(1, out["phase"].dim()))
    if mode in ("supervised", "both"):
        m = out["phase"].shape[-1]
        if kind == "ptycho2d":
            for h in ("amplitude", "phase"):
                terms[h] = _err(out[h], centre_crop(batch[h], m), metric).mean(dims)
        else:
            s, ph = centre_crop(batch["support"], m), centre_crop(batch["phase"], m)
            a = _cdi_terms(out, s, ph, metric, dims)
            b = _cdi_terms(out, _twin(s), -_twin(ph), metric, dims)
            first = w["support"] * a["support"] + w["phase"] * a["phase"] <= (
                w["support"] * b["support"] + w["phase"] * b["phase"]
            )
            for h in ("support", "phase"):
                terms[h] = torch.where(first, a[h], b[h])
    if mode in ("unsupervised", "both"):
        meas = batch["input"]
        if kind == "ptycho2d":
            if probe is None:
                raise DataError("unsupervised 2D loss needs the probe (dataset 'probe' in shards)")
            pred = _far_field_2d(out["amplitude"], out["phase"], probe)
            norm = meas.pow(2).mean(dims).clamp_min(1e-12)
            terms["far_field"] = (pred - meas).pow(2).mean(dims) / norm
        else:
            pred = _far_field_3d(out["support"], out["phase"], meas.shape[-1])
            sdims = tuple(range(1, pred.dim()))
            scale = (pred * meas).sum(sdims) / pred.pow(2).sum(sdims).clamp_min(1e-12)
            shape = (-1,) + (1,) * len(sdims)
            norm = meas.pow(2).mean(sdims).clamp_min(1e-12)
            terms["far_field"] = (scale.view(shape) * pred - meas).pow(2).mean(sdims) / norm
    if not terms:
        raise ConfigError(f"train.training.loss.mode: unknown {mode!r}")
    terms["total"] = sum(w[k] * v for k, v in terms.items())
    return terms


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


# ----------------------------------------------------------------------------- training
def _data_kind(info: dict) -> str:
    k = info["attrs"].get("kind", "")
    if k in ("ptycho2d", "bragg_cdi3d"):
        return k
    return "ptycho2d" if len(info["input_shape"]) == 2 else "bragg_cdi3d"


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
    n = int(np.prod(sinfo["input_shape"])) + sum(
        int(np.prod(s)) for s in sinfo["target_shapes"].values()
    )
    return 4 * n


def training_memory(
    net_cfg: dict,
    sinfo: dict,
    tcfg: dict,
    in_size: int,
    out_size: int,
    world_size: int = 1,
    n_samples: int | None = None,
) -> dict[str, float]:
    """Estimated peak bytes of training, by part (memory guard; from config and headers)."""
    n_par = estimate_parameters(net_cfg, in_size, out_size)
    states = {"adam": 2, "adamw": 2, "sgd": 1}.get(tcfg.get("optimizer", "adam"), 2)
    ndim = len(sinfo["input_shape"])
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
        f"activations of a batch of {lb}": float(lb)
        * (activation_bytes(net_cfg, ndim, in_size, out_size) + 2 * sb),
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
    except Exception as exc:  # noqa: BLE001 - any unpickling/zip/IO failure
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
    tcfg = config["training"]
    seed = int(config.get("seed", 0))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ckpt_path = out.with_name(out.name + ".ckpt")
    metrics_path = out.with_name(out.name + ".metrics.jsonl")

    info = D.init_distributed(tcfg.get("device", "auto"))
    if log is None:

        def log(msg):
            if info.is_main:
                print(msg, file=sys.stderr, flush=True)

    threads = int(tcfg.get("threads", 0))
    if threads > 0:
        torch.set_num_threads(threads)
    set_determinism(seed, bool(tcfg.get("deterministic", True)), info.device.type == "cuda")

    shards = list_shards(data)
    sinfo = shard_info(shards[0])
    data_fp = run_fingerprint({}, data_files(data, shards))
    kind = _data_kind(sinfo)
    net_cfg = dict(config["network"])
    want = {"ptycho2d": "ptycho2d", "bragg_cdi3d": "cdi3d"}[kind]
    if net_cfg.get("kind", "auto") == "auto":
        net_cfg["kind"] = want
    if net_cfg["kind"] != want:
        raise ConfigError(f"train.network.kind: {net_cfg['kind']!r} does not fit {kind} shards")
    config = {**config, "network": net_cfg}
    in_size = sinfo["input_shape"][-1]
    tgt_size = next(iter(sinfo["target_shapes"].values()))[-1]
    out_size = int(net_cfg.get("output_size") or tgt_size)
    if out_size > tgt_size or (tgt_size - out_size) % 2:
        raise ConfigError(
            f"train.network.output_size: {out_size} must be <= the targets' size {tgt_size} "
            "and differ from it by an even number (the centre of the targets is predicted)"
        )
    if (
        kind == "ptycho2d"
        and out_size != tgt_size
        and tcfg.get("loss", {}).get("mode", "supervised") != "supervised"
    ):
        raise ConfigError(
            "train.network.output_size: the 2D far-field loss (training.loss.mode "
            f"{tcfg['loss']['mode']!r}) needs the whole patch ({tgt_size}), got {out_size}"
        )

    G = int(tcfg.get("global_batch", 32))
    if G % info.world_size:
        raise ConfigError(
            f"train.training.global_batch: {G} is not divisible by the {info.world_size} ranks"
        )
    common = dict(
        val_fraction=float(tcfg.get("val_fraction", 0.1)),
        split_seed=int(tcfg.get("split_seed", 0)),
        seed=seed,
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
    steps_per_epoch = train_ds.n_global_batches()
    if steps_per_epoch == 0:
        raise DataError(
            f"{data}: {train_ds.n_split} training samples, fewer than one global batch of {G}"
        )
    epochs = int(tcfg.get("epochs", 10))
    total_steps = epochs * steps_per_epoch

    torch.manual_seed(seed)
    model = build_network(net_cfg, in_size, out_size).to(info.device)
    D.broadcast_parameters(model, info)
    opt = _make_optimizer(model.parameters(), tcfg)
    sched = _make_scheduler(opt, tcfg.get("schedule", {}), total_steps, steps_per_epoch)
    loss_cfg = tcfg.get("loss", {})
    probe = None
    if loss_cfg.get("mode", "supervised") != "supervised" and kind == "ptycho2d":
        p = shard_extras(shards[0], "probe")
        if p is None:
            raise DataError(f"{shards[0]}: unsupervised loss needs dataset 'probe'")
        check_block(np.abs(np.asarray(p))[None], repr(str(shards[0])), "probe", 0, False)
        probe = torch.as_tensor(np.asarray(p, dtype=np.complex64), device=info.device)

    es = tcfg.get("early_stopping", {})
    patience = int(es.get("patience", 0))
    min_delta = float(es.get("min_delta", 0.0))
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
    best_state = None
    fingerprint = json.dumps(
        _jsonable(
            {
                "network": net_cfg,
                "seed": seed,
                "training": {k: v for k, v in tcfg.items() if k not in _NOT_RESULT_KEYS},
            }
        ),
        sort_keys=True,
    )

    ck = None
    if resume and not (ckpt_path.exists() or ckpt_path.is_symlink()):
        log(f"--resume: no checkpoint {ckpt_path}; starting fresh")
    elif resume:
        ck = _load_checkpoint(ckpt_path, info.device)
        changed = [
            what
            for what, key, mine in (
                ("config", "fingerprint", fingerprint),
                ("training data", "data_fingerprint", data_fp),
            )
            if ck.get(key) != mine
        ]
        if changed:
            log(
                f"--resume: the checkpoint {ckpt_path} was written for other inputs "
                f"({' and '.join(changed)} changed); starting fresh"
            )
            ck = None
    if ck is not None:
        try:
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise DataError(
                f"--resume: the checkpoint {str(ckpt_path)!r} does not fit this network "
                f"({str(exc).splitlines()[0]}); delete it or run without --resume"
            ) from None
        state.update(json.loads(ck["state_json"]))
        best_state = ck.get("best_model")
        torch.set_rng_state(ck["torch_rng"].cpu())
        _set_np_rng_state(ck["numpy_rng"])
        pv, pkeys, pg = json.loads(ck["python_rng"])
        random.setstate((pv, tuple(pkeys), pg))
        if info.device.type == "cuda" and "cuda_rng" in ck:
            torch.cuda.set_rng_state(ck["cuda_rng"].cpu())
        if info.is_main and metrics_path.exists():
            keep = [
                ln
                for ln in metrics_path.read_text().splitlines()
                if _metrics_epoch(ln) < state["epoch"]
            ]
            metrics_path.write_text("".join(ln + "\n" for ln in keep))
        log(
            f"resumed from {ckpt_path} at epoch {state['epoch']} batch {state['batch']} "
            f"(step {state['step']})"
        )
    elif info.is_main and metrics_path.exists():
        metrics_path.unlink()

    def save_ckpt():
        if not info.is_main:
            return
        py = random.getstate()
        obj = {
            "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "state_json": json.dumps(state),
            "best_model": best_state,
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": _np_rng_state(),
            "python_rng": json.dumps([py[0], list(py[1]), py[2]]),
            "fingerprint": fingerprint,
            "data_fingerprint": data_fp,
        }
        if info.device.type == "cuda":
            obj["cuda_rng"] = torch.cuda.get_rng_state()
        _atomic_torch_save(obj, ckpt_path)

    log(
        f"training {net_cfg['kind']} ({count_parameters(model):,} parameters) on "
        f"{train_ds.n_split} samples ({val_ds.n_split} held out), {info.world_size} rank(s), "
        f"global batch {G}, {steps_per_epoch} steps/epoch, device {info.device}"
    )
    ck_every = int(tcfg.get("checkpoint_every", 0))
    max_steps = int(tcfg.get("max_steps", 0))
    log_every = int(tcfg.get("log_every", 50))
    nw = int(tcfg.get("num_workers", 0))
    finished = True
    t_start = time.perf_counter()
    rate = 0.0

    def to_dev(batch):
        return {k: v.to(info.device, non_blocking=True) for k, v in batch.items() if k != "sid"}

    while state["epoch"] < epochs and not state["stopped_early"]:
        ep = state["epoch"]
        train_ds.set_epoch(ep)
        train_ds.set_start_batch(state["batch"])
        loader = torch.utils.data.DataLoader(
            train_ds, batch_size=train_ds.local_batch, num_workers=nw
        )
        model.train()
        t0 = time.perf_counter()
        n0 = state["seen"]
        interrupted = False
        for batch in _batches(loader):
            b = to_dev(batch)
            outp = model(b["input"])
            terms = losses(kind, outp, b, loss_cfg, probe)
            loss = terms["total"].sum() / G
            opt.zero_grad(set_to_none=True)
            loss.backward()
            D.allreduce_gradients(model, info)
            clip = float(tcfg.get("grad_clip", 0.0))
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            sched.step()
            gl = D.allreduce_sum([float(terms["total"].detach().sum())], info)[0]
            if not math.isfinite(gl):
                raise ConfigError(
                    f"train: the training loss is {gl} at epoch {ep} step {state['step'] + 1} "
                    "although the shards hold finite values; the likely cause is a learning "
                    f"rate too high for this network (training.lr={tcfg.get('lr')}): lower "
                    "training.lr or set training.grad_clip"
                )
            state["loss_sum"] += gl
            state["seen"] += G
            state["batch"] += 1
            state["step"] += 1
            dt = time.perf_counter() - t0
            rate = (state["seen"] - n0) / max(dt, 1e-9)
            if log_every and state["step"] % log_every == 0:
                log(
                    f"epoch {ep} step {state['step']} loss {gl / G:.5g} "
                    f"lr {opt.param_groups[0]['lr']:.3g} {rate:.1f} samples/s"
                )
            if ck_every and state["step"] % ck_every == 0:
                save_ckpt()
            if max_steps and state["step"] >= max_steps:
                interrupted = True
                break
        if interrupted and state["batch"] < steps_per_epoch:
            save_ckpt()
            finished = False
            log(
                f"stopped at max_steps={max_steps} (epoch {ep}, batch {state['batch']}); "
                f"continue with --resume"
            )
            break
        # ---- end of epoch: validation, early stopping, metrics
        if int(tcfg.get("precise_bn", 0)):
            train_ds.set_start_batch(0)
            loader = torch.utils.data.DataLoader(train_ds, batch_size=train_ds.local_batch)
            precise_bn(model, loader, int(tcfg["precise_bn"]), to_dev)
        val = _validate(model, val_ds, kind, loss_cfg, probe, info, to_dev)
        train_loss = state["loss_sum"] / max(state["seen"], 1)
        improved = val is not None and val < state["best_val"] - min_delta
        if val is not None:
            if improved:
                state["best_val"] = val
                state["bad_epochs"] = 0
                best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            else:
                state["bad_epochs"] += 1
                if patience and state["bad_epochs"] >= patience:
                    state["stopped_early"] = True
        rec = {
            "epoch": ep,
            "step": state["step"],
            "train_loss": train_loss,
            "val_loss": val,
            "best_val_loss": None if math.isinf(state["best_val"]) else state["best_val"],
            "lr": opt.param_groups[0]["lr"],
            "samples_per_s": rate,
            "epoch_time_s": time.perf_counter() - t0,
            "ranks": info.world_size,
        }
        if info.is_main:
            with open(metrics_path, "a") as fh:
                fh.write(json.dumps(rec) + "\n")
        log(
            f"epoch {ep} done: train {train_loss:.5g} val {val if val is None else f'{val:.5g}'}"
            f" {rate:.1f} samples/s" + (" (early stop)" if state["stopped_early"] else "")
        )
        state.update(epoch=ep + 1, batch=0, loss_sum=0.0, seen=0)
        save_ckpt()
        if max_steps and state["step"] >= max_steps and state["epoch"] < epochs:
            finished = False
            break

    summary = {
        "finished": finished,
        "epochs": state["epoch"],
        "steps": state["step"],
        "best_val_loss": None if math.isinf(state["best_val"]) else state["best_val"],
        "stopped_early": state["stopped_early"],
        "samples_per_s": rate,
        "time_s": time.perf_counter() - t_start,
        "ranks": info.world_size,
        "parameters": count_parameters(model),
    }
    if finished:
        if tcfg.get("restore_best", True) and best_state is not None:
            model.load_state_dict(best_state)
        meta = {
            "input_size": in_size,
            "output_size": out_size,
            "data_kind": kind,
            "data_attrs": {
                k: v for k, v in sinfo["attrs"].items() if k not in ("config", "provenance")
            },
            "summary": summary,
        }
        if info.is_main:
            save_model(out, model, config, _provenance(config, seed), meta)
            ckpt_path.unlink(missing_ok=True)  # a finished run leaves no checkpoint behind
    D.barrier(info)
    summary["model"] = model
    D.shutdown(info)
    return summary


def _metrics_epoch(line: str) -> float:
    """Epoch of a metrics line (inf for a blank or unreadable line, which is dropped)."""
    try:
        return float(json.loads(line)["epoch"])
    except (ValueError, KeyError, TypeError):
        return math.inf


def _batches(loader):
    """Iterate a DataLoader; a DataError from a worker process keeps its one-line message."""
    try:
        yield from loader
    except DataError as exc:
        raise _unwrap_worker_error(exc) from None


@torch.no_grad()
def precise_bn(model, loader, n_batches: int, to_dev) -> int:
    """Recompute the batch-norm running statistics with the current weights, as the plain
    average over the first ``n_batches`` batches of ``loader`` (other layers in eval mode).

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
        model(to_dev(batch)["input"])
        n += 1
    for m, mom in zip(bns, momenta, strict=True):
        m.momentum = mom
    model.train(was_training)
    return n


@torch.no_grad()
def _validate(model, ds: ShardDataset, kind, loss_cfg, probe, info, to_dev):
    if ds.n_split == 0:
        return None
    model.eval()
    s, n = 0.0, 0
    loader = torch.utils.data.DataLoader(ds, batch_size=max(1, ds.local_batch))
    for batch in _batches(loader):
        b = to_dev(batch)
        terms = losses(kind, model(b["input"]), b, loss_cfg, probe)
        s += float(terms["total"].sum())
        n += len(b["input"])
    s, n = D.allreduce_sum([s, float(n)], info)
    model.train()
    return s / max(n, 1)
