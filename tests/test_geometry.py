"""The geometry value object: closed forms, config and file constructors, the CXI writer and
reader (plain CXI files, files written before the names were unified)."""

import dataclasses

import h5py
import numpy as np
import pytest
from scipy import constants as codata

from xrayflow.geometry import ATTR_NAMES, Geometry, recorded_geometry
from xrayflow.io.cxi import (
    DiffractionData,
    read_cxi,
    read_cxi_meta,
    read_geometry,
    read_object_pixel,
    write_cxi,
)
from xrayflow.optics.constants import EV_TO_J, wavelength


def _cfg(shape=64, pixel=75e-6, distance=2.0, binning=1, energy=8000.0):
    return {
        "energy_ev": energy,
        "geometry": {
            "shape": shape,
            "pixel_size": pixel,
            "distance": distance,
            "binning": binning,
        },
    }


def test_wavelength_is_hc_over_e_with_codata_constants():
    for e in (250.0, 8000.0, 12398.4198, 150e3):
        closed = codata.h * codata.c / (e * codata.e)
        assert wavelength(e) == pytest.approx(closed, rel=1e-14)
        assert Geometry(e, 1.0, (1e-6, 1e-6)).wavelength == pytest.approx(closed, rel=1e-14)
    assert wavelength(12398.419843320026) == pytest.approx(1e-10, rel=1e-12)


def test_far_field_object_pixel_and_binning():
    g = Geometry.from_config(_cfg(shape=[64, 32], pixel=[75e-6, 55e-6], distance=2.0))
    lam = codata.h * codata.c / (8000 * codata.e)
    assert g.far_field and g.shape == (64, 32)
    assert g.object_pixel == pytest.approx((lam * 2.0 / (64 * 75e-6), lam * 2.0 / (32 * 55e-6)))
    assert g.effective_distances is None and g.magnifications is None
    # binning b: N -> N/b pixels of pitch b*p, the object pixel is unchanged
    b = Geometry.from_config(_cfg(shape=[64, 32], pixel=[75e-6, 55e-6], binning=2))
    assert b.frame_shape == (32, 16) and b.frame_pixel_size == (150e-6, 110e-6)
    assert b.object_pixel == pytest.approx(g.object_pixel, rel=1e-15)
    # from the stored frames: the same geometry
    f = Geometry.from_frames(8000.0, 2.0, b.frame_pixel_size, b.frame_shape, b.attrs())
    assert f.object_pixel == b.object_pixel and f.pixel_size == b.pixel_size
    assert f.binning == 2 and f.shape == (64, 32)


def test_cone_beam_effective_distance_and_magnification():
    z1, z2 = 0.2, (0.4, 0.5)
    g = Geometry.from_config(_cfg(pixel=1e-6), distances=z2, source_distance=z1)
    assert not g.far_field and g.distance == 0.4
    np.testing.assert_allclose(g.effective_distances, [z1 * z / (z1 + z) for z in z2], rtol=1e-15)
    np.testing.assert_allclose(g.magnifications, [(z1 + z) / z1 for z in z2], rtol=1e-15)
    np.testing.assert_allclose(g.magnifications, [3.0, 3.5])
    assert g.object_pixel == pytest.approx((1e-6 / 3, 1e-6 / 3))  # p / M of the first distance
    # binned real-space frames: their sample-plane pixel is object pixel x binning
    b = Geometry.from_config(_cfg(pixel=1e-6, binning=2), distances=z2, source_distance=z1)
    assert b.binned_object_pixel == pytest.approx((2e-6 / 3, 2e-6 / 3))
    # plane wave: z_eff = z2, M = 1, object pixel = detector pixel
    p = Geometry.from_config(_cfg(pixel=1e-6), distances=z2)
    assert p.effective_distances == z2 and p.magnifications == (1.0, 1.0)
    assert p.object_pixel == (1e-6, 1e-6) and p.source_distance is None


def _data(geo: Geometry, truth=None, attrs=None):
    frames = np.ones((len(geo.distances or (0, 0)), *geo.frame_shape), np.float32)
    return DiffractionData(
        frames,
        geo.energy_ev,
        geo.distance,
        geo.frame_pixel_size,
        truth=truth or {},
        attrs={"modality": "holography", **geo.attrs(), **(attrs or {})},
    )


def test_write_read_round_trip(tmp_path):
    geo = Geometry.from_config(_cfg(shape=32, pixel=3e-6, binning=2), (0.4, 0.5), 0.2)
    geo = dataclasses.replace(geo, object_pixel=(1.01e-6, 1.01e-6), slice_spacing=2e-7)
    path = write_cxi(tmp_path / "g.cxi", _data(geo))
    with h5py.File(path) as f:
        got = read_geometry(f, str(path))
        assert f["entry_1/instrument_1/source_1/energy"][()] == 8000.0 * codata.e
        assert set(f["entry_1/xrayflow_attrs"]) == {"modality", *ATTR_NAMES}
        assert f["entry_1/xrayflow_attrs/object_pixel_size"][()] == 1.01e-6
    assert got == geo
    assert read_cxi(path).geometry == geo
    meta = read_cxi_meta(path)
    assert meta["geometry"] == geo and meta["pixel_size"] == (6e-6, 6e-6)
    # a far-field geometry with rectangular object pixels keeps (y, x)
    ff = Geometry.from_config(_cfg(shape=[16, 8], pixel=[75e-6, 55e-6]))
    d = DiffractionData(
        np.ones((1, 16, 8), np.float32), 8000.0, 2.0, ff.frame_pixel_size, attrs=ff.attrs()
    )
    write_cxi(tmp_path / "f.cxi", d)
    with h5py.File(tmp_path / "f.cxi") as f:
        assert f["entry_1/xrayflow_attrs/object_pixel_size"].shape == (2,)  # (y, x)
    assert read_cxi(tmp_path / "f.cxi").geometry.object_pixel == ff.object_pixel
    # frames without a recorded object pixel: none is invented when written
    write_cxi(tmp_path / "n.cxi", dataclasses.replace(d, attrs={}))
    with h5py.File(tmp_path / "n.cxi") as f:
        assert set(f["entry_1/xrayflow_attrs"]) == {"binning"}


