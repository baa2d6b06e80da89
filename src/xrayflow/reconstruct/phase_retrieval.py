"""The reconstruct stage with the phase-retrieval solver: one 3D pattern, one rank.

Reads the 3D volume of a CXI file (:func:`read_volume`), builds the modality's model
(``build_model``), runs :mod:`xrayflow.solvers.phase_retrieval` from random starts (seed
``optimizer.seed``) or from the prediction of the network ``model.network``, with the
settings of the ``cdi`` section, and writes the result (:func:`reconstruct_file`; layout in
docs/data-format.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xrayflow.backend import get_backend
from xrayflow.errors import ConfigError, DataError
from xrayflow.io.cxi import read_cxi
from xrayflow.io.hdf5 import write_h5
from xrayflow.modalities import get_modality
from xrayflow.provenance import provenance
from xrayflow.solvers.phase_retrieval import refine, refine_from_network


@dataclass(frozen=True)
class Volume:
    """A measured 3D pattern: ``counts`` (Z, Y, X) float32 photons, ``mask`` (bool, same
    shape; True = good voxel) or None, ``centred`` (zero frequency in the middle) and the
    data file's root ``attrs``."""

    counts: np.ndarray
    mask: np.ndarray | None
    centred: bool
    attrs: dict = field(default_factory=dict)


def read_volume(data_path) -> Volume:
    """The 3D volume of a CXI file (``attrs fft_ndim = 3``, as the simulate stage writes a 3D
    pattern); DataError for a missing file, data that are not such a volume or hold no
    counts."""
    path = Path(data_path)
    if not path.is_file():
        raise DataError(f"{str(path)!r}: data file does not exist")
    d = read_cxi(path, truth=False)
    fft_ndim = d.attrs.get("fft_ndim", 2)
    if fft_ndim != 3 or d.data.ndim != 3 or min(d.data.shape) < 2:
        raise DataError(
            f"{str(path)!r}: not a 3D Bragg CDI volume (data shape {d.data.shape}, attrs "
            f"fft_ndim {fft_ndim}; expected fft_ndim 3, a 3D pattern from the simulate stage)"
        )
    mask = None if d.mask is None else np.broadcast_to(np.asarray(d.mask, bool), d.data.shape)
    if not (d.data if mask is None else d.data[mask]).any():
        raise DataError(f"{str(path)!r}: the 3D pattern is zero everywhere (no counts to fit)")
    return Volume(d.data, mask, bool(d.centred), dict(d.attrs))


def reconstruct_file(cfg: dict, data_path, out_path) -> dict:
    """Phase retrieval of the CXI file ``data_path`` into the HDF5 ``out_path`` (atomic).

    ``cfg`` is the validated reconstruct config: ``model.type`` (the modality),
    ``model.network`` (a trained network to start from; null: random starts from
    ``optimizer.seed``), ``run.device``/``run.precision`` and the solver settings ``cdi``.
    Returns the solver's result dict (:func:`xrayflow.solvers.phase_retrieval.refine`).
    """
    volume = read_volume(data_path)
    backend = get_backend(cfg["run"]["device"], cfg["run"]["precision"])
    model = get_modality(cfg["model"]["type"], "model.type").build_model(cfg, volume, backend)
    seed, network = int(cfg["optimizer"]["seed"]), cfg["model"]["network"]
    if network is None:
        res = refine(model, None, None, cfg["cdi"], np.random.default_rng(seed))
    else:
        res = refine_from_network(model, network, cfg["cdi"])
    full = {**res["config"], "seed": seed}
    tree = {
        **model.result_entries(res, volume),
        "loss": res["loss"],
        "r_factor": float(res["r_factor"]),
        "iterations": int(res["iterations"]),
        "hio_iterations": int(res["hio_iterations"]),
        "starts": int(res["starts"]),
        "timings": {"total_s": res["time_s"], "network_s": res.get("network_time_s", 0.0)},
        "start": "random" if network is None else "network",
        "model": None if network is None else str(network),
        "network": None
        if network is None
        else {"support": res["network_support"], "phase": res["network_phase"]},
        "config": full,
        "provenance": provenance(full, seed, data=str(data_path)),
    }
    write_h5(out_path, tree, attrs={"model": cfg["model"]["type"], "centred": True})
    return res


def reconstruct(cfg: dict, data_path, out_path, comm) -> str:
    """:func:`reconstruct_file` on one rank; returns a one-line summary."""
    kind = cfg["model"]["type"]
    if comm.size > 1:
        raise ConfigError(
            f"model.type: {kind} reconstructs one 3D pattern on one rank; got {comm.size} "
            "ranks (run it without mpiexec)"
        )
    res = reconstruct_file(cfg, data_path, out_path)
    return f"{kind}, {res['iterations']} iterations, R {res['r_factor']:.4f}, {res['time_s']:.1f} s"
