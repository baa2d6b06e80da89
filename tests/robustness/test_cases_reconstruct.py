"""Bad inputs and misuse of ``xrayflow reconstruct``: each is refused with exit status 2 and a
message naming the problem, before anything is written (see robust_harness.run_case).

Classes of issue 12 covered: output clashes (2: the output overwrites an input, is a
directory or device, lies in a missing directory, is empty), bad config values and --set
(4/5), bad numbers and corrupt files at the data boundary (4/5/7: complex, NaN, negative,
all-zero counts, masks, implausible geometry, truncated or non-HDF5 files), the memory
guard and scan-position outliers (6), an unavailable device (5).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from robust_harness import (
    RECON,
    Case,
    append_text,
    edit_hdf5,
    hardlink,
    make_dir,
    random_bytes,
    replace_arg,
    run_case,
    symlink,
    truncated,
    with_set,
    write_file,
)

from xrayflow.backend import gpu_available
from xrayflow.io.cxi import EV_TO_J

DATA = "entry_1/instrument_1/detector_1/data"
DET = "entry_1/instrument_1/detector_1/"
ENERGY = "entry_1/instrument_1/source_1/energy"
TRANSLATION = "entry_1/sample_1/geometry_1/translation"
TRUTH = "entry_1/xrayflow_truth"

BAD = replace_arg(RECON, "--data", "bad.cxi")  # reconstruct the prepared bad copy
NPZ = with_set(replace_arg(RECON, "--data", "bad.npz"), "geometry.units=pixels")


def edit_frames(fn):
    """prepare: bad.cxi = data.cxi with its frames replaced by ``fn(frames)``."""

    def edit(f: h5py.File) -> None:
        frames = f[DATA][()]
        new = fn(frames.copy())
        if new.dtype != frames.dtype or new.shape != frames.shape:
            del f[DATA]
            f[DATA] = new
            if "entry_1/data_1/data" in f:
                del f["entry_1/data_1/data"]
                f["entry_1/data_1/data"] = h5py.SoftLink("/" + DATA)
        else:
            f[DATA][...] = new

    return edit_hdf5("bad.cxi", edit, copy_of="data.cxi")


def set_dataset(path: str, value, delete: tuple[str, ...] = ()):
    """prepare: bad.cxi = data.cxi with dataset ``path`` set to ``value`` (None: removed)."""

    def edit(f: h5py.File) -> None:
        new = value(f) if callable(value) else value
        for d in (path, *delete):
            if d in f:
                del f[d]
        if new is not None:
            f[path] = new

    return edit_hdf5("bad.cxi", edit, copy_of="data.cxi")


def _set_pixel(frame: int, value: float):
    def fn(a):
        a[frame, 3, 4] = value
        return a

    return fn


def _outlier(f):
    """Frame 4 three millimetres away from a scan that spans a micrometre (no truth grid)."""
    tr = f[TRANSLATION][()]
    tr[4, :2] = tr[4, :2] + 3e-3
    del f[TRUTH]
    return tr


def _mask(value):
    def fn(f):
        return np.full(f[DATA].shape[-2:], value, np.uint32)

    return fn


def _declare_huge_frames(f: h5py.File) -> None:
    """The frames dataset declared as 200,000 frames of 2048² (3 TiB; chunks never written,
    so the file stays small)."""
    del f[DATA]
    f.create_dataset(DATA, shape=(200000, 2048, 2048), dtype=np.float32, chunks=(1, 2048, 2048))


def npz(mutate=None, dtype=np.float32):
    """prepare: bad.npz with the frames of data.cxi (``mutate``d) and pixel positions."""

    def prepare(ws: Path) -> None:
        with h5py.File(ws / "data.cxi", "r") as f:
            frames = f[DATA][()].astype(dtype)
        if mutate is not None:
            frames = mutate(frames)
        n = int(round(np.sqrt(len(frames))))  # the workspace's square raster
        scan = np.stack(np.meshgrid(np.arange(n * 1.0), np.arange(n * 1.0), indexing="ij"), -1)
        np.savez(ws / "bad.npz", data=frames, scan=scan.reshape(-1, 2) * 2)

    return prepare


OUT = r"--out 'new\.h5'"
CASES = [
    # ---- outputs that would destroy an input or cannot be written (class 2)
    Case("out-is-data", replace_arg(RECON, "--out", "data.cxi"), r"overwrite.*--data 'data\.cxi'"),
    Case(
        "out-is-data-dotslash", replace_arg(RECON, "--out", "./data.cxi"), r"overwrite.*data\.cxi"
    ),
    Case(
        "out-is-data-absolute",
        replace_arg(RECON, "--out", "{ws}/data.cxi"),
        r"overwrite.*data\.cxi",
    ),
    Case("out-is-config", replace_arg(RECON, "--out", "recon.yaml"), r"overwrite.*recon\.yaml"),
    Case(
        "out-symlink-to-data",
        replace_arg(RECON, "--out", "link.h5"),
        r"link\.h5.*overwrite.*data\.cxi",
        symlink("link.h5", "data.cxi", absolute=False),
    ),
    Case(
        "out-hardlink-to-data",
        replace_arg(RECON, "--out", "hard.h5"),
        r"hard\.h5.*overwrite.*data\.cxi",
        hardlink("hard.h5", "data.cxi"),
    ),
    Case(
        "data-symlink-out-is-target",
        replace_arg(replace_arg(RECON, "--data", "in.cxi"), "--out", "data.cxi"),
        r"data\.cxi.*overwrite.*in\.cxi",
        symlink("in.cxi", "data.cxi", absolute=False),
    ),
    Case(
        "checkpoint-is-data",
        with_set(RECON, "run.checkpoint_path=data.cxi"),
        r"run\.checkpoint_path 'data\.cxi'.*overwrite.*data\.cxi",
    ),
    Case(
        "checkpoint-is-config",
        with_set(RECON, "run.checkpoint_path=recon.yaml"),
        r"run\.checkpoint_path.*overwrite.*recon\.yaml",
    ),
    Case(
        "checkpoint-is-out",
        with_set(RECON, "run.checkpoint_path=new.h5"),
        r"run\.checkpoint_path and --out.*new\.h5",
    ),
    Case(
        "checkpoint-is-directory",
        with_set(RECON, "run.checkpoint_path=ckdir"),
        r"run\.checkpoint_path 'ckdir'.*directory",
        make_dir("ckdir"),
    ),
    Case(
        "checkpoint-is-a-result",
        [*with_set(RECON, "run.checkpoint_path=recon.h5"), "--resume"],
        r"run\.checkpoint_path 'recon\.h5' exists and is not an xrayflow reconstruction checkpoint",
    ),
    Case(
        "checkpoint-is-a-result-no-resume",
        with_set(RECON, "run.checkpoint_path=recon.h5"),
        r"recon\.h5.*not an xrayflow reconstruction checkpoint",
    ),
    Case(
        "default-checkpoint-is-garbage",
        [*RECON, "--resume"],
        r"checkpoint 'new\.h5\.ckpt\.h5' exists and is not an xrayflow",
        write_file("new.h5.ckpt.h5", b"garbage"),
    ),
    Case(
        "checkpoint-missing-directory",
        with_set(RECON, "run.checkpoint_path=nodir/c.h5"),
        r"run\.checkpoint_path.*'nodir' does not exist",
    ),
    Case(
        "out-is-directory",
        replace_arg(RECON, "--out", "outdir"),
        r"--out 'outdir'.*directory",
        make_dir("outdir"),
    ),
    Case("out-is-dev-full", replace_arg(RECON, "--out", "/dev/full"), r"/dev/full.*not a regular"),
    Case(
        "out-missing-directory",
        replace_arg(RECON, "--out", "nodir/new.h5"),
        r"'nodir' does not exist",
    ),
    Case("out-empty", replace_arg(RECON, "--out", ""), r"--out: the output path is empty"),
    Case("out-blank", replace_arg(RECON, "--out", "  "), r"--out: the output path is empty"),
    # ---- bad config values and --set (classes 4, 5)
    Case("set-unknown-key", with_set(RECON, "model.typo=1"), r"model\.typo"),
    Case("set-no-equals", with_set(RECON, "optimizer.iterations"), r"optimizer\.iterations"),
    Case("lr-inf", with_set(RECON, "optimizer.object.lr=.inf"), r"optimizer\.object\.lr.*finite"),
    Case("lr-nan", with_set(RECON, "optimizer.object.lr=.nan"), r"optimizer\.object\.lr"),
    Case("lr-negative", with_set(RECON, "optimizer.probe.lr=-1"), r"optimizer\.probe\.lr"),
    Case("lr-text", with_set(RECON, "optimizer.object.lr=fast"), r"optimizer\.object\.lr"),
    Case(
        "saturation-negative",
        with_set(RECON, "data.mask_saturated_above=-1"),
        r"data\.mask_saturated_above.*every pixel",
    ),
    Case(
        "saturation-zero",
        with_set(RECON, "data.mask_saturated_above=0"),
        r"data\.mask_saturated_above",
    ),
    Case(
        "saturation-masks-everything",
        with_set(BAD, "data.mask_saturated_above=0.5"),
        r"data\.mask_saturated_above.*every detector pixel.*bad\.cxi",
        edit_frames(lambda a: a + 1),
    ),
    Case(
        "energy-in-kev",
        with_set(RECON, "geometry.energy_ev=8"),
        r"geometry\.energy_ev.*keV",
    ),
    Case("energy-too-high", with_set(RECON, "geometry.energy_ev=8e6"), r"geometry\.energy_ev"),
    Case("energy-negative", with_set(RECON, "geometry.energy_ev=-8000"), r"geometry\.energy_ev"),
    Case("distance-zero", with_set(RECON, "geometry.distance=0"), r"geometry\.distance"),
    Case("batch-size-zero", with_set(RECON, "optimizer.batch_size=0"), r"optimizer\.batch_size"),
    Case("precision-unknown", with_set(RECON, "run.precision=quad"), r"run\.precision"),
    Case("device-unknown", with_set(RECON, "run.device=tpu"), r"run\.device"),
    Case("model-type-unknown", with_set(RECON, "model.type=ptycho4d"), r"model\.type"),
    Case(
        "slices-for-2d",
        with_set(RECON, "model.n_slices=3"),
        r"model\.n_slices",
    ),
    Case(
        "object-grid-too-small",
        with_set(RECON, "model.object_shape=[8,8]"),
        r"fall off the object grid",
    ),
    Case("max-memory-negative", with_set(RECON, "run.max_memory_gb=-1"), r"run\.max_memory_gb"),
    Case("config-missing", replace_arg(RECON, "--config", "nope.yaml"), r"nope\.yaml"),
    Case(
        "config-duplicate-key",
        RECON,
        r"duplicate.*model",
        append_text("recon.yaml", "model:\n  type: ptycho2d\n"),
    ),
    # ---- memory guard and scan positions (class 6)
    Case(
        "memory-huge-object",
        with_set(RECON, "model.object_shape=[200000,200000]"),
        r"needs about .*GiB.*object \(1, 200000, 200000\).*limit",
    ),
    Case(
        "memory-many-probe-modes",
        with_set(RECON, "model.probe_modes=100000", "run.max_memory_gb=16"),
        r"needs about .*GiB.*probe \(100000, 32, 32\).*run\.max_memory_gb",
    ),
    Case(
        "memory-frames-from-header",  # refused from the header: nothing is read
        BAD,
        r"reading the data.*frames held by this rank \(200000, 2048, 2048\).*limit",
        edit_hdf5("bad.cxi", _declare_huge_frames, copy_of="data.cxi"),
    ),
    Case(
        "memory-limit-tiny",
        with_set(RECON, "run.max_memory_gb=0.00001"),
        r"needs about .*MiB.*run\.max_memory_gb",
    ),
    Case(
        "memory-many-slices",
        with_set(
            RECON,
            "model.type=multislice_ptycho",
            "model.n_slices=100000",
            "model.slice_spacing=1e-9",
            "run.max_memory_gb=8",
        ),
        r"needs about .*object \(100000, ",
    ),
    Case(
        "position-outlier",
        BAD,
        r"bad\.cxi: the scan position of frame 4 lies 0\.00\d+ m from the median.*outlier",
        set_dataset(TRANSLATION, _outlier),
    ),
    Case(
        "positions-nan",
        BAD,
        r"bad\.cxi.*translation contains NaN",
        set_dataset(TRANSLATION, lambda f: np.full(f[TRANSLATION].shape, np.nan)),
    ),
    Case(
        "positions-count",
        BAD,
        r"bad\.cxi.*translation has 3 positions but the data has 16 frames",
        set_dataset(TRANSLATION, np.zeros((3, 3))),
    ),
    # ---- the data file at the boundary (classes 4, 5, 7)
    Case("data-missing", replace_arg(RECON, "--data", "nope.cxi"), r"nope\.cxi.*does not exist"),
    Case("data-is-directory", replace_arg(RECON, "--data", "shards"), r"shards.*directory"),
    Case("data-truncated", BAD, r"bad\.cxi", truncated("data.cxi", "bad.cxi")),
    Case(
        "data-not-hdf5", BAD, r"bad\.cxi.*HDF5", write_file("bad.cxi", b"not an HDF5 file\n" * 64)
    ),
    Case("data-empty-file", BAD, r"bad\.cxi", write_file("bad.cxi", b"")),
    Case(
        "data-random-bytes",
        BAD,
        r"bad\.cxi",
        random_bytes("bad.cxi"),
    ),
    Case(
        "data-no-frames",
        BAD,
        r"bad\.cxi.*no diffraction data",
        set_dataset(DATA, None, delete=("entry_1/data_1/data",)),
    ),
    Case(
        "data-complex",
        BAD,
        r"bad\.cxi.*complex.*real",
        edit_frames(lambda a: a.astype(np.complex64) * (1 + 1j)),
    ),
    Case("data-bool", BAD, r"bad\.cxi.*dtype bool", edit_frames(lambda a: a > 0)),
    Case("data-nan", BAD, r"bad\.cxi.*non-finite.*frame 5", edit_frames(_set_pixel(5, np.nan))),
    Case("data-inf", BAD, r"bad\.cxi.*non-finite.*frame 2", edit_frames(_set_pixel(2, np.inf))),
    Case("data-negative", BAD, r"bad\.cxi.*negative.*frame 7", edit_frames(_set_pixel(7, -3.0))),
    Case(
        "data-all-zero",
        BAD,
        r"bad\.cxi: all 16 frames are zero",
        edit_frames(lambda a: np.zeros_like(a)),
    ),
    Case(
        "data-mask-all-bad",
        BAD,
        r"bad\.cxi.*detector_1/mask marks every detector pixel",
        set_dataset(DET + "mask", _mask(1)),
    ),
    Case(
        "data-mask-wrong-shape",
        BAD,
        r"bad\.cxi.*detector_1/mask has shape \(4, 4\)",
        set_dataset(DET + "mask", np.zeros((4, 4), np.uint32)),
    ),
    Case(
        "data-energy-8-ev",
        BAD,
        r"bad\.cxi.*source_1/energy.*outside the X-ray range",
        set_dataset(ENERGY, 8.0 * EV_TO_J),
    ),
    Case(
        "data-energy-in-ev-not-joule",
        BAD,
        r"bad\.cxi.*source_1/energy.*joules",
        set_dataset(ENERGY, 8000.0),
    ),
    Case(
        "data-energy-missing",
        BAD,
        r"bad\.cxi.*no photon energy",
        set_dataset(ENERGY, None, delete=("entry_1/instrument_1/source_1/wavelength",)),
    ),
    Case(
        "data-distance-negative",
        BAD,
        r"bad\.cxi.*distance",
        set_dataset(DET + "distance", -2.0),
    ),
    Case(
        "data-distance-huge",
        BAD,
        r"bad\.cxi.*detector_1/distance = 1e\+30 m",
        set_dataset(DET + "distance", 1e30),
    ),
    Case(
        "data-pixel-75-m",
        BAD,
        r"bad\.cxi.*pixel_size.*75.*plausible",
        set_dataset(DET + "x_pixel_size", 75.0, delete=(DET + "y_pixel_size",)),
    ),
    Case(
        "data-pixel-zero",
        BAD,
        r"bad\.cxi.*pixel size must be > 0",
        set_dataset(DET + "x_pixel_size", 0.0, delete=(DET + "y_pixel_size",)),
    ),
    Case(
        "npz-complex",
        NPZ,
        r"bad\.npz.*'data'.*complex",
        npz(dtype=np.complex64),
    ),
    Case(
        "npz-nan-frame",
        NPZ,
        r"bad\.npz.*non-finite.*frame 6",
        npz(_set_pixel(6, np.nan)),
    ),
    Case("npz-missing-array", with_set(NPZ, "data.keys.data=frames"), r"'frames'", npz()),
]

if gpu_available():  # pragma: no cover - a machine with a GPU
    CASES = [c for c in CASES if c.id != "device-gpu"]
else:
    CASES.append(Case("device-gpu", with_set(RECON, "run.device=gpu"), r"run\.device.*gpu"))


def test_enough_cases():
    assert len(CASES) >= 45


@pytest.mark.parametrize("case", [c.param() for c in CASES])
def test_reconstruct_bad_input(case, pristine, tmp_path):
    run_case(case, pristine, tmp_path)
