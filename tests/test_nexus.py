"""NeXus default plot of result files (xrayflow.io.nexus): NXroot -> NXentry -> NXdata."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from xrayflow.io.hdf5 import read_h5, write_h5


def _default_nxdata(f: h5py.File) -> h5py.Group:
    """The group a NeXus viewer plots: follow ``default`` from the root (NeXus rules)."""
    assert f.attrs["NX_class"] == "NXroot"
    entry = f[f.attrs["default"]]
    assert entry.attrs["NX_class"] == "NXentry"
    data = entry[entry.attrs["default"]]
    assert data.attrs["NX_class"] == "NXdata"
    return data


@pytest.mark.parametrize(
    ("shape", "pixel", "axes", "units"),
    [
        ((1, 6, 8), 5e-8, [".", "y", "x"], "m"),  # (slices, y, x) object
        ((12, 6, 8), (1e-7, 2e-7, 3e-7), ["z", "y", "x"], "m"),  # a volume
        ((6, 8), None, ["y", "x"], "px"),  # pixel units
    ],
)
def test_default_plot_links_the_signal_with_axes(tmp_path, shape, pixel, axes, units):
    obj = (np.arange(np.prod(shape)).reshape(shape) * (1 + 1j)).astype(np.complex64)
    path = write_h5(
        tmp_path / "r.h5",
        {"object": obj, "loss": [1.0, 0.5]},
        default_plot={"signal": "/object", "pixel_size": pixel, "title": "t"},
    )
    with h5py.File(path) as f:
        g = _default_nxdata(f)
        assert list(g.attrs["axes"]) == axes and g.attrs["signal"] == "signal"
        assert isinstance(g.get("signal", getlink=True), h5py.SoftLink)  # no copy
        np.testing.assert_array_equal(g["signal"][()], obj)
        steps = np.broadcast_to(1.0 if pixel is None else pixel, 3)[3 - len(axes) :]
        for name, n, d in zip(axes, shape, steps, strict=True):
            if name == ".":
                continue
            c = g[name][()]
            assert c.shape == (n,) and g[name].attrs["units"] == units
            np.testing.assert_allclose(np.diff(c), d)
            assert c[n // 2] == 0.0  # centred
    assert set(read_h5(path)) >= {"object", "loss"}  # the result's datasets are unchanged


def test_reconstruct_result_opens_as_a_default_plot(tmp_path):
    from pathlib import Path

    from xrayflow.cli import main

    root = Path(__file__).parents[1]
    data, out = tmp_path / "d.cxi", tmp_path / "r.h5"
    sets = ["--set", "scan.n_y=3", "--set", "scan.n_x=3", "--set", "geometry.shape=[32,32]"]
    assert (
        main(
            ["simulate", "-c", str(root / "config/simulate/ptycho2d.yaml"), "-o", str(data), *sets]
        )
        == 0
    )
    rec = str(root / "config/reconstruct/ptycho2d.yaml")
    args = ["reconstruct", "-c", rec, "-d", str(data), "-o", str(out)]
    assert main([*args, "--set", "optimizer.iterations=2"]) == 0
    with h5py.File(out) as f:
        g = _default_nxdata(f)
        np.testing.assert_array_equal(g["signal"][()], f["object"][()])
        assert g["x"].attrs["units"] == "m"
        np.testing.assert_allclose(np.diff(g["x"][()]), f["pixel_size"][()])
