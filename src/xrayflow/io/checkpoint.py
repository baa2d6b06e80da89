"""Checkpoints: parameters, optimizer state, RNG state, iteration, history — one HDF5 file.

Written atomically (temporary file + rename), so a run killed while writing leaves the
previous checkpoint intact. ``load_checkpoint`` returns exactly what ``save_checkpoint`` got,
so a resumed run reproduces an uninterrupted one bit for bit.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from xrayflow.backend import to_numpy
from xrayflow.errors import DataError
from xrayflow.io.atomic import atomic_path

FORMAT = "xrayflow-reconstruct-checkpoint-1"


def _put(group, name, value):
    if isinstance(value, str):
        group.attrs[name] = value
    elif value is None:
        group.attrs[name] = "__none__"
    elif isinstance(value, bool | int | float | np.generic):
        group.attrs[name] = value
    else:
        group.create_dataset(name, data=to_numpy(value))


def _get_group(group) -> dict:
    out = {}
    for k, v in group.attrs.items():
        if isinstance(v, bytes):
            v = v.decode()
        if isinstance(v, str) and v == "__none__":
            v = None
        elif isinstance(v, np.generic):
            v = v.item()
        out[k] = v
    for k, ds in group.items():
        if isinstance(ds, h5py.Dataset):
            out[k] = ds[()]
        else:
            out[k] = _get_group(ds)
    return out


def save_checkpoint(
    path,
    *,
    iteration: int,
    params: dict,
    optimizer_state: dict,
    rng_state: dict,
    history: dict,
    config: dict,
    extra: dict | None = None,
):
    """Write a checkpoint (atomic). ``iteration`` = number of completed iterations."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["iteration"] = int(iteration)
        f.attrs["rng_state"] = json.dumps(rng_state)
        f.attrs["config"] = json.dumps(config, default=str)
        gp = f.create_group("params")
        for k, v in params.items():
            gp.create_dataset(k, data=to_numpy(v))
        go = f.create_group("optimizer")
        for k, v in optimizer_state.items():
            # keys look like "object/m"; store flat with a safe name
            _put(go, k.replace("/", "::"), v)
        gh = f.create_group("history")
        for k, v in history.items():
            gh.create_dataset(k, data=np.asarray(v, dtype=np.float64))
        gx = f.create_group("extra")
        for k, v in (extra or {}).items():
            _put(gx, k, v)


def is_checkpoint(path) -> bool:
    """True when ``path`` is a readable file written by :func:`save_checkpoint`."""
    return read_inputs(path) is not None


def read_inputs(path) -> tuple[dict, dict] | None:
    """The config and the ``extra`` attributes (input fingerprints) a checkpoint was written
    with, without reading its arrays; None when it is unreadable or not a checkpoint."""
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT:
                return None
            config = json.loads(f.attrs["config"])
            extra = {
                k: v.decode() if isinstance(v, bytes) else v for k, v in f["extra"].attrs.items()
            }
    except (OSError, KeyError, ValueError):
        return None
    return config, extra


def load_checkpoint(path) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (numpy arrays)."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"checkpoint {p} does not exist (nothing to resume)")
    try:
        with h5py.File(p, "r") as f:
            if f.attrs.get("format") != FORMAT:
                raise DataError(f"{p} is not an xrayflow reconstruction checkpoint")
            opt = {k.replace("::", "/"): v for k, v in _get_group(f["optimizer"]).items()}
            return {
                "iteration": int(f.attrs["iteration"]),
                "rng_state": json.loads(f.attrs["rng_state"]),
                "config": json.loads(f.attrs["config"]),
                "params": {k: ds[()] for k, ds in f["params"].items()},
                "optimizer": opt,
                "history": {k: list(ds[()]) for k, ds in f["history"].items()},
                "extra": _get_group(f["extra"]),
            }
    except OSError as exc:
        raise DataError(f"cannot read checkpoint {p}: {exc}") from exc


def rng_state(rng: np.random.Generator) -> dict:
    """JSON-serialisable state of a NumPy Generator."""
    st = rng.bit_generator.state
    return json.loads(json.dumps(st, default=int))


def restore_rng(state: dict) -> np.random.Generator:
    """A Generator positioned exactly at ``state``."""
    bg = getattr(np.random, state["bit_generator"])()
    bg.state = state
    return np.random.Generator(bg)
