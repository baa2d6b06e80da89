"""Generic HDF5 trees: nested dicts of arrays, scalars, strings and dicts <-> HDF5 groups.

Mapping rules of :func:`write_h5` (read back identically by :func:`read_h5`):

* dict -> group (recursively); keys starting with ``@`` become attributes of that group
  (``{"@units": "m"}``), written with the ``@`` stripped and read back with it;
* a dict under a key named ``config`` (or ending in ``_config``) -> a UTF-8 string dataset
  holding its YAML, with attribute ``format = "yaml"``; read back as a dict;
* NumPy/CuPy array, list/tuple of numbers or bools -> dataset (CuPy arrays are copied to
  the host); lists of strings -> variable-length UTF-8 string dataset;
* int / float / complex / bool / numpy scalar -> scalar dataset; str -> UTF-8 string dataset;
* None -> skipped.

Writes are atomic (temporary file + rename, :func:`xrayflow.io.atomic.atomic_path`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin  # noqa: F401  registers the detector filters (bitshuffle/LZ4, Blosc, ...)
import numpy as np
import yaml

from xrayflow.backend import to_numpy
from xrayflow.config import SafeLoader, dump_yaml
from xrayflow.errors import DataError
from xrayflow.io.atomic import atomic_path
from xrayflow.io.nexus import write_default_plot

STR_DTYPE = h5py.string_dtype(encoding="utf-8")

__all__ = ["open_h5", "read_h5", "read_node", "write_h5", "write_node"]


def _is_config_key(key: str) -> bool:
    return key == "config" or key.endswith("_config")


def _to_array(value: Any) -> np.ndarray | None:
    if type(value).__module__.split(".")[0] == "cupy":
        return to_numpy(value)
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, list | tuple):
        if len(value) and all(isinstance(v, str) for v in value):
            return np.array(value, dtype=object)
        return np.asarray(value)
    return None


def write_node(group: h5py.Group, key: str, value: Any, compression: str | None = None) -> None:
    """Write one tree entry ``key: value`` into an open h5py group (rules in module doc)."""

    if value is None:
        return
    if key.startswith("@"):
        name = key[1:]
        if isinstance(value, str):
            group.attrs[name] = value
        elif isinstance(value, Mapping):
            group.attrs[name] = dump_yaml(value)
        else:
            arr = _to_array(value)
            if arr is not None and arr.dtype == object:
                group.attrs.create(name, arr.astype(str).tolist(), dtype=STR_DTYPE)
            else:
                group.attrs[name] = value if arr is None else arr
        return
    if isinstance(value, Mapping):
        if _is_config_key(key):
            ds = group.create_dataset(key, data=dump_yaml(value), dtype=STR_DTYPE)
            ds.attrs["format"] = "yaml"
            return
        sub = group.require_group(key)
        for k, v in value.items():
            write_node(sub, str(k), v, compression)
        return
    if isinstance(value, str):
        group.create_dataset(key, data=value, dtype=STR_DTYPE)
        return
    arr = _to_array(value)
    if arr is None:
        arr = np.asarray(value)
        if arr.dtype == object:
            raise DataError(f"cannot store {key!r} of type {type(value).__name__} in HDF5")
    if arr.dtype == object:
        group.create_dataset(key, data=arr.astype(str).tolist(), dtype=STR_DTYPE)
        return
    kw: dict = {}
    if compression and arr.ndim >= 1 and arr.size >= 1024:
        kw = {"compression": compression, "chunks": True}
    group.create_dataset(key, data=arr, **kw)


def write_h5(
    path: str | os.PathLike,
    tree: Mapping,
    compression: str | None = None,
    attrs: Mapping = (),
    default_plot: Mapping | None = None,
) -> Path:
    """Write a nested dict ``tree`` to a new HDF5 file at ``path`` atomically.

    Args:
        path: output file; replaced only when the whole tree is written.
        tree: nested mapping (see module docstring for the type rules).
        compression: e.g. ``"gzip"`` for arrays of at least 1024 elements (default none).
        attrs: attributes of the root group.
        default_plot: keyword arguments of :func:`xrayflow.io.nexus.write_default_plot`
            (``signal``, ``pixel_size``, ...): the NeXus entry that viewers plot.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            for k, v in dict(attrs).items():
                write_node(f, "@" + str(k), v)
            for k, v in tree.items():
                write_node(f, str(k), v, compression)
            if default_plot is not None:
                write_default_plot(f, **default_plot)
    return path


def open_h5(path: str | os.PathLike, mode: str = "r") -> h5py.File:
    """Open an HDF5 file, turning missing/truncated/not-HDF5 files into DataError."""
    p = Path(path)
    if mode == "r" and not p.is_file():
        raise DataError(f"{str(p)!r}: file does not exist")
    try:
        return h5py.File(p, mode)
    except OSError as exc:
        raise DataError(
            f"{str(p)!r}: not a readable HDF5 file (truncated or corrupt?): {exc}"
        ) from None


def _decode(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray) and value.dtype.kind in ("O", "S"):
        return [_decode(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_node(node: h5py.Dataset | h5py.Group, path: str = "") -> Any:
    """Read a dataset or (recursively) a group into Python objects (see module doc)."""

    try:
        if isinstance(node, h5py.Group):
            out: dict = {"@" + k: _decode(v) for k, v in node.attrs.items()}
            for k in node:
                out[k] = read_node(node[k], f"{path}/{k}")
            return out
        fmt = _decode(node.attrs.get("format", ""))
        if node.dtype.kind in ("O", "S", "U") or h5py.check_string_dtype(node.dtype):
            if node.shape == ():
                value = node[()]
                value = value.decode("utf-8") if isinstance(value, bytes) else str(value)
                if fmt == "yaml":
                    return yaml.load(value, Loader=SafeLoader)
                return value
            return [_decode(v) for v in node.asstr()[()].tolist()]
        value = node[()]
        if node.shape == ():
            return value.item() if isinstance(value, np.generic) else value
        return value
    except (OSError, RuntimeError, KeyError) as exc:
        raise DataError(f"{node.file.filename}: cannot read {path or node.name!r}: {exc}") from None


def read_h5(path: str | os.PathLike, group: str = "/") -> dict:
    """Read an HDF5 file (or one group of it) into a nested dict (inverse of write_h5)."""
    with open_h5(path) as f:
        if group not in f:
            raise DataError(f"{str(path)!r}: group {group!r} not found")
        node = f[group]
        if isinstance(node, h5py.Dataset):
            return read_node(node, group)
        return read_node(node, group.rstrip("/"))
