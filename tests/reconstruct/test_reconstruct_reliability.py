"""Reliability of ``xrayflow reconstruct`` at the CLI (issue 12): a checkpoint is resumed only
into the run that wrote it (same config and data), a finished run removes it, the memory
guard refuses in well under 2 s, stale temporaries of killed runs are removed, and a bad
frame is named by its index in the file also when another MPI rank reads it."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from tiny_ptycho import TINY_SIM

from xrayflow.cli import main

SIM = TINY_SIM
RECON = {
    "model": {"type": "ptycho2d"},
    "init": {"probe": "file"},
    "optimizer": {"method": "adam", "iterations": 4, "batch_size": 4, "object": {"lr": 0.1}},
    "run": {"checkpoint_every": 1, "log_every": 0},
}


def cli(*argv) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main([str(a) for a in argv])
    return rc, err.getvalue()


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    """d1.cxi and d2.cxi (same scan, 1000x fewer photons in d2) and recon.yaml."""
    ws = tmp_path_factory.mktemp("reliability")
    (ws / "recon.yaml").write_text(yaml.safe_dump(RECON))
    for name, photons in (("d1", 1e5), ("d2", 1e2)):
        sim = {**SIM, "noise": {"photons_per_probe": photons}}
        (ws / f"{name}.yaml").write_text(yaml.safe_dump(sim))
        rc, err = cli("simulate", "--config", ws / f"{name}.yaml", "--out", ws / f"{name}.cxi")
        assert rc == 0, err
    return ws


def recon(ws: Path, data: str, out: str, *extra: str) -> tuple[int, str]:
    return cli(
        "reconstruct", "--config", ws / "recon.yaml", "--data", ws / data, "--out", ws / out, *extra
    )


def result(path: Path) -> dict:
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in ("object", "probe", "loss")}


def same(a: dict, b: dict) -> bool:
    return all(np.array_equal(a[k], b[k]) for k in a)


def test_changed_data_is_not_resumed_from_a_stale_checkpoint(ws, tmp_path):
    rc, err = recon(ws, "d1.cxi", "S.h5", "--set", "run.stop_after=2")
    ck = ws / "S.h5.ckpt.h5"
    assert rc == 0, err
    assert "checkpoint kept" in err and ck.exists() and not (ws / "S.h5").exists()
    # the data changed (1000x fewer photons): --resume must start again, and say why
    rc, err = recon(ws, "d2.cxi", "S.h5", "--resume")
    assert rc == 0, err
    assert "was written for other inputs (data file changed); starting from scratch" in err
    assert "resumed from" not in err
    assert not ck.exists()  # a finished run removes its checkpoint
    rc, err = recon(ws, "d2.cxi", "fresh2.h5")
    assert rc == 0, err
    rc, err = recon(ws, "d1.cxi", "fresh1.h5")
    assert rc == 0, err
    got, fresh2, fresh1 = (result(ws / n) for n in ("S.h5", "fresh2.h5", "fresh1.h5"))
    assert same(got, fresh2)  # exactly a fresh run on the new data ...
    assert not np.array_equal(got["object"], fresh1["object"])  # ... not the old data's result
    for n in ("S.h5", "fresh1.h5", "fresh2.h5"):
        (ws / n).unlink()


def test_same_inputs_resume_bit_identically_and_checkpoint_is_removed(ws):
    rc, err = recon(ws, "d1.cxi", "ref.h5")
    assert rc == 0, err
    assert not (ws / "ref.h5.ckpt.h5").exists()  # removed after success
    rc, err = recon(ws, "d1.cxi", "R.h5", "--set", "run.stop_after=3")
    assert rc == 0 and (ws / "R.h5.ckpt.h5").exists(), err
    # only run.* and optimizer.iterations may change between the two halves
    rc, err = recon(ws, "d1.cxi", "R.h5", "--resume", "--set", "run.log_every=2")
    assert rc == 0, err
    assert "resumed from" in err and "at iteration 3" in err
    assert not (ws / "R.h5.ckpt.h5").exists()
    assert same(result(ws / "R.h5"), result(ws / "ref.h5"))
    (ws / "R.h5").unlink()
    (ws / "ref.h5").unlink()


def test_changed_config_starts_fresh_and_names_the_key(ws):
    ck = ws / "my.ckpt.h5"
    rc, err = recon(
        ws, "d1.cxi", "C.h5", "--set", "run.stop_after=2", "--set", f"run.checkpoint_path={ck}"
    )
    assert rc == 0 and ck.exists(), err
    rc, err = recon(
        ws,
        "d1.cxi",
        "C.h5",
        "--resume",
        "--set",
        "optimizer.object.lr=0.05",
        "--set",
        f"run.checkpoint_path={ck}",
    )
    assert rc == 0, err
    assert "configuration changed: optimizer.object.lr); starting from scratch" in err
    assert not ck.exists()
    (ws / "C.h5").unlink()


def test_a_file_that_is_not_a_checkpoint_is_never_overwritten(ws):
    ck = ws / "U.h5.ckpt.h5"
    ck.write_bytes(b"garbage")
    for extra in ((), ("--resume",)):
        rc, err = recon(ws, "d1.cxi", "U.h5", *extra)
        assert rc == 2, err
        assert "is not an xrayflow reconstruction checkpoint; refusing to overwrite" in err
        assert ck.read_bytes() == b"garbage" and not (ws / "U.h5").exists()
    ck.unlink()


@pytest.mark.parametrize(
    "setting",
    ["model.object_shape=[200000,200000]", "model.probe_modes=100000"],
)
def test_memory_guard_refuses_in_under_two_seconds(ws, setting):
    t0 = time.perf_counter()
    rc, err = recon(ws, "d1.cxi", "M.h5", "--set", setting, "--set", "run.max_memory_gb=16")
    dt = time.perf_counter() - t0
    assert rc == 2, err
    assert "needs about" in err and "GiB" in err and "run.max_memory_gb" in err
    assert dt < 2.0, f"refused after {dt:.2f} s"
    assert not (ws / "M.h5").exists() and not (ws / "M.h5.ckpt.h5").exists()


def test_stale_temporaries_of_a_killed_run_are_removed(ws):
    from xrayflow.io.atomic import _HOST

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = ws / f"T.h5.tmp-{_HOST}-{dead.pid}-x"
    stale.write_bytes(b"half-written")
    rc, err = recon(ws, "d1.cxi", "T.h5")
    assert rc == 0, err
    assert not stale.exists() and (ws / "T.h5").exists()
    (ws / "T.h5").unlink()


@pytest.mark.mpi
def test_bad_frame_is_named_by_its_file_index_under_mpi(ws, tmp_path):
    from mpi_util import run_ranks

    bad = tmp_path / "bad.cxi"
    shutil.copy(ws / "d1.cxi", bad)
    with h5py.File(bad, "a") as f:
        ds = f["entry_1/instrument_1/detector_1/data"]
        frame = ds[12]  # 2 ranks: rank 0 reads frames 0..7, rank 1 frames 8..15 (row 4)
        frame[2, 2] = -1.0
        ds[12] = frame
    cmd = [
        sys.executable,
        "-m",
        "xrayflow",
        "reconstruct",
        "-c",
        str(ws / "recon.yaml"),
        "-d",
        str(bad),
        "-o",
        str(tmp_path / "o.h5"),
    ]
    r = run_ranks(cmd, 2, 60, mpi=True)
    assert r.returncode != 0
    assert "rank 1: " in r.stderr and "negative counts" in r.stderr
    assert "first in frame 12" in r.stderr  # the file's index, not rank 1's row 4
    assert not (tmp_path / "o.h5").exists()
    assert os.listdir(tmp_path) == ["bad.cxi"]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_message_names_the_likely_cause(ws):
    rc, err = recon(ws, "d1.cxi", "N.h5", "--set", "optimizer.object.lr=1e300")
    assert rc == 2, err
    assert "NaN/inf in parameter 'object' at iteration 1" in err
    assert "likely cause: optimizer.object.lr = 1e+300 is not a usable step" in err
    assert not (ws / "N.h5").exists()
