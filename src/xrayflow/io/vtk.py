"""VTK image files (``.vti``, VTK XML ImageData) of 3D arrays, for ParaView and VisIt.

:func:`write_vti` writes scalar point-data arrays on a regular grid, written atomically
(:func:`xrayflow.io.atomic.atomic_path`) as VTK XML ``ImageData`` version 1.0 with the data
appended raw (``<AppendedData encoding="raw">``, little-endian, each array preceded by its
size in bytes as a UInt64: ``header_type="UInt64"``). :func:`read_vti` reads what
:func:`write_vti` writes (not every VTI file: no inline, base64 or compressed data).

Axis order: our arrays are C-ordered (Z, Y, X); VTK stores point data x fastest, then y,
then z (point (i, j, k) at flat index ``i + nx (j + ny k)``), which is the C order of a
(Z, Y, X) array: the arrays are written as they are. VTK's attributes list x first:
``WholeExtent="0 nx-1 0 ny-1 0 nz-1"``, ``Spacing="dx dy dz"``, ``Origin="x0 y0 z0"`` (the
position of voxel (0, 0, 0)); the functions here take and return spacing and origin as
(z, y, x). VTK records no unit: spacing and origin are in whatever unit the caller uses
(m, or voxels when the geometry is unknown).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from xml.etree import ElementTree
from xml.sax.saxutils import quoteattr

import numpy as np

from xrayflow.errors import DataError
from xrayflow.io.atomic import atomic_path

__all__ = ["read_vti", "write_vti"]

#: VTK type names of the dtypes written (bool is written as UInt8).
VTK_TYPES = {
    np.dtype(t): n
    for t, n in [
        ("<f4", "Float32"), ("<f8", "Float64"), ("i1", "Int8"), ("u1", "UInt8"),
        ("<i2", "Int16"), ("<u2", "UInt16"), ("<i4", "Int32"), ("<u4", "UInt32"),
        ("<i8", "Int64"), ("<u8", "UInt64"),
    ]
}  # fmt: skip
_HEADER = np.dtype("<u8")  # the byte count before each appended array


def _xyz(value, name: str) -> str:
    """A (z, y, x) triple (or one number for all axes) as VTK's "x y z" (exact decimals)."""
    v = np.broadcast_to(np.asarray(value, dtype=np.float64), 3)
    if not np.isfinite(v).all():
        raise ValueError(f"{name} must be finite, got {value}")
    return " ".join(repr(float(a)) for a in v[::-1])


def write_vti(path: str | os.PathLike, arrays: Mapping, spacing=1.0, origin=0.0) -> Path:
    """Write the (Z, Y, X) ``arrays`` (name -> array, all one shape; real numbers or bool) as
    point data of a VTK XML image at ``path`` (atomically); ``spacing`` and ``origin``:
    (z, y, x) or one number, in the caller's unit (m, or voxels). The first array is the
    active scalars. Returns ``path``."""
    data = {str(k): np.asarray(v) for k, v in arrays.items()}
    shapes = {a.shape for a in data.values()}
    if not data or len(shapes) != 1 or len(next(iter(shapes))) != 3:
        raise ValueError(f"need 3D arrays of one shape, got {[a.shape for a in data.values()]}")
    nz, ny, nx = next(iter(shapes))
    extent = f"0 {nx - 1} 0 {ny - 1} 0 {nz - 1}"
    lines = [
        '<?xml version="1.0"?>',
        '<VTKFile type="ImageData" version="1.0" byte_order="LittleEndian" header_type="UInt64">',
        f'  <ImageData WholeExtent="{extent}" Origin="{_xyz(origin, "origin")}" '
        f'Spacing="{_xyz(spacing, "spacing")}">',
        f'    <Piece Extent="{extent}">',
        f"      <PointData Scalars={quoteattr(next(iter(data)))}>",
    ]
    blocks, offset = [], 0
    for name, a in data.items():
        kind = np.dtype(a.dtype.newbyteorder("<")) if a.dtype != bool else np.dtype("u1")
        if kind not in VTK_TYPES:
            raise ValueError(f"array {name!r}: dtype {a.dtype} has no VTK type")
        a = np.ascontiguousarray(a, dtype=kind)
        lines.append(
            f'        <DataArray type="{VTK_TYPES[kind]}" Name={quoteattr(name)} '
            f'NumberOfComponents="1" format="appended" offset="{offset}"/>'
        )
        blocks.append(a)
        offset += _HEADER.itemsize + a.nbytes
    lines += [
        "      </PointData>",
        "    </Piece>",
        "  </ImageData>",
        '  <AppendedData encoding="raw">',
        "   _",
    ]
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write("\n".join(lines).encode("utf-8"))
        for a in blocks:
            f.write(np.array(a.nbytes, dtype=_HEADER).tobytes())
            f.write(memoryview(a).cast("B"))
        f.write(b"\n  </AppendedData>\n</VTKFile>\n")
    return Path(path)


