"""HDF5/CXI input and output: round trips, foreign layouts, corrupt files, atomic writes."""

import h5py
import numpy as np
import pytest

from xrayflow.errors import DataError
from xrayflow.io.atomic import atomic_path
from xrayflow.io.cxi import (
    DiffractionData,
    read_cxi,
    read_cxi_geometry,
    read_cxi_meta,
    write_cxi,
)
from xrayflow.io.hdf5 import read_h5, write_h5
from xrayflow.optics.constants import EV_TO_J


def _data(p=6, n=8, seed=0):
    rng = np.random.default_rng(seed)
    mask = np.ones((n, n), bool)
    mask[0, 1] = False
    return DiffractionData(
        data=rng.poisson(3.0, (p, n, n)).astype(np.float32),
        energy_ev=8000.0,
        distance=2.0,
        pixel_size=(75e-6, 55e-6),
        positions=rng.normal(size=(p, 2)) * 1e-6,
        mask=mask,
        angles=np.linspace(0, 1, p),
        truth={"object": np.ones((12, 12), np.complex64), "pixel_size": 6e-8},
        config={"modality": "ptycho2d", "scan": {"step": 1e-6}},
        provenance={"seed": 3, "git_commit": "abc"},
        attrs={"modality": "ptycho2d", "photons": 1e6},
    )


def test_cxi_round_trip(tmp_path):
    d = _data()
    path = write_cxi(tmp_path / "d.cxi", d)
    r = read_cxi(path)
    np.testing.assert_array_equal(r.data, d.data)
    assert r.data.dtype == np.float32 and r.centred
    np.testing.assert_allclose(r.positions, d.positions)
    np.testing.assert_allclose(r.angles, d.angles)
    np.testing.assert_array_equal(r.mask, d.mask)
    assert r.energy_ev == pytest.approx(8000.0)
    assert r.distance == 2.0 and r.pixel_size == (75e-6, 55e-6)
    assert r.config == d.config and r.provenance["seed"] == 3
    assert r.attrs["modality"] == "ptycho2d"
    np.testing.assert_array_equal(r.truth["object"], d.truth["object"])
    with h5py.File(path) as f:
        # CXI conventions on disk
        assert f["cxi_version"][()] == 160
        assert f["entry_1/instrument_1/source_1/energy"][()] == pytest.approx(8000 * EV_TO_J)
        assert f["entry_1/instrument_1/detector_1/mask"][0, 1] == 1  # nonzero = bad
        tr = f["entry_1/sample_1/geometry_1/translation"][()]
        np.testing.assert_allclose(tr[:, :2], d.positions[:, ::-1])  # (x, y, z)
        assert f["entry_1/data_1/data"].chunks == (1, 8, 8)


def _frame_reads(monkeypatch) -> list:
    """The keys of every later read of a 3D frame dataset (filled as reads happen)."""
    reads = []
    orig = h5py.Dataset.__getitem__

    def spy(self, key):
        if self.name.endswith("/data") and self.ndim == 3:
            reads.append(key)
        return orig(self, key)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    return reads


def test_read_indices_only_those_frames(tmp_path, monkeypatch):
    d = _data(p=10)
    path = write_cxi(tmp_path / "d.cxi", d)
    r = read_cxi(path, indices=[7, 2, 3], truth=False)
    np.testing.assert_array_equal(r.data, d.data[[7, 2, 3]])
    np.testing.assert_allclose(r.positions, d.positions[[7, 2, 3]])
    assert r.truth == {}
    # only the requested chunks are read
    reads = _frame_reads(monkeypatch)
    read_cxi(path, indices=slice(4, 6))
    assert reads and all(isinstance(k, slice) and k.stop - k.start <= 2 for k in reads)


