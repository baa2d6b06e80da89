"""Training sets from a modality's physics, one HDF5 shard per task.

The modality (``data.kind``) is looked up in the registry; its training hooks
(:mod:`xrayflow.train.hooks`) give the shard layout (pattern and target shapes, extra
datasets such as a probe) and simulate the expected intensities and the targets, block by
block (``chunk_rows``). This module adds what all modalities share: the noise, the network
input sqrt(counts) with the zero frequency centred, the shard files and their manifest. A
modality whose measurement is not that (e.g. detector images with artefacts, further input
views such as Fourier–Bessel coefficients) defines the hook ``measure`` instead
(:class:`~xrayflow.train.hooks.TrainingHooks`).

Noise (``data.noise``, recorded in the shard attrs ``noise_model``):
``poisson_intensity`` (default; photon statistics: counts ~ Poisson(I), then optional Gaussian
read noise, clipped at 0), ``poisson_amplitude`` (AutoPhaseNN's choice: Poisson applied to the
amplitude |F|, *not* photon statistics; kept for comparison) or ``none``.

Parallel generation: shard i uses ``numpy.random.default_rng(SeedSequence([seed, i]))`` only,
so the result does not depend on who generates it. ``data.parallel``: ``mpi`` (rank r makes
shards r, r+W, …; launched with mpiexec), ``dask`` (if installed), ``multiprocessing``,
``serial``; ``auto`` = mpi under an MPI launch with >1 ranks, else dask (if installed) or
multiprocessing when ``workers`` > 1, else serial. Existing complete shards with the same
config are kept (restartable). A ``manifest.json`` lists the shards.

Memory guard: the peak memory of one task (the modality's estimate for one block of rows,
:meth:`~xrayflow.train.hooks.TrainingHooks.task_memory`) times the tasks running at once on
this node is checked (:func:`xrayflow.memory.check_memory`, limit ``data.max_memory_gb``)
before anything is generated.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import multiprocessing as mp
import os
from pathlib import Path

import numpy as np

from xrayflow.backend import fftshift, get_backend
from xrayflow.detector import poisson_counts
from xrayflow.errors import ConfigError, DataError
from xrayflow.io.atomic import atomic_write_text
from xrayflow.memory import check_memory
from xrayflow.provenance import provenance
from xrayflow.train.distributed import env_rank_size
from xrayflow.train.hooks import training_hooks
from xrayflow.train.shards import ShardWriter, shard_info

__all__ = ["generate", "generate_shard", "shard_path", "task_memory"]


def _measure(hooks, expected: np.ndarray, dcfg: dict, rng) -> dict[str, np.ndarray]:
    """The network inputs of a block (``{"input": ..., <view>: ...}``): the modality's
    ``measure`` hook, else sqrt of the noisy counts with the zero frequency centred."""
    if hasattr(hooks, "measure"):
        return hooks.measure(expected, dcfg, rng)
    amp = _noisy_amplitude(expected, dcfg, rng)
    return {"input": fftshift(amp, axes=tuple(range(1, amp.ndim)))}


def _noisy_amplitude(expected: np.ndarray, dcfg: dict, rng) -> np.ndarray:
    """Network input (sqrt of counts) from expected counts, by the configured noise model."""
    noise = dcfg.get("noise", "poisson_intensity")
    read = float(dcfg.get("read_noise", 0.0))
    if noise == "poisson_intensity":
        counts = poisson_counts(expected, rng).astype(np.float64)
        if read > 0:
            counts = np.clip(counts + rng.normal(0.0, read, counts.shape), 0.0, None)
        return np.sqrt(counts)
    if noise == "poisson_amplitude":
        return poisson_counts(np.sqrt(expected), rng).astype(np.float64)
    if noise == "none":
        return np.sqrt(expected)
    raise ConfigError(f"train.data.noise: unknown {noise!r}")


# ----------------------------------------------------------------------------- shards
def _shard_attrs(config: dict, index: int, n_shards: int) -> dict:
    """The attributes every shard has (the modality adds its layout's)."""
    d = config["data"]
    return {
        "kind": d["kind"],
        "shard_index": index,
        "n_shards": n_shards,
        "shard_uid": f"{config.get('seed', 0)}-{index}",
        "seed": int(config.get("seed", 0)),
        "noise_model": d.get("noise", "poisson_intensity"),
        "photons": float(d["photons"]),
        "read_noise": float(d.get("read_noise", 0.0)),
        "centred": True,
        "input_transform": "sqrt_counts"
        if d.get("noise") != "poisson_amplitude"
        else "poisson_amplitude",
        "config_hash": _config_hash(config),
        "config": json.dumps(config, default=str),
    }


def _config_hash(config: dict) -> str:
    """Hash of what determines the shards' content: seed and ``data`` (not how it runs)."""
    keep = {
        "seed": config.get("seed", 0),
        "data": {
            k: v
            for k, v in config["data"].items()
            if k not in ("parallel", "workers", "max_memory_gb")
        },
    }
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


def shard_path(out_dir, index: int) -> Path:
    """Path of shard ``index`` in ``out_dir``."""
    return Path(out_dir) / f"shard-{index:05d}.h5"


def generate_shard(config: dict, index: int, out_dir) -> Path:
    """Generate shard ``index`` (deterministic from ``seed`` and ``index``); returns its path.

    A complete shard already there with the same config hash is kept.
    """
    d = config["data"]
    path = shard_path(out_dir, index)
    if path.is_file():
        try:
            if shard_info(path)["attrs"].get("config_hash") == _config_hash(config):
                return path
        except DataError:
            pass
    _, hooks = training_hooks(d["kind"], "train.data.kind")
    seed = int(config.get("seed", 0))
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    attrs = _shard_attrs(config, index, int(d["n_shards"]))
    attrs["provenance"] = json.dumps(provenance(config, seed), default=str)
    input_shape, target_shapes, layout_attrs, extras = hooks.shard_layout(d)
    views = {}
    if isinstance(input_shape, dict):  # {"input": shape, <view>: shape, ...}
        views = {k: v for k, v in input_shape.items() if k != "input"}
        input_shape = input_shape["input"]
    attrs.update(layout_attrs)
    backend = get_backend("cpu", workers=1)
    n = int(d["samples_per_shard"])
    chunk = int(d.get("chunk_rows", 32))
    compression = d.get("compression")
    with ShardWriter(
        path, n, input_shape, target_shapes, chunk, attrs, compression, extras, views
    ) as w:
        starts = range(0, w.n, w.chunk_rows)
        sizes = [min(w.chunk_rows, w.n - s) for s in starts]
        blocks = hooks.simulate(d, extras, sizes, rng, backend)
        for start, (expected, targets) in zip(starts, blocks, strict=True):
            measured = _measure(hooks, expected, d, rng)
            w.write(start, measured.pop("input"), targets, measured)
    return path


def _work(args):
    """Generate one shard (a parallel task); its path as a string."""
    config, index, out_dir = args
    return str(generate_shard(config, index, out_dir))


def _mpi_comm():
    """MPI.COMM_WORLD under an MPI launch with more than one rank, else None."""
    _, size, _ = env_rank_size()
    if size <= 1:
        return None
    try:
        from mpi4py import MPI
    except ImportError:  # pragma: no cover
        return None
    return MPI.COMM_WORLD if MPI.COMM_WORLD.Get_size() > 1 else None


def task_memory(config: dict) -> dict[str, float]:
    """Estimated peak bytes of one generation task (one shard being written), by part."""
    d = config["data"]
    rows = max(1, min(int(d.get("chunk_rows", 32)), int(d.get("samples_per_shard", 1))))
    return training_hooks(d["kind"], "train.data.kind")[1].task_memory(d, rows)


def generate(
    config: dict, out_dir, parallel: str | None = None, workers: int | None = None, log=print
) -> dict:
    """Generate all shards of ``config['data']`` into ``out_dir``; return the manifest.

    Args:
        parallel: overrides ``data.parallel`` (auto | serial | multiprocessing | mpi | dask).
        workers: overrides ``data.workers`` (0 = CPUs available).
    """
    d = config["data"]
    out_dir = Path(out_dir)
    n_shards = int(d["n_shards"])
    mode = parallel or d.get("parallel", "auto")
    nw = workers if workers is not None else int(d.get("workers", 0))
    if nw <= 0:
        try:
            nw = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover
            nw = os.cpu_count() or 1
    comm = _mpi_comm()
    if mode == "auto":
        if comm is not None:
            mode = "mpi"
        elif nw > 1 and n_shards > 1:
            mode = "dask" if importlib.util.find_spec("dask") else "multiprocessing"
        else:
            mode = "serial"
    at_once = 1 if mode in ("serial", "mpi") else max(1, min(nw, n_shards))
    parts = task_memory(config)
    if at_once > 1:
        parts = {f"{k} x {at_once} workers": v * at_once for k, v in parts.items()}
    check_memory(parts, "train --generate", d.get("max_memory_gb"), key="data.max_memory_gb")
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(config, i, out_dir) for i in range(n_shards)]
    rank = 0
    if mode == "mpi":
        if comm is None:
            raise ConfigError("train.data.parallel: mpi requested but not launched under MPI")
        rank, size = comm.Get_rank(), comm.Get_size()
        for j in jobs[rank::size]:
            _work(j)
        comm.Barrier()
    elif mode == "dask":
        try:
            import dask
        except ImportError:
            raise ConfigError("train.data.parallel: dask is not installed") from None
        tasks = [dask.delayed(_work)(j) for j in jobs]
        dask.compute(*tasks, scheduler="processes", num_workers=nw)
    elif mode == "multiprocessing":
        with mp.get_context("spawn").Pool(min(nw, n_shards)) as pool:
            for p in pool.imap_unordered(_work, jobs):
                log(f"wrote {p}")
    elif mode == "serial":
        for j in jobs:
            log(f"wrote {_work(j)}")
    else:
        raise ConfigError(f"train.data.parallel: unknown {mode!r}")
    manifest = {
        "format": "xrayflow-train-manifest",
        "kind": d["kind"],
        "n_shards": n_shards,
        "config_hash": _config_hash(config),
        "shards": [
            {"path": shard_path(out_dir, i).name, "n_samples": int(d["samples_per_shard"])}
            for i in range(n_shards)
        ],
        "config": config,
        "parallel": mode,
    }
    if rank == 0:
        atomic_write_text(out_dir / "manifest.json", json.dumps(manifest, indent=1, default=str))
    return manifest
