"""Halo exchanges of a SlabPartition against NumPy references built from every rank's
arrays: ``halo_exchange.py OUT.json N_ROWS BEFORE AFTER``; rank 0 writes the largest
errors."""

import json
import sys

import numpy as np

from xrayflow.io.atomic import atomic_write_text
from xrayflow.parallel import abort_on_error, on_root
from xrayflow.parallel.domains import SlabPartition

out, n_rows, before, after = sys.argv[1], *map(int, sys.argv[2:])
WIDTH, LEAD = 5, (2,)


def held_array(part, r):
    """Rank r's contributions on its held rows (complex; depends only on r)."""
    rng = np.random.default_rng(r)
    shape = (*LEAD, len(part.held(r)), WIDTH)
    return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)


with abort_on_error() as comm:
    part = SlabPartition(n_rows, comm.size, before, after)
    r = comm.rank
    # sum into owners: the grid-wide sum of every rank's held contributions, own rows
    total = np.zeros((*LEAD, n_rows, WIDTH), complex)
    for s in range(comm.size):
        h = part.held(s)
        total[..., h.start : h.stop, :] += held_array(part, s)
    own, held = part.own(r), part.held(r)
    summed = part.sum_halos(comm, held_array(part, r))
    err_sum = float(np.abs(summed - total[..., own.start : own.stop, :]).max(initial=0))
    whole = part.gather(comm, summed)  # the owners' rows, in order
    err_gather = float(np.abs(whole - total).max())
    # owners -> halos: every held row equals its owner's value, bit for bit
    filled = part.fill_halos(comm, summed)
    err_fill = float(np.abs(filled - whole[..., held.start : held.stop, :]).max(initial=0))
    real = part.fill_halos(comm, summed.real.copy())  # a real array too (the illumination)
    err_real = float(np.abs(real - whole.real[..., held.start : held.stop, :]).max(initial=0))
    err = comm.allgather((err_sum, err_fill, err_real))
    res = {"sum": max(e[0] for e in err), "fill": max(e[1] for e in err)}
    res.update({"real": max(e[2] for e in err), "gather": err_gather, "size": comm.size})
    on_root(lambda: atomic_write_text(out, json.dumps(res)), comm)