def test_meta_and_geometry_without_frames(tmp_path, monkeypatch):
    d = _data()
    path = write_cxi(tmp_path / "d.cxi", d)
    m = read_cxi_meta(path)
    assert m["shape"] == (6, 8, 8) and m["modality"] == "ptycho2d"
    assert "object" in m["truth_fields"]
    frames = _frame_reads(monkeypatch)
    pos, ang = read_cxi_geometry(path)
    assert frames == []
    np.testing.assert_allclose(pos, d.positions)
    np.testing.assert_allclose(ang, d.angles)
    with h5py.File(path, "a") as f:
        del f["entry_1/sample_1/geometry_1/rotation_angle"]
        f["entry_1/sample_1/geometry_1/rotation_angle"] = np.zeros(4)
    with pytest.raises(DataError, match="4 angles for 6 frames"):
        read_cxi_geometry(path)
    with pytest.raises(DataError, match="4 angles for 6 frames"):
        read_cxi(path)


def _cdtools_like(path, n=8, p=4, translations=None):
    """Layout written by cdtools.tools.data (create_cxi/add_source/add_detector/...)."""
    with h5py.File(path, "w") as f:
        f["cxi_version"] = 160
        f["number_of_entries"] = 1
        e = f.create_group("entry_1")
        s = e.create_group("instrument_1/source_1")
        wl = 1.9864459e-25 / (8000 * EV_TO_J)
        s["wavelength"] = np.float32(wl)
        s["energy"] = np.float32(1.9864459e-25 / wl)
        det = e["instrument_1"].create_group("detector_1")
        det["distance"] = np.float32(1.5)
        basis = np.array([[0, -55e-6, 0], [-55e-6, 0, 0]]).T
        det["x_pixel_size"] = np.linalg.norm(basis[:, 1])
        det["y_pixel_size"] = np.linalg.norm(basis[:, 0])
        det["basis_vectors"] = basis
        det.create_dataset(
            "data", data=np.full((p, n, n), 2.0, np.float32), chunks=True, compression="gzip"
        )
        e.create_group("data_1")["data"] = h5py.SoftLink("/entry_1/instrument_1/detector_1/data")
        g = e.create_group("sample_1/geometry_1")
        g["translation"] = translations
        e["data_1"]["translation"] = h5py.SoftLink("/entry_1/sample_1/geometry_1/translation")
        m = np.zeros((n, n), np.uint32)
        m[2, 2] = 1
        det["mask"] = m


def test_read_cdtools_style(tmp_path):
    tr = np.array([[1e-6, 2e-6, 0], [0, 0, 0], [-1e-6, 0, 0], [0, -3e-6, 0]])
    _cdtools_like(tmp_path / "c.cxi", translations=tr)
    r = read_cxi(tmp_path / "c.cxi")
    assert r.data.shape == (4, 8, 8)
    assert r.energy_ev == pytest.approx(8000, rel=1e-5)
    assert r.distance == pytest.approx(1.5) and r.pixel_size == pytest.approx((55e-6, 55e-6))
    # default cdtools basis: probe position (y, x) = CXI translation (y, x)
    np.testing.assert_allclose(r.positions, tr[:, [1, 0]])
    assert not r.mask[2, 2] and r.mask.sum() == 63


def test_read_cxidb_style(tmp_path):
    """CXIDB deposition: data in entry_1/data_1/data (2D), energy in J, translation in data_1."""
    with h5py.File(tmp_path / "db.cxi", "w") as f:
        f["cxi_version"] = 140
        f["entry_1/data_1/data"] = np.ones((16, 16), np.int32)
        f["entry_1/instrument_1/source_1/energy"] = 1.2e-15  # J (~7.5 keV)
        f["entry_1/instrument_1/detector_1/distance"] = 0.7
        f["entry_1/instrument_1/detector_1/x_pixel_size"] = 75e-6
        f["entry_1/data_1/translation"] = np.array([[3e-6, 1e-6, 0.0]])
    r = read_cxi(tmp_path / "db.cxi")
    assert r.data.shape == (1, 16, 16) and r.data.dtype == np.float32
    assert r.pixel_size == (75e-6, 75e-6)
    assert r.energy_ev == pytest.approx(1.2e-15 / EV_TO_J)
    np.testing.assert_allclose(r.positions, [[1e-6, 3e-6]])


