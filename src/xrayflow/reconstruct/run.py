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

The object datasets come from the model (``result_entries``): for a rotation-series model
(ptycho-tomography) ``object`` is absent and ``delta``, ``beta`` are the float32 (Z, Y, X)
volume (z along the beam at angle 0, rotation about y), with ``angles`` float64 (P,) rad per
frame and ``voxel_size`` (= ``pixel_size``).

Root attributes: ``model``, ``units``, ``n_slices``, ``slice_spacing``, ``wavelength``,
``energy_ev``, ``distance`` (sample-detector, m; NaN when unknown), near field
``propagation_distance`` (sample-plane distance of the first frame, m), ``iterations``,
``n_ranks`` (MPI processes), ``transport`` (how gradients travelled between them:
``serial``, ``mpi``, ``nccl``, ``cuda-aware-mpi``, ``host``),
``n_blocks`` (fixed blocks of frames, see ``run.block_frames``), ``object_mode``
(``replicated`` or ``distributed``: ``parallel.object``, see docs/scaling.md).

Under MPI every rank runs :func:`reconstruct` on its share of the frames; rank 0 writes the
output (and the checkpoints) atomically. With a distributed object every rank writes its
own checkpoint and its rows of the output, in turn (:mod:`xrayflow.io.slabs`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xrayflow.backend import uses_gpu
from xrayflow.errors import ConfigError, ResourceError
from xrayflow.io.cxi import read_cxi_meta
from xrayflow.io.fingerprint import file_fingerprint, run_fingerprint
from xrayflow.memory import check_memory
from xrayflow.modalities import get_modality
from xrayflow.modalities.transmission import slice_spacing
from xrayflow.optics.constants import xray_energy_problem
from xrayflow.parallel import Comm, get_comm
from xrayflow.provenance import provenance
from xrayflow.reconstruct.data import ReconData, load_data
from xrayflow.solvers.distributed_reconstructor import DistributedReconstructor
from xrayflow.solvers.gradient import Reconstructor, _config_core


def default_checkpoint_path(cfg, out_path) -> Path:
    p = cfg["run"]["checkpoint_path"]
    return Path(p) if p else Path(str(out_path) + ".ckpt.h5")


def check_config(cfg: dict) -> None:
    """Values the schema cannot express, refused before any data are read (ConfigError
    naming the key): a photon energy outside the X-ray range, a saturation threshold that
    masks every pixel."""
    e = cfg["geometry"]["energy_ev"]
    problem = xray_energy_problem(e) if e is not None else None
    if problem:
        raise ConfigError(f"geometry.energy_ev: {problem}")
    sat = cfg["data"]["mask_saturated_above"]
    if sat is not None and not (np.isfinite(sat) and sat > 0):
        raise ConfigError(
            f"data.mask_saturated_above: {sat!r} would mask every pixel (counts are >= 0); "
            "give the detector's saturation level in counts (> 0) or null"
        )


def memory_parts(cfg: dict, data: ReconData, rows_share: float = 1.0) -> dict:
    """Estimated peak allocations (bytes) of this rank's reconstruction, by name;
    ``rows_share``: the fraction of the object rows this rank holds (a distributed object,
    :func:`held_share`)."""
    m, o, r = cfg["model"], cfg["optimizer"], cfg["run"]
    double = r["precision"] == "double"
    creal, ccplx = (8, 16) if double else (4, 8)
    ny, nx = (int(v) for v in data.frame_shape)
    Ny, Nx = (int(v) for v in data.object_shape)
    S, M = int(m["n_slices"]), int(m["probe_modes"])
    # parameter + gradient + summed gradient, and the optimizer's state (Adam: 2 moments;
    # sgd with bb/backtracking: the previous iterate and gradient)
    copies = 3 + (2 if o["method"] == "adam" or o["step_rule"] != "fixed" else 0)
    object_memory = get_modality(m["type"], "model.type").object_memory
    if object_memory is not None:
        obj_name, obj = object_memory(cfg, data, creal, ccplx)
    elif m["object_param"] == "delta_beta":
        obj_name, obj = f"object delta+beta ({S}, {Ny}, {Nx})", 2 * S * Ny * Nx * creal
    else:
        obj_name, obj = f"object ({S}, {Ny}, {Nx}) complex", S * Ny * Nx * ccplx
    n_local = int(data.local.size)
    batch = max(1, min(int(o["batch_size"]), n_local or 1))
    held = "" if rows_share >= 1 else f", {rows_share:.1%} of its rows on this rank"
    return {
        f"{obj_name} x{copies} (parameter, gradients, optimizer state){held}": float(
            obj * copies * rows_share
        ),
        "illumination on the object grid": float(2 * Ny * Nx * creal * rows_share),
        f"probe ({M}, {ny}, {nx}) x{copies}": float(M * ny * nx * ccplx * copies),
        # per slice: incident and exit wave, far field, kept for the backward pass
        f"wavefields of a batch ({batch} frames x {M} modes x {S} slices)": float(
            4 * batch * M * (S + 1) * ny * nx * ccplx
        ),
        f"frames held by this rank ({n_local}, {ny}, {nx})": float(
            n_local * ny * nx * (creal + (8 if cfg["loss"]["type"] == "poisson" else 0))
        ),
    }


def check_frames_fit(cfg: dict, data_path, comm: Comm) -> None:
    """Before reading a CXI file: the frames this rank will hold (from the file's header:
    its share of the frames, as float32 counts and fit target) must fit in memory."""

    p = Path(data_path)
    if not p.is_file() or p.name.endswith((".npz", ".npz.bz2")) or cfg["data"]["format"] == "npz":
        return  # load_data names the problem; NumPy archives are read whole anyway
    n, ny, nx = read_cxi_meta(p)["shape"]
    n_local = -(-int(n) // comm.size)
    check_memory(
        {
            f"frames held by this rank ({n_local}, {ny}, {nx}), counts and target": 8.0
            * n_local
            * ny
            * nx
        },
        "reconstruct (per rank, reading the data)",
        limit_gb=cfg["run"]["max_memory_gb"],
        key="run.max_memory_gb",
    )


def held_share(data: ReconData, size: int) -> float:
    """Fraction of the object rows the largest rank holds when the object is distributed
    over ``size`` ranks: its slab plus the halo of the window height."""
    rows = int(data.object_shape[0])
    return min(1.0, (-(-rows // size) + int(data.frame_shape[0]) - 1) / rows)


def object_mode(cfg: dict, data: ReconData, comm: Comm) -> str:
    """``parallel.object``, with ``auto`` resolved: ``distributed`` when the run has several
    ranks, the modality's frames tile a scanned object and the replicated object's memory
    estimate does not fit; else ``replicated``."""
    mode = cfg["parallel"]["object"]
    if mode != "auto":
        return mode
    if comm.size == 1 or not get_modality(cfg["model"]["type"], "model.type").scanned:
        return "replicated"
    try:
        check_reconstruct_memory(cfg, data)
    except ResourceError:
        return "distributed"
    return "replicated"


def check_reconstruct_memory(cfg: dict, data: ReconData, rows_share: float = 1.0) -> float:
    """Refuse (ResourceError) a run whose estimated peak memory does not fit (on a GPU run
    also the device's free memory)."""

    return check_memory(
        memory_parts(cfg, data, rows_share),
        "reconstruct (per rank)",
        limit_gb=cfg["run"]["max_memory_gb"],
        key="run.max_memory_gb",
        gpu=uses_gpu(cfg["run"]["device"]),
    )


def input_fingerprint(cfg: dict, data_path) -> dict:
    """What determines the result: the config without ``run.*`` and
    ``optimizer.iterations``, and the data file's content (see
    :mod:`xrayflow.io.fingerprint`). ``fingerprint`` is their joint digest."""

    data_fp = file_fingerprint(data_path)  # the file is read once
    return {
        "fingerprint": run_fingerprint({"config": _config_core(cfg), "data": data_fp}, {}),
        "data_fingerprint": data_fp,
    }


def result_tree(cfg, data, rec, res) -> dict:
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
    entries = rec.model.result_entries(res.params, data)
    tree.update(entries)
    attrs = {
        "model": cfg["model"]["type"],
        "units": data.units,
        "n_slices": int(cfg["model"]["n_slices"]),
        "slice_spacing": float(slice_spacing(cfg, data)),
        "wavelength": float(data.wavelength) if data.wavelength else float("nan"),
        "energy_ev": float(data.energy_ev) if data.energy_ev else float("nan"),
        # sample-detector distance (m); near field also the sample-plane propagation
        # distance of the first frame (what xrayflow export writes for other codes)
        "distance": float(data.distance) if data.distance else float("nan"),
        "iterations": its,
        "positions_units": units,
        "n_ranks": int(rec.comm.size),
        "transport": rec.transport,
        "n_blocks": len(data.chunk_starts),
        "object_mode": rec.object_mode,
    }
    if data.distances is not None and len(data.distances):
        attrs["propagation_distance"] = float(data.distances[0])
    # arrays of two or more dimensions among the object datasets are on the object rows
    row_keys = [k for k, v in entries.items() if np.ndim(v) >= 2]
    return tree, attrs, row_keys


def default_plot(cfg: dict, data, tree: dict) -> dict:
    """The result's NeXus default plot (:func:`xrayflow.io.nexus.write_default_plot`): the
    complex object, else the δ volume, on the object pixel (m; pixel units: none)."""
    signal = "object" if "object" in tree else "delta"
    return {
        "signal": "/" + signal,
        "pixel_size": None if data.units == "pixels" else float(data.pixel_size),
        "title": f"{cfg['model']['type']} {signal}",
    }


def reconstruct(
    cfg: dict, data_path, out_path, resume: bool = False, log=None, comm: Comm | None = None
):
    """Run the reconstruction; write ``out_path`` unless stopped early (``run.stop_after``).

    Collective over ``comm`` (default :func:`xrayflow.parallel.get_comm`): call it on every
    rank. Returns the :class:`~xrayflow.solvers.gradient.Result`.
    """

    comm = comm or get_comm()
    check_config(cfg)
    check_frames_fit(cfg, data_path, comm)
    data = load_data(data_path, cfg, comm)
    mode = object_mode(cfg, data, comm)
    distributed = mode == "distributed"
    check_reconstruct_memory(cfg, data, held_share(data, comm.size) if distributed else 1.0)
    ck = default_checkpoint_path(cfg, out_path)
    fp = input_fingerprint(cfg, data_path) if comm.is_root else None
    solver = DistributedReconstructor if distributed else Reconstructor
    rec = solver(cfg, data, checkpoint_path=ck, log=log, comm=comm, fingerprint=comm.bcast(fp))
    rec.log(
        f"reconstruct: {comm.size} rank(s), object {mode}, transport {rec.transport}, "
        f"{len(data.chunk_starts)} blocks of frames (run.block_frames: "
        f"{cfg['run']['block_frames']}), "
        f"rank 0 holds {data.local.size} of {data.n_positions} frames"
    )
    res = rec.run(resume=resume)
    if res.stopped:
        return res
    tree, attrs, row_keys = result_tree(cfg, data, rec, res)
    rec.write_result(out_path, tree, attrs, default_plot(cfg, data, tree), row_keys)
    rec.discard_checkpoint()
    return res
