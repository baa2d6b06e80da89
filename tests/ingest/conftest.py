"""Synthetic beamline files for the ingest tests: an Eiger-style NeXus master file whose
frames sit in bitshuffle/LZ4 compressed data files behind external links, dark and flat
frames, a detector pixel mask, a beamstop mask (.npy) and a positions CSV, made from a small
simulated ptycho2d data set (the ground truth)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pytest
import yaml

from xrayflow.cli import main
from xrayflow.io.cxi import read_cxi
from xrayflow.optics.constants import wavelength

GAIN = 4.0  # ADU per photon
OFFSET = 10.0  # ADU
DETECTOR = (40, 48)  # detector pixels (y, x)
CENTRE = (19, 25)  # diffraction centre on the detector: the truth's pixel (16, 16)
FLAT_LEVEL = 1000  # ADU per pixel of unit response in the flat frames
SATURATION = 1_000_000  # ADU
SATURATED = (5, 19, 28)  # (frame, y, x) of the one saturated reading
DEAD_COLUMN = 20  # detector column marked bad in the NXdetector pixel_mask
BEAMSTOP = (slice(18, 20), slice(24, 26))  # detector pixels of the .npy mask
ROOT = Path(__file__).resolve().parents[2]


def cli(*argv) -> tuple[int, str, str]:
    """``xrayflow ARGV`` in process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def window() -> tuple[slice, slice]:
    """Detector rows and columns of the 32x32 truth frames."""
    return slice(CENTRE[0] - 16, CENTRE[0] + 16), slice(CENTRE[1] - 16, CENTRE[1] + 16)


def flat_response() -> np.ndarray:
    """Pixel response of median 1 whose flat frames give it back exactly."""
    resp = np.ones(DETECTOR)
    resp[::3, ::2] = 0.8
    resp[1::3, ::2] = 1.25
    return resp


def bad_pixels() -> np.ndarray:
    """Detector pixels the ingest must mask (True): dead column, beamstop, saturated."""
    bad = np.zeros(DETECTOR, dtype=bool)
    bad[:, DEAD_COLUMN] = True
    bad[BEAMSTOP] = True
    bad[SATURATED[1:]] = True
    return bad


def write_eiger(folder: Path, photons: np.ndarray, n_files: int = 2) -> Path:
    """Raw ADU frames of ``photons`` (P, 32, 32) on the detector, written as an Eiger
    does: master file plus ``n_files`` bitshuffle/LZ4 data files; dark and flat frames in
    ``calib.h5``; ``beamstop.npy``. Returns the master file."""
    rng = np.random.default_rng(0)
    dark = rng.integers(90, 110, DETECTOR).astype(np.float64)
    resp = flat_response()
    det = np.zeros((photons.shape[0], *DETECTOR))
    det[(slice(None), *window())] = photons
    raw = dark + OFFSET + np.rint(det * GAIN * resp)
    raw[:, :, DEAD_COLUMN] = 0
    raw[SATURATED] = SATURATION + 5
    raw = raw.astype(np.uint32)
    bitshuffle = hdf5plugin.Bitshuffle(cname="lz4")
    names = []
    for i, part in enumerate(np.array_split(raw, n_files), start=1):
        names.append(f"scan_data_{i:06d}.h5")
        with h5py.File(folder / names[-1], "w") as f:
            f.create_dataset("entry/data/data", data=part, chunks=(1, *DETECTOR), **bitshuffle)
    master = folder / "scan_master.h5"
    with h5py.File(master, "w") as f:
        for i, name in enumerate(names, start=1):
            f[f"entry/data/data_{i:06d}"] = h5py.ExternalLink(name, "/entry/data/data")
        d = f.create_group("entry/instrument/detector")
        d.attrs["NX_class"] = "NXdetector"
        for key, value, units in (
            ("x_pixel_size", 75e-6, "m"),
            ("y_pixel_size", 75e-6, "m"),
            ("detector_distance", 2.0, "m"),
            ("beam_center_x", CENTRE[1], "pixel"),
            ("beam_center_y", CENTRE[0], "pixel"),
            ("saturation_value", SATURATION, "counts"),
        ):
            d[key] = value
            d[key].attrs["units"] = units
        mask = np.zeros(DETECTOR, np.uint32)
        mask[:, DEAD_COLUMN] = 1
        d["detectorSpecific/pixel_mask"] = mask
        beam = f.create_group("entry/instrument/beam")
        beam["incident_wavelength"] = wavelength(8000.0) * 1e10
        beam["incident_wavelength"].attrs["units"] = "angstrom"
    with h5py.File(folder / "calib.h5", "w") as f:
        f["dark"] = np.stack([dark - 1, dark + 1]).astype(np.uint32)
        f["flat"] = np.repeat((dark + OFFSET + FLAT_LEVEL * resp)[None], 3, 0).astype(np.uint32)
    beamstop = np.zeros(DETECTOR, bool)
    beamstop[BEAMSTOP] = True
    np.save(folder / "beamstop.npy", beamstop)
    return master


def write_positions_csv(path: Path, positions: np.ndarray) -> Path:
    """``frame,x_um,y_um`` table of ``positions`` (P, 2) (y, x) in m."""
    lines = ["frame,x_um,y_um"]
    lines += [f"{i},{float(x) * 1e6!r},{float(y) * 1e6!r}" for i, (y, x) in enumerate(positions)]
    path.write_text("\n".join(lines) + "\n")
    return path


def ingest_config(folder: Path, **changes) -> dict:
    """The ingest config of the files :func:`write_eiger` wrote."""
    cfg = {
        "master": str(folder / "scan_master.h5"),
        "positions": {
            "file": str(folder / "scan.csv"),
            "columns": ["x_um", "y_um"],
            "order": "xy",
            "units": "um",
        },
        "dark": {"file": str(folder / "calib.h5"), "key": "/dark"},
        "flat": {"file": str(folder / "calib.h5"), "key": "/flat"},
        "photons": {"gain": GAIN, "offset": OFFSET, "round": True},
        "mask": {"files": [{"file": str(folder / "beamstop.npy")}]},
        "crop": {"shape": [32, 32], "centre": "nexus"},
        "output": {"modality": "ptycho2d"},
    }
    cfg.update(changes)
    return cfg


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="session")
def simulated(tmp_path_factory) -> Path:
    """The ground truth: a 16-frame 32x32 ptycho2d simulation."""
    path = tmp_path_factory.mktemp("sim") / "sim.cxi"
    rc, _, err = cli(
        "simulate", "-c", ROOT / "config/simulate/ptycho2d.yaml", "--set", "geometry.shape=[32,32]",
        "--set", "scan.n_y=4", "--set", "scan.n_x=4", "--out", path,
    )  # fmt: skip
    assert rc == 0, err
    return path


@pytest.fixture()
def beamline(simulated, tmp_path) -> Path:
    """A folder with the beamline files of the simulated data set and ``ingest.yaml``."""
    truth = read_cxi(simulated, truth=False)
    write_eiger(tmp_path, truth.data)
    write_positions_csv(tmp_path / "scan.csv", truth.positions)
    write_config(tmp_path / "ingest.yaml", ingest_config(tmp_path))
    return tmp_path
