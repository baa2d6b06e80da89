"""simulate X-ray experiments (ptychography, multislice, tomography, holography, Bragg CDI)
from a YAML config into a CXI file.

Example:
    xrayflow simulate --config config/simulate/ptycho2d.yaml --out data/ptycho2d.cxi \\
        --set seed=3 --set noise.photons_per_probe=1e7
"""

from __future__ import annotations

import argparse

from xrayflow.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--out", "-o", metavar="DATA.cxi", help="output CXI/HDF5 file")
    parser.add_argument(
        "--check",
        action="store_true",
        help="only validate the config (print it with defaults filled in); write nothing",
    )
    parser.add_argument(
        "--modalities", action="store_true", help="list the registered modalities and exit"
    )


def run(args) -> int:
    from xrayflow.config import dump_yaml  # noqa: PLC0415
    from xrayflow.simulate import MODALITIES, load_simulate_config  # noqa: PLC0415
    from xrayflow.simulate import run as run_simulation  # noqa: PLC0415

    if args.modalities:
        for name, mod in MODALITIES.items():
            print(f"{name:20s} {mod.description}")
        return 0
    if not args.config:
        raise ConfigError("simulate: --config FILE is required")
    if args.check:
        print(dump_yaml(load_simulate_config(args.config, args.overrides)), end="")
        return 0
    if not args.out:
        raise ConfigError("simulate: --out FILE is required")
    data = run_simulation(args.config, args.out, args.overrides)
    p, ny, nx = data.data.shape
    print(
        f"wrote {args.out}: {data.attrs.get('modality')} {p} frames of {ny}x{nx}, "
        f"{data.energy_ev:g} eV, total counts {float(data.data.sum()):.4g}"
    )
    return 0
