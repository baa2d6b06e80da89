"""Provenance: what produced a file (config, seed, versions, git commit, host, time)."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import shlex
import socket
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

from xrayflow import __version__

PACKAGES = ("numpy", "scipy", "h5py", "xraydb", "cupy", "torch", "mpi4py", "jsonschema")


def _version(name: str) -> str | None:
    for dist in (name, f"{name}-cuda12x", f"{name}-cuda11x"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def versions() -> dict[str, str]:
    """Versions of python, xrayflow and the installed scientific packages."""
    out = {"python": platform.python_version(), "xrayflow": __version__}
    for name in PACKAGES:
        v = _version(name)
        if v is not None:
            out[name] = v
    return out


@lru_cache(maxsize=1)
def git_commit() -> str:
    """The git commit of the xrayflow source tree (``-dirty`` if modified), else 'unknown'."""
    env = os.environ.get("XRAYFLOW_GIT_COMMIT")
    if env:
        return env
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        if rev.returncode != 0:
            return "unknown"
        commit = rev.stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        )
        if dirty.returncode == 0 and dirty.stdout.strip():
            commit += "-dirty"
        return commit
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _command_line() -> str:
    if not sys.argv:
        return ""
    prog = Path(sys.argv[0]).name
    if prog == "__main__.py":
        prog = "python -m " + Path(sys.argv[0]).resolve().parent.name
    return " ".join([prog, shlex.join(sys.argv[1:])]).strip()


def provenance(config: dict | None = None, seed: Any = None, **extra: Any) -> dict:
    """Record of how a result was made, for ``entry_1/xrayflow_provenance`` and model files.

    Keys: ``config`` (the dict, stored as YAML), ``seed``, ``xrayflow_version``,
    ``versions`` (dict), ``git_commit``, ``python``, ``platform``, ``hostname``,
    ``time_utc`` (ISO 8601), ``command`` (the command line), plus ``extra``.
    """
    out: dict[str, Any] = {
        "config": dict(config or {}),
        "seed": -1 if seed is None else seed,
        "xrayflow_version": __version__,
        "versions": versions(),
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "time_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": _command_line(),
    }
    out.update(extra)
    return out
