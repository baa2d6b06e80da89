"""The simulate stage: config -> simulated experiment -> CXI file with ground truth.

    from xrayflow.simulate import run, simulate
    run("sim.yaml", "data.cxi")                    # validated + written
    data = simulate(config_dict)                   # DiffractionData in memory

The config's ``modality`` names a registered modality (:mod:`xrayflow.modalities`), whose
``simulate`` hook makes the data. The same config and seed give bit-identical data on the
same device/precision.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from xrayflow.backend import BackendError, get_backend, uses_gpu
from xrayflow.config import load_config
from xrayflow.errors import ConfigError
from xrayflow.io.cxi import cxi_stream
from xrayflow.io.outputs import check_outputs
from xrayflow.memory import check_memory
from xrayflow.modalities import get_modality, stage_schema
from xrayflow.modalities.simulation import check_frames, check_physical_ranges, streaming
from xrayflow.provenance import provenance

__all__ = ["estimate_memory", "load_simulate_config", "run", "simulate"]

log = logging.getLogger(__name__)


def load_simulate_config(
    config: str | os.PathLike | Mapping, overrides: Sequence[str] = ()
) -> dict:
    """Load and validate a simulate config (path or dict) with ``--set`` overrides: the
    schema, then the physical ranges of energy, distances and pixel sizes
    (:func:`xrayflow.modalities.simulation.check_physical_ranges`) and the modality's own
    checks."""
    cfg = load_config(config, stage_schema("simulate"), overrides, name="simulate")
    mod = get_modality(cfg["modality"], "simulate.modality")
    check_physical_ranges(cfg, far_field=mod.far_field)
    if mod.simulate_check is not None:
        mod.simulate_check(cfg)
    return cfg


def estimate_memory(cfg: dict, streaming: bool = True) -> float:
    """Estimate the peak memory of simulating the validated ``cfg`` (``streaming``: frames
    go to the output file as they are made, as ``xrayflow simulate`` does) and refuse
    (:class:`~xrayflow.errors.ResourceError`) when it exceeds the available memory or
    ``max_memory_gb``. Returns the estimate in bytes (0 for modalities without one)."""
    memory_parts = get_modality(cfg["modality"], "simulate.modality").simulate_memory
    parts = memory_parts(cfg, streaming) if memory_parts is not None else {}
    if not parts:
        return 0.0
    return check_memory(
        parts,
        f"simulate ({cfg['modality']})",
        limit_gb=cfg.get("max_memory_gb"),
        key="simulate.max_memory_gb",
        gpu=uses_gpu(cfg["device"]),
    )


def simulate(config: str | os.PathLike | Mapping, overrides: Sequence[str] = (), *, stream=None):
    """Run the configured modality; return :class:`~xrayflow.io.cxi.DiffractionData`
    with ``config`` and ``provenance`` filled in (nothing is written).

    ``stream`` (a :class:`xrayflow.io.cxi.CXIStream`, as :func:`run` passes): the far-field
    modalities write their frames into it batch by batch and ``data.data`` is then a
    :class:`~xrayflow.io.cxi.StreamedFrames`. The peak memory is estimated and checked
    first; data that come out all zero or saturated are refused (PhysicsError).
    """
    return _simulate(load_simulate_config(config, overrides), stream)


def _simulate(cfg: dict, stream=None, check_memory: bool = True):
    """:func:`simulate` of a validated config."""
    mod = get_modality(cfg["modality"], "simulate.modality")
    if check_memory:
        estimate_memory(cfg, streaming=stream is not None)
    try:
        backend = get_backend(cfg["device"], cfg["precision"])
    except BackendError as exc:
        raise ConfigError(f"simulate.device: {exc}") from None
    rng = np.random.default_rng(int(cfg["seed"]))
    t0 = time.perf_counter()
    with streaming(stream):
        data = mod.simulate(cfg, rng, backend)
    check_frames(cfg, data)
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
    """Simulate and write ``out_path`` (CXI, atomically); return the DiffractionData.

    Checked before anything is computed: the config, the output path (not the config
    file, not a directory or device, in an existing writable directory) and the memory
    estimate. Far-field frames are streamed into the output file batch by batch (bit-identical to
    :func:`simulate` in memory), so memory does not grow with the number of positions;
    ``data.data`` of the result is then a :class:`~xrayflow.io.cxi.StreamedFrames`.
    """
    cfg = load_simulate_config(config, overrides)
    inputs = {} if isinstance(config, Mapping) else {"--config": config}
    check_outputs({"--out": out_path}, inputs)
    estimate_memory(cfg, streaming=True)
    comp = cfg["output"]["compression"]
    with cxi_stream(Path(out_path), compression=None if comp == "none" else comp) as stream:
        data = _simulate(cfg, stream, check_memory=False)
        stream.finish(data)
    return data
