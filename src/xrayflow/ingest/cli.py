"""ingest detector files (NeXus/HDF5 master file with external-link data files, positions
table, dark and flat frames) into a CXI file, block by block in bounded memory.

Example:
    xrayflow ingest --config config/ingest/eiger.yaml --out data/scan_0042.cxi \\
        --set master=raw/scan_0042_master.h5 --set positions.file=raw/scan_0042.csv

Config keys: src/xrayflow/schemas/ingest.schema.json; layouts, units and the order of the
corrections: docs/data-format.md, section 7. Bad inputs exit with status 2 and a one-line
message naming the file, key or frame; the output appears only when complete.
"""

from __future__ import annotations

import argparse

from xrayflow.config import load_config
from xrayflow.errors import ConfigError
from xrayflow.ingest.pipeline import ingest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``xrayflow ingest`` (``--config`` and ``--set`` come from xrayflow.cli)."""
    parser.add_argument("--out", "-o", metavar="DATA.cxi", help="output CXI file")


def run(args: argparse.Namespace) -> int:
    if not args.config:
        raise ConfigError("ingest: --config FILE is required")
    if not args.out:
        raise ConfigError("ingest: --out FILE is required")
    cfg = load_config(args.config, "ingest", args.overrides)
    print(ingest(cfg, args.out, config_file=args.config))
    return 0
