"""simulate an X-ray experiment of a registered modality (``--modalities`` lists them) from a
YAML config into a CXI file.

Example:
    xrayflow simulate --config sim.yaml --out data.cxi \\
        --set seed=3 --set noise.photons_per_probe=1e7
"""

from __future__ import annotations

import argparse

from xrayflow.config import dump_yaml
from xrayflow.errors import ConfigError
from xrayflow.memory import available_bytes, fmt_bytes
from xrayflow.modalities import modalities
from xrayflow.simulate import estimate_memory, load_simulate_config
from xrayflow.simulate import run as run_simulation


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--out", "-o", metavar="DATA.cxi", help="output CXI/HDF5 file")
    parser.add_argument(
        "--check",
        action="store_true",
        help="only validate the config and the memory estimate (print the config with "
        "defaults filled in, and the estimate); write nothing",
    )
    parser.add_argument(
        "--modalities", action="store_true", help="list the registered modalities and exit"
    )


def run(args) -> int:
    if args.modalities:
        for name, mod in modalities().items():
            if mod.simulate is not None:
                print(f"{name:20s} {mod.description}")
        return 0
    if not args.config:
        raise ConfigError("simulate: --config FILE is required")
    if args.check:
        cfg = load_simulate_config(args.config, args.overrides)
        est = estimate_memory(cfg, streaming=True)
        print(dump_yaml(cfg), end="")
        if est:
            print(
                f"# memory estimate: {fmt_bytes(est)} (available {fmt_bytes(available_bytes())}"
                + (f", max_memory_gb {cfg['max_memory_gb']:g}" if cfg["max_memory_gb"] else "")
                + ")"
            )
        return 0
    if args.out is None:
        raise ConfigError("simulate: --out FILE is required")
    data = run_simulation(args.config, args.out, args.overrides)
    p, ny, nx = data.data.shape
    print(
        f"wrote {args.out}: {data.attrs.get('modality')} {p} frames of {ny}x{nx}, "
        f"{data.energy_ev:g} eV, total counts {float(data.data.sum()):.4g}"
    )
    return 0
