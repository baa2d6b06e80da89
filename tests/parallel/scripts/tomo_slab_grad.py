"""Ptycho-tomography gradient with the volume's rows (y, the rotation axis) distributed
over the ranks against the replicated one (float64). Rank 0 writes JSON to ``argv[1]``:
``max_rel_diff`` per quantity, frames and rows per rank."""

import json
import sys

import numpy as np

from xrayflow import ad
from xrayflow.backend import get_backend
from xrayflow.io.atomic import atomic_write_text
from xrayflow.modalities.ptychotomo.model import TomoModel
from xrayflow.parallel import abort_on_error, on_root
from xrayflow.solvers.distributed_object import SlabGradient

with abort_on_error() as comm:
    rng = np.random.default_rng(7)
    Z, Y, X, n, A = 12, 23, 12, 6, 4
    # 3-row steps with sub-pixel jitter: windows of 6 rows straddle every slab boundary
    g = np.array([(y, x) for y in np.arange(0, Y - n - 1, 3) for x in (0, 3, 5)], float)
    corners = np.tile(g, (A, 1)) + rng.uniform(0, 0.9, (A * len(g), 2))
    angles = np.repeat(np.linspace(0, np.pi, A, endpoint=False), len(g))
    be = get_backend("cpu", "double")
    m = TomoModel((Z, Y, X), 1e-7, 1.5e-10, (n, n), corners, angles, n_slices=2, backend=be)
    params = {
        "delta": rng.random((Z, Y, X)) * 1e-5,
        "beta": rng.random((Z, Y, X)) * 1e-6,
        "probe": np.exp(1j * rng.random((2, n, n))),
    }
    target = rng.random((len(corners), n, n))
    names = ["delta", "beta", "probe"]

    # replicated: every frame, blocks of one angle, on this process
    t = {k: ad.param(v) for k, v in params.items()}
    ref = {"loss": 0.0, **{k: np.zeros_like(v) for k, v in params.items()}}
    blocks = m.frame_blocks(5)
    for f in blocks:
        loss = m.block_loss(t, f, corners[f], target[f], False)[0]
        ref["loss"] += float(loss.data)
        for k, gk in zip(names, ad.backward(loss, targets=[t[k] for k in names]), strict=True):
            ref[k] += gk

    sg = SlabGradient(m, comm)
    mine = set(sg.owned_frames(corners).tolist())
    own_blocks = [np.array([i for i in f if i in mine], int) for f in blocks]
    tot = sg.gradient(
        sg.slab(params), [(f, corners[f], target[f]) for f in own_blocks if f.size], names
    )

    def rel(d, r) -> float:
        return float(np.max(np.abs(d - r)) / np.max(np.abs(r)))

    diff = {"loss": rel(tot["loss"], ref["loss"]), "probe": rel(tot["probe"], ref["probe"])}
    for k in ("delta", "beta"):
        diff[k] = rel(sg.part.gather(comm, tot[k]), ref[k])
    diff = {k: max(comm.allgather(v)) for k, v in diff.items()}
    out = {
        "size": comm.size,
        "frames": len(corners),
        "frames_per_rank": comm.allgather(len(mine)),
        "own_rows": [len(sg.part.own(r)) for r in range(comm.size)],
        "held_rows": [len(sg.part.held(r)) for r in range(comm.size)],
        "max_rel_diff": diff,
    }
    on_root(lambda: atomic_write_text(sys.argv[1], json.dumps(out)), comm)