def read_vti(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """The point-data arrays (Z, Y, X) of a file written by :func:`write_vti` and its grid,
    ``{"spacing": (z, y, x), "origin": (z, y, x)}``; DataError naming the file when it is not
    such a file or is truncated."""
    src = repr(str(path))
    raw = Path(path).read_bytes()
    start = raw.find(b"<AppendedData")
    if start < 0:
        raise DataError(f"{src}: no appended data: not a VTK image file of xrayflow's layout")
    try:
        root = ElementTree.fromstring(raw[:start] + b"</VTKFile>")
        data = raw.index(b"_", raw.index(b">", start)) + 1
        image = root.find("ImageData")
        x0, x1, y0, y1, z0, z1 = (int(v) for v in image.get("WholeExtent").split())
        spacing = [float(v) for v in image.get("Spacing").split()]
        origin = [float(v) for v in image.get("Origin").split()]
    except (ElementTree.ParseError, ValueError, AttributeError) as exc:
        raise DataError(f"{src}: not a VTK image file of xrayflow's layout: {exc}") from None
    layout = (root.get("type"), root.get("byte_order"), root.get("header_type"))
    if layout != ("ImageData", "LittleEndian", "UInt64"):
        raise DataError(f"{src}: not an appended-raw little-endian VTK image file {layout}")
    shape = (z1 - z0 + 1, y1 - y0 + 1, x1 - x0 + 1)
    names = {v: k for k, v in VTK_TYPES.items()}
    arrays = {}
    for el in root.iter("DataArray"):
        at = data + int(el.get("offset"))
        dtype = names.get(el.get("type"))
        n = int(np.frombuffer(raw, _HEADER, 1, at)[0]) if at + 8 <= len(raw) else -1
        if dtype is None or n != dtype.itemsize * int(np.prod(shape)) or at + 8 + n > len(raw):
            raise DataError(f"{src}: array {el.get('Name')!r} is truncated or not {shape}")
        arrays[el.get("Name")] = np.frombuffer(raw, dtype, n // dtype.itemsize, at + 8).reshape(
            shape
        )
    return arrays, {"spacing": tuple(spacing[::-1]), "origin": tuple(origin[::-1])}


def density_fields(tree: dict) -> dict:
    """Point data of a complex density result (Bragg CDI) for :func:`write_vti`: amplitude,
    phase (rad), support and the 3D fields of its ``strain`` group when there is one
    (displacement, m; strain), from a result tree (``object`` (Z, Y, X) complex,
    ``support``, optional ``strain``)."""
    rho = tree["object"]
    fields = {"amplitude": np.abs(rho), "phase": np.angle(rho), "support": tree["support"]}
    if "strain" in tree:
        fields |= {k: tree["strain"][k] for k in ("displacement", "strain")}
    return fields


def centred_grid(voxel_size, shape) -> tuple:
    """(spacing, origin), each (z, y, x), for :func:`write_vti` of a volume of ``shape``:
    the voxel (m, one number or per axis; None: 1, voxel units), the middle voxel at 0."""
    step = np.broadcast_to(np.asarray(1.0 if voxel_size is None else voxel_size, np.float64), 3)
    return tuple(step), tuple(-(n // 2) * s for n, s in zip(shape, step, strict=True))
