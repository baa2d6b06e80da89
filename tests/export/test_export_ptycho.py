"""``xrayflow export`` of ptychography results: ptychodus/pty-chi product files and PtyPy
.ptyr files read back with the same arrays, positions, pixel sizes and geometry."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from xrayflow.cli import main
from xrayflow.export.ptychodus import corners_px, read_product
from xrayflow.export.ptypy import read_ptyr
from xrayflow.io.hdf5 import read_h5
from xrayflow.optics.constants import wavelength


def _export(result, fmt, out, *extra) -> None:
    assert main(["export", str(result), "--format", fmt, "-o", str(out), *extra]) == 0


def _ptyr_corners(content: dict, n: tuple) -> np.ndarray:
    """Where PtyPy puts a view of shape n at each position: its low corner (integer part
    ``round(pcoord) - n//2`` plus the sub-pixel offset), pcoord = (coord - origin)/psize."""
    s = content["obj"]["S00G00"]
    pcoord = (content["positions"]["S00G00"] - s["_origin"]) / s["_psize"]
    d = np.round(pcoord + 0.00001)
    return d - np.asarray(n) // 2 + (pcoord - d)


@pytest.mark.parametrize("fixture", ["ptycho_result", "multislice_result", "nearfield_result"])
def test_ptychodus_product_reads_back(fixture, request, tmp_path, capsys):
    res_path = request.getfixturevalue(fixture)
    res = read_h5(res_path)
    out = tmp_path / "product.h5"
    _export(res_path, "ptychodus", out)
    assert "wrote" in capsys.readouterr().out
    p = read_product(out)
    obj, probe = res["object"], res["probe"]
    # arrays unchanged: values, dtype, axis order (layers, y, x) / (modes, y, x)
    assert p["object"].dtype == np.complex64 and p["object"].shape == obj.shape
    np.testing.assert_array_equal(p["object"], obj)
    assert p["probe"].dtype == np.complex64 and p["probe"].shape == probe.shape
    np.testing.assert_array_equal(p["probe"], probe)
    # positions (m): x and y in separate datasets, the frames used as indexes
    np.testing.assert_array_equal(p["probe_position_x_m"], res["positions"][:, 1])
    np.testing.assert_array_equal(p["probe_position_y_m"], res["positions"][:, 0])
    np.testing.assert_array_equal(p["probe_position_indexes"], res["indices"])
    # pixel sizes (m) of object and probe: the object pixel
    for attrs in (p["object_attrs"], p["probe_attrs"]):
        assert attrs["pixel_width_m"] == attrs["pixel_height_m"] == res["pixel_size"]
    # the window lands on the same object pixels as in xrayflow
    np.testing.assert_allclose(corners_px(p), res["positions_px"], atol=1e-9)
    # layers: S - 1 spacings of slice_spacing
    with h5py.File(res_path) as f:
        attrs = dict(f.attrs)
    n_layers = obj.shape[0]
    np.testing.assert_allclose(
        p["object_layer_spacing_m"], np.full(n_layers - 1, attrs["slice_spacing"])
    )
    assert p["photon_energy_eV"] == attrs["energy_ev"]
    assert p["probe_photon_count"] == pytest.approx(np.sum(np.abs(probe) ** 2), rel=1e-6)
    np.testing.assert_array_equal(p["loss_values"], res["loss"])
    np.testing.assert_array_equal(p["loss_epochs"], np.arange(len(res["loss"])))
    near = fixture == "nearfield_result"
    assert bool(p["far_field"]) is (not near)
    expected = attrs["propagation_distance"] if near else attrs["distance"]
    assert p["detector_object_distance_m"] == expected
    assert p["name"] == res_path.stem and res_path.name in p["comments"]


def test_ptychodus_product_geometry_matches_the_simulation(ptycho_result, tmp_path):
    """The tiny data set is 8 keV at 2 m (tests/tiny_ptycho.py): both end up in the product,
    and with them the far-field pixel relation lambda z / (N p) holds."""
    out = tmp_path / "p.h5"
    _export(ptycho_result, "ptychodus", out)
    p = read_product(out)
    assert p["photon_energy_eV"] == 8000.0 and p["detector_object_distance_m"] == 2.0
    n = p["probe"].shape[-1]
    lam = wavelength(8000.0)
    assert p["object_attrs"]["pixel_width_m"] == pytest.approx(lam * 2.0 / (n * 75e-6), rel=1e-9)


def test_ptychodus_odd_object_grid_keeps_the_window_on_the_same_pixels(tmp_path):
    """The object centre attribute compensates ptychodus' (N-1)/2 convention for odd and
    even grids alike (positions stay unchanged)."""
    from xrayflow.io.hdf5 import write_h5

    rng = np.random.default_rng(1)
    obj = (rng.random((1, 41, 40)) + 1j).astype(np.complex64)
    probe = (rng.random((1, 16, 15)) + 0j).astype(np.complex64)
    corners = rng.uniform(0, 20, (5, 2))
    offset = np.array([41 // 2 - 16 // 2, 40 // 2 - 15 // 2])
    pix = 1e-8
    res = write_h5(
        tmp_path / "odd.h5",
        {
            "object": obj,
            "probe": probe,
            "positions": (corners - offset) * pix,
            "positions_px": corners,
            "indices": np.arange(5),
            "pixel_size": pix,
        },
        attrs={"model": "ptycho2d", "units": "metres", "energy_ev": 9000.0, "distance": 1.0},
    )
    out = tmp_path / "p.h5"
    _export(res, "ptychodus", out)
    p = read_product(out)
    assert p["object_attrs"]["center_y_m"] == pytest.approx(0.5 * pix)  # odd grid, even probe
    assert p["object_attrs"]["center_x_m"] == pytest.approx(-0.5 * pix)  # even grid, odd probe
    np.testing.assert_allclose(corners_px(p), corners, atol=1e-9)
    ptyr = tmp_path / "p.ptyr"
    _export(res, "ptypy", ptyr)
    np.testing.assert_allclose(_ptyr_corners(read_ptyr(ptyr)["content"], (16, 15)), corners)


@pytest.mark.parametrize("fixture", ["ptycho_result", "multislice_result", "nearfield_result"])
def test_ptypy_ptyr_reads_back(fixture, request, tmp_path):
    res_path = request.getfixturevalue(fixture)
    res = read_h5(res_path)
    out = tmp_path / "recon.ptyr"
    _export(res_path, "ptypy", out)
    r = read_ptyr(out)
    assert r["header"]["kind"] == "minimal" and r["attrs"]["h5rw_version"] == "0.1"
    c = r["content"]
    obj, probe, pix = res["object"], res["probe"], res["pixel_size"]
    o, pr = c["obj"]["S00G00"], c["probe"]["S00G00"]
    # object: one layer, the product of the slices (the slices kept separately)
    assert o["data"].dtype == np.complex64 and o["data"].shape == (1, *obj.shape[-2:])
    np.testing.assert_allclose(o["data"][0], np.prod(obj.astype(np.complex128), axis=0), rtol=1e-6)
    if obj.shape[0] > 1:
        np.testing.assert_array_equal(c["xrayflow"]["slices"], obj)
        with h5py.File(res_path) as f:
            assert c["xrayflow"]["slice_spacing"] == f.attrs["slice_spacing"]
    else:
        np.testing.assert_array_equal(o["data"], obj)
    # probe modes are the probe storage's layers
    np.testing.assert_array_equal(pr["data"], probe)
    assert pr["nlayers"] == probe.shape[0] and pr["layermap"] == list(range(probe.shape[0]))
    # storages: pixel size (y, x) m, centre at N//2, origin = -centre * psize
    for s, arr in ((o, obj), (pr, probe)):
        np.testing.assert_array_equal(s["_psize"], [pix, pix])
        np.testing.assert_array_equal(s["_center"], np.asarray(arr.shape[-2:]) // 2)
        np.testing.assert_allclose(s["_origin"], -s["_center"] * s["_psize"])
        assert s["shape"] == s["data"].shape and s["ID"] == "S00G00"
    # positions (y, x) m, and PtyPy's view placement reproduces xrayflow's corners
    np.testing.assert_array_equal(c["positions"]["S00G00"], res["positions"])
    np.testing.assert_allclose(_ptyr_corners(c, probe.shape[-2:]), res["positions_px"], atol=1e-9)
    np.testing.assert_array_equal(c["xrayflow"]["indices"], res["indices"])
    np.testing.assert_array_equal(c["xrayflow"]["loss"], res["loss"])
    scan = c["pars"]["scans"]["scan00"]
    assert scan["propagation"] == ("nearfield" if fixture == "nearfield_result" else "farfield")


def test_ptypy_scan_parameters_give_back_the_detector(ptycho_result, tmp_path):
    """energy in keV, distance in m and the detector pixel (75 um) from lambda z/(N dx)."""
    out = tmp_path / "recon.ptyr"
    _export(ptycho_result, "ptypy", out)
    data = read_ptyr(out)["content"]["pars"]["scans"]["scan00"]["data"]
    assert data["energy"] == 8.0 and data["distance"] == 2.0 and data["shape"] == 32
    assert data["psize"] == pytest.approx(75e-6, rel=1e-9)


def test_older_results_take_the_distance_from_the_data_file(ptycho_result, ptycho_data, tmp_path):
    """A result without the distance attribute (written before it was stored): refused
    with a message pointing at --data, exported with it."""
    old = tmp_path / "old.h5"
    old.write_bytes(ptycho_result.read_bytes())
    with h5py.File(old, "a") as f:
        del f.attrs["distance"]
    out = tmp_path / "p.h5"
    assert main(["export", str(old), "-f", "ptychodus", "-o", str(out)]) == 2
    assert not out.exists()
    _export(old, "ptychodus", out, "--data", str(ptycho_data))
    assert read_product(out)["detector_object_distance_m"] == 2.0


def test_ptychodus_reads_the_product(ptycho_result, tmp_path):
    """ptychodus' own reader (ptychodus.api.io.load_product), when installed."""
    io = pytest.importorskip("ptychodus.api.io")
    out = tmp_path / "product.h5"
    _export(ptycho_result, "ptychodus", out)
    product = io.load_product(out)
    res = read_h5(ptycho_result)
    np.testing.assert_array_equal(product.object_.get_array(), res["object"])
    # ptychodus holds probes as (coherent, incoherent, y, x)
    np.testing.assert_array_equal(product.probes.get_array()[0], res["probe"])
    geo = product.object_.get_geometry()
    assert geo.pixel_width_m == res["pixel_size"]
    x = geo.map_probe_positions_to_object_x_px(product.probe_positions)
    y = geo.map_probe_positions_to_object_y_px(product.probe_positions)
    n = res["probe"].shape[-1]
    np.testing.assert_allclose(np.stack([y, x], -1) - (n - 1) / 2, res["positions_px"], atol=1e-9)
    assert product.metadata.detector_distance_m == 2.0
    assert product.metadata.photon_energy_eV == 8000.0 and product.metadata.far_field


def test_ptypy_reads_the_ptyr(ptycho_result, tmp_path):
    """PtyPy's own h5read and Storage/View classes, when installed: the view of the first
    position starts at xrayflow's corner."""
    ptypy = pytest.importorskip("ptypy")
    from ptypy import io as pio
    from ptypy.core.classes import Container, Storage, View

    out = tmp_path / "recon.ptyr"
    _export(ptycho_result, "ptypy", out)
    assert pio.h5read(str(out), "header")["header"]["kind"] == "minimal"
    content = pio.h5read(str(out), "content")["content"]
    res = read_h5(ptycho_result)
    owner = ptypy.core.Ptycho(ptypy.utils.Param(), level=0)
    container = Container(owner, ID="Cobj", data_type="complex")
    s = dict(content["obj"]["S00G00"], owner=container)
    storage = Storage._from_dict(s)
    container._new_ptypy_object(storage)
    n = res["probe"].shape[-2:]
    for pos, corner in zip(content["positions"]["S00G00"], res["positions_px"], strict=True):
        rule = {"storageID": storage.ID, "shape": n, "coord": pos, "psize": storage.psize}
        v = View(container, ID=None, accessrule=dict(rule, layer=0, active=True))
        np.testing.assert_allclose(v.dlow + v.sp, corner, atol=1e-9)
    np.testing.assert_array_equal(storage.data, res["object"])
