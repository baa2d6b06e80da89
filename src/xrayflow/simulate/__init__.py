"""The simulate stage: config -> simulated experiment -> CXI file with ground truth.

    from xrayflow.simulate import run, simulate, MODALITIES
    run("config/simulate/ptycho2d.yaml", "data.cxi")        # validated + written
    data = simulate(config_dict)                                   # DiffractionData in memory

Modalities live in :data:`MODALITIES` (see :mod:`xrayflow.simulate.registry` for adding
new ones). The same config and seed give bit-identical data on the same device/precision.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from xrayflow.simulate.registry import (
    MODALITIES,
    Modality,
    get_modality,
    register_modality,
    simulate_schema,
)

# Built-in modalities register themselves on import.
from xrayflow.simulate import bragg as _bragg  # noqa: E402,F401  isort: skip
from xrayflow.simulate import holography as _holography  # noqa: E402,F401  isort: skip
from xrayflow.simulate import ptycho as _ptycho  # noqa: E402,F401  isort: skip

__all__ = [
    "MODALITIES",
    "Modality",
    "get_modality",
    "load_simulate_config",
    "register_modality",
    "run",
    "simulate",
    "simulate_schema",
]

log = logging.getLogger(__name__)


def load_simulate_config(
    config: str | os.PathLike | Mapping, overrides: Sequence[str] = ()
) -> dict:
    """Load and validate a simulate config (path or dict) with ``--set`` overrides."""
    from xrayflow.config import load_config  # noqa: PLC0415

    return load_config(config, simulate_schema(), overrides, name="simulate")


def simulate(config: str | os.PathLike | Mapping, overrides: Sequence[str] = ()):
    """Run the configured modality; return :class:`~xrayflow.io.cxi.DiffractionData`
    with ``config`` and ``provenance`` filled in (nothing is written)."""
    from xrayflow.backend import BackendError, get_backend  # noqa: PLC0415
    from xrayflow.errors import ConfigError  # noqa: PLC0415
    from xrayflow.provenance import provenance  # noqa: PLC0415

    cfg = load_simulate_config(config, overrides)
    mod = get_modality(cfg["modality"])
    try:
        backend = get_backend(cfg["device"], cfg["precision"])
    except BackendError as exc:
        raise ConfigError(f"simulate.device: {exc}") from None
    rng = np.random.default_rng(int(cfg["seed"]))
    t0 = time.perf_counter()
    data = mod(cfg, rng, backend)
    log.info(
        "simulated %s: %s frames in %.2f s",
        cfg["modality"],
        data.data.shape,
        time.perf_counter() - t0,
    )
    data.config = cfg
    data.provenance = provenance(
        cfg, cfg["seed"], device=backend.device, precision=cfg["precision"]
    )
    data.attrs.setdefault("modality", cfg["modality"])
    if cfg.get("description"):
        data.attrs.setdefault("description", cfg["description"])
    return data


def run(
    config: str | os.PathLike | Mapping, out_path: str | os.PathLike, overrides: Sequence[str] = ()
):
    """Simulate and write ``out_path`` (CXI, atomically); return the DiffractionData."""
    from xrayflow.io.cxi import write_cxi  # noqa: PLC0415

    data = simulate(config, overrides)
    comp = data.config["output"]["compression"]
    write_cxi(Path(out_path), data, compression=None if comp == "none" else comp)
    return data