@pytest.mark.parametrize(
    "mutate, match",
    [
        (
            lambda f: (
                f.__delitem__("entry_1/instrument_1/source_1/energy")
                or f.__delitem__("entry_1/instrument_1/source_1/wavelength")
            ),
            "energy",
        ),
        (lambda f: f.__delitem__("entry_1/instrument_1/detector_1/distance"), "distance"),
        (lambda f: f.__delitem__("entry_1/instrument_1/detector_1/data"), "no diffraction data"),
        (
            lambda f: (
                f["entry_1/sample_1/geometry_1"].__delitem__("translation")
                or f["entry_1/sample_1/geometry_1"].create_dataset(
                    "translation", data=np.zeros((2, 3))
                )
            ),
            "positions",
        ),
        (
            lambda f: (
                f["entry_1/instrument_1/detector_1"].__delitem__("mask")
                or f["entry_1/instrument_1/detector_1"].create_dataset(
                    "mask", data=np.zeros((3, 3))
                )
            ),
            "mask",
        ),
    ],
)
def test_unusable_files_raise_data_error(tmp_path, mutate, match):
    path = write_cxi(tmp_path / "d.cxi", _data())
    with h5py.File(path, "a") as f:
        mutate(f)
    with pytest.raises(DataError, match=match):
        read_cxi(path)


@pytest.mark.parametrize("bad, match", [(np.nan, "non-finite"), (-1.0, "negative")])
def test_nan_and_negative_counts(tmp_path, bad, match):
    path = write_cxi(tmp_path / "d.cxi", _data())
    with h5py.File(path, "a") as f:
        ds = f["entry_1/instrument_1/detector_1/data"]
        frame = ds[3]
        frame[4, 4] = bad
        ds[3] = frame
    with pytest.raises(DataError, match=match):
        read_cxi(path)
    read_cxi(path, indices=[0, 1])  # the bad frame is not read


def test_write_refuses_bad_data(tmp_path):
    d = _data()
    d.data[0, 0, 0] = np.nan
    with pytest.raises(DataError):
        write_cxi(tmp_path / "d.cxi", d)
    assert not list(tmp_path.iterdir())


def test_truncated_and_garbage_files(tmp_path):
    path = write_cxi(tmp_path / "d.cxi", _data(p=40, n=32), compression=None)
    raw = path.read_bytes()
    trunc = tmp_path / "t.cxi"
    trunc.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError):
        read_cxi(trunc)
    junk = tmp_path / "j.cxi"
    junk.write_bytes(b"not an hdf5 file at all" * 10)
    with pytest.raises(DataError, match="not a readable HDF5"):
        read_cxi(junk)
    with pytest.raises(DataError, match="does not exist"):
        read_cxi(tmp_path / "missing.cxi")
    with h5py.File(tmp_path / "empty.h5", "w"):
        pass
    with pytest.raises(DataError, match="not a CXI file"):
        read_cxi(tmp_path / "empty.h5")


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.h5"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("new")
            raise RuntimeError("boom")
    assert target.read_text() == "old" and len(list(tmp_path.iterdir())) == 1
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and len(list(tmp_path.iterdir())) == 1


def test_h5_tree_round_trip(tmp_path):
    tree = {
        "config": {"a": {"b": [1, 2]}, "s": "x"},
        "arr": np.arange(6.0).reshape(2, 3),
        "cplx": np.ones(3, np.complex64),
        "group": {"@units": "m", "scalar": 2.5, "flag": True, "text": "hé", "names": ["a", "b"]},
        "skip": None,
    }
    write_h5(tmp_path / "t.h5", tree)
    r = read_h5(tmp_path / "t.h5")
    assert r["config"] == tree["config"]
    np.testing.assert_array_equal(r["arr"], tree["arr"])
    assert r["cplx"].dtype == np.complex64
    assert r["group"]["@units"] == "m" and r["group"]["scalar"] == 2.5
    assert r["group"]["text"] == "hé" and r["group"]["names"] == ["a", "b"]
    assert "skip" not in r
    with pytest.raises(DataError):
        write_h5(tmp_path / "bad.h5", {"x": object()})
    assert not (tmp_path / "bad.h5").exists()
