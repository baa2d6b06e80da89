"""Apply a trained model to new diffraction data: HDF5 in, HDF5 out, time per pattern.

Inputs accepted:

* a training shard (dataset ``inputs``: sqrt(counts), centred);
* a CXI file (``xrayflow.io.cxi``): counts are read in blocks of ``batch`` frames with
  ``read_cxi(indices=...)``, converted to sqrt(counts) and centred if stored uncentred.
  The pattern size must equal the model's input size (crop/bin beforehand).

Output (written atomically): ``amplitude`` and ``phase`` (2D models) or ``support`` and
``phase`` (3D models), float32, chunked by batch; root attrs ``model`` (path),
``n_patterns``, ``time_per_pattern_s`` (network forward incl. host↔device copies, excluding
file I/O), ``total_time_s``, ``device``, ``config`` and ``provenance`` (JSON strings).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from xrayflow.errors import DataError
from xrayflow.io.atomic import atomic_path
from xrayflow.train.loop import _provenance, load_model

__all__ = ["infer"]


def _blocks(path: Path, batch: int):
    """Yield (n_total, block of sqrt-count patterns, centred) blocks from a shard or CXI file."""
    with h5py.File(path, "r") as f:
        is_shard = "inputs" in f
    if is_shard:
        with h5py.File(path, "r") as f:
            ds = f["inputs"]
            n = ds.shape[0]
            for s in range(0, n, batch):
                yield n, np.asarray(ds[s : s + batch], dtype=np.float32)
        return
    from xrayflow.io.cxi import read_cxi, read_cxi_meta  # noqa: PLC0415

    meta = read_cxi_meta(path)
    n = int(meta["n_frames"])
    for s in range(0, n, batch):
        d = read_cxi(path, indices=slice(s, min(n, s + batch)), truth=False)
        a = np.sqrt(np.clip(np.asarray(d.data, dtype=np.float32), 0, None))
        if not d.centred:
            a = np.fft.fftshift(a, axes=(-2, -1))
        yield n, a


def infer(
    model_path, data_path, out_path, batch: int = 64, device: str = "auto", log=print
) -> dict:
    """Run the model in ``model_path`` on ``data_path``; write predictions to ``out_path``.

    Returns a summary dict with ``n_patterns``, ``time_per_pattern_s``, ``total_time_s``.
    """
    dev = torch.device(
        "cuda" if device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
    )
    model, config, prov, meta = load_model(model_path, dev)
    data_path, out_path = Path(data_path), Path(out_path)
    if not data_path.is_file():
        raise DataError(f"{str(data_path)!r}: input file does not exist")
    heads = list(model.heads)
    in_size = int(meta["input_size"])
    t_net = 0.0
    t0 = time.perf_counter()
    n_done = 0
    with atomic_path(out_path) as tmp, h5py.File(tmp, "w") as fo:
        dsets = None
        for n, block in _blocks(data_path, batch):
            if block.shape[-1] != in_size or block.shape[-2] != in_size:
                raise DataError(
                    f"{str(data_path)!r}: patterns {block.shape[1:]} do not match the model "
                    f"input size {in_size}"
                )
            if dsets is None:
                m = int(meta["output_size"])
                shp = (m,) * (block.ndim - 1)
                dsets = {
                    h: fo.create_dataset(h, (n, *shp), "float32", chunks=(min(batch, n), *shp))
                    for h in heads
                }
            ts = time.perf_counter()
            with torch.inference_mode():
                out = model(torch.from_numpy(block).to(dev))
                res = {h: out[h].float().cpu().numpy() for h in heads}
            t_net += time.perf_counter() - ts
            for h in heads:
                dsets[h][n_done : n_done + len(block)] = res[h]
            n_done += len(block)
        if dsets is None:
            raise DataError(f"{str(data_path)!r}: no patterns")
        summary = {
            "n_patterns": n_done,
            "time_per_pattern_s": t_net / n_done,
            "total_time_s": time.perf_counter() - t0,
            "device": str(dev),
            "model": str(model_path),
            "input": str(data_path),
        }
        for k, v in summary.items():
            fo.attrs[k] = v
        fo.attrs["config"] = json.dumps(config)
        fo.attrs["provenance"] = json.dumps(_provenance({"infer": summary}, None), default=str)
        fo.attrs["model_provenance"] = json.dumps(prov, default=str)
    log(
        f"inferred {n_done} patterns: {summary['time_per_pattern_s'] * 1e3:.3f} ms/pattern "
        f"on {dev} ({1.0 / max(summary['time_per_pattern_s'], 1e-12):.0f} patterns/s)"
    )
    return summary
