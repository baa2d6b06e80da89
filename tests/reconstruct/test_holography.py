"""Near-field holography: multi-distance phase retrieval of a weak phase object."""

from __future__ import annotations

import numpy as np

from xrayflow import ad
from xrayflow.models.holography import HolographyModel
from xrayflow.optics.propagation import transfer_function
from xrayflow.reconstruct.engine import Reconstructor


def test_holography_multi_distance(sim):
    shape = (64, 64)
    lam = 0.01  # pixel units
    dists = np.array([1500.0, 3000.0, 4500.0])
    obj = np.exp(1j * sim.star_phase(shape, amp=0.5) - 0.05 * sim.blobs_phase(shape, amp=1.0))
    probe = np.ones((1, *shape), complex) * np.sqrt(1e3)
    Hs = np.stack(
        [
            transfer_function("fresnel", shape, 1.0, lam, z, check=False, dtype=np.complex128)
            for z in dists
        ]
    )
    model = HolographyModel(Hs)
    I = model.intensities({"object": ad.const(obj[None])}, ad.const(probe), np.arange(3)).data
    I = np.random.default_rng(0).poisson(I).astype(np.float32)
    d = sim.recon_data(I, np.zeros((3, 2)), shape, probe=probe, wavelength=lam)
    d.distances = dists
    cfg = sim.config(
        model={"type": "holography"},
        optimizer={"iterations": 60, "batch_size": 3, "probe": {"start": 1000}},
    )
    res = Reconstructor(cfg, d, log=lambda s: None).run()
    assert res.history["loss"][-1] < 0.2 * res.history["loss"][0]
    assert sim.phase_ssim(res.params["object"][0], obj, (4, 60, 4, 60)) >= 0.8
