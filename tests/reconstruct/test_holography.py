"""Near-field holography: multi-distance phase retrieval of a weak phase object."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xrayflow import ad
from xrayflow.modalities.holography.model import HolographyModel
from xrayflow.optics.propagation import transfer_function
from xrayflow.solvers.gradient import Reconstructor


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


def test_cone_beam_holography_from_the_simulate_stage(tmp_path):
    """config/simulate/holography.yaml (point source: magnified frames on the sample grid)
    reconstructed with config/reconstruct/holography.yaml over the effective distances
    z1 z2 / (z1 + z2) the data file stores (with the sample-detector distances the phase
    SSIM was 0.25)."""
    import json

    from xrayflow.cli import main

    root = Path(__file__).parents[2]
    data, rec, out = tmp_path / "h.cxi", tmp_path / "r.h5", tmp_path / "m.json"
    assert (
        main(["simulate", "-c", str(root / "config/simulate/holography.yaml"), "-o", str(data)])
        == 0
    )
    cfg = str(root / "config/reconstruct/holography.yaml")
    assert main(["reconstruct", "-c", cfg, "-d", str(data), "-o", str(rec)]) == 0
    assert main(["evaluate", "--result", str(rec), "--truth", str(data), "--out", str(out)]) == 0
    m = json.loads(out.read_text())
    assert m["phase"]["ssim"] >= 0.95, m["phase"]
