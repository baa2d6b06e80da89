"""The reconstruct stage with the phase-retrieval solver: one 3D pattern, one rank."""

from __future__ import annotations

from xrayflow import cdi
from xrayflow.errors import ConfigError


def reconstruct(cfg: dict, data_path, out_path, comm) -> str:
    """HIO warm-up + AD refinement (:mod:`xrayflow.cdi`) of the pattern in ``data_path``
    into ``out_path``; returns a one-line summary."""
    if comm.size > 1:
        raise ConfigError(
            f"model.type: bragg_cdi reconstructs one 3D pattern on one rank; got {comm.size} "
            "ranks (run it without mpiexec)"
        )
    res = cdi.reconstruct_file(
        {**cfg["cdi"], "seed": cfg["optimizer"]["seed"]},
        data_path,
        out_path,
        model_path=cfg["model"]["network"],
    )
    return (
        f"bragg_cdi, {res['iterations']} iterations, R {res['r_factor']:.4f}, {res['time_s']:.1f} s"
    )
