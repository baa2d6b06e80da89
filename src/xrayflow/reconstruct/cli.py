"""``xrayflow reconstruct --config RECON.yaml --data DATA --out RECON.h5 [--resume]``."""

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
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value; repeatable",
    )


def run(args) -> int:
    from xrayflow.config import load_config  # noqa: PLC0415
    from xrayflow.reconstruct.run import reconstruct  # noqa: PLC0415

    if args.out is None:
        raise ConfigError("reconstruct: --out is required")
    cfg = load_config(args.config, "reconstruct", getattr(args, "overrides", []) or [])
    res = reconstruct(cfg, args.data, args.out, resume=bool(args.resume))
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
