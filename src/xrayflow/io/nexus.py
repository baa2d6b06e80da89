"""NeXus default plot of a result file, so that h5web and silx show it when it is opened.

The result datasets stay where they are (docs/data-format.md, section 4); this adds::

    /                 @NX_class = NXroot, @default = entry
    /entry            @NX_class = NXentry, @default = <name>
    /entry/<name>     @NX_class = NXdata, @signal = signal, @axes = [..., y, x]
        signal        soft link to the result dataset (no copy)
        y, x          pixel-centre coordinates, @units (m, or px when the scale is unknown)

Axes: the last two axes of the signal are ``(y, x)`` (3D volumes ``(z, y, x)``); leading
axes (slices, modes) carry no coordinates (``"."``).
"""

from __future__ import annotations

from collections.abc import Sequence

import h5py
import numpy as np

AXIS_NAMES = ("z", "y", "x")


def write_default_plot(
    f: h5py.File,
    signal: str,
    pixel_size: float | Sequence[float] | None,
    name: str = "data",
    title: str | None = None,
) -> None:
    """Make the dataset ``signal`` (an absolute path in ``f``) the file's default plot:
    an NXentry ``entry`` with the NXdata group ``name`` linking to it; coordinates of its
    last 2 (3 for a volume, ``signal`` of 3 dimensions whose leading axis is larger than 4)
    axes from ``pixel_size`` (m per pixel, one for all axes or one per axis; None: pixel
    indices, units ``px``), centred on the array's middle."""
    shape = f[signal].shape
    n_sp = 3 if len(shape) == 3 and shape[0] > 4 else min(2, len(shape))
    names = AXIS_NAMES[3 - n_sp :]
    sizes = shape[len(shape) - n_sp :]
    step = np.broadcast_to(np.asarray(1.0 if pixel_size is None else pixel_size, float), n_sp)
    f.attrs["NX_class"] = "NXroot"
    f.attrs["default"] = "entry"
    entry = f.require_group("entry")
    entry.attrs["NX_class"] = "NXentry"
    entry.attrs["default"] = name
    g = entry.create_group(name)
    g.attrs["NX_class"] = "NXdata"
    g.attrs["signal"] = "signal"
    g.attrs["axes"] = ["."] * (len(shape) - n_sp) + list(names)
    if title:
        g.attrs["title"] = title
    g["signal"] = h5py.SoftLink(signal)
    for axis, n, d in zip(names, sizes, step, strict=True):
        ds = g.create_dataset(axis, data=(np.arange(n) - n // 2) * d)
        ds.attrs["units"] = "px" if pixel_size is None else "m"