def test_plain_cxi_with_energy_in_joules(tmp_path):
    """A standard CXI file from another facility: energy (J), distance, pixel sizes only."""
    path = tmp_path / "plain.cxi"
    energy_j = 1.2e-15
    with h5py.File(path, "w") as f:
        f["entry_1/instrument_1/source_1/energy"] = energy_j
        f["entry_1/instrument_1/detector_1/distance"] = 0.7
        f["entry_1/instrument_1/detector_1/x_pixel_size"] = 75e-6
        f["entry_1/instrument_1/detector_1/y_pixel_size"] = 75e-6
        f["entry_1/instrument_1/detector_1/data"] = np.ones((2, 16, 16), np.float32)
    with h5py.File(path) as f:
        assert read_geometry(f, str(path)).object_pixel is None  # recorded: none
        assert read_object_pixel(f, str(path)) is None
        geo = read_geometry(f, str(path), far_field=True)  # read as far-field frames
    e_ev = energy_j / codata.e
    lam = codata.h * codata.c / energy_j
    assert geo.energy_ev == pytest.approx(e_ev, rel=1e-15)
    assert geo.wavelength == pytest.approx(lam, rel=1e-14)
    assert geo.binning == 1 and geo.frame_pixel_size == (75e-6, 75e-6)
    assert geo.object_pixel == pytest.approx((lam * 0.7 / (16 * 75e-6),) * 2, rel=1e-14)
    assert geo.slice_spacing is None and geo.distances is None and geo.far_field
    assert read_cxi(path).energy_ev == pytest.approx(energy_j / EV_TO_J, rel=1e-15)


def test_older_names_are_read_and_not_written(tmp_path):
    """Files written before: object pixel in truth pixel_size (or voxel_size), near-field
    frames' pixel in frame_pixel_size, slice spacing as the truth's slab thicknesses."""
    assert recorded_geometry({}, {"voxel_size": 5e-8})["object_pixel"] == (5e-8, 5e-8)
    assert recorded_geometry({"frame_pixel_size": 4e-8, "binning": 2})["object_pixel"] == (
        2e-8,
        2e-8,
    )
    path = tmp_path / "old.cxi"
    d = DiffractionData(np.ones((2, 8, 8), np.float32), 8000.0, 0.4, (2e-6, 2e-6))
    write_cxi(path, d)
    with h5py.File(path, "a") as f:  # the holography attributes as they were written
        del f["entry_1/xrayflow_attrs"]
        a = f.create_group("entry_1/xrayflow_attrs")
        a["distances"] = np.array([0.4, 0.5])
        z2 = np.array([0.4, 0.5])  # as the simulation computed them:
        a["effective_distances"] = 0.2 * z2 / (0.2 + z2)
        a["magnifications"] = (0.2 + z2) / 0.2
        a["source_distance"] = 0.2
        a["binning"] = 2
        a["frame_pixel_size"] = 2e-6 / 3 * 2
        t = f.create_group("entry_1/xrayflow_truth")
        t["pixel_size"] = 2e-6 / 3
        t["slice_thickness"] = np.array([3e-7, 3e-7, 4e-7])
    r = read_cxi(path)
    geo = r.geometry
    assert geo.object_pixel == (2e-6 / 3, 2e-6 / 3)
    assert geo.binned_object_pixel[1] == 2e-6 / 3 * 2
    assert geo.slice_spacing == 3e-7 and geo.source_distance == 0.2
    # recomputed from distances and source distance: the stored values, bit for bit
    np.testing.assert_array_equal(geo.effective_distances, 0.2 * z2 / (0.2 + z2))
    np.testing.assert_array_equal(geo.magnifications, (0.2 + z2) / 0.2)
    with h5py.File(path) as f:
        assert read_geometry(f, str(path)) == geo
        assert read_object_pixel(f, str(path)) == geo.object_pixel
    # written again: one name per quantity
    write_cxi(tmp_path / "new.cxi", r)
    with h5py.File(tmp_path / "new.cxi") as f:
        assert "frame_pixel_size" not in f["entry_1/xrayflow_attrs"]
        assert not {"pixel_size", "slice_thickness"} & set(f["entry_1/xrayflow_truth"])
        assert f["entry_1/xrayflow_attrs/object_pixel_size"][()] == 2e-6 / 3
        assert f["entry_1/xrayflow_attrs/slice_spacing"][()] == 3e-7
        assert read_geometry(f, "new") == geo
