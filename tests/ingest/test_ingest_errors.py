"""Bad ingest inputs exit with status 2 and one line naming the file, key or frame, no
traceback, and leave no output (an existing one untouched) and no temporary file."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from conftest import cli


def ingest(folder, *extra):
    return cli("ingest", "-c", folder / "ingest.yaml", "--out", folder / "out.cxi", *extra)


def assert_refused(folder, err: str, *needles: str) -> None:
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert err.startswith("xrayflow ingest: error: ")
    for needle in needles:
        assert needle in err, err
    assert (folder / "out.cxi").read_text() == "old"  # untouched
    assert not list(folder.glob("out.cxi.tmp-*"))


@pytest.fixture()
def folder(beamline):
    (beamline / "out.cxi").write_text("old")
    return beamline


@pytest.mark.parametrize(
    ("override", "needles"),
    [
        ("crop.shap=[32,32]", ["ingest.crop.shap: unknown key; did you mean 'shape'?"]),
        ("binning=0", ["ingest.binning: 0 is less than the minimum of 1"]),
        ("positions.units=inch", ["ingest.positions.units: 'inch' is not one of"]),
        ("crop.centre=middle", ["ingest.crop.centre"]),
        ("crop.shape=[48,48]", ["ingest.crop.shape: [48, 48] around the centre (19, 25)"]),
        ("binning=3", ["ingest.binning: 3 does not divide the 32x32 frames"]),
        ("master=nowhere.h5", ["'nowhere.h5': file does not exist"]),
        ("frames.dataset=/entry/data/none", ["scan_master.h5: no dataset '/entry/data/none'"]),
        ("positions.columns=[x_um,z_um]", ["scan.csv: no column 'z_um'"]),
        ("compute.max_memory_gb=1e-5", ["ingest needs about", "ingest.compute.max_memory_gb"]),
    ],
)
def test_bad_config_values_are_named(folder, override, needles):
    rc, _, err = ingest(folder, "--set", override)
    assert rc == 2
    assert_refused(folder, err, *needles)


def test_broken_external_link_names_link_and_file(folder):
    (folder / "scan_data_000002.h5").unlink()
    rc, _, err = ingest(folder)
    assert rc == 2
    assert_refused(
        folder, err, "scan_master.h5: /entry/data/data_000002 is an external link to "
        "scan_data_000002.h5:/entry/data/data, which cannot be opened (file not found)",
    )  # fmt: skip


def test_frame_count_mismatch_names_the_positions_file(folder):
    csv = folder / "scan.csv"
    csv.write_text("".join(csv.read_text().splitlines(keepends=True)[:-1]))
    rc, _, err = ingest(folder)
    assert rc == 2
    assert_refused(folder, err, "scan.csv: 15 positions but the frames number 16")


def test_mask_of_the_wrong_shape_is_named(folder):
    np.save(folder / "beamstop.npy", np.zeros((40, 47), bool))
    rc, _, err = ingest(folder)
    assert rc == 2
    assert_refused(folder, err, "beamstop.npy: mask of shape (40, 47), the detector has (40, 48)")


def test_dark_of_the_wrong_shape_is_named(folder):
    with h5py.File(folder / "calib.h5", "a") as f:
        del f["dark"]
        f["dark"] = np.zeros((2, 40, 40), np.uint32)
    rc, _, err = ingest(folder)
    assert rc == 2
    assert_refused(folder, err, "calib.h5:/dark (dark): frames of (40, 40) pixels")


@pytest.mark.parametrize("target", ["scan_master.h5", "scan_data_000001.h5", "scan.csv"])
def test_output_never_overwrites_an_input(folder, target):
    before = (folder / target).read_bytes()
    rc, _, err = cli("ingest", "-c", folder / "ingest.yaml", "--out", folder / target)
    assert rc == 2 and "would overwrite the input" in err, err
    assert (folder / target).read_bytes() == before


def test_corrupt_chunk_is_named(folder):
    path = folder / "scan_data_000002.h5"
    with h5py.File(path) as f:
        info = f["entry/data/data"].id.get_chunk_info(3)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + 16)
        fh.write(b"\xff" * (info.size - 16))
    rc, _, err = ingest(folder)
    assert rc == 2
    assert_refused(folder, err, "scan_master.h5:/entry/data/data_000002: cannot read frames")


def test_nan_met_while_writing_leaves_no_output(folder):
    """A NaN at a good pixel of frame 11 (data file 2, float frames) is found by the pass
    that writes the frames: the partly written file is removed."""
    path = folder / "scan_data_000002.h5"
    with h5py.File(path, "a") as f:
        frames = f["entry/data/data"][()].astype(np.float32)
        frames[3, 10, 30] = np.nan
        del f["entry/data/data"]
        f["entry/data/data"] = frames
    rc, _, err = ingest(folder)
    assert rc == 2
    assert_refused(folder, err, "non-finite counts", "first in frame 11 at pixel (7, 21)")
