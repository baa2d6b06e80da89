"""``xrayflow reconstruct --config RECON.yaml --data DATA --out RECON.h5 [--resume]``.

Dispatches on the modality's solver (:attr:`xrayflow.modalities.Modality.solver`): the
gradient solver (:mod:`.run`), or the one-shot stages :mod:`.phase_retrieval` and
:mod:`.linear_inverse`. Runs on one process, or on N under ``mpiexec -n N`` / ``srun``
(frames split over the ranks, see :mod:`xrayflow.solvers.gradient` and
:mod:`xrayflow.solvers.linear_inverse`). The whole run is wrapped in
:func:`xrayflow.parallel.abort_on_error`: an error on any rank prints ``rank k: message``
and ends every rank (exit 2 for input errors, 1 otherwise) instead of leaving them waiting.
"""

from __future__ import annotations

import sys

from xrayflow.config import load_config
from xrayflow.errors import ConfigError, OutputError
from xrayflow.io.checkpoint import is_checkpoint
from xrayflow.io.outputs import check_outputs
from xrayflow.modalities import get_modality, stage_schema
from xrayflow.parallel import abort_on_error, get_comm
from xrayflow.reconstruct import linear_inverse, phase_retrieval
from xrayflow.reconstruct.run import default_checkpoint_path, reconstruct

#: The stages of the solvers other than ``gradient``: ``(cfg, data, out, comm) -> summary``.
ONE_SHOT = {
    "phase_retrieval": phase_retrieval.reconstruct,
    "linear_inverse": linear_inverse.reconstruct,
}


def add_arguments(parser) -> None:
    parser.add_argument("--config", "-c", metavar="FILE", help="reconstruct config (YAML)")
    parser.add_argument(
        "--data",
        "-d",
        metavar="FILE",
        required=True,
        help="diffraction data: CXI/HDF5, or .npz / .npz.bz2 (pixel units); for the "
        "phase-retrieval models one 3D volume: .npy, .npz, .tif, .h5 or .cxi (see data.format)",
    )
    parser.add_argument(
        "--out",
        "-o",
        metavar="FILE",
        required=True,
        help="reconstruction HDF5 to write (atomically)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the checkpoint (<out>.ckpt.h5 or run.checkpoint_path) if it exists",
    )


def run(args) -> int:
    with abort_on_error(get_comm()) as comm:
        return _run(args, comm)


def _run(args, comm) -> int:
    if args.out is None:
        raise ConfigError("reconstruct: --out is required")
    overrides = getattr(args, "overrides", None) or []
    cfg = load_config(args.config, stage_schema("reconstruct"), overrides, "reconstruct")
    solver = get_modality(cfg["model"]["type"], "model.type").solver
    _check_before_work(cfg, args, comm, checkpoint=solver == "gradient")
    if solver in ONE_SHOT:
        summary = ONE_SHOT[solver](cfg, args.data, args.out, comm)
        if comm.is_root:
            print(f"reconstruct: wrote {args.out} ({summary})", file=sys.stderr)
        return 0
    res = reconstruct(cfg, args.data, args.out, resume=bool(args.resume), comm=comm)
    if not comm.is_root:
        return 0
    if res.stopped:
        print(
            f"reconstruct: stopped after iteration {res.iteration} (run.stop_after); "
            "checkpoint kept, continue with --resume",
            file=sys.stderr,
        )
        return 0
    loss = res.history["loss"][-1] if res.history["loss"] else float("nan")
    print(
        f"reconstruct: wrote {args.out} ({res.iteration} iterations, final loss "
        f"{loss:.6e}, {res.timings['wall_s']:.1f} s)",
        file=sys.stderr,
    )
    return 0


def _check_before_work(cfg: dict, args, comm, checkpoint: bool) -> None:
    """Refuse, before reading any data, outputs that would destroy an input or cannot be
    written (:func:`xrayflow.io.outputs.check_outputs`, on rank 0); ``checkpoint``: the run
    writes a checkpoint beside ``--out``."""
    if not comm.is_root:
        return
    outputs = {"--out": args.out}
    if checkpoint and str(args.out).strip():
        label = "run.checkpoint_path" if cfg["run"]["checkpoint_path"] else "checkpoint"
        outputs[label] = default_checkpoint_path(cfg, args.out)
    if cfg.get("cdi", {}).get("vtk") and str(args.out).strip():
        outputs["cdi.vtk"] = phase_retrieval.vtk_path(args.out)
    inputs = {
        "--data": args.data,
        "--config": args.config,
        "model.network": cfg["model"]["network"],
        "data.mask": cfg["data"]["mask"],
    }
    checked = check_outputs(outputs, inputs)
    _check_checkpoint_path(checked)


def _check_checkpoint_path(checked: dict) -> None:
    """The run overwrites and finally removes its checkpoint: refuse a path that holds some
    other file (a result, a data file) instead of destroying it."""

    for label, path in checked.items():
        if label != "--out" and path.is_file() and not is_checkpoint(path):
            raise OutputError(
                f"{label} {str(path)!r} exists and is not an xrayflow reconstruction "
                "checkpoint; refusing to overwrite it (remove it or choose another path)"
            )
