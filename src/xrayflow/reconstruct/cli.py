"""``xrayflow reconstruct --config RECON.yaml --data DATA --out RECON.h5 [--resume]``.

Runs on one process, or on N under ``mpiexec -n N`` / ``srun`` (frames split over the
ranks, see :mod:`xrayflow.reconstruct.engine`). The whole run is wrapped in
:func:`xrayflow.parallel.abort_on_error`: an error on any rank prints ``rank k: message``
and ends every rank (exit 2 for input errors, 1 otherwise) instead of leaving them waiting.
"""

from __future__ import annotations

import sys

from xrayflow.errors import ConfigError


def add_arguments(parser) -> None:
    parser.add_argument("--config", "-c", metavar="FILE", help="reconstruct config (YAML)")
    parser.add_argument(
        "--data",
        "-d",
        metavar="FILE",
        required=True,
        help="diffraction data: CXI/HDF5, or .npz / .npz.bz2 (pixel units)",
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
    from xrayflow.parallel import abort_on_error, get_comm  # noqa: PLC0415

    with abort_on_error(get_comm()) as comm:
        return _run(args, comm)


def _run(args, comm) -> int:
    from xrayflow.config import load_config  # noqa: PLC0415
    from xrayflow.reconstruct.run import reconstruct  # noqa: PLC0415

    if args.out is None:
        raise ConfigError("reconstruct: --out is required")
    cfg = load_config(args.config, "reconstruct", getattr(args, "overrides", []) or [])
    _check_before_work(cfg, args, comm)
    if cfg["model"]["type"] == "bragg_cdi":
        return _run_bragg_cdi(cfg, args, comm)
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


def _check_before_work(cfg: dict, args, comm) -> None:
    """Refuse, before reading any data, outputs that would destroy an input or cannot be
    written (:func:`xrayflow.io.outputs.check_outputs`, on rank 0)."""
    from xrayflow.io.outputs import check_outputs  # noqa: PLC0415
    from xrayflow.reconstruct.run import default_checkpoint_path  # noqa: PLC0415

    if not comm.is_root:
        return
    outputs = {"--out": args.out}
    if cfg["model"]["type"] != "bragg_cdi" and str(args.out).strip():
        label = "run.checkpoint_path" if cfg["run"]["checkpoint_path"] else "checkpoint"
        outputs[label] = default_checkpoint_path(cfg, args.out)
    checked = check_outputs(
        outputs,
        {"--data": args.data, "--config": args.config, "model.network": cfg["model"]["network"]},
    )
    _check_checkpoint_path(checked)


def _check_checkpoint_path(checked: dict) -> None:
    """The run overwrites and finally removes its checkpoint: refuse a path that holds some
    other file (a result, a data file) instead of destroying it."""
    from xrayflow.errors import OutputError  # noqa: PLC0415
    from xrayflow.reconstruct.checkpoint import is_checkpoint  # noqa: PLC0415

    for label, path in checked.items():
        if label != "--out" and path.is_file() and not is_checkpoint(path):
            raise OutputError(
                f"{label} {str(path)!r} exists and is not an xrayflow reconstruction "
                "checkpoint; refusing to overwrite it (remove it or choose another path)"
            )


def _run_bragg_cdi(cfg: dict, args, comm) -> int:
    """One 3D Bragg CDI pattern: HIO warm-up + AD refinement (:mod:`xrayflow.cdi`), one rank."""
    from xrayflow import cdi  # noqa: PLC0415

    if comm.size > 1:
        raise ConfigError(
            f"model.type: bragg_cdi reconstructs one 3D pattern on one rank; got {comm.size} "
            "ranks (run it without mpiexec)"
        )
    res = cdi.reconstruct_file(
        {**cfg["cdi"], "seed": cfg["optimizer"]["seed"]},
        args.data,
        args.out,
        model_path=cfg["model"]["network"],
    )
    print(
        f"reconstruct: wrote {args.out} (bragg_cdi, {res['iterations']} iterations, "
        f"R {res['r_factor']:.4f}, {res['time_s']:.1f} s)",
        file=sys.stderr,
    )
    return 0
