"""xrayflow.parallel.domains (slab partition with halos, halo exchanges) and the
distributed-object gradient of multislice ptychography against the replicated one (the
latter through ``benchmarks/distributed_object.py --worker`` on 1, 2, 4 ranks)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from mpi_util import run_mpi, run_ranks

from xrayflow.parallel import Comm
from xrayflow.parallel.domains import SlabPartition, overlap

BENCH = Path(__file__).parents[2] / "benchmarks" / "distributed_object.py"


@pytest.mark.parametrize("n_rows,size", [(48, 1), (48, 2), (48, 4), (10, 3), (3, 5)])
@pytest.mark.parametrize("before,after", [(0, 0), (0, 15), (4, 4)])
def test_partition_arithmetic(n_rows, size, before, after):
    part = SlabPartition(n_rows, size, before, after)
    owned = [i for r in range(size) for i in part.own(r)]
    assert owned == list(range(n_rows))  # every row owned once, in rank order
    owner = part.owner(np.arange(n_rows))
    for r in range(size):
        o, h = part.own(r), part.held(r)
        assert (owner[o.start : o.stop] == r).all()
        if len(o):
            assert h.start == max(0, o.start - before) and h.stop == min(n_rows, o.stop + after)
        else:
            assert len(h) == 0
        # the halo rows are exactly the held rows owned by other ranks
        halo = [i for s in range(size) for i in part.halo(r, s)]
        assert sorted(halo) == sorted(set(h) - set(o))
        assert part.halo_rows(r) == len(halo)


def test_overlap_and_owner_errors():
    assert overlap(range(2, 8), range(5, 12)) == range(5, 8)
    assert len(overlap(range(2, 4), range(6, 9))) == 0
    with pytest.raises(ValueError, match="outside"):
        SlabPartition(10, 2).owner([10])


def test_one_rank_exchanges_are_copies():
    part = SlabPartition(7, 1, 3, 3)
    a = np.arange(2 * 7 * 4, dtype=float).reshape(2, 7, 4)
    assert np.array_equal(part.sum_halos(Comm(), a), a)
    assert np.array_equal(part.fill_halos(Comm(), a), a)
    assert np.array_equal(part.gather(Comm(), a), a)


@pytest.mark.mpi
@pytest.mark.parametrize("size", [2, 4])
@pytest.mark.parametrize("n_rows,before,after", [(24, 0, 15), (24, 3, 3), (6, 2, 9)])
def test_halo_exchanges(tmp_path, size, n_rows, before, after):
    # (24, 0, 15) on 4 ranks: slabs of 6 rows, halos over two or three neighbours;
    # (6, 2, 9) on 4 ranks: ranks with 1 or 2 rows, halos over all the others
    out = tmp_path / "halo.json"
    r = run_mpi("halo_exchange.py", size, out, n_rows, before, after)
    assert r.returncode == 0, r.stderr
    err = json.loads(out.read_text())
    assert err["size"] == size
    assert err["sum"] < 1e-12 and err["fill"] == 0 and err["real"] == 0 and err["gather"] < 1e-12


@pytest.mark.mpi
@pytest.mark.parametrize("size", [1, 2, 4])
def test_distributed_gradient_equals_replicated(tmp_path, size):
    out = tmp_path / "grad.json"
    flags = ["--rows", 48, "--cols", 40, "--window", 16, "--slices", 2, "--step", 5]
    cmd = [sys.executable, str(BENCH), "--worker", str(out), *map(str, flags), "--repeat", "1"]
    r = run_ranks(cmd, size, 120, mpi=True)
    assert r.returncode == 0, r.stderr
    rec = json.loads(out.read_text())
    assert rec["ranks"] == size and sum(rec["frames_per_rank"]) == rec["frames"] == 35
    # loss, object/probe gradients, illumination, preconditioners, Adam step, halo refresh
    assert len(rec["rel_diff"]) == 9
    assert rec["max_rel_diff"] < 1e-6, rec["rel_diff"]
    if size > 1:
        assert max(rec["held_rows"]) > max(rec["own_rows"])  # windows cross slab boundaries
        assert rec["object_bytes_per_rank"] < rec["object_bytes_per_rank_replicated"]
        assert rec["halo_bytes_per_iter"] > 0


@pytest.mark.mpi
@pytest.mark.parametrize("size", [1, 2, 4])
def test_distributed_tomography_gradient_equals_replicated(tmp_path, size):
    out = tmp_path / "tomo.json"
    r = run_mpi("tomo_slab_grad.py", size, out, mpi=size > 1, timeout=120)
    assert r.returncode == 0, r.stderr
    rec = json.loads(out.read_text())
    assert rec["size"] == size and sum(rec["frames_per_rank"]) == rec["frames"] == 72
    assert max(rec["max_rel_diff"].values()) < 1e-6, rec["max_rel_diff"]
    if size > 1:  # the rotation's windows cross the slab boundaries
        assert max(rec["held_rows"]) > max(rec["own_rows"])
        assert sum(f > 0 for f in rec["frames_per_rank"]) >= 2
