"""Launch a script under ``mpiexec -n N`` (skips the test when no mpiexec is found).

Importable from every test directory (``tests/`` is on ``sys.path`` through its conftest)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).parent / "parallel" / "scripts"

# rank and launcher variables of an enclosing job (MPICH/Intel MPI, Open MPI, Slurm, torchrun)
# and xrayflow's MPI switch: the ranks started here must not take them for their own
_JOB_PREFIXES = ("PMI_", "OMPI_", "SLURM_", "MASTER_", "XRAYFLOW_MPI")
_JOB_NAMES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def mpiexec() -> str:
    here = Path(sys.executable).parent / "mpiexec"
    found = str(here) if here.exists() else shutil.which("mpiexec")
    if not found:
        pytest.skip("mpiexec not found")
    pytest.importorskip("mpi4py")
    return found


def run_mpi(script: str, n: int, *args, timeout: float = 60.0, mpi: bool = True):
    """Run ``scripts/<script>`` on ``n`` ranks (or as a plain process if not ``mpi``)."""
    return run_ranks([sys.executable, str(SCRIPTS / script), *map(str, args)], n, timeout, mpi)


def ranks_env() -> dict:
    """A clean MPI environment with one FFT worker per rank."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(_JOB_PREFIXES) and k not in _JOB_NAMES
    }
    env["XRAYFLOW_FFT_WORKERS"] = "1"
    return env


def run_ranks(cmd: list, n: int, timeout: float, mpi: bool):
    """Run ``cmd`` on ``n`` ranks under mpiexec (or as a plain process if not ``mpi``), with
    a clean MPI environment and one FFT worker per rank."""
    if mpi:
        cmd = [mpiexec(), "-n", str(n), *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ranks_env())
