"""Reconstruct stage entry point: config + data file -> reconstruction HDF5.

Output layout (``write_h5``, atomic; see :func:`result_tree`):

==========================  =============================================================
``object``                  complex64 (S, Ny, Nx) transmission per slice
``delta``, ``beta``         float32 (S, Ny, Nx), only with ``model.object_param: delta_beta``
``probe``                   complex64 (M, n, n) probe modes (window pixels = object pixels)
``positions``               float64 (P, 2) probe centres relative to the object centre (y, x),
                            in m (``@units``; "px" when ``geometry.units: pixels``)
``positions_px``            float64 (P, 2) top-left window corners on the object grid, px
``initial_positions_px``    float64 (P, 2) the same before position correction
``indices``                 int64 (P,) frames of the data file that were used
``loss``                    float64 (iterations,) data term per good pixel and pattern
``timings/iteration_s``     float64 (iterations,) wall time of each iteration
``timings/total_s``         float, ``timings/iterations_per_s`` float
``pixel_size``              float, object pixel (m, or 1.0 in pixel units)
``config``                  the full validated config (YAML string)
``provenance``              versions, git commit, time, command line, seed
==========================  =============================================================

With ``model.type: ptychotomo`` ``object`` is absent and ``delta``, ``beta`` are the
float32 (Z, Y, X) volume (z along the beam at angle 0, rotation about y), with ``angles``
float64 (P,) rad per frame and ``voxel_size`` (= ``pixel_size``).

Root attributes: ``model``, ``units``, ``n_slices``, ``slice_spacing``, ``wavelength``,
``energy_ev``, ``iterations``, ``n_ranks`` (MPI processes), ``transport`` (how gradients
travelled between them: ``serial``, ``mpi``, ``nccl``, ``cuda-aware-mpi``, ``host``),
``n_blocks`` (fixed blocks of frames, see ``run.block_frames``).

Under MPI every rank runs :func:`reconstruct` on its share of the frames; rank 0 writes the
output (and the checkpoints) atomically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xrayflow.parallel import Comm, get_comm, write_on_root
from xrayflow.reconstruct.data import load_data
from xrayflow.reconstruct.engine import Reconstructor, slice_spacing


def default_checkpoint_path(cfg, out_path) -> Path:
    p = cfg["run"]["checkpoint_path"]
    return Path(p) if p else Path(str(out_path) + ".ckpt.h5")


def transmission_from(params, model) -> np.ndarray:
    if "object" in params:
        return np.asarray(params["object"])
    t = np.exp(-1j * model.k_dz * (params["delta"] - 1j * params["beta"]))
    return t.astype(np.complex64)


def result_tree(cfg, data, rec, res) -> dict:
    from xrayflow.provenance import provenance  # noqa: PLC0415

    # inverse of scans.positions_to_pixels: corner = N//2 - n//2 + position / pixel
    offset = np.asarray(data.object_shape) // 2 - np.asarray(data.frame_shape) // 2
    pix = data.pixel_size
    pos_px = res.positions
    pos = (pos_px - offset) * pix
    units = "px" if data.units == "pixels" else "m"
    tot = float(np.sum(res.history["time"]))
    its = len(res.history["loss"])
    tree = {
        "probe": res.params["probe"],
        "positions": pos,
        "positions_px": pos_px,
        "initial_positions_px": rec.initial_positions,
        "indices": np.asarray(data.indices, np.int64),
        "loss": np.asarray(res.history["loss"], np.float64),
        "timings": {
            "iteration_s": np.asarray(res.history["time"], np.float64),
            "total_s": tot,
            "iterations_per_s": its / tot if tot > 0 else 0.0,
        },
        "pixel_size": float(pix),
        "config": cfg,
        "provenance": provenance(cfg, cfg["optimizer"]["seed"]),
    }
    if rec.is_tomo:
        tree["angles"] = np.asarray(data.angles, np.float64)
        tree["voxel_size"] = float(pix)
    else:
        tree["object"] = transmission_from(res.params, rec.model)
    if "delta" in res.params:
        tree["delta"] = res.params["delta"]
        tree["beta"] = res.params["beta"]
    attrs = {
        "model": cfg["model"]["type"],
        "units": data.units,
        "n_slices": int(cfg["model"]["n_slices"]),
        "slice_spacing": float(slice_spacing(cfg, data)),
        "wavelength": float(data.wavelength) if data.wavelength else float("nan"),
        "energy_ev": float(data.energy_ev) if data.energy_ev else float("nan"),
        "iterations": its,
        "positions_units": units,
        "n_ranks": int(rec.comm.size),
        "transport": rec.transport,
        "n_blocks": len(data.chunk_starts),
    }
    return tree, attrs


def reconstruct(
    cfg: dict, data_path, out_path, resume: bool = False, log=None, comm: Comm | None = None
):
    """Run the reconstruction; write ``out_path`` unless stopped early (``run.stop_after``).

    Collective over ``comm`` (default :func:`xrayflow.parallel.get_comm`): call it on every
    rank. Returns the :class:`~xrayflow.reconstruct.engine.Result`.
    """
    from xrayflow.io.hdf5 import write_h5  # noqa: PLC0415

    comm = comm or get_comm()
    data = load_data(data_path, cfg, comm)
    ck = default_checkpoint_path(cfg, out_path)
    rec = Reconstructor(cfg, data, checkpoint_path=ck, log=log, comm=comm)
    rec.log(
        f"reconstruct: {comm.size} rank(s), transport {rec.transport}, "
        f"{len(data.chunk_starts)} blocks of frames (run.block_frames: "
        f"{cfg['run']['block_frames']}), "
        f"rank 0 holds {data.local.size} of {data.n_positions} frames"
    )
    res = rec.run(resume=resume)
    if res.stopped:
        return res
    tree, attrs = result_tree(cfg, data, rec, res)
    write_on_root(out_path, lambda tmp: write_h5(tmp, tree, attrs=attrs), comm)
    return res
