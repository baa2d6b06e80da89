"""Scan positions for the ingest: from an HDF5 dataset or a text/CSV table.

The config section ``positions`` names the file (an HDF5 file, else a text table), the
dataset (``key``: one ``(P, N)`` dataset or two 1D datasets) or the text columns (by header
name or index), their order (``yx`` or ``xy``) and units; the result is ``(P, 2)`` ``(y, x)``
in m, the probe position as xrayflow stores it (``negate`` for sample-stage positions,
``centre`` for positions relative to the scan's midrange).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from xrayflow.errors import ConfigError, DataError
from xrayflow.ingest.master import dataset
from xrayflow.io.hdf5 import open_h5

#: metres per unit of the ``positions.units`` key
UNITS_M = {"m": 1.0, "mm": 1e-3, "um": 1e-6, "nm": 1e-9}


def read_positions(cfg: dict, master: str, n_frames: int) -> np.ndarray:
    """``(P, 2)`` ``(y, x)`` positions in m from the ``positions`` section ``cfg`` (file
    None: the master file); DataError when their count differs from ``n_frames``."""
    path = cfg["file"] or master
    if not Path(path).is_file():
        raise DataError(f"positions.file {str(path)!r} does not exist")
    if h5py.is_hdf5(path):
        a, b = _hdf5_columns(path, cfg["key"], cfg["columns"])
    else:
        a, b = _text_columns(path, cfg["columns"])
    y, x = (a, b) if cfg["order"] == "yx" else (b, a)
    pos = np.stack([y, x], axis=1) * UNITS_M[cfg["units"]]
    if pos.shape[0] != n_frames:
        raise DataError(
            f"{path}: {pos.shape[0]} positions but the frames number {n_frames} "
            "(positions.file, frames)"
        )
    if not np.isfinite(pos).all():
        row = int(np.flatnonzero(~np.isfinite(pos).all(axis=1))[0])
        raise DataError(f"{path}: position {row} is not a finite number")
    if cfg["negate"]:
        pos = -pos
    if cfg["centre"]:
        pos = pos - (pos.max(axis=0) + pos.min(axis=0)) / 2
    return pos


def _hdf5_columns(path: str, key, columns) -> tuple[np.ndarray, np.ndarray]:
    """The two coordinate columns: datasets ``key[0]``, ``key[1]`` (1D), or columns
    ``columns`` (indices) of the 2D dataset ``key``."""
    if key is None:
        raise ConfigError("positions.key: required for an HDF5 positions file")
    with open_h5(path) as f:
        if isinstance(key, list):
            cols = [np.asarray(dataset(f, k, path)[()], np.float64).ravel() for k in key]
            if cols[0].shape != cols[1].shape:
                raise DataError(f"{path}: {key[0]} and {key[1]} differ in length")
            return cols[0], cols[1]
        table = np.asarray(dataset(f, key, path)[()], np.float64)
    if any(isinstance(c, str) for c in columns):
        raise ConfigError("positions.columns: give column indices for an HDF5 dataset")
    if table.ndim != 2 or max(columns) >= table.shape[1]:
        raise DataError(
            f"{path}: {key} must be (positions, >{max(columns)}) for positions.columns "
            f"{columns}, got shape {table.shape}"
        )
    return table[:, columns[0]], table[:, columns[1]]


def _text_columns(path: str, columns) -> tuple[np.ndarray, np.ndarray]:
    """Two columns of a comma- or whitespace-separated table. Lines starting with ``#`` are
    comments, except a header (the first line, ``#`` stripped) when a column is named;
    with indices only, a first line that is not numbers is skipped as a header."""
    try:
        lines = [(i + 1, s.strip()) for i, s in enumerate(Path(path).read_text().splitlines())]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the positions table ({exc})") from None
    lines = [(i, s) for i, s in lines if s]
    if not lines:
        raise DataError(f"{path}: the positions table is empty")
    sep = "," if "," in lines[0][1] else None
    named = any(isinstance(c, str) for c in columns)
    if named or not _numeric(lines[0][1], sep):
        header = [h.strip() for h in lines[0][1].lstrip("#").split(sep)]
        lines = lines[1:]
    else:
        header = []
    idx = []
    for c in columns:
        if isinstance(c, str) and c not in header:
            raise DataError(f"{path}: no column {c!r} (positions.columns; header: {header})")
        idx.append(header.index(c) if isinstance(c, str) else c)
    rows = []
    for lineno, s in lines:
        if s.startswith("#"):
            continue
        fields = s.split(sep)
        try:
            rows.append([float(fields[i]) for i in idx])
        except (ValueError, IndexError):
            raise DataError(
                f"{path}, line {lineno}: no number in column(s) {columns} ({s!r})"
            ) from None
    table = np.array(rows, dtype=np.float64).reshape(-1, 2)
    return table[:, 0], table[:, 1]


def _numeric(line: str, sep) -> bool:
    try:
        [float(v) for v in line.split(sep)]
    except ValueError:
        return False
    return True
