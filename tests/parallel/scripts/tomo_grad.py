"""Tomography gradient summed over ranks; rank 0 saves it: ``tomo_grad.py OUT.npz``."""

import sys

import numpy as np

from xrayflow.backend import get_backend
from xrayflow.io.atomic import atomic_write
from xrayflow.modalities.ptychotomo.model import TomoModel
from xrayflow.parallel import abort_on_error, on_root, sum_over_blocks

with abort_on_error() as comm:
    rng = np.random.default_rng(5)
    N, n, A = 12, 6, 5
    g = np.arange(0, N - n + 1, 3)
    corners = np.array([(y, x) for y in g for x in g])
    angles = np.linspace(0, np.pi, A, endpoint=False)
    m = TomoModel(
        (N, N, N),
        1e-7,
        1.5e-10,
        (n, n),
        np.tile(corners, (A, 1)),
        np.repeat(angles, len(corners)),
        n_slices=2,
        backend=get_backend("cpu"),
    )
    delta = (rng.random((N, N, N)) * 1e-5).astype(np.float32)
    beta = (rng.random((N, N, N)) * 1e-6).astype(np.float32)
    probe = np.exp(1j * rng.random((1, n, n))).astype(np.complex64)
    target = rng.random((A * len(corners), n, n)).astype(np.float32)
    tot = sum_over_blocks(
        m.frame_blocks(4), lambda f: m.value_and_grad(delta, beta, probe, target[f], f), comm
    )

    def save(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, loss=tot["loss"], delta=tot["delta"], beta=tot["beta"])

    on_root(lambda: atomic_write(sys.argv[1], save), comm)
