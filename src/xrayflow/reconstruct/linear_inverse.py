"""The reconstruct stage with the linear-inverse solver: images from the signals that a set
of illumination patterns produce (one count per pattern and signal line).

Reads the CXI file (:func:`read_measurements`: this rank's patterns, every pattern's
signals), builds the modality's model (``build_model``), fits it with
:mod:`xrayflow.solvers.linear_inverse` (``linear_inverse.method: ad``) or with the
self-supervised coordinate network :func:`xrayflow.networks.siren.fit_siren` (``siren``,
one rank; torch), and writes the result (rank 0, atomically).

Result HDF5 (``docs/data-format.md``): the model's datasets (its ``result_entries``: the
maps and their names, background amplitudes) and

==========================  =============================================================
``loss``                    float64 (iterations,) objective per iteration (step for siren)
``method``, ``algorithm``   ``ad`` | ``siren``; ``lbfgs`` | ``adam`` | ``cgls`` | ``siren``
``pixel_size``              float, object pixel (m)
``timings/total_s``         float, wall time of the fit (s)
``config``, ``provenance``  the full validated config; versions, seed, time, command
==========================  =============================================================

Root attributes: ``model`` (the modality), ``n_ranks``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xrayflow.backend import get_backend
from xrayflow.errors import ConfigError, DataError
from xrayflow.io.cxi import read_cxi, read_cxi_meta
from xrayflow.io.hdf5 import write_h5
from xrayflow.modalities import get_modality
from xrayflow.parallel import Comm, block_ranges, on_root
from xrayflow.provenance import provenance
from xrayflow.solvers.linear_inverse import algorithm, local_rows, solve

#: Where the patterns and their signals (``DiffractionData.signals``) live, for messages.
PATTERNS, SIGNALS = "entry_1/data_1/data", "entry_1/xrayflow_signals"


@dataclass(frozen=True)
class Measurements:
    """What the model of a linear-inverse modality is built from.

    ``frames`` (R, ny, nx) float32: this rank's patterns, the global ``rows`` (R,);
    ``signals``: the file's signals of every pattern (``counts`` (K, L), line names,
    kinds, elements, sensitivities, ``transmission`` ...); ``mean_total``: the mean over all
    patterns of a pattern's sum (photons); ``pixel_size``: object pixel (m); ``source``:
    the file's path (for messages)."""

    frames: np.ndarray
    rows: np.ndarray
    signals: dict
    mean_total: float
    pixel_size: float
    source: str


def _check_counts(counts, n_patterns: int, source: str) -> np.ndarray:
    """``counts`` (K, L) finite and >= 0 with one row per pattern, else DataError."""
    where = f"{source!r}: {SIGNALS}/counts"
    if counts is None:
        raise DataError(f"{where} is missing (the counts per pattern and line)")
    counts = np.asarray(counts)
    if counts.dtype.kind not in "iuf" or counts.ndim != 2 or counts.shape[0] != n_patterns:
        raise DataError(
            f"{where} has shape {counts.shape} ({counts.dtype}): expected real counts, one "
            f"row per pattern, ({n_patterns}, lines), as {PATTERNS} holds {n_patterns} patterns"
        )
    if not np.isfinite(counts).all():
        k, line = np.argwhere(~np.isfinite(counts))[0]
        raise DataError(f"{where} holds non-finite counts (NaN/inf), first at ({k}, {line})")
    if (counts < 0).any():
        k, line = np.argwhere(counts < 0)[0]
        raise DataError(
            f"{where} holds negative counts (min {counts.min():g}), first at ({k}, {line})"
        )
    return counts


