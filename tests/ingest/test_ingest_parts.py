"""The parts of the ingest on small arrays: corrections, centre and crop, binning,
positions tables and datasets, NeXus units and the geometry overrides."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import yaml
from conftest import ROOT, bad_pixels, cli, window

from xrayflow.config import load_config
from xrayflow.errors import ConfigError, DataError
from xrayflow.ingest.corrections import centre_of_mass, crop_window, flat_response, to_photons
from xrayflow.ingest.master import master_geometry
from xrayflow.ingest.positions import read_positions
from xrayflow.io.cxi import read_cxi

POSITIONS = {"file": None, "key": None, "columns": [0, 1], "order": "yx", "units": "m",
             "negate": False, "centre": False}  # fmt: skip


def test_to_photons_order_of_corrections():
    raw = np.array([[[110, 130], [99, 170]]], np.uint16)
    dark = np.full((2, 2), 90, np.float32)
    flat = np.array([[1.0, 2.0], [1.0, 0.5]], np.float32)
    good = np.array([[True, True], [True, False]])
    got = to_photons(raw, dark, flat, gain=4.0, offset=10.0, rounding=False, good=good)
    # (raw - dark - offset) / gain / flat; negative -> 0; bad -> 0
    np.testing.assert_allclose(got, [[[2.5, 3.75], [0.0, 0.0]]])
    assert got.dtype == np.float32
    got = to_photons(raw, None, None, 4.0, 0.0, True, np.ones((2, 2), bool))
    np.testing.assert_array_equal(got, np.rint(raw / 4.0))
    nan = np.array([[[np.nan, 1.0], [1.0, np.nan]]], np.float32)
    got = to_photons(nan, None, None, 1.0, 0.0, False, good)
    assert np.isnan(got[0, 0, 0]) and got[0, 1, 1] == 0  # NaN kept at a good pixel only


def test_flat_response_is_normalised_to_its_median_and_masks_dead_pixels():
    flat = np.array([[1100.0, 1100.0, 2100.0], [600.0, 105.0, 1100.0]])
    resp, good = flat_response(flat, dark=np.full((2, 3), 90.0), offset=10.0, min_response=0.1)
    np.testing.assert_allclose(resp, [[1.0, 1.0, 2.0], [0.5, 1.0, 1.0]])
    np.testing.assert_array_equal(good, [[True, True, True], [True, False, True]])


def test_centre_of_mass_and_crop_window():
    yy, xx = np.indices((40, 48))
    frame = np.exp(-((yy - 21.2) ** 2 + (xx - 14.0) ** 2) / 8.0)
    cy, cx = centre_of_mass(frame, np.ones(frame.shape, bool))
    assert abs(cy - 21.2) < 1e-6 and abs(cx - 14.0) < 1e-6
    assert crop_window((cy, cx), (16, 20), frame.shape) == (slice(13, 29), slice(4, 24))
    with pytest.raises(ConfigError, match="ingest.crop.shape"):
        crop_window((cy, cx), (16, 32), frame.shape)
    with pytest.raises(DataError, match="no counts on the good pixels"):
        centre_of_mass(frame, np.zeros(frame.shape, bool))


def test_positions_from_a_text_table(tmp_path):
    path = tmp_path / "pos.txt"
    path.write_text("# motor scan\n# sx sy\n1.0 2.0 9\n3.0 4.0 9\n\n5.0 8.0 9\n")
    cfg = {**POSITIONS, "file": str(path), "order": "xy", "units": "mm"}
    np.testing.assert_allclose(
        read_positions(cfg, "", 3), [[2e-3, 1e-3], [4e-3, 3e-3], [8e-3, 5e-3]]
    )
    cfg.update(negate=True, centre=True)
    np.testing.assert_allclose(
        read_positions(cfg, "", 3), [[3e-3, 2e-3], [1e-3, 0.0], [-3e-3, -2e-3]]
    )
    path.write_text("# sx sy\n1.0 2.0\n3.0 x\n")
    with pytest.raises(DataError, match="pos.txt, line 3"):
        read_positions(cfg, "", 2)


def test_positions_from_hdf5_datasets(tmp_path):
    table = np.array([[0.0, 1.0, 2.0], [0.0, 3.0, 4.0]])
    with h5py.File(tmp_path / "scan.h5", "w") as f:
        f["table"] = table
        f["sy"], f["sx"] = table[:, 1], table[:, 2]
    cfg = {**POSITIONS, "file": str(tmp_path / "scan.h5"), "key": "table", "columns": [1, 2]}
    np.testing.assert_array_equal(read_positions(cfg, "", 2), table[:, 1:])
    cfg.update(key=["sx", "sy"], order="xy")
    np.testing.assert_array_equal(read_positions(cfg, "", 2), table[:, 1:])
    with pytest.raises(DataError, match="2 positions but the frames number 3"):
        read_positions(cfg, "", 3)


def test_nexus_units_and_nxclass_lookup(tmp_path):
    path = tmp_path / "master.h5"
    with h5py.File(path, "w") as f:
        det = f.create_group("entry/instrument/eiger")
        det.attrs["NX_class"] = "NXdetector"
        for key, value, units in (
            ("distance", 350.0, "mm"),
            ("x_pixel_size", 75.0, "um"),
            ("beam_center_x", 1.5, "mm"),
            ("beam_center_y", 30.0, "pixel"),
        ):
            det[key] = value
            det[key].attrs["units"] = units
        f["entry/instrument/monochromator/energy"] = 12.4
        f["entry/instrument/monochromator/energy"].attrs["units"] = "keV"
    with h5py.File(path) as f:
        geo = master_geometry(f, str(path))
    assert geo["energy_ev"][0] == pytest.approx(12400.0)
    assert geo["distance"][0] == pytest.approx(0.35)
    assert geo["pixel_size"][0] == pytest.approx((75e-6, 75e-6))  # one of the two suffices
    assert geo["centre"][0] == pytest.approx((30.0, 20.0))
    assert geo["saturation"] is None


def test_crop_around_the_centre_of_mass_and_binning(beamline, simulated):
    truth = read_cxi(simulated, truth=False)
    cfg = yaml.safe_load((beamline / "ingest.yaml").read_text())
    cfg["crop"]["centre"] = "com"
    cfg["binning"] = 2
    (beamline / "ingest.yaml").write_text(yaml.safe_dump(cfg))
    rc, out, err = cli("ingest", "-c", beamline / "ingest.yaml", "--out", beamline / "b.cxi")
    assert rc == 0, err
    assert "rows 3..34, columns 9..40, binning 2" in out  # the centre of mass is (19, 25)
    got = read_cxi(beamline / "b.cxi")
    good = ~bad_pixels()[window()]
    good2 = good.reshape(16, 2, 16, 2).all(axis=(1, 3))
    binned = (truth.data * good).reshape(16, 16, 2, 16, 2).sum(axis=(2, 4)) * good2
    np.testing.assert_array_equal(got.data, binned)
    np.testing.assert_array_equal(got.mask, good2)
    assert got.pixel_size == (150e-6, 150e-6) and got.attrs["binning"] == 2


def test_geometry_overrides_and_missing_geometry(beamline):
    with h5py.File(beamline / "scan_master.h5", "a") as f:
        del f["entry/instrument/beam"]
    rc, _, err = cli("ingest", "-c", beamline / "ingest.yaml", "--out", beamline / "o.cxi")
    assert rc == 2 and "no photon energy" in err and "set ingest.geometry.energy_ev" in err
    rc, _, err = cli(
        "ingest", "-c", beamline / "ingest.yaml", "--out", beamline / "o.cxi",
        "--set", "geometry.energy_ev=9000", "--set", "geometry.distance=3.5",
    )  # fmt: skip
    assert rc == 0, err
    got = read_cxi(beamline / "o.cxi")
    assert got.energy_ev == pytest.approx(9000.0) and got.distance == 3.5
    assert got.data.shape == (16, 32, 32)


def test_help_and_example_config():
    rc, out, _ = cli("ingest", "--help")
    assert rc == 0 and "usage: xrayflow ingest" in out and "``" not in out
    cfg = load_config(ROOT / "config/ingest/eiger.yaml", "ingest")
    assert cfg["frames"]["dataset"] == "auto" and cfg["positions"]["units"] == "um"


def test_frames_from_listed_data_files_equal_those_behind_the_links(beamline):
    rc, _, err = cli("ingest", "-c", beamline / "ingest.yaml", "--out", beamline / "links.cxi")
    assert rc == 0, err
    files = [str(beamline / f"scan_data_{i:06d}.h5") for i in (1, 2)]
    rc, _, err = cli(
        "ingest", "-c", beamline / "ingest.yaml", "--out", beamline / "files.cxi",
        "--set", f"frames.files=[{', '.join(files)}]",
    )  # fmt: skip
    assert rc == 0, err
    np.testing.assert_array_equal(
        read_cxi(beamline / "files.cxi").data, read_cxi(beamline / "links.cxi").data
    )
