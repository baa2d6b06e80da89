"""Human-readable summary of a data file (``xrayflow info FILE``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from xrayflow.config import dump_yaml
from xrayflow.errors import DataError
from xrayflow.geometry import ATTR_NAMES
from xrayflow.io.cxi import read_cxi_meta
from xrayflow.io.hdf5 import open_h5


def _fmt(v: Any) -> str:
    if isinstance(v, tuple):
        return "(" + ", ".join(_fmt(x) for x in v) + ")"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _is_cxi(path) -> bool:
    with open_h5(path) as f:
        return any(p in f for p in ("entry_1/data_1/data", "entry_1/instrument_1/detector_1/data"))


def _geometry_lines(geo) -> list[str]:
    """The sample-plane part of the geometry (object pixel, slices, near-field distances)."""
    lines = []
    if geo.object_pixel is not None:
        oy, ox = geo.object_pixel
        lines.append(f"object pixel: {oy:.6g} x {ox:.6g} m (y, x), binning {geo.binning}")
    if geo.slice_spacing is not None:
        lines.append(f"slice spacing: {geo.slice_spacing:.6g} m")
    if geo.distances is not None:
        z1 = "plane wave" if geo.source_distance is None else f"{geo.source_distance:.6g} m"
        lines.append(f"near field:  source distance {z1}")
        for name in ("distances", "effective_distances", "magnifications"):
            lines.append(f"  {name}: {_fmt(getattr(geo, name))}")
    return lines


def _layout(m: dict) -> str:
    """Where the frames' zero frequency sits, as far as the file says."""
    if m["attrs"].get("space") == "real":
        return "real-space images (not FFT-shifted)"
    if m["centring_recorded"]:
        return "centred (DC at centre)" if m["centred"] else "not centred (DC at corner)"
    return (
        "layout not recorded: far-field models read the frames as centred (DC at centre), "
        "near-field models as real-space images"
    )


def describe_cxi(path: str | os.PathLike, show_config: bool = False) -> str:
    m = read_cxi_meta(path)
    p, ny, nx = m["shape"]
    py, px = m["pixel_size"]
    lines = [
        f"file:        {m['path']}",
        f"modality:    {m['modality'] or 'unknown (not written by xrayflow)'}",
        f"frames:      {p}",
        f"frame shape: {ny} x {nx} (y, x), {m['dtype']}, {_layout(m)}",
        f"energy:      {m['energy_ev']:.6g} eV (wavelength {m['wavelength'] * 1e10:.6g} Å)",
        f"distance:    {m['distance']:.6g} m",
        f"pixel size:  {py:.6g} x {px:.6g} m (y, x)",
        *_geometry_lines(m["geometry"]),
        f"positions:   {'yes' if m['has_positions'] else 'no'}; "
        f"angles: {'yes' if m['has_angles'] else 'no'}; mask: {'yes' if m['has_mask'] else 'no'}",
    ]
    skip = ("modality", *ATTR_NAMES)
    extra = {k: v for k, v in m["attrs"].items() if k not in skip and not k.startswith("@")}
    if extra:
        lines.append("attributes:")
        for k, v in extra.items():
            if isinstance(v, np.ndarray):
                v = v.tolist() if v.size <= 8 else f"array{v.shape}"
            lines.append(f"  {k}: {_fmt(v)}")
    if m["truth_fields"]:
        lines.append("truth:")
        for k, v in m["truth_fields"].items():
            lines.append(f"  {k}: {_fmt(v)}")
    else:
        lines.append("truth:       none")
    prov = m["provenance"]
    if prov:
        lines.append("provenance:")
        for k in ("seed", "xrayflow_version", "git_commit", "time_utc", "hostname", "command"):
            if k in prov:
                lines.append(f"  {k}: {_fmt(prov[k])}")
        versions = prov.get("versions")
        if isinstance(versions, dict):
            lines.append(
                "  versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if k[0] != "@")
            )
    if show_config and m["config"]:
        lines.append("config:")
        lines += ["  " + ln for ln in dump_yaml(m["config"]).rstrip().splitlines()]
    return "\n".join(lines)


def describe_h5(path: str | os.PathLike, max_items: int = 200) -> str:
    lines = [f"file: {path}", "HDF5 tree:"]
    with open_h5(path) as f:
        items: list[str] = []

        def visit(name, obj):
            depth = name.count("/")
            if len(items) >= max_items:
                return
            if isinstance(obj, h5py.Dataset):
                if obj.shape == () and obj.dtype.kind in "iufb":
                    desc = f"= {obj[()]}"
                elif h5py.check_string_dtype(obj.dtype) and obj.shape == ():
                    s = obj.asstr()[()]
                    desc = "= " + (repr(s) if len(s) < 60 else f"<text, {len(s)} chars>")
                else:
                    desc = f"{obj.dtype} {tuple(obj.shape)}"
                items.append(f"{'  ' * (depth + 1)}{name.split('/')[-1]}: {desc}")
            else:
                items.append(f"{'  ' * (depth + 1)}{name.split('/')[-1]}/")

        try:
            f.visititems(visit)
        except (OSError, RuntimeError) as exc:
            raise DataError(f"{path}: cannot read (truncated or corrupt?): {exc}") from None
    return "\n".join(lines + items)


def describe(path: str | os.PathLike, show_config: bool = False) -> str:
    """Summary of a CXI file, or the group/dataset tree of any other HDF5 file.

    A missing path, a directory, something that is not a regular file, or a file that is not
    readable HDF5 (truncated, random bytes, a PyTorch model) raises DataError naming it.
    """
    p = Path(path)
    if p.is_dir():
        raise DataError(f"{str(p)!r} is a directory, not a file; give a CXI/HDF5 file")
    if not p.exists():
        raise DataError(f"{str(p)!r}: file does not exist")
    if not p.is_file():
        raise DataError(f"{str(p)!r} is not a regular file; give a CXI/HDF5 file")
    try:
        if _is_cxi(p):
            return describe_cxi(p, show_config=show_config)
        return describe_h5(p)
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise DataError(f"{str(p)!r}: cannot read (truncated or corrupt?): {exc}") from None
