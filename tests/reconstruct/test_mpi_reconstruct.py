"""``xrayflow reconstruct`` under ``mpiexec -n 2``: same result as one process, each rank
reads only its frames, a bad frame on one rank stops every rank, and a checkpoint written
by one rank resumes on two."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from mpi_util import run_ranks

ROOT = Path(__file__).parents[2]
SIM = ROOT / "config" / "simulate" / "ptycho2d.yaml"
P = 36  # frames; run.block_frames = 8 -> 5 blocks: rank 0 holds 3 (24 frames), rank 1 2

RECON = """
optimizer: {iterations: 6, batch_size: 16, method: sgd}
model: {position_correction: true}
run: {checkpoint_every: 1, block_frames: 8}
"""

# runs the CLI after recording which frames this rank reads from the CXI file
WRAPPER = """
import json, os, sys
import xrayflow.io.cxi as cxi
seen = []
_read = cxi._read_frames
def spy(ds, indices, source):
    data, sel = _read(ds, indices, source)
    seen.extend(int(i) for i in sel)
    return data, sel
cxi._read_frames = spy
from xrayflow.cli import main
rc = main(sys.argv[2:])
rank = os.environ.get("PMI_RANK", "0")
with open(f"{sys.argv[1]}.rank{rank}.json", "w") as f:
    json.dump(seen, f)
sys.exit(rc)
"""


def _cli(tmp, args, n=1, record=None, timeout=120):
    """``xrayflow reconstruct ARGS`` on ``n`` ranks (1: a plain process)."""
    if record is None:
        cmd = [sys.executable, "-m", "xrayflow", "reconstruct", *map(str, args)]
    else:
        (tmp / "wrap.py").write_text(WRAPPER)
        cmd = [sys.executable, str(tmp / "wrap.py"), str(record), "reconstruct", *map(str, args)]
    return run_ranks(cmd, n, timeout, mpi=n > 1)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """Small simulated CXI file, the config, and the uninterrupted one-process result."""
    from xrayflow.io.cxi import write_cxi
    from xrayflow.simulate import simulate

    tmp = tmp_path_factory.mktemp("mpi")
    sets = ["geometry.shape=[32,32]", "scan.n_y=6", "scan.n_x=6", "scan.step=0.3e-6"]
    d = simulate(SIM, sets)
    assert d.data.shape[0] == P
    write_cxi(tmp / "d.cxi", d)
    (tmp / "r.yaml").write_text(RECON)
    r = _cli(tmp, ["-c", tmp / "r.yaml", "-d", tmp / "d.cxi", "-o", tmp / "one.h5"])
    assert r.returncode == 0, r.stderr
    return tmp


def _read(path):
    with h5py.File(path, "r") as f:
        keys = ("object", "probe", "loss", "positions_px", "initial_positions_px")
        out = {k: f[k][()] for k in keys}
        out["attrs"] = dict(f.attrs)
    return out


def _assert_same(a, b):
    for k in ("object", "probe", "loss", "positions_px"):
        rel = np.abs(a[k] - b[k]).max() / np.abs(a[k]).max()
        assert rel < 1e-5, (k, rel)


@pytest.mark.mpi
def test_two_ranks_equal_one_and_read_only_their_frames(case):
    args = ["-c", case / "r.yaml", "-d", case / "d.cxi", "-o", case / "two.h5"]
    r = _cli(case, args, n=2, record=case / "reads")
    assert r.returncode == 0, r.stderr
    one, two = _read(case / "one.h5"), _read(case / "two.h5")
    _assert_same(one, two)
    assert one["loss"][-1] < 0.5 * one["loss"][0]  # it did reconstruct something
    assert not np.array_equal(one["positions_px"], one["initial_positions_px"])  # corrected
    assert (one["attrs"]["n_ranks"], one["attrs"]["transport"]) == (1, "serial")
    assert (two["attrs"]["n_ranks"], two["attrs"]["transport"]) == (2, "mpi")
    assert "transport mpi" in r.stderr
    reads = [set(json.loads((case / f"reads.rank{k}.json").read_text())) for k in (0, 1)]
    assert reads[0] == set(range(24)) and reads[1] == set(range(24, P))


@pytest.mark.mpi
def test_bad_frame_on_one_rank_stops_all(case):
    bad = case / "bad.cxi"
    shutil.copy(case / "d.cxi", bad)
    with h5py.File(bad, "a") as f:
        ds = f["entry_1/data_1/data"]
        frame = ds[30]  # held by rank 1 only
        frame[3, 3] = np.nan
        ds[30] = frame
    t0 = time.perf_counter()
    r = _cli(case, ["-c", case / "r.yaml", "-d", bad, "-o", case / "bad.h5"], n=2, timeout=60)
    assert time.perf_counter() - t0 < 30
    assert r.returncode != 0
    assert "rank 1: " in r.stderr and "non-finite" in r.stderr
    assert not (case / "bad.h5").exists()


@pytest.mark.mpi
def test_resume_on_two_ranks_from_one_rank_checkpoint(case):
    out = case / "resumed.h5"
    base = ["-c", case / "r.yaml", "-d", case / "d.cxi", "-o", out]
    r = _cli(case, [*base, "--set", "run.stop_after=3"])
    assert r.returncode == 0, r.stderr
    assert not out.exists() and Path(str(out) + ".ckpt.h5").exists()
    r = _cli(case, [*base, "--resume"], n=2)
    assert r.returncode == 0, r.stderr
    assert "resumed from" in r.stderr and "at iteration 3" in r.stderr
    _assert_same(_read(case / "one.h5"), _read(out))


@pytest.mark.mpi
def test_default_blocks_follow_the_rank_count_and_differ_by_rounding_only(case):
    outs = []
    for n in (1, 2):
        out = case / f"auto{n}.h5"
        args = ["-c", case / "r.yaml", "-d", case / "d.cxi", "-o", out]
        r = _cli(case, [*args, "--set", "run.block_frames=null"], n=n)
        assert r.returncode == 0, r.stderr
        outs.append(_read(out))
        assert outs[-1]["attrs"]["n_blocks"] == n  # one block of frames per rank
    for k in ("object", "probe", "loss", "positions_px"):
        rel = np.abs(outs[0][k] - outs[1][k]).max() / np.abs(outs[0][k]).max()
        assert rel < 1e-4, (k, rel)  # float32 rounding, 6 iterations
