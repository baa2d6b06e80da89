"""Apply a trained model to new diffraction data: HDF5 in, HDF5 out, time per pattern.

Inputs accepted:

* a training shard (dataset ``inputs``: sqrt(counts), centred);
* a CXI file (``xrayflow.io.cxi``), converted to sqrt(counts) and centred if stored
  uncentred (dataset attribute ``centred``). 2D networks: every frame is one pattern, read
  in blocks of ``batch`` frames with ``read_cxi(indices=...)``. 3D networks: the frames of
  the usual 3D dataset form one pattern (attribute ``fft_ndim = 3``, as the simulate stage
  writes a 3D pattern; a file that records another modality without it is refused), and
  a 4D dataset ``(B, Z, Y, X)`` is a stack of B patterns, read ``batch`` at a time.

A pattern of another size than the model's input is brought to it by the modality's hook
``fit_input_size`` (e.g. 3D Bragg CDI: cropped or zero-padded about the zero frequency),
logged once and recorded in the output's root attributes (``resampled``, ...); a modality
without the hook refuses it (crop/bin beforehand).

A modality whose inputs are not diffraction patterns (e.g. detector images with a beam
centre and a mask, plus Fourier–Bessel coefficients) reads its CXI files with its training
hook ``read_inputs`` (:class:`~xrayflow.train.hooks.OptionalHooks`) instead; a shard's
further inputs (views) are read with its inputs.

Output (written atomically): one dataset per network head (e.g. ``amplitude`` and
``phase``, or ``support`` and ``phase``), or what the modality's hook ``infer_outputs``
makes of them (e.g. per-tag probabilities), float32, chunked by batch, plus its
``infer_constants`` (e.g. tag names); root attrs ``modality``, ``model`` (path),
``n_patterns``, ``time_per_pattern_s`` (network forward incl. host↔device copies, excluding
file I/O), ``total_time_s``, ``device``, ``config`` and ``provenance`` (JSON strings).

Checks before and while reading (:class:`~xrayflow.errors.DataError` naming the file, the
dataset and the first bad pattern): a file that is not HDF5 or is truncated, an HDF5 file
with neither a shard's ``inputs`` nor CXI data, complex data, NaN/inf or negative values,
a model file that is not a complete xrayflow model. The memory of a batch (input,
activations, outputs) is estimated and checked before the first one (``infer.max_memory_gb``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from xrayflow.backend import fftshift
from xrayflow.errors import DataError
from xrayflow.io.atomic import atomic_path
from xrayflow.io.cxi import DATA_PATHS, is_centred, read_cxi, read_cxi_meta
from xrayflow.memory import check_memory
from xrayflow.networks import count_parameters, load_model
from xrayflow.provenance import provenance
from xrayflow.train.distributed import accelerator
from xrayflow.train.hooks import training_hooks
from xrayflow.train.loop import build_network, forward
from xrayflow.train.shards import check_block, shard_info

__all__ = ["infer"]


def _input_kind(path: Path) -> tuple[str, str, tuple]:
    """("shard" | "cxi", dataset name, shape) of an inference input; DataError otherwise."""
    src = repr(str(path))
    try:
        with h5py.File(path, "r") as f:
            name = "inputs" if "inputs" in f else next((d for d in DATA_PATHS if d in f), None)
            if name is None:
                raise DataError(
                    f"{src}: neither a training shard (dataset 'inputs') nor CXI data "
                    f"({' or '.join(DATA_PATHS)})"
                )
            ds = f[name]
            if not isinstance(ds, h5py.Dataset):
                raise DataError(f"{src}: {name!r} is not a dataset")
            if ds.dtype.kind == "c":
                raise DataError(
                    f"{src}: dataset {name!r} is complex ({ds.dtype}); diffraction data must "
                    "be real, non-negative counts"
                )
            if ds.dtype.kind not in "fiu":
                raise DataError(f"{src}: dataset {name!r} has non-numeric dtype {ds.dtype}")
            return ("shard" if name == "inputs" else "cxi"), name, tuple(ds.shape)
    except OSError as exc:
        reason = " ".join(str(exc).split())
        raise DataError(
            f"{src}: not a readable HDF5 file (truncated, corrupt or not HDF5): {reason}"
        ) from None


def network_of(config: dict, meta: dict):
    """The untrained network of a model file (its config and meta), built by its modality's
    training hooks: ``load_model(path, build=network_of)``."""
    kind = meta.get("data_kind") or config["network"]["kind"]
    _, hooks = training_hooks(str(kind), "model file: data_kind")
    views = meta.get("views") or {}
    return build_network(
        hooks, config["network"], int(meta["input_size"]), int(meta["output_size"]), views
    )


def _read_rows(ds: h5py.Dataset, start: int, batch: int, src: str) -> np.ndarray:
    """Rows ``start:start + batch`` of ``ds`` as float32; DataError naming the file."""
    try:
        return np.asarray(ds[start : start + batch], dtype=np.float32)
    except (OSError, RuntimeError) as exc:
        raise DataError(
            f"{src}: cannot read {ds.name.lstrip('/')!r} rows {start}:{start + batch} "
            f"(truncated or corrupt?): {' '.join(str(exc).split())}"
        ) from None


def _shard_blocks(path: Path, batch: int):
    """Yield (n_samples, {"input": ..., <view>: ...}) blocks of ``batch`` rows of a shard,
    checked (inputs finite and non-negative, views finite)."""
    src = repr(str(path))
    views = [f"views_{v}" for v in shard_info(path)["view_shapes"]]
    try:
        with h5py.File(path, "r") as f:
            n = f["inputs"].shape[0]
            for s in range(0, n, batch):
                block = {}
                for name in ("inputs", *views):
                    a = _read_rows(f[name], s, batch, src)
                    check_block(a, src, name, s, nonnegative=name == "inputs")
                    block["input" if name == "inputs" else name[len("views_") :]] = a
                yield n, block
    except OSError as exc:
        raise DataError(f"{src}: unreadable (truncated or corrupt?): {exc}") from None


def _amplitudes(counts: np.ndarray, centred: bool, ndim: int) -> np.ndarray:
    """sqrt(counts) as a stack (patterns, *pattern) of the last ``ndim`` axes, centred."""
    a = np.sqrt(counts).reshape(-1, *counts.shape[-ndim:])
    return a if centred else fftshift(a, axes=tuple(range(1, a.ndim)))


def _volume_stack(path: Path, batch: int, name: str):
    """Yield (n_patterns, {"input": ...}) blocks of ``batch`` 3D patterns of a CXI file
    whose dataset ``name`` is a stack of volumes (B, Z, Y, X), each block checked."""
    src = repr(str(path))
    try:
        with h5py.File(path, "r") as f:
            ds = f[name]
            centred = is_centred(ds)
            for s in range(0, ds.shape[0], batch):
                counts = _read_rows(ds, s, batch, src)
                check_block(counts, src, name, s, nonnegative=True, unit="volume")
                yield ds.shape[0], {"input": _amplitudes(counts, centred, 3)}
    except OSError as exc:
        raise DataError(f"{src}: unreadable (truncated or corrupt?): {exc}") from None


def _blocks(path: Path, batch: int, kind: str, name: str, shape: tuple, ndim: int):
    """Yield (n_patterns, {"input": block of sqrt-count patterns, centred}) from a shard or
    CXI file (``name``: its dataset, of ``shape``), ``batch`` patterns of ``ndim`` axes a
    block (layouts in the module docstring).

    Every block is checked (finite, non-negative) before it is used.
    """
    src = repr(str(path))
    if kind == "shard":
        yield from _shard_blocks(path, batch)
        return
    if ndim == 3 and len(shape) == 4:
        yield from _volume_stack(path, batch, name)
        return
    n = int(read_cxi_meta(path)["n_frames"])
    per = 1 if ndim == 2 else n  # frames per pattern: a 3D pattern is the frame stack
    for s in range(0, n, batch * per):
        rows = slice(s, min(n, s + batch * per))
        d = read_cxi(path, indices=rows, truth=False, check=False, signals=False)
        if per > 1 and d.modality is not None and d.attrs.get("fft_ndim") != 3:
            raise DataError(
                f"{src}: its frames are separate 2D patterns ({d.modality} data, no attribute "
                f"fft_ndim = 3), not one 3D pattern for the {ndim}D model"
            )
        counts = np.asarray(d.data, dtype=np.float32)
        check_block(counts, src, name, s, nonnegative=True, unit="frame")
        yield n // per, {"input": _amplitudes(counts, d.centred, ndim)}


def infer_memory(model, shape: tuple, batch: int) -> dict:
    """Estimated peak bytes of inference of ``batch`` patterns of a stack ``shape``
    (patterns, *pattern), by part (memory guard); ``model``: an
    :class:`~xrayflow.networks.EncoderDecoder` or a network with the same attributes
    (``output_numel``: elements of one head's output, default ``output_size ** ndim``)."""
    pattern = 4.0 * float(np.prod(shape[1:], dtype=np.float64))
    b = max(1, min(int(batch), int(shape[0])))
    per_head = getattr(model, "output_numel", float(model.output_size) ** model.ndim)
    out = 4.0 * float(per_head) * len(model.heads)
    act = model.activation_bytes(training=False)
    n_par = count_parameters(model)
    return {
        f"model ({n_par:,} parameters)": 4.0 * n_par,
        f"a batch of {b} patterns (input and copies)": 3 * b * pattern,
        f"activations of a batch of {b}": float(b) * act,
        f"predictions of a batch of {b}": 2 * b * out,
    }


def infer(
    model_path,
    data_path,
    out_path,
    batch: int = 64,
    device: str = "auto",
    log=print,
    max_memory_gb: float | None = None,
) -> dict:
    """Run the model in ``model_path`` on ``data_path``; write predictions to ``out_path``.

    Returns a summary dict with ``n_patterns``, ``time_per_pattern_s``, ``total_time_s``.
    """
    dev = torch.device(accelerator(device, "infer.device"))
    data_path, out_path = Path(data_path), Path(out_path)
    if not data_path.is_file():
        raise DataError(f"{str(data_path)!r}: input file does not exist")
    model, config, prov, meta = load_model(model_path, dev, build=network_of)
    modality, hooks = training_hooks(
        str(meta.get("data_kind") or config["network"]["kind"]), "model file: data_kind"
    )
    ndim = model.ndim
    in_size = int(meta["input_size"])
    views = meta.get("views") or {}
    kind, name, shape = _input_kind(data_path)
    if len(shape) < ndim or 0 in shape:
        raise DataError(f"{str(data_path)!r}: dataset {name!r} {shape} is not a stack of patterns")
    if kind == "cxi" and hasattr(hooks, "read_inputs"):
        blocks = hooks.read_inputs(data_path, batch, meta)
    else:
        blocks = _blocks(data_path, batch, kind, name, shape, ndim)
    stack = (int(np.prod(shape[:-ndim])), *shape[-ndim:])  # (patterns, *pattern)
    parts = infer_memory(model, stack, batch)
    check_memory(parts, "train --infer", max_memory_gb, "infer.max_memory_gb")
    t_net = 0.0
    t0 = time.perf_counter()
    n_done = 0
    fitted: dict = {}  # what fit_input_size did (root attributes)
    with atomic_path(out_path) as tmp, h5py.File(tmp, "w") as fo:
        dsets = None
        for n, block in blocks:
            x = block["input"]
            if x.shape[1:] != (in_size,) * ndim:
                if not hasattr(hooks, "fit_input_size"):
                    raise DataError(
                        f"{str(data_path)!r}: patterns {x.shape[1:]} do not match the model "
                        f"input size {in_size} (crop or bin them beforehand)"
                    )
                x, attrs = hooks.fit_input_size(x, in_size)
                block = {**block, "input": x}
                if not fitted:
                    fitted = attrs
                    log(f"{data_path}: {attrs['resampled']}")
            ts = time.perf_counter()
            with torch.inference_mode():
                tensors = {k: torch.from_numpy(v).to(dev) for k, v in block.items()}
                out = forward(model, tensors, views)
                if hasattr(hooks, "infer_outputs"):
                    res = hooks.infer_outputs(out, meta)
                else:
                    res = {h: out[h].float().cpu().numpy() for h in model.heads}
            t_net += time.perf_counter() - ts
            if dsets is None:
                dsets = {
                    h: fo.create_dataset(
                        h, (n, *r.shape[1:]), "float32", chunks=(min(batch, n), *r.shape[1:])
                    )
                    for h, r in res.items()
                }
                consts = hooks.infer_constants(meta) if hasattr(hooks, "infer_constants") else {}
                for k, v in consts.items():
                    fo.create_dataset(k, data=v)
            for h, r in res.items():
                dsets[h][n_done : n_done + len(x)] = r
            n_done += len(x)
        if dsets is None:
            raise DataError(f"{str(data_path)!r}: no patterns")
        summary = {
            "n_patterns": n_done,
            **fitted,
            "time_per_pattern_s": t_net / n_done,
            "total_time_s": time.perf_counter() - t0,
            "device": str(dev),
            "modality": modality,
            "model": str(model_path),
            "input": str(data_path),
        }
        for k, v in summary.items():
            fo.attrs[k] = v
        fo.attrs["config"] = json.dumps(config)
        fo.attrs["provenance"] = json.dumps(provenance({"infer": summary}, None), default=str)
        fo.attrs["model_provenance"] = json.dumps(prov, default=str)
    log(
        f"inferred {n_done} patterns: {summary['time_per_pattern_s'] * 1e3:.3f} ms/pattern "
        f"on {dev} ({1.0 / max(summary['time_per_pattern_s'], 1e-12):.0f} patterns/s)"
    )
    return summary
