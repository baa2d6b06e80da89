"""xrayflow.parallel: partitions, deterministic sums across rank counts, per-rank CXI reads,
abort on failure (multi-rank cases run under ``mpiexec -n 2`` in subprocesses)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest
from mpi_util import run_mpi

from xrayflow.parallel import block_ranges, partition
from xrayflow.parallel.reduce import tree_cover


@pytest.mark.parametrize("n", [0, 1, 5, 13, 64, 101])
@pytest.mark.parametrize("size", [1, 2, 3, 4, 7])
def test_partition_covers_each_index_once_and_balanced(n, size):
    parts = [partition(n, r, size) for r in range(size)]
    flat = [i for p in parts for i in p]
    assert flat == list(range(n))  # contiguous, ordered, each index exactly once
    lens = [len(p) for p in parts]
    assert max(lens) - min(lens) <= 1


def test_block_ranges_independent_of_ranks():
    assert [list(b) for b in block_ranges(7, 3)] == [[0, 1, 2], [3, 4, 5], [6]]
    with pytest.raises(ValueError):
        block_ranges(5, 0)


@pytest.mark.parametrize("n", [1, 2, 9, 13, 32])
def test_tree_cover_partitions_the_blocks(n):
    for size in (1, 2, 3, 5):
        nodes = []
        for r in range(size):
            p = partition(n, r, size)
            cover = tree_cover(0, n, p.start, p.stop)
            assert all(p.start <= lo < hi <= p.stop for lo, hi in cover)
            assert len(cover) <= 2 * max(1, int(np.ceil(np.log2(n)))) + 1
            nodes += cover
        assert [i for lo, hi in nodes for i in range(lo, hi)] == list(range(n))


def test_single_process_needs_no_mpi():
    code = (
        "import sys, xrayflow.parallel as p; c = p.get_comm(); "
        "print(c.rank, c.size, c.transport_name(), 'mpi4py' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "XRAYFLOW_MPI"))}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    assert out.stdout.split() == ["0", "1", "serial", "False"]


def _reduce(tmp_path, n_ranks, n_blocks, mpi=True, *extra):
    out = tmp_path / f"sum{n_ranks}{mpi}{''.join(extra)}.npz"
    r = run_mpi("reduce_sum.py", n_ranks, out, n_blocks, *extra, mpi=mpi)
    assert r.returncode == 0, r.stderr
    return dict(np.load(out))


@pytest.mark.mpi
def test_block_sum_bit_identical_for_1_2_3_ranks(tmp_path):
    n_blocks = 13
    serial = _reduce(tmp_path, 1, n_blocks, mpi=False)
    one = _reduce(tmp_path, 1, n_blocks)
    two = _reduce(tmp_path, 2, n_blocks)
    three = _reduce(tmp_path, 3, n_blocks)
    assert str(serial["transport"]) == "serial" and str(two["transport"]) == "mpi"
    assert two["spans"].tolist() == [[0, 7], [7, 13]]
    for key in ("loss", "vol", "probe"):
        for other in (one, two, three):
            assert np.array_equal(serial[key], other[key]), key  # bitwise
    # and it is the sum: plain float64 sum of the same partials
    ref = np.zeros_like(serial["vol"], dtype=np.float64)
    for k in range(n_blocks):
        rng = np.random.default_rng(1000 + k)
        rng.random()
        ref += rng.standard_normal((2, 5, 7, 3)).astype(np.float32) * 10.0 ** rng.integers(-3, 4)
    assert np.abs(serial["vol"] - ref).max() <= 1e-6 * np.abs(ref).max()


@pytest.mark.mpi
def test_block_sum_with_an_idle_rank(tmp_path):
    serial = _reduce(tmp_path, 1, 2, mpi=False)
    three = _reduce(tmp_path, 3, 2)  # rank 2 owns no block
    assert three["spans"].tolist() == [[0, 1], [1, 2], [2, 2]]
    for key in ("loss", "vol", "probe"):
        assert np.array_equal(serial[key], three[key]), key


@pytest.mark.mpi
def test_block_sum_with_given_spans_and_idle_rank_0(tmp_path):
    serial = _reduce(tmp_path, 1, 5, False)
    skew = _reduce(tmp_path, 2, 5, True, "skew")  # rank 0 holds no block
    assert skew["spans"].tolist() == [[0, 0], [0, 5]]
    for key in ("loss", "vol", "probe"):
        assert np.array_equal(serial[key], skew[key]), key


def test_block_sum_rejects_bad_spans():
    from xrayflow.parallel import Comm

    with pytest.raises(ValueError, match="do not cover"):
        Comm().block_sum(3, lambda k: np.ones(2), spans=[range(0, 2)])


@pytest.mark.mpi
@pytest.mark.parametrize(
    "kind,message",
    [
        ("data", "rank 1: frames.cxi: dataset /entry_1/data_1/data is truncated"),
        ("memory", "rank 1: MemoryError: cannot allocate 512 GiB"),
    ],
)
def test_failure_on_one_rank_stops_all_quickly(kind, message):
    t0 = time.perf_counter()
    r = run_mpi("fail_one.py", 2, kind, timeout=20)
    elapsed = time.perf_counter() - t0
    assert r.returncode != 0
    assert message in r.stderr
    assert elapsed < 20