def read_measurements(data_path, block_rows: int, comm: Comm) -> Measurements:
    """This rank's patterns (those of its blocks of ``block_rows``) and every pattern's
    signals; DataError naming the file and dataset for a missing file, counts whose rows
    are not the patterns, non-finite or negative counts or patterns."""
    path = Path(data_path)
    if not path.is_file():
        raise DataError(f"{str(path)!r}: data file does not exist")
    meta = read_cxi_meta(path)
    n = meta["n_frames"]
    rows = local_rows(n, block_rows, comm)
    d = read_cxi(path, indices=rows, truth=False)
    counts = _check_counts(d.signals.get("counts"), n, str(path))
    blocks = block_ranges(n, block_rows)

    def block_total(k):
        b = blocks[k]
        return {"total": float(d.data[b.start - rows[0] : b.stop - rows[0]].sum(dtype=np.float64))}

    total = comm.block_sum(len(blocks), block_total)["total"]
    pixel = d.geometry.object_pixel
    return Measurements(
        frames=d.data,
        rows=rows,
        signals={**d.signals, "counts": counts},
        mean_total=total / n,
        pixel_size=float(pixel[0]) if pixel else float("nan"),
        source=str(path),
    )


def _siren(cfg, model) -> tuple[dict, np.ndarray]:
    """The coordinate network fitted to the model's measurements and prior (one rank):
    physical unknowns ``{maps, spill}`` and the objective per step."""
    from xrayflow.networks.siren import fit_siren  # torch: imported only for this method

    s = cfg["linear_inverse"]
    net = {**s["siren"], "loss": s["loss"], "prior_weight": s["gradient_prior"]["weight"]}
    inputs = model.network_inputs()
    background = inputs.pop("background")
    maps, history = fit_siren(
        **inputs, cfg=net, device=cfg["run"]["device"], seed=s["seed"], background=background
    )
    return {"maps": maps, "spill": history["spill"]}, history["loss"]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def reconstruct(cfg: dict, data_path, out_path, comm: Comm, log=None) -> str:
    """Fit the modality ``model.type`` to the CXI file ``data_path`` and write ``out_path``
    (layout in the module docstring). Collective over ``comm``; progress lines (every
    ``run.log_every`` iterations, rank 0) go to ``log`` (default: stderr). Returns a
    one-line summary."""
    settings = cfg["linear_inverse"]
    method = settings["method"]
    if method == "siren" and comm.size > 1:
        raise ConfigError(
            f"linear_inverse.method: siren fits one network on one rank; got {comm.size} "
            "ranks (run it without mpiexec, or use method: ad)"
        )
    kind = "siren" if method == "siren" else algorithm(settings)  # ConfigError before reading
    data = read_measurements(data_path, settings["block_rows"], comm)
    # L-BFGS-B's line search compares objective values: it runs in double precision
    precision = "double" if kind == "lbfgs" else cfg["run"]["precision"]
    backend = get_backend(cfg["run"]["device"], precision)
    model = get_modality(cfg["model"]["type"], "model.type").build_model(cfg, data, backend)
    t0 = time.perf_counter()
    if method == "siren":
        unknowns, loss = _siren(cfg, model)
    else:
        log = (log or _stderr) if comm.is_root else None
        res = solve(model, settings, comm, log, cfg["run"]["log_every"])
        unknowns, loss = model.physical(res.params), res.loss
    wall = time.perf_counter() - t0
    tree = {
        **model.result_entries(unknowns["maps"], unknowns["spill"]),
        "loss": np.asarray(loss, np.float64),
        "method": method,
        "algorithm": kind,
        "pixel_size": data.pixel_size,
        "timings": {"total_s": wall},
        "config": cfg,
        "provenance": provenance(cfg, settings["seed"], data=str(data_path)),
    }
    attrs = {"model": cfg["model"]["type"], "n_ranks": int(comm.size)}
    plot = {"signal": "/maps", "pixel_size": data.pixel_size, "title": "element maps (g/cm2)"}
    on_root(lambda: write_h5(out_path, tree, attrs=attrs, default_plot=plot), comm)
    return f"{kind}, {len(loss)} iterations, {wall:.1f} s"
